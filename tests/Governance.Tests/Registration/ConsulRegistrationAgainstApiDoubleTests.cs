using System.Text.Json.Nodes;
using Governance.Registration;
using Governance.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using static Governance.Tests.Discovery.ConsulTestKit;

namespace Governance.Tests.Registration;

/// <summary>
/// Self-registration against <see cref="ConsulApiDouble"/> inside a real generic host: register on start, TTL
/// heartbeats, re-registration after an agent restart, deregistration on stop, failures. Waits run on
/// <see cref="FakeTimeProvider"/>.
/// </summary>
public sealed class ConsulRegistrationAgainstApiDoubleTests
{
    private static readonly string Machine = Environment.MachineName.ToLowerInvariant();

    private static Dictionary<string, string?> Settings(Uri consul) => new()
    {
        ["MeshGovernance:Application:Name"] = "orders",
        ["MeshGovernance:Consul:Address"] = consul.ToString(),
        ["MeshGovernance:Registration:Address"] = "10.0.0.5",
        ["MeshGovernance:Registration:Port"] = "8080",
    };

    private static TestHost BuildHost(Dictionary<string, string?> settings, FakeTimeProvider time, CapturingLoggerProvider? logs = null, Func<string?>? hostAddress = null, Action<IServiceCollection>? configure = null)
    {
        var builder = Host.CreateEmptyApplicationBuilder(new HostApplicationBuilderSettings());
        builder.Configuration.AddInMemoryCollection(settings);
        builder.Services.AddSingleton<TimeProvider>(time);
        if (logs is not null)
        {
            builder.Logging.AddProvider(logs);
            builder.Logging.SetMinimumLevel(LogLevel.Debug);
        }

        builder.Services.AddMeshGovernance();
        configure?.Invoke(builder.Services);
        var host = builder.Build();
        var registration = host.Services.GetServices<IHostedService>().OfType<ConsulRegistrationService>().Single();
        registration.Environment = static _ => null; // Whatever the machine running the tests has set.
        registration.HostAddress = hostAddress ?? (static () => null);
        return new TestHost(host);
    }

    /// <summary>A host registered with a TTL check of 30 s (heartbeats every 10 s), started.</summary>
    private static async Task<TestHost> StartWithTtlAsync(ConsulApiDouble consul, FakeTimeProvider time, CapturingLoggerProvider? logs = null)
    {
        var settings = Settings(consul.Address);
        settings["MeshGovernance:Registration:Check:Ttl"] = "00:00:30";
        var host = BuildHost(settings, time, logs);
        await host.StartAsync().WaitAsync(Guard);
        return host;
    }

    [Fact]
    public async Task StartAsync_HttpCheck_RegistersInstanceWithTagsMetadataWeightsAndCheck()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        var settings = Settings(consul.Address);
        settings["MeshGovernance:Application:Zone"] = "eu-west-1a";
        settings["MeshGovernance:Registration:Tags:0"] = "primary";
        settings["MeshGovernance:Registration:Tags:1"] = "v2";
        settings["MeshGovernance:Registration:Metadata:version"] = "2.1";
        settings["MeshGovernance:Registration:Weights:Passing"] = "10";
        await using var host = BuildHost(settings, new FakeTimeProvider());

        await host.StartAsync().WaitAsync(Guard);

