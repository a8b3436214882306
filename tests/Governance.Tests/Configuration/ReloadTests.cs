using System.Diagnostics;
using Governance.Configuration;
using Governance.Pipeline;
using Governance.Telemetry;
using Governance.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Governance.Tests.Configuration;

public sealed class ReloadTests
{
    /// <summary>
    /// Completes once <paramref name="condition"/> holds, checked now and after each options change. Subscribe before
    /// the edit. The runtime applies a reload in its own <c>OnChange</c> listener, which was subscribed first and so runs
    /// first; one edit on disk may reload more than once (the file watcher can see the write in parts), hence a check
    /// after every change rather than after the first. The wall-clock guard only turns a hang into a failure.
    /// </summary>
    private static async Task<bool> AfterReloadsAsync(IOptionsMonitor<GovernanceOptions> options, Func<bool> condition)
    {
        var changes = new SemaphoreSlim(0); // Not disposed: a change may still be delivered after unsubscribing.
        using var subscription = options.OnChange((_, _) => changes.Release());
        var started = Stopwatch.GetTimestamp();
        while (!condition())
        {
            var left = TimeSpan.FromSeconds(30) - Stopwatch.GetElapsedTime(started);
            if (left <= TimeSpan.Zero || !await changes.WaitAsync(left))
            {
                return false;
            }
        }

        return true;
    }

    [Fact]
    public async Task Reload_ValidEdit_TakesEffectWithoutRestart()
    {
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        await using var governed = Governed.Create(Governed.Service("catalog", "RoundRobin", a));
        Assert.Equal("a", await governed.GetServerAsync("http://catalog/"));

        governed.Configuration["MeshGovernance:Services:catalog:Endpoints:0"] = b.Address.ToString();
        governed.Configuration.Reload();

        Assert.Equal("b", await governed.GetServerAsync("http://catalog/"));
        Assert.Equal(1, a.RequestCount);
    }

    [Fact]
    public async Task Reload_PolicyAndWeightEdit_TakesEffect()
    {
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        await using var governed = Governed.Create(Governed.Service("catalog", "RoundRobin", a, b));
        var runtime = governed.Services.GetRequiredService<GovernanceRuntime>();

        governed.Configuration["MeshGovernance:Services:catalog:LoadBalancer:Policy"] = "Random";
        governed.Configuration["MeshGovernance:Services:catalog:Endpoints:1"] = null;
        governed.Configuration["MeshGovernance:Services:catalog:Endpoints:1:Address"] = b.Address.ToString();
        governed.Configuration["MeshGovernance:Services:catalog:Endpoints:1:Weight"] = "7";
        governed.Configuration.Reload();

        Assert.True(runtime.TryGetService("catalog", out var service));
        Assert.Equal("Random", service.Settings.Policy.Name);
        Assert.Equal(7, service.Endpoints.All.Single(e => e.Authority == b.Address.GetLeftPart(UriPartial.Authority)).Endpoint.Weight);
    }

    [Fact]
    public async Task Reload_WhileARequestIsInFlight_ItFinishesAndItsInFlightCountCarriesOver()
    {
        var held = new Resilience.HeldRequests();
        await using var a = await LoopbackServer.StartAsync("a", held.Handle);
        await using var governed = Governed.Create(Governed.Service("catalog", "LeastRequest", a));
        var runtime = governed.Services.GetRequiredService<GovernanceRuntime>();
        Assert.True(runtime.TryGetService("catalog", out var service));
        try
        {
            var call = governed.Client.GetAsync("http://catalog/items");
            await held.WaitForArrivalAsync();
            var before = service.Endpoints.All.Single();
            Assert.Equal(1, before.ActiveRequests);

            // A valid edit while the request is on the wire: the endpoint (same address) keeps its state and its count.
            governed.Configuration["MeshGovernance:Services:catalog:Endpoints:0"] = null;
            governed.Configuration["MeshGovernance:Services:catalog:Endpoints:0:Address"] = a.Address.ToString();
            governed.Configuration["MeshGovernance:Services:catalog:Endpoints:0:Weight"] = "5";
            governed.Configuration.Reload();
            var after = service.Endpoints.All.Single();
            Assert.Equal(5, after.Endpoint.Weight);
            Assert.Same(before, after);
            Assert.Equal(1, after.ActiveRequests);

            held.Release();
            using var response = await call.WaitAsync(TimeSpan.FromSeconds(30));
            response.EnsureSuccessStatusCode();
            Assert.Equal(0, after.ActiveRequests);
        }
        finally
        {
            held.Release();
        }
    }

