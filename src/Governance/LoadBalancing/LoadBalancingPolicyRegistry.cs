using Governance.Configuration;

namespace Governance.LoadBalancing;

/// <summary>The registered load-balancing policies by name (see <see cref="NamedRegistry{T}"/> for precedence).</summary>
internal sealed class LoadBalancingPolicyRegistry(IEnumerable<ILoadBalancingPolicy> policies)
    : NamedRegistry<ILoadBalancingPolicy>(policies, static p => p.Name);
