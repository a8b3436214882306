using System.Diagnostics;
using System.Runtime.ExceptionServices;
using Governance.Discovery;
using Governance.LoadBalancing;
using Governance.Resilience;
using Governance.Telemetry;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;
using Polly;
using Polly.CircuitBreaker;

namespace Governance.Pipeline;

/// <summary>
/// One governed service: its discovery watcher, its endpoint states, its resilience policy and the current immutable
/// <see cref="EndpointSet"/>. Rebuilds (reload, discovery update, ejection, circuit change, health change) happen under
/// a lock and publish a new state with one volatile write; requests only read and never wait for the lock. Reloads,
/// discovery updates, readmissions and health changes rebuild on background threads; an ejection or a circuit opening
/// is rebuilt by the attempt that caused it (a rare event, and only that request pays for it).
/// </summary>
internal sealed partial class ServiceRuntime : IAsyncDisposable
{
    /// <summary>
    /// How long an endpoint stays in for its ejection backoff to fall by one: Envoy's default detection interval, at which
    /// Envoy decrements a host's backoff while it is not ejected.
    /// </summary>
    internal static readonly TimeSpan EjectionBackoffDecay = TimeSpan.FromSeconds(10);

    private readonly object _gate = new();
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly Dictionary<string, EndpointState> _states = new(StringComparer.OrdinalIgnoreCase);
    private readonly HashSet<ITimer> _timers = [];
    private readonly string[] _spanNames;
    private volatile ServiceState _state;
    private IServiceEndpointWatcher _watcher;
    private IReadOnlyList<ServiceEndpoint>? _lastEndpoints;
    private volatile TaskCompletionSource _resolved = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private IDisposable? _watcherRegistration;
    private HealthChecker? _healthChecker;
    private bool _disposed;
    private RefusedCall? _noEndpoint;

    public ServiceRuntime(ServiceSettings settings, TimeProvider time, GovernanceInstrumentation instrumentation, ILogger logger)
    {
        Name = settings.Name;
        _logger = logger;
        _time = time;
        Instrumentation = instrumentation;
        var methods = GovernanceInstrumentation.KnownMethods;
        _spanNames = new string[methods.Length + 1];
        for (var i = 0; i < methods.Length; i++)
        {
            _spanNames[i] = $"{methods[i]} {Name}";
        }

        _spanNames[methods.Length] = $"HTTP {Name}";
        _watcher = settings.WatchEndpoints();
        ServicePolicy? policy = null;
        try
        {
            policy = ServicePolicy.Create(settings.Resilience, time, previous: null);
            var seen = _watcher.Current;
            _state = Build(settings, policy, _watcher);
            if (!_state.Set.IsPending)
            {
                _resolved.TrySetResult();
            }

            _watcherRegistration = Subscribe(_watcher);
            CatchUp(_watcher, seen);
            StartHealthChecks(settings);
        }
        catch
        {
            // The service never comes into being: its watcher would run on (a Consul watch until the provider is
            // disposed), and its limiter's replenishment timer for ever.
            _watcherRegistration?.Dispose();
            _ = DisposeInBackgroundAsync(_watcher);
            policy?.Dispose();
            throw;
        }
    }

    public string Name { get; }

    public GovernanceInstrumentation Instrumentation { get; }

    /// <summary>
    /// Returns the logical span's name without allocating: <c>{method} {service}</c> for the methods HTTP defines, and
    /// <c>HTTP {service}</c> for any other (OpenTelemetry's conventions: a span name of bounded cardinality).
    /// </summary>
    public string SpanName(HttpMethod method) => _spanNames[GovernanceInstrumentation.MethodIndex(method)];

    public ServiceSettings Settings => _state.Settings;

    public ServicePolicy Policy => _state.Policy;

    public EndpointSet Endpoints => _state.Set;

