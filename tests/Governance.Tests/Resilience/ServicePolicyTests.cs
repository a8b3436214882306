using System.Globalization;
using System.Net;
using Governance.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Xunit.Abstractions;

namespace Governance.Tests.Resilience;

/// <summary><c>Retry-After</c> on 503 answers: waited for before the retry on the fake clock, or not retried when it cannot fit.</summary>
public sealed class ServicePolicyTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Total = TimeSpan.FromSeconds(20);

    [Theory]
    [InlineData("delta")]
    [InlineData("date")]
    public async Task RetryAfter_LongerThanRemainingTotal_NotRetriedAnd503Returned(string form)
    {
        // 60 s (or a date 120 s after the response's Date) cannot fit in the 20 s total timeout.
        var retryAfter = form == "delta" ? "60" : DateTimeOffset.UtcNow.AddSeconds(120).ToString("R", CultureInfo.InvariantCulture);
        await using var s1 = await Faults.StartStatusAsync("s1", 503, retryAfter);
        await using var s2 = await Faults.StartStatusAsync("s2", 503, retryAfter);
        var settings = Faults.Settings(s1, s2).With("Timeout:Total", Total);
        await using var governed = Faults.Create(settings, new ObservedTimeProvider());

        using var response = await governed.Client.GetAsync(Faults.Url).WaitAsync(Faults.Guard);
        output.WriteLine($"Retry-After {retryAfter} with Total {Total}: {(int)response.StatusCode}, server requests {s1.RequestCount + s2.RequestCount}");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.NotNull(response.Headers.RetryAfter);
        Assert.Equal(1, s1.RequestCount + s2.RequestCount);
    }

    [Theory]
    [InlineData("86400")] // a day
    [InlineData("2147483647")] // the largest delta .NET parses: 68 years, past what a timer can wait for
    public async Task RetryAfter_TimeoutsOffAndLongerThanHttpClientsDefaultTimeout_NotRetried(string retryAfter)
    {
        // With the service's timeouts off nothing bounds the wait but the caller; a wait this long is not made in a call.
        await using var s1 = await Faults.StartStatusAsync("s1", 503, retryAfter);
        await using var s2 = await Faults.StartStatusAsync("s2", 503, retryAfter);
        await using var governed = Faults.Create(Faults.Settings(s1, s2).With("Timeout:Enabled", false), new ObservedTimeProvider());

        using var response = await governed.Client.GetAsync(Faults.Url).WaitAsync(Faults.Guard);

        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal(1, s1.RequestCount + s2.RequestCount);
    }

    [Fact]
    public void RetryAfter_HttpDate_MeasuredOnTheServersClockOrElseTheServiceClock()
    {
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(new DateTimeOffset(2026, 11, 27, 12, 0, 0, TimeSpan.Zero));
        using var response = new HttpResponseMessage(HttpStatusCode.ServiceUnavailable);
        response.Headers.RetryAfter = new System.Net.Http.Headers.RetryConditionHeaderValue(time.GetUtcNow().AddSeconds(7));

        // No Date header (a server may omit it): the wait is counted from the service's clock, not dropped.
        Assert.Equal(TimeSpan.FromSeconds(7), Governance.Resilience.ServicePolicy.RetryAfter(Polly.Outcome.FromResult(response), time));

        // With one, from the server's own clock (3 s behind here), so that skew between the hosts does not change the wait.
        response.Headers.Date = time.GetUtcNow().AddSeconds(-3);
        Assert.Equal(TimeSpan.FromSeconds(10), Governance.Resilience.ServicePolicy.RetryAfter(Polly.Outcome.FromResult(response), time));
    }

    [Fact]
    public async Task RetryAfter_ShorterThanRemainingTotal_RetryWaitsForItOnTheClock()
    {
        var retryAfter = TimeSpan.FromSeconds(3);
        var time = new ObservedTimeProvider();
        var requests = 0;
        Task Handler(HttpContext context)
        {
            // The first request anywhere answers 503 with Retry-After; every later one succeeds.
            if (Interlocked.Increment(ref requests) == 1)
            {
                context.Response.StatusCode = 503;
                context.Response.Headers.RetryAfter = ((int)retryAfter.TotalSeconds).ToString(CultureInfo.InvariantCulture);
            }

            return Task.CompletedTask;
        }

        await using var s1 = await LoopbackServer.StartAsync("s1", Handler);
        await using var s2 = await LoopbackServer.StartAsync("s2", Handler);
        await using var governed = Faults.Create(Faults.Settings(s1, s2).With("Timeout:Total", Total), time);
        var started = time.GetUtcNow();

        var call = Faults.TryGetAsync(governed);

        // The retry waits on a Retry-After-long timer of the service's clock. Until 1 ms before it is due no timer armed
        // when created (a delay; re-armed ones such as the breaker window's tick aside) has fired, so nothing can have let
        // a retry go early; then it fires. (Timer callbacks run inside Advance: the clock says at once what a request
        // sent early would show only later.)
        int DelaysFired() => time.TimersFired() - time.TimersFired(Timeout.InfiniteTimeSpan);
        await time.WaitForTimersAsync(retryAfter, 1).WaitAsync(Faults.Guard);
        Assert.Equal(1, Volatile.Read(ref requests));
        var fired = DelaysFired();
        time.Advance(retryAfter - TimeSpan.FromMilliseconds(1));
        Assert.Equal(fired, DelaysFired());

        time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal(1, time.TimersFired(retryAfter));
        var result = await call.WaitAsync(Faults.Guard);
        var first = s1.RequestCount == 1 && s2.RequestCount == 1 ? "the other endpoint" : "the same endpoint";
        output.WriteLine($"503 with Retry-After {retryAfter}: retried after {time.GetUtcNow() - started} of fake time on {first}; {result.Status} from {result.Server}");

        Assert.True(result.Succeeded, result.ToString());
        Assert.Equal(2, Volatile.Read(ref requests));
        Assert.Equal(1, s1.RequestCount);
        Assert.Equal(1, s2.RequestCount);
    }
}
