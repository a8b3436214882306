using System.Collections.Concurrent;
using System.Diagnostics;
using Governance.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace Governance.Tests.Resilience;

/// <summary><c>Timeout:PerAttempt</c> and <c>Timeout:Total</c> against endpoints that hang (hold requests until the test ends).</summary>
public sealed class TimeoutSettingsTests(ITestOutputHelper output)
{
    [Fact]
    public async Task PerAttempt_OneEndpointHangs_AttemptTimesOutAndCallSucceedsElsewhere()
    {
        var perAttempt = TimeSpan.FromSeconds(2);
        var total = TimeSpan.FromSeconds(10);
        var time = new ObservedTimeProvider();
        var attempts = new AttemptCounter();
        var tokens = new AttemptTokens();
        var held = new HeldRequests();
        await using var hang = await LoopbackServer.StartAsync("hang", held.Handle);
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        try
        {
            var settings = Faults.Settings(hang, a, b)
                .With("Timeout:PerAttempt", perAttempt)
                .With("Timeout:Total", total);
            await using var governed = Create(settings, time, tokens, attempts);

            // Round robin starts at a random endpoint: send until a call's first attempt reaches the hanging one.
            var arrival = held.NextArrivalAsync();
            Task<CallResult>? call = null;
            for (var i = 0; i < 3 && call is null; i++)
            {
                var next = Faults.TryGetAsync(governed);
                if (await Task.WhenAny(next, arrival).WaitAsync(Faults.Guard) == arrival)
                {
                    Assert.True(await arrival, "no request arrived");
                    call = next;
                }
                else
                {
                    Assert.True((await next).Succeeded);
                }
            }

            Assert.NotNull(call);
            var attemptsBefore = attempts.Attempts;
            var hanging = tokens.Last;
            Assert.False(call.IsCompleted, "the call to the hanging endpoint completed without the clock moving");

            // One tick before PerAttempt nothing is due. Timers fire synchronously inside Advance and cancel the attempt's
            // token there, so an unchanged count and a live token prove that no timeout fired early (the call itself
            // would only end later, on the thread pool).
            var firedBefore = time.TimersFired();
            time.Advance(perAttempt - TimeSpan.FromTicks(1));
            Assert.Equal(firedBefore, time.TimersFired());
            Assert.False(hanging.IsCancellationRequested, $"the attempt was cancelled before PerAttempt ({perAttempt}) passed");
            Assert.False(call.IsCompleted, "the call ended before its attempt timed out");
            Assert.Equal(attemptsBefore, attempts.Attempts);

            // At PerAttempt the attempt timeout fires; the retry goes to an endpoint not tried yet.
            time.Advance(TimeSpan.FromTicks(1));
            Assert.True(time.TimersFired() > firedBefore, $"no timer fired at PerAttempt ({perAttempt})");
            Assert.True(hanging.IsCancellationRequested, $"the attempt was not cancelled at PerAttempt ({perAttempt})");
            var result = await call.WaitAsync(Faults.Guard);
            output.WriteLine($"call answered by {result.Server} with {result.Status} after the attempt timed out at {perAttempt} of fake time ({attempts.Attempts - attemptsBefore + 1} attempts; Total {total})");

            Assert.True(result.Succeeded, result.ToString());
            Assert.Contains(result.Server, new[] { "a", "b" });
            Assert.Equal(1, held.Count);
            Assert.Equal(1, attempts.Attempts - attemptsBefore);
        }
        finally
        {
            held.Release();
        }
    }

