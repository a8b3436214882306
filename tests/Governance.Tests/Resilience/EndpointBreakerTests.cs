using Governance.Pipeline;
using Governance.Telemetry;
using Governance.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace Governance.Tests.Resilience;

/// <summary>Per-endpoint Polly circuit breakers (outlier detection off so that only the breaker acts), on a fake clock.</summary>
public sealed class EndpointBreakerTests(ITestOutputHelper output)
{
    private const int MinimumThroughput = 4;
    private static readonly TimeSpan BreakDuration = TimeSpan.FromSeconds(5);

    [Fact]
    public async Task Pipeline_OneEndpointFailing_OpensOnlyItsCircuitAndClosesAfterHealthyHalfOpenProbe()
    {
        await using var scenario = await Scenario.StartAsync();
        var (time, logs, governed, a, b, flaky) = scenario;
        var flakyState = Faults.State(governed, flaky.Server);

        // Sequential GETs: "flaky" answers 503 to each of its requests (retried on a or b) until MinimumThroughput
        // failures at a ratio of 1 >= 0.5 open its circuit.
        var opened = await scenario.SendUntilAsync(() => Faults.Has(flakyState, EndpointConditions.CircuitOpen));
        output.WriteLine($"circuit of flaky opened after {opened} GETs; flaky received {flaky.Server.RequestCount} requests, a={a.RequestCount} b={b.RequestCount}");
        Assert.Equal(MinimumThroughput, flaky.Server.RequestCount);
        Assert.Equal(EndpointConditions.None, Faults.State(governed, a).Conditions);
        Assert.Equal(EndpointConditions.None, Faults.State(governed, b).Conditions);
        var open = Assert.Single(logs.Entries, e => e.EventId.Id == GovernanceEventIds.CircuitOpened);
        output.WriteLine(open.Message);
        Assert.Contains(flakyState.Authority, open.Message, StringComparison.Ordinal);
        Assert.Contains($"opened for {BreakDuration}", open.Message, StringComparison.Ordinal);

        // While open, the other endpoints keep serving and flaky gets nothing.
        var whileOpen = await Faults.SendSequentialAsync(governed, 30);
        Assert.All(whileOpen, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(MinimumThroughput, flaky.Server.RequestCount);

        // It recovers; after BreakDuration it is back in load balancing, its next request is the half-open probe, which
        // succeeds and closes the circuit.
        flaky.Healthy = true;
        await time.WaitForTimersAsync(BreakDuration, 1).WaitAsync(Faults.Guard);
        time.Advance(BreakDuration); // The break timer's callback puts it back, inside Advance.
        Assert.True(flakyState.Conditions == EndpointConditions.None, $"flaky not back after BreakDuration: {flakyState.Conditions}");
        var circuitClosed = logs.WaitForAsync(e => e.EventId.Id == GovernanceEventIds.CircuitClosed);
        await scenario.SendUntilAsync(() => flaky.Server.RequestCount > MinimumThroughput);
        await circuitClosed.WaitAsync(Faults.Guard);

        var before = flaky.Server.RequestCount;
        var closed = await Faults.SendSequentialAsync(governed, 30);
        output.WriteLine($"after closing: flaky received {flaky.Server.RequestCount - before} of 30 GETs; {Faults.Describe(closed)}");
        Assert.All(closed, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(10, flaky.Server.RequestCount - before);
        Assert.Equal(EndpointConditions.None, flakyState.Conditions);
        Assert.Contains(flakyState.Authority, Assert.Single(logs.Entries, e => e.EventId.Id == GovernanceEventIds.CircuitClosed).Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Pipeline_HalfOpenProbeFails_ReopensAfterOneRequest()
    {
        await using var scenario = await Scenario.StartAsync();
        var (time, logs, governed, _, _, flaky) = scenario;
        var flakyState = Faults.State(governed, flaky.Server);
        await scenario.SendUntilAsync(() => Faults.Has(flakyState, EndpointConditions.CircuitOpen));

        // Still failing when the break ends: the single half-open probe fails and the circuit opens again at once.
        await time.WaitForTimersAsync(BreakDuration, 1).WaitAsync(Faults.Guard);
        time.Advance(BreakDuration); // The break timer's callback puts it back, inside Advance.
        Assert.True(flakyState.Conditions == EndpointConditions.None, $"flaky not back after BreakDuration: {flakyState.Conditions}");
        await scenario.SendUntilAsync(() => Faults.Has(flakyState, EndpointConditions.CircuitOpen));
        output.WriteLine($"flaky received {flaky.Server.RequestCount} requests in all; circuit-opened events: {logs.Entries.Count(GovernanceEventIds.CircuitOpened)}");

        Assert.Equal(MinimumThroughput + 1, flaky.Server.RequestCount);
        Assert.Equal(2, logs.Entries.Count(GovernanceEventIds.CircuitOpened));
        Assert.Equal(0, logs.Entries.Count(GovernanceEventIds.CircuitClosed));
        Assert.All(await Faults.SendSequentialAsync(governed, 12), r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(MinimumThroughput + 1, flaky.Server.RequestCount);
    }

    [Fact]
    public async Task Pipeline_HalfOpenProbeInFlight_CallsRejectedByTheCircuitGoElsewhere()
    {
        // While an endpoint's half-open probe is in flight its circuit rejects other calls (BrokenCircuitException):
        // nothing was sent, so another endpoint must take them. AttemptClassifier.IsRetryable says so ("trying another
        // endpoint is always safe"); GETs are the control, POSTs (not retried after a real failure) the case under test.
        await using var scenario = await Scenario.StartAsync();
        var (time, _, governed, _, _, flaky) = scenario;
        var flakyState = Faults.State(governed, flaky.Server);
        await scenario.SendUntilAsync(() => Faults.Has(flakyState, EndpointConditions.CircuitOpen));

        flaky.Healthy = true;
        flaky.Hold = true;
        await time.WaitForTimersAsync(BreakDuration, 1).WaitAsync(Faults.Guard);
        time.Advance(BreakDuration); // The break timer's callback puts it back, inside Advance.
        Assert.True(flakyState.Conditions == EndpointConditions.None, $"flaky not back after BreakDuration: {flakyState.Conditions}");
        Task<CallResult>? probe = null;
        try
        {
            // The first call that reaches flaky is the half-open probe; it is held there.
            probe = await scenario.StartHeldProbeAsync();
            var gets = await Faults.SendSequentialAsync(governed, 6);
            var posts = new List<CallResult>();
            for (var i = 0; i < 6; i++)
            {
                try
                {
                    using var response = await governed.Client.PostAsync(Faults.Url, new StringContent($"order-{i}")).WaitAsync(Faults.Guard);
                    posts.Add(new CallResult((int)response.StatusCode, response.Headers.GetValues("x-server").Single(), null));
                }
                catch (GovernanceException ex)
                {
                    posts.Add(new CallResult(0, null, ex));
                }
            }

            output.WriteLine($"while the half-open probe is held: GETs {Faults.Describe(gets)}; POSTs {Faults.Describe(posts)}");
            output.WriteLine(posts.FirstOrDefault(p => p.Error is not null).Error?.Message ?? "no POST failed");
            Assert.Equal(1, flaky.Held.Count);
            Assert.All(gets, r => Assert.True(r.Succeeded, r.ToString()));
            Assert.All(posts, r => Assert.True(r.Succeeded, $"a POST failed although a and b are healthy and nothing was sent: {r.Error?.Message}"));
        }
        finally
        {
            flaky.Held.Release();
        }

        Assert.True((await probe.WaitAsync(Faults.Guard)).Succeeded);
    }

    [Fact]
    public async Task Pipeline_PostTurnedAwayByHalfOpenCircuit_ItsLaterFailureIsNotRetried()
    {
        // One endpoint. A POST meets its circuit while the half-open probe is held: nothing was sent, so the retry phase
        // sends it once; when that send fails, the POST is not sent again (not idempotent, RetryNonIdempotent off).
        var flaky = new Flaky();
        var orders = 0;
        flaky.Server = await LoopbackServer.StartAsync("flaky", context =>
        {
            if (HttpMethods.IsPost(context.Request.Method))
            {
                Interlocked.Increment(ref orders);
            }

            return flaky.Handle(context);
        });
        await using var server = flaky.Server;
        var time = new ObservedTimeProvider();
        var retryDelay = TimeSpan.FromSeconds(1);
        var settings = Faults.Settings(flaky.Server)
            .With("OutlierDetection:Enabled", false)
            .With("CircuitBreaker:MinimumThroughput", MinimumThroughput)
            .With("CircuitBreaker:FailureRatio", 0.5)
            .With("CircuitBreaker:BreakDuration", BreakDuration)
            .With("Retry:Backoff", "Constant")
            .With("Retry:BaseDelay", retryDelay)
            .With("Retry:MaxDelay", retryDelay)
            .With("Retry:Jitter", false);
        await using var governed = Faults.Create(settings, time);
        var state = Faults.State(governed, flaky.Server);

        // POSTs are not retried: each 503 counts once, and MinimumThroughput of them open the circuit.
        for (var i = 0; i < MinimumThroughput; i++)
        {
            using var failed = await governed.Client.PostAsync(Faults.Url, new StringContent("setup")).WaitAsync(Faults.Guard);
            Assert.Equal(503, (int)failed.StatusCode);
        }

        Assert.True(Faults.Has(state, EndpointConditions.CircuitOpen), $"circuit not open: {state.Conditions}");
        await time.WaitForTimersAsync(BreakDuration, 1).WaitAsync(Faults.Guard);
        time.Advance(BreakDuration);
        flaky.Hold = true;
        var arrival = flaky.Held.NextArrivalAsync();
        var probe = Faults.TryGetAsync(governed);
        Assert.True(await arrival, "the half-open probe did not arrive");

        var before = Volatile.Read(ref orders);
        var delays = time.TimersCreated(retryDelay);
        var post = governed.Client.PostAsync(Faults.Url, new StringContent("order-1"));
        await time.WaitForTimersAsync(retryDelay, delays + 1).WaitAsync(Faults.Guard);
        Assert.Equal(before, Volatile.Read(ref orders));

        // The probe succeeds (the circuit closes); later requests get 503.
        flaky.Hold = false;
        flaky.Held.Release();
        Assert.True((await probe.WaitAsync(Faults.Guard)).Succeeded);
        time.Advance(retryDelay);
        var second = time.WaitForTimersAsync(retryDelay, delays + 2);
        if (await Task.WhenAny(post, second).WaitAsync(Faults.Guard) == second)
        {
            // A second retry was scheduled (the defect): let it run, to count what it sends.
            time.Advance(retryDelay);
        }

        using var response = await post.WaitAsync(Faults.Guard);
        output.WriteLine($"POST answered {(int)response.StatusCode}; flaky received it {Volatile.Read(ref orders) - before} time(s)");
        Assert.Equal(503, (int)response.StatusCode);
        Assert.Equal(1, Volatile.Read(ref orders) - before);
    }

    [Fact]
    public async Task Pipeline_RetryTurnedAwayByHalfOpenCircuit_TakenByTheUntriedEndpointThoughTheFirstLeft()
    {
        // [a, flaky, c], a policy that picks the endpoint the test prefers, one retry. flaky's circuit is half-open with
        // its probe held. A call's first attempt goes to a, which takes itself out of the candidates and answers 503; the
        // retry picks flaky, whose circuit turns it away (nothing sent): c, never tried, takes it. The call's tried list
        // still holds a, which is no longer a candidate, and must not count as one of them.
        var flaky = new Flaky();
        flaky.Server = await LoopbackServer.StartAsync("flaky", flaky.Handle);
        await using var flakyServer = flaky.Server;
        var policy = new PreferredPolicy();
        Governed? governed = null;
        var leave = false;
        await using var a = await LoopbackServer.StartAsync("a", context =>
        {
            if (Volatile.Read(ref leave))
            {
                var runtime = Faults.Runtime(governed!);
                Assert.True(runtime.Endpoints.All.Single(s => s.Endpoint.Address.Port == context.Connection.LocalPort).SetAvailable(false));
                runtime.Refresh();
                policy.Preferred = flaky.Server.Port;
                context.Response.StatusCode = 503;
            }

            return Task.CompletedTask;
        });
        await using var c = await LoopbackServer.StartAsync("c");
        var time = new ObservedTimeProvider();
        var settings = Faults.Settings(a, flaky.Server, c)
            .With("LoadBalancer:Policy", policy.Name)
            .With("OutlierDetection:Enabled", false)
            .With("CircuitBreaker:MinimumThroughput", MinimumThroughput)
            .With("CircuitBreaker:FailureRatio", 0.5)
            .With("CircuitBreaker:BreakDuration", BreakDuration)
            .With("Retry:MaxRetries", 1)
            .With("Retry:BaseDelay", TimeSpan.Zero)
            .With("Retry:MaxDelay", TimeSpan.Zero);
        governed = Governed.Create(settings, services => services.AddSingleton<TimeProvider>(time).AddSingleton<Governance.LoadBalancing.ILoadBalancingPolicy>(policy));
        await using var disposeGoverned = governed;
        var flakyState = Faults.State(governed, flaky.Server);

        // flaky's circuit opens (its 503s are retried on a or c), then it is readmitted and its probe held.
        policy.Preferred = flaky.Server.Port;
        await Faults.SendUntilAsync(governed, () => Faults.Has(flakyState, EndpointConditions.CircuitOpen));
        await time.WaitForTimersAsync(BreakDuration, 1).WaitAsync(Faults.Guard);
        time.Advance(BreakDuration);
        flaky.Hold = true;
        var arrival = flaky.Held.NextArrivalAsync();
        var probe = Faults.TryGetAsync(governed);
        Assert.True(await arrival, "the half-open probe did not arrive");
        try
        {
            policy.Preferred = a.Port;
            Volatile.Write(ref leave, true);
            var aBefore = a.RequestCount;
            var result = await Faults.TryGetAsync(governed);
            output.WriteLine($"call: {result}; a received {a.RequestCount}, c {c.RequestCount}");
            Assert.True(result.Succeeded, result.ToString());
            Assert.Equal("c", result.Server);
            Assert.Equal(aBefore + 1, a.RequestCount);
        }
        finally
        {
            flaky.Held.Release();
        }

        Assert.True((await probe.WaitAsync(Faults.Guard)).Succeeded);
    }

    [Fact]
    public async Task Pipeline_HalfOpenEndpointWhileAnotherZoneIsInPanic_StillGetsASingleProbe()
    {
        // Zone z1 (local): flaky and x; z2: r1..r5. flaky's circuit opens, then x and r2..r5 are taken out and
        // flaky is readmitted half-open: z1 has 1 of 2 available (health 0.7, not in panic at 50%), z2 1 of 5 (0.28, in
        // panic). The service is degraded and z2 is in panic, but flaky is back in load balancing: its circuit lets one
        // probe through and turns the other calls away (they go elsewhere), instead of sending them all past the breaker.
        var flaky = new Flaky();
        flaky.Server = await LoopbackServer.StartAsync("flaky", flaky.Handle);
        await using var flakyServer = flaky.Server;
        await using var x = await LoopbackServer.StartAsync("x");
        var remote = new List<LoopbackServer>();
        try
        {
            for (var i = 1; i <= 5; i++)
            {
                remote.Add(await LoopbackServer.StartAsync($"r{i}"));
            }

            var policy = new PreferredPolicy { Preferred = flaky.Server.Port };
            var time = new ObservedTimeProvider();
            var settings = new Dictionary<string, string?>
            {
                ["Application:Zone"] = "z1",
                [$"Services:{Faults.Service}:LoadBalancer:Policy"] = policy.Name,
                [$"Services:{Faults.Service}:OutlierDetection:Enabled"] = "false",
                [$"Services:{Faults.Service}:CircuitBreaker:MinimumThroughput"] = MinimumThroughput.ToString(System.Globalization.CultureInfo.InvariantCulture),
                [$"Services:{Faults.Service}:CircuitBreaker:BreakDuration"] = BreakDuration.ToString(),
                [$"Services:{Faults.Service}:Retry:BaseDelay"] = "00:00:00",
                [$"Services:{Faults.Service}:Retry:MaxDelay"] = "00:00:00",
            };
            var servers = new List<(LoopbackServer Server, string Zone)> { (flaky.Server, "z1"), (x, "z1") };
            servers.AddRange(remote.Select(r => (r, "z2")));
            for (var i = 0; i < servers.Count; i++)
            {
                settings[$"Services:{Faults.Service}:Endpoints:{i}:Address"] = servers[i].Server.Address.ToString();
                settings[$"Services:{Faults.Service}:Endpoints:{i}:Zone"] = servers[i].Zone;
            }

            await using var governed = Governed.Create(settings, services => services.AddSingleton<TimeProvider>(time).AddSingleton<Governance.LoadBalancing.ILoadBalancingPolicy>(policy));
            var runtime = Faults.Runtime(governed);
            var flakyState = Faults.State(governed, flaky.Server);
            await Faults.SendUntilAsync(governed, () => Faults.Has(flakyState, EndpointConditions.CircuitOpen));
            foreach (var down in new[] { x }.Concat(remote.Skip(1)))
            {
                // Out of load balancing as by an open circuit (health checks are off: a rebuild would clear that flag).
                Faults.State(governed, down).Set(EndpointConditions.CircuitOpen, true);
            }

            await time.WaitForTimersAsync(BreakDuration, 1).WaitAsync(Faults.Guard);
            flaky.Hold = true;
            time.Advance(BreakDuration); // readmitted half-open; the set is rebuilt with the conditions above
            Assert.True(runtime.Endpoints.IsPanic, $"z2 is not in panic: the scenario does not hold: {string.Join(", ", runtime.Endpoints.All.Select(e => $"{e.Authority} {e.Endpoint.Zone} {e.Conditions}"))} share {runtime.Endpoints.LocalShare}");
            Assert.True(flakyState.IsAvailable);

            // The first call that reaches flaky is its probe, held there; every later call must be answered elsewhere.
            var arrival = flaky.Held.NextArrivalAsync();
            Task<CallResult>? probe = null;
            for (var i = 0; i < 20 && probe is null; i++)
            {
                var call = Faults.TryGetAsync(governed);
                if (await Task.WhenAny(call, arrival).WaitAsync(Faults.Guard) == arrival)
                {
                    probe = call;
                }
                else
                {
                    Assert.True((await call).Succeeded);
                }
            }

            Assert.NotNull(probe);
            try
            {
                for (var i = 0; i < 10; i++)
                {
                    // Bounded: a call sent past the breaker to flaky would be held there until the probe is released.
                    var result = await Faults.TryGetAsync(governed).WaitAsync(TimeSpan.FromSeconds(10));
                    Assert.True(result.Succeeded, result.ToString());
                    Assert.NotEqual("flaky", result.Server);
                }

                Assert.Equal(1, flaky.Held.Count);
            }
            finally
            {
                flaky.Held.Release();
            }

            Assert.True((await probe.WaitAsync(Faults.Guard)).Succeeded);
        }
        finally
        {
            foreach (var server in remote)
            {
                await server.DisposeAsync();
            }
        }
    }

    /// <summary>Picks the endpoint whose port is <see cref="Preferred"/> when it is a candidate, else the first.</summary>
    private sealed class PreferredPolicy : Governance.LoadBalancing.ILoadBalancingPolicy
    {
        private volatile int _preferred;

        public string Name => "PreferredForTests";

        public int Preferred
        {
            get => _preferred;
            set => _preferred = value;
        }

        public Governance.LoadBalancing.IEndpointPicker CreatePicker(Governance.LoadBalancing.EndpointPickerContext context) => new Picker(this, context.Endpoints);

        private sealed class Picker(PreferredPolicy policy, IReadOnlyList<ServiceEndpoint> endpoints) : Governance.LoadBalancing.IEndpointPicker
        {
            public int Pick(in Governance.LoadBalancing.PickContext context)
            {
                for (var i = 0; i < endpoints.Count; i++)
                {
                    if (endpoints[i].Address.Port == policy.Preferred)
                    {
                        return i;
                    }
                }

                return endpoints.Count > 0 ? 0 : -1;
            }
        }
    }

    [Fact]
    public async Task Pipeline_BreakerReplacedByReloadWhileOpen_OnlyTheLatestOpeningReadmits()
    {
        await using var scenario = await Scenario.StartAsync();
        var (time, logs, governed, _, _, flaky) = scenario;
        var flakyState = Faults.State(governed, flaky.Server);
        await scenario.SendUntilAsync(() => Faults.Has(flakyState, EndpointConditions.CircuitOpen));
        await time.WaitForTimersAsync(BreakDuration, 1).WaitAsync(Faults.Guard);

        // A reload replaces the breaker (new settings): the endpoint is back with a closed circuit, which opens again,
        // now for 20 s. The first opening's 5 s readmission is still armed.
        var longBreak = TimeSpan.FromSeconds(20);
        governed.Configuration[$"MeshGovernance:Services:{Faults.Service}:CircuitBreaker:BreakDuration"] = longBreak.ToString();
        governed.Configuration.Reload();
        Assert.Equal(EndpointConditions.None, flakyState.Conditions);
        await scenario.SendUntilAsync(() => Faults.Has(flakyState, EndpointConditions.CircuitOpen));
        await time.WaitForTimersAsync(longBreak, 1).WaitAsync(Faults.Guard);
        var received = flaky.Server.RequestCount;

        // The first opening's timer fires: it no longer speaks for the endpoint.
        time.Advance(BreakDuration);
        output.WriteLine($"{BreakDuration} after the reload: flaky {flakyState.Conditions}; circuit-opened events {logs.Entries.Count(GovernanceEventIds.CircuitOpened)}");
        Assert.Equal(EndpointConditions.CircuitOpen, flakyState.Conditions);
        Assert.All(await Faults.SendSequentialAsync(governed, 12), r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(received, flaky.Server.RequestCount);

        // The second opening's own timer readmits it.
        time.Advance(longBreak - BreakDuration);
        Assert.Equal(EndpointConditions.None, flakyState.Conditions);
        Assert.Equal(2, logs.Entries.Count(GovernanceEventIds.CircuitOpened));
    }

    [Fact]
    public async Task Pipeline_BreakerReplacedByReloadDuringHalfOpenProbe_OldBreakersOpeningIgnored()
    {
        await using var scenario = await Scenario.StartAsync();
        var (time, logs, governed, _, _, flaky) = scenario;
        var flakyState = Faults.State(governed, flaky.Server);
        await scenario.SendUntilAsync(() => Faults.Has(flakyState, EndpointConditions.CircuitOpen));
        flaky.Hold = true;
        await time.WaitForTimersAsync(BreakDuration, 1).WaitAsync(Faults.Guard);
        time.Advance(BreakDuration);
        Assert.Equal(EndpointConditions.None, flakyState.Conditions);

        // The half-open probe (the first call that reaches flaky) is held there.
        var probe = await scenario.StartHeldProbeAsync();

        // A reload replaces the breaker while the probe is in flight; then the probe fails, which opens the old breaker's
        // circuit: that breaker no longer speaks for the endpoint, whose new circuit is closed.
        governed.Configuration[$"MeshGovernance:Services:{Faults.Service}:CircuitBreaker:BreakDuration"] = TimeSpan.FromSeconds(20).ToString();
        governed.Configuration.Reload();
        flaky.Held.Release(System.Net.HttpStatusCode.ServiceUnavailable);
        var result = await probe.WaitAsync(Faults.Guard);
        output.WriteLine($"probe: {result}; flaky {flakyState.Conditions}; circuit-opened events {logs.Entries.Count(GovernanceEventIds.CircuitOpened)}");

        Assert.True(result.Succeeded, result.ToString());
        Assert.Equal(EndpointConditions.None, flakyState.Conditions);
        Assert.Equal(1, logs.Entries.Count(GovernanceEventIds.CircuitOpened));
    }

    [Fact]
    public async Task Pipeline_EveryCircuitOpen_PanicModeSendsToThemAgain()
    {
        // Two endpoints, both failing until their circuits open: none is available, so panic mode (threshold 50 %) uses
        // them all again, open circuits included. Once they answer, calls must get through, not be turned away.
        var one = new Flaky();
        var two = new Flaky();
        one.Server = await LoopbackServer.StartAsync("one", one.Handle);
        two.Server = await LoopbackServer.StartAsync("two", two.Handle);
        await using var oneServer = one.Server;
        await using var twoServer = two.Server;
        var time = new ObservedTimeProvider();
        var settings = Faults.Settings(one.Server, two.Server)
            .With("OutlierDetection:Enabled", false)
            .With("CircuitBreaker:MinimumThroughput", 2)
            .With("CircuitBreaker:FailureRatio", 0.5)
            .With("CircuitBreaker:BreakDuration", BreakDuration);
        await using var governed = Faults.Create(settings, time);
        var states = Faults.Runtime(governed).Endpoints.All;
        for (var i = 0; i < 10 && !states.All(s => Faults.Has(s, EndpointConditions.CircuitOpen)); i++)
        {
            _ = await Faults.TryGetAsync(governed);
        }

        Assert.All(states, s => Assert.True(Faults.Has(s, EndpointConditions.CircuitOpen), s.Conditions.ToString()));
        Assert.True(Faults.Runtime(governed).Endpoints.IsPanic);

        one.Healthy = true;
        two.Healthy = true;
        var results = await Faults.SendSequentialAsync(governed, 6);

        output.WriteLine($"every circuit open, panic mode: {Faults.Describe(results)}");
        Assert.All(results, r => Assert.True(r.Succeeded, r.ToString()));
    }

    [Fact]
    public async Task Pipeline_HalfOpenProbeCancelled_CircuitOpensAgain()
    {
        await using var scenario = await Scenario.StartAsync();
        var (time, logs, governed, _, _, flaky) = scenario;
        var flakyState = Faults.State(governed, flaky.Server);
        await scenario.SendUntilAsync(() => Faults.Has(flakyState, EndpointConditions.CircuitOpen));
        flaky.Healthy = true;
        flaky.Hold = true;
        await time.WaitForTimersAsync(BreakDuration, 1).WaitAsync(Faults.Guard);
        time.Advance(BreakDuration);

        // The half-open probe reaches flaky and is held there; its caller gives up.
        using var cancellation = new CancellationTokenSource();
        var probe = await scenario.StartHeldProbeAsync(cancellation.Token);

        // The caller's task ends at once; the breaker decides when the attempt has ended: it closes or opens again.
        var openings = 0;
        var decided = logs.WaitForAsync(e => e.EventId.Id == GovernanceEventIds.CircuitClosed || (e.EventId.Id == GovernanceEventIds.CircuitOpened && ++openings == 2));
        await cancellation.CancelAsync();
        var result = await probe.WaitAsync(Faults.Guard);
        await decided.WaitAsync(Faults.Guard);
        flaky.Held.Release();

        // A probe that did not finish showed nothing good: the circuit opens again instead of closing.
        output.WriteLine($"probe: {result}; flaky {flakyState.Conditions}; opened {logs.Entries.Count(GovernanceEventIds.CircuitOpened)}, closed {logs.Entries.Count(GovernanceEventIds.CircuitClosed)}");
        Assert.IsAssignableFrom<OperationCanceledException>(result.Error);
        Assert.Equal(0, logs.Entries.Count(GovernanceEventIds.CircuitClosed));
        Assert.Equal(2, logs.Entries.Count(GovernanceEventIds.CircuitOpened));
        Assert.Equal(EndpointConditions.CircuitOpen, flakyState.Conditions);
    }

    /// <summary>Endpoints a and b always answer; "flaky" answers 503 until <see cref="Flaky.Healthy"/> is set.</summary>
    private sealed class Scenario : IAsyncDisposable
    {
        private Scenario(ObservedTimeProvider time, CapturingLoggerProvider logs, Governed governed, LoopbackServer a, LoopbackServer b, Flaky flaky)
        {
            Time = time;
            Logs = logs;
            Governed = governed;
            A = a;
            B = b;
            Flaky = flaky;
        }

        public ObservedTimeProvider Time { get; }

        public CapturingLoggerProvider Logs { get; }

        public Governed Governed { get; }

        public LoopbackServer A { get; }

        public LoopbackServer B { get; }

        public Flaky Flaky { get; }

        public static async Task<Scenario> StartAsync()
        {
            var flaky = new Flaky();
            flaky.Server = await LoopbackServer.StartAsync("flaky", flaky.Handle);
            var a = await LoopbackServer.StartAsync("a");
            var b = await LoopbackServer.StartAsync("b");
            var time = new ObservedTimeProvider();
            var logs = new CapturingLoggerProvider();
            var settings = Faults.Settings(a, b, flaky.Server)
                .With("OutlierDetection:Enabled", false)
                .With("CircuitBreaker:MinimumThroughput", MinimumThroughput)
                .With("CircuitBreaker:FailureRatio", 0.5)
                .With("CircuitBreaker:SamplingDuration", TimeSpan.FromSeconds(30))
                .With("CircuitBreaker:BreakDuration", BreakDuration);
            return new Scenario(time, logs, Faults.Create(settings, time, logs), a, b, flaky);
        }

        public void Deconstruct(out ObservedTimeProvider time, out CapturingLoggerProvider logs, out Governed governed, out LoopbackServer a, out LoopbackServer b, out Flaky flaky) =>
            (time, logs, governed, a, b, flaky) = (Time, Logs, Governed, A, B, Flaky);

        /// <summary>
        /// Sends GETs (each of the others must succeed) until one reaches flaky, which holds it (set
        /// <see cref="Flaky.Hold"/> first): the half-open probe. Returns that call, still in flight.
        /// </summary>
        public async Task<Task<CallResult>> StartHeldProbeAsync(CancellationToken cancellationToken = default)
        {
            var arrival = Flaky.Held.NextArrivalAsync();
            for (var i = 0; i < 3; i++)
            {
                var call = Faults.TryGetAsync(Governed, cancellationToken);

                // Not cancelled with the probe's token: that token is for the probe, which the test cancels later.
                if (await Task.WhenAny(call, arrival).WaitAsync(Faults.Guard, CancellationToken.None) == arrival)
                {
                    Assert.True(await arrival, "no request arrived");
                    return call;
                }

                Assert.True((await call).Succeeded);
            }

            Assert.Fail("no call reached flaky within 3 GETs");
            return null!;
        }

        /// <summary>Sends GETs one at a time (each must succeed) until <paramref name="condition"/> holds; returns how many.</summary>
        public Task<int> SendUntilAsync(Func<bool> condition) => Faults.SendUntilAsync(Governed, condition);

        public async ValueTask DisposeAsync()
        {
            await Governed.DisposeAsync();
            await A.DisposeAsync();
            await B.DisposeAsync();
            await Flaky.Server.DisposeAsync();
        }
    }

    private sealed class Flaky
    {
        private volatile bool _healthy;
        private volatile bool _hold;

        public LoopbackServer Server { get; set; } = null!;

        public HeldRequests Held { get; } = new();

        public bool Healthy
        {
            get => _healthy;
            set => _healthy = value;
        }

        /// <summary>Gets or sets a value indicating whether requests are held (see <see cref="Held"/>) instead of answered.</summary>
        public bool Hold
        {
            get => _hold;
            set => _hold = value;
        }

        public Task Handle(HttpContext context)
        {
            if (_hold)
            {
                return Held.Handle(context);
            }

            context.Response.StatusCode = _healthy ? 200 : 503;
            return context.Response.WriteAsync("flaky", context.RequestAborted);
        }
    }
}
