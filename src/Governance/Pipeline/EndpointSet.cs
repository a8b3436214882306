using Governance.Configuration;
using Governance.LoadBalancing;

namespace Governance.Pipeline;

/// <summary>
/// An immutable view of one service's endpoints with the pickers built over them, swapped atomically whenever the
/// endpoints or the settings change. Zone-aware routing lives here, above the policy.
/// </summary>
/// <remarks>
/// Zone rule (Envoy's priority spill-over with its default overprovisioning factor of 1.4, applied with the local zone
/// as the preferred level): when <c>Application:Zone</c> is set and some endpoints are in that zone, the local zone
/// takes min(1, 1.4 x available local / all local) of the requests and the other zones share the rest. So while at
/// least 72% (1 / 1.4) of the local endpoints are available every request stays local; below that, traffic spills over
/// in proportion. With no local endpoint, or none available, all traffic goes to the other zones; with no other zone
/// available, everything stays local.
/// </remarks>
internal sealed class EndpointSet
{
    public const double OverprovisioningFactor = 1.4;

    private readonly EndpointGroup? _local;
    private readonly EndpointGroup? _remote;

    private EndpointSet(EndpointState[] all, EndpointState[] candidates, bool isPanic, EndpointGroup? local, EndpointGroup? remote, double localShare, string emptyReason, bool isPending = false)
    {
        IsPending = isPending;
        All = all;
        Candidates = candidates;
        IsPanic = isPanic;
        _local = local;
        _remote = remote;
        LocalShare = localShare;
        EmptyReason = emptyReason;
    }

    public EndpointState[] All { get; }

    /// <summary>Gets the endpoints load balancing picks from: the available ones, or all of them in panic mode.</summary>
    public EndpointState[] Candidates { get; }

    /// <summary>Gets a value indicating whether too few endpoints are available and all are used again (panic mode).</summary>
    public bool IsPanic { get; }

    /// <summary>Gets the share of requests that go to the local zone (1 when zone-aware routing is off).</summary>
    public double LocalShare { get; }

    public string EmptyReason { get; }

    /// <summary>Gets a value indicating whether discovery has not answered yet (the first request waits for it).</summary>
    public bool IsPending { get; }

    /// <summary>The set of a service whose discovery has not answered yet.</summary>
    public static EndpointSet Pending(string reason) => new([], [], false, null, null, 0, reason, isPending: true);

    public static EndpointSet Create(string serviceName, EndpointState[] all, string? localZone, ILoadBalancingPolicy policy, LoadBalancerOptions options, int panicThreshold = 0, string? emptyReason = null)
    {
        var available = new List<EndpointState>(all.Length);
        foreach (var state in all)
        {
            if (state.IsAvailable)
            {
                available.Add(state);
            }
        }

        // Panic mode (Envoy's): when too few endpoints are available, health signals (circuit, ejection, health checks)
        // are ignored and every endpoint that is not administratively disabled is used again, so a bad signal (or a
        // correlated failure) never takes the whole service to zero.
        var isPanic = all.Length > 0 && (long)available.Count * 100 < (long)panicThreshold * all.Length;
        if (isPanic)
        {
            available.Clear();
            foreach (var state in all)
            {
                if ((state.Conditions & EndpointConditions.Disabled) == 0)
                {
                    available.Add(state);
                }
            }
        }

        var candidates = available.ToArray();

        string reason = emptyReason ?? (all.Length == 0
            ? "discovery returned no endpoints"
            : $"all {all.Length} endpoints are unavailable");
        if (available.Count == 0)
        {
            return new EndpointSet(all, candidates, isPanic, null, null, 0, reason);
        }

        if (localZone is null)
        {
            return new EndpointSet(all, candidates, isPanic, EndpointGroup.Create(serviceName, available, policy, options), null, 1, reason);
        }

        var localTotal = 0;
        var local = new List<EndpointState>();
        var remote = new List<EndpointState>();
        foreach (var state in all)
        {
            localTotal += string.Equals(state.Endpoint.Zone, localZone, StringComparison.OrdinalIgnoreCase) ? 1 : 0;
        }

        foreach (var state in available)
        {
            (string.Equals(state.Endpoint.Zone, localZone, StringComparison.OrdinalIgnoreCase) ? local : remote).Add(state);
        }

        double share = local.Count == 0 ? 0 : remote.Count == 0 ? 1 : Math.Min(1.0, OverprovisioningFactor * local.Count / localTotal);
        return new EndpointSet(
            all,
            candidates,
            isPanic,
            local.Count == 0 ? null : EndpointGroup.Create(serviceName, local, policy, options),
            remote.Count == 0 || share >= 1 ? null : EndpointGroup.Create(serviceName, remote, policy, options),
            share,
            reason);
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

            _picker = policy.CreatePicker(new EndpointPickerContext(serviceName, endpoints, this, options));
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
