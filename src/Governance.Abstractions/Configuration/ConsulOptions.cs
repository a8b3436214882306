namespace Governance.Configuration;

/// <summary>
/// How to reach Consul (<c>MeshGovernance:Consul</c>), shared by Consul discovery (services whose <c>Discovery</c> is
/// <c>Consul</c>) and by registration of this application (<c>MeshGovernance:Registration</c>).
/// </summary>
public sealed class ConsulOptions
{
    /// <summary>
    /// Gets or sets the HTTP address of the Consul agent, such as <c>http://127.0.0.1:8500</c> (<c>http</c> or
    /// <c>https</c>; a path prefix is kept, for an agent behind a reverse proxy). Default: <see langword="null"/>;
    /// required when a service uses Consul discovery or registration is on.
    /// </summary>
    public string? Address { get; set; }

    /// <summary>
    /// Gets or sets the ACL token, sent in the <c>X-Consul-Token</c> header of every request (never in the query string,
    /// never logged). Default: <see langword="null"/> (the agent's default token applies).
    /// </summary>
    public string? Token { get; set; }

    /// <summary>Gets or sets the datacenter whose services are discovered (<c>dc</c> query parameter). Default: <see langword="null"/> (the agent's own datacenter).</summary>
    public string? Datacenter { get; set; }

    /// <summary>
    /// Gets or sets the longest time a blocking query waits for a change (<c>wait</c>), 1 s to 10 min (Consul's limit).
    /// Consul adds up to 1/16 of it as jitter; the HTTP timeout of a blocking query is longer than that. Default: 5 min.
    /// </summary>
    public TimeSpan? WaitTime { get; set; }

    /// <summary>
    /// Gets or sets how long the first request to a Consul-discovered service waits for Consul's first answer before it
    /// fails with a clear error (naming Consul's last error), 0 to 10 min, and at most the service's <c>Timeout:Total</c>; 0 fails at once. Later requests use the last known endpoints and never wait.
    /// Default: 10 s.
    /// </summary>
    public TimeSpan? InitialResolutionTimeout { get; set; }
}
