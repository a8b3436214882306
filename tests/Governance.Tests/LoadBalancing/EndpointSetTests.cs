using Governance.Configuration;
using Governance.LoadBalancing;
using Governance.Pipeline;
using Governance.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Governance.Tests.LoadBalancing;

/// <summary>Zone-aware routing, which <see cref="EndpointSet"/> applies above the load-balancing policy.</summary>
public sealed class EndpointSetTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(2, 2, 2, 1.0)] // all local available
    [InlineData(1, 2, 2, 0.7)] // 1.4 x 1/2
    [InlineData(3, 4, 2, 1.0)] // 1.4 x 3/4 = 1.05, capped at 1: at least 71.4% (1/1.4) available keeps everything local
    [InlineData(1, 4, 3, 0.35)] // 1.4 x 1/4
    [InlineData(0, 2, 2, 0.0)] // no local endpoint available: all to the other zones
    [InlineData(1, 2, 0, 1.0)] // no other zone available: everything stays local
    [InlineData(5, 7, 2, 1.0)] // 1.4 x 5/7 = 1 exactly: 71.4% available still keeps everything local
    public void Create_LocalZoneAvailability_LocalShareIsOverprovisionedFraction(int localAvailable, int localTotal, int remoteAvailable, double expected)
    {
        var states = new List<EndpointState>();
        for (var i = 0; i < localTotal; i++)
        {
            var state = new EndpointState(new ServiceEndpoint(new Uri($"http://10.0.1.{i + 1}:8080"), zone: "z1"));
            state.SetAvailable(i < localAvailable);
            states.Add(state);
        }

        for (var i = 0; i < 2; i++)
        {
            var state = new EndpointState(new ServiceEndpoint(new Uri($"http://10.0.2.{i + 1}:8080"), zone: "z2"));
            state.SetAvailable(i < remoteAvailable);
            states.Add(state);
        }

        var set = EndpointSet.Create("catalog", [.. states], "z1", new RandomLoadBalancingPolicy(), new LoadBalancerOptions());

        Assert.Equal(expected, set.LocalShare, precision: 12);
    }

    [Theory]
    // The audit's case: the local zone is down (3 of 5 endpoints out is panic for the service as a whole, 40% < 50%), the
    // other zone healthy: every request goes to the other zone, none to the failed local endpoints.
    [InlineData(0, 3, 2, 2, 50, 0.0, null, 2)]
    // 1.4 x 1/4 + 1.4 x 1/2 = 1.05: enough together, no panic; the local zone keeps its overprovisioned share.
    [InlineData(1, 4, 1, 2, 50, 0.35, null, 2)]
    // Exactly 1 (0.7 + 0.3, which floating point makes 0.9999999999999999): not degraded, no panic.
    [InlineData(1, 2, 3, 14, 50, 0.7, null, 4)]
    // Degraded (0.35 + 0 < 1) and both zones in panic (25% and 0% < 50%): Envoy's total panic, the load by endpoint
    // counts (4 of 6 local), every endpoint used again (by health the local zone would take everything).
    [InlineData(1, 4, 0, 2, 50, 0.6666666666666666, "every zone", 6)]
    // The audit's case: 1 of 10 local and 5 of 90 remote available: both in panic, 10% local (by health it was 64%).
    [InlineData(1, 10, 5, 90, 50, 0.1, "every zone", 100)]
    // Degraded (0.28 + 0.28): each zone takes its health's part of the sum; each is in panic (20% < 50%).
    [InlineData(1, 5, 1, 5, 50, 0.5, "every zone", 10)]
    // Degraded (0.84 + 0.14): only the other zones are in panic (10%), the local zone (60%) uses its available six.
    [InlineData(6, 10, 1, 10, 50, 0.857142857142857, "the other zones", 16)]
    // The same as two rows up with PanicThreshold 10: 20% available is not panic, only the two available endpoints are used.
    [InlineData(1, 5, 1, 5, 10, 0.5, null, 2)]
    // Nothing available: every zone in panic, each by its endpoint count (Envoy's total panic).
    [InlineData(0, 2, 0, 2, 50, 0.5, "every zone", 4)]
    // Nothing available and panic off: no candidate (the call is refused).
    [InlineData(0, 2, 0, 2, 0, 0.0, null, 0)]
    public void Create_ZonesAndPanicThreshold_EachZoneJudgedOnItsOwnHealth(int localAvailable, int localTotal, int remoteAvailable, int remoteTotal, int panicThreshold, double expectedShare, string? expectedPanic, int expectedCandidates)
    {
        var states = new List<EndpointState>();
        for (var i = 0; i < localTotal; i++)
        {
            var state = new EndpointState(new ServiceEndpoint(new Uri($"http://10.0.1.{i + 1}:8080"), zone: "z1"));
            state.Set(EndpointConditions.FailedHealthCheck, i >= localAvailable);
            states.Add(state);
        }

        for (var i = 0; i < remoteTotal; i++)
        {
            var state = new EndpointState(new ServiceEndpoint(new Uri($"http://10.0.2.{i + 1}:8080"), zone: "z2"));
            state.Set(EndpointConditions.FailedHealthCheck, i >= remoteAvailable);
            states.Add(state);
        }

        var set = EndpointSet.Create("catalog", [.. states], "z1", new RandomLoadBalancingPolicy(), new LoadBalancerOptions(), panicThreshold);

        Assert.Equal(expectedShare, set.LocalShare, precision: 12);
        Assert.Equal(expectedPanic, set.Panic?.Scope);
        Assert.Equal(expectedPanic is not null, set.IsPanic);
        Assert.Equal(expectedCandidates, set.Candidates.Length);

        // Hash keys decide local or remote (deterministically, uniform over the keys).
        var picks = Enumerable.Range(0, 2000).Select(i => set.Pick(new PickContext($"key-{i}"))).ToList();
        if (expectedCandidates == 0)
        {
            Assert.All(picks, Assert.Null);
            return;
        }

        Assert.All(picks, p => Assert.Contains(p!, set.Candidates));
        if (expectedPanic is null)
        {
            // Outside panic mode only available endpoints are picked.
            Assert.All(picks, p => Assert.True(p!.IsAvailable));
        }

        var local = picks.Count(p => p!.Endpoint.Zone == "z1") / 2000.0;
        Assert.InRange(local, expectedShare - 0.05, expectedShare + 0.05);
    }

    [Theory]
    // 2 local endpoints serving, 3 new local ones waiting for their first probe, 2 remote: counted, 2 of 2 local are
    // available, so everything stays local (counting the newcomers as unavailable: 1.4 x 2/5 = 0.56, 44% to the others).
    [InlineData("z1", 2, 3, 1.0, null, 2)]
    // One level: 1 serving and 1 sick endpoint, 4 new ones waiting: 1 of 2 counted is not under 50% (counting them, 1 of
    // 6 would be panic mode, sending calls to the sick endpoint and to the unprobed ones).
    [InlineData(null, 1, 4, 1.0, null, 1)]
    public void Create_EndpointsAwaitingTheirFirstHealthCheck_LeftOutOfPanicModeAndZoneShares(string? zone, int serving, int waiting, double expectedShare, string? expectedPanic, int expectedCandidates)
    {
        var states = new List<EndpointState>();
        for (var i = 0; i < serving + waiting; i++)
        {
            var state = new EndpointState(new ServiceEndpoint(new Uri($"http://10.0.1.{i + 1}:8080"), zone: "z1"));
            state.Set(EndpointConditions.AwaitingHealthCheck, i >= serving);
            states.Add(state);
        }

        var sick = new EndpointState(new ServiceEndpoint(new Uri("http://10.0.3.1:8080"), zone: "z3"));
        if (zone is null)
        {
            sick.Set(EndpointConditions.FailedHealthCheck, true);
            states.Add(sick);
        }
        else
        {
            states.Add(new EndpointState(new ServiceEndpoint(new Uri("http://10.0.2.1:8080"), zone: "z2")));
            states.Add(new EndpointState(new ServiceEndpoint(new Uri("http://10.0.2.2:8080"), zone: "z2")));
        }

        var set = EndpointSet.Create("catalog", [.. states], zone, new RandomLoadBalancingPolicy(), new LoadBalancerOptions(), panicThreshold: 50);

        Assert.Equal(expectedShare, set.LocalShare, precision: 12);
        Assert.Equal(expectedPanic, set.Panic?.Scope);
        Assert.Equal(expectedCandidates, set.Candidates.Length);
        Assert.All(set.Candidates, c => Assert.Equal(EndpointConditions.None, c.Conditions));
        Assert.Equal(states.Count, set.All.Length);
        Assert.False(set.IsPending);
    }

    [Fact]
    public void Create_EveryEndpointAwaitingItsFirstHealthCheck_PendingLikeDiscoverysFirstAnswer()
    {
        var states = Enumerable.Range(1, 3).Select(i =>
        {
            var state = new EndpointState(new ServiceEndpoint(new Uri($"http://10.0.1.{i}:8080")));
            state.Set(EndpointConditions.AwaitingHealthCheck, true);
            return state;
        }).ToArray();

        var set = EndpointSet.Create("catalog", states, null, new RandomLoadBalancingPolicy(), new LoadBalancerOptions(), panicThreshold: 50);

        Assert.True(set.IsPending);
        Assert.True(set.AwaitsHealthChecks);
        Assert.Empty(set.Candidates);
        Assert.Equal(3, set.All.Length);
        Assert.Contains("first health check", set.EmptyReason, StringComparison.Ordinal);
    }

    [Fact]
    public void Create_NothingCountedAvailableWhileOthersAwaitTheirFirstProbe_PendingNotPanic()
    {
        // The first result was a failure: counted alone, the failed endpoint would be 0 of 1 (panic mode, or refusal with
        // panic off) while the two others may pass a moment later.
        var failed = new EndpointState(new ServiceEndpoint(new Uri("http://10.0.1.1:8080")));
        failed.Set(EndpointConditions.FailedHealthCheck, true);
        var waiting = Enumerable.Range(2, 2).Select(i =>
        {
            var state = new EndpointState(new ServiceEndpoint(new Uri($"http://10.0.1.{i}:8080")));
            state.Set(EndpointConditions.AwaitingHealthCheck, true);
            return state;
        });

        var set = EndpointSet.Create("catalog", [failed, .. waiting], null, new RandomLoadBalancingPolicy(), new LoadBalancerOptions(), panicThreshold: 50);

        Assert.True(set.IsPending);
        Assert.True(set.AwaitsHealthChecks);
        Assert.False(set.IsPanic);
        Assert.Empty(set.Candidates);
        Assert.Equal("none of its 3 endpoints is available and 2 have not answered their first health check yet", set.EmptyReason);
    }

    [Fact]
    public void Create_EveryServingEndpointEjectedWhileANewcomerAwaitsItsProbe_PanicModeAsBeforeNotAWait()
    {
        // An outage found by passive signals (ejections, open circuits) keeps panic mode: a scale-out in the middle of it
        // must not make every call wait for the newcomer's first probe.
        var ejected = Enumerable.Range(1, 2).Select(i =>
        {
            var state = new EndpointState(new ServiceEndpoint(new Uri($"http://10.0.1.{i}:8080")));
            state.Set(i == 1 ? EndpointConditions.Ejected : EndpointConditions.CircuitOpen, true);
            return state;
        }).ToArray();
        var newcomer = new EndpointState(new ServiceEndpoint(new Uri("http://10.0.1.3:8080")));
        newcomer.Set(EndpointConditions.AwaitingHealthCheck, true);

        var set = EndpointSet.Create("catalog", [.. ejected, newcomer], null, new RandomLoadBalancingPolicy(), new LoadBalancerOptions(), panicThreshold: 50);

        Assert.False(set.IsPending);
        Assert.True(set.IsPanic);
        Assert.Equal(ejected, set.Candidates);

        // With panic mode off there is nothing to serve meanwhile: calls wait for the newcomer rather than be refused.
        var panicOff = EndpointSet.Create("catalog", [.. ejected, newcomer], null, new RandomLoadBalancingPolicy(), new LoadBalancerOptions(), panicThreshold: 0);
        Assert.True(panicOff.IsPending);
        Assert.True(panicOff.AwaitsHealthChecks);
    }

    [Fact]
    public void Create_NoApplicationZone_EverythingIsLocal()
    {
        var states = new[]
        {
            new EndpointState(new ServiceEndpoint(new Uri("http://10.0.1.1:8080"), zone: "z1")),
            new EndpointState(new ServiceEndpoint(new Uri("http://10.0.2.1:8080"), zone: "z2")),
        };

        var set = EndpointSet.Create("catalog", states, localZone: null, new RoundRobinLoadBalancingPolicy(), new LoadBalancerOptions());

        Assert.Equal(1.0, set.LocalShare);
        var picked = Enumerable.Range(0, 10).Select(_ => set.Pick(new PickContext(null))!).ToHashSet();
        Assert.Equal(states.ToHashSet(), picked);
    }

    [Fact]
    public async Task Pick_AllLocalEndpointsAvailable_EveryRequestStaysInLocalZone()
    {
        await using var servers = await ServerGroup.StartAsync("z1a", "z1b", "z2a", "z2b");
        await using var governed = Governed.Create(ZonedSettings(servers, "z1"));

        var counts = Traffic.Count(await Traffic.SendParallelAsync(governed, 400, concurrency: 8), servers.Servers);
        output.WriteLine(Traffic.Describe(counts));

        // Exact: zone routing is deterministic at share 1, and round robin splits 400 picks 200/200 inside the zone.
        Assert.Equal(0, counts["z2a"] + counts["z2b"]);
        Assert.InRange(counts["z1a"], 199, 201);
        Assert.InRange(counts["z1b"], 199, 201);
    }

    [Fact]
    public async Task Pick_OneOfTwoLocalEndpointsUnavailable_SeventyPercentStaysLocalThenAllAfterReadmit()
    {
        await using var servers = await ServerGroup.StartAsync("z1a", "z1b", "z2a", "z2b");
        await using var governed = Governed.Create(ZonedSettings(servers, "z1"));
        var service = Traffic.Runtime(governed);

        Traffic.State(governed, servers[1]).SetAvailable(false);
        service.Refresh();
        Assert.Equal(0.7, service.Endpoints.LocalShare, precision: 12);

        var counts = Traffic.Count(await Traffic.SendParallelAsync(governed, 2000, concurrency: 16), servers.Servers);
        var local = counts["z1a"] / 2000.0;
        output.WriteLine($"{Traffic.Describe(counts)}; local share {local:P2} (expected 70%)");

        // min(1, 1.4 x 1/2) = 0.7; sigma = sqrt(0.7 x 0.3 / 2000) = 1.0 point, so ±6 points is 5.9 sigma; staying all
        // local (100%) or splitting by endpoint count (33%) fails.
        Assert.InRange(local, 0.64, 0.76);
        Assert.Equal(0, counts["z1b"]);
        Assert.Equal(0, servers[1].RequestCount);

        // The spill-over is round robin inside z2: an exact split (±1) between its two endpoints.
        Assert.InRange(counts["z2a"] - counts["z2b"], -1, 1);

        Traffic.State(governed, servers[1]).SetAvailable(true);
        service.Refresh();
        var readmitted = Traffic.Count(await Traffic.SendParallelAsync(governed, 200, concurrency: 8), servers.Servers);
        output.WriteLine($"after readmit: {Traffic.Describe(readmitted)}");
        Assert.Equal(200, readmitted["z1a"] + readmitted["z1b"]);
        Assert.InRange(readmitted["z1b"], 99, 101);
    }

    [Fact]
    public async Task Pick_AllLocalEndpointsUnavailable_EverythingSpillsToOtherZones()
    {
        await using var servers = await ServerGroup.StartAsync("z1a", "z1b", "z2a", "z2b");
        await using var governed = Governed.Create(ZonedSettings(servers, "z1"));
        var service = Traffic.Runtime(governed);
        Traffic.State(governed, servers[0]).SetAvailable(false);
        Traffic.State(governed, servers[1]).SetAvailable(false);
        service.Refresh();

        var counts = Traffic.Count(await Traffic.SendParallelAsync(governed, 400, concurrency: 8), servers.Servers);
        output.WriteLine(Traffic.Describe(counts));

        Assert.Equal(0, counts["z1a"] + counts["z1b"]);
        Assert.InRange(counts["z2a"], 199, 201);
    }

    [Fact]
    public async Task Pick_EveryEndpointUnavailable_ThrowsNoAvailableEndpointWithoutNetwork()
    {
        await using var servers = await ServerGroup.StartAsync("z1a", "z1b", "z2a", "z2b");
        await using var governed = Governed.Create(ZonedSettings(servers, "z1"));
        var service = Traffic.Runtime(governed);
        foreach (var state in service.Endpoints.All)
        {
            state.SetAvailable(false);
        }

        service.Refresh();

        var error = await Assert.ThrowsAsync<NoAvailableEndpointException>(() => Traffic.SendAsync(governed));
        output.WriteLine(error.Message);
        Assert.Equal("catalog", error.ServiceName);
        Assert.Equal("Service 'catalog' has no available endpoint: all 4 endpoints are unavailable", error.Message);
        Assert.All(servers.Servers, s => Assert.Equal(0, s.RequestCount));
    }

    [Fact]
    public async Task Pick_NoEndpointInLocalZone_UsesAllOtherEndpoints()
    {
        await using var servers = await ServerGroup.StartAsync("z1a", "z1b", "z2a", "z2b");
        await using var governed = Governed.Create(ZonedSettings(servers, "z3"));

        var counts = Traffic.Count(await Traffic.SendParallelAsync(governed, 400, concurrency: 8), servers.Servers);
        output.WriteLine(Traffic.Describe(counts));

        // Round robin over all four: exactly 100 each (±1).
        Assert.All(counts.Values, c => Assert.InRange(c, 99, 101));
    }

    [Theory]
    [InlineData("z3", true)] // a typo: no configured endpoint is in it
    [InlineData(" Z1 ", false)] // zones compare without case and surrounding blanks, on both sides
    public async Task Create_ApplicationZoneMatchesNoConfiguredEndpoint_WarnsNamingTheKeyAndTheZones(string zone, bool warns)
    {
        await using var servers = await ServerGroup.StartAsync("z1a", "z1b", "z2a", "z2b");
        var settings = ZonedSettings(servers, zone);
        settings["Services:catalog:Endpoints:0:Zone"] = "z1 ";
        var logs = new CapturingLoggerProvider();
        await using var governed = Governed.Create(settings, services => services.AddLogging(l => l.AddProvider(logs)));

        var warnings = logs.Entries.Where(e => e.EventId.Id == Governance.Telemetry.GovernanceEventIds.ApplicationZoneUnmatched).ToList();
        warnings.ForEach(w => output.WriteLine(w.Message));

        if (warns)
        {
            var warning = Assert.Single(warnings);
            Assert.Equal(LogLevel.Warning, warning.Level);
            Assert.Equal("MeshGovernance:Application:Zone 'z3' matches the Zone of no configured endpoint (zones configured: z1, z2): zone-aware routing prefers no endpoint until endpoints of that zone appear", warning.Message);
        }
        else
        {
            Assert.Empty(warnings);
            Assert.Equal("z1", Traffic.Runtime(governed).Endpoints.All[0].Endpoint.Zone);
        }
    }

    [Fact]
    public async Task Pick_EndpointsHaveZonesButApplicationZoneUnset_UsesAllEndpoints()
    {
        await using var servers = await ServerGroup.StartAsync("z1a", "z1b", "z2a", "z2b");
        await using var governed = Governed.Create(ZonedSettings(servers, applicationZone: null));

        var counts = Traffic.Count(await Traffic.SendParallelAsync(governed, 400, concurrency: 8), servers.Servers);
        output.WriteLine(Traffic.Describe(counts));

        Assert.Equal(1.0, Traffic.Runtime(governed).Endpoints.LocalShare);
        Assert.All(counts.Values, c => Assert.InRange(c, 99, 101));
    }

    private static Dictionary<string, string?> ZonedSettings(ServerGroup servers, string? applicationZone)
    {
        var settings = Traffic.Settings("RoundRobin", servers.Servers, zones: ["z1", "z1", "z2", "z2"]);
        if (applicationZone is not null)
        {
            settings["Application:Zone"] = applicationZone;
        }

        return settings;
    }
}