    /// <summary>
    /// Picks the endpoint for one attempt, avoiding <paramref name="tried"/> while other candidates remain. Returns
    /// <see langword="null"/>, without throwing, when no endpoint can take the request (see <see cref="NoEndpoint"/>).
    /// </summary>
    public EndpointState? TryPick(HttpRequestMessage request, List<EndpointState>? tried = null)
    {
        var state = _state;
        var header = state.Settings.HashHeader;
        var context = new PickContext(header is null ? null : GetFirstHeaderValue(request, header));
        var picked = state.Set.Pick(context);
        if (picked is null || tried is null || tried.Count == 0 || !tried.Contains(picked))
        {
            return picked;
        }

        // A retry: ask the policy again a few times, telling it how many picks came before (a hashing policy rehashes
        // the key with it, so a key's retries go to the same alternates, by weight), then choose among the untried
        // candidates, else repeat an endpoint.
        for (var attempt = 1; attempt <= 8; attempt++)
        {
            var again = state.Set.Pick(new PickContext(context.HashKey, attempt));
            if (again is not null && !tried.Contains(again))
            {
                return again;
            }
        }

        var candidates = state.Set.Candidates;
        if (context.HashKey is { } key)
        {
            // A key: weighted rendezvous hashing over the untried candidates (each scores weight / -ln(u), u a hash of the
            // key and the endpoint's address): every client process picks the same alternate for the key, whatever order
            // discovery lists the endpoints in, each with its weight's share of the keys. O(n), on this rare path only.
            EndpointState? best = null;
            var bestScore = 0.0;
            foreach (var candidate in candidates)
            {
                if (!tried.Contains(candidate))
                {
                    var u = ((MaglevLoadBalancingPolicy.Hash(key, candidate.AddressSeed) >> 11) + 0.5) * (1.0 / (1UL << 53));
                    var score = candidate.Endpoint.Weight / -Math.Log(u);
                    if (best is null || score > bestScore)
                    {
                        (best, bestScore) = (candidate, score);
                    }
                }
            }

            return best ?? picked;
        }

        // Without a key, the first untried candidate from a random point.
        var start = candidates.Length == 0 ? 0 : Random.Shared.Next(candidates.Length);
        for (var i = 0; i < candidates.Length; i++)
        {
            var candidate = candidates[(start + i) % candidates.Length];
            if (!tried.Contains(candidate))
            {
                return candidate;
            }
        }

        return picked;
    }

    /// <summary>
    /// Waits until the service's set is no longer pending: discovery's first answer, or a first health check's pass while
    /// the set awaits one (off the request path, the watcher and the checker resolve it; calls wait here), at most
    /// <paramref name="timeout"/>; <see langword="false"/> when it did not resolve in time.
    /// </summary>
    public async Task<bool> WaitUntilResolvedAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        try
        {
            await _resolved.Task.WaitAsync(timeout, _time, cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (TimeoutException)
        {
            return false;
        }
    }

    /// <summary>Gets the service's health checker, or <see langword="null"/> while health checks are off; for tests.</summary>
    internal HealthChecker? HealthChecker => _healthChecker;

    /// <summary>Gets why discovery has failed so far, when its watcher can tell (see <see cref="IReportsDiscoveryError"/>).</summary>
    public string? DiscoveryError => (Volatile.Read(ref _watcher) as IReportsDiscoveryError)?.LastError;

    /// <summary>
    /// Creates (does not throw) the error of a call that found no endpoint: the set's reason, or, when it has candidates,
    /// that the policy's picker picked none of them (-1).
    /// </summary>
    public NoAvailableEndpointException NoEndpoint()
    {
        var state = _state;
        return new(Name, state.Set.Candidates.Length == 0
            ? state.Set.EmptyReason
            : $"load-balancing policy '{state.Settings.Policy.Name}' picked none of the {state.Set.Candidates.Length} available endpoints");
    }

    /// <summary>
    /// The shared answer to calls refused up front because <paramref name="set"/>, the service's current endpoint set,
    /// has no candidate: one <see cref="NoAvailableEndpointException"/> with the set's <see cref="EndpointSet.EmptyReason"/>
    /// and one task faulted with it (see <see cref="RefusedCall"/>). It is made again only when the endpoint set is
    /// replaced (reload, discovery update, circuit, ejection or health change), so the reason is always the set's own.
    /// </summary>
    public RefusedCall NoEndpointRefusal(EndpointSet set)
    {
        var refusal = Volatile.Read(ref _noEndpoint);
        if (refusal is null || !ReferenceEquals(refusal.Owner, set))
        {
            // Two racing callers may each build one; either is correct, the last one stays.
            refusal = new RefusedCall(new NoAvailableEndpointException(Name, set.EmptyReason), set);
            Volatile.Write(ref _noEndpoint, refusal);
        }

        return refusal;
    }

    /// <summary>Applies new settings (configuration reload), keeping endpoint states, breakers and ejections that still apply.</summary>
    public void Reconfigure(ServiceSettings settings)
    {
        // Everything that can fail (the watcher, the policy, the endpoint set with its pickers, the subscription) is built
        // before anything changes, so a failure leaves the service as it was, still subscribed to its own watcher. Once
        // the new state is in force, a failure (code called back: a custom policy rebuilding in CatchUp, a logger) no
        // longer undoes it: the swap is completed, the old watcher and policy retired, and then the failure reported.
        IServiceEndpointWatcher? oldWatcher = null;
        IDisposable? oldRegistration = null;
        ServicePolicy? oldPolicy = null;
        ServicePolicy? policy = null;
        IDisposable? registration = null;
        var published = false;
        ExceptionDispatchInfo? failure = null;
        var watcher = settings.WatchEndpoints();
        try
        {
            // Subscribed first, outside the lock and before Build touches any endpoint state (breakers, conditions): a
            // watcher that cannot be subscribed to leaves everything as it was. Its notifications are ignored until it
            // is in force (OnEndpointsChanged); one that comes before that is caught up with (CatchUp).
            var seen = watcher.Current;
            registration = Subscribe(watcher);
            lock (_gate)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                oldPolicy = _state.Policy;
                policy = ServicePolicy.Create(settings.Resilience, _time, oldPolicy);
                var state = Build(settings, policy, watcher);
                oldWatcher = _watcher;
                oldRegistration = _watcherRegistration;
                _watcher = watcher;
                _watcherRegistration = registration;
                published = true;
                try
                {
                    Publish(state);
                    CatchUp(watcher, seen);
                }
                finally
                {
                    // The health checks follow the settings in force, even when publishing failed after putting them in force.
                    if (_state.Settings.Resilience.HealthCheck != oldPolicy.Settings.HealthCheck)
                    {
                        _ = StopHealthChecksAsync();
                        StartHealthChecks(_state.Settings);
                    }
                }
            }
        }
        catch (Exception ex) when (published)
        {
            failure = ExceptionDispatchInfo.Capture(ex);
        }
        catch
        {
            registration?.Dispose();
            _ = DisposeInBackgroundAsync(watcher);
            if (policy is not null && !ReferenceEquals(policy.Limiter, oldPolicy?.Limiter))
            {
                policy.Dispose(); // A limiter of its own, never used.
            }

            throw;
        }

        // Outside the lock: disposing the old registration waits for a notification in progress, which takes the lock
        // and, finding another watcher in force, does nothing (OnEndpointsChanged). Disposed under the lock, the two
        // threads deadlocked (a reload or shutdown while discovery published a change).
        oldRegistration?.Dispose();
        oldPolicy!.Retire(policy);
        _ = DisposeInBackgroundAsync(oldWatcher!);
        failure?.Throw();
    }

