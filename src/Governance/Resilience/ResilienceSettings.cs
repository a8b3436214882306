using System.Collections.Frozen;
using System.Globalization;
using Governance.Configuration;
using Polly;

namespace Governance.Resilience;

/// <summary>
/// What makes an outcome retryable (<c>Retry:RetryOn</c>). Each value is the bit of the <see cref="AttemptFailure"/> it
/// names, so the configured conditions are a mask over failures.
/// </summary>
[Flags]
internal enum RetryConditions
{
    None = 0,
    ServerError = AttemptFailure.ServerError,
    GatewayError = AttemptFailure.GatewayError,
    ConnectFailure = AttemptFailure.ConnectFailure,
    Reset = AttemptFailure.Reset,
    Timeout = AttemptFailure.Timeout,
    Retriable4xx = AttemptFailure.Retriable4xx,
}

internal sealed record RetrySettings(
    int MaxRetries,
    DelayBackoffType Backoff,
    TimeSpan BaseDelay,
    TimeSpan MaxDelay,
    bool Jitter,
    bool RetryNonIdempotent,
    RetryConditions Conditions,
    FrozenSet<int> StatusCodes,
    double BudgetPercent,
    int MinRetriesPerSecond);

/// <summary>
/// A service's timeouts. When <see cref="Enabled"/> is <see langword="false"/> (<c>Timeout:Enabled false</c>) governance
/// arms no timer: attempts are sent with the caller's token and <see cref="Total"/> and <see cref="PerAttempt"/> (still the
/// configured or default values) bound nothing but the waits for an endpoint (discovery's first answer, or a first
/// health check's pass, at a call's start and on a retry) and a retired limiter's grace period.
/// </summary>
internal sealed record TimeoutSettings(TimeSpan Total, TimeSpan PerAttempt, bool Enabled = true);

internal sealed record CircuitBreakerSettings(double FailureRatio, int MinimumThroughput, TimeSpan SamplingDuration, TimeSpan BreakDuration);

internal sealed record OutlierSettings(int Consecutive5xx, int ConsecutiveGatewayFailure, TimeSpan BaseEjectionTime, TimeSpan MaxEjectionTime, int MaxEjectionPercent);

internal sealed record HealthCheckSettings(string Path, TimeSpan Interval, TimeSpan Timeout, int UnhealthyThreshold, int HealthyThreshold, Version Protocol);

internal sealed record RateLimitSettings(string Algorithm, int PermitsPerSecond, int Burst, int QueueLimit);

internal sealed record HedgingSettings(TimeSpan Delay, int MaxHedgedAttempts);

