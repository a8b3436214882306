using Governance.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Governance.Tests.Resilience;

/// <summary>
/// <c>Retry:Backoff</c>, <c>BaseDelay</c>, <c>MaxDelay</c> and <c>Jitter</c> as behaviour: the delays the retries of one
/// GET wait on the service's clock, against three endpoints that always answer 503 (<c>MaxRetries</c> 3: four attempts,
/// three delays). Breaker and ejection are off, so a retry delay is the only timer that waits on the clock.
/// </summary>
public sealed class RetryBackoffTests(ITestOutputHelper output)
{
    private const int MaxRetries = 3;
    private static readonly TimeSpan BaseDelay = TimeSpan.FromSeconds(1);

    [Theory]
    [InlineData("Exponential", 1.5, new[] { 1.0, 1.5, 1.5 })] // 1, 2, 4 s uncapped
    [InlineData("Linear", 2.5, new[] { 1.0, 2.0, 2.5 })] // 1, 2, 3 s uncapped
    [InlineData("Constant", 1.5, new[] { 1.0, 1.0, 1.0 })]
    public async Task RetryDelays_NoJitter_FollowTheBackoffCappedAtMaxDelay(string backoff, double maxDelaySeconds, double[] expectedSeconds)
    {
        var time = new ObservedTimeProvider();
        await using var s1 = await Faults.StartStatusAsync("s1", 503);
        await using var s2 = await Faults.StartStatusAsync("s2", 503);
        await using var s3 = await Faults.StartStatusAsync("s3", 503);
        await using var governed = Faults.Create(Settings(backoff, TimeSpan.FromSeconds(maxDelaySeconds), jitter: false, s1, s2, s3), time);
        var expected = Array.ConvertAll(expectedSeconds, TimeSpan.FromSeconds);
        int Attempts() => s1.RequestCount + s2.RequestCount + s3.RequestCount;

        var call = Faults.TryGetAsync(governed);
        for (var i = 0; i < expected.Length; i++)
        {
            // Retry i + 1 waits on a timer of exactly the expected delay: the i + 1-th timer of that length so far.
            var delay = expected[i];
            var sameSoFar = expected.Take(i + 1).Count(d => d == delay);
            await time.WaitForDelayAsync().WaitAsync(Faults.Guard);
            Assert.Equal(sameSoFar, time.TimersCreated(delay));
            Assert.Equal(i + 1, Attempts());
            time.Advance(delay);
        }

        var result = await call.WaitAsync(Faults.Guard);
        output.WriteLine($"{backoff}, BaseDelay {BaseDelay.TotalSeconds} s, MaxDelay {maxDelaySeconds} s, no jitter: retry delays {string.Join(", ", expectedSeconds.Select(d => $"{d} s"))}; {Attempts()} attempts; {result.Status}");
        Assert.Equal(503, result.Status);
        Assert.Equal(1 + MaxRetries, Attempts());
    }

    [Fact]
    public async Task RetryDelays_ExponentialWithJitter_EachWithinZeroAndMaxDelay()
    {
        const int Calls = 6;
        var maxDelay = TimeSpan.FromSeconds(1.5);
        var time = new ObservedTimeProvider();
        await using var s1 = await Faults.StartStatusAsync("s1", 503);
        await using var s2 = await Faults.StartStatusAsync("s2", 503);
        await using var s3 = await Faults.StartStatusAsync("s3", 503);
        await using var governed = Faults.Create(Settings("Exponential", maxDelay, jitter: true, s1, s2, s3), time);
        var delays = new List<TimeSpan[]>();

        for (var c = 0; c < Calls; c++)
        {
            // Nothing else moves the clock, so the step to each pending delay's due time is that delay.
            var call = Faults.TryGetAsync(governed);
            var waited = new List<TimeSpan>();
            while (!call.IsCompleted)
            {
                await Task.WhenAny(call, time.WaitForDelayAsync()).WaitAsync(Faults.Guard);
                if (!call.IsCompleted)
                {
                    var before = time.GetUtcNow();
                    time.AdvanceToNextDelay();
                    waited.Add(time.GetUtcNow() - before);
                }
            }

            Assert.Equal(503, (await call).Status);
            delays.Add([.. waited]);
        }

        foreach (var call in delays)
        {
            output.WriteLine($"retry delays: {string.Join(", ", call.Select(d => $"{d.TotalMilliseconds:0.#} ms"))}");
        }

        // Every retry waited (a zero delay arms no timer), never longer than MaxDelay; and jitter really varies the delays:
        // without it every call's first delay would be BaseDelay.
        Assert.All(delays, call => Assert.Equal(MaxRetries, call.Length));
        Assert.All(delays.SelectMany(d => d), d => Assert.InRange(d, TimeSpan.FromTicks(1), maxDelay));
        Assert.True(delays.Select(d => d[0]).Distinct().Count() > 1, "every call waited the same first delay: no jitter");
        Assert.Equal(Calls * (1 + MaxRetries), s1.RequestCount + s2.RequestCount + s3.RequestCount);
    }

    private static Dictionary<string, string?> Settings(string backoff, TimeSpan maxDelay, bool jitter, params LoopbackServer[] servers) =>
        Faults.Settings(servers)
            .With("CircuitBreaker:Enabled", false)
            .With("OutlierDetection:Enabled", false)
            .With("Retry:MaxRetries", MaxRetries)
            .With("Retry:Backoff", backoff)
            .With("Retry:BaseDelay", BaseDelay)
            .With("Retry:MaxDelay", maxDelay)
            .With("Retry:Jitter", jitter);
}
