using System.Net;
using System.Threading.RateLimiting;
using Governance.Pipeline;
using Governance.RateLimiting;
using Polly;
using Polly.Hedging;
using Polly.Retry;

namespace Governance.Resilience;

/// <summary>
/// The resilience machinery of one service for one configuration: the Polly retry pipeline, the limiter, the retry
/// budget and the timeout sources. Immutable once built; stateful parts (limiter, budget) are carried over to the next
/// configuration when their settings did not change, so a reload neither resets a rate limit nor refills a budget.
/// </summary>
internal sealed class ServicePolicy : IDisposable
{
    /// <summary>Key under which the per-call retry state travels in the Polly context.</summary>
    public static readonly ResiliencePropertyKey<RetryState> RetryStateKey = new("MeshGovernance.RetryState");

    private readonly double _timestampTicksPerTimeSpanTick;
    private RefusedCall? _rejected;
    private RefusedCall? _rejectedUntil;

    private ServicePolicy(ResilienceSettings settings, TimeProvider time, ServicePolicy? previous)
    {
        Settings = settings;
        Retry = settings.Retry;
        Timeout = settings.Timeout;
        Time = time;
        _timestampTicksPerTimeSpanTick = time.TimestampFrequency / (double)TimeSpan.TicksPerSecond;
        Timeouts = previous?.Timeouts ?? new TimeoutScheduler(time);
        SpanClock = previous?.SpanClock ?? new Telemetry.SpanClock(time);
        Budget = previous is not null && previous.Budget.RetryPercent == Retry.BudgetPercent && previous.Budget.MinRetriesPerSecond == Retry.MinRetriesPerSecond
            ? previous.Budget
            : new RetryBudget(time, Retry.BudgetPercent, Retry.MinRetriesPerSecond);
        if (settings.RateLimit is { } limit)
        {
            if (previous?.Settings.RateLimit == limit && previous.Limiter is not null)
            {
                Limiter = previous.Limiter;
            }
            else
            {
                // Window and bucket limiters run a timer of their own for their lifetime: built without the current
                // context, so that a runtime built lazily inside a request does not keep that request's context (its
                // HttpContext, its Activity) alive through the timer.
                using (BackgroundWork.SuppressFlow())
                {
                    Limiter = RateLimiterFactory.Create(limit);
                }
            }
        }

        RetryPipeline = Retry.MaxRetries == 0 ? null : BuildRetryPipeline(Retry, time);
        HedgingPipeline = settings.Hedging is { } hedging ? BuildHedgingPipeline(hedging, time) : null;
        UsesBudget = RetryPipeline is not null || HedgingPipeline is not null;
    }

    public ResilienceSettings Settings { get; }

    public RetrySettings Retry { get; }

    public TimeoutSettings Timeout { get; }

    public TimeProvider Time { get; }

    public TimeoutScheduler Timeouts { get; }

    /// <summary>Gets the converter of this service's timestamps into span times (see <see cref="Telemetry.SpanClock"/>).</summary>
    public Telemetry.SpanClock SpanClock { get; }

    public RetryBudget Budget { get; }

    /// <summary>
    /// Gets a value indicating whether retries or hedges draw on <see cref="Budget"/>. When neither is on, calls are not
    /// counted (one interlocked write per call saved); a reload that turns retries on starts from the budget's reserve.
    /// </summary>
    public bool UsesBudget { get; }

    public RateLimiter? Limiter { get; }

    /// <summary>Gets the Polly retry pipeline, or <see langword="null"/> when <c>Retry:MaxRetries</c> is 0.</summary>
    public ResiliencePipeline<HttpResponseMessage>? RetryPipeline { get; }

    /// <summary>Gets the Polly hedging pipeline, or <see langword="null"/> when hedging is off.</summary>
    public ResiliencePipeline<HttpResponseMessage>? HedgingPipeline { get; }

    public static ServicePolicy Create(ResilienceSettings settings, TimeProvider time, ServicePolicy? previous) => new(settings, time, previous);

