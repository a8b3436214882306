namespace Governance.Telemetry;

/// <summary>
/// Names under which MeshGovernance publishes traces and metrics (OpenTelemetry conventions: seconds for durations,
/// OpenTelemetry attribute names where they exist, <c>governance.*</c> otherwise). These names are public contract.
/// </summary>
public static class GovernanceTelemetry
{
    /// <summary>Name of the <c>ActivitySource</c> and of the <c>Meter</c>: <c>MeshGovernance</c>.</summary>
    public const string Name = "MeshGovernance";

    /// <summary>Tag holding the logical service name of a governed call: <c>governance.service</c>.</summary>
    public const string ServiceTag = "governance.service";

    /// <summary>Tag holding why an attempt is retried (<c>5xx</c>, <c>connect-failure</c>, ...) or <c>hedge</c> for a hedged attempt: <c>governance.reason</c>.</summary>
    public const string ReasonTag = "governance.reason";

    /// <summary>Tag holding the attempt number (1 for the first attempt): <c>governance.attempt</c>.</summary>
    public const string AttemptTag = "governance.attempt";

    /// <summary>Tag holding an endpoint's state in <see cref="Instruments.LoadBalancerEndpoints"/> and circuit transitions: <c>governance.state</c>.</summary>
    public const string StateTag = "governance.state";

    /// <summary>Tag holding the discovery provider name: <c>governance.discovery.provider</c>.</summary>
    public const string DiscoveryProviderTag = "governance.discovery.provider";

    /// <summary>Tag of the <see cref="Events.Ejection"/> event holding how long the endpoint is ejected, in seconds: <c>governance.ejection.duration</c>.</summary>
    public const string EjectionDurationTag = "governance.ejection.duration";

    /// <summary>Tag of the <see cref="Events.RateLimitRejected"/> event holding the limiter's retry-after hint, in seconds, when it has one: <c>governance.retry_after</c>.</summary>
    public const string RetryAfterTag = "governance.retry_after";

    /// <summary>Names of the instruments of the <c>MeshGovernance</c> meter.</summary>
    public static class Instruments
    {
        /// <summary>Histogram, seconds, one measurement per logical call (all attempts): <c>governance.client.request.duration</c>.</summary>
        public const string RequestDuration = "governance.client.request.duration";

        /// <summary>Counter, one per attempt, tagged with the endpoint (<c>server.address</c>, <c>server.port</c>): <c>governance.client.attempts</c>.</summary>
        public const string Attempts = "governance.client.attempts";

        /// <summary>Counter of retries and hedged attempts, tagged with the reason: <c>governance.client.retries</c>.</summary>
        public const string Retries = "governance.client.retries";

        /// <summary>Counter of calls rejected by the client-side rate limit: <c>governance.rate_limit.rejections</c>.</summary>
        public const string RateLimitRejections = "governance.rate_limit.rejections";

        /// <summary>Counter of outlier ejections, tagged with the endpoint: <c>governance.outlier.ejections</c>.</summary>
        public const string OutlierEjections = "governance.outlier.ejections";

        /// <summary>Counter of circuit transitions (<c>governance.state</c> = opened, closed), tagged with the endpoint: <c>governance.circuit_breaker.transitions</c>.</summary>
        public const string CircuitBreakerTransitions = "governance.circuit_breaker.transitions";

        /// <summary>Observable gauge of endpoints per service and state (available, ejected, circuit_open, unhealthy; disabled is reserved and always 0): <c>governance.lb.endpoints</c>.</summary>
        public const string LoadBalancerEndpoints = "governance.lb.endpoints";

        /// <summary>Counter of endpoint lists received from discovery: <c>governance.discovery.refreshes</c>.</summary>
        public const string DiscoveryRefreshes = "governance.discovery.refreshes";

        /// <summary>Counter of failed discovery resolutions: <c>governance.discovery.errors</c>.</summary>
        public const string DiscoveryErrors = "governance.discovery.errors";
    }

    /// <summary>Names of the events added to the logical-call span.</summary>
    public static class Events
    {
        /// <summary>An attempt failed and is retried: <c>governance.retry</c>.</summary>
        public const string Retry = "governance.retry";

        /// <summary>A hedged attempt was sent: <c>governance.hedge</c>.</summary>
        public const string Hedge = "governance.hedge";

        /// <summary>The client-side rate limit rejected the call: <c>governance.rate_limit.rejected</c>.</summary>
        public const string RateLimitRejected = "governance.rate_limit.rejected";

        /// <summary>The attempt's endpoint was ejected by outlier detection: <c>governance.outlier.ejection</c>.</summary>
        public const string Ejection = "governance.outlier.ejection";

        /// <summary>The attempt's endpoint's circuit changed state: <c>governance.circuit_breaker.transition</c>.</summary>
        public const string CircuitTransition = "governance.circuit_breaker.transition";
    }
}