    [Fact]
    public async Task Total_AllEndpointsHang_ThrowsCallTimeoutExceptionNamingServiceAfterTotal()
    {
        // Attempt 1 at 0 s and attempt 2 at 4 s time out after PerAttempt; attempt 3 starts at 8 s with 2 s left, so
        // the total timeout (10 s) is what ends it.
        var perAttempt = TimeSpan.FromSeconds(4);
        var total = TimeSpan.FromSeconds(10);
        var time = new ObservedTimeProvider();
        var tokens = new AttemptTokens();
        var held = new HeldRequests();
        await using var h1 = await LoopbackServer.StartAsync("h1", held.Handle);
        await using var h2 = await LoopbackServer.StartAsync("h2", held.Handle);
        try
        {
            var settings = Faults.Settings(h1, h2)
                .With("Retry:MaxRetries", 2)
                .With("Timeout:PerAttempt", perAttempt)
                .With("Timeout:Total", total);
            await using var governed = Create(settings, time, tokens);
            var call = governed.Client.GetAsync(Faults.Url);

            // Each attempt's token is cancelled synchronously inside the Advance that reaches its deadline (the total
            // timeout's cancels it too), so its state right after an Advance says for certain whether a timeout fired.
            // The count of timers fired cannot: a second after a timeout fires, the scheduler sweeps once more.
            // Attempts 1 and 2: alive one tick before PerAttempt, cancelled at it.
            for (var attempt = 1; attempt <= 2; attempt++)
            {
                await held.WaitForArrivalAsync();
                var token = tokens.Last;
                time.Advance(perAttempt - TimeSpan.FromTicks(1));
                Assert.False(token.IsCancellationRequested, $"attempt {attempt} was cancelled before PerAttempt ({perAttempt}) passed");
                time.Advance(TimeSpan.FromTicks(1));
                Assert.True(token.IsCancellationRequested, $"attempt {attempt} was not cancelled at PerAttempt ({perAttempt})");
            }

            // Attempt 3, at 8 s: alive one tick before Total, which neither the total timeout nor its own may end early.
            await held.WaitForArrivalAsync();
            var last = tokens.Last;
            time.Advance(total - (2 * perAttempt) - TimeSpan.FromTicks(1));
            Assert.False(last.IsCancellationRequested, $"the last attempt was cancelled before Total ({total}) passed");
            Assert.False(call.IsCompleted, "the call ended before the total timeout");

            // At Total it is cancelled, and that alone ends the call: the clock does not move again.
            time.Advance(TimeSpan.FromTicks(1));
            Assert.True(last.IsCancellationRequested, $"the last attempt was not cancelled at Total ({total})");
            var ex = await Assert.ThrowsAsync<CallTimeoutException>(() => call.WaitAsync(Faults.Guard));
            output.WriteLine($"{ex.GetType().Name} once the fake clock reached {total}, with every attempt still alive a tick before its deadline: {ex.Message} (server requests: h1={h1.RequestCount}, h2={h2.RequestCount})");

            Assert.Equal(Faults.Service, ex.ServiceName);
            Assert.Equal(total, ex.Timeout);
            Assert.Equal(3, ex.Attempts);
            Assert.Contains($"Service '{Faults.Service}'", ex.Message, StringComparison.Ordinal);
            Assert.Equal(3, held.Count);
            Assert.Equal(3, tokens.Count);
            Assert.Equal(3, h1.RequestCount + h2.RequestCount);
        }
        finally
        {
            held.Release();
        }
    }

