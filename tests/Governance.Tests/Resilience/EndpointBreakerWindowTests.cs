using Governance.Pipeline;
using Governance.Telemetry;
using Governance.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Xunit.Abstractions;

namespace Governance.Tests.Resilience;

/// <summary>
/// The breaker's failure-ratio window (FailureRatio 0.5 over SamplingDuration 10 s in 1 s buckets, MinimumThroughput 20)
/// and Polly's half-open handling after it trips, on one real endpoint whose answers the test sets, with retries and
/// outlier detection off so that every GET is exactly one attempt on that endpoint, on a fake clock.
/// </summary>
public sealed class EndpointBreakerWindowTests(ITestOutputHelper output)
{
    private const int MinimumThroughput = 20;
    private static readonly TimeSpan SamplingDuration = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan BreakDuration = TimeSpan.FromSeconds(5);

    [Fact]
    public async Task RecordAsync_NineteenFailures_StaysClosedUntilTheTwentieth()
    {
        await using var scenario = await Scenario.StartAsync();

        await scenario.SendAsync(19, 503);
        Assert.True(scenario.Breaker.IsClosed, "19 failures are below MinimumThroughput 20 and must not open the circuit");

        await scenario.SendAsync(1, 503);
        Assert.False(scenario.Breaker.IsClosed, "the 20th failure (ratio 1) must open the circuit");
        await scenario.AssertRejectedAsync();
        Assert.Equal(1, scenario.Logs.Entries.Count(GovernanceEventIds.CircuitOpened));
    }

    [Fact]
    public async Task RecordAsync_RatioBelowThreshold_StaysClosedAndOpensWhenItReachesIt()
    {
        await using var scenario = await Scenario.StartAsync();

        await scenario.SendAsync(10, 200);
        await scenario.SendAsync(9, 503);
        await scenario.SendAsync(1, 200);
        Assert.True(scenario.Breaker.IsClosed, "9 of 20 failed (0.45 < 0.5)");

        await scenario.SendAsync(1, 503);
        Assert.True(scenario.Breaker.IsClosed, "10 of 21 failed (0.476 < 0.5)");

        await scenario.SendAsync(1, 503);
        output.WriteLine($"window when it tripped: {scenario.Breaker.Window}");
        Assert.False(scenario.Breaker.IsClosed, "11 of 22 failed (0.5, the threshold) must open the circuit");
        await scenario.AssertRejectedAsync();
    }

    [Fact]
    public async Task RecordAsync_FailuresOlderThanSamplingDuration_AgeOutBucketByBucket()
    {
        await using var scenario = await Scenario.StartAsync();

        await scenario.SendAsync(10, 503);
        scenario.Time.Advance(SamplingDuration / 2);
        await scenario.SendAsync(9, 503);
        Assert.True(scenario.Breaker.IsClosed, "19 failures");

        // The first 10 started a whole SamplingDuration ago and leave the window; the 9 of half a window ago stay.
        scenario.Time.Advance(SamplingDuration / 2);
        Assert.Equal((0, 9), scenario.Breaker.Window);
        await scenario.SendAsync(10, 503);
        Assert.True(scenario.Breaker.IsClosed, "19 failures in the window after the oldest 10 aged out");

        await scenario.SendAsync(1, 503);
        Assert.False(scenario.Breaker.IsClosed, "the 9 failures of half a window ago must still count: 20 in the window");
        await scenario.AssertRejectedAsync();
    }

    [Fact]
    public async Task RecordAsync_SuccessesOlderThanSamplingDuration_AgeOut()
    {
        await using var scenario = await Scenario.StartAsync();

        // Successes are counted without reading the clock; the window's timer must still move them out of it.
        await scenario.SendAsync(30, 200);
        Assert.Equal((30, 0), scenario.Breaker.Window);
        scenario.Time.Advance(SamplingDuration - TimeSpan.FromSeconds(1));
        Assert.Equal((30, 0), scenario.Breaker.Window);
        scenario.Time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal((0, 0), scenario.Breaker.Window);

        await scenario.SendAsync(19, 503);
        Assert.True(scenario.Breaker.IsClosed, "19 failures");
        await scenario.SendAsync(1, 503);
        Assert.False(scenario.Breaker.IsClosed, "20 failures and no success left in the window (20 of 50 had the successes stayed)");
    }

    [Fact]
    public async Task RecordAsync_SuccessesAfterTheClockMoved_CountInTheBucketOfTheirTime()
    {
        await using var scenario = await Scenario.StartAsync();

        // Successes do not read the clock: the bucket they land in must follow the clock all the same. These 30 come
        // 9 s after the window started, so they must outlive its first bucket.
        await scenario.SendAsync(1, 503);
        scenario.Time.Advance(SamplingDuration - TimeSpan.FromSeconds(1));
        await scenario.SendAsync(30, 200);
        scenario.Time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal((30, 0), scenario.Breaker.Window);

        await scenario.SendAsync(MinimumThroughput, 503);
        Assert.True(scenario.Breaker.IsClosed, "20 of 50 failed (0.4): the 30 successes of 1 s ago must still count");
    }

