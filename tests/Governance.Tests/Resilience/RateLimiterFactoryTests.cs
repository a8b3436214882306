using System.Diagnostics;
using Governance.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace Governance.Tests.Resilience;

/// <summary>
/// Client-side rate limits per service. System.Threading.RateLimiting replenishes on the real clock, so these tests
/// either use the concurrency limiter (no clock at all) or bound what the clock can add by the measured duration.
/// </summary>
public sealed class RateLimiterFactoryTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Reload_EditsAKeyTheConcurrencyLimitIgnores_LimiterKeptWithItsPermitHeld()
    {
        // orders: Concurrency 1 under Defaults that set a rate (for other services). A reload edits only that rate: the
        // limiter, whose one permit a call holds, stays in force, so a second call is still rejected (a fresh limiter
        // beside the old one let two calls reach a backend limited to one).
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var arrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = await LoopbackServer.StartAsync("a", async context =>
        {
            arrived.TrySetResult();
            await gate.Task.WaitAsync(context.RequestAborted);
        });
        var settings = Governed.Service("orders", null, server);
        settings["Defaults:RateLimit:PermitsPerSecond"] = "100";
        settings["Services:orders:RateLimit:Algorithm"] = "Concurrency";
        settings["Services:orders:RateLimit:Burst"] = "1";
        await using var governed = Governed.Create(settings);
        Assert.True(governed.Services.GetRequiredService<Governance.Pipeline.GovernanceRuntime>().TryGetService("orders", out var runtime));
        var limiter = runtime.Policy.Limiter;
        var held = governed.Client.GetAsync("http://orders/");
        try
        {
            Assert.Equal(0, limiter!.GetStatistics()!.CurrentAvailablePermits);
            await arrived.Task.WaitAsync(Faults.Guard);
            governed.Configuration["MeshGovernance:Defaults:RateLimit:PermitsPerSecond"] = "200";
            governed.Configuration.Reload();

            Assert.Same(limiter, runtime.Policy.Limiter);
            await Assert.ThrowsAsync<RateLimitRejectedException>(() => governed.Client.GetAsync("http://orders/").WaitAsync(Faults.Guard));
            Assert.Equal(1, server.RequestCount);
        }
        finally
        {
            gate.TrySetResult();
        }

        (await held.WaitAsync(Faults.Guard)).Dispose();
    }

    [Theory]
    [InlineData(null, 100)] // no Burst anywhere: 100 in flight, not the 5,000 calls a second Defaults sets for other algorithms
    [InlineData("7", 7)]
    public void Settings_ConcurrencyUnderDefaultsWithARate_InFlightLimitIsBurstNeverTheRate(string? burst, int expected)
    {
        var defaults = new Governance.Configuration.ServiceOptions { RateLimit = new Governance.Configuration.RateLimitOptions { PermitsPerSecond = 5000 } };
        var service = new Governance.Configuration.ServiceOptions
        {
            RateLimit = new Governance.Configuration.RateLimitOptions { Algorithm = "Concurrency", Burst = burst is null ? null : int.Parse(burst, System.Globalization.CultureInfo.InvariantCulture) },
        };

        var settings = Governance.Resilience.ResilienceSettings.Create(service, defaults);
        using var limiter = Governance.RateLimiting.RateLimiterFactory.Create(settings.RateLimit!);

        Assert.Equal(expected, settings.RateLimit!.Burst);
        Assert.Equal(expected, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Theory]
    [InlineData(100, 100, 100)] // a tenth of the rate ten times a second
    [InlineData(5, 5, 200)] // under ten a second: one token at a time
    [InlineData(100, 1, 10)] // a bucket smaller than a tenth of the rate: full-bucket refills, as often as the rate needs
    [InlineData(1_000_000, 1_000, 1)] // the smallest bucket validation lets through for this rate: one refill a millisecond
    public void Create_TokenBucket_EachRefillFitsTheBucketAndTheRateIsKept(int permitsPerSecond, int burst, double periodMs)
    {
        // System.Threading.RateLimiting caps the bucket at its size on every refill, so a refill larger than Burst would
        // be cut and the bucket would sustain less than PermitsPerSecond (Burst 1 at 100/s refilled 10 tokens every
        // 100 ms: 10 calls a second). Every refill must fit the bucket, and refills times tokens must make the rate.
        using var limiter = Assert.IsType<System.Threading.RateLimiting.TokenBucketRateLimiter>(
            Governance.RateLimiting.RateLimiterFactory.Create(new Governance.Resilience.RateLimitSettings("TokenBucket", permitsPerSecond, burst, 0)));

        var period = limiter.ReplenishmentPeriod;
        var tokensPerRefill = permitsPerSecond * period.TotalSeconds;

        Assert.Equal(TimeSpan.FromMilliseconds(periodMs), period);
        Assert.InRange(tokensPerRefill, 1, burst);
        Assert.True(limiter.IsAutoReplenishing);
    }

    /// <summary>Governance read from <paramref name="editable"/> (its keys under <c>MeshGovernance:</c>), on <paramref name="time"/>.</summary>
    private static ServiceProvider Build(EditableConfiguration editable, TimeProvider time)
    {
        var services = new ServiceCollection();
        services.AddSingleton<Microsoft.Extensions.Configuration.IConfiguration>(new Microsoft.Extensions.Configuration.ConfigurationBuilder().Add(editable).Build());
        services.AddSingleton(time);
        services.AddMeshGovernance();
        return services.BuildServiceProvider();
    }

    private static IEnumerable<KeyValuePair<string, string?>> UnderSection(Dictionary<string, string?> settings) =>
        settings.Select(s => new KeyValuePair<string, string?>("MeshGovernance:" + s.Key, s.Value));

    [Fact]
    public async Task Create_TokenBucketBurst_AdmitsBucketAndRejectsRestWithoutNetwork()
    {
        // 20 permits/s, bucket of 20 (Burst defaults to the rate): refills 2 tokens every 100 ms. 100 calls are issued.
        const int PermitsPerSecond = 20;
        const int Issued = 100;
        const int TokensPerPeriod = PermitsPerSecond / 10;
        var period = TimeSpan.FromSeconds((double)TokensPerPeriod / PermitsPerSecond);
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        await using var governed = Faults.Create(Faults.Settings(a, b).With("RateLimit:PermitsPerSecond", PermitsPerSecond));

        // Admission is decided synchronously inside GetAsync (the permit is taken before anything is sent, and a rejected
        // call returns an already-faulted task), so only the time spent issuing the calls can let refills in; the
        // network time of the admitted calls, after the loop, cannot.
        var watch = Stopwatch.StartNew();
        var calls = new Task<CallResult>[Issued];
        for (var i = 0; i < Issued; i++)
        {
            calls[i] = Faults.TryGetAsync(governed);
        }

        var issueElapsed = watch.Elapsed;
        var completedWhenIssued = Array.ConvertAll(calls, c => c.IsCompleted);
        var results = await Task.WhenAll(calls).WaitAsync(Faults.BatchGuard);

        // The bucket starts full; while the calls are issued it gains at most one refill per period begun.
        var admitted = results.Count(r => r.Succeeded);
        var maxAdmitted = PermitsPerSecond + (TokensPerPeriod * (1 + (int)(issueElapsed / period)));
        var rejections = results.Where(r => !r.Succeeded).Select(r => Assert.IsType<RateLimitRejectedException>(r.Error)).ToArray();
        output.WriteLine($"{Issued} calls at {PermitsPerSecond}/s (bucket {PermitsPerSecond}) issued in {issueElapsed.TotalMilliseconds:F1} ms, so at most {maxAdmitted} could be admitted: {admitted} admitted, {rejections.Length} rejected, backend received {a.RequestCount + b.RequestCount}");
        output.WriteLine($"first rejection: {rejections.FirstOrDefault()?.Message}");

        Assert.InRange(admitted, PermitsPerSecond, maxAdmitted);
        Assert.NotEmpty(rejections);
        Assert.Equal(Issued - admitted, rejections.Length);

        // Rejected without network: every rejected call had ended before the loop that issued them did, and the backend
        // received the admitted calls only.
        Assert.All(Enumerable.Range(0, Issued).Where(i => !results[i].Succeeded), i => Assert.True(completedWhenIssued[i], $"call {i} was rejected after the calls were issued"));
        Assert.Equal(admitted, a.RequestCount + b.RequestCount);
        Assert.All(rejections, ex =>
        {
            Assert.Equal(Faults.Service, ex.ServiceName);
            Assert.Contains($"Service '{Faults.Service}'", ex.Message, StringComparison.Ordinal);
            // The limiter's hint is one replenishment period; read after the burst, it has counted down since.
            Assert.NotNull(ex.RetryAfter);
            Assert.InRange(ex.RetryAfter.Value, TimeSpan.Zero, period);
        });
    }

    [Fact]
    public async Task Create_RetriesOfAnAdmittedCall_TakeNoPermit()
    {
        // A concurrency limit of one call, no queue: the call holds the only permit until it ends, so a retry (after a 503)
        // that asked for a permit of its own would be refused whatever the clock does.
        var requests = 0;
        Task Handler(HttpContext context)
        {
            context.Response.StatusCode = Interlocked.Increment(ref requests) == 1 ? 503 : 200;
            return Task.CompletedTask;
        }

        await using var a = await LoopbackServer.StartAsync("a", Handler);
        await using var b = await LoopbackServer.StartAsync("b", Handler);
        var settings = Faults.Settings(a, b)
            .With("RateLimit:Algorithm", "Concurrency")
            .With("RateLimit:Burst", 1);
        await using var governed = Faults.Create(settings, new ObservedTimeProvider());

        var result = await Faults.TryGetAsync(governed);
        output.WriteLine($"one call with a retry under a concurrency limit of 1: {result}; server requests {Volatile.Read(ref requests)}");
        Assert.True(result.Succeeded, result.ToString());
        Assert.Equal(2, Volatile.Read(ref requests));

        // The call gave its one permit back when it ended: the next call is admitted.
        var next = await Faults.TryGetAsync(governed);
        Assert.True(next.Succeeded, next.ToString());
        Assert.Equal(3, Volatile.Read(ref requests));
    }

    [Fact]
    public async Task Create_ConcurrencyBurst2_ThirdCallRejectedWhileTwoHeld()
    {
        var held = new HeldRequests();
        await using var server = await LoopbackServer.StartAsync("held", held.Handle);
        try
        {
            var settings = Faults.Settings(server)
                .With("RateLimit:Algorithm", "Concurrency")
                .With("RateLimit:Burst", 2);
            await using var governed = Faults.Create(settings);

            var first = governed.Client.GetAsync(Faults.Url);
            var second = governed.Client.GetAsync(Faults.Url);
            await held.WaitForArrivalAsync();
            await held.WaitForArrivalAsync();

            var ex = await Assert.ThrowsAsync<RateLimitRejectedException>(() => governed.Client.GetAsync(Faults.Url).WaitAsync(Faults.Guard));
            output.WriteLine($"third call while two are held: {ex.Message}");
            Assert.Equal(Faults.Service, ex.ServiceName);
            Assert.Null(ex.RetryAfter);
            Assert.Equal(2, server.RequestCount);

            held.Release();
            (await first.WaitAsync(Faults.Guard)).Dispose();
            (await second.WaitAsync(Faults.Guard)).Dispose();

            // The permits came back when the calls ended.
            using var fourth = await governed.Client.GetAsync(Faults.Url).WaitAsync(Faults.Guard);
            Assert.True(fourth.IsSuccessStatusCode);
            Assert.Equal(3, server.RequestCount);
        }
        finally
        {
            held.Release();
        }
    }

    [Fact]
    public async Task Reload_ServiceRemovedWhileACallWaitsForAPermit_TheCallIsNotRejected()
    {
        var held = new HeldRequests();
        await using var server = await LoopbackServer.StartAsync("held", held.Handle);
        try
        {
            var editable = new EditableConfiguration();
            editable.Change(UnderSection(Faults.Settings(server).OnePermitOneWaiting()));

            // The section stays once the service is gone (a section that vanishes altogether is rejected as a broken file).
            editable.Change("MeshGovernance:Application:Name", "orders");
            await using var provider = Build(editable, new ObservedTimeProvider());
            using var client = provider.GetRequiredService<IHttpClientFactory>().CreateClient();
            var runtime = provider.GetRequiredService<Governance.Pipeline.GovernanceRuntime>();
            var first = client.GetAsync(Faults.Url);
            await held.WaitForArrivalAsync();
            var queued = client.GetAsync(Faults.Url);

            // The service goes away while one call holds its only permit and another waits for it.
            editable.Remove($"MeshGovernance:Services:{Faults.Service}");
            Assert.False(runtime.TryGetService(Faults.Service, out _));
            held.Release();

            // Calls that had read the service finish as they would have: the limiter is retired, not disposed under them.
            using var firstResponse = await first.WaitAsync(Faults.Guard);
            using var queuedResponse = await queued.WaitAsync(Faults.Guard);
            Assert.True(queuedResponse.IsSuccessStatusCode);
            Assert.Equal(2, server.RequestCount);
        }
        finally
        {
            held.Release();
        }
    }

    [Fact]
    public async Task Reload_LimiterReplacedWhileACallQueuesLongerThanTheGrace_TheCallIsNotRejected()
    {
        var held = new HeldRequests();
        await using var server = await LoopbackServer.StartAsync("held", held.Handle);
        try
        {
            var editable = new EditableConfiguration();
            var settings = Faults.Settings(server).OnePermitOneWaiting().With("Timeout:Enabled", false);
            editable.Change(UnderSection(settings));
            var time = new ObservedTimeProvider();
            await using var provider = Build(editable, time);
            using var client = provider.GetRequiredService<IHttpClientFactory>().CreateClient();
            client.Timeout = Timeout.InfiniteTimeSpan;
            var first = client.GetAsync(Faults.Url);
            await held.WaitForArrivalAsync();
            var queued = client.GetAsync(Faults.Url);

            // A reload gives the service a new limiter while one call holds the old one's only permit and another waits
            // for it; the first call then outlasts the grace the old limiter is given (100 s + 1 s with timeouts off).
            editable.Change(UnderSection(settings.With("RateLimit:Burst", 2)));
            time.Advance(TimeSpan.FromSeconds(103));
            Assert.False(queued.IsCompleted, $"the queued call ended while it waited: {queued.Status} {queued.Exception?.InnerException?.Message}");

            held.Release();
            using var firstResponse = await first.WaitAsync(Faults.Guard);
            using var queuedResponse = await queued.WaitAsync(Faults.Guard);
            Assert.True(queuedResponse.IsSuccessStatusCode);
            Assert.Equal(2, server.RequestCount);
        }
        finally
        {
            held.Release();
        }
    }

    [Fact]
    public async Task Create_ConcurrencyWithQueueLimit_QueuesInsteadOfRejectingUntilQueueFull()
    {
        var held = new HeldRequests();
        await using var server = await LoopbackServer.StartAsync("held", held.Handle);
        try
        {
            var settings = Faults.Settings(server)
                .OnePermitOneWaiting();
            await using var governed = Faults.Create(settings);

            var first = governed.Client.GetAsync(Faults.Url);
            await held.WaitForArrivalAsync();
            var queued = governed.Client.GetAsync(Faults.Url);

            // The queue holds one call: the next is rejected, and the queued one has not reached the backend.
            var ex = await Assert.ThrowsAsync<RateLimitRejectedException>(() => governed.Client.GetAsync(Faults.Url).WaitAsync(Faults.Guard));
            Assert.Equal(Faults.Service, ex.ServiceName);
            Assert.False(queued.IsCompleted, "the queued call completed while the permit was held");
            Assert.Equal(1, server.RequestCount);

            held.Release();
            using var firstResponse = await first.WaitAsync(Faults.Guard);
            using var queuedResponse = await queued.WaitAsync(Faults.Guard);
            output.WriteLine($"first {(int)firstResponse.StatusCode}, queued {(int)queuedResponse.StatusCode}, third rejected: {ex.Message}; backend received {server.RequestCount}");
            Assert.True(firstResponse.IsSuccessStatusCode);
            Assert.True(queuedResponse.IsSuccessStatusCode);
            Assert.Equal(2, server.RequestCount);
        }
        finally
        {
            held.Release();
        }
    }

    [Fact]
    public async Task Create_FixedWindowWithQueueLimit_BurstWithinWindowPlusQueueAllAdmitted()
    {
        // 3 permits per 1 s window and room for 3 in the queue: a burst of 6 is never rejected, whenever the windows
        // turn (a window that turns during the burst only lets more through at once). Without the queue, at least
        // 3 of them would be rejected unless a window turned in between.
        const int Permits = 3;
        await using var a = await LoopbackServer.StartAsync("a");
        var settings = Faults.Settings(a)
            .With("RateLimit:Algorithm", "FixedWindow")
            .With("RateLimit:PermitsPerSecond", Permits)
            .With("RateLimit:QueueLimit", Permits);
        await using var governed = Faults.Create(settings);

        var watch = Stopwatch.StartNew();
        var calls = Enumerable.Range(0, 2 * Permits).Select(_ => Faults.TryGetAsync(governed)).ToArray();
        var results = await Task.WhenAll(calls).WaitAsync(Faults.BatchGuard);
        output.WriteLine($"burst of {2 * Permits} with {Permits}/window and queue {Permits}: {Faults.Describe(results)} in {watch.ElapsedMilliseconds} ms; backend received {a.RequestCount}");

        Assert.All(results, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(2 * Permits, a.RequestCount);
    }

    [Fact]
    public async Task Create_QueuedCallCancelled_LeavesTheQueueAndNeverReachesTheBackend()
    {
        var held = new HeldRequests();
        await using var server = await LoopbackServer.StartAsync("held", held.Handle);
        try
        {
            var settings = Faults.Settings(server)
                .OnePermitOneWaiting();
            await using var governed = Faults.Create(settings);

            var first = governed.Client.GetAsync(Faults.Url);
            await held.WaitForArrivalAsync();
            using var cancel = new CancellationTokenSource();
            var queued = governed.Client.GetAsync(Faults.Url, cancel.Token);
            Assert.False(queued.IsCompleted, "the second call was not queued");

            // Cancelled while waiting for a permit: it ends cancelled and its place in the queue is free again.
            await cancel.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => queued.WaitAsync(Faults.Guard));
            var next = governed.Client.GetAsync(Faults.Url);
            Assert.False(next.IsCompleted, "the queue's freed place was not given to the next call");

            held.Release();
            using var firstResponse = await first.WaitAsync(Faults.Guard);
            using var nextResponse = await next.WaitAsync(Faults.Guard);
            output.WriteLine($"first {(int)firstResponse.StatusCode}, cancelled while queued, next {(int)nextResponse.StatusCode}; backend received {server.RequestCount}");
            Assert.True(nextResponse.IsSuccessStatusCode);
            Assert.Equal(2, server.RequestCount);
        }
        finally
        {
            held.Release();
        }
    }

    [Fact]
    public async Task Create_SlidingWindowBurst_AdmitsTheWindowAndRejectsRestWithoutNetwork()
    {
        // 5 a second over a 1 s window of 10 segments: the window turns one segment every 100 ms, and a permit comes back
        // only when its segment leaves the window, on the 10th turn after it was taken. While the calls are issued the
        // window turns at most once per 100 ms begun, so the calls admitted are the 5 of the window plus 5 for every 10
        // such turns (bounded by the measured issuing time, which a slow machine lengthens without making this fail; the
        // network time of the admitted calls comes after and cannot let more in).
        const int Permits = 5;
        const int Issued = 4 * Permits;
        const int Segments = 10;
        var segment = TimeSpan.FromSeconds(1) / Segments;
        await using var a = await LoopbackServer.StartAsync("a");
        var settings = Faults.Settings(a)
            .With("RateLimit:Algorithm", "SlidingWindow")
            .With("RateLimit:PermitsPerSecond", Permits);
        await using var governed = Faults.Create(settings);

        var watch = Stopwatch.StartNew();
        var calls = new Task<CallResult>[Issued];
        for (var i = 0; i < Issued; i++)
        {
            calls[i] = Faults.TryGetAsync(governed);
        }

        var issueElapsed = watch.Elapsed;
        var completedWhenIssued = Array.ConvertAll(calls, c => c.IsCompleted);
        var results = await Task.WhenAll(calls).WaitAsync(Faults.BatchGuard);
        var admitted = results.Count(r => r.Succeeded);
        var turns = 1 + (int)(issueElapsed / segment);
        var maxAdmitted = Permits * (1 + (turns / Segments));
        var rejections = results.Where(r => !r.Succeeded).Select(r => Assert.IsType<RateLimitRejectedException>(r.Error)).ToArray();
        output.WriteLine($"{Issued} calls at {Permits}/s (sliding window) issued in {issueElapsed.TotalMilliseconds:F1} ms, so at most {maxAdmitted} could be admitted: {Faults.Describe(results)}; backend received {a.RequestCount}");

        Assert.InRange(admitted, Permits, maxAdmitted);
        Assert.NotEmpty(rejections);
        Assert.Equal(Issued - admitted, rejections.Length);
        Assert.All(rejections, ex => Assert.Equal(Faults.Service, ex.ServiceName));

        // Rejected without network: every rejected call had ended before the loop that issued them did, and the backend
        // received the admitted calls only.
        Assert.All(Enumerable.Range(0, Issued).Where(i => !results[i].Succeeded), i => Assert.True(completedWhenIssued[i], $"call {i} was rejected after the calls were issued"));
        Assert.Equal(admitted, a.RequestCount);
    }
}