/// <summary>A service's effective resilience settings: its keys over <c>Defaults</c> over <see cref="ResilienceConstants"/>. Null parts are off.</summary>
internal sealed record ResilienceSettings(
    RetrySettings Retry,
    TimeoutSettings Timeout,
    CircuitBreakerSettings? CircuitBreaker,
    OutlierSettings? Outlier,
    int PanicThreshold,
    HealthCheckSettings? HealthCheck,
    RateLimitSettings? RateLimit,
    HedgingSettings? Hedging)
{
    public static ResilienceSettings Create(ServiceOptions service, ServiceOptions defaults)
    {
        var r = service.Retry;
        var dr = defaults.Retry;
        var retryOn = r is { RetryOn.Count: > 0 } ? r.RetryOn : dr is { RetryOn.Count: > 0 } ? dr.RetryOn : (IList<string>)ResilienceConstants.RetryOn;
        var conditions = RetryConditions.None;
        var codes = new HashSet<int>();
        foreach (var item in retryOn)
        {
            conditions |= item.Trim().ToUpperInvariant() switch
            {
                "5XX" => RetryConditions.ServerError,
                "GATEWAY-ERROR" => RetryConditions.GatewayError,
                "CONNECT-FAILURE" => RetryConditions.ConnectFailure,
                "RESET" => RetryConditions.Reset,
                "TIMEOUT" => RetryConditions.Timeout,
                "RETRIABLE-4XX" => RetryConditions.Retriable4xx,
                _ => RetryConditions.None,
            };
            if (int.TryParse(item, NumberStyles.None, CultureInfo.InvariantCulture, out var code))
            {
                codes.Add(code);
            }
        }

        var retry = new RetrySettings(
            r?.MaxRetries ?? dr?.MaxRetries ?? ResilienceConstants.MaxRetries,
            Enum.Parse<DelayBackoffType>(r?.Backoff ?? dr?.Backoff ?? ResilienceConstants.Backoff, ignoreCase: true),
            r?.BaseDelay ?? dr?.BaseDelay ?? ResilienceConstants.BaseDelay,
            r?.MaxDelay ?? dr?.MaxDelay ?? ResilienceConstants.MaxDelay,
            r?.Jitter ?? dr?.Jitter ?? ResilienceConstants.Jitter,
            r?.RetryNonIdempotent ?? dr?.RetryNonIdempotent ?? ResilienceConstants.RetryNonIdempotent,
            conditions,
            codes.ToFrozenSet(),
            r?.Budget?.RetryPercent ?? dr?.Budget?.RetryPercent ?? ResilienceConstants.RetryBudgetPercent,
            r?.Budget?.MinRetriesPerSecond ?? dr?.Budget?.MinRetriesPerSecond ?? ResilienceConstants.MinRetriesPerSecond);

        var timeout = new TimeoutSettings(
            service.Timeout?.Total ?? defaults.Timeout?.Total ?? ResilienceConstants.TotalTimeout,
            service.Timeout?.PerAttempt ?? defaults.Timeout?.PerAttempt ?? ResilienceConstants.AttemptTimeout,
            service.Timeout?.Enabled ?? defaults.Timeout?.Enabled ?? ResilienceConstants.TimeoutEnabled);

        var cb = service.CircuitBreaker;
        var dcb = defaults.CircuitBreaker;
        var breaker = (cb?.Enabled ?? dcb?.Enabled ?? ResilienceConstants.CircuitBreakerEnabled)
            ? new CircuitBreakerSettings(
                cb?.FailureRatio ?? dcb?.FailureRatio ?? ResilienceConstants.FailureRatio,
                cb?.MinimumThroughput ?? dcb?.MinimumThroughput ?? ResilienceConstants.MinimumThroughput,
                cb?.SamplingDuration ?? dcb?.SamplingDuration ?? ResilienceConstants.SamplingDuration,
                cb?.BreakDuration ?? dcb?.BreakDuration ?? ResilienceConstants.BreakDuration)
            : null;

        var od = service.OutlierDetection;
        var dod = defaults.OutlierDetection;
        var outlier = (od?.Enabled ?? dod?.Enabled ?? ResilienceConstants.OutlierDetectionEnabled)
            ? new OutlierSettings(
                od?.Consecutive5xx ?? dod?.Consecutive5xx ?? ResilienceConstants.Consecutive5xx,
                od?.ConsecutiveGatewayFailure ?? dod?.ConsecutiveGatewayFailure ?? ResilienceConstants.ConsecutiveGatewayFailure,
                od?.BaseEjectionTime ?? dod?.BaseEjectionTime ?? ResilienceConstants.BaseEjectionTime,
                od?.MaxEjectionTime ?? dod?.MaxEjectionTime ?? ResilienceConstants.MaxEjectionTime,
                od?.MaxEjectionPercent ?? dod?.MaxEjectionPercent ?? ResilienceConstants.MaxEjectionPercent)
            : null;

        var hc = service.HealthCheck;
        var dhc = defaults.HealthCheck;
        var path = hc?.Path ?? dhc?.Path;
        var health = string.IsNullOrWhiteSpace(path)
            ? null
            : new HealthCheckSettings(
                path,
                hc?.Interval ?? dhc?.Interval ?? ResilienceConstants.HealthCheckInterval,
                hc?.Timeout ?? dhc?.Timeout ?? ResilienceConstants.HealthCheckTimeout,
                hc?.UnhealthyThreshold ?? dhc?.UnhealthyThreshold ?? ResilienceConstants.UnhealthyThreshold,
                hc?.HealthyThreshold ?? dhc?.HealthyThreshold ?? ResilienceConstants.HealthyThreshold,
                string.Equals((hc?.Protocol ?? dhc?.Protocol)?.Trim(), "Http2", StringComparison.OrdinalIgnoreCase) ? System.Net.HttpVersion.Version20 : System.Net.HttpVersion.Version11);

        var rl = service.RateLimit;
        var drl = defaults.RateLimit;
        RateLimitSettings? rateLimit = null;
        // The service's own keys turn the limit on even when Defaults turned it off; its own Enabled has the last word.
        if (rl?.Enabled ?? (IsSet(rl) || (drl?.Enabled ?? IsSet(drl))))
        {
            // Only what the algorithm reads is kept (the rest is 0), its name in canonical case: a reload that edits a
            // key the limiter ignores (a rate in Defaults, under a concurrency limit) compares equal and keeps the
            // limiter, with its permits held and its window, instead of building a fresh one beside them.
            var algorithm = Canonical((rl?.Algorithm ?? drl?.Algorithm ?? ResilienceConstants.RateLimitAlgorithm).Trim());
            var isConcurrency = algorithm == "Concurrency";
            var isWindow = algorithm is "FixedWindow" or "SlidingWindow";
            var permits = rl?.PermitsPerSecond ?? drl?.PermitsPerSecond ?? ResilienceConstants.PermitsPerSecond;

            // A concurrency limit is Burst alone: a rate (inherited from Defaults for another algorithm) never becomes one.
            var burst = rl?.Burst ?? drl?.Burst ?? (isConcurrency ? ResilienceConstants.PermitsPerSecond : permits);
            rateLimit = new RateLimitSettings(
                algorithm,
                isConcurrency ? 0 : permits,
                isWindow ? 0 : burst,
                rl?.QueueLimit ?? drl?.QueueLimit ?? ResilienceConstants.QueueLimit);
        }

        var h = service.Hedging;
        var dh = defaults.Hedging;
        var hedging = (h?.Enabled ?? dh?.Enabled ?? ResilienceConstants.HedgingEnabled)
            ? new HedgingSettings(
                h?.Delay ?? dh?.Delay ?? ResilienceConstants.HedgingDelay,
                h?.MaxHedgedAttempts ?? dh?.MaxHedgedAttempts ?? ResilienceConstants.MaxHedgedAttempts)
            : null;

        return new ResilienceSettings(
            retry,
            timeout,
            breaker,
            outlier,
            od?.PanicThreshold ?? dod?.PanicThreshold ?? ResilienceConstants.PanicThreshold,
            health,
            rateLimit,
            hedging);
    }

    /// <summary>A known algorithm's name as <see cref="ResilienceConstants.RateLimitAlgorithms"/> spells it (validation allows no other).</summary>
    private static string Canonical(string algorithm) =>
        Array.Find(ResilienceConstants.RateLimitAlgorithms, known => string.Equals(known, algorithm, StringComparison.OrdinalIgnoreCase)) ?? algorithm;

    private static bool IsSet(RateLimitOptions? options) =>
        options is not null && (options.Algorithm is not null || options.PermitsPerSecond is not null || options.Burst is not null || options.QueueLimit is not null);
}