    /// <summary>Disposes a watcher the service no longer uses, off the caller's path; a failure is logged (event 1102), not lost.</summary>
    private Task DisposeInBackgroundAsync(IServiceEndpointWatcher watcher) =>
        BackgroundWork.ObserveAsync(watcher.DisposeAsync, ex => LogWatcherDisposeFailed(_logger, Name, ex));

    /// <summary>Rebuilds the endpoint set after an endpoint's availability changed.</summary>
    public void Refresh()
    {
        lock (_gate)
        {
            if (!_disposed)
            {
                Publish(Build(_state.Settings, _state.Policy, _watcher));
            }
        }
    }

    /// <summary>Outlier accounting of one attempt (Envoy's consecutive-5xx and consecutive-gateway-failure detectors).</summary>
    public void RecordOutcome(EndpointState endpoint, Outcome<HttpResponseMessage> outcome)
    {
        if (_state.Policy.Settings.Outlier is not { } outlier)
        {
            return;
        }

        AttemptFailure failure;
        if (outcome.Exception is { } exception)
        {
            // A call the caller cancelled says nothing about the endpoint; an open circuit sent nothing.
            if (exception is OperationCanceledException)
            {
                return;
            }

            failure = AttemptClassifier.Classify(exception);
            if (failure == AttemptFailure.CircuitOpen)
            {
                return;
            }
        }
        else
        {
            failure = AttemptClassifier.Classify(outcome.Result!);
        }

        var (consecutive5xx, consecutiveGateway) = endpoint.RecordOutcome(failure);
        if (consecutive5xx >= outlier.Consecutive5xx || consecutiveGateway >= outlier.ConsecutiveGatewayFailure)
        {
            TryEject(endpoint, outlier);
        }
    }

    public ValueTask DisposeAsync() => StopAsync(removed: false);

    /// <summary>
    /// Stops the service after a reload removed it: as <see cref="DisposeAsync"/>, except that its rate limiter is retired
    /// (disposed once calls that already read it have had their total timeout), since such calls may still be waiting for
    /// or holding a permit, while the application goes on.
    /// </summary>
    public ValueTask RetireAsync() => StopAsync(removed: true);

