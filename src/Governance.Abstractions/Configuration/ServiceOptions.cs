namespace Governance.Configuration;

/// <summary>
/// Settings of one logical service (<c>MeshGovernance:Services:{name}</c>), and the shape of
/// <c>MeshGovernance:Defaults</c>. Unset values inherit from <c>Defaults</c>, then from the built-in defaults.
/// </summary>
public sealed class ServiceOptions
{
    /// <summary>
    /// Gets or sets the discovery provider that supplies the endpoints, for example <c>Static</c> or <c>Consul</c>.
    /// Default: <c>Static</c> when <see cref="Endpoints"/> is set; required otherwise.
    /// </summary>
    public string? Discovery { get; set; }

    /// <summary>
    /// Gets the static endpoints. In configuration each item is either an object (<c>Address</c>, <c>Weight</c>,
    /// <c>Zone</c>, <c>Metadata</c>) or a bare address string. Default: empty.
    /// </summary>
    public IList<EndpointOptions> Endpoints { get; } = new List<EndpointOptions>();

    /// <summary>
    /// Gets the tags an instance must all carry to be used (Consul's <c>tag</c> filter), with <c>Consul</c> discovery.
    /// A service that lists none inherits those of <c>Defaults</c>. Default: empty (no tag filter).
    /// </summary>
    public IList<string> Tags { get; } = new List<string>();

    /// <summary>
    /// Gets or sets a value indicating whether only instances whose checks all pass are used, with <c>Consul</c>
    /// discovery (Consul's <c>passing</c> filter). When <see langword="false"/>, instances with a check in warning are used
    /// too, at their warning weight; instances with a critical check never are. Default: <see langword="true"/>.
    /// </summary>
    public bool? OnlyPassing { get; set; }

    /// <summary>Gets or sets the load-balancing settings. Default: <see langword="null"/> (inherited).</summary>
    public LoadBalancerOptions? LoadBalancer { get; set; }

    /// <summary>Gets or sets the retry settings. Default: <see langword="null"/> (inherited).</summary>
    public RetryOptions? Retry { get; set; }

    /// <summary>Gets or sets the timeouts. Default: <see langword="null"/> (inherited).</summary>
    public TimeoutOptions? Timeout { get; set; }

    /// <summary>Gets or sets the per-endpoint circuit breaker. Default: <see langword="null"/> (inherited).</summary>
    public CircuitBreakerOptions? CircuitBreaker { get; set; }

    /// <summary>Gets or sets passive outlier detection. Default: <see langword="null"/> (inherited).</summary>
    public OutlierDetectionOptions? OutlierDetection { get; set; }

    /// <summary>Gets or sets active health checks. Default: <see langword="null"/> (inherited; off).</summary>
    public HealthCheckOptions? HealthCheck { get; set; }

    /// <summary>Gets or sets the client-side rate limit. Default: <see langword="null"/> (inherited; off).</summary>
    public RateLimitOptions? RateLimit { get; set; }

    /// <summary>Gets or sets hedging. Default: <see langword="null"/> (inherited; off).</summary>
    public HedgingOptions? Hedging { get; set; }
}
