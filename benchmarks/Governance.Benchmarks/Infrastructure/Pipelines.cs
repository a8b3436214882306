using Governance.Pipeline;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace Governance.Benchmarks.Infrastructure;

/// <summary>
/// Builds the kinds of client pipeline the benchmarks compare, each in its own service provider so that one kind never
/// leaks into another (<c>AddMeshGovernance</c> governs every factory client of its provider): the factory without
/// governance, the factory with Microsoft.Extensions.Http.Resilience's standard handler, the factory with
/// MeshGovernance (defaults, or with extra keys such as a rate limit), and the factory with
/// Microsoft.Extensions.ServiceDiscovery. All use the same client name, handler lifetime and logging (none).
/// </summary>
internal static class Pipelines
{
    public const string ClientName = "bench";

    public const string ServiceName = "catalog";

    /// <summary>
    /// The factory's handler chain with no governance: the logging handlers the factory always adds, unless
    /// <paramref name="removeLoggers"/> (<c>RemoveAllLoggers()</c>: then only the factory's own outermost handler).
    /// </summary>
    public static ServiceProvider Factory(Func<HttpMessageHandler> primary, bool removeLoggers = false)
    {
        var services = new ServiceCollection();
        services.AddLogging();
        var client = AddClient(services, primary);
        if (removeLoggers)
        {
            client.RemoveAllLoggers();
        }

        return services.BuildServiceProvider();
    }

    /// <summary>Service keys that switch the per-endpoint circuit breaker off.</summary>
    public static readonly KeyValuePair<string, string?>[] NoBreaker = [new("CircuitBreaker:Enabled", "false")];

    /// <summary>Service keys that switch outlier detection off.</summary>
    public static readonly KeyValuePair<string, string?>[] NoOutlier = [new("OutlierDetection:Enabled", "false")];

    /// <summary>Service keys that switch retries off.</summary>
    public static readonly KeyValuePair<string, string?>[] NoRetry = [new("Retry:MaxRetries", "0")];

    /// <summary>Service keys that switch off breaker, outlier detection and retries together, leaving the two timeouts.</summary>
    public static readonly KeyValuePair<string, string?>[] TimeoutsOnly = [.. NoBreaker, .. NoOutlier, .. NoRetry];

    /// <summary>Service keys that switch governance's two timeouts off (<c>Timeout:Enabled false</c>), leaving every other stage on.</summary>
    public static readonly KeyValuePair<string, string?>[] NoTimeouts =
    [
        new("Timeout:Enabled", "false"),
    ];

    /// <summary>
    /// Service keys that switch off every resilience stage (<see cref="TimeoutsOnly"/> and <see cref="NoTimeouts"/>
    /// together): what is left is issue 2's governance, discovery and load balancing (pick, rewrite, in-flight count).
    /// </summary>
    public static readonly KeyValuePair<string, string?>[] LoadBalancingOnly = [.. TimeoutsOnly, .. NoTimeouts];

    /// <summary>
    /// The rate-limit keys of the "full stack" rows: the defaults (retry, both timeouts, per-endpoint breaker, outlier
    /// detection) plus a token bucket so large that it never rejects, so that every call takes and returns a permit.
    /// </summary>
    public static readonly KeyValuePair<string, string?>[] NeverRejectingRateLimit =
    [
        new("RateLimit:Algorithm", "TokenBucket"),
        new("RateLimit:PermitsPerSecond", "100000000"),
        new("RateLimit:Burst", "100000000"),
    ];

    /// <summary>The factory's chain plus <c>AddStandardResilienceHandler()</c> (Microsoft.Extensions.Http.Resilience, its defaults).</summary>
    public static ServiceProvider StandardResilience(Func<HttpMessageHandler> primary)
    {
        var services = new ServiceCollection();
        services.AddLogging();
        AddClient(services, primary).AddStandardResilienceHandler();
        return services.BuildServiceProvider();
    }

    /// <summary>
    /// <c>AddMeshGovernance(section)</c> with the service <see cref="ServiceName"/> on the given endpoints, its default
    /// resilience (retry 2, total and per-attempt timeouts, per-endpoint circuit breaker, outlier detection), and
    /// optionally a load-balancing policy and more keys of the service (relative to <c>Services:catalog</c>).
    /// </summary>
    public static ServiceProvider Governed(Func<HttpMessageHandler> primary, IReadOnlyList<Uri> endpoints, string? policy = null, IEnumerable<KeyValuePair<string, string?>>? serviceKeys = null)
    {
        var settings = ServiceSettings(endpoints, serviceKeys);
        if (policy is not null)
        {
            settings[$"MeshGovernance:Services:{ServiceName}:LoadBalancer:Policy"] = policy;
        }

        return Governed(primary, settings);
    }

