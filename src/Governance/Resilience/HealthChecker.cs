using Governance.Pipeline;
using Microsoft.Extensions.Logging;

namespace Governance.Resilience;

/// <summary>
/// Active health checks of one service (<c>HealthCheck</c>), off the request path: every <c>Interval</c> (and once at
/// start) each endpoint gets a GET of <c>Path</c>, and an endpoint that appears between rounds (discovery's first answer,
/// a scale-out, a reload) is probed as soon as it appears (Envoy's checker does the same), then with the rounds;
/// <c>UnhealthyThreshold</c> consecutive failures (non-2xx, error or <c>Timeout</c>) take it out of load balancing and <c>HealthyThreshold</c> consecutive successes bring it back.
/// Every new endpoint waits out of load balancing for its first probe, which decides alone
/// (<see cref="EndpointConditions.AwaitingHealthCheck"/>); results are applied as probes end. Probes
/// use their own connection pool, never the governed pipeline, and combine with passive ejection and circuit breaking
/// (an endpoint is used only when none of them excludes it).
/// </summary>
internal sealed partial class HealthChecker : IAsyncDisposable
{
    private readonly ServiceRuntime _service;
    private readonly HealthCheckSettings _settings;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly HttpClient _client;
    private readonly Dictionary<EndpointState, (int Failures, int Successes)> _counts = [];
    private readonly Task _loop;

    /// <summary>1 when the endpoint set changed since the loop last looked (<see cref="OnEndpointsChanged"/>).</summary>
    private int _changed;

    /// <summary>The pause between rounds in progress, cancelled by <see cref="OnEndpointsChanged"/>; <see langword="null"/> outside it.</summary>
    private CancellationTokenSource? _pause;

    public HealthChecker(ServiceRuntime service, HealthCheckSettings settings, TimeProvider time, ILogger logger)
    {
        _service = service;
        _settings = settings;
        _time = time;
        _logger = logger;
        _client = new HttpClient(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(2), UseProxy = false, AllowAutoRedirect = false })
        {
            Timeout = Timeout.InfiniteTimeSpan,
        };
        using (BackgroundWork.SuppressFlow())
        {
            _loop = Task.Run(RunAsync);
        }
    }

    /// <summary>
    /// Gets the probe loop, which completes once the checker has stopped (disposed, or replaced by a reload): from then
    /// on it starts no round, no probe and no pause, and applies no result. It ends cancelled when stopped during its
    /// pause. Tests await it to know that a replaced checker is gone before they count probes and timers.
    /// </summary>
    internal Task Completion => _loop;

    /// <summary>
    /// The service's endpoints changed (called by the service, under its lock): endpoints that this checker has not
    /// probed yet are probed now, without waiting for the next round; the others keep the rounds' cadence.
    /// </summary>
    public void OnEndpointsChanged()
    {
        // Full fences on both sides (here and in the loop: flag, then pause; pause, then flag), so that either the loop
        // sees the flag or this sees its pause. The pause is cancelled on the thread pool: cancelling it here would run
        // the loop's next probes inline, on the publishing thread and under the service's lock.
        Interlocked.Exchange(ref _changed, 1);
        if (Interlocked.CompareExchange(ref _pause, null, null) is { } pause)
        {
            ThreadPool.UnsafeQueueUserWorkItem(
                static p =>
                {
                    try
                    {
                        p.Cancel();
                    }
                    catch (ObjectDisposedException)
                    {
                        // The pause ended meanwhile: the loop sees the flag before its next pause.
                    }
                },
                pause,
                preferLocal: false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        try
        {
            await _loop.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }

        _client.Dispose();
        _stop.Dispose();
    }

    private async Task RunAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Interlocked.Exchange(ref _changed, 0);
            if (!await RoundAsync(onlyNew: false).ConfigureAwait(false))
            {
                return;
            }

            // The pause until the next round; endpoints that appear meanwhile are probed at once, and the pause goes on.
            var next = _time.GetTimestamp();
            while (true)
            {
                var remaining = _settings.Interval - _time.GetElapsedTime(next);
                if (remaining <= TimeSpan.Zero)
                {
                    break;
                }

                if (Interlocked.Exchange(ref _changed, 0) == 0)
                {
                    using var pause = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                    Interlocked.Exchange(ref _pause, pause);
                    try
                    {
                        // The flag is read again once the pause can be cancelled, so that no change is missed.
                        if (Interlocked.CompareExchange(ref _changed, 0, 0) == 0)
                        {
                            await Task.Delay(remaining, _time, pause.Token).ConfigureAwait(false);
                            break;
                        }
                    }
                    catch (OperationCanceledException) when (!_stop.IsCancellationRequested)
                    {
                        // Woken: the endpoints changed.
                    }
                    finally
                    {
                        Interlocked.Exchange(ref _pause, null);
                    }

                    Interlocked.Exchange(ref _changed, 0);
                }

                if (!await RoundAsync(onlyNew: true).ConfigureAwait(false))
                {
                    return;
                }
            }
        }
    }

    /// <summary>
    /// Probes every endpoint (or, with <paramref name="onlyNew"/>, those this checker has no count for) and applies the
    /// results; <see langword="false"/> once the checker is stopped.
    /// </summary>
    private async Task<bool> RoundAsync(bool onlyNew)
    {
        try
        {
            var endpoints = _service.Endpoints.All;
            if (onlyNew)
            {
                endpoints = Array.FindAll(endpoints, e => !_counts.ContainsKey(e));
            }

            var probes = new Task<(EndpointState Endpoint, bool Healthy)>[endpoints.Length];
            for (var i = 0; i < endpoints.Length; i++)
            {
                probes[i] = ProbeAsync(endpoints[i]);
            }

            // Each result is applied as soon as its probe ends, so that an endpoint whose probe hangs until its Timeout
            // delays nobody else's (a newcomer waits out of load balancing for its first result); the results that ended
            // together are applied as one batch, with one rebuild of the endpoint set.
            var changes = new List<(EndpointState Endpoint, bool Healthy)>();
            var results = Task.WhenEach(probes).GetAsyncEnumerator();
            var drained = false;
            try
            {
                var next = results.MoveNextAsync();
                while (await next.ConfigureAwait(false))
                {
                    var (endpoint, healthy) = await results.Current.ConfigureAwait(false);

                    // A checker replaced by a reload (or disposed) stops at once and applies no more results: the new
                    // checker, with the new settings, owns the endpoints' health from then on.
                    if (_stop.IsCancellationRequested)
                    {
                        return false;
                    }

                    if (Record(endpoint, healthy))
                    {
                        changes.Add((endpoint, healthy));
                    }

                    next = results.MoveNextAsync();
                    if (!next.IsCompleted && changes.Count > 0)
                    {
                        // No other probe has ended yet: apply what has.
                        _service.OnHealthChanged(this, changes);
                        changes.Clear();
                    }
                }

                drained = true;
            }
            finally
            {
                try
                {
                    await results.DisposeAsync().ConfigureAwait(false);
                }
#pragma warning disable CA1031 // Left early (stopped, or a failure on its way out): that is what is reported, not the enumerator's refusal to be disposed with a MoveNextAsync outstanding.
                catch (Exception) when (!drained)
#pragma warning restore CA1031
                {
                }
            }

            if (changes.Count > 0 && !_stop.IsCancellationRequested)
            {
                _service.OnHealthChanged(this, changes);
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
            return false;
        }
#pragma warning disable CA1031 // A round that fails unexpectedly is logged; the checks go on with the next round.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            LogRoundFailed(_logger, _service.Name, ex);
        }

        return !_stop.IsCancellationRequested;
    }

    private async Task<(EndpointState Endpoint, bool Healthy)> ProbeAsync(EndpointState endpoint) => (endpoint, await IsHealthyAsync(endpoint).ConfigureAwait(false));

    private async Task<bool> IsHealthyAsync(EndpointState endpoint)
    {
        using var timeout = new CancellationTokenSource(_settings.Timeout, _time);
        using var stop = _stop.Token.UnsafeRegister(static s => ((CancellationTokenSource)s!).Cancel(), timeout);
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(endpoint.Authority + _settings.Path))
            {
                Version = _settings.Protocol,
                VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            };
            using var response = await _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token).ConfigureAwait(false);
            return response.IsSuccessStatusCode;
        }
