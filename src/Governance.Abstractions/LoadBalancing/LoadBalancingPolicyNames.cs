namespace Governance.LoadBalancing;

/// <summary>Names of the built-in load-balancing policies, as written in <c>LoadBalancer:Policy</c> (case-insensitive).</summary>
public static class LoadBalancingPolicyNames
{
    /// <summary>Smooth weighted round robin: each endpoint in turn, in proportion to its weight, interleaved.</summary>
    public const string RoundRobin = "RoundRobin";

    /// <summary>Weighted random: each request independently, in proportion to weight.</summary>
    public const string Random = "Random";

    /// <summary>Power of two choices over in-flight requests, weight-aware. The default policy.</summary>
    public const string LeastRequest = "LeastRequest";

    /// <summary>Maglev consistent hashing of the <c>LoadBalancer:HashHeader</c> value; weighted random when the header is absent.</summary>
    public const string ConsistentHash = "ConsistentHash";
}
