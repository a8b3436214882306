using Governance.Configuration;
using Governance.Discovery;
using Governance.Pipeline;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Governance.Tests.Discovery;

/// <summary>The validation messages of the Consul keys, pinned word for word (public contract).</summary>
public sealed class ConsulValidationTests
{
    internal static OptionsValidationException Validate(Dictionary<string, string?> settings, Action<IServiceCollection>? configure = null)
    {
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(new ConfigurationBuilder().AddInMemoryCollection(settings.Select(s => KeyValuePair.Create("MeshGovernance:" + s.Key, s.Value))).Build());
        configure?.Invoke(services);
        services.AddMeshGovernance();
        using var provider = services.BuildServiceProvider();
        return Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<GovernanceRuntime>());
    }

    internal static GovernanceOptions Bind(Dictionary<string, string?> settings)
    {
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(new ConfigurationBuilder().AddInMemoryCollection(settings.Select(s => KeyValuePair.Create("MeshGovernance:" + s.Key, s.Value))).Build());
        services.AddMeshGovernance();
        using var provider = services.BuildServiceProvider();
        _ = provider.GetRequiredService<GovernanceRuntime>();
        return provider.GetRequiredService<IOptionsMonitor<GovernanceOptions>>().CurrentValue;
    }

    [Fact]
    public void Validate_ConsulDiscoveryWithoutAddress_NamesAddressKeyAndTheServices()
    {
        var ex = Validate(new()
        {
            ["Services:catalog:Discovery"] = "Consul",
            ["Services:inventory:Discovery"] = "consul",
        });

        Assert.Equal("MeshGovernance:Consul:Address is required because services 'catalog', 'inventory' use Discovery 'Consul': give the HTTP address of a Consul agent, such as http://127.0.0.1:8500", Assert.Single(ex.Failures));
    }

    [Fact]
    public void Validate_DefaultsDiscoveryConsulWithoutAddress_NamesTheService()
    {
        var ex = Validate(new()
        {
            ["Defaults:Discovery"] = "Consul",
            ["Services:catalog:Tags:0"] = "primary",
        });

        Assert.Equal("MeshGovernance:Consul:Address is required because service 'catalog' uses Discovery 'Consul': give the HTTP address of a Consul agent, such as http://127.0.0.1:8500", Assert.Single(ex.Failures));
    }

    [Theory]
    [InlineData("MeshGovernance:Consul:Address is required because service 'catalog' uses Discovery 'Consul' and MeshGovernance:Registration is on: give the HTTP address of a Consul agent, such as http://127.0.0.1:8500", "catalog")]
    [InlineData("MeshGovernance:Consul:Address is required because services 'catalog', 'inventory' use Discovery 'Consul' and MeshGovernance:Registration is on: give the HTTP address of a Consul agent, such as http://127.0.0.1:8500", "catalog", "inventory")]
    public void Validate_ConsulDiscoveryAndRegistrationWithoutAddress_NamesBothUsesInOneMessage(string expected, params string[] consulServices)
    {
        var settings = new Dictionary<string, string?>
        {
            ["Application:Name"] = "orders",
            ["Registration:Port"] = "8080",
        };
        foreach (var service in consulServices)
        {
            settings[$"Services:{service}:Discovery"] = "Consul";
        }

        var ex = Validate(settings);

        Assert.Equal(expected, Assert.Single(ex.Failures));
    }

    [Theory]
    [InlineData(65, 1, "MeshGovernance:Registration:Metadata has 65 keys: Consul allows at most 64")]
    [InlineData(1, 513, "MeshGovernance:Registration:Metadata:key0 is 513 characters long: Consul allows at most 512")]
    public void Validate_RegistrationMetadataOverConsulLimits_NamesKeyAndLimit(int keys, int valueLength, string expected)
    {
        var ex = Validate(RegistrationWithMetadata(keys, valueLength));

        Assert.Equal(expected, Assert.Single(ex.Failures));
    }

    [Fact]
    public void Bind_RegistrationMetadataAtConsulLimits_IsAccepted()
    {
        var options = Bind(RegistrationWithMetadata(64, 512));

        Assert.Equal(64, options.Registration!.Metadata.Count);
        Assert.All(options.Registration.Metadata.Values, value => Assert.Equal(512, value.Length));
    }

    private static Dictionary<string, string?> RegistrationWithMetadata(int keys, int valueLength)
    {
        var settings = new Dictionary<string, string?>
        {
            ["Application:Name"] = "orders",
            ["Consul:Address"] = "http://127.0.0.1:8500",
            ["Registration:Port"] = "8080",
        };
        for (var i = 0; i < keys; i++)
        {
            settings[$"Registration:Metadata:key{i}"] = new string('v', valueLength);
        }

        return settings;
    }

    [Fact]
    public void Validate_CustomProviderNamedConsul_NoAddressRequired()
    {
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { ["MeshGovernance:Services:catalog:Discovery"] = "Consul" }).Build());
        services.AddSingleton<IServiceDiscoveryProvider, CustomConsul>();
        services.AddMeshGovernance();
        using var provider = services.BuildServiceProvider();

        var runtime = provider.GetRequiredService<GovernanceRuntime>();

        Assert.IsType<CustomConsul>(runtime.Services["catalog"].Settings.Discovery);
    }

    [Fact]
    public void Validate_BadConsulValues_EveryErrorNamesItsKey()
    {
        var ex = Validate(new()
        {
            ["Consul:Address"] = "127.0.0.1:8500",
            ["Consul:Datacenter"] = "dc 1",
            ["Consul:WaitTime"] = "00:20:00",
            ["Consul:InitialResolutionTimeout"] = "-00:00:01",
            ["Services:catalog:Discovery"] = "Consul",
            ["Services:catalog:Tags:0"] = " ",
        });

        Assert.Equal(
            [
                "MeshGovernance:Consul:Address '127.0.0.1:8500' is not an absolute http or https URI, such as http://127.0.0.1:8500",
                "MeshGovernance:Consul:Datacenter 'dc 1' is not a datacenter name: use lower-case letters, digits, '-' and '_'",
                "MeshGovernance:Consul:WaitTime '00:20:00' must be between 00:00:01 and 00:10:00",
                "MeshGovernance:Consul:InitialResolutionTimeout '-00:00:01' must be between 00:00:00 and 00:10:00",
                "MeshGovernance:Services:catalog:Tags:0 is empty: a tag must have text",
            ],
            ex.Failures);
    }

    [Fact]
    public void Validate_AddressWithUserInfo_RejectedWithoutEchoingIt()
    {
        var ex = Validate(new() { ["Consul:Address"] = "http://admin:secret@consul:8500/?token=x", ["Services:catalog:Discovery"] = "Consul" });

        var message = Assert.Single(ex.Failures);
        Assert.Equal("MeshGovernance:Consul:Address 'http://consul:8500/' must not have user info, a query or a fragment: give the ACL token in MeshGovernance:Consul:Token", message);
    }

    [Fact]
    public void Validate_TokenWithLineBreak_RejectedWithoutShowingTheToken()
    {
        var ex = Validate(new() { ["Consul:Address"] = "http://127.0.0.1:8500", ["Consul:Token"] = "abc\r\nX-Injected: 1", ["Services:catalog:Discovery"] = "Consul" });

        Assert.Equal("MeshGovernance:Consul:Token contains characters that cannot be sent in an HTTP header (the value is not shown)", Assert.Single(ex.Failures));
    }

    [Fact]
    public void Validate_TagsOrOnlyPassingOnStaticService_Rejected()
    {
        var ex = Validate(new()
        {
            ["Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
            ["Services:catalog:Tags:0"] = "primary",
            ["Services:catalog:OnlyPassing"] = "false",
        });

        Assert.Equal(
            [
                "MeshGovernance:Services:catalog:Tags is only used with Discovery 'Consul', but service 'catalog' uses Static endpoints: remove the tags or set MeshGovernance:Services:catalog:Discovery to Consul",
                "MeshGovernance:Services:catalog:OnlyPassing is only used with Discovery 'Consul', but service 'catalog' uses Static endpoints: remove it or set MeshGovernance:Services:catalog:Discovery to Consul",
            ],
            ex.Failures);
    }

    [Fact]
    public void Validate_UnknownAndMalformedConsulKeys_Reported()
    {
        var ex = Validate(new()
        {
            ["Consul:Adress"] = "http://127.0.0.1:8500",
            ["Consul:WaitTime"] = "5m",
            ["Services:catalog:Discovery"] = "Consul",
            ["Services:catalog:OnlyPassing"] = "yes",
        });

        Assert.Contains("MeshGovernance:Consul:Adress is not a known setting (Address, Token, Datacenter, WaitTime, InitialResolutionTimeout)", ex.Failures);
        Assert.Contains("MeshGovernance:Consul:WaitTime '5m' is not a duration such as 00:00:05 (hh:mm:ss) or 00:00:00.250", ex.Failures);
        Assert.Contains("MeshGovernance:Services:catalog:OnlyPassing 'yes' is not true or false", ex.Failures);
    }

    [Fact]
    public void Validate_UnknownDiscoveryName_ListsConsulAmongProviders()
    {
        var ex = Validate(new() { ["Services:catalog:Discovery"] = "Eureka" });

        Assert.Contains("MeshGovernance:Services:catalog:Discovery 'Eureka' is not a known discovery provider (Static, Consul)", ex.Failures);
    }

    [Fact]
    public void Bind_IssueExample_BindsEveryKey()
    {
        var options = Bind(new()
        {
            ["Application:Name"] = "orders",
            ["Consul:Address"] = "http://127.0.0.1:8500",
            ["Consul:Token"] = "",
            ["Consul:Datacenter"] = "",
            ["Consul:WaitTime"] = "00:05:00",
            ["Services:catalog:Discovery"] = "Consul",
            ["Services:catalog:Tags:0"] = "primary",
            ["Services:catalog:OnlyPassing"] = "true",
            ["Registration:Enabled"] = "true",
            ["Registration:InstanceId"] = "",
            ["Registration:Address"] = "",
            ["Registration:Port"] = "0",
            ["Registration:Tags"] = "",
            ["Registration:Metadata"] = "",
            ["Registration:Check:HttpPath"] = "/health",
            ["Registration:Check:Interval"] = "00:00:10",
            ["Registration:Check:Timeout"] = "00:00:05",
            ["Registration:Check:DeregisterCriticalServiceAfter"] = "00:30:00",
        });

        Assert.Equal("http://127.0.0.1:8500", options.Consul.Address);
        Assert.Equal(TimeSpan.FromMinutes(5), options.Consul.WaitTime);
        Assert.Equal(["primary"], options.Services["catalog"].Tags);
        Assert.True(options.Services["catalog"].OnlyPassing);
        Assert.True(options.Registration!.Enabled);
        Assert.Equal(0, options.Registration.Port);
        Assert.Equal(TimeSpan.FromMinutes(30), options.Registration.Check!.DeregisterCriticalServiceAfter);
        Assert.Null(options.Registration.Check.Ttl);
    }

    private sealed class CustomConsul : IServiceDiscoveryProvider
    {
        public string Name => "Consul";

        public IServiceEndpointWatcher Watch(string serviceName, ServiceOptions options) =>
            new StaticWatcher();

        private sealed class StaticWatcher : IServiceEndpointWatcher
        {
            public IReadOnlyList<ServiceEndpoint>? Current { get; } = [new ServiceEndpoint(new Uri("http://127.0.0.1:5001"))];

            public Microsoft.Extensions.Primitives.IChangeToken GetChangeToken() => new Microsoft.Extensions.Primitives.CancellationChangeToken(CancellationToken.None);

            public ValueTask DisposeAsync() => ValueTask.CompletedTask;
        }
    }
}
