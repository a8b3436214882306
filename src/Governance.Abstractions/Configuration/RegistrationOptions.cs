namespace Governance.Configuration;

/// <summary>
/// Registration of this application in Consul (<c>MeshGovernance:Registration</c>): registered on host start under
/// <see cref="ApplicationOptions.Name"/>, kept registered while it runs, deregistered on graceful shutdown. Off unless
/// this section is present (in code: unless <see cref="GovernanceOptions.Registration"/> is set);
/// <see cref="Enabled"/> <see langword="false"/> turns it off. Read once when the host starts.
/// </summary>
public sealed class RegistrationOptions
{
    /// <summary>Gets or sets a value indicating whether this application registers itself. Default: <see langword="true"/> when the section is present.</summary>
    public bool? Enabled { get; set; }

    /// <summary>
    /// Gets or sets the unique id of this instance in Consul (no <c>/</c>, <c>\</c>, <c>?</c>, <c>#</c>, <c>%</c>, whitespace or control characters). Default:
    /// <c>{Application:Name}-{machine name}-{port}</c> in lower case: stable across restarts of the same instance, so a
    /// restarted instance replaces its own entry, and unique per machine and port.
    /// </summary>
    public string? InstanceId { get; set; }

    /// <summary>
    /// Gets or sets the host name or IP address other services use to reach this instance (no scheme, no port). Default:
    /// the host of the address the application listens on, from configuration (<c>Kestrel:Endpoints:*:Url</c>,
    /// <c>urls</c>, <c>http_ports</c>/<c>https_ports</c>, then the <c>ASPNETCORE_URLS</c>/<c>DOTNET_URLS</c>,
    /// <c>ASPNETCORE_HTTP_PORTS</c>/<c>DOTNET_HTTP_PORTS</c> and <c>ASPNETCORE_HTTPS_PORTS</c>/<c>DOTNET_HTTPS_PORTS</c>
    /// environment variables); a wildcard host (<c>*</c>, <c>+</c>, <c>0.0.0.0</c>,
    /// <c>[::]</c>) becomes the first IPv4 address of an active non-loopback network interface, and <c>localhost</c>
    /// becomes <c>127.0.0.1</c>. When none can be found, host start fails with a message naming this key.
    /// </summary>
    public string? Address { get; set; }

    /// <summary>
    /// Gets or sets the port other services use to reach this instance, 0 to 65535. Default: 0, meaning the port of the
    /// address the application listens on (found as for <see cref="Address"/>); host start fails when it cannot be found.
    /// </summary>
    public int? Port { get; set; }

    /// <summary>
    /// Gets or sets <c>http</c> or <c>https</c>: the scheme of the HTTP check, and <c>https</c> adds the metadata
    /// <c>secure=true</c> (Steeltoe's convention) so that discovering clients use https. Default: the scheme of the
    /// listening address found for <see cref="Address"/>, else <c>http</c>.
    /// </summary>
    public string? Scheme { get; set; }

    /// <summary>Gets the tags of the registration. Default: empty.</summary>
    public IList<string> Tags { get; } = new List<string>();

    /// <summary>
    /// Gets the metadata of the registration (Consul's rules: at most 64 keys of up to 128 letters, digits, <c>-</c> and
    /// <c>_</c>, not starting with <c>consul-</c>; values up to 512 characters). <see cref="ApplicationOptions.Zone"/>, when
    /// set, is added as <c>zone</c>. Default: empty.
    /// </summary>
    public IDictionary<string, string> Metadata { get; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>Gets or sets the weights other clients give this instance. Default: passing 1, warning 1.</summary>
    public RegistrationWeightsOptions? Weights { get; set; }

    /// <summary>Gets or sets the health check Consul runs for this instance. Default: an HTTP check of <c>/health</c> every 10 s.</summary>
    public RegistrationCheckOptions? Check { get; set; }

    /// <summary>
    /// Gets or sets a value indicating whether a failed registration at start (Consul unreachable, ACL refusal, ...) stops
    /// the host from starting. When <see langword="false"/>, the failure is logged as an error and registration is retried
    /// in the background until it succeeds. Default: <see langword="false"/>.
    /// </summary>
    public bool? FailFast { get; set; }
}

/// <summary>Weights of the registration (<c>Registration:Weights</c>), Consul's <c>Weights</c>.</summary>
public sealed class RegistrationWeightsOptions
{
    /// <summary>Gets or sets the weight while every check passes, 1 to 65535. Default: 1.</summary>
    public int? Passing { get; set; }

    /// <summary>Gets or sets the weight while a check is in warning, 0 to 65535 (0: no traffic). Default: 1.</summary>
    public int? Warning { get; set; }
}

/// <summary>
/// The health check of the registration (<c>Registration:Check</c>): an HTTP check Consul runs against this instance,
/// or a TTL check this instance keeps passing with heartbeats.
/// </summary>
public sealed class RegistrationCheckOptions
{
    /// <summary>Gets or sets a value indicating whether a check is registered at all; without one Consul treats the instance as always passing. Default: <see langword="true"/>.</summary>
    public bool? Enabled { get; set; }

    /// <summary>Gets or sets the path of the HTTP check, such as <c>/health</c>; Consul sends GET to it and treats 2xx as passing. Not used with <see cref="Ttl"/>. Default: <c>/health</c>.</summary>
    public string? HttpPath { get; set; }

    /// <summary>Gets or sets the time between HTTP checks, 1 s or more. Default: 10 s.</summary>
    public TimeSpan? Interval { get; set; }

    /// <summary>Gets or sets the limit of one HTTP check, at most <see cref="Interval"/>. Default: 5 s.</summary>
    public TimeSpan? Timeout { get; set; }

    /// <summary>
    /// Gets or sets the time to live of a TTL check, 1 s or more. When set, the check is a TTL check instead of an HTTP
    /// check: this instance sends a heartbeat every third of it, and Consul marks the instance critical when heartbeats
    /// stop. Default: <see langword="null"/> (HTTP check).
    /// </summary>
    public TimeSpan? Ttl { get; set; }

    /// <summary>Gets or sets how long the check may stay critical before Consul removes the instance, 1 min or more. Default: 30 min.</summary>
    public TimeSpan? DeregisterCriticalServiceAfter { get; set; }
}
