namespace Governance.Discovery;

/// <summary>Names of the built-in discovery providers, as written in a service's <c>Discovery</c> setting (case-insensitive).</summary>
public static class ServiceDiscoveryNames
{
    /// <summary>Endpoints listed in the service's <c>Endpoints</c> configuration. The default when <c>Endpoints</c> is set.</summary>
    public const string Static = "Static";

    /// <summary>Endpoints read from a Consul agent's health API.</summary>
    public const string Consul = "Consul";
}
