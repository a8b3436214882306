using Governance.Configuration;
using Governance.LoadBalancing;

namespace Governance.Pipeline;

/// <summary>
/// An immutable view of one service's endpoints with the pickers built over them, swapped atomically whenever the
/// endpoints or the settings change. Zone-aware routing lives here, above the policy.
/// </summary>
/// <remarks>
/// Zone rule (Envoy's priority load with its default overprovisioning factor of 1.4, the local zone as the first level
/// and the other zones as the second): when <c>Application:Zone</c> is set and the service has endpoints in that zone and
/// in others, each level's health is min(1, 1.4 x available / all of that level). While the two add up to at least 1 the
/// local zone takes its health as its share of the requests and the other zones the rest (at least 71.4% (1 / 1.4) of
/// the local endpoints available keeps every request local), and panic thresholds are disregarded; below 1 each level
/// takes its health's part of the sum and a level under the panic threshold uses all its endpoints again (every level in
/// panic: each takes its share of the endpoints, Envoy's total panic). With one level
/// (no zone set, or every endpoint in one zone) the panic threshold applies to the whole service.
/// </remarks>
internal sealed class EndpointSet
{
    public const double OverprovisioningFactor = 1.4;

    private readonly EndpointGroup? _local;
    private readonly EndpointGroup? _remote;

    private EndpointSet(EndpointState[] all, EndpointState[] candidates, PanicLevel? panic, EndpointGroup? local, EndpointGroup? remote, double localShare, string emptyReason, bool isPending = false)
    {
        IsPending = isPending;
        All = all;
        Candidates = candidates;
        Panic = panic;
        _local = local;
        _remote = remote;
        LocalShare = localShare;
        EmptyReason = emptyReason;
    }

    public EndpointState[] All { get; }

    /// <summary>Gets the endpoints load balancing picks from: those of the levels that receive requests, each level's available ones, or all of a level in panic mode.</summary>
    public EndpointState[] Candidates { get; }

    /// <summary>Gets a value indicating whether a level that receives requests has too few endpoints available and uses all of them again (panic mode).</summary>
    public bool IsPanic => Panic is not null;

    /// <summary>Gets which endpoints panic mode brought back, and how many of them are unavailable, for the log; <see langword="null"/> outside panic mode.</summary>
    public PanicLevel? Panic { get; }

    /// <summary>Gets the share of requests that go to the local zone (1 when there is one level: zone-aware routing off, or every endpoint in one zone).</summary>
    public double LocalShare { get; }

    public string EmptyReason { get; }

    /// <summary>
    /// Gets a value indicating whether discovery has not answered yet, or no endpoint is available while some wait for
    /// their first health check (<see cref="AwaitsHealthChecks"/>): calls wait for an endpoint.
    /// </summary>
    public bool IsPending { get; }

    /// <summary>
    /// Gets a value indicating whether the set is pending for health checks: nothing available while endpoints await their
    /// first probe and the others are out for failed health checks alone (or panic mode is off).
    /// </summary>
    public bool AwaitsHealthChecks { get; private init; }

    /// <summary>The set of a service whose discovery has not answered yet.</summary>
    public static EndpointSet Pending(string reason) => new([], [], null, null, null, 0, reason, isPending: true);

    /// <summary>The set of a service that stopped while calls waited for an endpoint: empty, not pending, saying why.</summary>
    public static EndpointSet Stopped(string reason) => new([], [], null, null, null, 0, reason);

