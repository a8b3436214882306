using Governance.Tests.Infrastructure;
using Governance.Tests.Resilience;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Governance.Tests.Pipeline;

public sealed class HedgingTests
{
    [Fact]
    public async Task GetAsync_PrimaryEndpointHangs_HedgedAttemptToOtherEndpointWins()
    {
        // The service's clock is fake: a hedge is launched only when the test advances it by Delay, which it does only for
        // a call whose first attempt reached the stuck endpoint (a call whose first attempt went to "fast" is answered
        // without one).
        var delay = TimeSpan.FromSeconds(1);
        var time = new ObservedTimeProvider();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var stuckArrived = new SemaphoreSlim(0);
        await using var stuck = await LoopbackServer.StartAsync("stuck", async context =>
        {
            stuckArrived.Release();
            await release.Task.WaitAsync(TimeSpan.FromSeconds(60), context.RequestAborted);
            await context.Response.WriteAsync("stuck");
        });
        await using var fast = await LoopbackServer.StartAsync("fast");
        var settings = Faults.Settings(stuck, fast)
            .With("Hedging:Enabled", true)
            .With("Hedging:Delay", delay)
            .With("CircuitBreaker:Enabled", false);
        await using var governed = Faults.Create(settings, time);
        try
        {
            // Round robin sends first attempts to the stuck endpoint as well (all six here: the hedges take their turns of the
            // rotation too): without hedging those calls would hang.
            var hedged = 0;
            for (var i = 0; i < 6; i++)
            {
                var timersBefore = time.TimersCreated(delay);
                var call = governed.Client.GetAsync($"http://catalog/items/{i}");
                using var answered = new CancellationTokenSource();
                var toStuck = stuckArrived.WaitAsync(Faults.Guard, answered.Token);
                if (await Task.WhenAny(call, toStuck) == toStuck)
                {
                    Assert.True(await toStuck, $"call {i} neither reached the stuck endpoint nor was answered within {Faults.Guard}");

                    // The hedge waits on this call's Delay-long timer; once Delay has passed it goes to the other endpoint.
                    await time.WaitForTimersAsync(delay, timersBefore + 1).WaitAsync(Faults.Guard);
                    time.Advance(delay);
                    hedged++;
                }
                else
                {
                    answered.Cancel();
                }

                using var response = await call.WaitAsync(Faults.Guard);
                Assert.Equal("fast", Assert.Single(response.Headers.GetValues("x-server")));
                Assert.Equal(new Uri($"http://catalog/items/{i}"), response.RequestMessage!.RequestUri);
            }

            // Every request the stuck endpoint got was a call's first attempt, answered by a hedge to "fast".
            Assert.True(hedged > 0, "no call's first attempt went to the stuck endpoint");
            Assert.Equal(hedged, stuck.RequestCount);
        }
        finally
        {
            release.SetResult();
        }
    }