    /// <summary><c>AddMeshGovernance</c> over the given configuration keys (full paths, <c>MeshGovernance:…</c>).</summary>
    public static ServiceProvider Governed(Func<HttpMessageHandler> primary, Dictionary<string, string?> settings, bool removeFactoryLoggers = false) =>
        Governed(primary, new ConfigurationBuilder().AddInMemoryCollection(settings).Build(), removeFactoryLoggers);

    /// <summary>
    /// <c>AddMeshGovernance</c> over <paramref name="configuration"/>'s <c>MeshGovernance</c> section (which may reload),
    /// optionally without the factory's logging handlers.
    /// </summary>
    public static ServiceProvider Governed(Func<HttpMessageHandler> primary, IConfigurationRoot configuration, bool removeFactoryLoggers = false)
    {
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(configuration);
        services.AddLogging();
        services.AddMeshGovernance(configuration.GetSection("MeshGovernance"));
        var client = AddClient(services, primary);
        if (removeFactoryLoggers)
        {
            // IHttpClientFactory's own logging handlers (.NET 8+ opt-out): governance and the socket handler only.
            client.RemoveAllLoggers();
        }

        return services.BuildServiceProvider();
    }

    /// <summary><see cref="Governed(Func{HttpMessageHandler}, IReadOnlyList{Uri}, string?, IEnumerable{KeyValuePair{string, string?}}?)"/> with the factory's logging handlers removed (<c>RemoveAllLoggers()</c>).</summary>
    public static ServiceProvider GovernedWithoutFactoryLoggers(Func<HttpMessageHandler> primary, IReadOnlyList<Uri> endpoints, IEnumerable<KeyValuePair<string, string?>>? serviceKeys = null) =>
        Governed(primary, ServiceSettings(endpoints, serviceKeys), removeFactoryLoggers: true);

    /// <summary>
    /// The configuration keys (full paths) of the service <see cref="ServiceName"/> on <paramref name="endpoints"/>, plus
    /// <paramref name="serviceKeys"/> (relative to <c>MeshGovernance:Services:catalog</c>).
    /// </summary>
    public static Dictionary<string, string?> ServiceSettings(IReadOnlyList<Uri> endpoints, IEnumerable<KeyValuePair<string, string?>>? serviceKeys)
    {
        var settings = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
        for (var i = 0; i < endpoints.Count; i++)
        {
            settings[$"MeshGovernance:Services:{ServiceName}:Endpoints:{i}"] = endpoints[i].ToString();
        }

        foreach (var (key, value) in serviceKeys ?? [])
        {
            settings[$"MeshGovernance:Services:{ServiceName}:{key}"] = value;
        }

        return settings;
    }

    /// <summary>
    /// Microsoft.Extensions.ServiceDiscovery as its README sets it up: <c>AddServiceDiscovery()</c> on the services and
    /// on the client, endpoints of <see cref="ServiceName"/> from configuration (<c>Services:catalog:http:N</c>).
    /// </summary>
    public static ServiceProvider ServiceDiscovery(Func<HttpMessageHandler> primary, IReadOnlyList<Uri> endpoints)
    {
        var settings = new Dictionary<string, string?>();
        for (var i = 0; i < endpoints.Count; i++)
        {
            settings[$"Services:{ServiceName}:http:{i}"] = endpoints[i].ToString();
        }

        var configuration = new ConfigurationBuilder().AddInMemoryCollection(settings).Build();
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(configuration);
        services.AddLogging();
        services.AddServiceDiscovery();
        AddClient(services, primary).AddServiceDiscovery();
        return services.BuildServiceProvider();
    }

    /// <summary>
    /// MeshGovernance's handler alone over <paramref name="inner"/>, without the factory's logging handlers, built from
    /// the runtime of a <see cref="Governed"/> provider. Users cannot build this (the handler is internal and reached
    /// only through the factory); it isolates what governance itself adds.
    /// </summary>
    public static HttpMessageHandler GovernanceHandlerOnly(IServiceProvider governed, HttpMessageHandler inner) =>
        new GovernanceHandler(governed.GetRequiredService<GovernanceRuntime>()) { InnerHandler = inner };

    /// <summary>The client's handler chain (outermost handler) from the provider's factory.</summary>
    public static HttpMessageHandler CreateHandler(IServiceProvider services) =>
        services.GetRequiredService<IHttpMessageHandlerFactory>().CreateHandler(ClientName);

    /// <summary>An <see cref="HttpClient"/> over the client's handler chain from the provider's factory.</summary>
    public static HttpClient CreateClient(IServiceProvider services) =>
        services.GetRequiredService<IHttpClientFactory>().CreateClient(ClientName);

    private static IHttpClientBuilder AddClient(IServiceCollection services, Func<HttpMessageHandler> primary) =>
        services.AddHttpClient(ClientName)
            .ConfigurePrimaryHttpMessageHandler(primary)
            .SetHandlerLifetime(Timeout.InfiniteTimeSpan);
}