    public static EndpointSet Create(string serviceName, EndpointState[] all, string? localZone, ILoadBalancingPolicy policy, LoadBalancerOptions options, int panicThreshold = 0, string? emptyReason = null)
    {
        // Each endpoint's conditions are read once: a condition that changes meanwhile (a circuit opening) waits for the
        // rebuild that change causes, instead of being counted one way and picked the other. An endpoint waiting for its
        // first health check is left out of everything below, as if discovery had not listed it yet (Envoy's excluded
        // hosts): neither a candidate, nor counted by panic mode or zone-aware routing, so a scale-out never looks like
        // an outage; the set keeps it in All, for the health checker and the metrics.
        var conditions = new EndpointConditions[all.Length];
        var waiting = 0;
        for (var i = 0; i < all.Length; i++)
        {
            conditions[i] = all[i].Conditions;
            waiting += (conditions[i] & EndpointConditions.AwaitingHealthCheck) != 0 ? 1 : 0;
        }

        var counted = waiting == 0 ? all : new EndpointState[all.Length - waiting];
        var isAvailable = new bool[counted.Length];
        var available = 0;
        var healthOnly = true;
        for (int i = 0, j = 0; i < all.Length; i++)
        {
            if ((conditions[i] & EndpointConditions.AwaitingHealthCheck) == 0)
            {
                isAvailable[j] = conditions[i] == EndpointConditions.None;
                available += isAvailable[j] ? 1 : 0;
                healthOnly &= conditions[i] is EndpointConditions.None or EndpointConditions.FailedHealthCheck;
                if (waiting > 0)
                {
                    counted[j] = all[i];
                }

                j++;
            }
        }

        if (waiting > 0 && available == 0 && (healthOnly || panicThreshold == 0))
        {
            // Nothing available but endpoints whose first probe has not answered, the others out for failed health
            // checks alone (start, discovery's first answer, every address replaced, the first results failures):
            // calls wait for a probe to pass, as they wait for discovery's first answer (Envoy's cluster warming),
            // rather than fail, or go in panic mode to endpoints the checks found sick, while healthy ones may be a
            // probe away. An outage that passive signals found (ejections, open circuits) keeps panic mode, unless
            // panic mode is off: then waiting for a newcomer beats refusing every call.
            var waitReason = waiting == all.Length
                ? $"none of its {all.Length} endpoints has passed its first health check yet"
                : $"none of its {all.Length} endpoints is available and {waiting} have not answered their first health check yet";
            return new EndpointSet(all, [], null, null, null, 0, waitReason, isPending: true) { AwaitsHealthChecks = true };
        }

        string reason = emptyReason ?? (all.Length == 0
            ? "discovery returned no endpoints"
            : $"all {counted.Length} endpoints are unavailable");
        return Create(serviceName, all, counted, isAvailable, localZone, policy, options, panicThreshold, reason);
    }

