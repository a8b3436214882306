using System.Diagnostics;
using Governance.Tests.Infrastructure;
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
        var held = new HeldRequests();
        await using var hang = await LoopbackServer.StartAsync("hang", held.Handle);
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        try
        {
            var settings = Faults.Settings(hang, a, b)
                .With("Timeout:PerAttempt", perAttempt)
                .With("Timeout:Total", total);
            await using var governed = Faults.Create(settings, time, attempts: attempts);

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
            var started = time.GetUtcNow();
            var attemptsBefore = attempts.Attempts;
            Assert.False(call.IsCompleted, "the call to the hanging endpoint completed without the clock moving");

            // The attempt timeout fires on the fake clock; the retry goes to an endpoint not tried yet.
            time.Advance(perAttempt);
            var result = await call.WaitAsync(Faults.Guard);
            var elapsed = time.GetUtcNow() - started;
            output.WriteLine($"call answered by {result.Server} with {result.Status} after {elapsed} of fake time ({attempts.Attempts - attemptsBefore + 1} attempts; PerAttempt {perAttempt}, Total {total})");

            Assert.True(result.Succeeded, result.ToString());
            Assert.Contains(result.Server, new[] { "a", "b" });
            Assert.Equal(1, held.Count);
            Assert.Equal(1, attempts.Attempts - attemptsBefore);
            Assert.True(elapsed < total, $"{elapsed} exceeds the total timeout {total}");
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
        var held = new HeldRequests();
        await using var h1 = await LoopbackServer.StartAsync("h1", held.Handle);
        await using var h2 = await LoopbackServer.StartAsync("h2", held.Handle);
        try
        {
            var settings = Faults.Settings(h1, h2)
                .With("Retry:MaxRetries", 2)
                .With("Timeout:PerAttempt", perAttempt)
                .With("Timeout:Total", total);
            await using var governed = Faults.Create(settings, time);
            var started = time.GetUtcNow();
            var call = governed.Client.GetAsync(Faults.Url);

            await held.WaitForArrivalAsync();
            time.Advance(perAttempt);
            await held.WaitForArrivalAsync();
            time.Advance(perAttempt);
            await held.WaitForArrivalAsync();
            Assert.False(call.IsCompleted, "the call ended before the total timeout");
            time.Advance(total - (2 * perAttempt));

            var ex = await Assert.ThrowsAsync<CallTimeoutException>(() => call.WaitAsync(Faults.Guard));
            var elapsed = time.GetUtcNow() - started;
            output.WriteLine($"{ex.GetType().Name} after {elapsed} of fake time: {ex.Message} (server requests: h1={h1.RequestCount}, h2={h2.RequestCount})");

            Assert.Equal(Faults.Service, ex.ServiceName);
            Assert.Equal(total, ex.Timeout);
            Assert.Equal(3, ex.Attempts);
            Assert.Contains($"Service '{Faults.Service}'", ex.Message, StringComparison.Ordinal);
            Assert.Equal(total, elapsed);
            Assert.Equal(3, held.Count);
            Assert.Equal(3, h1.RequestCount + h2.RequestCount);
        }
        finally
        {
            held.Release();
        }
    }

    [Fact]
    public async Task PerAttempt_RealClockOneEndpointHangs_EveryCallSucceedsWithinTotal()
    {
        // Real clock, small timeouts. Only an upper bound is asserted: a call must end within Total plus a generous
        // slack; nothing here depends on how fast the machine is.
        var perAttempt = TimeSpan.FromMilliseconds(500);
        var total = TimeSpan.FromSeconds(3);
        var slack = TimeSpan.FromSeconds(5);
        var held = new HeldRequests();
        await using var hang = await LoopbackServer.StartAsync("hang", held.Handle);
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        try
        {
            // Warm up the fast servers outside governance, so a cold start does not eat the 500 ms of an attempt.
            using (var plain = new HttpClient())
            {
                await plain.GetStringAsync(a.Address).WaitAsync(Faults.Guard);
                await plain.GetStringAsync(b.Address).WaitAsync(Faults.Guard);
            }

            var settings = Faults.Settings(hang, a, b)
                .With("Retry:BaseDelay", "00:00:00.010")
                .With("Timeout:PerAttempt", perAttempt)
                .With("Timeout:Total", total);
            await using var governed = Faults.Create(settings);
            var durations = new List<TimeSpan>();
            for (var i = 0; i < 9 && held.Count < 2; i++)
            {
                var watch = Stopwatch.StartNew();
                var result = await Faults.TryGetAsync(governed);
                durations.Add(watch.Elapsed);
                Assert.True(result.Succeeded, $"call {i}: {result}");
                Assert.True(watch.Elapsed < total + slack, $"call {i} took {watch.Elapsed}, more than Total {total} + {slack}");
            }

            output.WriteLine($"{durations.Count} calls, {held.Count} attempts timed out on the hanging endpoint; call durations (ms): {string.Join(", ", durations.Select(d => d.TotalMilliseconds.ToString("F0", System.Globalization.CultureInfo.InvariantCulture)))}");
            Assert.Equal(2, held.Count);
        }
        finally
        {
            held.Release();
        }
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
            time.Advance(TimeSpan.FromHours(1));
            await Task.Yield();
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
}