    [Fact]
    public async Task PerAttempt_RealClockOneEndpointHangs_AttemptThereEndsNoEarlierThanPerAttemptAndCallSucceedsElsewhere()
    {
        // The system clock, which the fake-clock tests above do not exercise: an attempt to the hanging endpoint is
        // abandoned once PerAttempt has passed, never before, and the call succeeds elsewhere. Were the attempt timeout
        // never to fire, the call would end with the total timeout instead. Only a lower bound on durations is asserted,
        // which a slow machine cannot break; and the limits are wide (2 s for an attempt to a fast endpoint, 20 s for a
        // call), so CPU-heavy tests running in parallel cannot make an attempt to "a" or "b" time out as well.
        var perAttempt = TimeSpan.FromSeconds(2);
        var total = TimeSpan.FromSeconds(20);
        var attempts = new AttemptCounter();
        var held = new HeldRequests();
        await using var hang = await LoopbackServer.StartAsync("hang", held.Handle);
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        var hangAuthority = hang.Address.GetLeftPart(UriPartial.Authority);
        try
        {
            // Warm up the fast servers outside governance, so a cold start does not eat into an attempt's time.
            using (var plain = new HttpClient())
            {
                await plain.GetStringAsync(a.Address).WaitAsync(Faults.Guard);
                await plain.GetStringAsync(b.Address).WaitAsync(Faults.Guard);
            }

            var settings = Faults.Settings(hang, a, b)
                .With("Retry:BaseDelay", "00:00:00.010")
                .With("Timeout:PerAttempt", perAttempt)
                .With("Timeout:Total", total);
            await using var governed = Faults.Create(settings, attempts: attempts);
            var durations = new List<string>();
            for (var i = 0; i < 9 && HangAttempts() < 2; i++)
            {
                var hangBefore = HangAttempts();
                var watch = Stopwatch.StartNew();
                var result = await Faults.TryGetAsync(governed);
                var elapsed = watch.Elapsed;
                var hungThere = HangAttempts() - hangBefore;
                durations.Add($"{elapsed.TotalMilliseconds.ToString("F0", System.Globalization.CultureInfo.InvariantCulture)}{(hungThere > 0 ? " (hang)" : string.Empty)}");
                Assert.True(result.Succeeded, $"call {i}: {result}");
                Assert.Contains(result.Server, new[] { "a", "b" });
                if (hungThere > 0)
                {
                    // Stopwatch and TimeProvider.System read the same timestamp; the attempt started after the watch did.
                    Assert.True(elapsed >= perAttempt * hungThere, $"call {i} tried the hanging endpoint {hungThere} time(s) but ended after {elapsed}, before PerAttempt {perAttempt} passed");
                }
            }

            output.WriteLine($"{durations.Count} calls, {HangAttempts()} attempts abandoned on the hanging endpoint; call durations (ms): {string.Join(", ", durations)}");
            Assert.Equal(2, HangAttempts());
        }
        finally
        {
            held.Release();
        }

        int HangAttempts() => attempts.ByAuthority.GetValueOrDefault(hangAuthority);
    }

