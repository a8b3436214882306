using Governance.Configuration;
using Governance.Discovery;
using Governance.LoadBalancing;
using Governance.Resilience;

namespace Governance.Pipeline;

/// <summary>One service's effective settings: its own keys over <c>Defaults</c> over the built-in defaults.</summary>
internal sealed class ServiceSettings
{
    /// <summary>The whole configuration these settings were read from (validated with them).</summary>
    private readonly GovernanceOptions _root;

    private ServiceSettings(string name, ServiceOptions options, GovernanceOptions root, IServiceDiscoveryProvider discovery, ILoadBalancingPolicy policy, LoadBalancerOptions loadBalancer, string? localZone, ResilienceSettings resilience, TimeSpan? initialResolutionTimeout)
    {
        _root = root;
        InitialResolutionTimeout = initialResolutionTimeout;
        Resilience = resilience;
        Name = name;
        Options = options;
        Discovery = discovery;
        Policy = policy;
        LoadBalancer = loadBalancer;

        // Read once: the options object is handed to custom policies and providers, whose writes must not reroute calls.
        HashHeader = loadBalancer.HashHeader;
        LocalZone = localZone;
    }

    public string Name { get; }

    /// <summary>Gets the service's options with <c>Defaults</c> merged in.</summary>
    public ServiceOptions Options { get; }

    public IServiceDiscoveryProvider Discovery { get; }

    public ILoadBalancingPolicy Policy { get; }

    public LoadBalancerOptions LoadBalancer { get; }

    /// <summary>Gets the header whose value is a request's hash key, as validated (not re-read from <see cref="LoadBalancer"/>).</summary>
    public string? HashHeader { get; }

    public string? LocalZone { get; }

    public ResilienceSettings Resilience { get; }

    /// <summary>
    /// Gets how long the first requests wait for discovery's first answer: the provider's setting (Consul's
    /// <c>InitialResolutionTimeout</c>) when it has one, capped by the total timeout; otherwise the total timeout.
    /// </summary>
    public TimeSpan FirstAnswerTimeout => InitialResolutionTimeout is { } timeout && timeout < Resilience.Timeout.Total ? timeout : Resilience.Timeout.Total;

    private TimeSpan? InitialResolutionTimeout { get; }

    /// <summary>
    /// Starts watching the service's endpoints. The built-in Consul provider is given the configuration these settings
    /// come from, not the one the options monitor holds by then (which a reload may have replaced meanwhile).
    /// </summary>
    public IServiceEndpointWatcher WatchEndpoints() =>
        Discovery is Governance.Discovery.Consul.ConsulServiceDiscoveryProvider consul ? consul.Watch(Name, Options, _root) : Discovery.Watch(Name, Options);

    /// <summary>Merges a validated service's options with the defaults.</summary>
    public static ServiceSettings Create(
        string name,
        ServiceOptions service,
        GovernanceOptions root,
        LoadBalancingPolicyRegistry policies,
        ServiceDiscoveryProviderRegistry discovery)
    {
        var defaults = root.Defaults ?? new ServiceOptions();
        var loadBalancer = new LoadBalancerOptions
        {
            Policy = service.LoadBalancer?.Policy ?? defaults.LoadBalancer?.Policy ?? LoadBalancingPolicyNames.LeastRequest,
            HashHeader = NullIfEmpty(service.LoadBalancer?.HashHeader ?? defaults.LoadBalancer?.HashHeader),
        };
        var discoveryName = service.Discovery ?? defaults.Discovery ?? ServiceDiscoveryNames.Static;
        var merged = new ServiceOptions
        {
            Discovery = discoveryName,
            LoadBalancer = loadBalancer,
            OnlyPassing = service.OnlyPassing ?? defaults.OnlyPassing,
        };
        foreach (var endpoint in service.Endpoints)
        {
            merged.Endpoints.Add(endpoint);
        }

        foreach (var tag in service.Tags.Count > 0 ? service.Tags : defaults.Tags)
        {
            merged.Tags.Add(tag);
        }

        return new ServiceSettings(
            name,
            merged,
            root,
            discovery.Get(discoveryName),
            policies.Get(loadBalancer.Policy),
            loadBalancer,
            NullIfEmpty(root.Application?.Zone),
            ResilienceSettings.Create(service, defaults),
            string.Equals(discoveryName, ServiceDiscoveryNames.Consul, StringComparison.OrdinalIgnoreCase) ? root.Consul?.InitialResolutionTimeout ?? Governance.Discovery.Consul.ConsulConstants.DefaultInitialResolutionTimeout : null);
    }

    private static string? NullIfEmpty(string? value) => string.IsNullOrWhiteSpace(value) ? null : value.Trim();
}