#pragma warning disable CA1031 // Any failure of a probe is a failed probe.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            // While stopping (cancelled, or the client disposed under it) the result is never applied and nothing is
            // logged; the probe still ends normally, so that no probe the loop left behind faults unobserved.
            if (!_stop.IsCancellationRequested)
            {
                LogProbeFailed(_logger, _service.Name, endpoint.Authority, ex.Message);
            }

            return false;
        }
    }

    /// <summary>Counts a probe's result; <see langword="true"/> when it changes the endpoint's health (or decides a newcomer).</summary>
    private bool Record(EndpointState endpoint, bool healthy)
    {
        if (_counts.Count > 4 * Math.Max(1, _service.Endpoints.All.Length))
        {
            // Forget endpoints that discovery dropped.
            var live = new HashSet<EndpointState>(_service.Endpoints.All);
            foreach (var gone in _counts.Keys.Where(e => !live.Contains(e)).ToList())
            {
                _counts.Remove(gone);
            }
        }

        _counts.TryGetValue(endpoint, out var counts);
        counts = healthy ? (0, counts.Successes + 1) : (counts.Failures + 1, 0);
        _counts[endpoint] = counts;
        var flagged = (endpoint.Conditions & EndpointConditions.FailedHealthCheck) != 0;

        // A newcomer held out until now: its first probe decides alone (Envoy's first check bypasses the thresholds).
        return endpoint.AwaitingFirstHealthCheck
            || (!healthy && !flagged && counts.Failures >= _settings.UnhealthyThreshold)
            || (healthy && flagged && counts.Successes >= _settings.HealthyThreshold);
    }

    [LoggerMessage(Telemetry.GovernanceEventIds.HealthCheckRoundFailed, LogLevel.Error, "Service {Service}: a round of health checks failed; checks go on at the next interval")]
    private static partial void LogRoundFailed(ILogger logger, string service, Exception exception);

    [LoggerMessage(Telemetry.GovernanceEventIds.HealthCheckProbeFailed, LogLevel.Debug, "Service {Service}: health probe of {Endpoint} failed: {Reason}")]
    private static partial void LogProbeFailed(ILogger logger, string service, string endpoint, string reason);
}
