using System.Collections.Frozen;

namespace Governance.LoadBalancing;

/// <summary>The registered policies by case-insensitive name; a later registration of a name replaces an earlier one.</summary>
internal sealed class LoadBalancingPolicyRegistry
{
    private readonly FrozenDictionary<string, ILoadBalancingPolicy> _policies;

    public LoadBalancingPolicyRegistry(IEnumerable<ILoadBalancingPolicy> policies)
    {
        var byName = new Dictionary<string, ILoadBalancingPolicy>(StringComparer.OrdinalIgnoreCase);
        var names = new List<string>();
        foreach (var policy in policies)
        {
            if (!byName.ContainsKey(policy.Name))
            {
                names.Add(policy.Name);
            }

            byName[policy.Name] = policy;
        }

        _policies = byName.ToFrozenDictionary(StringComparer.OrdinalIgnoreCase);
        NameList = string.Join(", ", names);
    }

    /// <summary>Gets the names in registration order, for messages.</summary>
    public string NameList { get; }

    public bool Contains(string name) => _policies.ContainsKey(name);

    public ILoadBalancingPolicy Get(string name) => _policies[name];
}