    [Fact]
    public async Task HalfOpenProbe_Succeeds_ClosesWithAnEmptyWindow()
    {
        await using var scenario = await Scenario.StartAsync();
        await scenario.SendAsync(MinimumThroughput, 503);
        Assert.False(scenario.Breaker.IsClosed);

        await scenario.EndBreakAsync(1);
        await scenario.SendAsync(1, 200);
        Assert.True(scenario.Breaker.IsClosed, "a healthy half-open probe must close the circuit");
        Assert.Equal(EndpointConditions.None, scenario.State.Conditions);
        Assert.Equal(1, scenario.Logs.Entries.Count(GovernanceEventIds.CircuitClosed));

        // The 20 failures that opened it are still within SamplingDuration, but closing starts a new window (as Polly
        // resets its metrics): 19 new failures do not open it again, the 20th does.
        await scenario.SendAsync(19, 503);
        Assert.True(scenario.Breaker.IsClosed, "the window must start empty after the circuit closed");
        await scenario.SendAsync(1, 503);
        Assert.False(scenario.Breaker.IsClosed);
        Assert.Equal(2, scenario.Logs.Entries.Count(GovernanceEventIds.CircuitOpened));
    }

    [Fact]
    public async Task HalfOpenProbe_Fails_ReopensAfterOneRequestAndTheNextHealthyProbeCloses()
    {
        await using var scenario = await Scenario.StartAsync();
        await scenario.SendAsync(MinimumThroughput, 503);

        await scenario.EndBreakAsync(1);
        await scenario.SendAsync(1, 503);
        Assert.False(scenario.Breaker.IsClosed, "a failed half-open probe must open the circuit again");
        Assert.Equal(2, scenario.Logs.Entries.Count(GovernanceEventIds.CircuitOpened));
        await scenario.AssertRejectedAsync();

        await scenario.EndBreakAsync(2);
        await scenario.SendAsync(1, 200);
        Assert.True(scenario.Breaker.IsClosed);
        Assert.Equal(MinimumThroughput + 2, scenario.Server.RequestCount);
        Assert.Equal(1, scenario.Logs.Entries.Count(GovernanceEventIds.CircuitClosed));
    }

    /// <summary>One endpoint that answers <see cref="Status"/>.</summary>
    private sealed class Scenario : IAsyncDisposable
    {
        private volatile int _status = 200;

        private Scenario()
        {
        }

        public ObservedTimeProvider Time { get; } = new();

        public CapturingLoggerProvider Logs { get; } = new();

        public LoopbackServer Server { get; private set; } = null!;

        public Governed Governed { get; private set; } = null!;

        public EndpointState State => Faults.State(Governed, Server);

        public EndpointBreaker Breaker => State.Breaker!;

        public static async Task<Scenario> StartAsync()
        {
            var scenario = new Scenario();
            scenario.Server = await LoopbackServer.StartAsync("only", scenario.Handle);
            var settings = Faults.Settings(scenario.Server)
                .With("Retry:MaxRetries", 0)
                .With("OutlierDetection:Enabled", false)
                .With("OutlierDetection:PanicThreshold", 0) // one endpoint: panic mode would send to it whatever its circuit
                .With("CircuitBreaker:MinimumThroughput", MinimumThroughput)
                .With("CircuitBreaker:FailureRatio", 0.5)
                .With("CircuitBreaker:SamplingDuration", SamplingDuration)
                .With("CircuitBreaker:BreakDuration", BreakDuration);
            scenario.Governed = Faults.Create(settings, scenario.Time, scenario.Logs);
            return scenario;
        }

        /// <summary>Sends <paramref name="count"/> GETs one at a time, each answered <paramref name="status"/> by the endpoint (so each was sent).</summary>
        public async Task SendAsync(int count, int status)
        {
            _status = status;
            for (var i = 0; i < count; i++)
            {
                var before = Server.RequestCount;
                var result = await Faults.TryGetAsync(Governed);
                Assert.True(result.Status == status && Server.RequestCount == before + 1, $"GET {i + 1} of {count}: expected {status} from the endpoint, got {result}");
            }
        }

        /// <summary>Asserts that a GET now is refused without reaching the endpoint (the circuit is open).</summary>
        public async Task AssertRejectedAsync()
        {
            var before = Server.RequestCount;
            var result = await Faults.TryGetAsync(Governed);
            Assert.False(result.Succeeded, result.ToString());
            Assert.Equal(before, Server.RequestCount);
        }

        /// <summary>Waits for the <paramref name="opened"/>-th break timer, then lets the break pass.</summary>
        public async Task EndBreakAsync(int opened)
        {
            await Time.WaitForTimersAsync(BreakDuration, opened).WaitAsync(Faults.Guard);
            Time.Advance(BreakDuration); // The break timer's callback puts it back, inside Advance.
            Assert.True(State.Conditions == EndpointConditions.None, $"not back after BreakDuration: {State.Conditions}");
        }

        public async ValueTask DisposeAsync()
        {
            await Governed.DisposeAsync();
            await Server.DisposeAsync();
        }

        private Task Handle(HttpContext context)
        {
            context.Response.StatusCode = _status;
            return context.Response.WriteAsync("only", context.RequestAborted);
        }
    }
}
