using Governance.Configuration;

namespace Governance.Discovery;

/// <summary>The registered discovery providers by name (see <see cref="NamedRegistry{T}"/> for precedence).</summary>
internal sealed class ServiceDiscoveryProviderRegistry(IEnumerable<IServiceDiscoveryProvider> providers)
    : NamedRegistry<IServiceDiscoveryProvider>(providers, static p => p.Name);