    /// <summary>The set over <paramref name="all"/> whose levels, panic mode and candidates are those of <paramref name="counted"/> (availability in <paramref name="isAvailable"/>).</summary>
    private static EndpointSet Create(string serviceName, EndpointState[] all, EndpointState[] counted, bool[] isAvailable, string? localZone, ILoadBalancingPolicy policy, LoadBalancerOptions options, int panicThreshold, string reason)
    {
        // Endpoints of the local zone, and how many of them and of the others are available (zone-aware routing only).
        int localTotal = 0, localAvailable = 0, remoteAvailable = 0;
        for (var i = 0; localZone is not null && i < counted.Length; i++)
        {
            if (IsLocal(counted[i], localZone))
            {
                localTotal++;
                localAvailable += isAvailable[i] ? 1 : 0;
            }
            else
            {
                remoteAvailable += isAvailable[i] ? 1 : 0;
            }
        }

        if (localTotal == 0 || localTotal == counted.Length)
        {
            // One level: zones are off, or every endpoint is in one zone (the local one, or only others).
            var level = Level(counted, isAvailable, localZone: null, local: false, counted.Length, panicThreshold, forcePanicCheck: true);
            var panic = level.IsPanic ? new PanicLevel("the service", counted.Length - level.Available, counted.Length) : (PanicLevel?)null;
            return level.Members.Count == 0
                ? new EndpointSet(all, [], panic, null, null, 0, reason)
                : new EndpointSet(all, level.Members.ToArray(), panic, EndpointGroup.Create(serviceName, level.Members, policy, options), null, 1, reason);
        }

        // Two levels, the local zone first (Envoy's priority levels with its overprovisioning factor): each level's health
        // is min(1, 1.4 x available / all); while the two together reach 1, the local zone takes its health as its share,
        // the other zones the rest, and panic thresholds are disregarded. Below that the service is degraded: each level
        // takes its health's part of the sum, and a level whose available share is under PanicThreshold uses all its
        // endpoints again (panic mode); with both levels in panic each takes its share of the endpoints. Whether the sum
        // reaches 1 is decided in integers (health = 7 x available / (5 x all)): in floating point an exact 1 may fall short.
        var remoteTotal = counted.Length - localTotal;
        var localFull = 7L * localAvailable >= 5L * localTotal;
        var remoteFull = 7L * remoteAvailable >= 5L * remoteTotal;
        var degraded = !localFull && !remoteFull && (7L * localAvailable * remoteTotal) + (7L * remoteAvailable * localTotal) < 5L * localTotal * remoteTotal;
        var localHealth = localFull ? 1.0 : 7.0 * localAvailable / (5.0 * localTotal);
        var remoteHealth = remoteFull ? 1.0 : 7.0 * remoteAvailable / (5.0 * remoteTotal);
        var share = !degraded ? localHealth
            : localHealth + remoteHealth > 0 ? localHealth / (localHealth + remoteHealth)
            : 1.0;
        var local = Level(counted, isAvailable, localZone, local: true, localTotal, panicThreshold, forcePanicCheck: degraded);
        var remote = Level(counted, isAvailable, localZone, local: false, remoteTotal, panicThreshold, forcePanicCheck: degraded);
        if (degraded && local.IsPanic && remote.IsPanic)
        {
            // Every level in panic (nothing available anywhere included): the load goes by each level's endpoint count,
            // as Envoy's total panic does, not by health (a nearly dead local zone would take most of it).
            share = (double)localTotal / counted.Length;
        }
        if (share > 0 && local.Members.Count == 0)
        {
            // Degraded with panic off (PanicThreshold 0): a level with nothing available takes nothing.
            share = 0;
        }

        if (share < 1 && remote.Members.Count == 0)
        {
            share = local.Members.Count == 0 ? 0 : 1;
        }

        var usesLocal = share > 0;
        var usesRemote = share < 1;
        var localPanic = usesLocal && local.IsPanic;
        var remotePanic = usesRemote && remote.IsPanic;
        var panicLevel = (localPanic, remotePanic) switch
        {
            (true, true) => new PanicLevel("every zone", counted.Length - localAvailable - remoteAvailable, counted.Length),
            (true, false) => new PanicLevel($"the local zone '{localZone}'", localTotal - localAvailable, localTotal),
            (false, true) => new PanicLevel("the other zones", remoteTotal - remoteAvailable, remoteTotal),
            _ => (PanicLevel?)null,
        };
        var candidates = new List<EndpointState>(counted.Length);
        if (usesLocal)
        {
            candidates.AddRange(local.Members);
        }

        if (usesRemote)
        {
            candidates.AddRange(remote.Members);
        }

        if (candidates.Count == 0)
        {
            return new EndpointSet(all, [], panicLevel, null, null, 0, reason);
        }

        return new EndpointSet(
            all,
            candidates.ToArray(),
            panicLevel,
            usesLocal ? EndpointGroup.Create(serviceName, local.Members, policy, options) : null,
            usesRemote ? EndpointGroup.Create(serviceName, remote.Members, policy, options) : null,
            share,
            reason);
    }

