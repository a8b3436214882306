using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace Governance.Tests.Infrastructure;

/// <summary>
/// A real service provider with <c>AddMeshGovernance</c> over an in-memory configuration, and a client from the real
/// <see cref="IHttpClientFactory"/>. Dispose it at the end of the test.
/// </summary>
public sealed class Governed : IAsyncDisposable
{
    private Governed(ServiceProvider services, IConfigurationRoot configuration)
    {
        Services = services;
        Configuration = configuration;
        Client = services.GetRequiredService<IHttpClientFactory>().CreateClient();
        Client.Timeout = TimeSpan.FromSeconds(30);
    }

    public ServiceProvider Services { get; }

    public IConfigurationRoot Configuration { get; }

    public HttpClient Client { get; }

    /// <summary>Builds from flat configuration keys relative to the <c>MeshGovernance</c> section, e.g. <c>Services:catalog:Endpoints:0</c>.</summary>
    public static Governed Create(IEnumerable<KeyValuePair<string, string?>> settings, Action<IServiceCollection>? configure = null)
    {
        var configuration = new ConfigurationBuilder()
            .AddInMemoryCollection(settings.Select(s => new KeyValuePair<string, string?>("MeshGovernance:" + s.Key, s.Value)))
            .Build();
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(configuration);
        configure?.Invoke(services);
        services.AddMeshGovernance();
        return new Governed(services.BuildServiceProvider(validateScopes: true), configuration);
    }

    /// <summary>Settings for one service with the given endpoints and policy.</summary>
    public static Dictionary<string, string?> Service(string name, string? policy, params LoopbackServer[] endpoints)
    {
        var settings = new Dictionary<string, string?>();
        if (policy is not null)
        {
            settings[$"Services:{name}:LoadBalancer:Policy"] = policy;
        }

        for (var i = 0; i < endpoints.Length; i++)
        {
            settings[$"Services:{name}:Endpoints:{i}"] = endpoints[i].Address.ToString();
        }

        return settings;
    }

    /// <summary>Sends a GET and returns the name of the server that answered.</summary>
    public async Task<string> GetServerAsync(string url, CancellationToken cancellationToken = default)
    {
        using var response = await Client.GetAsync(url, cancellationToken).WaitAsync(TimeSpan.FromSeconds(30), cancellationToken);
        response.EnsureSuccessStatusCode();
        return response.Headers.GetValues("x-server").Single();
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await Services.DisposeAsync();
    }
}