    [Fact]
    public async Task GetAsync_HedgeLaunchedWhileFirstAttemptInFlight_GoesToAnotherEndpoint()
    {
        // Every endpoint holds every request until the test releases it, so the hedge (Delay 0: launched as soon as the
        // first attempt is on the wire) starts while the first attempt is in flight. With the random policy over three
        // endpoints, a hedge that did not avoid the in-flight endpoint would land on it a third of the time: over 20 calls
        // the chance that such a bug goes unseen is (2/3)^20, about 3 in 10,000.
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var arrivals = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var bothArrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Func<HttpContext, Task> Holding(string name) => async context =>
        {
            arrivals.Enqueue(name);
            if (arrivals.Count >= 2)
            {
                bothArrived.TrySetResult();
            }

            await Volatile.Read(ref gate).Task.WaitAsync(TimeSpan.FromSeconds(60));
            await context.Response.WriteAsync(name);
        };
        await using var a = await LoopbackServer.StartAsync("a", Holding("a"));
        await using var b = await LoopbackServer.StartAsync("b", Holding("b"));
        await using var c = await LoopbackServer.StartAsync("c", Holding("c"));
        var settings = Governed.Service("catalog", "Random", a, b, c);
        settings["Services:catalog:Hedging:Enabled"] = "true";
        settings["Services:catalog:Hedging:Delay"] = "00:00:00";
        settings["Services:catalog:Hedging:MaxHedgedAttempts"] = "1";
        settings["Services:catalog:Retry:MaxRetries"] = "0";
        await using var governed = Governed.Create(settings);
        try
        {
            for (var i = 0; i < 20; i++)
            {
                var call = governed.Client.GetAsync($"http://catalog/items/{i}");
                await bothArrived.Task.WaitAsync(TimeSpan.FromSeconds(30));
                var targets = arrivals.ToArray();
                Assert.Equal(2, targets.Length);
                Assert.NotEqual(targets[0], targets[1]);

                arrivals.Clear();
                Volatile.Write(ref bothArrived, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
                var released = Interlocked.Exchange(ref gate, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
                released.SetResult();
                using var response = await call.WaitAsync(TimeSpan.FromSeconds(30));
                Assert.True(response.IsSuccessStatusCode);
                Assert.Contains(Assert.Single(response.Headers.GetValues("x-server")), targets);
            }
        }
        finally
        {
            // Held requests must end before the servers can stop, also when an assertion failed.
            Volatile.Read(ref gate).TrySetResult();
        }
    }

    [Fact]
    public async Task GetAsync_TwoHedgesOnTheFakeClock_EachAfterDelayToAnEndpointNotTriedYet()
    {
        // Every endpoint holds its request until released. Hedges are launched by the service's clock: nothing before
        // Delay, one more after each Delay, up to MaxHedgedAttempts, each to an endpoint the call has not used yet.
        var delay = TimeSpan.FromSeconds(1);
        var time = new ObservedTimeProvider();
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var arrivals = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var arrived = new SemaphoreSlim(0);
        Func<HttpContext, Task> Holding(string name) => async context =>
        {
            arrivals.Enqueue(name);
            arrived.Release();
            await gate.Task.WaitAsync(TimeSpan.FromSeconds(60));
            await context.Response.WriteAsync(name);
        };
        await using var a = await LoopbackServer.StartAsync("a", Holding("a"));
        await using var b = await LoopbackServer.StartAsync("b", Holding("b"));
        await using var c = await LoopbackServer.StartAsync("c", Holding("c"));
        var settings = Faults.Settings(a, b, c)
            .With("LoadBalancer:Policy", "Random")
            .With("Hedging:Enabled", true)
            .With("Hedging:Delay", delay)
            .With("Hedging:MaxHedgedAttempts", 2);
        await using var governed = Faults.Create(settings, time);
        try
        {
            var call = governed.Client.GetAsync(Faults.Url);

            // The first attempt; the first hedge waits on a Delay-long timer of the service's clock.
            Assert.True(await arrived.WaitAsync(Faults.Guard));
            await time.WaitForTimersAsync(delay, 1).WaitAsync(Faults.Guard);
            Assert.Single(arrivals);

            time.Advance(delay);
            Assert.True(await arrived.WaitAsync(Faults.Guard), "no hedge after Delay");
            await time.WaitForTimersAsync(delay, 2).WaitAsync(Faults.Guard);
            time.Advance(delay);
            Assert.True(await arrived.WaitAsync(Faults.Guard), "no second hedge after another Delay");

            // MaxHedgedAttempts 2: three attempts in all, and no timer armed for a fourth, whatever more time passes.
            time.Advance(delay * 5);
            Assert.Equal(2, time.TimersCreated(delay));
            Assert.Equal(3, arrivals.Count);
            Assert.Equal(3, arrivals.Distinct().Count());

            gate.SetResult();
            using var response = await call.WaitAsync(Faults.Guard);
            Assert.True(response.IsSuccessStatusCode);
            Assert.Equal(3, a.RequestCount + b.RequestCount + c.RequestCount);
        }
        finally
        {
            gate.TrySetResult();
        }
    }

    [Fact]
    public async Task PostAsync_HedgingEnabled_IsNotHedged()
    {
        // Two endpoints that hold every request, so a hedge would have somewhere to go and the first attempt is still in
        // flight when Delay has passed. A GET here waits on a Delay-long timer of the service's clock and sends a second
        // attempt when it fires (GetAsync_TwoHedgesOnTheFakeClock...); a POST must do neither. The body is in memory
        // (replayable), so only the method keeps it from being hedged.
        var delay = TimeSpan.FromSeconds(1);
        var time = new ObservedTimeProvider();
        var attempts = new AttemptCounter();
        var held = new HeldRequests();
        await using var a = await LoopbackServer.StartAsync("a", held.Handle);
        await using var b = await LoopbackServer.StartAsync("b", held.Handle);
        var settings = Faults.Settings(a, b)
            .With("Hedging:Enabled", true)
            .With("Hedging:Delay", delay);
        await using var governed = Faults.Create(settings, time, attempts: attempts);
        try
        {
            var post = governed.Client.PostAsync(Faults.Url, new StringContent("{}"));
            await held.WaitForArrivalAsync();

            // No hedge is scheduled; and when Delay has passed, none was sent (the counter sees an attempt as it leaves
            // governance, before it reaches a server).
            Assert.Equal(0, time.TimersCreated(delay));
            time.Advance(delay);
            Assert.Equal(1, attempts.Attempts);

            held.Release();
            using var response = await post.WaitAsync(Faults.Guard);
            Assert.True(response.IsSuccessStatusCode);

            // The first attempt was held until now, so a hedging strategy would have armed its Delay timer by this time.
            Assert.Equal(0, time.TimersCreated(delay));
            Assert.Equal(1, attempts.Attempts);
            Assert.Equal(1, held.Count);
        }
        finally
        {
            held.Release();
        }
    }

    [Fact]
    public async Task SendAsync_CallerSetsCookieHeader_EveryHedgedAttemptSendsIt()
    {
        // Both endpoints hold their request until both have arrived, so the hedge (Delay 0) always goes out.
        var arrivals = 0;
        var bothArrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        async Task Holding(HttpContext context)
        {
            if (Interlocked.Increment(ref arrivals) == 2)
            {
                bothArrived.TrySetResult();
            }

            await bothArrived.Task.WaitAsync(TimeSpan.FromSeconds(30));
            await context.Response.WriteAsync("ok");
        }

        await using var a = await LoopbackServer.StartAsync("a", Holding, record: true);
        await using var b = await LoopbackServer.StartAsync("b", Holding, record: true);
        var settings = Governed.Service("catalog", "RoundRobin", a, b);
        settings["Services:catalog:Hedging:Enabled"] = "true";
        settings["Services:catalog:Hedging:Delay"] = "00:00:00";
        settings["Services:catalog:Retry:MaxRetries"] = "0";
        await using var governed = Governed.Create(settings);
        using var request = new HttpRequestMessage(HttpMethod.Get, "http://catalog/items");
        request.Headers.TryAddWithoutValidation("Cookie", "session=abc");

        using var response = await governed.Client.SendAsync(request).WaitAsync(TimeSpan.FromSeconds(30));

        response.EnsureSuccessStatusCode();
        Assert.Equal("session=abc", Assert.Single(a.Received).Headers["Cookie"]);
        Assert.Equal("session=abc", Assert.Single(b.Received).Headers["Cookie"]);
    }

    [Fact]
    public async Task GetAsync_HedgeFailsInAWayRetryOnDoesNotList_OtherAttemptStillAnswers()
    {
        // RetryOn lists 5xx only: a refused connection is not retried, but while another attempt is on its way it is
        // not the call's answer either. "slow" holds each call's request until a handler under governance has seen the
        // call's attempt to the refusing endpoint fail, so in every call the refused attempt ends while the other one is
        // still in flight, whichever of the two was the first attempt.
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var arrived = new SemaphoreSlim(0);
        await using var slow = await LoopbackServer.StartAsync("slow", async context =>
        {
            var held = Volatile.Read(ref gate);
            arrived.Release();
            await held.Task.WaitAsync(TimeSpan.FromSeconds(60), context.RequestAborted);
            await context.Response.WriteAsync("slow");
        });
        using var refusing = new RefusingEndpoint();
        var refused = new RefusedAttempts(refusing.Address);
        var settings = new Dictionary<string, string?>
        {
            ["Services:catalog:Endpoints:0"] = slow.Address.ToString(),
            ["Services:catalog:Endpoints:1"] = refusing.Address.ToString(),
            ["Services:catalog:LoadBalancer:Policy"] = "RoundRobin",
            ["Services:catalog:Hedging:Enabled"] = "true",
            ["Services:catalog:Hedging:Delay"] = "00:00:00",
            ["Services:catalog:Retry:RetryOn:0"] = "5xx",
            ["Services:catalog:OutlierDetection:Enabled"] = "false",
            ["Services:catalog:CircuitBreaker:Enabled"] = "false",
        };
        await using var governed = Governed.Create(settings, refused.AddTo);
        try
        {
            for (var i = 0; i < 4; i++)
            {
                var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                Volatile.Write(ref gate, release);
                var call = governed.Client.GetAsync($"http://catalog/items/{i}");
                Assert.True(await arrived.WaitAsync(Faults.Guard), $"call {i}: no attempt reached slow");
                Assert.True(await refused.NextAsync(), $"call {i}: no attempt to the refusing endpoint failed while slow held its request");

                release.SetResult();
                using var response = await call.WaitAsync(Faults.Guard);
                Assert.Equal("slow", Assert.Single(response.Headers.GetValues("x-server")));
            }

            // One refused attempt per call: it was neither retried nor followed by another hedge.
            Assert.Equal(4, refused.Count);
        }
        finally
        {
            Volatile.Read(ref gate).TrySetResult();
        }
    }

    /// <summary>Signals each attempt to <c>endpoint</c> that fails with <see cref="HttpRequestException"/>, seen by a handler under governance.</summary>
    private sealed class RefusedAttempts(Uri endpoint)
    {
        private readonly string _authority = endpoint.Authority;
        private readonly SemaphoreSlim _failed = new(0);
        private int _count;

        public int Count => Volatile.Read(ref _count);

        public void AddTo(IServiceCollection services) =>
            services.ConfigureHttpClientDefaults(builder => builder.AddHttpMessageHandler(() => new Handler(this)));

        /// <summary>Completes with <see langword="true"/> at the next failed attempt (or at once for one not yet awaited), <see langword="false"/> after the wall-clock guard.</summary>
        public Task<bool> NextAsync() => _failed.WaitAsync(Faults.Guard);

        private sealed class Handler(RefusedAttempts owner) : DelegatingHandler
        {
            protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
            {
                try
                {
                    return await base.SendAsync(request, cancellationToken);
                }
                catch (HttpRequestException) when (request.RequestUri is { } uri && uri.Authority == owner._authority)
                {
                    Interlocked.Increment(ref owner._count);
                    owner._failed.Release();
                    throw;
                }
            }
        }
    }
}