    private static bool IsLocal(EndpointState state, string localZone) =>
        string.Equals(state.Endpoint.Zone, localZone, StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// The endpoints of one level (every endpoint when <paramref name="localZone"/> is null; else the local zone's or the
    /// others'): its available ones, or, in panic mode (Envoy's: fewer than <paramref name="panicThreshold"/>% of the
    /// level's <paramref name="total"/> endpoints available, judged only when <paramref name="forcePanicCheck"/>), every one
    /// that is not administratively disabled, health signals (circuit, ejection, health checks) ignored, so that a bad
    /// signal or a correlated failure never takes the service to zero.
    /// </summary>
    private static (List<EndpointState> Members, bool IsPanic, int Available) Level(EndpointState[] all, bool[] isAvailable, string? localZone, bool local, int total, int panicThreshold, bool forcePanicCheck)
    {
        var members = new List<EndpointState>(total);
        for (var i = 0; i < all.Length; i++)
        {
            if (isAvailable[i] && (localZone is null || IsLocal(all[i], localZone) == local))
            {
                members.Add(all[i]);
            }
        }

        var available = members.Count;
        var isPanic = forcePanicCheck && total > 0 && (long)available * 100 < (long)panicThreshold * total;
        if (isPanic)
        {
            members.Clear();
            foreach (var state in all)
            {
                if ((state.Conditions & EndpointConditions.Disabled) == 0 && (localZone is null || IsLocal(state, localZone) == local))
                {
                    members.Add(state);
                }
            }
        }

        return (members, isPanic, available);
    }

    public EndpointState? Pick(in PickContext context)
    {
        var share = LocalShare;
        var group = share >= 1 ? _local
            : share <= 0 ? _remote
            : SpillPoint(context) < share ? _local : _remote;
        return group?.Pick(context);
    }

    /// <summary>
    /// A uniform number in [0, 1) that decides local or remote: derived from the hash key when there is one, so that a
    /// key keeps its zone (and its endpoint) while the zone is partly down; random otherwise.
    /// </summary>
    private static double SpillPoint(in PickContext context) =>
        context.HashKey is { } key
            ? (MaglevLoadBalancingPolicy.Hash(key, seed: 2) >> 11) * (1.0 / (1UL << 53))
            : Random.Shared.NextDouble();

    /// <summary>Which endpoints panic mode uses again (<paramref name="Scope"/>: the service, a zone level or both) and how many of them are unavailable.</summary>
    internal sealed record PanicLevel(string Scope, int Unavailable, int Total);

    private sealed class EndpointGroup : IEndpointLoad
    {
        private readonly EndpointState[] _states;
        private readonly IEndpointPicker _picker;
        private readonly string _serviceName;
        private readonly string _policyName;

        private EndpointGroup(string serviceName, EndpointState[] states, ILoadBalancingPolicy policy, LoadBalancerOptions options)
        {
            _states = states;
            _serviceName = serviceName;
            _policyName = policy.Name;
            var endpoints = new ServiceEndpoint[states.Length];
            for (var i = 0; i < states.Length; i++)
            {
                endpoints[i] = states[i].Endpoint;
            }

            _picker = policy.CreatePicker(new EndpointPickerContext(serviceName, endpoints, this, options))
                ?? throw new InvalidOperationException($"Service '{serviceName}': load-balancing policy '{policy.Name}' returned no picker from CreatePicker");
        }

        public static EndpointGroup Create(string serviceName, List<EndpointState> states, ILoadBalancingPolicy policy, LoadBalancerOptions options) =>
            new(serviceName, states.ToArray(), policy, options);

        public int GetActiveRequests(int index) => _states[index].ActiveRequests;

        public EndpointState? Pick(in PickContext context)
        {
            var index = _picker.Pick(context);
            var states = _states;
            return (uint)index < (uint)states.Length ? states[index]
                : index == -1 ? null
                : throw OutOfRange(index);
        }

        /// <summary>
        /// A picker that returned neither an endpoint's index nor -1 (a bug in a custom policy): the call fails with what
        /// happened, not with "no endpoint available" while every endpoint is healthy.
        /// </summary>
        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
        private InvalidOperationException OutOfRange(int index) =>
            new($"Service '{_serviceName}': load-balancing policy '{_policyName}' picked index {index.ToString(System.Globalization.CultureInfo.InvariantCulture)}, but its picker was built over {_states.Length.ToString(System.Globalization.CultureInfo.InvariantCulture)} endpoints (0 to {(_states.Length - 1).ToString(System.Globalization.CultureInfo.InvariantCulture)}, or -1 for none)");
    }
}
