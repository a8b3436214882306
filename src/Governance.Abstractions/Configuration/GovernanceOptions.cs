namespace Governance.Configuration;

/// <summary>
/// Root of the MeshGovernance configuration, bound from the <c>MeshGovernance</c> section by default.
/// </summary>
public sealed class GovernanceOptions
{
    /// <summary>The default configuration section name, <c>MeshGovernance</c>.</summary>
    public const string SectionName = "MeshGovernance";

    /// <summary>Gets or sets who this application is (name, zone). Default: empty.</summary>
    public ApplicationOptions Application { get; set; } = new();

    /// <summary>
    /// Gets or sets the per-service settings applied to every service; a service's own settings override them key by key.
    /// <see cref="ServiceOptions.Endpoints"/> is not allowed here. Default: empty (built-in defaults apply).
    /// </summary>
    public ServiceOptions Defaults { get; set; } = new();

    /// <summary>
    /// Gets the governed services by logical name (case-insensitive). A request whose host is one of these names is
    /// governed; any other host passes through untouched. Default: empty.
    /// </summary>
    public IDictionary<string, ServiceOptions> Services { get; } = new Dictionary<string, ServiceOptions>(StringComparer.OrdinalIgnoreCase);

    /// <summary>Gets or sets how to reach Consul, for Consul discovery and registration. Default: empty (no Consul).</summary>
    public ConsulOptions Consul { get; set; } = new();

    /// <summary>
    /// Gets or sets the registration of this application in Consul. Default: <see langword="null"/> (not registered);
    /// registration is on when this is set and its <see cref="RegistrationOptions.Enabled"/> is not <see langword="false"/>.
    /// </summary>
    public RegistrationOptions? Registration { get; set; }
}
