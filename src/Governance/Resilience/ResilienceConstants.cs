namespace Governance.Resilience;

/// <summary>Built-in defaults of the resilience keys (documented in README) and the names they accept.</summary>
internal static class ResilienceConstants
{
    public const int MaxRetries = 2;
    public const string Backoff = "Exponential";
    public static readonly TimeSpan BaseDelay = TimeSpan.FromMilliseconds(25);
    public static readonly TimeSpan MaxDelay = TimeSpan.FromMilliseconds(250);
    public const bool Jitter = true;
    public const bool RetryNonIdempotent = false;
    public static readonly string[] RetryOn = ["5xx", "connect-failure", "reset", "timeout"];
    public const double RetryBudgetPercent = 20;
    public const int MinRetriesPerSecond = 3;

    public static readonly TimeSpan TotalTimeout = TimeSpan.FromSeconds(30);
    public static readonly TimeSpan AttemptTimeout = TimeSpan.FromSeconds(10);
    public const bool TimeoutEnabled = true;

    /// <summary>How long a call may last when governance's timeouts are off: HttpClient's default <c>Timeout</c>.</summary>
    public static readonly TimeSpan UnboundedCallGrace = TimeSpan.FromSeconds(100);

    public const bool CircuitBreakerEnabled = true;
    public const double FailureRatio = 0.5;
    public const int MinimumThroughput = 20;
    public static readonly TimeSpan SamplingDuration = TimeSpan.FromSeconds(30);
    public static readonly TimeSpan BreakDuration = TimeSpan.FromSeconds(5);

    public const bool OutlierDetectionEnabled = true;
    public const int Consecutive5xx = 5;
    public const int ConsecutiveGatewayFailure = 5;
    public static readonly TimeSpan BaseEjectionTime = TimeSpan.FromSeconds(30);
    public static readonly TimeSpan MaxEjectionTime = TimeSpan.FromMinutes(5);
    public const int MaxEjectionPercent = 10;
    public const int PanicThreshold = 50;

    public static readonly TimeSpan HealthCheckInterval = TimeSpan.FromSeconds(10);
    public static readonly TimeSpan HealthCheckTimeout = TimeSpan.FromSeconds(2);
    public const int UnhealthyThreshold = 2;
    public const int HealthyThreshold = 1;

    public const string RateLimitAlgorithm = "TokenBucket";
    public const int PermitsPerSecond = 100;
    public const int QueueLimit = 0;

    public const bool HedgingEnabled = false;
    public static readonly TimeSpan HedgingDelay = TimeSpan.FromMilliseconds(100);
    public const int MaxHedgedAttempts = 1;

    public static readonly string[] BackoffNames = ["Constant", "Linear", "Exponential"];
    public static readonly string[] RetryOnNames = ["5xx", "gateway-error", "connect-failure", "reset", "timeout", "retriable-4xx"];
    public static readonly string[] RateLimitAlgorithms = ["TokenBucket", "FixedWindow", "SlidingWindow", "Concurrency"];

    public static readonly string[] HealthCheckProtocols = ["Http1", "Http2"];
}