    [Fact]
    public async Task Reload_WeightThenPolicyEdit_TrafficFollowsEachEdit()
    {
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        await using var governed = Governed.Create(Governed.Service("catalog", "RoundRobin", a, b));

        async Task<(int A, int B)> SendAsync(int count, string? key = null)
        {
            var (beforeA, beforeB) = (a.RequestCount, b.RequestCount);
            for (var i = 0; i < count; i++)
            {
                using var request = new HttpRequestMessage(HttpMethod.Get, "http://catalog/items");
                if (key is not null)
                {
                    request.Headers.Add("x-key", key);
                }

                using var response = await governed.Client.SendAsync(request);
                response.EnsureSuccessStatusCode();
            }

            return (a.RequestCount - beforeA, b.RequestCount - beforeB);
        }

        // Smooth weighted round robin is exact over whole cycles: 1:1, then 1:7 after the weight edit.
        Assert.Equal((20, 20), await SendAsync(40));
        governed.Configuration["MeshGovernance:Services:catalog:Endpoints:1"] = null;
        governed.Configuration["MeshGovernance:Services:catalog:Endpoints:1:Address"] = b.Address.ToString();
        governed.Configuration["MeshGovernance:Services:catalog:Endpoints:1:Weight"] = "7";
        governed.Configuration.Reload();
        Assert.Equal((10, 70), await SendAsync(80));

        // Then consistent hashing on a header: one key, one endpoint, where round robin would have used both.
        governed.Configuration["MeshGovernance:Services:catalog:LoadBalancer:Policy"] = "ConsistentHash";
        governed.Configuration["MeshGovernance:Services:catalog:LoadBalancer:HashHeader"] = "x-key";
        governed.Configuration.Reload();
        var sticky = await SendAsync(40, key: "user-42");
        Assert.True(sticky is (40, 0) or (0, 40), $"one key went to both endpoints: a={sticky.A} b={sticky.B}");
    }

    [Fact]
    public async Task Reload_EndpointRemovedWhileItsAttemptIsInFlight_FailedAttemptIsRetriedOnTheNewEndpoint()
    {
        // A rolling deploy: the only endpoint is replaced while a call waits on it, and then answers 503. The retry goes
        // to the new endpoint, and the caller sees its logical URI (the old endpoint is no longer one of the service's).
        var held = new Governance.Tests.Resilience.HeldRequests();
        await using var old = await LoopbackServer.StartAsync("old", held.Handle);
        await using var replacement = await LoopbackServer.StartAsync("new");
        var settings = Governed.Service("catalog", null, old);
        settings["Services:catalog:Retry:BaseDelay"] = "00:00:00";
        await using var governed = Governed.Create(settings);
        var logical = new Uri("http://catalog/items");
        using var request = new HttpRequestMessage(HttpMethod.Get, logical);
        var call = governed.Client.SendAsync(request);
        await held.WaitForArrivalAsync();

        governed.Configuration["MeshGovernance:Services:catalog:Endpoints:0"] = replacement.Address.ToString();
        governed.Configuration.Reload();
        held.Release(System.Net.HttpStatusCode.ServiceUnavailable);
        using var response = await call.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal("new", Assert.Single(response.Headers.GetValues("x-server")));
        Assert.Same(logical, request.RequestUri);
    }

    [Fact]
    public async Task Reload_InvalidEdit_IsLoggedAndLastGoodConfigurationStays()
    {
        await using var a = await LoopbackServer.StartAsync("a");
        var logs = new CapturingLoggerProvider();
        await using var governed = Governed.Create(
            Governed.Service("catalog", "RoundRobin", a),
            services => services.AddLogging(l => l.AddProvider(logs)));
        Assert.Equal("a", await governed.GetServerAsync("http://catalog/"));

        governed.Configuration["MeshGovernance:Services:catalog:LoadBalancer:Policy"] = "RoundRobbin";
        governed.Configuration.Reload();

        var rejected = Assert.Single(logs.Entries, e => e.EventId.Id == GovernanceEventIds.ConfigurationReloadRejected);
        Assert.Equal(LogLevel.Warning, rejected.Level);
        Assert.Contains("MeshGovernance:Services:catalog:LoadBalancer:Policy 'RoundRobbin' is not a known policy (RoundRobin, Random, LeastRequest, ConsistentHash)", rejected.Message, StringComparison.Ordinal);
        Assert.Equal("a", await governed.GetServerAsync("http://catalog/"));
        Assert.True(governed.Services.GetRequiredService<GovernanceRuntime>().TryGetService("catalog", out var service));
        Assert.Equal("RoundRobin", service.Settings.Policy.Name);

        // A later valid edit is applied again.
        governed.Configuration["MeshGovernance:Services:catalog:LoadBalancer:Policy"] = "Random";
        governed.Configuration.Reload();
        Assert.Equal("Random", service.Settings.Policy.Name);
    }