    /// <summary>
    /// The shared answer to calls that this policy's limiter rejects (see <see cref="RefusedCall"/>): one
    /// <see cref="RateLimitRejectedException"/> and one task faulted with it, instead of a new pair per call. A reload
    /// builds a new policy, so a new configuration never sees the previous one's refusal.
    /// </summary>
    /// <param name="serviceName">The service this policy belongs to (named by the exception).</param>
    /// <param name="retryAfter">The limiter's hint for this call (its lease's <c>RetryAfter</c> metadata), if any.</param>
    /// <param name="hint">The hint the returned exception gives at this moment (for telemetry).</param>
    /// <remarks>
    /// Without a hint (the concurrency limiter and the sliding window) one refusal serves this policy's whole life. With
    /// one (token bucket, fixed window) the exception holds the due time, now + hint on the service's <see cref="Time"/>, and
    /// counts down to it when read; it is shared until that time has passed, until the limiter gives a hint that ends
    /// sooner, or until the limiter has granted a permit since it was made. A later hint that ends after the shared due
    /// time does not replace it otherwise: System.Threading.RateLimiting answers with whole replenishment periods counted
    /// from the moment of the rejection, whatever the phase of its replenishment timer, so the first rejection's due time
    /// is already past the next replenishment and the count down to it is the closer estimate, until that replenishment
    /// happens (a permit granted since tells it did: the shared due time is then stale). As with the limiter's own hint,
    /// nothing reserves the permit for the caller. Per rejection with a hint: one clock read and one read of the
    /// limiter's statistics; none without. (The sliding window gives no hint.)
    /// </remarks>
    public RefusedCall Rejection(string serviceName, TimeSpan? retryAfter, out TimeSpan? hint)
    {
        if (retryAfter is not { } delay)
        {
            hint = null;
            var plain = Volatile.Read(ref _rejected);
            if (plain is null)
            {
                plain = new RefusedCall(new RateLimitRejectedException(serviceName, retryAfter: null, Time));
                Volatile.Write(ref _rejected, plain);
            }

            return plain;
        }

        if (delay < TimeSpan.Zero)
        {
            delay = TimeSpan.Zero;
        }

        var now = Time.GetTimestamp();
        var due = now + (long)(delay.Ticks * _timestampTicksPerTimeSpanTick);
        var granted = Granted();
        var refusal = Volatile.Read(ref _rejectedUntil);
        if (refusal is null || now >= refusal.DueAt || due < refusal.DueAt || granted != refusal.Granted)
        {
            // Two racing callers may each build one; either is correct, the last one stays.
            refusal = new RefusedCall(new RateLimitRejectedException(serviceName, delay, Time), dueAt: due, granted: granted);
            Volatile.Write(ref _rejectedUntil, refusal);
        }

        hint = TimeSpan.FromTicks((long)((refusal.DueAt - now) / _timestampTicksPerTimeSpanTick));
        return refusal;
    }

    /// <summary>
    /// How many permits the limiter has granted so far (see <see cref="Rejection"/>); -1 once it is disposed (a shutdown
    /// racing a rejection gets its refusal, not an ObjectDisposedException).
    /// </summary>
    private long Granted()
    {
        try
        {
            return Limiter?.GetStatistics()?.TotalSuccessfulLeases ?? 0;
        }
        catch (ObjectDisposedException)
        {
            return -1;
        }
    }

    /// <summary>
    /// Retires this policy after a reload replaced it with <paramref name="successor"/>, or removed its service (no
    /// successor). Calls that read it may still be acquiring, waiting for or holding a permit, so a limiter that
    /// <paramref name="successor"/> does not share is disposed only once they have had the total timeout to finish
    /// (HttpClient's default timeout, 100 s, when the service's timeouts are off) and, after that, only once it is idle:
    /// nobody waits in its queue and, for a concurrency limit, no permit is held (a queued call's wait has no bound of
    /// its own, and disposing the limiter would reject it). Until then it is checked again every second. A policy that
    /// was built but never put in force (a reload that failed after building it) is not retired: the policy in force
    /// still owns whatever the two share.
    /// </summary>
    public void Retire(ServicePolicy? successor)
    {
        if (Limiter is { } limiter && !ReferenceEquals(limiter, successor?.Limiter))
        {
            var retired = new RetiredLimiter(limiter, limiter is ConcurrencyLimiter ? Settings.RateLimit!.Burst : 0);
            using (BackgroundWork.SuppressFlow())
            {
                retired.Start(Time, (Timeout.Enabled ? Timeout.Total : ResilienceConstants.UnboundedCallGrace) + TimeSpan.FromSeconds(1));
            }
        }
    }

    /// <summary>Disposes the limiter at once: the service itself is going away, and this is the policy in force.</summary>
    public void Dispose() => Limiter?.Dispose();

