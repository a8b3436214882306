using Governance.Discovery.Consul;
using Governance.Pipeline;
using Governance.Telemetry;
using Governance.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using static Governance.Tests.Discovery.ConsulTestKit;

namespace Governance.Tests.Discovery;

/// <summary>
/// Consul discovery against <see cref="ConsulApiDouble"/> (real Kestrel, Consul's documented blocking, filtering and
/// ACL semantics, JSON from the documented samples). Loop waits run on <see cref="FakeTimeProvider"/>.
/// </summary>
public sealed class ConsulDiscoveryAgainstApiDoubleTests
{
    [Fact]
    public async Task Watch_FirstAnswer_CurrentNullUntilThenChangeTokenFires()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.Hang();
        consul.Register(new ConsulInstance("catalog-1", "catalog", "10.0.0.11", 8080));
        await using var services = Build(Settings(consul), new FakeTimeProvider());
        await using var watcher = Watch(services);
        var first = Changed(watcher);
        await consul.WaitForAsync(r => r.Count == 1);

        Assert.Null(watcher.Current);
        consul.Recover();
        await first.WaitAsync(Guard);

        var endpoint = Assert.Single(watcher.Current!);
        Assert.Equal("http://10.0.0.11:8080", endpoint.Authority);
    }

    [Fact]
    public async Task Watch_InstanceAdded_SeenWithinOneBlockingRoundTrip()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.Register(new ConsulInstance("catalog-1", "catalog", "10.0.0.11", 8080));
        await using var services = Build(Settings(consul), new FakeTimeProvider());
        await using var watcher = Watch(services);
        await EndpointsAsync(watcher, e => e.Count == 1);
        var index = consul.Index;
        await consul.WaitForAsync(r => r.Any(q => q.Param("index") == index.ToString(System.Globalization.CultureInfo.InvariantCulture)));

        var changed = Changed(watcher);
        consul.Register(new ConsulInstance("catalog-2", "catalog", "10.0.0.12", 8080));
        await changed.WaitAsync(Guard);

        Assert.Equal(["http://10.0.0.11:8080", "http://10.0.0.12:8080"], watcher.Current!.Select(e => e.Authority));
        var queries = consul.HealthQueries;
        Assert.Equal(2, queries.Count); // The first (index 0) and the blocking one that carried the change; no polling.
        Assert.Null(queries[0].Param("index"));
        Assert.Equal(index.ToString(System.Globalization.CultureInfo.InvariantCulture), queries[1].Param("index"));
        Assert.Equal("300s", queries[1].Param("wait"));
        Assert.Equal("1", queries[1].Param("passing"));
    }

    [Fact]
    public async Task Watch_IndexGoesBackwards_RestartsFromZeroAndKeepsBlocking()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        var time = new ObservedTimeProvider();
        var logs = new CapturingLoggerProvider();
        consul.Register(new ConsulInstance("catalog-1", "catalog", "10.0.0.11", 8080));
        await using var services = Build(Settings(consul), time, logs);
        await using var watcher = Watch(services);
        await EndpointsAsync(watcher, e => e.Count == 1);
        var high = consul.Index;
        await consul.WaitForAsync(r => r.Count == 2);

        // A snapshot restore: the index drops far below the client's and the data changes; the blocked query keeps
        // blocking (the index is not above the client's) and returns when its wait elapses.
        consul.SetIndex(high - 50);
        consul.Register(new ConsulInstance("catalog-2", "catalog", "10.0.0.12", 8080));
        var restored = consul.Index.ToString(System.Globalization.CultureInfo.InvariantCulture);
        consul.ElapseWaits();
        await EndpointsAsync(watcher, e => e.Count == 2);
        await AdvanceUntilAsync(time, consul.WaitForAsync(r => r.Any(q => q.Param("index") == restored)));

        var indexes = consul.HealthQueries.Select(q => q.Param("index")).ToArray();
        Assert.Equal(new string?[] { null, high.ToString(System.Globalization.CultureInfo.InvariantCulture), null, restored }, indexes);
        var reset = Assert.Single(logs.Entries, e => e.EventId.Id == 1113);
        Assert.Equal($"Consul index of service catalog went backwards ({high} to {restored}): restarting its blocking query from 0", reset.Message);
    }

    [Fact]
    public async Task Watch_AnswersWithoutIndex_GoesOnFromOneWithoutReportingAReset()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        var time = new ObservedTimeProvider();
        var logs = new CapturingLoggerProvider();
        consul.Register(new ConsulInstance("catalog-1", "catalog", "10.0.0.11", 8080));
        consul.StripIndexHeader();
        await using var services = Build(Settings(consul), time, logs);
        await using var watcher = Watch(services);
        await EndpointsAsync(watcher, e => e.Count == 1);

        // Every answer says index 0: each query after the first asks from 1, and none reads as the index going backwards.
        for (var queries = 2; queries <= 5; queries++)
        {
            var expected = queries;
            await AdvanceUntilAsync(time, consul.WaitForAsync(r => r.Count(q => q.Path.StartsWith("/v1/health/service/", StringComparison.Ordinal)) >= expected));
            consul.ElapseWaits();
        }

        Assert.All(consul.HealthQueries.Skip(1), q => Assert.Equal("1", q.Param("index")));
        Assert.DoesNotContain(logs.Entries, e => e.EventId.Id == 1113);
    }

    [Fact]
    public async Task Watch_WaitElapsesWithSameIndex_NoChangePublished()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        var time = new ObservedTimeProvider();
        consul.Register(new ConsulInstance("catalog-1", "catalog", "10.0.0.11", 8080));
        await using var services = Build(Settings(consul), time);
        await using var watcher = Watch(services);
        var before = await EndpointsAsync(watcher, e => e.Count == 1);
        await consul.WaitForAsync(r => r.Count == 2);

        var changed = Changed(watcher);
        consul.ElapseWaits();
        await AdvanceUntilAsync(time, consul.WaitForAsync(r => r.Count == 3));

        Assert.False(changed.IsCompleted);
        Assert.Same(before, watcher.Current);
        Assert.Equal(consul.HealthQueries[1].Param("index"), consul.HealthQueries[2].Param("index"));
    }

    [Fact]
    public async Task Watch_ServiceAddressEmpty_FallsBackToNodeAddress()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.Register(new ConsulInstance("catalog-1", "catalog", "", 8080) { NodeAddress = "10.1.10.12" });
        consul.Register(new ConsulInstance("catalog-2", "catalog", null, 8081) { NodeAddress = "10.1.10.13" });
        await using var services = Build(Settings(consul), new FakeTimeProvider());
        await using var watcher = Watch(services);

        var endpoints = await EndpointsAsync(watcher, e => e.Count == 2);

        Assert.Equal(["http://10.1.10.12:8080", "http://10.1.10.13:8081"], endpoints.Select(e => e.Authority));
    }

    [Fact]
    public async Task Watch_Ipv6Addresses_AreBracketed()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.Register(new ConsulInstance("catalog-1", "catalog", "2001:db8::1", 8080));
        consul.Register(new ConsulInstance("catalog-2", "catalog", "", 8080) { NodeAddress = "fd00::2" });
        consul.Register(new ConsulInstance("catalog-3", "catalog", "[2001:db8::3]", 8080));
        await using var services = Build(Settings(consul), new FakeTimeProvider());
        await using var watcher = Watch(services);

        var endpoints = await EndpointsAsync(watcher, e => e.Count == 3);

        Assert.Equal(["http://[2001:db8::1]:8080", "http://[2001:db8::3]:8080", "http://[fd00::2]:8080"], endpoints.Select(e => e.Authority));
        Assert.Equal("[2001:db8::1]", endpoints[0].Address.Host);
    }

    [Fact]
    public async Task Watch_WeightsAndMeta_BecomeWeightZoneAndMetadata()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.Register(new ConsulInstance("catalog-1", "catalog", "10.0.0.11", 8080)
        {
            PassingWeight = 10,
            WarningWeight = 1,
            Meta = new Dictionary<string, string> { ["zone"] = "eu-west-1a", ["version"] = "v2" },
        });
        consul.Register(new ConsulInstance("catalog-2", "catalog", "10.0.0.12", 8443) { Meta = new Dictionary<string, string> { ["secure"] = "true" } });
        await using var services = Build(Settings(consul), new FakeTimeProvider());
        await using var watcher = Watch(services);

        var endpoints = await EndpointsAsync(watcher, e => e.Count == 2);

        Assert.Equal(10, endpoints[0].Weight);
        Assert.Equal("eu-west-1a", endpoints[0].Zone);
        Assert.Equal("v2", endpoints[0].Metadata["version"]);
        Assert.Equal("eu-west-1a", endpoints[0].Metadata["zone"]);
        Assert.Equal("https://10.0.0.12:8443", endpoints[1].Authority);
        Assert.Equal(1, endpoints[1].Weight);
        Assert.Null(endpoints[1].Zone);
    }

    [Fact]
    public async Task Watch_OnlyPassingFalse_UsesWarningInstancesAtWarningWeightButNeverCritical()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.Register(new ConsulInstance("ok", "catalog", "10.0.0.11", 8080) { PassingWeight = 5 });
        consul.Register(new ConsulInstance("warn", "catalog", "10.0.0.12", 8080) { PassingWeight = 5, WarningWeight = 2, Status = "warning" });
        consul.Register(new ConsulInstance("warn-zero", "catalog", "10.0.0.13", 8080) { WarningWeight = 0, Status = "warning" });
        consul.Register(new ConsulInstance("down", "catalog", "10.0.0.14", 8080) { Status = "critical" });
        var settings = Settings(consul);
        settings["Services:catalog:OnlyPassing"] = "false";
        await using var services = Build(settings, new FakeTimeProvider());
        await using var watcher = Watch(services);

        var endpoints = await EndpointsAsync(watcher, e => e.Count > 0);

        Assert.Equal([("http://10.0.0.11:8080", 5), ("http://10.0.0.12:8080", 2)], endpoints.Select(e => (e.Authority, e.Weight)));
        Assert.Null(consul.HealthQueries[0].Param("passing"));
    }

    [Fact]
    public async Task Watch_OnlyPassingDefault_ServerFiltersOutWarningAndCritical()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.Register(new ConsulInstance("ok", "catalog", "10.0.0.11", 8080));
        consul.Register(new ConsulInstance("warn", "catalog", "10.0.0.12", 8080) { Status = "warning" });
        consul.Register(new ConsulInstance("down", "catalog", "10.0.0.13", 8080) { Status = "critical" });
        await using var services = Build(Settings(consul), new FakeTimeProvider());
        await using var watcher = Watch(services);

        var endpoints = await EndpointsAsync(watcher, e => e.Count > 0);

        Assert.Equal("http://10.0.0.11:8080", Assert.Single(endpoints).Authority);
    }

    [Fact]
    public async Task Watch_TagsAndDatacenter_SentAsFiltersAndApplied()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.Register(new ConsulInstance("both", "catalog", "10.0.0.11", 8080) { Tags = ["primary", "v2"], Datacenter = "dc2" });
        consul.Register(new ConsulInstance("one", "catalog", "10.0.0.12", 8080) { Tags = ["primary"], Datacenter = "dc2" });
        consul.Register(new ConsulInstance("other-dc", "catalog", "10.0.0.13", 8080) { Tags = ["primary", "v2"] });
        var settings = Settings(consul);
        settings["Consul:Datacenter"] = "dc2";
        settings["Services:catalog:Tags:0"] = "v2";
        settings["Defaults:Tags:0"] = "ignored-because-the-service-has-its-own";
        settings["Services:catalog:Tags:1"] = "primary";
        await using var services = Build(settings, new FakeTimeProvider());
        await using var watcher = Watch(services);

        var endpoints = await EndpointsAsync(watcher, e => e.Count > 0);

        Assert.Equal("http://10.0.0.11:8080", Assert.Single(endpoints).Authority);
        var query = consul.HealthQueries[0];
        Assert.Equal("dc2", query.Param("dc"));
        Assert.Equal(["primary", "v2"], query.Params("tag"));
    }

    [Fact]
    public async Task Watch_DefaultsTags_AppliedToServiceWithoutTags()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.Register(new ConsulInstance("canary", "catalog", "10.0.0.11", 8080) { Tags = ["canary"] });
        consul.Register(new ConsulInstance("stable", "catalog", "10.0.0.12", 8080) { Tags = ["stable"] });
        var settings = Settings(consul);
        settings["Defaults:Tags:0"] = "stable";
        await using var services = Build(settings, new FakeTimeProvider());
        await using var watcher = Watch(services);

        var endpoints = await EndpointsAsync(watcher, e => e.Count > 0);

        Assert.Equal("http://10.0.0.12:8080", Assert.Single(endpoints).Authority);
    }

    [Fact]
    public async Task Watch_DuringApply_QueriesTheConfigurationBeingAppliedNotTheMonitorsNewerOne()
    {
        // A reload can land while the runtime applies the previous one: the monitor then already holds the newer
        // configuration (perhaps one that validation will reject). The watch follows what is being applied.
        await using var newerAgent = await ConsulApiDouble.StartAsync();
        await using var appliedAgent = await ConsulApiDouble.StartAsync();
        newerAgent.Register(new ConsulInstance("elsewhere", "catalog", "10.0.0.11", 8080));
        appliedAgent.Register(new ConsulInstance("applied", "catalog", "10.0.0.12", 8080));
        await using var services = Build(Settings(newerAgent), new FakeTimeProvider());
        var applied = new Governance.Configuration.GovernanceOptions { Consul = { Address = appliedAgent.Address.ToString() } };
        var service = new Governance.Configuration.ServiceOptions { Discovery = "Consul" };
        applied.Services.Add("catalog", service);
        var settings = ServiceSettings.Create(
            "catalog",
            service,
            applied,
            services.GetRequiredService<Governance.LoadBalancing.LoadBalancingPolicyRegistry>(),
            services.GetRequiredService<Governance.Discovery.ServiceDiscoveryProviderRegistry>());

        await using var watcher = settings.WatchEndpoints();
        var endpoints = await EndpointsAsync(watcher, e => e.Count > 0);

        Assert.Equal("http://10.0.0.12:8080", Assert.Single(endpoints).Authority);
    }

    [Fact]
    public async Task Watch_Token_SentInHeaderNeverInQuery()
    {
        const string Token = "3f1c5a2e-5b7d-4c8e-9a1b-2d3e4f5a6b7c";
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.EnableAcl(Token);
        consul.Register(new ConsulInstance("catalog-1", "catalog", "10.0.0.11", 8080));
        var settings = Settings(consul);
        settings["Consul:Token"] = Token;
        await using var services = Build(settings, new FakeTimeProvider());
        await using var watcher = Watch(services);

        await EndpointsAsync(watcher, e => e.Count == 1);
        await consul.WaitForAsync(r => r.Count == 2);

        Assert.All(consul.Requests, r =>
        {
            Assert.Equal(Token, r.Token);
            Assert.DoesNotContain(Token, r.PathAndQuery, StringComparison.Ordinal);
            Assert.DoesNotContain("token", r.Query, StringComparison.OrdinalIgnoreCase);
        });
    }

    [Theory]
    [InlineData("MeshGovernance")]
    [InlineData("Platform:Mesh")]
    public async Task Watch_UnknownToken_403ReportedClearlyWithoutTheToken(string section)
    {
        const string Token = "00000000-dead-beef-0000-000000000000";
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.EnableAcl("the-right-token");
        consul.Register(new ConsulInstance("catalog-1", "catalog", "10.0.0.11", 8080));
        var logs = new CapturingLoggerProvider();
        var time = new ObservedTimeProvider();
        var settings = Settings(consul);
        settings["Consul:Token"] = Token;
        await using var services = Build(settings, time, logs, section);
        using var meters = new MeterCapture(services);
        await using var watcher = Watch(services);

        await AdvanceUntilAsync(time, Task.WhenAll(
            logs.WaitForAsync(e => e.EventId.Id == 1110),
            meters.WaitUntilAsync(m => m.Sum(GovernanceTelemetry.Instruments.DiscoveryErrors, "catalog") >= 1)));

        Assert.Null(watcher.Current);
        var log = Assert.Single(logs.Entries, e => e.EventId.Id == 1110);
        Assert.Equal(LogLevel.Warning, log.Level);
        Assert.Contains($"Consul at {consul.Address.ToString().TrimEnd('/')} refused the query of service 'catalog' with 403 Forbidden: \"ACL not found\". Check the ACL token in {section}:Consul:Token (set; its value is not shown): it needs service:read on 'catalog' and node:read", log.Message, StringComparison.Ordinal);
        Assert.Contains("no endpoints are known yet", log.Message, StringComparison.Ordinal);
        Assert.Contains("403 Forbidden", ((ConsulServiceDiscoveryProvider.Watcher)watcher).LastError, StringComparison.Ordinal);
        Assert.DoesNotContain(logs.Entries, e => e.Message.Contains(Token, StringComparison.Ordinal));
        Assert.All(meters.Measurements.Where(m => m.Instrument == GovernanceTelemetry.Instruments.DiscoveryErrors), error => Assert.Equal("Consul", error.Tags[GovernanceTelemetry.DiscoveryProviderTag]));
    }

    [Fact]
    public async Task Watch_TokenWithoutReadPermission_FilteredEmptyAnswerIsAnErrorNotAnEmptyList()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.Register(new ConsulInstance("catalog-1", "catalog", "10.0.0.11", 8080));
        var logs = new CapturingLoggerProvider();
        var time = new ObservedTimeProvider();
        var settings = Settings(consul);
        settings["Consul:Token"] = "read-nothing";
        await using var services = Build(settings, time, logs);
        await using var watcher = Watch(services);
        await EndpointsAsync(watcher, e => e.Count == 1);
        await consul.WaitForAsync(r => r.Count == 2);

        // The token is replaced by one that may not read the service: Consul filters the answer instead of refusing it.
        consul.EnableAcl("admin");
        consul.AddTokenWithoutPermissions("read-nothing");
        consul.ElapseWaits();
        await AdvanceUntilAsync(time, consul.WaitForAsync(r => r.Count == 3));
        consul.Register(new ConsulInstance("catalog-2", "catalog", "10.0.0.12", 8080));
        await AdvanceUntilAsync(time, logs.WaitForAsync(e => e.EventId.Id == 1110));

        Assert.Equal("http://10.0.0.11:8080", Assert.Single(watcher.Current!).Authority);
        Assert.Contains("X-Consul-Results-Filtered-By-ACLs", logs.Entries.First(e => e.EventId.Id == 1110).Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Watch_NoTokenAndDefaultPolicyDeny_EmptyAnswerAppliedWithAWarningNamingTheTokenKey()
    {
        // Without a token the agent's default token is used; Consul does not tell a request without a token that it
        // filtered the answer. When ACLs come on with a default policy of deny, the answer turns empty: it cannot be told
        // from a service with no instance, so it is applied, with one warning that says what to set.
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.Register(new ConsulInstance("catalog-1", "catalog", "10.0.0.11", 8080));
        var logs = new CapturingLoggerProvider();
        var time = new ObservedTimeProvider();
        await using var services = Build(Settings(consul), time, logs);
        await using var watcher = Watch(services);
        await EndpointsAsync(watcher, e => e.Count == 1);
        await consul.WaitForAsync(r => r.Count == 2);

        consul.EnableAcl("admin");
        consul.ElapseWaits();
        await AdvanceUntilAsync(time, consul.WaitForAsync(r => r.Count == 3));
        consul.Register(new ConsulInstance("catalog-2", "catalog", "10.0.0.12", 8080));
        await AdvanceUntilAsync(time, EndpointsAsync(watcher, e => e.Count == 0));

        // It stays empty while nothing changes: warned once, not on every answer.
        consul.Register(new ConsulInstance("catalog-3", "catalog", "10.0.0.13", 8080));
        await AdvanceUntilAsync(time, consul.WaitForAsync(r => r.Count == 5));

        var warning = Assert.Single(logs.Entries, e => e.EventId.Id == 1115);
        Assert.Equal(LogLevel.Warning, warning.Level);
        Assert.Contains("default ACL policy is deny", warning.Message, StringComparison.Ordinal);
        Assert.Contains("set MeshGovernance:Consul:Token", warning.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(logs.Entries, e => e.EventId.Id == 1110);
    }

    [Fact]
    public async Task Watch_ConsulFailsThenRecovers_KeepsLastKnownEndpointsMeanwhile()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.Register(new ConsulInstance("catalog-1", "catalog", "10.0.0.11", 8080));
        consul.Register(new ConsulInstance("catalog-2", "catalog", "10.0.0.12", 8080));
        var logs = new CapturingLoggerProvider();
        var time = new ObservedTimeProvider();
        await using var services = Build(Settings(consul), time, logs);
        using var meters = new MeterCapture(services);
        await using var watcher = Watch(services);
        var known = await EndpointsAsync(watcher, e => e.Count == 2);
        await consul.WaitForAsync(r => r.Count == 2);

        // Leader lost: every query fails with Consul's own error; the blocked one returns with it.
        consul.FailWith(500, "rpc error making call: No cluster leader");
        consul.ElapseWaits();
        await AdvanceUntilAsync(time, consul.WaitForAsync(r => r.Count == 3));
        consul.Deregister("catalog-1");
        consul.Deregister("catalog-2");
        await AdvanceUntilAsync(time, meters.WaitUntilAsync(m => m.Sum(GovernanceTelemetry.Instruments.DiscoveryErrors, "catalog") >= 3));

        Assert.Same(known, watcher.Current);
        var warning = Assert.Single(logs.Entries, e => e.EventId.Id == 1110);
        Assert.Contains("keeping the 2 last known endpoints", warning.Message, StringComparison.Ordinal);
        Assert.Contains("answered the query of service 'catalog' with 500 Internal Server Error: \"rpc error making call: No cluster leader\"", warning.Message, StringComparison.Ordinal);
        Assert.Contains(logs.Entries, e => e.EventId.Id == 1111 && e.Level == LogLevel.Debug);

        // Back: the true answer (no instance left) is applied, empty list included, and then the recovery is logged.
        consul.Recover();
        var recovered = logs.WaitForAsync(e => e.EventId.Id == 1112 && e.Level == LogLevel.Information);
        await AdvanceUntilAsync(time, EndpointsAsync(watcher, e => e.Count == 0));
        await recovered.WaitAsync(Guard);
    }

    [Fact]
    public async Task Watch_ConsulHangs_BlockingQueryTimesOutAndEndpointsAreKept()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.Register(new ConsulInstance("catalog-1", "catalog", "10.0.0.11", 8080));
        var logs = new CapturingLoggerProvider();
        var time = new ObservedTimeProvider();
        var settings = Settings(consul);
        settings["Consul:WaitTime"] = "00:00:16";
        await using var services = Build(settings, time, logs);
        await using var watcher = Watch(services);
        var known = await EndpointsAsync(watcher, e => e.Count == 1);
        await consul.WaitForAsync(r => r.Count == 2);

        // The agent stops answering: the blocking query is abandoned after wait + wait/16 + 5 s (16 + 1 + 5 = 22 s). Its
        // timeout was armed before it was sent. Timer callbacks run inside Advance, so right after advancing 21 s the
        // count of fired timers says for certain that nothing was due: the query is still waiting and nothing is logged.
        var timeout = TimeSpan.FromSeconds(22);
        Assert.Equal(1, time.TimersCreated(timeout));
        consul.Hang();
        var fired = time.TimersFired();
        time.Advance(TimeSpan.FromSeconds(21));
        Assert.Equal(fired, time.TimersFired());
        Assert.DoesNotContain(logs.Entries, e => e.EventId.Id == 1110);
        var failed = logs.WaitForAsync(e => e.EventId.Id == 1110);
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(1, time.TimersFired(timeout));
        await failed.WaitAsync(Guard);

        Assert.Same(known, watcher.Current);
        Assert.Contains("did not answer the query of service 'catalog' within 00:00:22", logs.Entries.First(e => e.EventId.Id == 1110).Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Watch_NoPassingInstance_PublishesEmptyList()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.Register(new ConsulInstance("catalog-1", "catalog", "10.0.0.11", 8080));
        await using var services = Build(Settings(consul), new FakeTimeProvider());
        await using var watcher = Watch(services);
        await EndpointsAsync(watcher, e => e.Count == 1);

        consul.SetStatus("catalog-1", "critical");

        await EndpointsAsync(watcher, e => e.Count == 0);
    }

    [Fact]
    public async Task Watch_OnlyPassingFalseAndEveryInstanceCritical_PublishesEmptyList()
    {
        // Consul lists critical instances when passing is not asked for; none is usable, and that is the service's
        // state (fail fast), not a registration error that would keep routing to the critical instances.
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.Register(new ConsulInstance("catalog-1", "catalog", "10.0.0.11", 8080));
        var logs = new CapturingLoggerProvider();
        var settings = Settings(consul);
        settings["Services:catalog:OnlyPassing"] = "false";
        await using var services = Build(settings, new FakeTimeProvider(), logs);
        await using var watcher = Watch(services);
        await EndpointsAsync(watcher, e => e.Count == 1);

        consul.SetStatus("catalog-1", "critical");

        await EndpointsAsync(watcher, e => e.Count == 0);
        Assert.DoesNotContain(logs.Entries, e => e.EventId.Id == 1110);
    }

    [Fact]
    public async Task Watch_AnswerWithOnlyUnusableInstances_FailsAndBacksOffLikeAnyFailure()
    {
        // An answer that cannot be applied is a failure: counted towards the backoff, logged once as new (1110), then as
        // a repeat (1111), never as a recovery (1112) merely because Consul answered.
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.Register(new ConsulInstance("catalog-1", "catalog", "10.0.0.11", 8080));
        var logs = new CapturingLoggerProvider();
        var time = new ObservedTimeProvider();
        await using var services = Build(Settings(consul), time, logs);
        await using var watcher = Watch(services);
        var known = await EndpointsAsync(watcher, e => e.Count == 1);

        consul.Register(new ConsulInstance("catalog-2", "catalog", "10.0.0.12", 0));
        consul.Deregister("catalog-1");
        await AdvanceUntilAsync(time, logs.WaitForAsync(e => e.EventId.Id == 1111));

        Assert.Same(known, watcher.Current);
        var failed = Assert.Single(logs.Entries, e => e.EventId.Id == 1110);
        Assert.Contains("none that is healthy has a usable address and port", failed.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(logs.Entries, e => e.EventId.Id == 1112);

        // The unusable instance was in both answers; it is reported once, while it stays unusable.
        Assert.Contains("catalog-2", Assert.Single(logs.Entries, e => e.EventId.Id == 1114).Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Watch_LowercaseIndexHeader_StillBlocks()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.LowercaseHeaders = true;
        consul.Register(new ConsulInstance("catalog-1", "catalog", "10.0.0.11", 8080));
        await using var services = Build(Settings(consul), new FakeTimeProvider());
        await using var watcher = Watch(services);

        await EndpointsAsync(watcher, e => e.Count == 1);
        await consul.WaitForAsync(r => r.Count == 2);

        Assert.Equal(consul.Index.ToString(System.Globalization.CultureInfo.InvariantCulture), consul.HealthQueries[1].Param("index"));
    }

    [Fact]
    public async Task Watch_MissingNullAndUnknownFields_Tolerated()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.SetRawAnswer("catalog", """
            [
              { "Node": { "Address": "10.0.0.1", "Extra": { "x": [1, 2] } },
                "Service": { "ID": "a", "Service": "catalog", "Tags": null, "Meta": null, "Weights": null, "Address": "", "Port": 8080, "Kind": "typical" },
                "Checks": null, "Future": true },
              { "Service": { "ID": "b", "Address": "10.0.0.2", "Port": "8081", "Meta": { "zone": "z1", "nothing": null }, "Weights": { "Passing": 3 } } },
              { "Node": null, "Service": { "ID": "c", "Address": "", "Port": 8082 } },
              { "Service": { "ID": "d", "Address": "10.0.0.4" } },
              null
            ]
            """);
        var logs = new CapturingLoggerProvider();
        await using var services = Build(Settings(consul), new FakeTimeProvider(), logs);
        await using var watcher = Watch(services);

        var endpoints = await EndpointsAsync(watcher, e => e.Count > 0);

        Assert.Equal([("http://10.0.0.1:8080", 1, (string?)null), ("http://10.0.0.2:8081", 3, "z1")], endpoints.Select(e => (e.Authority, e.Weight, e.Zone)));
        Assert.Equal(
            [
                "Consul instance c of service catalog is not used: neither Service.Address nor Node.Address is set",
                "Consul instance d of service catalog is not used: port 0 is not between 1 and 65535",
                "Consul instance (no id) of service catalog is not used: the entry has no Service",
            ],
            logs.Entries.Where(e => e.EventId.Id == 1114).Select(e => e.Message));
    }

    [Fact]
    public async Task Watch_SameQueryWatchedAgain_SharesTheBlockingQueryAndItsEndpoints()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.Register(new ConsulInstance("catalog-1", "catalog", "10.0.0.11", 8080));
        var time = new ObservedTimeProvider();
        await using var services = Build(Settings(consul), time);
        var first = Watch(services);
        await EndpointsAsync(first, e => e.Count == 1);
        await consul.WaitForAsync(r => r.Count == 2);

        // A reload builds the new watcher before disposing the old one.
        await using var second = Watch(services);
        await first.DisposeAsync();

        Assert.Single(second.Current!);
        consul.Register(new ConsulInstance("catalog-2", "catalog", "10.0.0.12", 8080));
        await EndpointsAsync(second, e => e.Count == 2);
        await AdvanceUntilAsync(time, consul.WaitForAsync(r => r.Count == 3));
        Assert.Equal([null, "101", "102"], consul.HealthQueries.Select(q => q.Param("index")));
    }

    [Fact]
    public async Task Watch_QueryChangedByReload_NewQueryServesLastKnownEndpointsUntilItsFirstAnswer()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.Register(new ConsulInstance("catalog-1", "catalog", "10.0.0.11", 8080) { Tags = ["v1"] });
        consul.Register(new ConsulInstance("catalog-2", "catalog", "10.0.0.12", 8080) { Tags = ["v2"] });
        await using var services = Build(Settings(consul), new FakeTimeProvider());
        var before = Watch(services);
        var known = await EndpointsAsync(before, e => e.Count == 2);
        consul.Hang();

        // A reload sets Tags: a different query; the runtime watches it before disposing the old watcher.
        var options = new Governance.Configuration.ServiceOptions { Discovery = "Consul" };
        options.Tags.Add("v2");
        await using var after = ConsulTestKit.Provider(services).Watch("catalog", options);
        await before.DisposeAsync();

        Assert.Same(known, after.Current);
        consul.Recover();
        var filtered = await EndpointsAsync(after, e => e.Count == 1);
        Assert.Equal("http://10.0.0.12:8080", filtered[0].Authority);
    }

    [Fact]
    public async Task GetAsync_ConsulRefusesTheToken_FirstCallFailsWithTheCause()
    {
        // Consul refuses every query (an unknown token): the first call waits InitialResolutionTimeout for an answer that
        // never comes, then fails saying why discovery has none, not only that it waited.
        await using var consul = await ConsulApiDouble.StartAsync();
        consul.EnableAcl("the-right-token");
        consul.Register(new ConsulInstance("catalog-1", "catalog", "10.0.0.11", 8080));
        var time = new ObservedTimeProvider();
        var logs = new CapturingLoggerProvider();
        var settings = Settings(consul);
        settings["Consul:Token"] = "00000000-dead-beef-0000-000000000000";
        settings["Consul:InitialResolutionTimeout"] = "00:00:01";
        await using var governed = Governed.Create(settings, s => s.AddSingleton<TimeProvider>(time).AddLogging(b => b.AddProvider(logs)));

        // The first query has failed (warning 1110) before the call starts waiting.
        _ = governed.Services.GetRequiredService<GovernanceRuntime>();
        await AdvanceUntilAsync(time, logs.WaitForAsync(e => e.EventId.Id == 1110));
        var call = governed.Client.GetAsync("http://catalog/");
        time.Advance(TimeSpan.FromSeconds(1));
        var ex = await Assert.ThrowsAsync<NoAvailableEndpointException>(() => call.WaitAsync(Guard));

        Assert.StartsWith("Service 'catalog' has no available endpoint: discovery (Consul) did not resolve the service within 00:00:01; its last error: Consul at ", ex.Message, StringComparison.Ordinal);
        Assert.Contains("403 Forbidden", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("dead-beef", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task GetAsync_ConsulDiscoveredService_ReachesInstancesAndFollowsChanges()
    {
        await using var consul = await ConsulApiDouble.StartAsync();
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        consul.Register(ConsulInstance.For("catalog", a));
        var time = new ObservedTimeProvider();
        var settings = Settings(consul);
        settings["Services:catalog:LoadBalancer:Policy"] = "RoundRobin";
        await using var governed = Governed.Create(settings, s => s.AddSingleton<TimeProvider>(time));
        var runtime = governed.Services.GetRequiredService<GovernanceRuntime>();
        string[] Live() => [.. runtime.Services["catalog"].Endpoints.All.Select(e => e.Authority)];
        string Authority(LoopbackServer server) => server.Address.GetLeftPart(UriPartial.Authority);

        // The runtime takes an answer while the loop publishes it, before the loop sends its next query: once the double
        // has the query that follows the one that carried a change, the runtime has applied the change.
        await AdvanceUntilAsync(time, consul.WaitForAsync(r => r.Count == 2));
        Assert.Equal([Authority(a)], Live());
        Assert.Equal("a", await governed.GetServerAsync("http://catalog/items/1"));

        consul.Register(ConsulInstance.For("catalog", b));
        await AdvanceUntilAsync(time, consul.WaitForAsync(r => r.Count == 3));
        Assert.Equal(2, Live().Length);
        var answered = new List<string>();
        for (var i = 0; i < 4; i++)
        {
            answered.Add(await governed.GetServerAsync("http://catalog/items/1"));
        }

        Assert.Equal(["a", "b"], answered.Distinct().Order());

        consul.SetStatus("a", "critical");
        await AdvanceUntilAsync(time, consul.WaitForAsync(r => r.Count == 4));
        Assert.Equal([Authority(b)], Live());
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal("b", await governed.GetServerAsync("http://catalog/items/1"));
        }
    }

    [Fact]
    public async Task Map_DocumentedHealthServiceSample_OneEndpointWithWeightAndMetadata()
    {
        await using var stream = File.OpenRead(ConsulApiDouble.FixturePath("health-service.json"));
        var entries = await System.Text.Json.JsonSerializer.DeserializeAsync(stream, ConsulJsonContext.Default.ListConsulHealthEntry);

        var endpoint = Assert.Single(ConsulEndpointMapper.Map(entries!, onlyPassing: true));

        Assert.Equal("http://10.1.10.12:8000", endpoint.Authority);
        Assert.Equal(10, endpoint.Weight);
        Assert.Equal("4.0", endpoint.Metadata["redis_version"]);
        Assert.Null(endpoint.Zone);
    }

    [Fact]
    public async Task Map_DocumentedAgentHealthSample_CriticalInstanceLeftOut()
    {
        // agent-health-service-name.json: each element has the Service and Checks of a health entry (Node absent).
        await using var stream = File.OpenRead(ConsulApiDouble.FixturePath("agent-health-service-name.json"));
        var entries = await System.Text.Json.JsonSerializer.DeserializeAsync(stream, ConsulJsonContext.Default.ListConsulHealthEntry);
        var skipped = new List<string>();

        var endpoints = ConsulEndpointMapper.Map(entries!, onlyPassing: false, (id, reason) => skipped.Add($"{id}: {reason}"));

        // web1 passes but has no address of its own and no node in this shape; web2 is critical.
        Assert.Empty(endpoints);
        Assert.Equal(["web1: neither Service.Address nor Node.Address is set"], skipped);
    }
}