    [Fact]
    public async Task Reload_SectionVanishes_RejectedWithWarningAndLastGoodConfigurationStays()
    {
        // A deleted file (or one emptied by a parse error, which another source's reload then brings in) leaves no
        // MeshGovernance section: that is not taken for "govern nothing"; an explicit empty Services is.
        await using var a = await LoopbackServer.StartAsync("a");
        var logs = new CapturingLoggerProvider();
        var editable = new EditableConfiguration();
        editable.Change("MeshGovernance:Services:catalog:Endpoints:0", a.Address.ToString());
        await using var provider = BuildOver(editable, logs);
        var runtime = provider.GetRequiredService<GovernanceRuntime>();
        using var client = provider.GetRequiredService<IHttpClientFactory>().CreateClient();

        editable.Remove("MeshGovernance");

        var missing = Assert.Single(logs.Entries, e => e.EventId.Id == GovernanceEventIds.ConfigurationSectionMissing);
        Assert.Equal(LogLevel.Warning, missing.Level);
        Assert.Contains("last good configuration stays in force", missing.Message, StringComparison.Ordinal);
        Assert.True(runtime.TryGetService("catalog", out _));
        using (var response = await client.GetAsync("http://catalog/").WaitAsync(TimeSpan.FromSeconds(30)))
        {
            Assert.Equal("a", Assert.Single(response.Headers.GetValues("x-server")));
        }

        // An explicit empty Services does remove every service.
        editable.Change("MeshGovernance:Services", string.Empty);
        Assert.False(runtime.TryGetService("catalog", out _));
        Assert.Single(logs.Entries, e => e.EventId.Id == GovernanceEventIds.ConfigurationSectionMissing);
    }

