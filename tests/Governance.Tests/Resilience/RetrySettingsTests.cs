using System.Net;
using Governance.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Governance.Tests.Resilience;

/// <summary>Which methods are retried (<c>Retry:RetryNonIdempotent</c>), against endpoints that always answer 503.</summary>
public sealed class RetrySettingsTests(ITestOutputHelper output)
{
    [Fact]
    public async Task RetryNonIdempotent_DefaultPostToFailingEndpoints_NotRetriedAnd503Returned()
    {
        await using var s1 = await Faults.StartStatusAsync("s1", 503, record: true);
        await using var s2 = await Faults.StartStatusAsync("s2", 503, record: true);
        await using var governed = Faults.Create(Faults.Settings(s1, s2), new ObservedTimeProvider());

        using var response = await governed.Client.PostAsync(Faults.Url, new StringContent("order-1")).WaitAsync(Faults.Guard);
        output.WriteLine($"POST -> {(int)response.StatusCode}; server requests s1={s1.RequestCount} s2={s2.RequestCount}");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal(1, s1.RequestCount + s2.RequestCount);
    }

    [Fact]
    public async Task RetryNonIdempotent_True_PostRetriedWithSameBodyOnEveryAttempt()
    {
        await using var s1 = await Faults.StartStatusAsync("s1", 503, record: true);
        await using var s2 = await Faults.StartStatusAsync("s2", 503, record: true);
        var settings = Faults.Settings(s1, s2)
            .With("Retry:RetryNonIdempotent", true)
            .With("Retry:MaxRetries", 2);
        await using var governed = Faults.Create(settings, new ObservedTimeProvider());

        using var response = await governed.Client.PostAsync(Faults.Url, new StringContent("order-1")).WaitAsync(Faults.Guard);
        var bodies = s1.Received.Concat(s2.Received).Select(r => $"{r.Method} {r.Body}").ToArray();
        output.WriteLine($"POST -> {(int)response.StatusCode}; server requests s1={s1.RequestCount} s2={s2.RequestCount}: {string.Join(" | ", bodies)}");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal(3, s1.RequestCount + s2.RequestCount);
        Assert.All(bodies, body => Assert.Equal("POST order-1", body));
        Assert.True(s1.RequestCount > 0 && s2.RequestCount > 0, "the retry did not go to the other endpoint");
    }

    [Fact]
    public async Task RetryNonIdempotent_True_PostRetriedElsewhereSucceeds()
    {
        await using var bad = await Faults.StartStatusAsync("bad", 503);
        await using var good = await LoopbackServer.StartAsync("good", null, record: true);
        var settings = Faults.Settings(bad, good)
            .With("Retry:RetryNonIdempotent", true);
        await using var governed = Faults.Create(settings, new ObservedTimeProvider());

        // Whichever endpoint round robin starts with, every POST ends at "good"; those that started at "bad" retried.
        for (var i = 0; i < 4; i++)
        {
            using var response = await governed.Client.PostAsync(Faults.Url, new StringContent($"order-{i}")).WaitAsync(Faults.Guard);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        output.WriteLine($"4 POSTs: bad received {bad.RequestCount}, good received {good.RequestCount}");
        Assert.True(bad.RequestCount > 0, "no POST went to the failing endpoint first");
        Assert.Equal(4, good.RequestCount);
        Assert.Equal(["order-0", "order-1", "order-2", "order-3"], good.Received.Select(r => r.Body).ToArray());
    }
}
