using Governance.Configuration;

namespace Governance.Discovery;

/// <summary>
/// A source of endpoints for logical services, selected by <see cref="Name"/> (case-insensitive) in a service's
/// <c>Discovery</c> setting. Register custom implementations as singletons of this interface.
/// </summary>
public interface IServiceDiscoveryProvider
{
    /// <summary>Gets the name used in configuration, for example <see cref="ServiceDiscoveryNames.Static"/>.</summary>
    string Name { get; }

    /// <summary>Starts resolving one service. Resolution runs off the request path; the watcher is disposed when the service is removed or reconfigured.</summary>
    /// <param name="serviceName">Logical service name.</param>
    /// <param name="options">The service's discovery and load-balancing settings (<c>Discovery</c>, <c>Endpoints</c>, <c>Tags</c>, <c>OnlyPassing</c>, <c>LoadBalancer</c>) with <c>Defaults</c> applied; its other sections are not passed.</param>
    /// <returns>A watcher that publishes the service's endpoints.</returns>
    IServiceEndpointWatcher Watch(string serviceName, ServiceOptions options);
}