    [Fact]
    public async Task Disabled_EndpointHangs_NoTimeoutFiresAndOnlyTheCallerEndsTheCall()
    {
        // Timeout:Enabled false: the configured limits stay in the settings but bound nothing; an hour of fake time
        // passes with the attempt still waiting, and the caller's cancellation is what ends it (no retry, no
        // CallTimeoutException).
        var time = new ObservedTimeProvider();
        var held = new HeldRequests();
        await using var hang = await LoopbackServer.StartAsync("hang", held.Handle);
        try
        {
            var settings = Faults.Settings(hang)
                .With("Timeout:Enabled", false)
                .With("Timeout:PerAttempt", TimeSpan.FromSeconds(2))
                .With("Timeout:Total", TimeSpan.FromSeconds(10));
            await using var governed = Faults.Create(settings, time);
            using var caller = new CancellationTokenSource();
            var call = governed.Client.GetAsync(Faults.Url, caller.Token);

            await held.WaitForArrivalAsync();

            // Timers fire synchronously inside Advance: an unchanged count proves that no timeout fired in that hour (a
            // fired one would end the call only later, on the thread pool, after any IsCompleted check made here).
            var firedBefore = time.TimersFired();
            time.Advance(TimeSpan.FromHours(1));
            Assert.Equal(firedBefore, time.TimersFired());
            Assert.False(call.IsCompleted, $"the call ended without the caller cancelling it: {call.Status} {call.Exception?.InnerException?.GetType().Name}");

            await caller.CancelAsync();
            var ex = await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call.WaitAsync(Faults.Guard));
            output.WriteLine($"after 1 h of fake time the call was still waiting; the caller's cancellation ended it with {ex.GetType().Name}");
            Assert.Equal(1, held.Count);
            Assert.Equal(1, hang.RequestCount);
        }
        finally
        {
            held.Release();
        }
    }

    [Fact]
    public async Task Disabled_FirstEndpointFails_RetriesStillGoElsewhere()
    {
        // Without a total timeout the retry phase runs on the caller's token alone: retries and their delays still happen.
        await using var failing = await Faults.StartStatusAsync("failing", 503);
        await using var a = await LoopbackServer.StartAsync("a");
        var settings = Faults.Settings(failing, a)
            .With("Timeout:Enabled", false)
            .With("Retry:BaseDelay", "00:00:00.001")
            .With("OutlierDetection:Enabled", false)
            .With("CircuitBreaker:Enabled", false);
        await using var governed = Faults.Create(settings);

        var results = await Faults.SendSequentialAsync(governed, 6);
        output.WriteLine(Faults.Describe(results));

        Assert.All(results, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.All(results, r => Assert.Equal("a", r.Server));
        Assert.True(failing.RequestCount >= 1, "no call went to the failing endpoint first, so no retry was exercised");
    }

    [Fact]
    public async Task Disabled_ThenEnabledByReload_TimeoutsApplyToNewCalls()
    {
        var perAttempt = TimeSpan.FromSeconds(2);
        var total = TimeSpan.FromSeconds(5);
        var time = new ObservedTimeProvider();
        var held = new HeldRequests();
        await using var hang = await LoopbackServer.StartAsync("hang", held.Handle);
        try
        {
            var settings = Faults.Settings(hang)
                .With("Retry:MaxRetries", 0)
                .With("Timeout:Enabled", false)
                .With("Timeout:PerAttempt", perAttempt)
                .With("Timeout:Total", total);
            await using var governed = Faults.Create(settings, time);
            var unbounded = governed.Client.GetAsync(Faults.Url);
            await held.WaitForArrivalAsync();

            governed.Configuration[$"MeshGovernance:Services:{Faults.Service}:Timeout:Enabled"] = "true";
            governed.Configuration.Reload();
            var bounded = governed.Client.GetAsync(Faults.Url);
            await held.WaitForArrivalAsync();
            time.Advance(perAttempt);

            var ex = await Assert.ThrowsAsync<CallTimeoutException>(() => bounded.WaitAsync(Faults.Guard));
            output.WriteLine($"after the reload: {ex.Message}; the call started before it is still waiting: {!unbounded.IsCompleted}");
            Assert.Equal(perAttempt, ex.Timeout);
            Assert.False(unbounded.IsCompleted, "the call started while timeouts were off was bounded by a timeout");
        }
        finally
        {
            held.Release();
        }
    }

    /// <summary>A governed client on <paramref name="time"/> whose attempts <paramref name="tokens"/> (and <paramref name="attempts"/>, when given) see.</summary>
    private static Governed Create(Dictionary<string, string?> settings, TimeProvider time, AttemptTokens tokens, AttemptCounter? attempts = null) =>
        Governed.Create(settings, services =>
        {
            services.AddSingleton(time);
            tokens.AddTo(services);
            attempts?.AddTo(services);
        });

    /// <summary>
    /// Keeps the cancellation token of every attempt that leaves the governance handler, in order, with a real handler
    /// placed after it in every client's pipeline. An attempt's token is the one its timeout cancels.
    /// </summary>
    private sealed class AttemptTokens
    {
        private readonly ConcurrentQueue<CancellationToken> _tokens = new();

        public int Count => _tokens.Count;

        /// <summary>Gets the token of the latest attempt.</summary>
        public CancellationToken Last => _tokens.Last();

        /// <summary>Adds the recording handler to every client; call it from <c>Governed.Create</c>'s configure callback.</summary>
        public void AddTo(IServiceCollection services) =>
            services.ConfigureHttpClientDefaults(builder => builder.AddHttpMessageHandler(() => new RecordingHandler(this)));

        private sealed class RecordingHandler(AttemptTokens tokens) : DelegatingHandler
        {
            protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
            {
                tokens._tokens.Enqueue(cancellationToken);
                return base.SendAsync(request, cancellationToken);
            }
        }
    }
}