    [Fact]
    public void Startup_SectionMisspelled_WarnsThatNoServiceIsGoverned()
    {
        var logs = new CapturingLoggerProvider();
        var editable = new EditableConfiguration();
        editable.Change("MeshGoverance:Services:catalog:Endpoints:0", "http://127.0.0.1:5001");
        using var provider = BuildOver(editable, logs);

        var runtime = provider.GetRequiredService<GovernanceRuntime>();

        Assert.Empty(runtime.Services);
        var missing = Assert.Single(logs.Entries, e => e.EventId.Id == GovernanceEventIds.ConfigurationSectionMissing);
        Assert.Contains("no service is governed", missing.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Startup_ExplicitEmptyServicesInJson_NothingGovernedWithoutWarning()
    {
        // What README tells users to write to govern nothing: the section exists (its Services key does), so it is not
        // taken for a missing one.
        var logs = new CapturingLoggerProvider();
        using var json = new MemoryStream("{ \"MeshGovernance\": { \"Services\": {} } }"u8.ToArray());
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(new ConfigurationBuilder().AddJsonStream(json).Build());
        services.AddLogging(l => l.AddProvider(logs));
        services.AddMeshGovernance();
        using var provider = services.BuildServiceProvider();

        Assert.Empty(provider.GetRequiredService<GovernanceRuntime>().Services);
        Assert.DoesNotContain(logs.Entries, e => e.EventId.Id == GovernanceEventIds.ConfigurationSectionMissing);
    }

    [Fact]
    public void Reload_CodeConfigurationWithoutAnySection_NoWarningAndNothingRejected()
    {
        // Services configured in code beside a parameterless AddMeshGovernance whose section does not exist: they are
        // governed (no "nothing is governed" warning), and a reload of the configuration is not taken for a section
        // that vanished (there never was one).
        var logs = new CapturingLoggerProvider();
        var editable = new EditableConfiguration();
        editable.Change("Other:Key", "1");
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(new ConfigurationBuilder().Add(editable).Build());
        services.AddLogging(l => l.AddProvider(logs));
        services.AddMeshGovernance();
        services.AddMeshGovernance(o => o.Services["catalog"] = new ServiceOptions { Endpoints = { new EndpointOptions { Address = "http://127.0.0.1:5001" } } });
        using var provider = services.BuildServiceProvider();
        var runtime = provider.GetRequiredService<GovernanceRuntime>();

        editable.Change("Other:Key", "2");

        Assert.True(runtime.TryGetService("catalog", out _));
        Assert.DoesNotContain(logs.Entries, e => e.EventId.Id == GovernanceEventIds.ConfigurationSectionMissing);
    }

    private static ServiceProvider BuildOver(EditableConfiguration editable, CapturingLoggerProvider logs)
    {
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(new ConfigurationBuilder().Add(editable).Build());
        services.AddLogging(l => l.AddProvider(logs));
        services.AddMeshGovernance();
        return services.BuildServiceProvider();
    }

    [Fact]
    public async Task Reload_ConfigurationThatCannotBeRead_IsLoggedAndLastGoodConfigurationStays()
    {
        await using var a = await LoopbackServer.StartAsync("a");
        var logs = new CapturingLoggerProvider();
        var failing = new FailingConfigurationSource();
        var configuration = new ConfigurationBuilder()
            .AddInMemoryCollection(new Dictionary<string, string?> { ["MeshGovernance:Services:catalog:Endpoints:0"] = a.Address.ToString() })
            .Add(failing)
            .Build();
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(configuration);
        services.AddLogging(l => l.AddProvider(logs));
        services.AddMeshGovernance();
        await using var provider = services.BuildServiceProvider();
        var runtime = provider.GetRequiredService<GovernanceRuntime>();

        // The provider now fails while its keys are enumerated (what a broken custom provider does), and reloads.
        failing.Provider.Fail = true;
        configuration.Reload();

        var rejected = Assert.Single(logs.Entries, e => e.EventId.Id == GovernanceEventIds.ConfigurationReloadRejected);
        Assert.Contains("MeshGovernance could not be read: the provider broke", rejected.Message, StringComparison.Ordinal);
        Assert.True(runtime.TryGetService("catalog", out var service));
        Assert.Equal(a.Address.GetLeftPart(UriPartial.Authority), Assert.Single(service.Endpoints.All).Authority);
    }

    private sealed class FailingConfigurationSource : IConfigurationSource
    {
        public FailingConfigurationProvider Provider { get; } = new();

        public IConfigurationProvider Build(IConfigurationBuilder builder) => Provider;
    }

    private sealed class FailingConfigurationProvider : ConfigurationProvider
    {
        public bool Fail { get; set; }

        public override IEnumerable<string> GetChildKeys(IEnumerable<string> earlierKeys, string? parentPath) =>
            Fail && parentPath is not null && parentPath.StartsWith("MeshGovernance", StringComparison.OrdinalIgnoreCase)
                ? throw new InvalidOperationException("the provider broke")
                : base.GetChildKeys(earlierKeys, parentPath);
    }

    [Fact]
    public async Task Reload_MalformedValue_IsLoggedAndLastGoodConfigurationStays()
    {
        await using var a = await LoopbackServer.StartAsync("a");
        var logs = new CapturingLoggerProvider();
        await using var governed = Governed.Create(
            Governed.Service("catalog", null, a),
            services => services.AddLogging(l => l.AddProvider(logs)));

        governed.Configuration["MeshGovernance:Services:catalog:Endpoints:0"] = null;
        governed.Configuration["MeshGovernance:Services:catalog:Endpoints:0:Address"] = a.Address.ToString();
        governed.Configuration["MeshGovernance:Services:catalog:Endpoints:0:Weight"] = "lots";
        governed.Configuration.Reload();

        var rejected = Assert.Single(logs.Entries, e => e.EventId.Id == GovernanceEventIds.ConfigurationReloadRejected);
        Assert.Contains("MeshGovernance:Services:catalog:Endpoints:0:Weight 'lots' is not a whole number", rejected.Message, StringComparison.Ordinal);
        Assert.Equal("a", await governed.GetServerAsync("http://catalog/"));
    }

    [Fact]
    public async Task Reload_WhileRequestInFlight_DoesNotDropIt()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var arrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var slow = await LoopbackServer.StartAsync("slow", async context =>
        {
            arrived.TrySetResult();
            await release.Task.WaitAsync(TimeSpan.FromSeconds(30));
            await context.Response.WriteAsync("slow");
        });
        await using var fast = await LoopbackServer.StartAsync("fast");
        await using var governed = Governed.Create(Governed.Service("catalog", null, slow));

        var inFlight = governed.GetServerAsync("http://catalog/held");
        await arrived.Task.WaitAsync(TimeSpan.FromSeconds(30));
        governed.Configuration["MeshGovernance:Services:catalog:Endpoints:0"] = fast.Address.ToString();
        governed.Configuration.Reload();

        Assert.Equal("fast", await governed.GetServerAsync("http://catalog/new"));
        release.SetResult();
        Assert.Equal("slow", await inFlight);
    }

    [Fact]
    public async Task Reload_JsonFileEditedOnDisk_TakesEffect()
    {
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        var directory = Directory.CreateTempSubdirectory("meshgovernance-reload-");
        try
        {
            var file = Path.Combine(directory.FullName, "appsettings.json");
            await File.WriteAllTextAsync(file, Json(a));
            var configuration = new ConfigurationBuilder().AddJsonFile(file, optional: false, reloadOnChange: true).Build();
            var services = new ServiceCollection();
            services.AddSingleton<IConfiguration>(configuration);
            services.AddMeshGovernance();
            await using var provider = services.BuildServiceProvider();
            using var client = provider.GetRequiredService<IHttpClientFactory>().CreateClient();
            var runtime = provider.GetRequiredService<GovernanceRuntime>();
            Assert.True(runtime.TryGetService("catalog", out var service));
            var reloaded = AfterReloadsAsync(
                provider.GetRequiredService<IOptionsMonitor<GovernanceOptions>>(),
                () => service.Endpoints.All.Length == 1 && service.Endpoints.All[0].Authority == b.Address.GetLeftPart(UriPartial.Authority));

            // Replaced in one step (a whole new file renamed over it), so the watcher never reads a half-written file.
            var next = Path.Combine(directory.FullName, "appsettings.next.json");
            await File.WriteAllTextAsync(next, Json(b));
            File.Move(next, file, overwrite: true);

            Assert.True(await reloaded, "the edit on disk was not applied");
            using var response = await client.GetAsync("http://catalog/").WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal("b", Assert.Single(response.Headers.GetValues("x-server")));
        }
        finally
        {
            directory.Delete(recursive: true);
        }

        static string Json(LoopbackServer server) =>
            $$"""{ "MeshGovernance": { "Services": { "catalog": { "Endpoints": [ "{{server.Address}}" ] } } } }""";
    }
}

public sealed class ResilienceReloadTests
{
    [Fact]
    public async Task Reload_ResilienceKeys_TakeEffectAndKeepUnchangedState()
    {
        await using var failing = await LoopbackServer.StartAsync("failing", c => { c.Response.StatusCode = 503; return Task.CompletedTask; });
        var settings = Governed.Service("catalog", null, failing);
        settings["Services:catalog:Retry:MaxRetries"] = "0";
        settings["Services:catalog:RateLimit:PermitsPerSecond"] = "1000";
        await using var governed = Governed.Create(settings);
        Assert.True(governed.Services.GetRequiredService<GovernanceRuntime>().TryGetService("catalog", out var service));
        var limiter = service.Policy.Limiter;
        var breaker = service.Endpoints.All[0].Breaker;

        using (var response = await governed.Client.GetAsync("http://catalog/").WaitAsync(TimeSpan.FromSeconds(30)))
        {
            Assert.Equal(1, failing.RequestCount);
        }

        governed.Configuration["MeshGovernance:Services:catalog:Retry:MaxRetries"] = "2";
        governed.Configuration["MeshGovernance:Services:catalog:Retry:BaseDelay"] = "00:00:00";
        governed.Configuration.Reload();
        using (var response = await governed.Client.GetAsync("http://catalog/").WaitAsync(TimeSpan.FromSeconds(30)))
        {
            Assert.Equal(4, failing.RequestCount);
        }

        // Unchanged parts keep their state: the same limiter (a reload does not refill it) and the same breaker.
        Assert.Same(limiter, service.Policy.Limiter);
        Assert.Same(breaker, service.Endpoints.All[0].Breaker);

        governed.Configuration["MeshGovernance:Services:catalog:RateLimit:PermitsPerSecond"] = "5";
        governed.Configuration["MeshGovernance:Services:catalog:CircuitBreaker:Enabled"] = "false";
        governed.Configuration.Reload();
        Assert.NotSame(limiter, service.Policy.Limiter);
        Assert.Null(service.Endpoints.All[0].Breaker);
    }
}
