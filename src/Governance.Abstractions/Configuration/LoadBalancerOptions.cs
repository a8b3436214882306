namespace Governance.Configuration;

/// <summary>Load-balancing settings of a service (<c>LoadBalancer</c>).</summary>
public sealed class LoadBalancerOptions
{
    /// <summary>
    /// Gets or sets the policy name (case-insensitive): <c>RoundRobin</c>, <c>Random</c>, <c>LeastRequest</c>,
    /// <c>ConsistentHash</c> or the name of a registered custom policy. Default: <c>LeastRequest</c>.
    /// </summary>
    public string? Policy { get; set; }

    /// <summary>
    /// Gets or sets the request header whose value is the affinity key of <c>ConsistentHash</c> (required by that policy).
    /// Requests without the header are spread by weighted random. Default: <see langword="null"/>.
    /// </summary>
    public string? HashHeader { get; set; }
}