        var request = Assert.Single(consul.Requests);
        Assert.Equal("PUT", request.Method);
        Assert.Equal("/v1/agent/service/register?replace-existing-checks=true", request.PathAndQuery);
        Assert.Equal("application/json; charset=utf-8", request.Headers["Content-Type"]);
        var body = JsonNode.Parse(request.Body)!.AsObject();
        var id = $"orders-{Machine}-8080";
        Assert.Equal(
            $$$"""{"ID":"{{{id}}}","Name":"orders","Tags":["primary","v2"],"Address":"10.0.0.5","Port":8080,"Meta":{"version":"2.1","zone":"eu-west-1a"},"Weights":{"Passing":10,"Warning":1},"Check":{"CheckID":"service:{{{id}}}","Name":"Service 'orders' HTTP check","HTTP":"http://10.0.0.5:8080/health","Method":"GET","Interval":"10s","Timeout":"5s","DeregisterCriticalServiceAfter":"1800s"}}""".AsJson(),
            body.ToJsonString());
        await host.StopAsync().WaitAsync(Guard);
    }

    [Fact]
    public async Task StartAsync_RegistrationBody_UsesOnlyFieldsOfTheDocumentedSamples()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        var settings = Settings(consul.Address);
        settings["MeshGovernance:Registration:Tags:0"] = "primary";
        await using var httpHost = BuildHost(settings, new FakeTimeProvider());
        settings["MeshGovernance:Registration:Check:Ttl"] = "00:00:30";
        settings["MeshGovernance:Registration:Port"] = "8081";
        await using var ttlHost = BuildHost(settings, new FakeTimeProvider());
        await httpHost.StartAsync().WaitAsync(Guard);
        await ttlHost.StartAsync().WaitAsync(Guard);

        var service = JsonNode.Parse(File.ReadAllText(ConsulApiDouble.FixturePath("agent-service-register.json")))!.AsObject();
        var check = JsonNode.Parse(File.ReadAllText(ConsulApiDouble.FixturePath("agent-check-register.json")))!.AsObject();
        string[] documentedInText = ["CheckID", "TTL", "Status"]; // agent/check.mdx describes them; no sample carries them.

        // Both hosts registered (nothing else was sent): one body with an HTTP check, one with a TTL check.
        Assert.Equal(["PUT /v1/agent/service/register", "PUT /v1/agent/service/register"], consul.Requests.Select(r => $"{r.Method} {r.Path}"));
        var bodies = consul.Requests.Select(r => JsonNode.Parse(r.Body)!.AsObject()).ToList();
        Assert.Single(bodies, b => b["Check"]!.AsObject().ContainsKey("HTTP"));
        Assert.Single(bodies, b => b["Check"]!.AsObject().ContainsKey("TTL"));
        foreach (var body in bodies)
        {
            Assert.All(body.Select(p => p.Key), key => Assert.True(service.ContainsKey(key), key));
            Assert.All(body["Check"]!.AsObject().Select(p => p.Key), key => Assert.True(check.ContainsKey(key) || service["Check"]!.AsObject().ContainsKey(key) || documentedInText.Contains(key), key));
        }

        await httpHost.StopAsync().WaitAsync(Guard);
        await ttlHost.StopAsync().WaitAsync(Guard);
    }

    [Fact]
    public async Task StartAsync_TtlCheck_RegistersPassingAndHeartbeatsEveryThirdOfTtl()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        var time = new ObservedTimeProvider();
        await using var host = await StartWithTtlAsync(consul, time);
        var id = $"orders-{Machine}-8080";
        var check = JsonNode.Parse(consul.Requests[0].Body)!["Check"]!.ToJsonString();
        Assert.Equal($$"""{"CheckID":"service:{{id}}","Name":"Service 'orders' TTL check","TTL":"30s","Status":"passing","DeregisterCriticalServiceAfter":"1800s"}""".AsJson(), check);
        Assert.Equal("passing", consul.GetRegistration(id)!.CheckStatus);

        var started = time.GetTimestamp();
        await AdvanceUntilAsync(time, consul.WaitForAsync(r => r.Count(q => q.Path == $"/v1/agent/check/pass/service:{id}") == 1));
        var first = time.GetElapsedTime(started);
        await AdvanceUntilAsync(time, consul.WaitForAsync(r => r.Count(q => q.Path == $"/v1/agent/check/pass/service:{id}") == 2));
        var second = time.GetElapsedTime(started);
        await consul.WaitUntilAsync(c => c.GetRegistration(id)?.Heartbeats >= 2); // The second heartbeat has arrived; wait until it is applied.

        Assert.InRange(first, TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(12));
        Assert.InRange(second - first, TimeSpan.FromSeconds(9), TimeSpan.FromSeconds(12));
        Assert.Equal(2, consul.GetRegistration(id)!.Heartbeats);
        await host.StopAsync().WaitAsync(Guard);
    }

    [Fact]
    public async Task Heartbeat_AgentHangs_NextHeartbeatStartsOnScheduleNotAfterTheHungOne()
    {
        // TTL 30 s: heartbeats every 10 s, each bounded by 5 s, the next 5 s after a failed one's start. One hung heartbeat
        // used to hold the next back by its 10 s request timeout plus a full interval (the next pass 30 s after the last
        // one that arrived: the TTL, so the instance went critical).
        await using var consul = await ConsulApiDouble.StartAsync();
        var time = new ObservedTimeProvider();
        var logs = new CapturingLoggerProvider();
        await using var host = await StartWithTtlAsync(consul, time, logs);
        var pass = $"/v1/agent/check/pass/service:orders-{Machine}-8080";
        consul.Hang(r => r.Path == pass);
        try
        {
            await time.WaitForDelayAsync().WaitAsync(Guard);
            time.Advance(TimeSpan.FromSeconds(10));
            await consul.WaitForAsync(r => r.Count(q => q.Path == pass) == 1).WaitAsync(Guard);

            // 15 s after registration: the hung heartbeat has had its 5 s, and the next one goes out at once.
            time.Advance(TimeSpan.FromSeconds(5));
            await consul.WaitForAsync(r => r.Count(q => q.Path == pass) == 2).WaitAsync(Guard);
            Assert.Contains(logs.Entries, e => e.EventId.Id == 1603 && e.Message.Contains("did not answer the heartbeat within 00:00:05", StringComparison.Ordinal));
        }
        finally
        {
            consul.Recover();
        }

        await host.StopAsync().WaitAsync(Guard);
    }

    [Fact]
    public async Task Heartbeat_AgentAnswers500NoLeader_RetriedNotTakenForALostRegistrationAndStillDeregistered()
    {
        // A 500 that is not "unknown check" (no cluster leader while the agent resolves a token, say) says nothing about
        // the registration: a failed heartbeat, retried; and the instance the agent still holds is deregistered on stop.
        await using var consul = await ConsulApiDouble.StartAsync();
        var time = new ObservedTimeProvider();
        var logs = new CapturingLoggerProvider();
        await using var host = await StartWithTtlAsync(consul, time, logs);
        var id = $"orders-{Machine}-8080";

        consul.FailWith(500, "rpc error making call: No cluster leader");
        await AdvanceUntilAsync(time, logs.WaitForAsync(e => e.EventId.Id == 1603));
        consul.Recover();
        await host.StopAsync().WaitAsync(Guard);

        Assert.DoesNotContain(logs.Entries, e => e.EventId.Id == 1602);
        Assert.Single(consul.Requests, r => r.Path == "/v1/agent/service/register");
        Assert.Single(consul.Requests, r => r.Path == $"/v1/agent/service/deregister/{id}");
        Assert.Null(consul.GetRegistration(id));
    }

    [Fact]
    public async Task Heartbeat_AgentRestarted_ReRegistersAndHeartbeatsAgain()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        var time = new ObservedTimeProvider();
        var logs = new CapturingLoggerProvider();
        await using var host = await StartWithTtlAsync(consul, time, logs);
        var id = $"orders-{Machine}-8080";

        consul.RestartAgent();
        Assert.Null(consul.GetRegistration(id));
        await AdvanceUntilAsync(time, consul.WaitForAsync(r => r.Count(q => q.Path == "/v1/agent/service/register") == 2));
        await AdvanceUntilAsync(time, consul.WaitUntilAsync(c => c.GetRegistration(id)?.Heartbeats == 1));

        Assert.Equal("passing", consul.GetRegistration(id)!.CheckStatus);
        var lost = Assert.Single(logs.Entries, e => e.EventId.Id == 1602);
        Assert.Equal(LogLevel.Warning, lost.Level);
        Assert.Contains($"with 500 Internal Server Error: \"CheckID \"service:{id}\" does not have associated TTL\"", lost.Message, StringComparison.Ordinal);
        Assert.Equal(2, logs.Entries.Count(e => e.EventId.Id == 1600));
        await host.StopAsync().WaitAsync(Guard);
    }

    [Fact]
    public async Task Verify_AgentRestartedWithHttpCheck_ReRegistersWithinThirtySeconds()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        var time = new ObservedTimeProvider();
        await using var host = BuildHost(Settings(consul.Address), time);
        await host.StartAsync().WaitAsync(Guard);
        var id = $"orders-{Machine}-8080";

        consul.RestartAgent();

        // Fake time moves only once the registration loop waits on it. Timer callbacks run inside Advance, so right after
        // advancing 29 s the count of fired timers says for certain that nothing was due: no look-up has started.
        await time.WaitForDelayAsync().WaitAsync(Guard);
        var fired = time.TimersFired();
        time.Advance(TimeSpan.FromSeconds(29));
        Assert.Equal(fired, time.TimersFired());
        Assert.Null(consul.GetRegistration(id));
        Assert.Single(consul.Requests);

        // At 30 s the look-up runs, finds the instance gone and registers it again; fake time stays put meanwhile.
        var reRegistered = consul.WaitUntilAsync(c => c.GetRegistration(id) is not null);
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(fired + 1, time.TimersFired());
        await reRegistered;

        Assert.NotNull(consul.GetRegistration(id));
        Assert.Equal(["PUT /v1/agent/service/register", $"GET /v1/agent/service/{id}", "PUT /v1/agent/service/register"], consul.Requests.Select(r => $"{r.Method} {r.Path}"));
        await host.StopAsync().WaitAsync(Guard);
    }

    [Fact]
    public async Task StopAsync_Registered_Deregisters()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        var logs = new CapturingLoggerProvider();
        await using var host = BuildHost(Settings(consul.Address), new FakeTimeProvider(), logs);
        await host.StartAsync().WaitAsync(Guard);
        var id = $"orders-{Machine}-8080";
        Assert.NotNull(consul.GetRegistration(id));

        await host.StopAsync().WaitAsync(Guard);

        Assert.Null(consul.GetRegistration(id));
        Assert.Equal($"/v1/agent/service/deregister/{id}", consul.Requests[^1].Path);
        Assert.Equal("PUT", consul.Requests[^1].Method);
        Assert.Contains(logs.Entries, e => e.EventId.Id == 1604 && e.Level == LogLevel.Information);
    }

    [Fact]
    public async Task StopAsync_RegisterRequestInFlight_DeregistersAnyway()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        var time = new ObservedTimeProvider();
        var logs = new CapturingLoggerProvider();
        await using var host = BuildHost(Settings(consul.Address), time, logs);
        await host.StartAsync().WaitAsync(Guard);
        var id = $"orders-{Machine}-8080";

        // The agent forgets the instance; the 30 s look-up finds it gone and registers it again, and that request gets no
        // answer (a stuck agent may still apply it).
        consul.RestartAgent();
        consul.Hang(r => r.Path == "/v1/agent/service/register");
        await AdvanceUntilAsync(time, consul.WaitForAsync(r => r.Count(q => q.Path == "/v1/agent/service/register") == 2));

        // Shutdown cancels it; the instance is deregistered all the same. The agent recovers meanwhile: it never applied
        // the cancelled request, so it answers 404, which is not a failure.
        var stopping = host.StopAsync();
        await consul.WaitForAsync(r => r[^1].Path == $"/v1/agent/service/deregister/{id}");
        await stopping.WaitAsync(Guard);

        Assert.Equal("PUT", consul.Requests[^1].Method);
        Assert.Null(consul.GetRegistration(id));
        Assert.Contains(logs.Entries, e => e.EventId.Id == 1606 && e.Level == LogLevel.Debug);
        Assert.DoesNotContain(logs.Entries, e => e.EventId.Id == 1605);
    }

    [Fact]
    public async Task Reload_RegistrationChanged_WarnsItIsReadOnceAndKeepsTheRegistration()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        var logs = new CapturingLoggerProvider();
        await using var host = BuildHost(Settings(consul.Address), new FakeTimeProvider(), logs);
        await host.StartAsync().WaitAsync(Guard);
        var configuration = (IConfigurationRoot)host.Services.GetRequiredService<IConfiguration>();
        var registrations = consul.Requests.Count(r => r.Path == "/v1/agent/service/register");

        // An edit elsewhere says nothing about registration; an edit of it is not applied, and says so.
        configuration["MeshGovernance:Defaults:Retry:MaxRetries"] = "1";
        configuration.Reload();
        Assert.DoesNotContain(logs.Entries, e => e.EventId.Id == 1607);
        configuration["MeshGovernance:Registration:Tags:0"] = "canary";
        configuration.Reload();

        var warning = Assert.Single(logs.Entries, e => e.EventId.Id == 1607);
        Assert.Equal(LogLevel.Warning, warning.Level);
        Assert.Equal($"MeshGovernance:Registration changed, but registration is read once, when the host starts: instance orders-{Machine}-8080 stays registered as it was until the next start", warning.Message);
        Assert.Equal(registrations, consul.Requests.Count(r => r.Path == "/v1/agent/service/register"));
        await host.StopAsync().WaitAsync(Guard);
    }

    [Fact]
    public async Task DisposeAsync_HostStartFailedAfterRegistering_Deregisters()
    {
        // Another service's start fails after this instance registered: the host never stops gracefully, it is disposed.
        await using var consul = await ConsulApiDouble.StartAsync();
        var logs = new CapturingLoggerProvider();
        var host = BuildHost(Settings(consul.Address), new FakeTimeProvider(), logs, configure: s => s.AddHostedService<FailingToStart>());
        var id = $"orders-{Machine}-8080";
        await Assert.ThrowsAsync<InvalidOperationException>(() => host.StartAsync().WaitAsync(Guard));
        Assert.NotNull(consul.GetRegistration(id));

        await host.DisposeAsync().AsTask().WaitAsync(Guard);

        Assert.Null(consul.GetRegistration(id));
        Assert.Equal($"PUT /v1/agent/service/deregister/{id}", $"{consul.Requests[^1].Method} {consul.Requests[^1].Path}");
        Assert.Single(logs.Entries, e => e.EventId.Id == 1604);
    }

    [Fact]
    public async Task DisposeAsync_AfterGracefulStop_DoesNotDeregisterAgain()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        var host = BuildHost(Settings(consul.Address), new FakeTimeProvider());
        await host.StartAsync().WaitAsync(Guard);
        await host.StopAsync().WaitAsync(Guard);
        var requests = consul.Requests.Count;

        await host.DisposeAsync().AsTask().WaitAsync(Guard);

        Assert.Equal(requests, consul.Requests.Count);
    }

    private sealed class FailingToStart : IHostedLifecycleService
    {
        public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StartedAsync(CancellationToken cancellationToken) => throw new InvalidOperationException("another service failed to start");

        public Task StoppingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }

    [Fact]
    public async Task StartAsync_ConsulUnreachableWithFailFast_HostDoesNotStart()
    {
        // A port held bound without listening for the whole test: refused, and no parallel test's server can take it.
        using var unreachable = new RefusingEndpoint();
        var settings = Settings(unreachable.Address);
        settings["MeshGovernance:Registration:FailFast"] = "true";
        await using var host = BuildHost(settings, new FakeTimeProvider());

        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => host.StartAsync().WaitAsync(Guard));

        Assert.StartsWith($"MeshGovernance could not register instance 'orders-{Machine}-8080' of service 'orders' in Consul, and MeshGovernance:Registration:FailFast is true, so the host does not start. Consul at {settings["MeshGovernance:Consul:Address"]!.TrimEnd('/')} could not be reached for the registration of instance 'orders-{Machine}-8080' of service 'orders': ", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task StartAsync_ConsulFailsWithoutFailFast_StartsAndRegistersOnceConsulAnswers()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.FailWith(500, "rpc error making call: No cluster leader");
        var time = new ObservedTimeProvider();
        var logs = new CapturingLoggerProvider();
        await using var host = BuildHost(Settings(consul.Address), time, logs);

        await host.StartAsync().WaitAsync(Guard);

        var error = Assert.Single(logs.Entries, e => e.EventId.Id == 1601);
        Assert.Equal(LogLevel.Error, error.Level);
        Assert.Equal(
            $"Could not register instance orders-{Machine}-8080 of service orders in Consul; retrying in the background (set MeshGovernance:Registration:FailFast to true to stop the host instead): Consul at {consul.Address.ToString().TrimEnd('/')} answered the registration of instance 'orders-{Machine}-8080' of service 'orders' with 500 Internal Server Error: \"rpc error making call: No cluster leader\"",
            error.Message);

        consul.Recover();
        await AdvanceUntilAsync(time, logs.WaitForAsync(e => e.EventId.Id == 1600));
        Assert.NotNull(consul.GetRegistration($"orders-{Machine}-8080"));
        Assert.Single(logs.Entries, e => e.EventId.Id == 1600);
        await host.StopAsync().WaitAsync(Guard);
    }

    [Fact]
    public async Task StartAsync_TokenWithoutWritePermission_403ReportedWithPermissionNeeded()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.EnableAcl("admin");
        consul.AddReadOnlyToken("reader");
        var settings = Settings(consul.Address);
        settings["MeshGovernance:Consul:Token"] = "reader";
        settings["MeshGovernance:Registration:FailFast"] = "true";
        await using var host = BuildHost(settings, new FakeTimeProvider());

        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => host.StartAsync().WaitAsync(Guard));

        Assert.EndsWith($"refused the registration of instance 'orders-{Machine}-8080' of service 'orders' with 403 Forbidden: \"Permission denied\". Check the ACL token in MeshGovernance:Consul:Token (set; its value is not shown): it needs service:write on 'orders'", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("reader", ex.Message, StringComparison.Ordinal);
        Assert.Equal("reader", Assert.Single(consul.Requests).Token);
    }

    [Fact]
    public async Task StartAsync_AddressAndPortFromUrls_RegistersListeningAddress()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        var settings = Settings(consul.Address);
        settings.Remove("MeshGovernance:Registration:Address");
        settings.Remove("MeshGovernance:Registration:Port");
        settings["MeshGovernance:Registration:Enabled"] = "true";
        settings["urls"] = "https://localhost:5124;http://localhost:5123";
        await using var host = BuildHost(settings, new FakeTimeProvider());

        await host.StartAsync().WaitAsync(Guard);

        var body = JsonNode.Parse(Assert.Single(consul.Requests).Body)!;
        Assert.Equal($"orders-{Machine}-5123", body["ID"]!.GetValue<string>());
        Assert.Equal("127.0.0.1", body["Address"]!.GetValue<string>());
        Assert.Equal(5123, body["Port"]!.GetValue<int>());
        Assert.Equal("http://127.0.0.1:5123/health", body["Check"]!["HTTP"]!.GetValue<string>());
        await host.StopAsync().WaitAsync(Guard);
    }

    [Fact]
    public async Task StartAsync_WildcardKestrelEndpoint_RegistersHostAddressAndHttpsMeta()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        var settings = Settings(consul.Address);
        settings.Remove("MeshGovernance:Registration:Address");
        settings.Remove("MeshGovernance:Registration:Port");
        settings["MeshGovernance:Registration:Enabled"] = "true";
        settings["Kestrel:Endpoints:Https:Url"] = "https://*:8443";
        settings["urls"] = "http://localhost:5000";
        await using var host = BuildHost(settings, new FakeTimeProvider(), hostAddress: static () => "192.0.2.10");

        await host.StartAsync().WaitAsync(Guard);

        var body = JsonNode.Parse(Assert.Single(consul.Requests).Body)!;
        Assert.Equal("192.0.2.10", body["Address"]!.GetValue<string>());
        Assert.Equal(8443, body["Port"]!.GetValue<int>());
        Assert.Equal("true", body["Meta"]!["secure"]!.GetValue<string>());
        Assert.Equal("https://192.0.2.10:8443/health", body["Check"]!["HTTP"]!.GetValue<string>());
        await host.StopAsync().WaitAsync(Guard);
    }

    [Theory]
    [InlineData(null, "MeshGovernance:Registration:Port is not set and the port this application listens on was not found (configuration keys Kestrel:Endpoints:*:Url, urls, http_ports, https_ports and environment variables ASPNETCORE_URLS, DOTNET_URLS, ASPNETCORE_HTTP_PORTS, DOTNET_HTTP_PORTS, ASPNETCORE_HTTPS_PORTS, DOTNET_HTTPS_PORTS): set MeshGovernance:Registration:Port")]
    [InlineData("http://127.0.0.1:0", "MeshGovernance:Registration:Port is not set and this application listens on 'http://127.0.0.1:0' (configuration key urls), whose port 0 is chosen by the operating system at start: set MeshGovernance:Registration:Port")]
    [InlineData("http://*:8080", "MeshGovernance:Registration:Address is not set and this application listens on every interface ('http://*:8080', configuration key urls), but no active non-loopback IPv4 address was found: set MeshGovernance:Registration:Address")]
    public async Task StartAsync_ListeningAddressUnusable_HostStartFailsNamingTheKey(string? urls, string message)
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        var settings = Settings(consul.Address);
        settings.Remove("MeshGovernance:Registration:Address");
        settings.Remove("MeshGovernance:Registration:Port");
        settings["MeshGovernance:Registration:Tags:0"] = "x";
        settings["urls"] = urls;
        await using var host = BuildHost(settings, new FakeTimeProvider());

        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => host.StartAsync().WaitAsync(Guard));

        Assert.Equal(message, ex.Message);
        Assert.Empty(consul.Requests);
    }

    [Fact]
    public async Task StartAsync_NoRegistrationSection_SendsNothing()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        var settings = Settings(consul.Address);
        settings.Remove("MeshGovernance:Registration:Address");
        settings.Remove("MeshGovernance:Registration:Port");
        await using var host = BuildHost(settings, new FakeTimeProvider());

        await host.StartAsync().WaitAsync(Guard);
        await host.StopAsync().WaitAsync(Guard);

        Assert.Empty(consul.Requests);
    }

    [Fact]
    public async Task StartAsync_RegisteredInstance_DiscoveredAndCalledByAGovernedClient()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        await using var backend = await LoopbackServer.StartAsync("orders-1", c =>
            c.Request.Path == "/health" ? c.Response.WriteAsync("ok") : c.Response.WriteAsync("order 42"));
        var settings = Settings(consul.Address);
        settings["MeshGovernance:Registration:Address"] = "127.0.0.1";
        settings["MeshGovernance:Registration:Port"] = backend.Port.ToString(System.Globalization.CultureInfo.InvariantCulture);
        await using var host = BuildHost(settings, new FakeTimeProvider());
        await host.StartAsync().WaitAsync(Guard);
        await consul.RunHttpChecksAsync();

        var caller = new Dictionary<string, string?>
        {
            ["Consul:Address"] = consul.Address.ToString(),
            ["Services:orders:Discovery"] = "Consul",
        };
        await using var client = Governed.Create(caller);
        var orders = client.Services.GetRequiredService<Governance.Pipeline.GovernanceRuntime>().Services["orders"];
        Assert.True(await orders.WaitUntilResolvedAsync(Guard, CancellationToken.None), "discovery did not answer");
        Assert.NotEmpty(orders.Endpoints.All);

        using var response = await client.Client.GetAsync("http://orders/orders/42").WaitAsync(Guard);

        Assert.Equal("order 42", await response.Content.ReadAsStringAsync());
        Assert.Equal("orders-1", response.Headers.GetValues("x-server").Single());
        await host.StopAsync().WaitAsync(Guard);
    }

    [Theory]
    [InlineData("orders", "web-01", 8080, "orders-web-01-8080")]
    [InlineData("Orders", "WEB 01.corp", 443, "orders-web-01.corp-443")]
    public void DefaultInstanceId_NameMachineAndPort_StableLowerCaseId(string name, string machine, int port, string expected) =>
        Assert.Equal(expected, RegistrationSettings.DefaultInstanceId(name, machine, port));

    [Theory]
    [InlineData("http://+:80", "http", "+", 80)]
    [InlineData("https://[::]:8443/base", "https", "[::]", 8443)]
    [InlineData("http://localhost", "http", "localhost", 80)]
    [InlineData("HTTPS://example.com", "https", "example.com", 443)]
    [InlineData("http://[fe80::1]:5000", "http", "[fe80::1]", 5000)]
    public void TryParse_KestrelUrl_SchemeHostPort(string url, string scheme, string host, int port)
    {
        Assert.True(ListeningAddress.TryParse(url, "test", out var address));
        Assert.Equal((scheme, host, port), (address.Scheme, address.Host, address.Port));
    }

    [Theory]
    [InlineData("unix:/tmp/kestrel.sock")]
    [InlineData("http://unix:/tmp/kestrel.sock")]
    [InlineData("ftp://host:21")]
    [InlineData("http://host:http")]
    public void TryParse_NotAnHttpUrl_Rejected(string url) => Assert.False(ListeningAddress.TryParse(url, "test", out _));

    /// <summary>
    /// A host disposed asynchronously: <see cref="IHost"/>'s <c>Dispose</c> blocks on its asynchronous disposal, and a
    /// test thread blocked that way under xunit's two-thread synchronization context is one suspect of a rare hang.
    /// </summary>
    private sealed class TestHost(IHost host) : IAsyncDisposable
    {
        public IServiceProvider Services => host.Services;

        public Task StartAsync() => host.StartAsync();

        public Task StopAsync() => host.StopAsync();

        public ValueTask DisposeAsync() => host is IAsyncDisposable disposable ? disposable.DisposeAsync() : Dispose(host);

        private static ValueTask Dispose(IHost host)
        {
            host.Dispose();
            return ValueTask.CompletedTask;
        }
    }
}

internal static class JsonText
{
    /// <summary>Normalizes JSON text the way <see cref="JsonNode.ToJsonString"/> writes it, for comparisons.</summary>
    public static string AsJson(this string json) => JsonNode.Parse(json)!.ToJsonString();
}
