namespace Governance.Configuration;

/// <summary>Describes the application that makes the calls (<c>MeshGovernance:Application</c>).</summary>
public sealed class ApplicationOptions
{
    /// <summary>Gets or sets the application's service name: the name it registers under in Consul (<see cref="GovernanceOptions.Registration"/>). Default: <see langword="null"/>.</summary>
    public string? Name { get; set; }

    /// <summary>
    /// Gets or sets the zone this application runs in. When set, endpoints in the same zone are preferred while enough of
    /// them are available (zone-aware routing). Default: <see langword="null"/> (no zone preference).
    /// </summary>
    public string? Zone { get; set; }
}
