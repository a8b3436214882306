using Governance.Pipeline;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace Governance.Tests.Configuration;

/// <summary>The configuration contract's example (issue 2, README's "Use it"), read from JSON as an appsettings.json file is.</summary>
public sealed class IssueExampleTests
{
    /// <summary>The example as the contract writes it, plus a second service that sets nothing of its own.</summary>
    private const string Json = """
        {
          "MeshGovernance": {
            "Application": { "Name": "orders", "Zone": "eu-west-1a" },
            "Defaults": { "LoadBalancer": { "Policy": "LeastRequest" } },
            "Services": {
              "catalog": {
                "Endpoints": [
                  { "Address": "http://127.0.0.1:5001", "Weight": 3, "Zone": "eu-west-1a", "Metadata": { "version": "v1" } },
                  "http://127.0.0.1:5002"
                ],
                "LoadBalancer": { "Policy": "ConsistentHash", "HashHeader": "x-user-id" }
              },
              "inventory": { "Endpoints": [ "http://127.0.0.1:5003" ] }
            }
          }
        }
        """;

    [Fact]
    public void Read_ContractExample_EveryValueInForce()
    {
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(new ConfigurationBuilder().AddJsonStream(new MemoryStream(System.Text.Encoding.UTF8.GetBytes(Json))).Build());
        services.AddMeshGovernance();
        using var provider = services.BuildServiceProvider();
        var runtime = provider.GetRequiredService<GovernanceRuntime>();

        Assert.True(runtime.TryGetService("catalog", out var catalog));
        var endpoints = catalog.Endpoints.All.Select(e => e.Endpoint).OrderBy(e => e.Authority, StringComparer.Ordinal).ToList();
        Assert.Equal(["http://127.0.0.1:5001", "http://127.0.0.1:5002"], endpoints.Select(e => e.Authority));

        // The object form: weight, zone and metadata; the bare address: weight 1, no zone, no metadata.
        Assert.Equal((3, "eu-west-1a", "v1"), (endpoints[0].Weight, endpoints[0].Zone, endpoints[0].Metadata["version"]));
        Assert.Equal((1, (string?)null, 0), (endpoints[1].Weight, endpoints[1].Zone, endpoints[1].Metadata.Count));

        // The service's own policy over Defaults', with its hash header; the application's zone is the local one.
        Assert.Equal("ConsistentHash", catalog.Settings.Policy.Name);
        Assert.Equal("x-user-id", catalog.Settings.HashHeader);
        Assert.Equal("eu-west-1a", catalog.Settings.LocalZone);

        // A service that sets no policy takes Defaults'.
        Assert.True(runtime.TryGetService("inventory", out var inventory));
        Assert.Equal("LeastRequest", inventory.Settings.Policy.Name);
        Assert.Null(inventory.Settings.HashHeader);
    }
}
