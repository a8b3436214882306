using Governance.Configuration;

namespace Governance.LoadBalancing;

/// <summary>What a <see cref="ILoadBalancingPolicy"/> builds a picker over.</summary>
public sealed class EndpointPickerContext
{
    /// <summary>Creates a context.</summary>
    /// <param name="serviceName">Logical service name.</param>
    /// <param name="endpoints">The endpoints to pick from (at least one).</param>
    /// <param name="load">Live in-flight counts of <paramref name="endpoints"/>, index for index.</param>
    /// <param name="options">The service's effective load-balancer settings (defaults already applied).</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="endpoints"/> is empty.</exception>
    public EndpointPickerContext(string serviceName, IReadOnlyList<ServiceEndpoint> endpoints, IEndpointLoad load, LoadBalancerOptions options)
    {
        ArgumentException.ThrowIfNullOrEmpty(serviceName);
        ArgumentNullException.ThrowIfNull(endpoints);
        ArgumentOutOfRangeException.ThrowIfZero(endpoints.Count, nameof(endpoints));
        ArgumentNullException.ThrowIfNull(load);
        ArgumentNullException.ThrowIfNull(options);
        ServiceName = serviceName;
        Endpoints = endpoints;
        Load = load;
        Options = options;
    }

    /// <summary>Gets the logical service name.</summary>
    public string ServiceName { get; }

    /// <summary>Gets the endpoints to pick from; a picker returns indexes into this list.</summary>
    public IReadOnlyList<ServiceEndpoint> Endpoints { get; }

    /// <summary>Gets the live in-flight counts of <see cref="Endpoints"/>.</summary>
    public IEndpointLoad Load { get; }

    /// <summary>Gets the service's effective load-balancer settings.</summary>
    public LoadBalancerOptions Options { get; }
}
