using Governance.Pipeline;
using Governance.Telemetry;
using Governance.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Governance.Tests.Resilience;

/// <summary>Outlier ejection and panic mode of one service, driven through a governed client against real servers.</summary>
public sealed class ServiceRuntimeTests(ITestOutputHelper output)
{
    private static readonly TimeSpan BaseEjection = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task RecordOutcome_OneOfThreeEndpointsAlways503_EjectedThenReadmittedAndReejectedForTwiceAsLong()
    {
        var time = new ObservedTimeProvider();
        var logs = new CapturingLoggerProvider();
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        await using var bad = await Faults.StartStatusAsync("bad", 503);
        var settings = Faults.Settings(a, b, bad)
            .With("CircuitBreaker:Enabled", false)
            .With("OutlierDetection:Consecutive5xx", 5)
            .With("OutlierDetection:BaseEjectionTime", BaseEjection)
            .With("OutlierDetection:MaxEjectionTime", TimeSpan.FromMinutes(5))
            .With("Timeout:Total", TimeSpan.FromSeconds(20));
        await using var governed = Faults.Create(settings, time, logs);
        var badState = Faults.State(governed, bad);

        // Phase 1: 2,000 GETs, 8 in flight. The failing endpoint's 503s are retried on the others, and after five in a
        // row it is ejected; the fake clock does not move, so the ejection lasts the whole burst.
        const int Requests = 2000;
        const int Concurrency = 8;
        var burst = await Faults.SendManyAsync(governed, Requests, Concurrency);
        var succeeded = burst.Count(r => r.Succeeded);
        var badShare = (double)bad.RequestCount / (a.RequestCount + b.RequestCount + bad.RequestCount);
        output.WriteLine($"burst: {succeeded}/{Requests} succeeded ({(double)succeeded / Requests:P2}); {Faults.Describe(burst)}");
        output.WriteLine($"server requests: a={a.RequestCount} b={b.RequestCount} bad={bad.RequestCount} (bad share {badShare:P2})");

        Assert.True(succeeded >= Requests * 0.999, $"{succeeded}/{Requests} succeeded, below 99.9%: {Faults.Describe(burst)}");
        Assert.True(Faults.Has(badState, EndpointConditions.Ejected), $"bad not ejected: {badState.Conditions}");
        Assert.True(bad.RequestCount <= 5 + Concurrency, $"bad received {bad.RequestCount} requests; ejection after 5 consecutive 503s allows at most 5 + {Concurrency} in flight");
        Assert.Equal(1, badState.EjectionCount);

        // While ejected it gets nothing.
        var beforeIdle = bad.RequestCount;
        var idle = await Faults.SendManyAsync(governed, 300, Concurrency);
        Assert.All(idle, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(beforeIdle, bad.RequestCount);

        // Phase 2: once BaseEjectionTime has passed on the fake clock it is readmitted and gets traffic again, fails five
        // times in a row (one request at a time, so exactly five) and is ejected a second time.
        await time.WaitForTimersAsync(BaseEjection, 1).WaitAsync(Faults.Guard);
        time.Advance(BaseEjection); // The readmission runs in the timer's callback, inside Advance.
        Assert.False(Faults.Has(badState, EndpointConditions.Ejected), "bad not readmitted after BaseEjectionTime");
        var beforeReadmission = bad.RequestCount;
        var readmitted = await Faults.SendSequentialAsync(governed, 30);
        var reejectedAfter = bad.RequestCount - beforeReadmission;
        output.WriteLine($"after readmission: bad received {reejectedAfter} requests before its second ejection; {Faults.Describe(readmitted)}");

        Assert.All(readmitted, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(5, reejectedAfter);
        Assert.True(Faults.Has(badState, EndpointConditions.Ejected), $"bad not re-ejected: {badState.Conditions}");
        Assert.Equal(2, badState.EjectionCount);

        // Phase 3: the second ejection lasts 2 x BaseEjectionTime: still out after one BaseEjectionTime, back after two.
        await time.WaitForTimersAsync(2 * BaseEjection, 1).WaitAsync(Faults.Guard);
        time.Advance(BaseEjection);
        var stillOut = bad.RequestCount;
        Assert.True(Faults.Has(badState, EndpointConditions.Ejected), "second ejection ended after one BaseEjectionTime");
        Assert.All(await Faults.SendSequentialAsync(governed, 30), r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(stillOut, bad.RequestCount);

        time.Advance(BaseEjection);
        Assert.False(Faults.Has(badState, EndpointConditions.Ejected), "bad not readmitted after 2 x BaseEjectionTime");
        Assert.All(await Faults.SendSequentialAsync(governed, 6), r => Assert.True(r.Succeeded, r.ToString()));
        Assert.True(bad.RequestCount > stillOut, "bad got no traffic after its second readmission");

        var ejections = logs.Entries.Where(e => e.EventId.Id == GovernanceEventIds.EndpointEjected).Select(e => e.Message).ToArray();
        output.WriteLine(string.Join(Environment.NewLine, ejections));
        Assert.Equal(2, ejections.Length);
        Assert.Contains($"ejected for {BaseEjection} (backoff 1 x", ejections[0], StringComparison.Ordinal);
        Assert.Contains($"ejected for {2 * BaseEjection} (backoff 2 x", ejections[1], StringComparison.Ordinal);
        Assert.Equal(2, logs.Entries.Count(GovernanceEventIds.EndpointReadmitted));
    }

    [Fact]
    public async Task Publish_ThreeOfFourEndpointsEjected_PanicModeSendsTrafficToAllEndpoints()
    {
        var time = new ObservedTimeProvider();
        var logs = new CapturingLoggerProvider();
        await using var good = await LoopbackServer.StartAsync("good");
        await using var bad1 = await Faults.StartStatusAsync("bad1", 503);
        await using var bad2 = await Faults.StartStatusAsync("bad2", 503);
        await using var bad3 = await Faults.StartStatusAsync("bad3", 503);
        LoopbackServer[] servers = [good, bad1, bad2, bad3];
        var settings = Faults.Settings(servers)
            .With("CircuitBreaker:Enabled", false)
            .With("OutlierDetection:Consecutive5xx", 1)
            .With("OutlierDetection:MaxEjectionPercent", 100)
            .With("Retry:MaxRetries", 3)
            .With("Retry:Budget:RetryPercent", 1000);
        await using var governed = Faults.Create(settings, time, logs);
        var runtime = Faults.Runtime(governed);

        // Each failing endpoint is ejected on its first 503; with three of four out, 25% are available, below the
        // default panic threshold of 50%.
        for (var i = 0; i < 40 && !runtime.Endpoints.IsPanic; i++)
        {
            Assert.True((await Faults.TryGetAsync(governed)).Succeeded);
        }

        Assert.True(runtime.Endpoints.IsPanic, "no panic mode after 40 requests");
        Assert.All([bad1, bad2, bad3], s => Assert.True(Faults.Has(Faults.State(governed, s), EndpointConditions.Ejected), $"{s.Name} not ejected"));

        var before = servers.Select(s => s.RequestCount).ToArray();
        var results = await Faults.SendSequentialAsync(governed, 40);
        var delta = servers.Select((s, i) => s.RequestCount - before[i]).ToArray();
        output.WriteLine($"in panic mode, 40 GETs: {string.Join(", ", servers.Select((s, i) => $"{s.Name}={delta[i]}"))}; {Faults.Describe(results)}");

        // Panic mode ignores the ejections: every endpoint gets traffic; retries (avoiding tried endpoints) reach "good".
        Assert.All(delta, d => Assert.True(d > 0, $"an endpoint got no traffic in panic mode: {string.Join(",", delta)}"));
        Assert.All(results, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.All([bad1, bad2, bad3], s => Assert.True(Faults.Has(Faults.State(governed, s), EndpointConditions.Ejected), $"{s.Name} ejection lost in panic mode"));

        var panic = Assert.Single(logs.Entries, e => e.EventId.Id == GovernanceEventIds.PanicMode);
        output.WriteLine(panic.Message);
        Assert.Equal(Microsoft.Extensions.Logging.LogLevel.Warning, panic.Level);
        Assert.Contains("3 of the 4 endpoints of the service are unavailable", panic.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Publish_PanicModeWithDisabledEndpoint_DisabledEndpointGetsNoTraffic()
    {
        var time = new ObservedTimeProvider();
        var logs = new CapturingLoggerProvider();
        await using var good = await LoopbackServer.StartAsync("good");
        await using var off = await LoopbackServer.StartAsync("off");
        await using var bad1 = await Faults.StartStatusAsync("bad1", 503);
        await using var bad2 = await Faults.StartStatusAsync("bad2", 503);
        LoopbackServer[] servers = [good, off, bad1, bad2];
        var settings = Faults.Settings(servers)
            .With("CircuitBreaker:Enabled", false)
            .With("OutlierDetection:Consecutive5xx", 1)
            .With("OutlierDetection:MaxEjectionPercent", 100)
            .With("Retry:MaxRetries", 3)
            .With("Retry:Budget:RetryPercent", 1000);
        await using var governed = Faults.Create(settings, time, logs);
        var runtime = Faults.Runtime(governed);

        // An operator takes "off" out; then both failing endpoints are ejected: 1 of 4 available, panic.
        Assert.True(Faults.State(governed, off).SetAvailable(false));
        runtime.Refresh();
        for (var i = 0; i < 40 && !runtime.Endpoints.IsPanic; i++)
        {
            Assert.True((await Faults.TryGetAsync(governed)).Succeeded);
        }

        Assert.True(runtime.Endpoints.IsPanic, "no panic mode after 40 requests");
        var before = servers.Select(s => s.RequestCount).ToArray();
        var results = await Faults.SendSequentialAsync(governed, 30);
        var delta = servers.Select((s, i) => s.RequestCount - before[i]).ToArray();
        output.WriteLine($"in panic mode, 30 GETs: {string.Join(", ", servers.Select((s, i) => $"{s.Name}={delta[i]}"))}; {Faults.Describe(results)}");

        Assert.Equal(0, off.RequestCount);
        Assert.True(delta[0] > 0 && delta[2] > 0 && delta[3] > 0, $"a non-disabled endpoint got no traffic: {string.Join(",", delta)}");
        Assert.All(results, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(1, logs.Entries.Count(GovernanceEventIds.PanicMode));
    }

    [Fact]
    public async Task RecordOutcome_RepeatedEjections_GrowToMaxEjectionTimeAndDecayByOnePerTenSecondsIn()
    {
        // Envoy's backoff: n grows by one per ejection, stops where n x Base reaches Max, and falls by one for every 10 s
        // the endpoint stays in. Base 30 s, Max 100 s: 30, 60, 90, 100 (n = 4, the cap), 100 again.
        var time = new ObservedTimeProvider();
        var maxEjection = TimeSpan.FromSeconds(100);
        var failing = true;
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        await using var flaky = await LoopbackServer.StartAsync("flaky", context =>
        {
            context.Response.StatusCode = Volatile.Read(ref failing) ? 503 : 200;
            return Task.CompletedTask;
        });
        var settings = Faults.Settings(a, b, flaky)
            .With("CircuitBreaker:Enabled", false)
            .With("OutlierDetection:Consecutive5xx", 3)
            .With("OutlierDetection:BaseEjectionTime", BaseEjection)
            .With("OutlierDetection:MaxEjectionTime", maxEjection)
            .With("Timeout:Total", TimeSpan.FromSeconds(20));
        await using var governed = Faults.Create(settings, time);
        var flakyState = Faults.State(governed, flaky);

        async Task EjectAsync(int expectedCount, TimeSpan expectedDuration, int timersBefore)
        {
            for (var i = 0; i < 200 && !Faults.Has(flakyState, EndpointConditions.Ejected); i++)
            {
                Assert.True((await Faults.TryGetAsync(governed)).Succeeded);
            }

            Assert.True(Faults.Has(flakyState, EndpointConditions.Ejected), "not ejected after 200 requests");
            Assert.Equal(expectedCount, flakyState.EjectionCount);
            await time.WaitForTimersAsync(expectedDuration, timersBefore + 1).WaitAsync(Faults.Guard);
        }

        // The readmission runs inside Advance (the fake clock fires due timers synchronously).
        void ReadmitAfter(TimeSpan duration)
        {
            time.Advance(duration - TimeSpan.FromTicks(1));
            Assert.True(Faults.Has(flakyState, EndpointConditions.Ejected), $"readmitted before {duration}");
            time.Advance(TimeSpan.FromTicks(1));
            Assert.False(Faults.Has(flakyState, EndpointConditions.Ejected), $"not readmitted after {duration}");
        }

        async Task StayInAsync(TimeSpan healthy)
        {
            Volatile.Write(ref failing, false);
            Assert.All(await Faults.SendSequentialAsync(governed, 10), r => Assert.True(r.Succeeded, r.ToString()));
            time.Advance(healthy);
            Volatile.Write(ref failing, true);
        }

        // Re-ejected at once after each readmission: the backoff grows, capped at 100 s (n = 4, not 120 s).
        await EjectAsync(1, BaseEjection, 0);
        ReadmitAfter(BaseEjection);
        await EjectAsync(2, 2 * BaseEjection, 0);
        ReadmitAfter(2 * BaseEjection);
        await EjectAsync(3, 3 * BaseEjection, 0);
        ReadmitAfter(3 * BaseEjection);
        await EjectAsync(4, maxEjection, 0);
        ReadmitAfter(maxEjection);
        await EjectAsync(4, maxEjection, 1);
        Assert.Equal(0, time.TimersCreated(4 * BaseEjection));
        ReadmitAfter(maxEjection);

        // 25 s in: two decays (4 - 2), then one more: n = 3, 90 s.
        await StayInAsync(TimeSpan.FromSeconds(25));
        await EjectAsync(3, 3 * BaseEjection, 1);
        ReadmitAfter(3 * BaseEjection);

        // 40 s in: four decays, n back to 0, then one more: 30 s, as the first ejection.
        await StayInAsync(TimeSpan.FromSeconds(40));
        await EjectAsync(1, BaseEjection, 1);
        output.WriteLine($"ejections: 30, 60, 90, 100, 100 s re-ejected at once; 90 s after 25 s in; 30 s after 40 s in");
    }

    [Theory]
    [InlineData(25, 1)] // 25 % of 4 is one endpoint: the second failing one stays in
    [InlineData(50, 2)] // both may go; 2 of 4 available is 50 %, not below the panic threshold of 50: no panic
    public async Task TryEject_MaxEjectionPercent_LimitsHowManyAreOutAndPanicStartsOnlyBelowTheThreshold(int maxEjectionPercent, int expectedEjected)
    {
        var time = new ObservedTimeProvider();
        await using var good1 = await LoopbackServer.StartAsync("good1");
        await using var good2 = await LoopbackServer.StartAsync("good2");
        await using var bad1 = await Faults.StartStatusAsync("bad1", 503);
        await using var bad2 = await Faults.StartStatusAsync("bad2", 503);
        var settings = Faults.Settings(good1, good2, bad1, bad2)
            .With("CircuitBreaker:Enabled", false)
            .With("OutlierDetection:Consecutive5xx", 2)
            .With("OutlierDetection:MaxEjectionPercent", maxEjectionPercent)
            .With("OutlierDetection:PanicThreshold", 50)
            .With("Retry:MaxRetries", 3)
            .With("Retry:Budget:RetryPercent", 1000);
        await using var governed = Faults.Create(settings, time);
        var runtime = Faults.Runtime(governed);

        // Enough traffic for both failing endpoints to fail twice in a row many times over.
        var results = await Faults.SendSequentialAsync(governed, 200);
        var ejected = new[] { bad1, bad2 }.Count(s => Faults.Has(Faults.State(governed, s), EndpointConditions.Ejected));
        output.WriteLine($"MaxEjectionPercent {maxEjectionPercent}: {ejected} of 2 failing endpoints ejected; panic {runtime.Endpoints.IsPanic}; bad1={bad1.RequestCount} bad2={bad2.RequestCount}; {Faults.Describe(results)}");

        Assert.All(results, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(expectedEjected, ejected);
        Assert.False(runtime.Endpoints.IsPanic);
        Assert.False(Faults.Has(Faults.State(governed, good1), EndpointConditions.Ejected));
        Assert.False(Faults.Has(Faults.State(governed, good2), EndpointConditions.Ejected));
    }

    [Fact]
    public async Task Publish_PanicThresholdZero_NeverPanicsAndEjectedEndpointsGetNothing()
    {
        var time = new ObservedTimeProvider();
        await using var good = await LoopbackServer.StartAsync("good");
        await using var bad1 = await Faults.StartStatusAsync("bad1", 503);
        await using var bad2 = await Faults.StartStatusAsync("bad2", 503);
        await using var bad3 = await Faults.StartStatusAsync("bad3", 503);
        var settings = Faults.Settings(good, bad1, bad2, bad3)
            .With("CircuitBreaker:Enabled", false)
            .With("OutlierDetection:Consecutive5xx", 1)
            .With("OutlierDetection:MaxEjectionPercent", 100)
            .With("OutlierDetection:PanicThreshold", 0)
            .With("Retry:MaxRetries", 3)
            .With("Retry:Budget:RetryPercent", 1000);
        await using var governed = Faults.Create(settings, time);
        var runtime = Faults.Runtime(governed);

        for (var i = 0; i < 60 && new[] { bad1, bad2, bad3 }.Any(s => !Faults.Has(Faults.State(governed, s), EndpointConditions.Ejected)); i++)
        {
            Assert.True((await Faults.TryGetAsync(governed)).Succeeded);
        }

        var before = bad1.RequestCount + bad2.RequestCount + bad3.RequestCount;
        var results = await Faults.SendSequentialAsync(governed, 30);

        Assert.All([bad1, bad2, bad3], s => Assert.True(Faults.Has(Faults.State(governed, s), EndpointConditions.Ejected), $"{s.Name} not ejected"));
        Assert.False(runtime.Endpoints.IsPanic);
        Assert.All(results, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(before, bad1.RequestCount + bad2.RequestCount + bad3.RequestCount);
    }
}
