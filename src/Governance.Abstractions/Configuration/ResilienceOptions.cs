namespace Governance.Configuration;

/// <summary>
/// Retry settings of a service (<c>Retry</c>). A retry re-runs load balancing and avoids endpoints already tried for the
/// request while others remain.
/// </summary>
public sealed class RetryOptions
{
    /// <summary>Gets or sets the number of retries after the first attempt, 0 to 10; 0 disables retries. Default: 2.</summary>
    public int? MaxRetries { get; set; }

    /// <summary>Gets or sets the backoff between retries: <c>Constant</c>, <c>Linear</c> or <c>Exponential</c>. Default: <c>Exponential</c>.</summary>
    public string? Backoff { get; set; }

    /// <summary>Gets or sets the delay before the first retry. Default: 25 ms.</summary>
    public TimeSpan? BaseDelay { get; set; }

    /// <summary>Gets or sets the longest backoff delay between two attempts, not shorter than <see cref="BaseDelay"/> (a <c>Retry-After</c> may ask for longer, and is honoured within the total timeout). Default: 250 ms.</summary>
    public TimeSpan? MaxDelay { get; set; }

    /// <summary>Gets or sets a value indicating whether delays are randomized (Polly's: decorrelated jitter with exponential backoff, about ±25 % otherwise). Default: <see langword="true"/>.</summary>
    public bool? Jitter { get; set; }

    /// <summary>
    /// Gets or sets a value indicating whether non-idempotent methods (POST, PATCH, CONNECT and any method not listed below) are retried too.
    /// Default: <see langword="false"/>: only GET, HEAD, OPTIONS, PUT, DELETE and TRACE are retried.
    /// </summary>
    public bool? RetryNonIdempotent { get; set; }

    /// <summary>
    /// Gets the conditions that cause a retry: <c>5xx</c>, <c>gateway-error</c> (502, 503, 504), <c>connect-failure</c>,
    /// <c>reset</c>, <c>timeout</c> (attempt timeout), <c>retriable-4xx</c> (409) or a status code from 400 to 599 such as <c>429</c>.
    /// Default: <c>5xx</c>, <c>connect-failure</c>, <c>reset</c>, <c>timeout</c>.
    /// </summary>
    public IList<string> RetryOn { get; } = new List<string>();

    /// <summary>Gets or sets the retry budget. Default: 20 % of requests plus 3 retries per second.</summary>
    public RetryBudgetOptions? Budget { get; set; }
}

/// <summary>
/// Caps retries to a share of the requests (<c>Retry:Budget</c>), so that a failing service does not receive a multiple
/// of its normal load. Counted over a sliding window of 10 seconds.
/// </summary>
public sealed class RetryBudgetOptions
{
    /// <summary>Gets or sets the retries allowed as a percentage of requests, 0 to 1000. Default: 20.</summary>
    public double? RetryPercent { get; set; }

    /// <summary>Gets or sets the retries per second always allowed, whatever the request rate, 0 to 100000. Default: 3.</summary>
    public int? MinRetriesPerSecond { get; set; }
}

/// <summary>Timeouts of a service (<c>Timeout</c>).</summary>
public sealed class TimeoutOptions
{
    /// <summary>
    /// Gets or sets a value indicating whether governance bounds calls and attempts in time. <see langword="false"/> turns
    /// off both <see cref="Total"/> and <see cref="PerAttempt"/>: calls then end only when the caller's token is cancelled
    /// (the caller's own deadline; for .NET's <c>HttpClient</c>, its <c>Timeout</c>, 100 s unless set), which suits
    /// long-polling services whose response headers may take unbounded time. (Streamed bodies need nothing: every stage
    /// ends when the response headers arrive.) Default: <see langword="true"/>.
    /// </summary>
    public bool? Enabled { get; set; }

    /// <summary>Gets or sets the limit for the whole logical call up to its response headers, retries and their delays included, 1 ms to 1 day. Default: 30 s.</summary>
    public TimeSpan? Total { get; set; }

    /// <summary>Gets or sets the limit for each attempt up to its response headers, 1 ms to 1 day and not longer than <see cref="Total"/>. Default: 10 s.</summary>
    public TimeSpan? PerAttempt { get; set; }
}

/// <summary>Per-endpoint circuit breaker (<c>CircuitBreaker</c>); an open circuit removes the endpoint from load balancing.</summary>
public sealed class CircuitBreakerOptions
{
    /// <summary>Gets or sets a value indicating whether the breaker is on. Default: <see langword="true"/>.</summary>
    public bool? Enabled { get; set; }

    /// <summary>Gets or sets the failure ratio (0 to 1, exclusive of 0) over <see cref="SamplingDuration"/> that opens the circuit. Default: 0.5.</summary>
    public double? FailureRatio { get; set; }

    /// <summary>Gets or sets the attempts needed in <see cref="SamplingDuration"/> before the ratio counts, 2 or more. Default: 20.</summary>
    public int? MinimumThroughput { get; set; }

    /// <summary>Gets or sets the window over which failures are counted, at least 500 ms. Default: 30 s.</summary>
    public TimeSpan? SamplingDuration { get; set; }

    /// <summary>Gets or sets how long the circuit stays open before a probe, at least 500 ms. Default: 5 s.</summary>
    public TimeSpan? BreakDuration { get; set; }
}

/// <summary>Passive outlier detection (<c>OutlierDetection</c>), after Envoy's: consecutive failures eject an endpoint for a while.</summary>
public sealed class OutlierDetectionOptions
{
    /// <summary>Gets or sets a value indicating whether outlier detection is on. Default: <see langword="true"/>.</summary>
    public bool? Enabled { get; set; }

