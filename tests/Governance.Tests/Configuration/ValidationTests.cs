using Governance.Configuration;
using Governance.Pipeline;
using Governance.Tests.Infrastructure;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Governance.Tests.Configuration;

/// <summary>Every validation message is public contract: pinned here word for word.</summary>
public sealed class ValidationTests
{
    /// <summary>The event id of "MeshGovernance configuration applied", logged when the runtime applies a configuration.</summary>
    private const int ConfigurationApplied = 1000;

    private static OptionsValidationException Validate(Dictionary<string, string?> settings)
    {
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(new ConfigurationBuilder().AddInMemoryCollection(settings).Build());
        services.AddMeshGovernance();
        using var provider = services.BuildServiceProvider();
        return Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<GovernanceRuntime>());
    }

    private static string Single(Dictionary<string, string?> settings) => Assert.Single(Validate(settings).Failures);

    [Fact]
    public void Validate_UnknownPolicy_NamesKeyValueAndAllowedPolicies()
    {
        var message = Single(new()
        {
            ["MeshGovernance:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
            ["MeshGovernance:Services:catalog:LoadBalancer:Policy"] = "RoundRobbin",
        });

        Assert.Equal("MeshGovernance:Services:catalog:LoadBalancer:Policy 'RoundRobbin' is not a known policy (RoundRobin, Random, LeastRequest, ConsistentHash)", message);
    }

    [Fact]
    public void Validate_PolicyNameInOtherCase_IsAccepted()
    {
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["MeshGovernance:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
            ["MeshGovernance:Services:catalog:LoadBalancer:Policy"] = "roundrobin",
        }).Build());
        services.AddMeshGovernance();
        using var provider = services.BuildServiceProvider();

        var runtime = provider.GetRequiredService<GovernanceRuntime>();

        Assert.True(runtime.TryGetService("catalog", out var service));
        Assert.Equal("RoundRobin", service.Settings.Policy.Name);
    }

    [Fact]
    public void Validate_UnknownDefaultPolicy_NamesDefaultsKey()
    {
        var message = Single(new()
        {
            ["MeshGovernance:Defaults:LoadBalancer:Policy"] = "Fastest",
            ["MeshGovernance:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
        });

        Assert.Equal("MeshGovernance:Defaults:LoadBalancer:Policy 'Fastest' is not a known policy (RoundRobin, Random, LeastRequest, ConsistentHash)", message);
    }

    [Theory]
    [InlineData("htp:/x", "is not an absolute http or https URI, such as http://10.0.0.5:8080")]
    [InlineData("ftp://127.0.0.1:21", "is not an absolute http or https URI, such as http://10.0.0.5:8080")]
    [InlineData("127.0.0.1:5001", "is not an absolute http or https URI, such as http://10.0.0.5:8080")]
    [InlineData("http://127.0.0.1:5001/api", "must be only scheme://host:port: requests keep their own path and query, so a path, query, fragment or user info here would be ignored")]
    [InlineData("http://10.0.0.5:0", "has port 0, which no request can be sent to: give the port the endpoint listens on")]
    [InlineData("http://0.0.0.0:8080", "has the wildcard address 0.0.0.0, which a server listens on but no request can be sent to: give the endpoint's own address")]
    [InlineData("http://[::]:8080", "has the wildcard address [::], which a server listens on but no request can be sent to: give the endpoint's own address")]
    public void Validate_MalformedShorthandAddress_NamesItemAndValue(string address, string problem)
    {
        var message = Single(new() { ["MeshGovernance:Services:catalog:Endpoints:0"] = address });

        Assert.Equal($"MeshGovernance:Services:catalog:Endpoints:0 '{address}' {problem}", message);
    }

    [Fact]
    public void Validate_MalformedObjectAddress_NamesAddressKey()
    {
        var message = Single(new() { ["MeshGovernance:Services:catalog:Endpoints:0:Address"] = "not a uri" });

        Assert.Equal("MeshGovernance:Services:catalog:Endpoints:0:Address 'not a uri' is not an absolute http or https URI, such as http://10.0.0.5:8080", message);
    }

    [Theory]
    [InlineData("0")]
    [InlineData("-3")]
    [InlineData("65536")]
    public void Validate_WeightOutOfRange_NamesKeyValueAndRange(string weight)
    {
        var message = Single(new()
        {
            ["MeshGovernance:Services:catalog:Endpoints:0:Address"] = "http://127.0.0.1:5001",
            ["MeshGovernance:Services:catalog:Endpoints:0:Weight"] = weight,
        });

        Assert.Equal($"MeshGovernance:Services:catalog:Endpoints:0:Weight '{weight}' must be between 1 and 65535", message);
    }

    [Fact]
    public void Validate_WeightNotANumber_NamesKeyAndValue()
    {
        var message = Single(new()
        {
            ["MeshGovernance:Services:catalog:Endpoints:0:Address"] = "http://127.0.0.1:5001",
            ["MeshGovernance:Services:catalog:Endpoints:0:Weight"] = "heavy",
        });

        Assert.Equal("MeshGovernance:Services:catalog:Endpoints:0:Weight 'heavy' is not a whole number", message);
    }

    [Fact]
    public void Validate_NoEndpointsAndNoDiscovery_NamesServiceAndProviders()
    {
        var message = Single(new() { ["MeshGovernance:Services:catalog:LoadBalancer:Policy"] = "Random" });

        Assert.Equal("MeshGovernance:Services:catalog:Endpoints must list at least one endpoint, or MeshGovernance:Services:catalog:Discovery must name a discovery provider (Static, Consul)", message);
    }

    [Fact]
    public void Validate_EmptyJsonEndpointList_IsReportedAsEmpty()
    {
        var json = """{ "MeshGovernance": { "Services": { "catalog": { "Endpoints": [] } } } }""";
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(new ConfigurationBuilder().AddJsonStream(new MemoryStream(System.Text.Encoding.UTF8.GetBytes(json))).Build());
        services.AddMeshGovernance();
        using var provider = services.BuildServiceProvider();

        var ex = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<GovernanceRuntime>());

        Assert.Equal("MeshGovernance:Services:catalog:Endpoints must list at least one endpoint, or MeshGovernance:Services:catalog:Discovery must name a discovery provider (Static, Consul)", Assert.Single(ex.Failures));
    }

    [Fact]
    public void Validate_UnknownKey_IsReportedWithKnownKeys()
    {
        var message = Single(new()
        {
            ["MeshGovernance:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
            ["MeshGovernance:Services:catalog:LoadBalancr:Policy"] = "Random",
        });

        Assert.Equal("MeshGovernance:Services:catalog:LoadBalancr is not a known setting (Discovery, Endpoints, Tags, OnlyPassing, LoadBalancer, Retry, Timeout, CircuitBreaker, OutlierDetection, HealthCheck, RateLimit, Hedging)", message);
    }

    [Fact]
    public void Validate_BareAddressWithExtraKeys_IsRejectedInsteadOfDroppingThem()
    {
        var message = Single(new()
        {
            ["MeshGovernance:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
            ["MeshGovernance:Services:catalog:Endpoints:0:Weight"] = "6",
        });

        Assert.Equal("MeshGovernance:Services:catalog:Endpoints:0 is a bare address 'http://127.0.0.1:5001' but also has the keys Weight: write it as an object with Address", message);
    }

    [Fact]
    public void Validate_MalformedValueAndOtherErrors_AreAllReportedInOnePass()
    {
        var failures = Validate(new()
        {
            ["MeshGovernance:Services:catalog:Endpoints:0:Address"] = "http://127.0.0.1:5001",
            ["MeshGovernance:Services:catalog:Endpoints:0:Wieght"] = "6",
            ["MeshGovernance:Services:catalog:Endpoints:1:Address"] = "http://127.0.0.1:5002",
            ["MeshGovernance:Services:catalog:Endpoints:1:Weight"] = "six",
            ["MeshGovernance:Services:catalog:LoadBalancer:Policy"] = "Fastest",
        }).Failures.ToList();

        Assert.Equal(3, failures.Count);
        Assert.Contains("MeshGovernance:Services:catalog:Endpoints:0:Wieght is not a known setting (Address, Weight, Zone, Metadata)", failures);
        Assert.Contains("MeshGovernance:Services:catalog:Endpoints:1:Weight 'six' is not a whole number", failures);
        Assert.Contains("MeshGovernance:Services:catalog:LoadBalancer:Policy 'Fastest' is not a known policy (RoundRobin, Random, LeastRequest, ConsistentHash)", failures);
    }

    [Fact]
    public void Validate_UnknownDiscovery_NamesKeyAndProviders()
    {
        var message = Single(new() { ["MeshGovernance:Services:catalog:Discovery"] = "Eureka" });

        Assert.Contains("MeshGovernance:Services:catalog:Discovery 'Eureka' is not a known discovery provider (Static, Consul)", message, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_ConsistentHashWithoutHeader_AsksForHashHeader()
    {
        var message = Single(new()
        {
            ["MeshGovernance:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
            ["MeshGovernance:Services:catalog:LoadBalancer:Policy"] = "ConsistentHash",
        });

        Assert.Equal("MeshGovernance:Services:catalog:LoadBalancer:HashHeader is required when the policy of service 'catalog' is ConsistentHash: name the request header that carries the affinity key, for example x-user-id", message);
    }

    [Fact]
    public void Validate_ConsistentHashFromDefaultsWithoutHeader_ReportedOnceAtDefaults()
    {
        var failures = Validate(new()
        {
            ["MeshGovernance:Defaults:LoadBalancer:Policy"] = "ConsistentHash",
            ["MeshGovernance:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
            ["MeshGovernance:Services:orders:Endpoints:0"] = "http://127.0.0.1:5002",
            ["MeshGovernance:Services:billing:Endpoints:0"] = "http://127.0.0.1:5003",
            ["MeshGovernance:Services:billing:LoadBalancer:HashHeader"] = "x-account",
        }).Failures;

        Assert.Equal(
            "MeshGovernance:Defaults:LoadBalancer:HashHeader is required when MeshGovernance:Defaults:LoadBalancer:Policy is ConsistentHash and a service sets no HashHeader of its own (services catalog, orders): name the request header that carries the affinity key, for example x-user-id",
            Assert.Single(failures));
    }

    [Fact]
    public void Validate_EndpointsWithDiscoveryFromDefaults_NamesTheDefaultsKey()
    {
        var failures = Validate(new()
        {
            ["MeshGovernance:Consul:Address"] = "http://127.0.0.1:8500",
            ["MeshGovernance:Defaults:Discovery"] = "Consul",
            ["MeshGovernance:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
        }).Failures;

        Assert.Equal(
            "MeshGovernance:Services:catalog:Endpoints is only used with Discovery 'Static', but MeshGovernance:Defaults:Discovery is 'Consul': remove the endpoints or set MeshGovernance:Services:catalog:Discovery to Static",
            Assert.Single(failures));
    }

    [Fact]
    public void AddMeshGovernance_EmptyTypedValues_MeanNotSet()
    {
        // An environment variable set to nothing arrives as "": the key's default applies, as README says.
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["MeshGovernance:Services:catalog:Endpoints:0:Address"] = "http://127.0.0.1:5001",
            ["MeshGovernance:Services:catalog:Endpoints:0:Weight"] = "",
            ["MeshGovernance:Services:catalog:Retry:MaxRetries"] = "",
            ["MeshGovernance:Services:catalog:Retry:Jitter"] = "",
            ["MeshGovernance:Services:catalog:CircuitBreaker:FailureRatio"] = "",
            ["MeshGovernance:Services:catalog:Timeout:Total"] = "",
            ["MeshGovernance:Defaults:Retry:MaxRetries"] = "4",
        }).Build());
        services.AddMeshGovernance();
        using var provider = services.BuildServiceProvider();

        Assert.True(provider.GetRequiredService<GovernanceRuntime>().TryGetService("catalog", out var service));
        Assert.Equal(1, Assert.Single(service.Endpoints.All).Endpoint.Weight);
        Assert.Equal(4, service.Policy.Settings.Retry.MaxRetries);
        Assert.True(service.Policy.Settings.Retry.Jitter);
        Assert.Equal(0.5, service.Policy.Settings.CircuitBreaker!.FailureRatio);
        Assert.Equal(TimeSpan.FromSeconds(30), service.Policy.Timeout.Total);
    }

    [Fact]
    public void Validate_InvalidHashHeader_NamesKeyAndValue()
    {
        var message = Single(new()
        {
            ["MeshGovernance:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
            ["MeshGovernance:Services:catalog:LoadBalancer:Policy"] = "ConsistentHash",
            ["MeshGovernance:Services:catalog:LoadBalancer:HashHeader"] = "x user",
        });

        Assert.Equal("MeshGovernance:Services:catalog:LoadBalancer:HashHeader 'x user' is not a valid HTTP header name", message);
    }

    [Fact]
    public void Validate_DuplicateEndpoint_NamesBothItems()
    {
        var message = Single(new()
        {
            ["MeshGovernance:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
            ["MeshGovernance:Services:catalog:Endpoints:1:Address"] = "http://127.0.0.1:5001/",
        });

        Assert.Equal("MeshGovernance:Services:catalog:Endpoints:1:Address 'http://127.0.0.1:5001/' duplicates endpoint 0 of the same service", message);
    }

    [Fact]
    public void Validate_EndpointsInDefaults_AreRejected()
    {
        var message = Single(new()
        {
            ["MeshGovernance:Defaults:Endpoints:0"] = "http://127.0.0.1:5001",
            ["MeshGovernance:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
        });

        Assert.Equal("MeshGovernance:Defaults:Endpoints is not allowed: endpoints belong to a service under MeshGovernance:Services", message);
    }

    [Fact]
    public void Validate_ServiceNameNotAHostName_IsRejected()
    {
        var message = Single(new() { ["MeshGovernance:Services:my catalog:Endpoints:0"] = "http://127.0.0.1:5001" });

        Assert.StartsWith("MeshGovernance:Services:my catalog: 'my catalog' is not a valid service name", message, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_SeveralErrors_AreAllReportedAtOnce()
    {
        var failures = Validate(new()
        {
            ["MeshGovernance:Services:catalog:Endpoints:0:Address"] = "http://127.0.0.1:5001",
            ["MeshGovernance:Services:catalog:Endpoints:0:Weight"] = "0",
            ["MeshGovernance:Services:catalog:Endpoints:1"] = "nope",
            ["MeshGovernance:Services:catalog:LoadBalancer:Policy"] = "RoundRobbin",
            ["MeshGovernance:Services:orders:LoadBalancer:Policy"] = "Random",
        }).Failures.ToList();

        Assert.Equal(4, failures.Count);
        Assert.Contains(failures, f => f.StartsWith("MeshGovernance:Services:catalog:Endpoints:0:Weight '0'", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.StartsWith("MeshGovernance:Services:catalog:Endpoints:1 'nope'", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.StartsWith("MeshGovernance:Services:catalog:LoadBalancer:Policy 'RoundRobbin'", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.StartsWith("MeshGovernance:Services:orders:Endpoints must list", StringComparison.Ordinal));
    }

    [Fact]
    public void Validate_CustomSectionPath_IsUsedInMessages()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Platform:Mesh:Services:catalog:Endpoints:0:Weight"] = "0",
            ["Platform:Mesh:Services:catalog:Endpoints:0:Address"] = "http://127.0.0.1:5001",
        }).Build();
        var services = new ServiceCollection();
        services.AddMeshGovernance(configuration.GetSection("Platform:Mesh"));
        using var provider = services.BuildServiceProvider();

        var ex = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<GovernanceRuntime>());

        Assert.Equal("Platform:Mesh:Services:catalog:Endpoints:0:Weight '0' must be between 1 and 65535", Assert.Single(ex.Failures));
    }

    [Theory]
    [InlineData(
        "MeshGovernance:Services:catalog:Endpoints must list at least one endpoint when Discovery is 'Static'",
        "Services:catalog:Discovery=Static")]
    [InlineData(
        "MeshGovernance:Services:catalog:Endpoints:0 is required: give an absolute http or https address such as http://10.0.0.5:8080",
        "Services:catalog:Endpoints:0=")]
    [InlineData(
        "MeshGovernance:Services:catalog:Endpoints:0:Address is required: give an absolute http or https address such as http://10.0.0.5:8080",
        "Services:catalog:Endpoints:0:Weight=2")]
    [InlineData(
        "MeshGovernance:Services:catalog:CircuitBreaker:FailureRatio 'half' is not a number",
        "Services:catalog:Endpoints:0=http://127.0.0.1:5001",
        "Services:catalog:CircuitBreaker:FailureRatio=half")]
    [InlineData(
        "MeshGovernance:Services:catalog:Retry '3' must be a section with the keys MaxRetries, Backoff, BaseDelay, MaxDelay, Jitter, RetryNonIdempotent, RetryOn, Budget",
        "Services:catalog:Endpoints:0=http://127.0.0.1:5001",
        "Services:catalog:Retry=3")]
    [InlineData(
        "MeshGovernance:Services:catalog:Retry:RetryOn '5xx' must be a list",
        "Services:catalog:Endpoints:0=http://127.0.0.1:5001",
        "Services:catalog:Retry:RetryOn=5xx")]
    [InlineData(
        "MeshGovernance:Services:catalog:Endpoints:0:Metadata 'x' must be a section",
        "Services:catalog:Endpoints:0:Address=http://127.0.0.1:5001",
        "Services:catalog:Endpoints:0:Metadata=x")]
    [InlineData(
        "MeshGovernance:Services:catalog:Endpoints:first is not a list item: MeshGovernance:Services:catalog:Endpoints must be a list",
        "Services:catalog:Endpoints:first=http://127.0.0.1:5001")]
    [InlineData(
        "MeshGovernance:Services:catalog:LoadBalancer:Policy must be a text value, not a section",
        "Services:catalog:Endpoints:0=http://127.0.0.1:5001",
        "Services:catalog:LoadBalancer:Policy:x=RoundRobin")]
    [InlineData(
        "MeshGovernance:Services:catalog:Retry:MaxRetries must be a whole number, not a section",
        "Services:catalog:Endpoints:0=http://127.0.0.1:5001",
        "Services:catalog:Retry:MaxRetries:x=1")]
    [InlineData(
        "MeshGovernance:Services:catalog:CircuitBreaker:FailureRatio must be a number, not a section",
        "Services:catalog:Endpoints:0=http://127.0.0.1:5001",
        "Services:catalog:CircuitBreaker:FailureRatio:x=0.5")]
    [InlineData(
        "MeshGovernance:Services:catalog:Hedging:Enabled must be true or false, not a section",
        "Services:catalog:Endpoints:0=http://127.0.0.1:5001",
        "Services:catalog:Hedging:Enabled:x=true")]
    [InlineData(
        "MeshGovernance:Services:catalog:Timeout:Total must be a duration, not a section",
        "Services:catalog:Endpoints:0=http://127.0.0.1:5001",
        "Services:catalog:Timeout:Total:x=00:00:05")]
    public void Validate_MisshapenSetting_IsReportedWordForWord(string expected, params string[] settings)
    {
        // Each setting is "key=value", the key relative to the MeshGovernance section.
        var message = Single(settings
            .Select(s => s.Split('=', 2))
            .ToDictionary(kv => "MeshGovernance:" + kv[0], kv => (string?)kv[1]));

        Assert.Equal(expected, message);
    }

    [Fact]
    public void Validate_EndpointsGivenAsOneAddress_ReportsTheListAndTheMissingEndpoints()
    {
        // A common mistake: the address is not read as a list of one, so the service is left without endpoints too.
        var failures = Validate(new() { ["MeshGovernance:Services:catalog:Endpoints"] = "http://127.0.0.1:5001" }).Failures;

        Assert.Equal(
            [
                "MeshGovernance:Services:catalog:Endpoints 'http://127.0.0.1:5001' must be a list",
                "MeshGovernance:Services:catalog:Endpoints must list at least one endpoint, or MeshGovernance:Services:catalog:Discovery must name a discovery provider (Static, Consul)",
            ],
            failures);
    }

    [Theory]
    [InlineData(false, "MeshGovernance:Services:catalog is empty: list its Endpoints or set its Discovery")]
    [InlineData(true, "MeshGovernance:Services:catalog:Endpoints:0 is empty: give an address such as http://10.0.0.5:8080")]
    public void Validate_NullServiceOrEndpointFromCode_IsReportedWordForWord(bool nullEndpoint, string expected)
    {
        // Only code can leave these null: configuration binds an empty service section or list item as an empty object.
        var services = new ServiceCollection();
        services.AddMeshGovernance(options =>
        {
            if (nullEndpoint)
            {
                var service = new ServiceOptions();
                service.Endpoints.Add(null!);
                options.Services["catalog"] = service;
            }
            else
            {
                options.Services["catalog"] = null!;
            }
        });
        using var provider = services.BuildServiceProvider();

        var ex = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<GovernanceRuntime>());

        Assert.Equal(expected, Assert.Single(ex.Failures));
    }

    [Fact]
    public async Task StartAsync_InvalidConfiguration_FailsHostStartWithEveryError()
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["MeshGovernance:Services:catalog:Endpoints:0"] = "nope",
            ["MeshGovernance:Services:catalog:LoadBalancer:Policy"] = "RoundRobbin",
        });
        builder.Services.AddMeshGovernance();
        using var host = builder.Build();

        var ex = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync().WaitAsync(TimeSpan.FromSeconds(30)));

        Assert.Equal(2, ex.Failures.Count());
        Assert.Contains("MeshGovernance:Services:catalog:LoadBalancer:Policy 'RoundRobbin' is not a known policy (RoundRobin, Random, LeastRequest, ConsistentHash)", ex.Failures);
    }

    [Fact]
    public async Task StartAsync_ValidConfiguration_BuildsRuntimeBeforeFirstRequest()
    {
        // The runtime logs ConfigurationApplied (1000) when it is built. Resolving it builds it on demand, so the log is
        // read after StartAsync and before anything resolves the runtime: only the start can have written it.
        var logs = new CapturingLoggerProvider();
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["MeshGovernance:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
            ["MeshGovernance:Services:catalog:LoadBalancer:Policy"] = "RoundRobin",
        });
        builder.Logging.AddProvider(logs);
        builder.Services.AddMeshGovernance();
        using var host = builder.Build();
        Assert.DoesNotContain(logs.Entries, e => e.EventId.Id == ConfigurationApplied);

        await host.StartAsync().WaitAsync(TimeSpan.FromSeconds(30));

        var applied = Assert.Single(logs.Entries, e => e.EventId.Id == ConfigurationApplied);
        Assert.Equal("MeshGovernance configuration applied: 1 services: catalog (RoundRobin, Static)", applied.Message);

        // The first request finds that runtime: resolving it builds nothing more.
        Assert.True(host.Services.GetRequiredService<GovernanceRuntime>().TryGetService("CATALOG", out _));
        Assert.Single(logs.Entries, e => e.EventId.Id == ConfigurationApplied);
        await host.StopAsync().WaitAsync(TimeSpan.FromSeconds(30));
    }
}
