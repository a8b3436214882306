namespace Governance.Configuration;

/// <summary>One statically configured endpoint (<c>MeshGovernance:Services:{name}:Endpoints:{index}</c>).</summary>
public sealed class EndpointOptions
{
    /// <summary>Gets or sets the absolute <c>http</c> or <c>https</c> address, such as <c>http://10.0.0.5:8080</c>. Required.</summary>
    public string? Address { get; set; }

    /// <summary>Gets or sets the relative share of traffic, 1 to 65535. Default: 1.</summary>
    public int? Weight { get; set; }

    /// <summary>Gets or sets the zone the endpoint runs in. Default: <see langword="null"/> (unknown).</summary>
    public string? Zone { get; set; }

    /// <summary>Gets the endpoint's labels, such as <c>version</c>. Default: empty.</summary>
    public IDictionary<string, string> Metadata { get; } = new Dictionary<string, string>(StringComparer.Ordinal);
}
