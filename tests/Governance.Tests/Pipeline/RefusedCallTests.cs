using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Governance.Pipeline;
using Governance.Telemetry;
using Governance.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace Governance.Tests.Pipeline;

/// <summary>
/// Calls refused up front (rate limit, no endpoint) share one exception and one faulted task per reason: the shared
/// exception keeps naming the service, its retry-after hint counts down on the service's clock, and a reload or an
/// endpoint change gives a new one. System.Threading.RateLimiting refills on the real clock, so the rate-limit tests
/// empty the limiter right before each call and send again if a refill got in between.
/// </summary>
public sealed class RefusedCallTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Guard = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task SendAsync_TokenBucketRejections_ShareOneExceptionWhoseRetryAfterCountsDownOnTheServiceClock()
    {
        const string Name = "refused-bucket";
        var rejections = new ConcurrentQueue<long>();
        using var meters = ListenToRejections(Name, rejections);
        await using var server = await LoopbackServer.StartAsync("a");
        var settings = Governed.Service(Name, "RoundRobin", server);
        settings[$"Services:{Name}:RateLimit:Algorithm"] = "TokenBucket";
        settings[$"Services:{Name}:RateLimit:PermitsPerSecond"] = "1";
        settings[$"Services:{Name}:RateLimit:Burst"] = "1";
        var time = new ObservedTimeProvider();
        await using var governed = Governed.Create(settings, services => services.AddSingleton<TimeProvider>(time));
        var service = Runtime(governed, Name);

        // One token per second: the limiter's hint is one replenishment period, 1 s.
        var first = await RejectedAsync(governed, service);
        output.WriteLine($"first rejection: {first.Message}");
        Assert.Equal(Name, first.ServiceName);
        Assert.Equal(TimeSpan.FromSeconds(1), first.RetryAfter);
        Assert.Contains($"Service '{Name}'", first.Message, StringComparison.Ordinal);
        Assert.Contains("retry after 00:00:01.", first.Message, StringComparison.Ordinal);

        // The hint counts down on the service's clock, in the exception already handed out and in the shared one.
        time.Advance(TimeSpan.FromMilliseconds(300));
        Assert.Equal(TimeSpan.FromMilliseconds(700), first.RetryAfter);
        var second = await RejectedAsync(governed, service);
        Assert.Same(first, second);
        Assert.Equal(TimeSpan.FromMilliseconds(700), second.RetryAfter);
        Assert.Contains("retry after 00:00:00.7", second.Message, StringComparison.Ordinal);

        // Never negative once the due time has passed.
        time.Advance(TimeSpan.FromMilliseconds(700));
        Assert.Equal(TimeSpan.Zero, first.RetryAfter);
        time.Advance(TimeSpan.FromSeconds(5));
        Assert.Equal(TimeSpan.Zero, first.RetryAfter);

        // A rejection after the due time gets a new exception with a fresh hint; the old one stays at zero.
        var third = await RejectedAsync(governed, service);
        output.WriteLine($"after the due time: {third.Message}");
        Assert.NotSame(first, third);
        Assert.Equal(TimeSpan.FromSeconds(1), third.RetryAfter);
        Assert.Equal(Name, third.ServiceName);
        Assert.Equal(TimeSpan.Zero, first.RetryAfter);

        // Telemetry still counts every rejected call, shared exception or not.
        meters.RecordObservableInstruments();
        Assert.Equal(3, rejections.Sum());
    }

    [Fact]
    public async Task SendAsync_ConcurrencyRejectionsAcrossReload_SharedWithinAPolicyAndNewAfterReload()
    {
        const string Name = "refused-concurrency";
        await using var server = await LoopbackServer.StartAsync("a");
        var settings = Governed.Service(Name, "RoundRobin", server);
        settings[$"Services:{Name}:RateLimit:Algorithm"] = "Concurrency";
        settings[$"Services:{Name}:RateLimit:Burst"] = "1";
        await using var governed = Governed.Create(settings);
        var service = Runtime(governed, Name);

        // Hold the only permit: every call is rejected, with no hint (the concurrency limiter gives none).
        using var held = service.Policy.Limiter!.AttemptAcquire();
        Assert.True(held.IsAcquired);
        var first = await Assert.ThrowsAsync<RateLimitRejectedException>(() => governed.Client.GetAsync($"http://{Name}/").WaitAsync(Guard));
        var second = await Assert.ThrowsAsync<RateLimitRejectedException>(() => governed.Client.GetAsync($"http://{Name}/").WaitAsync(Guard));
        Assert.Same(first, second);
        Assert.Null(first.RetryAfter);

        // A reload that keeps the rate limit hands the limiter (and the held permit) to a new policy with its own refusal.
        var before = service.Policy;
        governed.Configuration[$"MeshGovernance:Services:{Name}:Retry:MaxRetries"] = "1";
        governed.Configuration.Reload();
        Assert.NotSame(before, service.Policy);
        Assert.Same(before.Limiter, service.Policy.Limiter);
        var third = await Assert.ThrowsAsync<RateLimitRejectedException>(() => governed.Client.GetAsync($"http://{Name}/").WaitAsync(Guard));
        var fourth = await Assert.ThrowsAsync<RateLimitRejectedException>(() => governed.Client.GetAsync($"http://{Name}/").WaitAsync(Guard));
        output.WriteLine($"after the reload: {third.Message}");
        Assert.NotSame(first, third);
        Assert.Same(third, fourth);
        Assert.Equal(Name, third.ServiceName);
        Assert.Contains($"Service '{Name}'", third.Message, StringComparison.Ordinal);
        Assert.Equal(0, server.RequestCount);
    }

    [Fact]
    public async Task SendAsync_NoEndpoint_SharedWhileEndpointsStayAndNewReasonAfterTheyChange()
    {
        const string Name = "refused-down";
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        await using var c = await LoopbackServer.StartAsync("c");
        await using var governed = Governed.Create(Governed.Service(Name, "RoundRobin", a, b));
        var service = Runtime(governed, Name);
        foreach (var endpoint in service.Endpoints.All)
        {
            endpoint.SetAvailable(false);
        }

        service.Refresh();
        var first = await Assert.ThrowsAsync<NoAvailableEndpointException>(() => governed.Client.GetAsync($"http://{Name}/").WaitAsync(Guard));
        var second = await Assert.ThrowsAsync<NoAvailableEndpointException>(() => governed.Client.GetAsync($"http://{Name}/").WaitAsync(Guard));
        output.WriteLine($"two endpoints disabled: {first.Message}");
        Assert.Same(first, second);
        Assert.Equal(Name, first.ServiceName);
        Assert.Equal("all 2 endpoints are unavailable", first.Reason);
        Assert.Equal($"Service '{Name}' has no available endpoint: all 2 endpoints are unavailable", first.Message);

        // A third endpoint arrives by reload and is disabled too: the refusal gives the new set's reason.
        governed.Configuration[$"MeshGovernance:Services:{Name}:Endpoints:2"] = c.Address.ToString();
        governed.Configuration.Reload();
        Assert.Equal(3, service.Endpoints.All.Length);
        service.Endpoints.All.Single(s => s.Endpoint.Address.Port == c.Port).SetAvailable(false);
        service.Refresh();
        var third = await Assert.ThrowsAsync<NoAvailableEndpointException>(() => governed.Client.GetAsync($"http://{Name}/").WaitAsync(Guard));
        output.WriteLine($"three endpoints disabled: {third.Message}");
        Assert.NotSame(first, third);
        Assert.Equal("all 3 endpoints are unavailable", third.Reason);
        Assert.Contains($"Service '{Name}'", third.Message, StringComparison.Ordinal);
        Assert.Equal(0, a.RequestCount + b.RequestCount + c.RequestCount);
    }

    [Fact]
    public async Task Rejection_HintEndingLaterWhileDue_KeepsTheSharedOneAndSoonerHintReplacesIt()
    {
        const string Name = "refused-hints";
        await using var server = await LoopbackServer.StartAsync("a");
        var time = new ObservedTimeProvider();
        await using var governed = Governed.Create(Governed.Service(Name, "RoundRobin", server), services => services.AddSingleton<TimeProvider>(time));
        var policy = Runtime(governed, Name).Policy;

        var first = policy.Rejection(Name, TimeSpan.FromSeconds(1), out var firstHint);
        Assert.Equal(TimeSpan.FromSeconds(1), firstHint);

        // 400 ms later the limiter says 1 s again (whole periods from now): the shared due time, 600 ms away, stays.
        time.Advance(TimeSpan.FromMilliseconds(400));
        var later = policy.Rejection(Name, TimeSpan.FromSeconds(1), out var laterHint);
        Assert.Same(first, later);
        Assert.Equal(TimeSpan.FromMilliseconds(600), laterHint);
        Assert.Equal(TimeSpan.FromMilliseconds(600), ((RateLimitRejectedException)later.Error).RetryAfter);

        // A hint that ends sooner than the shared due time replaces it.
        var sooner = policy.Rejection(Name, TimeSpan.FromMilliseconds(100), out var soonerHint);
        Assert.NotSame(first, sooner);
        Assert.Equal(TimeSpan.FromMilliseconds(100), soonerHint);
        Assert.Equal(TimeSpan.FromMilliseconds(100), ((RateLimitRejectedException)sooner.Error).RetryAfter);

        // Rejections without a hint share their own instance, which never has one.
        var plain = policy.Rejection(Name, null, out var plainHint);
        Assert.Null(plainHint);
        Assert.Same(plain, policy.Rejection(Name, null, out _));
        Assert.Null(((RateLimitRejectedException)plain.Error).RetryAfter);
        Assert.True(plain.Task.IsFaulted);
        Assert.Same(plain.Error, plain.Task.Exception!.InnerException);
    }

    [Fact]
    public async Task Rejection_LimiterGrantedAPermitSinceTheSharedOne_NewRefusalWithTheNewHint()
    {
        // A permit granted after the shared refusal was made means the limiter replenished: the shared due time is
        // stale (a caller that waited for it would be rejected again), so the next rejection gets its own. The window is
        // the limiter's real clock, but nothing here depends on when it turns.
        const string Name = "refused-replenished";
        await using var server = await LoopbackServer.StartAsync("a");
        var time = new ObservedTimeProvider();
        var settings = Governed.Service(Name, "RoundRobin", server);
        settings[$"Services:{Name}:RateLimit:Algorithm"] = "FixedWindow";
        settings[$"Services:{Name}:RateLimit:PermitsPerSecond"] = "1000";
        await using var governed = Governed.Create(settings, services => services.AddSingleton<TimeProvider>(time));
        var policy = Runtime(governed, Name).Policy;

        var first = policy.Rejection(Name, TimeSpan.FromSeconds(1), out _);
        time.Advance(TimeSpan.FromMilliseconds(400));
        Assert.Same(first, policy.Rejection(Name, TimeSpan.FromSeconds(1), out _));

        using (var lease = policy.Limiter!.AttemptAcquire())
        {
            Assert.True(lease.IsAcquired);
        }

        var after = policy.Rejection(Name, TimeSpan.FromSeconds(1), out var hint);
        Assert.NotSame(first, after);
        Assert.Equal(TimeSpan.FromSeconds(1), hint);
        Assert.Equal(TimeSpan.FromSeconds(1), ((RateLimitRejectedException)after.Error).RetryAfter);
    }

    private static ServiceRuntime Runtime(Governed governed, string name)
    {
        Assert.True(governed.Services.GetRequiredService<GovernanceRuntime>().TryGetService(name, out var service));
        return service;
    }

    /// <summary>Empties the limiter, then sends; a refill between the two (real clock) only means sending again.</summary>
    private static async Task<RateLimitRejectedException> RejectedAsync(Governed governed, ServiceRuntime service)
    {
        for (var i = 0; i < 5; i++)
        {
            while (true)
            {
                using var lease = service.Policy.Limiter!.AttemptAcquire();
                if (!lease.IsAcquired)
                {
                    break;
                }
            }

            try
            {
                using var response = await governed.Client.GetAsync($"http://{service.Name}/").WaitAsync(Guard);
            }
            catch (RateLimitRejectedException ex)
            {
                return ex;
            }
        }

        throw new InvalidOperationException("the limiter refilled before every one of 5 calls");
    }

    private static MeterListener ListenToRejections(string service, ConcurrentQueue<long> rejections) =>
        ServiceMeters.Listen<long>(GovernanceTelemetry.Instruments.RateLimitRejections, service, rejections.Enqueue);
}