    private async ValueTask StopAsync(bool removed)
    {
        IServiceEndpointWatcher watcher;
        IDisposable? registration;
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            registration = _watcherRegistration;
            _watcherRegistration = null;
            watcher = _watcher;
            foreach (var timer in _timers)
            {
                timer.Dispose();
            }

            _timers.Clear();

            // Calls waiting for an endpoint (discovery's first answer, a first health check) are refused now, not when
            // their wait runs out: the set they wake to is empty, not pending, and says why.
            if (_state.Set.IsPending)
            {
                Publish(_state with { Set = EndpointSet.Stopped(removed ? "the service was removed from the configuration" : "governance was stopped") });
            }
        }

        // Outside the lock: disposing the registration waits for a notification in progress, which takes the lock
        // (OnEndpointsChanged) and, finding the service disposed, does nothing.
        // Every part is stopped even if one fails (a custom watcher's dispose that throws); the first failure is rethrown.
        Exception? failure = null;
        try
        {
            registration?.Dispose();
        }
#pragma warning disable CA1031 // Kept and rethrown once the other parts are stopped.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            failure = ex;
        }

        await BackgroundWork.ObserveAsync(() => new ValueTask(StopHealthChecksAsync()), ex => failure ??= ex).ConfigureAwait(false);

        if (removed)
        {
            _state.Policy.Retire(successor: null);
        }
        else
        {
            _state.Policy.Dispose();
        }

        await BackgroundWork.ObserveAsync(watcher.DisposeAsync, ex => failure ??= ex).ConfigureAwait(false);

        if (failure is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
        }
    }

    /// <summary>The endpoint's circuit opened; <paramref name="span"/> is the span of the call whose outcome opened it.</summary>
    internal void OnCircuitOpened(EndpointState endpoint, TimeSpan breakDuration, Activity? span = null)
    {
        LogCircuitOpened(_logger, Name, endpoint.Authority, breakDuration);
        Instrumentation.RecordCircuit(this, endpoint, "opened");
        GovernanceInstrumentation.CircuitEvent(span, endpoint, "opened");

        // Readmit after the break so that the next request probes the half-open circuit. The endpoint is marked open
        // before the readmission is scheduled (a readmission that ran first, this thread stalled for the whole break,
        // would find nothing to clear and the mark set after it would stay for good), and the readmission is scheduled
        // before the rebuild, so that the endpoint comes back even if rebuilding the endpoint set fails (a custom
        // policy's picker that throws). Only this opening's readmission counts: if the circuit opened again meanwhile
        // (a failed probe), the later one decides.
        var opening = Interlocked.Increment(ref endpoint.CircuitOpenings);
        var marked = endpoint.Set(EndpointConditions.CircuitOpen, true);
        Schedule(breakDuration, (self, e) =>
        {
            if (Volatile.Read(ref e.CircuitOpenings) == opening && e.Set(EndpointConditions.CircuitOpen, false))
            {
                self.Refresh();
            }
        }, endpoint);
        if (marked)
        {
            RefreshOrLog();
        }
    }

    /// <summary>
    /// <see cref="Refresh"/> for a circuit transition, which Polly runs inside a call (the attempt that opened or closed
    /// it): a rebuild that fails (a custom policy's picker) is logged (event 1101) and the current set kept, as after
    /// a readmission timer; the call keeps its own outcome, whose response would otherwise be lost inside Polly.
    /// </summary>
    private void RefreshOrLog()
    {
        try
        {
            Refresh();
        }
#pragma warning disable CA1031 // The service keeps its current endpoint set; the next change rebuilds it.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            LogRebuildFailed(_logger, Name, ex);
        }
    }

    /// <summary>The endpoint's circuit closed; <paramref name="span"/> is the span of the call whose probe closed it.</summary>
    internal void OnCircuitClosed(EndpointState endpoint, Activity? span = null)
    {
        LogCircuitClosed(_logger, Name, endpoint.Authority);
        Instrumentation.RecordCircuit(this, endpoint, "closed");
        GovernanceInstrumentation.CircuitEvent(span, endpoint, "closed");
        if (endpoint.Set(EndpointConditions.CircuitOpen, false))
        {
            RefreshOrLog();
        }
    }

    /// <summary>
    /// <paramref name="checker"/> decided these endpoints' health (a batch of probe results that ended together): the
    /// set is rebuilt once for all of them (a rebuild per result made a first round over thousands of endpoints cost
    /// thousands of rebuilds under the lock). A checker that a reload replaced or stopped (it may be past its own stop
    /// check when that happens) changes nothing: the checker in force, with the settings in force, owns the endpoints'
    /// health. Never throws into the checker: a failed rebuild is logged (1101) and the next change rebuilds.
    /// </summary>
    internal void OnHealthChanged(HealthChecker checker, IReadOnlyList<(EndpointState Endpoint, bool Healthy)> results)
    {
        var applied = new (EndpointState Endpoint, bool Healthy, bool First)[results.Count];
        var rebuild = false;
        lock (_gate)
        {
            if (_disposed || !ReferenceEquals(checker, _healthChecker))
            {
                return;
            }

            for (var i = 0; i < results.Count; i++)
            {
                // A newcomer's first probe decides alone; either way it is counted from now on (panic mode, zones), so
                // the set is rebuilt even when its availability did not change (a failed first probe).
                var (endpoint, healthy) = results[i];
                var first = endpoint.AwaitingFirstHealthCheck;
                rebuild |= endpoint.Set(EndpointConditions.FailedHealthCheck, !healthy);
                if (first)
                {
                    endpoint.Set(EndpointConditions.AwaitingHealthCheck, false);
                    rebuild = true;
                }

                applied[i] = (endpoint, healthy, first);
            }
        }

        // The set first, then the logs: whoever reads a log sees the endpoint where it says.
        if (rebuild)
        {
            RefreshOrLog();
        }

        foreach (var (endpoint, healthy, first) in applied)
        {
            if (healthy && first)
            {
                LogHealthFirstPassed(_logger, Name, endpoint.Authority);
            }
            else if (healthy)
            {
                LogHealthRecovered(_logger, Name, endpoint.Authority);
            }
            else
            {
                LogHealthFailed(_logger, Name, endpoint.Authority);
            }
        }
    }

    private void TryEject(EndpointState endpoint, OutlierSettings outlier)
    {
        TimeSpan duration;
        int ejection;
        lock (_gate)
        {
            var set = _state.Set;
            if (_disposed || (endpoint.Conditions & EndpointConditions.Ejected) != 0)
            {
                return;
            }

            var ejected = 0;
            foreach (var state in set.All)
            {
                ejected += (state.Conditions & EndpointConditions.Ejected) != 0 ? 1 : 0;
            }

            // At least one endpoint may always be ejected, whatever MaxEjectionPercent says (Envoy's rule).
            var max = Math.Max(1, set.All.Length * outlier.MaxEjectionPercent / 100);
            if (ejected >= max)
            {
                endpoint.ResetOutlierCounters();
                return;
            }

            // Envoy's backoff: an ejection lasts n x BaseEjectionTime, at most MaxEjectionTime, where n is one more than the
            // previous ejection's, less one for every EjectionBackoffDecay the endpoint stayed in since its readmission,
            // and stops growing once n x BaseEjectionTime reaches MaxEjectionTime.
            var readmittedAt = Volatile.Read(ref endpoint.LastReadmittedAt);
            var previous = readmittedAt == 0 ? 0 : Math.Max(0, endpoint.EjectionCount - (_time.GetElapsedTime(readmittedAt).Ticks / EjectionBackoffDecay.Ticks));
            var longest = (outlier.MaxEjectionTime.Ticks + outlier.BaseEjectionTime.Ticks - 1) / outlier.BaseEjectionTime.Ticks;
            var backoffBefore = endpoint.EjectionCount;
            endpoint.EjectionCount = (int)Math.Min(previous + 1, longest);
            var ticks = Math.Min(outlier.BaseEjectionTime.Ticks * endpoint.EjectionCount, outlier.MaxEjectionTime.Ticks);
            duration = TimeSpan.FromTicks(ticks);
            ejection = Interlocked.Increment(ref endpoint.Ejections);
            endpoint.Set(EndpointConditions.Ejected, true);
            endpoint.ResetOutlierCounters();
            try
            {
                Publish(Build(_state.Settings, _state.Policy, _watcher));
            }
            catch
            {
                // A picker that cannot be built (a custom policy's bug) fails the attempt that asked for the ejection;
                // the endpoint must not stay out with no readmission scheduled, nor count an ejection that did not happen.
                endpoint.Set(EndpointConditions.Ejected, false);
                endpoint.EjectionCount = backoffBefore;
                throw;
            }
        }

        LogEjected(_logger, Name, endpoint.Authority, duration, endpoint.EjectionCount);
        Instrumentation.RecordEjection(this, endpoint, duration);
        // Only this ejection's readmission counts: one armed by an earlier ejection (cleared meanwhile by a reload that
        // switched outlier detection off, then on again) must not end this one early.
        Schedule(duration, (self, e) =>
        {
            if (Volatile.Read(ref e.Ejections) != ejection)
            {
                return;
            }

            Volatile.Write(ref e.LastReadmittedAt, self._time.GetTimestamp());
            e.ResetOutlierCounters();
            LogReadmitted(self._logger, self.Name, e.Authority);
            if (e.Set(EndpointConditions.Ejected, false))
            {
                self.Refresh();
            }
        }, endpoint);
    }

    private void Schedule(TimeSpan delay, Action<ServiceRuntime, EndpointState> action, EndpointState endpoint)
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            var holder = new TimerHolder(this, action, endpoint);
            using (BackgroundWork.SuppressFlow())
            {
                holder.Timer = _time.CreateTimer(static s => ((TimerHolder)s!).Fire(), holder, delay, Timeout.InfiniteTimeSpan);
            }

            _timers.Add(holder.Timer);
        }
    }

    private void StartHealthChecks(ServiceSettings settings)
    {
        if (settings.Resilience.HealthCheck is { } health)
        {
            // Under the lock: a result the new checker reports is applied only once it is the checker in force.
            lock (_gate)
            {
                _healthChecker = new HealthChecker(this, health, _time, _logger);
            }
        }
    }

    private Task StopHealthChecksAsync()
    {
        var checker = _healthChecker;
        _healthChecker = null;
        return checker?.DisposeAsync().AsTask() ?? Task.CompletedTask;
    }

    private static string? GetFirstHeaderValue(HttpRequestMessage request, string name)
    {
        if (request.Headers.NonValidated.TryGetValues(name, out var values))
        {
            foreach (var value in values)
            {
                return value;
            }
        }

        return null;
    }

    private IDisposable Subscribe(IServiceEndpointWatcher watcher) =>
        ChangeToken.OnChange(watcher.GetChangeToken, static state => state.Self.OnEndpointsChanged(state.Watcher), (Self: this, Watcher: watcher));

    /// <summary>
    /// Rebuilds when <paramref name="watcher"/> published between the read of its endpoints (<paramref name="seen"/>) and
    /// the subscription: the change token <see cref="Subscribe"/> got is the one after that change, which never fires
    /// for it, so without this the change would be lost until the next one; a first answer, the service's only one
    /// while it stays the same, would leave it unresolved.
    /// </summary>
    private void CatchUp(IServiceEndpointWatcher watcher, IReadOnlyList<ServiceEndpoint>? seen)
    {
        if (!ReferenceEquals(watcher.Current, seen))
        {
            OnEndpointsChanged(watcher);
        }
    }

    private void OnEndpointsChanged(IServiceEndpointWatcher watcher)
    {
        lock (_gate)
        {
            // A late notification from a watcher that a reload replaced is ignored.
            if (!_disposed && ReferenceEquals(watcher, _watcher))
            {
                try
                {
                    Publish(Build(_state.Settings, _state.Policy, watcher));
                }
#pragma warning disable CA1031 // Thrown into the discovery provider's notification otherwise. The service keeps its current endpoint set.
                catch (Exception ex)
#pragma warning restore CA1031
                {
                    LogRebuildFailed(_logger, Name, ex);
                }
            }
        }
    }

    private void Publish(ServiceState state)
    {
        var before = _state.Set;
        if (state.Set.IsPending)
        {
            // The promise first: a call that sees the pending set must find a promise that is not already kept.
            if (_resolved.Task.IsCompleted)
            {
                _resolved = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            }

            _state = state;
        }
        else
        {
            _state = state;
            _resolved.TrySetResult();
        }

        var changed = !SameEndpoints(before, state.Set);
        if (changed)
        {
            // New endpoints get their first health probe now rather than at the next round.
            _healthChecker?.OnEndpointsChanged();
        }

        if (changed && _logger.IsEnabled(LogLevel.Information))
        {
            LogEndpointsChanged(_logger, Name, state.Set.All.Length, string.Join(", ", Array.ConvertAll(state.Set.All, static s => s.Authority)));
        }

        if (state.Set.Panic is { } panic && panic.Scope != before.Panic?.Scope)
        {
            LogPanic(_logger, Name, panic.Unavailable, panic.Total, panic.Scope);
        }
    }

    private static bool SameEndpoints(EndpointSet a, EndpointSet b)
    {
        if (a.All.Length != b.All.Length)
        {
            return false;
        }

        for (var i = 0; i < a.All.Length; i++)
        {
            if (!ReferenceEquals(a.All[i], b.All[i]) || !a.All[i].Endpoint.Equals(b.All[i].Endpoint))
            {
                return false;
            }
        }

        return true;
    }

    private ServiceState Build(ServiceSettings settings, ServicePolicy policy, IServiceEndpointWatcher watcher)
    {
        // A watcher that a reload just created may not have answered yet: keep routing to the last known endpoints
        // until it does, rather than making requests wait.
        var endpoints = watcher.Current ?? _lastEndpoints;
        var resilience = settings.Resilience;
        EndpointSet set;
        if (endpoints is null)
        {
            set = EndpointSet.Pending($"discovery ({settings.Discovery.Name}) has not resolved the service yet");
        }
        else
        {
            var answered = !ReferenceEquals(endpoints, _lastEndpoints);

            var states = new List<EndpointState>(endpoints.Count);
            List<EndpointState>? created = null;
            var live = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
            HashSet<string>? duplicates = null;
            for (var i = 0; i < endpoints.Count; i++)
            {
                var endpoint = endpoints[i];
                if (!live.Add(endpoint.Authority))
                {
                    // A provider listed one address twice (static configuration and Consul never do): it is one endpoint,
                    // used once as first listed, or it would take twice its share and count twice towards every percentage.
                    if (answered && (duplicates ??= new HashSet<string>(StringComparer.OrdinalIgnoreCase)).Add(endpoint.Authority))
                    {
                        LogDuplicateEndpoint(_logger, settings.Name, settings.Discovery.Name, endpoint.Authority);
                    }

                    continue;
                }

                if (!_states.TryGetValue(endpoint.Authority, out var state))
                {
                    state = new EndpointState(endpoint);
                    (created ??= []).Add(state);
                    if (resilience.HealthCheck is not null)
                    {
                        // With active health checks, an endpoint takes traffic once its first probe, made at once, passes
                        // (Envoy marks every new host so): at start, in discovery's first answer, after a scale-out or a
                        // reload. Until then it is left out as if not yet discovered (EndpointSet.Create).
                        state.Set(EndpointConditions.AwaitingHealthCheck, true);
                    }
                }

                state.Endpoint = endpoint;
                UpdateBreaker(state, resilience.CircuitBreaker);
                if (resilience.Outlier is null && state.Set(EndpointConditions.Ejected, false))
                {
                    state.ResetOutlierCounters();
                }

                if (resilience.HealthCheck is null)
                {
                    state.Set(EndpointConditions.AwaitingHealthCheck, false);
                    state.Set(EndpointConditions.FailedHealthCheck, false);
                }

                states.Add(state);
            }

            // The set (a custom policy's CreatePicker may throw) before the endpoints known change: a rebuild that fails
            // neither forgets an endpoint in service (the next one would take it for a newcomer, without its breaker,
            // ejection or health) nor keeps one (or a list, or a discovery answer counted) that never took effect.
            set = EndpointSet.Create(settings.Name, [.. states], settings.LocalZone, settings.Policy, settings.LoadBalancer, resilience.PanicThreshold);
            if (answered)
            {
                _lastEndpoints = endpoints;
                Instrumentation.RecordDiscovery(settings.Name, settings.Discovery.Name, error: false);
            }

            foreach (var state in created ?? [])
            {
                _states[state.Authority] = state;
                if (state.AwaitingFirstHealthCheck)
                {
                    LogAwaitingFirstHealthCheck(_logger, settings.Name, state.Authority);
                }
            }

            // Forget endpoints that left; requests still in flight to them hold their own reference.
            foreach (var authority in _states.Keys.ToArray())
            {
                if (!live.Contains(authority))
                {
                    _states.Remove(authority);
                }
            }
        }

        return new ServiceState(settings, policy, set);
    }

    private void UpdateBreaker(EndpointState state, CircuitBreakerSettings? settings)
    {
        if (settings is null)
        {
            state.Breaker = null;
            state.Set(EndpointConditions.CircuitOpen, false);
            return;
        }

        if (state.Breaker?.Settings == settings)
        {
            return;
        }

        state.Set(EndpointConditions.CircuitOpen, false);

        // Attempts in flight keep the breaker they started with; once a reload replaced it, its transitions no longer
        // speak for the endpoint (its new breaker is closed).
        EndpointBreaker? breaker = null;
        breaker = new EndpointBreaker(
            settings,
            _time,
            (d, span) =>
            {
                if (ReferenceEquals(state.Breaker, breaker))
                {
                    OnCircuitOpened(state, d, span);
                }
            },
            span =>
            {
                if (ReferenceEquals(state.Breaker, breaker))
                {
                    OnCircuitClosed(state, span);
                }
            });
        state.Breaker = breaker;
    }

    [LoggerMessage(GovernanceEventIds.WatcherDisposeFailed, LogLevel.Warning, "Service {Service}: a discovery watcher it no longer uses could not be disposed")]
    private static partial void LogWatcherDisposeFailed(ILogger logger, string service, Exception exception);

    [LoggerMessage(GovernanceEventIds.EndpointSetRebuildFailed, LogLevel.Error, "Service {Service}: its endpoint set could not be rebuilt (a custom load-balancing policy failed?); it keeps the current one until the next change")]
    private static partial void LogRebuildFailed(ILogger logger, string service, Exception exception);

    [LoggerMessage(GovernanceEventIds.DuplicateEndpoint, LogLevel.Warning, "Service {Service}: discovery ({Discovery}) listed endpoint {Endpoint} more than once; it is used once, as first listed")]
    private static partial void LogDuplicateEndpoint(ILogger logger, string service, string discovery, string endpoint);

    [LoggerMessage(GovernanceEventIds.EndpointsChanged, LogLevel.Information, "Service {Service} now has {Count} endpoints: {Endpoints}")]
    private static partial void LogEndpointsChanged(ILogger logger, string service, int count, string endpoints);

    [LoggerMessage(GovernanceEventIds.EndpointEjected, LogLevel.Warning, "Service {Service}: endpoint {Endpoint} ejected for {Duration} (backoff {Count} x the base ejection time, at most the maximum) after consecutive failures")]
    private static partial void LogEjected(ILogger logger, string service, string endpoint, TimeSpan duration, int count);

    [LoggerMessage(GovernanceEventIds.EndpointReadmitted, LogLevel.Information, "Service {Service}: endpoint {Endpoint} readmitted after ejection")]
    private static partial void LogReadmitted(ILogger logger, string service, string endpoint);

    [LoggerMessage(GovernanceEventIds.CircuitOpened, LogLevel.Warning, "Service {Service}: circuit of endpoint {Endpoint} opened for {BreakDuration}")]
    private static partial void LogCircuitOpened(ILogger logger, string service, string endpoint, TimeSpan breakDuration);

    [LoggerMessage(GovernanceEventIds.CircuitClosed, LogLevel.Information, "Service {Service}: circuit of endpoint {Endpoint} closed")]
    private static partial void LogCircuitClosed(ILogger logger, string service, string endpoint);

    [LoggerMessage(GovernanceEventIds.PanicMode, LogLevel.Warning, "Service {Service}: {Unavailable} of the {Count} endpoints of {Scope} are unavailable, below the panic threshold: they are used again (panic mode)")]
    private static partial void LogPanic(ILogger logger, string service, int unavailable, int count, string scope);

    [LoggerMessage(GovernanceEventIds.HealthCheckFailed, LogLevel.Warning, "Service {Service}: endpoint {Endpoint} failed its health checks and is out of load balancing")]
    private static partial void LogHealthFailed(ILogger logger, string service, string endpoint);

    [LoggerMessage(GovernanceEventIds.HealthCheckRecovered, LogLevel.Information, "Service {Service}: endpoint {Endpoint} passes its health checks again")]
    private static partial void LogHealthRecovered(ILogger logger, string service, string endpoint);

    [LoggerMessage(GovernanceEventIds.HealthCheckAwaited, LogLevel.Debug, "Service {Service}: new endpoint {Endpoint} takes traffic once its first health check passes")]
    private static partial void LogAwaitingFirstHealthCheck(ILogger logger, string service, string endpoint);

    [LoggerMessage(GovernanceEventIds.HealthCheckFirstPassed, LogLevel.Debug, "Service {Service}: new endpoint {Endpoint} passed its first health check and takes traffic")]
    private static partial void LogHealthFirstPassed(ILogger logger, string service, string endpoint);

    private sealed record ServiceState(ServiceSettings Settings, ServicePolicy Policy, EndpointSet Set);

    private sealed class TimerHolder(ServiceRuntime owner, Action<ServiceRuntime, EndpointState> action, EndpointState endpoint)
    {
        public ITimer? Timer { get; set; }

        public void Fire()
        {
            lock (owner._gate)
            {
                if (Timer is not null)
                {
                    owner._timers.Remove(Timer);
                    Timer.Dispose();
                }

                if (owner._disposed)
                {
                    return;
                }
            }

            try
            {
                action(owner, endpoint);
            }
#pragma warning disable CA1031 // A timer callback must not throw: the process would end. The service keeps its current endpoint set.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                LogRebuildFailed(owner._logger, owner.Name, ex);
            }
        }
    }
}
