using System.Net;
using Governance.Configuration;
using Governance.Pipeline;
using Governance.Tests.Infrastructure;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace Governance.Tests.DependencyInjection;

public sealed class AddMeshGovernanceTests
{
    [Fact]
    public async Task GetAsync_GovernedHost_ReachesConfiguredEndpoint()
    {
        await using var server = await LoopbackServer.StartAsync("a");
        await using var governed = Governed.Create(Governed.Service("catalog", null, server));

        var answeredBy = await governed.GetServerAsync("http://catalog/items?id=1");

        Assert.Equal("a", answeredBy);
        Assert.Equal(1, server.RequestCount);
    }

    [Fact]
    public async Task SendAsync_GovernedRequest_PreservesPathQueryMethodHeadersAndBodyAndRestoresUri()
    {
        await using var server = await LoopbackServer.StartAsync("a", handler: null, record: true);
        await using var governed = Governed.Create(Governed.Service("catalog", null, server));
        var logical = new Uri("http://catalog/items/42?id=1&name=a%20b");
        using var request = new HttpRequestMessage(HttpMethod.Put, logical) { Content = new StringContent("{\"n\":1}") };
        request.Headers.Add("x-custom", "value-1");

        using var response = await governed.Client.SendAsync(request).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var received = Assert.Single(server.Received);
        Assert.Equal("PUT", received.Method);
        Assert.Equal("/items/42?id=1&name=a%20b", received.PathAndQuery);
        Assert.Equal("value-1", received.Headers["x-custom"]);
        Assert.Equal("{\"n\":1}", received.Body);
        Assert.Equal($"127.0.0.1:{server.Port}", received.Headers["Host"]);
        Assert.Same(logical, request.RequestUri);
        Assert.Same(logical, response.RequestMessage!.RequestUri);
    }

    [Fact]
    public async Task SendAsync_UnknownHost_PassesThroughUntouched()
    {
        await using var server = await LoopbackServer.StartAsync("direct", handler: null, record: true);
        await using var other = await LoopbackServer.StartAsync("other");
        await using var governed = Governed.Create(Governed.Service("catalog", null, other));
        var direct = new Uri(server.Address, "/path?q=1");

        using var response = await governed.Client.GetAsync(direct).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal("direct", Assert.Single(response.Headers.GetValues("x-server")));
        Assert.Equal("/path?q=1", Assert.Single(server.Received).PathAndQuery);
        Assert.Same(direct, response.RequestMessage!.RequestUri);
        Assert.Equal(0, other.RequestCount);
    }

    [Fact]
    public async Task Send_Synchronous_IsGovernedToo()
    {
        await using var server = await LoopbackServer.StartAsync("a");
        await using var governed = Governed.Create(Governed.Service("catalog", null, server));
        var logical = new Uri("http://catalog/sync");
        using var request = new HttpRequestMessage(HttpMethod.Get, logical);

        using var response = await Task.Run(() => governed.Client.Send(request)).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal("a", Assert.Single(response.Headers.GetValues("x-server")));
        Assert.Same(logical, request.RequestUri);
    }

    [Theory]
    [InlineData("http://catalog:1234/items?id=7")] // a port in the logical URI is ignored
    [InlineData("https://catalog/items?id=7")] // the scheme is the endpoint's (documented: list https endpoints to keep TLS)
    public async Task GetAsync_LogicalPortOrScheme_EndpointsSchemeHostAndPortAreUsedAndLogicalUriRestored(string url)
    {
        await using var server = await LoopbackServer.StartAsync("a", handler: null, record: true);
        await using var governed = Governed.Create(Governed.Service("catalog", null, server));
        var logical = new Uri(url);
        using var request = new HttpRequestMessage(HttpMethod.Get, logical);

        using var response = await governed.Client.SendAsync(request).WaitAsync(TimeSpan.FromSeconds(30));

        response.EnsureSuccessStatusCode();
        var received = Assert.Single(server.Received);
        Assert.Equal("/items?id=7", received.PathAndQuery);
        Assert.Equal($"127.0.0.1:{server.Port}", received.Headers["Host"]);
        Assert.Same(logical, request.RequestUri);
    }