    /// <summary>A limiter no policy in force uses: disposed once idle (see <see cref="Retire"/>).</summary>
    private sealed class RetiredLimiter(RateLimiter limiter, int concurrencyPermits)
    {
        private static readonly TimeSpan Recheck = TimeSpan.FromSeconds(1);
        private readonly Lock _gate = new();
        private ITimer? _timer;

        public void Start(TimeProvider time, TimeSpan grace)
        {
            lock (_gate)
            {
                _timer = time.CreateTimer(static s => ((RetiredLimiter)s!).Check(), this, grace, System.Threading.Timeout.InfiniteTimeSpan);
            }
        }

        private void Check()
        {
            lock (_gate)
            {
                try
                {
                    if (limiter.GetStatistics() is { } statistics
                        && (statistics.CurrentQueuedCount > 0 || statistics.CurrentAvailablePermits < concurrencyPermits))
                    {
                        _timer?.Change(Recheck, System.Threading.Timeout.InfiniteTimeSpan);
                        return;
                    }

                    limiter.Dispose();
                }
#pragma warning disable CA1031 // A timer callback: anything thrown would end the process. The limiter is gone or going either way.
                catch (Exception)
#pragma warning restore CA1031
                {
                }

                _timer?.Dispose();
            }
        }
    }

    private static ResiliencePipeline<HttpResponseMessage> BuildRetryPipeline(RetrySettings retry, TimeProvider time) =>
        new ResiliencePipelineBuilder<HttpResponseMessage> { TimeProvider = time }
            .AddRetry(new RetryStrategyOptions<HttpResponseMessage>
            {
                MaxRetryAttempts = retry.MaxRetries,
                BackoffType = retry.Backoff,
                Delay = retry.BaseDelay,
                MaxDelay = retry.MaxDelay,
                UseJitter = retry.Jitter,
                ShouldHandle = static args => new ValueTask<bool>(args.Context.Properties.GetValue(RetryStateKey, null!).ShouldRetry(args.Outcome, args.AttemptNumber)),
                DelayGenerator = static args => new ValueTask<TimeSpan?>(RetryAfter(args.Outcome, args.Context.Properties.GetValue(RetryStateKey, null!).Call.Policy.Time)),
            })
            .Build();

    private static ResiliencePipeline<HttpResponseMessage> BuildHedgingPipeline(HedgingSettings hedging, TimeProvider time) =>
        new ResiliencePipelineBuilder<HttpResponseMessage> { TimeProvider = time }
            .AddHedging(new HedgingStrategyOptions<HttpResponseMessage>
            {
                MaxHedgedAttempts = hedging.MaxHedgedAttempts,
                Delay = hedging.Delay,
                ShouldHandle = static args => new ValueTask<bool>(HedgeState.ShouldHedge(args.Outcome, args.Context)),
                ActionGenerator = static args =>
                {
                    // Hedged attempts are extra load, like retries: they spend the same budget, and stop when it is spent.
                    // No hedge while the service has no endpoint to offer (its set pending): it would fail at once and
                    // spend the budget that retries need once the service is back.
                    var state = args.PrimaryContext.Properties.GetValue(HedgeState.Key, null!);
                    if (state.Call.Service.Endpoints.IsPending || !state.Call.Policy.Budget.TryRetry())
                    {
                        return null;
                    }

                    args.ActionContext.Properties.Set(HedgeState.AttemptKey, args.AttemptNumber);
                    return () => args.Callback(args.ActionContext);
                },
            })
            .Build();

    /// <summary>The delay a <c>Retry-After</c> header asks for (delta seconds or HTTP date), or <see langword="null"/>.</summary>
    internal static TimeSpan? RetryAfter(Outcome<HttpResponseMessage> outcome, TimeProvider time)
    {
        if (outcome.Result is not { StatusCode: HttpStatusCode.ServiceUnavailable or HttpStatusCode.TooManyRequests } response
            || response.Headers.RetryAfter is not { } retryAfter)
        {
            return null;
        }

        if (retryAfter.Delta is { } delta)
        {
            return delta < TimeSpan.Zero ? TimeSpan.Zero : delta;
        }

        if (retryAfter.Date is { } date)
        {
            // Measured against the server's own clock when it sent one (its Date header), so that clock skew between the
            // two hosts does not stretch or cut the wait; else against this service's clock.
            var wait = date - (response.Headers.Date ?? time.GetUtcNow());
            return wait < TimeSpan.Zero ? TimeSpan.Zero : wait;
        }

        return null;
    }
}
