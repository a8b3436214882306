using Governance.Pipeline;
using Governance.Resilience;
using Governance.Telemetry;
using Governance.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Xunit.Abstractions;

namespace Governance.Tests.Resilience;

/// <summary>Active health checks on a fake clock: each probe round is triggered by advancing one <c>Interval</c>.</summary>
public sealed class HealthCheckerTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(7);

    [Fact]
    public async Task RunAsync_HealthEndpointFailsThenRecovers_EndpointOutOfLoadBalancingMeanwhile()
    {
        var time = new ObservedTimeProvider();
        var logs = new CapturingLoggerProvider();
        var a = new Backend("a");
        var b = new Backend("b");
        var sick = new Backend("sick");
        await using var serverA = await a.StartAsync();
        await using var serverB = await b.StartAsync();
        await using var serverSick = await sick.StartAsync();
        var settings = Checked(serverA, serverB, serverSick)
            .With("HealthCheck:Timeout", TimeSpan.FromSeconds(2))
            .With("HealthCheck:UnhealthyThreshold", 2)
            .With("HealthCheck:HealthyThreshold", 1);
        await using var governed = Faults.Create(settings, time, logs);
        var sickState = Faults.State(governed, serverSick);
        var rounds = 0;

        // The checker probes once at start, then after every Interval; a round is over when its pause timer exists.
        async Task NextRoundAsync()
        {
            if (rounds > 0)
            {
                time.Advance(Interval);
            }

            rounds++;
            await time.WaitForTimersAsync(Interval, rounds).WaitAsync(Faults.Guard);
        }

        await NextRoundAsync();
        Assert.All([a, b, sick], s => Assert.Equal(1, s.Probes));
        Assert.All(Faults.Runtime(governed).Endpoints.All, s => Assert.Equal(EndpointConditions.None, s.Conditions));
        Assert.All(await Faults.SendSequentialAsync(governed, 30), r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(10, sick.Traffic);

        // /health starts failing: one failed round is below UnhealthyThreshold 2, the second takes it out.
        sick.Healthy = false;
        await NextRoundAsync();
        Assert.False(Faults.Has(sickState, EndpointConditions.FailedHealthCheck), "out after one failed probe; UnhealthyThreshold is 2");
        await NextRoundAsync();
        Assert.True(Faults.Has(sickState, EndpointConditions.FailedHealthCheck), $"not out after two failed probes: {sickState.Conditions}");
        var failed = Assert.Single(logs.Entries, e => e.EventId.Id == GovernanceEventIds.HealthCheckFailed);
        output.WriteLine(failed.Message);
        Assert.Contains(sickState.Authority, failed.Message, StringComparison.Ordinal);

        // No governed traffic reaches it while it is unhealthy, whatever the concurrency.
        var trafficBefore = sick.Traffic;
        var whileSick = await Faults.SendManyAsync(governed, 120, 4);
        output.WriteLine($"while sick: 120 GETs -> {Faults.Describe(whileSick)}; sick received {sick.Traffic - trafficBefore}");
        Assert.All(whileSick, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(trafficBefore, sick.Traffic);

        // One good probe (HealthyThreshold 1) brings it back.
        sick.Healthy = true;
        await NextRoundAsync();
        Assert.Equal(EndpointConditions.None, sickState.Conditions);
        Assert.Equal(1, logs.Entries.Count(GovernanceEventIds.HealthCheckRecovered));
        var recovered = await Faults.SendSequentialAsync(governed, 30);
        output.WriteLine($"after recovery: 30 GETs -> {Faults.Describe(recovered)}; probes a={a.Probes} b={b.Probes} sick={sick.Probes} over {rounds} rounds");
        Assert.All(recovered, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(trafficBefore + 10, sick.Traffic);
        Assert.All([a, b, sick], s => Assert.Equal(rounds, s.Probes));

        // Probes never go through the governed pipeline and healthy endpoints were never flagged.
        Assert.All([a, b], s => Assert.Equal(EndpointConditions.None, Faults.Runtime(governed).Endpoints.All.Single(e => e.Authority.EndsWith($":{s.Port}", StringComparison.Ordinal)).Conditions));
    }

    [Fact]
    public async Task Reload_HealthChecksOffThenOn_OldCheckerStopsAndNewOneProbes()
    {
        var time = new ObservedTimeProvider();
        var a = new Backend("a");
        var b = new Backend("b");
        await using var serverA = await a.StartAsync();
        await using var serverB = await b.StartAsync();
        var settings = Checked(serverA, serverB)
            .With("HealthCheck:Timeout", TimeSpan.FromSeconds(2));
        await using var governed = Faults.Create(settings, time);
        const string PathKey = $"MeshGovernance:Services:{Faults.Service}:HealthCheck:Path";

        // The first round ends with the pause before the next one.
        await time.WaitForTimersAsync(Interval, 1).WaitAsync(Faults.Guard);
        Assert.All([a, b], s => Assert.Equal(1, s.Probes));
        var old = Checker(governed);
        Assert.NotNull(old);

        // Off by reload (an empty Path; without the key, its Interval and Timeout would be errors: they would do nothing):
        // the checker is told to stop. Its pause may still fire (its cancellation callbacks run on the thread pool), so
        // the clock moves past several intervals: a checker that did not stop would start another round. Once its loop
        // has ended nothing of it can run any more, and it made no probe and no pause after the first round.
        governed.Configuration[PathKey] = string.Empty;
        governed.Configuration.Reload();
        Assert.Null(Faults.Runtime(governed).Settings.Resilience.HealthCheck);
        Assert.Null(Checker(governed));
        time.Advance(3 * Interval);
        await Task.WhenAny(old.Completion).WaitAsync(Faults.Guard);
        Assert.Equal(1, time.TimersCreated(Interval));
        Assert.All([a, b], s => Assert.Equal(1, s.Probes));

        // On again by reload: a new checker (the only one left) probes every endpoint exactly once, then pauses.
        governed.Configuration[PathKey] = "/health";
        governed.Configuration.Reload();
        Assert.NotSame(old, Checker(governed));
        await time.WaitForTimersAsync(Interval, 2).WaitAsync(Faults.Guard);
        output.WriteLine($"probes after on, off (3 intervals, old checker's loop ended {old.Completion.Status}), on: a={a.Probes} b={b.Probes}; Interval timers created {time.TimersCreated(Interval)}, fired {time.TimersFired(Interval)}");
        Assert.All([a, b], s => Assert.Equal(2, s.Probes));
    }

    [Fact]
    public async Task HealthChecksAndPassiveEjection_EitherExcludesTheEndpointAndItReturnsOnlyWhenNeitherDoes()
    {
        var time = new ObservedTimeProvider();
        var a = new Backend("a");
        var flaky = new Backend("flaky");
        await using var serverA = await a.StartAsync();
        await using var serverFlaky = await flaky.StartAsync();
        var settings = Checked(serverA, serverFlaky)
            .With("HealthCheck:UnhealthyThreshold", 1)
            .With("HealthCheck:HealthyThreshold", 1)
            .With("OutlierDetection:Consecutive5xx", 1)
            .With("OutlierDetection:PanicThreshold", 0)
            .With("CircuitBreaker:Enabled", false);
        await using var governed = Faults.Create(settings, time);
        var state = Faults.State(governed, serverFlaky);
        var service = Faults.Runtime(governed);
        var rounds = 1;
        await time.WaitForTimersAsync(Interval, 1).WaitAsync(Faults.Guard);

        async Task NextRoundAsync()
        {
            time.Advance(Interval);
            rounds++;
            await time.WaitForTimersAsync(Interval, rounds).WaitAsync(Faults.Guard);
        }

        // Passive: /health is fine but calls get 503; one is enough to eject it. Health checks do not bring it back.
        flaky.TrafficStatus = 503;
        for (var i = 0; i < 4 && !Faults.Has(state, EndpointConditions.Ejected); i++)
        {
            Assert.True((await Faults.TryGetAsync(governed)).Succeeded);
        }

        Assert.Equal(EndpointConditions.Ejected, state.Conditions);
        await NextRoundAsync();
        Assert.Equal(EndpointConditions.Ejected, state.Conditions);
        Assert.Single(service.Endpoints.Candidates);

        // Active too: /health fails as well. When the ejection ends (30 s), the failed health check still keeps it out.
        flaky.Healthy = false;
        await NextRoundAsync();
        Assert.Equal(EndpointConditions.Ejected | EndpointConditions.FailedHealthCheck, state.Conditions);
        while (Faults.Has(state, EndpointConditions.Ejected))
        {
            await NextRoundAsync();
        }

        Assert.Equal(EndpointConditions.FailedHealthCheck, state.Conditions);
        Assert.Single(service.Endpoints.Candidates);
        var traffic = flaky.Traffic;
        Assert.All(await Faults.SendSequentialAsync(governed, 10), r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(traffic, flaky.Traffic);

        // Healthy on both counts: back in load balancing.
        flaky.Healthy = true;
        flaky.TrafficStatus = 200;
        await NextRoundAsync();
        Assert.Equal(EndpointConditions.None, state.Conditions);
        Assert.Equal(2, service.Endpoints.Candidates.Length);
        Assert.All(await Faults.SendSequentialAsync(governed, 10), r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(traffic + 5, flaky.Traffic);
        output.WriteLine($"health rounds {rounds}; flaky got {flaky.Traffic} calls, a {a.Traffic}");
    }

    [Theory]
    [InlineData("Http2", false)]
    [InlineData("Http1", true)] // an HTTP/1.1 probe cannot talk to a server that speaks HTTP/2 only
    public async Task RunAsync_Http2OnlyEndpoint_ProtocolDecidesWhetherTheProbeGetsAnAnswer(string protocol, bool failed)
    {
        var time = new ObservedTimeProvider();
        var probes = 0;
        await using var h2c = await LoopbackServer.StartHttp2OnlyAsync("h2c", context =>
        {
            Interlocked.Increment(ref probes);
            return context.Response.WriteAsync($"{context.Request.Protocol}", context.RequestAborted);
        });
        await using var other = await LoopbackServer.StartAsync("other");
        var settings = Checked(h2c, other)
            .With("HealthCheck:UnhealthyThreshold", 1)
            .With("HealthCheck:Protocol", protocol);
        await using var governed = Faults.Create(settings, time);

        // The first round runs at start and ends with the pause before the next one.
        await time.WaitForTimersAsync(Interval, 1).WaitAsync(Faults.Guard);

        var state = Faults.State(governed, h2c);
        output.WriteLine($"{protocol} probe of an HTTP/2-only endpoint: answered {probes}, conditions {state.Conditions}");
        Assert.Equal(failed, Faults.Has(state, EndpointConditions.FailedHealthCheck));
        Assert.Equal(failed ? 0 : 1, probes);
    }

    /// <summary>Settings of the service over <paramref name="servers"/> with health checks of <c>/health</c> every <see cref="Interval"/>.</summary>
    private static Dictionary<string, string?> Checked(params LoopbackServer[] servers) =>
        Faults.Settings(servers).With("HealthCheck:Path", "/health").With("HealthCheck:Interval", Interval);

    /// <summary>Settings of the service over <paramref name="endpoints"/> with health checks of <c>/health</c> every <see cref="Interval"/>.</summary>
    private static Dictionary<string, string?> Checked(params Uri[] endpoints) =>
        Faults.Settings(endpoints).With("HealthCheck:Path", "/health").With("HealthCheck:Interval", Interval);

    /// <summary>The service's current health checker (null while checks are off).</summary>
    private static HealthChecker? Checker(Governed governed) => Faults.Runtime(governed).HealthChecker;

    [Fact]
    public async Task OnEndpointsChanged_EndpointAddedBetweenRounds_ProbedAtOnceAndTheOthersKeepTheirRounds()
    {
        // A reload adds "sick" (its /health answers 503) right after the first round, and the fake clock does not move:
        // sick is probed at once and taken out (UnhealthyThreshold 1), not an Interval later after serving traffic;
        // a, already probed, waits for the next round.
        var time = new ObservedTimeProvider();
        var logs = new CapturingLoggerProvider();
        var a = new Backend("a");
        var sick = new Backend("sick") { Healthy = false };
        await using var serverA = await a.StartAsync();
        await using var serverSick = await sick.StartAsync();
        var settings = Checked(serverA)
            .With("HealthCheck:Timeout", TimeSpan.FromSeconds(2))
            .With("HealthCheck:UnhealthyThreshold", 1);
        await using var governed = Faults.Create(settings, time, logs);
        await time.WaitForTimersAsync(Interval, 1).WaitAsync(Faults.Guard);
        Assert.Equal(1, a.Probes);

        governed.Configuration[$"MeshGovernance:Services:{Faults.Service}:Endpoints:1"] = serverSick.Address.ToString();
        governed.Configuration.Reload();
        await logs.WaitForAsync(e => e.EventId.Id == GovernanceEventIds.HealthCheckFailed).WaitAsync(Faults.Guard);

        var sickState = Faults.State(governed, serverSick);
        Assert.True(Faults.Has(sickState, EndpointConditions.FailedHealthCheck), $"not out: {sickState.Conditions}");
        Assert.Equal(1, sick.Probes);
        Assert.Equal(1, a.Probes);
        Assert.All(await Faults.SendSequentialAsync(governed, 10), r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(0, sick.Traffic);

        // The rounds keep their cadence: the next one, an Interval after the first, probes both. (The pause the reload
        // woke resumed with what was left of it, an Interval on this clock: the second timer of that length; the round
        // after the advance arms the third.)
        await time.WaitForTimersAsync(Interval, 2).WaitAsync(Faults.Guard);
        time.Advance(Interval);
        await time.WaitForTimersAsync(Interval, 3).WaitAsync(Faults.Guard);
        Assert.Equal(2, a.Probes);
        Assert.Equal(2, sick.Probes);
    }

    [Fact]
    public async Task NewEndpoints_OutUntilTheirFirstProbeWhichDecidesAlone_AndNotCountedByPanicMode()
    {
        // a and b serve. A reload adds "sick" (its /health answers 503, its traffic 200) and three healthy ones, and the
        // clock does not move: all four are out from the moment they appear, without panic mode (counted as unavailable,
        // 2 of 6 would be under PanicThreshold 50 and bring everything back, sick included). The healthy ones come in on
        // their first probe although HealthyThreshold is 3; sick never gets a request although one failed probe is below
        // UnhealthyThreshold 2, and later needs HealthyThreshold good probes as any unhealthy endpoint.
        var time = new ObservedTimeProvider();
        var logs = new CapturingLoggerProvider();
        var a = new Backend("a");
        var b = new Backend("b");
        var sick = new Backend("sick") { Healthy = false };
        Backend[] fresh = [new("fresh1"), new("fresh2"), new("fresh3")];
        await using var serverA = await a.StartAsync();
        await using var serverB = await b.StartAsync();
        await using var serverSick = await sick.StartAsync();
        await using var fresh1 = await fresh[0].StartAsync();
        await using var fresh2 = await fresh[1].StartAsync();
        await using var fresh3 = await fresh[2].StartAsync();
        var settings = Checked(serverA, serverB)
            .With("HealthCheck:Timeout", TimeSpan.FromSeconds(2))
            .With("HealthCheck:UnhealthyThreshold", 2)
            .With("HealthCheck:HealthyThreshold", 3);
        await using var governed = Faults.Create(settings, time, logs);
        await time.WaitForTimersAsync(Interval, 1).WaitAsync(Faults.Guard);
        Assert.All(Faults.Runtime(governed).Endpoints.All, s => Assert.Equal(EndpointConditions.None, s.Conditions));

        var endpointsKey = $"MeshGovernance:Services:{Faults.Service}:Endpoints";
        LoopbackServer[] added = [serverSick, fresh1, fresh2, fresh3];
        for (var i = 0; i < added.Length; i++)
        {
            governed.Configuration[$"{endpointsKey}:{i + 2}"] = added[i].Address.ToString();
        }

        governed.Configuration.Reload();
        var sickState = Faults.State(governed, serverSick);
        var freshStates = Array.ConvertAll([fresh1, fresh2, fresh3], s => Faults.State(governed, s));
        Assert.True(Faults.Has(sickState, EndpointConditions.AwaitingHealthCheck) || Faults.Has(sickState, EndpointConditions.FailedHealthCheck), $"sick in before its first probe: {sickState.Conditions}");
        Assert.All(await Faults.SendManyAsync(governed, 40, 4), r => Assert.True(r.Succeeded, r.ToString()));

        // a and b passed their first probes at start: five in all.
        await logs.WaitForAsync(e => e.EventId.Id == GovernanceEventIds.HealthCheckFirstPassed && logs.Entries.Count(GovernanceEventIds.HealthCheckFirstPassed) == 5).WaitAsync(Faults.Guard);
        await logs.WaitForAsync(e => e.EventId.Id == GovernanceEventIds.HealthCheckFailed).WaitAsync(Faults.Guard);
        Assert.All(freshStates, s => Assert.Equal(EndpointConditions.None, s.Conditions));
        Assert.Equal(EndpointConditions.FailedHealthCheck, sickState.Conditions);
        Assert.Equal(1, sick.Probes);
        Assert.All(fresh, f => Assert.Equal(1, f.Probes));
        Assert.Equal(1, a.Probes);
        var after = await Faults.SendManyAsync(governed, 100, 4);
        output.WriteLine($"after the first probes: 100 GETs -> {Faults.Describe(after)}; fresh {string.Join("/", fresh.Select(f => f.Traffic))}, sick {sick.Traffic}");
        Assert.All(after, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.True(fresh.Sum(f => f.Traffic) > 0, "the newcomers took no traffic after passing their first probe");
        Assert.Equal(0, sick.Traffic);
        Assert.Equal(0, logs.Entries.Count(GovernanceEventIds.PanicMode));

        sick.Healthy = true;
        for (var round = 2; round <= 4; round++)
        {
            Assert.True(Faults.Has(sickState, EndpointConditions.FailedHealthCheck), $"sick in before 3 good probes: {sickState.Conditions}");
            await time.WaitForTimersAsync(Interval, round).WaitAsync(Faults.Guard);
            time.Advance(Interval);
        }

        await logs.WaitForAsync(e => e.EventId.Id == GovernanceEventIds.HealthCheckRecovered).WaitAsync(Faults.Guard);
        Assert.Equal(EndpointConditions.None, sickState.Conditions);
        Assert.Equal(4, sick.Probes);
    }

    [Fact]
    public async Task Start_ASickEndpoint_NeverTakesTrafficAndCallsWaitForTheFirstProbes()
    {
        // Every endpoint is new at start: the first calls wait for the first probes (no Interval passes) and the one whose
        // /health fails never gets a request, without waiting for UnhealthyThreshold failed rounds.
        var time = new ObservedTimeProvider();
        var a = new Backend("a");
        var sick = new Backend("sick") { Healthy = false };
        await using var serverA = await a.StartAsync();
        await using var serverSick = await sick.StartAsync();
        var settings = Checked(serverA, serverSick)
            .With("HealthCheck:UnhealthyThreshold", 2);
        await using var governed = Faults.Create(settings, time);

        var results = await Faults.SendManyAsync(governed, 40, 4);

        output.WriteLine($"40 GETs from start -> {Faults.Describe(results)}; a {a.Traffic}, sick {sick.Traffic}; probes a={a.Probes} sick={sick.Probes}");
        Assert.All(results, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(0, sick.Traffic);
        Assert.Equal(40, a.Traffic);
        Assert.Equal(EndpointConditions.FailedHealthCheck, Faults.State(governed, serverSick).Conditions);
    }

    [Theory]
    [InlineData(50)]
    [InlineData(0)]
    public async Task Start_FirstProbeResultAFailure_CallsWaitOnForAPassNeitherPanicNorFail(int panicThreshold)
    {
        // "dead" refuses connections, so its probe fails first; a's /health answers only once that failure is applied.
        // Counted alone, dead would be 0 of 1 available: panic mode (every call to it) or, with panic off, every call
        // refused. The set stays pending while a newcomer may still pass, and the calls go to a once it does.
        var time = new ObservedTimeProvider();
        var logs = new CapturingLoggerProvider();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var a = new Backend("a") { HealthGate = release.Task };
        await using var serverA = await a.StartAsync();
        using var dead = new RefusingEndpoint();
        var settings = Checked(dead.Address, serverA.Address)
            .With("OutlierDetection:PanicThreshold", panicThreshold);
        await using var governed = Faults.Create(settings, time, logs);
        CallResult[] results;
        try
        {
            await logs.WaitForAsync(e => e.EventId.Id == GovernanceEventIds.HealthCheckFailed).WaitAsync(Faults.Guard);
            var service = Faults.Runtime(governed);
            Assert.True(service.Endpoints.IsPending, $"not pending after dead's failure: {service.Endpoints.EmptyReason}; {service.Endpoints.Candidates.Length} candidates");

            var calls = Faults.SendManyAsync(governed, 10, 4);
            release.SetResult();
            results = await calls;
        }
        finally
        {
            // A failed assertion must not leave a's probe waiting (the server's shutdown would wait for it).
            release.TrySetResult();
        }

        output.WriteLine($"10 GETs -> {Faults.Describe(results)}");
        Assert.All(results, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(10, a.Traffic);
        Assert.Equal(0, logs.Entries.Count(GovernanceEventIds.PanicMode));
    }

    [Fact]
    public async Task Start_OneProbeHangs_TheOthersResultsApplyWithoutWaitingForIt()
    {
        // "stuck" is listed first and its /health never answers (its probe's Timeout is on the fake clock): a's result is
        // applied as soon as its probe ends, so calls flow to a while stuck still waits for its first result.
        var time = new ObservedTimeProvider();
        var stuck = new Backend("stuck") { HealthHangs = true };
        var a = new Backend("a");
        await using var serverStuck = await stuck.StartAsync();
        await using var serverA = await a.StartAsync();
        var settings = Checked(serverStuck, serverA);
        await using var governed = Faults.Create(settings, time);

        var results = await Faults.SendManyAsync(governed, 10, 2);

        Assert.All(results, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(10, a.Traffic);
        Assert.Equal(EndpointConditions.AwaitingHealthCheck, Faults.State(governed, serverStuck).Conditions);
    }

    [Fact]
    public async Task Reload_EveryAddressReplacedWithPanicOff_CallsWaitForTheNewEndpointsFirstProbe()
    {
        // A blue/green switch: the only endpoint is replaced by a new one. With PanicThreshold 0 nothing may take traffic
        // unprobed, and no call fails meanwhile: they wait, as for discovery's first answer.
        var time = new ObservedTimeProvider();
        var blue = new Backend("blue");
        var green = new Backend("green");
        await using var serverBlue = await blue.StartAsync();
        await using var serverGreen = await green.StartAsync();
        var settings = Checked(serverBlue)
            .With("OutlierDetection:PanicThreshold", 0);
        await using var governed = Faults.Create(settings, time);
        await time.WaitForTimersAsync(Interval, 1).WaitAsync(Faults.Guard);

        governed.Configuration[$"MeshGovernance:Services:{Faults.Service}:Endpoints:0"] = serverGreen.Address.ToString();
        governed.Configuration.Reload();
        var results = await Faults.SendManyAsync(governed, 20, 4);

        output.WriteLine($"20 GETs after the switch -> {Faults.Describe(results)}; green probes {green.Probes}");
        Assert.All(results, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(20, green.Traffic);
        Assert.Equal(1, green.Probes);
    }

    [Fact]
    public async Task Retry_SetPendingSinceTheCallStarted_TheRetryWaitsForTheNewEndpointsFirstProbe()
    {
        // blue's answer to the call switches the service to green (a reload) and is a 503: the retry finds every endpoint
        // waiting for its first probe, and waits (on the fake clock's first-answer timer) until green's /health, held
        // until then, passes. Failing the retry at once with "no endpoint" was the old behaviour.
        var time = new ObservedTimeProvider();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var green = new Backend("green") { HealthGate = release.Task };
        await using var serverGreen = await green.StartAsync();
        Governed? target = null;
        await using var blue = await LoopbackServer.StartAsync("blue", context =>
        {
            if (context.Request.Path != "/health")
            {
                var governed = Volatile.Read(ref target)!;
                governed.Configuration[$"MeshGovernance:Services:{Faults.Service}:Endpoints:0"] = serverGreen.Address.ToString();
                governed.Configuration.Reload();
                context.Response.StatusCode = 503;
            }

            return Task.CompletedTask;
        });
        var settings = Checked(blue)
            .With("Timeout:Enabled", false);
        await using var governed = Faults.Create(settings, time);
        Volatile.Write(ref target, governed);
        await time.WaitForTimersAsync(Interval, 1).WaitAsync(Faults.Guard);

        try
        {
            var call = Faults.TryGetAsync(governed);
            await time.WaitForTimersAsync(TimeSpan.FromSeconds(30), 1).WaitAsync(Faults.Guard);
            release.SetResult();
            var result = await call.WaitAsync(Faults.Guard);

            output.WriteLine(result.ToString());
            Assert.True(result.Succeeded, result.ToString());
            Assert.Equal("green", result.Server);
        }
        finally
        {
            release.TrySetResult();
        }
    }

    [Fact]
    public async Task Dispose_WhileCallsWaitForAFirstProbe_TheyAreRefusedAtOnceSayingWhy()
    {
        // "late"'s /health never answers, so the call waits for its first probe; on the fake clock that wait would never
        // end. Stopping governance refuses it at once, naming why.
        var time = new ObservedTimeProvider();
        var late = new Backend("late") { HealthHangs = true };
        await using var serverLate = await late.StartAsync();
        var settings = Checked(serverLate);
        await using var governed = Faults.Create(settings, time);
        var call = Faults.TryGetAsync(governed);
        await time.WaitForTimersAsync(TimeSpan.FromSeconds(30), 1).WaitAsync(Faults.Guard);

        // The service stops (as at shutdown, or when a reload removes it) while the client stays.
        await Faults.Runtime(governed).DisposeAsync();
        var result = await call.WaitAsync(Faults.Guard);

        output.WriteLine(result.ToString());
        var refused = Assert.IsType<NoAvailableEndpointException>(result.Error);
        Assert.Contains("governance was stopped", refused.Message, StringComparison.Ordinal);
        Assert.Equal(0, late.Traffic);
    }

    [Fact]
    public async Task Reload_HealthChecksOffWhileANewcomerWaits_ItTakesTrafficAtOnce()
    {
        // "late" answers traffic but its /health hangs, so it waits for its first probe for as long as the test wants (the
        // probe's Timeout is on the fake clock). Turning the checks off lets it in.
        var time = new ObservedTimeProvider();
        var a = new Backend("a");
        var late = new Backend("late") { HealthHangs = true };
        await using var serverA = await a.StartAsync();
        await using var serverLate = await late.StartAsync();
        var settings = Checked(serverA);
        await using var governed = Faults.Create(settings, time);
        await time.WaitForTimersAsync(Interval, 1).WaitAsync(Faults.Guard);
        governed.Configuration[$"MeshGovernance:Services:{Faults.Service}:Endpoints:1"] = serverLate.Address.ToString();
        governed.Configuration.Reload();
        var lateState = Faults.State(governed, serverLate);
        Assert.Equal(EndpointConditions.AwaitingHealthCheck, lateState.Conditions);
        Assert.All(await Faults.SendSequentialAsync(governed, 10), r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(0, late.Traffic);

        governed.Configuration[$"MeshGovernance:Services:{Faults.Service}:HealthCheck:Path"] = string.Empty;
        governed.Configuration.Reload();

        Assert.Equal(EndpointConditions.None, lateState.Conditions);
        Assert.All(await Faults.SendSequentialAsync(governed, 10), r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(5, late.Traffic);
    }

    /// <summary>Answers <c>/health</c> with 200 or 503 (per <see cref="Healthy"/>) and everything else with its name, counting both.</summary>
    private sealed class Backend(string name)
    {
        private volatile bool _healthy = true;
        private volatile int _trafficStatus = 200;
        private int _probes;
        private int _traffic;

        public bool Healthy
        {
            get => _healthy;
            set => _healthy = value;
        }

        /// <summary>Gets or sets the status everything but <c>/health</c> is answered with.</summary>
        public int TrafficStatus
        {
            get => _trafficStatus;
            set => _trafficStatus = value;
        }

        public int Probes => Volatile.Read(ref _probes);

        /// <summary>Gets or sets a value indicating whether <c>/health</c> never answers (until the client gives up).</summary>
        public bool HealthHangs { get; set; }

        /// <summary>Gets or sets a task that <c>/health</c> awaits before it answers.</summary>
        public Task? HealthGate { get; set; }

        public int Traffic => Volatile.Read(ref _traffic);

        public int Port { get; private set; }

        public async Task<LoopbackServer> StartAsync()
        {
            var server = await LoopbackServer.StartAsync(name, context =>
            {
                if (context.Request.Path == "/health")
                {
                    Interlocked.Increment(ref _probes);
                    if (HealthHangs)
                    {
                        return Task.Delay(Timeout.Infinite, context.RequestAborted);
                    }

                    if (HealthGate is { } gate)
                    {
                        return gate.ContinueWith(_ => context.Response.StatusCode = _healthy ? 200 : 503, TaskScheduler.Default);
                    }

                    context.Response.StatusCode = _healthy ? 200 : 503;
                    return Task.CompletedTask;
                }

                Interlocked.Increment(ref _traffic);
                context.Response.StatusCode = _trafficStatus;
                return context.Response.WriteAsync(name, context.RequestAborted);
            });
            Port = server.Port;
            return server;
        }
    }
}