    [Fact]
    public async Task AddMeshGovernance_CalledTwice_GovernsOnceWithoutDuplicatingConfiguration()
    {
        await using var server = await LoopbackServer.StartAsync("a");
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["MeshGovernance:Services:catalog:Endpoints:0"] = server.Address.ToString(),
        }).Build();
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(configuration);
        services.AddMeshGovernance();
        services.AddMeshGovernance();
        services.AddMeshGovernance(configuration.GetSection("MeshGovernance"));
        services.AddMeshGovernance(configuration.GetSection("MeshGovernance"));
        services.AddHttpClient("named").AddMeshGovernance();
        await using var provider = services.BuildServiceProvider();

        using var client = provider.GetRequiredService<IHttpClientFactory>().CreateClient("named");
        using var response = await client.GetAsync("http://catalog/").WaitAsync(TimeSpan.FromSeconds(30));

        response.EnsureSuccessStatusCode();
        Assert.Equal(1, server.RequestCount);
        Assert.True(provider.GetRequiredService<GovernanceRuntime>().TryGetService("catalog", out var service));

        // The default section and the explicit section are the same data: bound twice, endpoints would repeat.
        Assert.Single(service.Endpoints.All);

        // One governance handler in the client's chain (a second one would pass the rewritten request through, so the
        // request count above cannot tell).
        var handlers = 0;
        for (HttpMessageHandler? handler = provider.GetRequiredService<IHttpMessageHandlerFactory>().CreateHandler("named"); handler is DelegatingHandler delegating; handler = delegating.InnerHandler)
        {
            handlers += handler is Governance.Pipeline.GovernanceHandler ? 1 : 0;
        }

        Assert.Equal(1, handlers);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AddMeshGovernance_ClientOptInAndNamedSection_BindOnlyTheNamedSectionInEitherOrder(bool clientFirst)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["MeshGovernance:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
            ["MeshGovernance:Services:orders:Endpoints:0"] = "http://127.0.0.1:5003",
            ["Other:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5002",
        }).Build();
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(configuration);
        if (clientFirst)
        {
            services.AddHttpClient("named").AddMeshGovernance();
        }

        services.AddMeshGovernance(configuration.GetSection("Other"));
        if (!clientFirst)
        {
            services.AddHttpClient("named").AddMeshGovernance();
        }

        using var provider = services.BuildServiceProvider();
        Assert.True(provider.GetRequiredService<GovernanceRuntime>().TryGetService("catalog", out var service));

        Assert.Equal("http://127.0.0.1:5002", Assert.Single(service.Endpoints.All).Authority);
        Assert.False(provider.GetRequiredService<GovernanceRuntime>().TryGetService("orders", out _), "the default section was bound too");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AddMeshGovernance_CodeAndSection_CodeRunsAfterBindingWhicheverComesFirst(bool codeFirst)
    {
        var section = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["MeshGovernance:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
            ["MeshGovernance:Services:catalog:LoadBalancer:Policy"] = "Random",
        }).Build().GetSection("MeshGovernance");
        var services = new ServiceCollection();
        Action<GovernanceOptions> code = o =>
        {
            o.Services["catalog"].Endpoints.Add(new EndpointOptions { Address = "http://127.0.0.1:5002" });
            o.Services["catalog"].LoadBalancer!.Policy = "RoundRobin";
        };
        if (codeFirst)
        {
            services.AddMeshGovernance(code);
            services.AddMeshGovernance(section);
        }
        else
        {
            services.AddMeshGovernance(section);
            services.AddMeshGovernance(code);
        }

        using var provider = services.BuildServiceProvider();

        Assert.True(provider.GetRequiredService<GovernanceRuntime>().TryGetService("catalog", out var service));
        Assert.Equal(["http://127.0.0.1:5001", "http://127.0.0.1:5002"], service.Endpoints.All.Select(e => e.Authority));
        Assert.Equal("RoundRobin", service.Settings.Policy.Name);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void HttpClientBuilderAddMeshGovernance_ParameterlessAndCode_BindsTheDefaultSectionAndRunsTheCode(bool codeFirst)
    {
        // Opt-in mode: code adds to the default section the parameterless overload binds (it used to replace it, leaving
        // governance with only what the code set up and sending every other logical host to DNS).
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["MeshGovernance:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
            ["MeshGovernance:Services:orders:Endpoints:0"] = "http://127.0.0.1:5003",
        }).Build();
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(configuration);
        Action<GovernanceOptions> code = o => o.Services["catalog"].LoadBalancer = new LoadBalancerOptions { Policy = "RoundRobin" };
        var client = services.AddHttpClient("named");
        if (codeFirst)
        {
            client.AddMeshGovernance(code).AddMeshGovernance();
        }
        else
        {
            client.AddMeshGovernance().AddMeshGovernance(code);
        }

        using var provider = services.BuildServiceProvider();
        var runtime = provider.GetRequiredService<GovernanceRuntime>();

        Assert.True(runtime.TryGetService("catalog", out var catalog), "the default section was not bound");
        Assert.Equal("http://127.0.0.1:5001", Assert.Single(catalog.Endpoints.All).Authority);
        Assert.Equal("RoundRobin", catalog.Settings.Policy.Name);
        Assert.True(runtime.TryGetService("orders", out _));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AddMeshGovernance_ServiceCollectionCodeAndClientOptIn_ClientBindsTheDefaultSectionAndCodeAdjustsIt(bool codeFirst)
    {
        // Code on the service collection names no section: a client opted in with the parameterless overload binds the
        // default one, and the code runs after it, in either order.
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["MeshGovernance:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
        }).Build();
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(configuration);
        Action<GovernanceOptions> code = o => o.Services["catalog"].LoadBalancer = new LoadBalancerOptions { Policy = "Random" };
        if (codeFirst)
        {
            services.AddMeshGovernance(code);
            services.AddHttpClient("named").AddMeshGovernance();
        }
        else
        {
            services.AddHttpClient("named").AddMeshGovernance();
            services.AddMeshGovernance(code);
        }

        using var provider = services.BuildServiceProvider();

        Assert.True(provider.GetRequiredService<GovernanceRuntime>().TryGetService("catalog", out var catalog), "the default section was not bound");
        Assert.Equal("http://127.0.0.1:5001", Assert.Single(catalog.Endpoints.All).Authority);
        Assert.Equal("Random", catalog.Settings.Policy.Name);
    }

    [Fact]
    public void AddMeshGovernance_LaterSectionSetsOnlyRetries_KeepsTheEarlierSectionsEndpoints()
    {
        // B names catalog only to set its retries: A's endpoints stay (they were cleared, and startup failed blaming B).
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["A:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
            ["B:Services:catalog:Retry:MaxRetries"] = "1",
        }).Build();
        var services = new ServiceCollection();
        services.AddMeshGovernance(configuration.GetSection("A"));
        services.AddMeshGovernance(configuration.GetSection("B"));
        using var provider = services.BuildServiceProvider();

        Assert.True(provider.GetRequiredService<GovernanceRuntime>().TryGetService("catalog", out var catalog));
        Assert.Equal("http://127.0.0.1:5001", Assert.Single(catalog.Endpoints.All).Authority);
        Assert.Equal(1, catalog.Settings.Resilience.Retry.MaxRetries);
    }

    [Theory]
    [InlineData("http://xn--bcher-kva/")]
    [InlineData("http://bücher/")]
    public async Task GetAsync_InternationalizedServiceName_GovernedWhicheverFormTheRequestWrites(string url)
    {
        // The service is configured in its ASCII (punycode) form; a request may write the host either way, as
        // SocketsHttpHandler treats both as one host (the Unicode form went to DNS).
        await using var server = await LoopbackServer.StartAsync("a");
        await using var governed = Governed.Create(Governed.Service("xn--bcher-kva", null, server));

        using var response = await governed.Client.GetAsync(url).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal("a", Assert.Single(response.Headers.GetValues("x-server")));
    }

    [Fact]
    public void AddMeshGovernance_ServiceNameInUnicode_RejectedNamingItsAsciiForm()
    {
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["MeshGovernance:Services:bücher:Endpoints:0"] = "http://127.0.0.1:5001",
        }).Build());
        services.AddMeshGovernance();
        using var provider = services.BuildServiceProvider();

        var ex = Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(() => provider.GetRequiredService<GovernanceRuntime>());

        Assert.Equal("MeshGovernance:Services:bücher: 'bücher' is not a valid service name: write an internationalized name in its ASCII (punycode) form, 'xn--bcher-kva' (requests may use either form)", Assert.Single(ex.Failures));
    }

    [Fact]
    public void AddMeshGovernance_LaterJsonSectionWithEmptyEndpoints_ReplacesTheEarlierList()
    {
        // "Endpoints": [] in JSON is a key with no value and no children: still a list the later section sets (empty,
        // which validation then reports), not an absent key that would keep the earlier section's endpoints.
        using var json = new MemoryStream("{ \"A\": { \"Services\": { \"catalog\": { \"Endpoints\": [ \"http://127.0.0.1:5001\" ] } } }, \"B\": { \"Services\": { \"catalog\": { \"Endpoints\": [] } } } }"u8.ToArray());
        var configuration = new ConfigurationBuilder().AddJsonStream(json).Build();
        var services = new ServiceCollection();
        services.AddMeshGovernance(configuration.GetSection("A"));
        services.AddMeshGovernance(configuration.GetSection("B"));
        using var provider = services.BuildServiceProvider();

        var ex = Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(() => provider.GetRequiredService<GovernanceRuntime>());

        Assert.Contains(ex.Failures, f => f.Contains("Services:catalog:Endpoints must list at least one endpoint", StringComparison.Ordinal));
    }

    [Fact]
    public void AddMeshGovernance_TwoSections_EachServicesMessageNamesItsOwnSection()
    {
        // orders comes from A, catalog from B: an error about orders names A's key (it named B:Services:orders..., a key
        // that does not exist).
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["A:Services:orders:Endpoints:0:Address"] = "http://127.0.0.1:5001",
            ["A:Services:orders:Endpoints:0:Weight"] = "0",
            ["B:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5002",
        }).Build();
        var services = new ServiceCollection();
        services.AddMeshGovernance(configuration.GetSection("A"));
        services.AddMeshGovernance(configuration.GetSection("B"));
        using var provider = services.BuildServiceProvider();

        var ex = Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(() => provider.GetRequiredService<GovernanceRuntime>());

        Assert.Equal("A:Services:orders:Endpoints:0:Weight '0' must be between 1 and 65535", Assert.Single(ex.Failures));
    }

    [Fact]
    public void AddMeshGovernance_WholeConfiguration_ReadsItsMeshGovernanceSection()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Logging:LogLevel:Default"] = "Information",
            ["MeshGovernance:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
        }).Build();
        var services = new ServiceCollection();
        services.AddMeshGovernance(configuration);
        using var provider = services.BuildServiceProvider();

        Assert.True(provider.GetRequiredService<GovernanceRuntime>().TryGetService("catalog", out _));
    }

    [Fact]
    public void AddMeshGovernance_ConfigurationRootOfSettings_NamesKeysAsTheyAreAndReportsEveryError()
    {
        // A configuration built for governance alone (its own file): the settings are its top-level keys.
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Services:catalog:Endpoints:0:Address"] = "http://127.0.0.1:5001",
            ["Services:catalog:Endpoints:0:Weight"] = "six",
            ["Services:catalog:LoadBalancer:Policy"] = "Fastest",
            ["Services:orders:Endpoints:0"] = "http://127.0.0.1:5002",
        }).Build();
        var services = new ServiceCollection();
        services.AddMeshGovernance(configuration);
        using var provider = services.BuildServiceProvider();

        var ex = Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(() => provider.GetRequiredService<GovernanceRuntime>());

        Assert.Equal(
            [
                "Services:catalog:Endpoints:0:Weight 'six' is not a whole number",
                "Services:catalog:LoadBalancer:Policy 'Fastest' is not a known policy (RoundRobin, Random, LeastRequest, ConsistentHash)",
            ],
            ex.Failures.Order(StringComparer.Ordinal));
    }

    [Fact]
    public void AddMeshGovernance_SameSectionThroughTwoObjects_ReportsEachErrorOnceAtItsOwnKey()
    {
        // GetSection returns a new object per call: the section is registered twice and read twice.
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["MeshGovernance:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
            ["MeshGovernance:Services:catalog:Retry:RetryOn:0"] = "bogus",
            ["MeshGovernance:Services:catalog:Retyr:MaxRetries"] = "1",
        }).Build();
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(configuration);
        services.AddMeshGovernance();
        services.AddMeshGovernance(configuration.GetSection("MeshGovernance"));
        services.AddMeshGovernance(configuration.GetSection("MeshGovernance"));
        using var provider = services.BuildServiceProvider();

        var ex = Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(() => provider.GetRequiredService<GovernanceRuntime>());

        // Once each, and no error for a RetryOn:1 the configuration does not have (the binder appends list items on every read).
        Assert.Equal(2, ex.Failures.Count());
        Assert.Single(ex.Failures, f => f.StartsWith("MeshGovernance:Services:catalog:Retry:RetryOn:0 'bogus'", StringComparison.Ordinal));
        Assert.Single(ex.Failures, f => f.StartsWith("MeshGovernance:Services:catalog:Retyr", StringComparison.Ordinal));
    }

    [Fact]
    public void AddMeshGovernance_TwoSourcesSetALists_TheLaterReplacesIt()
    {
        var first = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["MeshGovernance:Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
            ["MeshGovernance:Services:catalog:Retry:RetryOn:0"] = "5xx",
            ["MeshGovernance:Services:catalog:Retry:RetryOn:1"] = "reset",
            ["MeshGovernance:Defaults:Retry:RetryOn:0"] = "timeout",
        }).Build();
        var second = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["MeshGovernance:Services:catalog:Retry:RetryOn:0"] = "connect-failure",
        }).Build();
        var services = new ServiceCollection();
        services.AddMeshGovernance(first.GetSection("MeshGovernance"));
        services.AddMeshGovernance(second.GetSection("MeshGovernance"));
        using var provider = services.BuildServiceProvider();

        var options = provider.GetRequiredService<Microsoft.Extensions.Options.IOptionsMonitor<GovernanceOptions>>().CurrentValue;

        // Replaced where the later source sets the list, kept where it does not: as every other key.
        Assert.Equal(["connect-failure"], options.Services["catalog"].Retry!.RetryOn);
        Assert.Equal(["timeout"], options.Defaults.Retry!.RetryOn);
    }

    [Fact]
    public void AddMeshGovernance_SameActionTwice_RunsItOnce()
    {
        var runs = 0;
        Action<GovernanceOptions> configure = o =>
        {
            runs++;
            o.Services["catalog"] = new ServiceOptions { Endpoints = { new EndpointOptions { Address = "http://127.0.0.1:5001" } } };
        };
        var services = new ServiceCollection();
        services.AddMeshGovernance(configure);
        services.AddMeshGovernance(configure);
        using var provider = services.BuildServiceProvider();

        Assert.True(provider.GetRequiredService<GovernanceRuntime>().TryGetService("catalog", out _));
        Assert.Equal(1, runs);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task HttpClientBuilderAddMeshGovernance_OwnSectionOrCode_GovernsOnlyThatClient(bool fromSection)
    {
        // "localhost" is the governed service name here, so an ungoverned client resolves it normally (no DNS needed).
        await using var direct = await LoopbackServer.StartAsync("direct");
        await using var endpoint = await LoopbackServer.StartAsync("endpoint");
        var services = new ServiceCollection();
        var section = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Mesh:Services:localhost:Endpoints:0"] = endpoint.Address.ToString(),
        }).Build().GetSection("Mesh");
        var client = services.AddHttpClient("governed");
        if (fromSection)
        {
            client.AddMeshGovernance(section);
        }
        else
        {
            client.AddMeshGovernance(o => o.Services["localhost"] = new ServiceOptions { Endpoints = { new EndpointOptions { Address = endpoint.Address.ToString() } } });
        }

        services.AddHttpClient("plain");
        await using var provider = services.BuildServiceProvider();
        var factory = provider.GetRequiredService<IHttpClientFactory>();
        var url = $"http://localhost:{direct.Port}/";

        using var governedResponse = await factory.CreateClient("governed").GetAsync(url).WaitAsync(TimeSpan.FromSeconds(30));
        using var plainResponse = await factory.CreateClient("plain").GetAsync(url).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal("endpoint", Assert.Single(governedResponse.Headers.GetValues("x-server")));
        Assert.Equal("direct", Assert.Single(plainResponse.Headers.GetValues("x-server")));
    }

    [Fact]
    public async Task HttpClientBuilderAddMeshGovernance_GovernsOnlyThatClient()
    {
        // "localhost" is the governed service name here, so an ungoverned client resolves it normally (no DNS needed).
        await using var direct = await LoopbackServer.StartAsync("direct");
        await using var endpoint = await LoopbackServer.StartAsync("endpoint");
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["MeshGovernance:Services:localhost:Endpoints:0"] = endpoint.Address.ToString(),
        }).Build());
        services.AddHttpClient("governed").AddMeshGovernance();
        services.AddHttpClient("plain");
        await using var provider = services.BuildServiceProvider();
        var factory = provider.GetRequiredService<IHttpClientFactory>();
        var url = $"http://localhost:{direct.Port}/";

        using var governed = factory.CreateClient("governed");
        using var plain = factory.CreateClient("plain");
        using var governedResponse = await governed.GetAsync(url).WaitAsync(TimeSpan.FromSeconds(30));
        using var plainResponse = await plain.GetAsync(url).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal("endpoint", Assert.Single(governedResponse.Headers.GetValues("x-server")));
        Assert.Equal("direct", Assert.Single(plainResponse.Headers.GetValues("x-server")));
    }

    [Fact]
    public async Task AddMeshGovernance_CodeFirst_Works()
    {
        await using var server = await LoopbackServer.StartAsync("a");
        var services = new ServiceCollection();
        services.AddMeshGovernance(options =>
        {
            var catalog = new ServiceOptions { LoadBalancer = new LoadBalancerOptions { Policy = "RoundRobin" } };
            catalog.Endpoints.Add(new EndpointOptions { Address = server.Address.ToString(), Weight = 2 });
            options.Services["catalog"] = catalog;
        });
        await using var provider = services.BuildServiceProvider();
        using var client = provider.GetRequiredService<IHttpClientFactory>().CreateClient();

        using var response = await client.GetAsync("http://catalog/").WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal("a", Assert.Single(response.Headers.GetValues("x-server")));
        Assert.True(provider.GetRequiredService<GovernanceRuntime>().TryGetService("catalog", out var service));
        Assert.Equal(2, service.Endpoints.All[0].Endpoint.Weight);
    }

    [Fact]
    public async Task TypedClient_IsGovernedByDefault()
    {
        await using var server = await LoopbackServer.StartAsync("a");
        await using var governed = Governed.Create(
            Governed.Service("catalog", null, server),
            services => services.AddHttpClient<CatalogClient>());

        var body = await governed.Services.GetRequiredService<CatalogClient>().GetAsync();

        Assert.Equal("a", body);
    }

    [Fact]
    public async Task GetAsync_NoAvailableEndpoint_FailsFastWithExceptionNamingService()
    {
        await using var server = await LoopbackServer.StartAsync("a");
        await using var governed = Governed.Create(Governed.Service("catalog", null, server));
        Assert.True(governed.Services.GetRequiredService<GovernanceRuntime>().TryGetService("catalog", out var service));
        service.Endpoints.All[0].SetAvailable(false);
        service.Refresh();

        var ex = await Assert.ThrowsAsync<NoAvailableEndpointException>(() => governed.Client.GetAsync("http://catalog/").WaitAsync(TimeSpan.FromSeconds(30)));

        Assert.Equal("catalog", ex.ServiceName);
        Assert.Equal("Service 'catalog' has no available endpoint: all 1 endpoints are unavailable", ex.Message);
        Assert.Equal(0, server.RequestCount);
    }

    public sealed class CatalogClient(HttpClient client)
    {
        public Task<string> GetAsync() => client.GetStringAsync("http://catalog/items").WaitAsync(TimeSpan.FromSeconds(30));
    }
}
