using System.Collections.Frozen;

namespace Governance.Discovery;

/// <summary>The registered discovery providers by case-insensitive name; a later registration of a name replaces an earlier one.</summary>
internal sealed class ServiceDiscoveryProviderRegistry
{
    private readonly FrozenDictionary<string, IServiceDiscoveryProvider> _providers;

    public ServiceDiscoveryProviderRegistry(IEnumerable<IServiceDiscoveryProvider> providers)
    {
        var byName = new Dictionary<string, IServiceDiscoveryProvider>(StringComparer.OrdinalIgnoreCase);
        var names = new List<string>();
        foreach (var provider in providers)
        {
            if (!byName.ContainsKey(provider.Name))
            {
                names.Add(provider.Name);
            }

            byName[provider.Name] = provider;
        }

        _providers = byName.ToFrozenDictionary(StringComparer.OrdinalIgnoreCase);
        NameList = string.Join(", ", names);
    }

    public string NameList { get; }

    public bool Contains(string name) => _providers.ContainsKey(name);

    public IServiceDiscoveryProvider Get(string name) => _providers[name];
}