    /// <summary>Gets or sets the consecutive 5xx answers or local failures (connect failure, reset, attempt timeout) that eject an endpoint, 1 or more. Default: 5.</summary>
    public int? Consecutive5xx { get; set; }

    /// <summary>Gets or sets the consecutive gateway failures (502, 503, 504, or a local failure: connect failure, reset, attempt timeout) that eject an endpoint, 1 or more. Default: 5.</summary>
    public int? ConsecutiveGatewayFailure { get; set; }

    /// <summary>Gets or sets the first ejection's length; an ejection lasts n times as long, n one more than the previous ejection's less one for every 10 s the endpoint stayed in since (Envoy's backoff). Default: 30 s.</summary>
    public TimeSpan? BaseEjectionTime { get; set; }

    /// <summary>Gets or sets the longest ejection, not shorter than <see cref="BaseEjectionTime"/>; the backoff stops growing once it reaches it. Default: 5 min.</summary>
    public TimeSpan? MaxEjectionTime { get; set; }

    /// <summary>Gets or sets the largest share of a service's endpoints ejected at once, 0 to 100; at least one endpoint may always be ejected. Default: 10.</summary>
    public int? MaxEjectionPercent { get; set; }

    /// <summary>
    /// Gets or sets the panic threshold, 0 to 100: when fewer than this percentage of the endpoints are available, all
    /// endpoints are used again, so that a bad health signal never takes the service to zero. With zone-aware routing it
    /// is judged per zone level (the local zone, the others), and only while the two together are short of healthy
    /// endpoints (Envoy's priority levels). 0 disables panic mode. Default: 50.
    /// </summary>
    public int? PanicThreshold { get; set; }
}

/// <summary>Active health checks (<c>HealthCheck</c>): off unless <see cref="Path"/> is set.</summary>
public sealed class HealthCheckOptions
{
    /// <summary>Gets or sets the path probed with GET on every endpoint, such as <c>/health</c>; a 2xx answer is healthy. Default: none (off).</summary>
    public string? Path { get; set; }

    /// <summary>Gets or sets the time between probes, at least 100 ms. Default: 10 s.</summary>
    public TimeSpan? Interval { get; set; }

    /// <summary>Gets or sets the limit of one probe; not longer than <see cref="Interval"/>. Default: 2 s.</summary>
    public TimeSpan? Timeout { get; set; }

    /// <summary>Gets or sets the consecutive failed probes that mark an endpoint unhealthy, 1 to 1000. Default: 2.</summary>
    public int? UnhealthyThreshold { get; set; }

    /// <summary>Gets or sets the consecutive good probes that mark it healthy again, 1 to 1000. Default: 1.</summary>
    public int? HealthyThreshold { get; set; }

    /// <summary>
    /// Gets or sets the HTTP version of the probes: <c>Http1</c> (HTTP/1.1) or <c>Http2</c> (HTTP/2 only: with prior
    /// knowledge on <c>http</c> endpoints, as gRPC's cleartext servers need, and negotiated by ALPN on <c>https</c> ones).
    /// Default: <c>Http1</c>.
    /// </summary>
    public string? Protocol { get; set; }
}

/// <summary>
/// Client-side rate limit of calls to a service (<c>RateLimit</c>), counted once per logical call. Off unless a key of
/// this section is set (in the service or in <c>Defaults</c>); <see cref="Enabled"/> <see langword="false"/> turns it off.
/// </summary>
public sealed class RateLimitOptions
{
    /// <summary>Gets or sets a value indicating whether the limit applies. Default: <see langword="true"/> when any other key of the section is set.</summary>
    public bool? Enabled { get; set; }

    /// <summary>
    /// Gets or sets the algorithm: <c>TokenBucket</c>, <c>FixedWindow</c>, <c>SlidingWindow</c> (1-second windows;
    /// sliding in 10 segments) or <c>Concurrency</c> (at most <see cref="Burst"/> calls in flight). Default: <c>TokenBucket</c>.
    /// </summary>
    public string? Algorithm { get; set; }

    /// <summary>Gets or sets the sustained calls per second, 1 or more (not used by <c>Concurrency</c>). Default: 100.</summary>
    public int? PermitsPerSecond { get; set; }

    /// <summary>Gets or sets the bucket size of <c>TokenBucket</c> (calls admitted at once; at least <see cref="PermitsPerSecond"/> / 1000, rounded up) or the limit of <c>Concurrency</c>, 1 or more. Default: <see cref="PermitsPerSecond"/>; 100 for <c>Concurrency</c>, whatever <see cref="PermitsPerSecond"/> says.</summary>
    public int? Burst { get; set; }

    /// <summary>Gets or sets the calls that may wait for a permit instead of being rejected, 0 or more. Default: 0.</summary>
    public int? QueueLimit { get; set; }
}

/// <summary>Hedging (<c>Hedging</c>): for idempotent requests, a second attempt to another endpoint after <see cref="Delay"/>; the first good answer wins.</summary>
public sealed class HedgingOptions
{
    /// <summary>Gets or sets a value indicating whether hedging replaces retries for idempotent requests. Default: <see langword="false"/>.</summary>
    public bool? Enabled { get; set; }

    /// <summary>Gets or sets how long to wait for an answer before sending the next hedged attempt. Default: 100 ms.</summary>
    public TimeSpan? Delay { get; set; }

    /// <summary>Gets or sets the extra attempts, 1 to 10. Default: 1.</summary>
    public int? MaxHedgedAttempts { get; set; }
}
