using Governance.Resilience;
using Microsoft.Extensions.Time.Testing;

namespace Governance.Tests.Resilience;

/// <summary>
/// The breaker's failure-ratio window on its own (FailureRatio 0.5 over SamplingDuration 10 s in 1 s buckets,
/// MinimumThroughput 20), with successes counted on the per-core stripes, on a fake clock. The same rules through real
/// requests are in <see cref="EndpointBreakerWindowTests"/>.
/// </summary>
public sealed class FailureRatioWindowTests
{
    private const int MinimumThroughput = 20;
    private static readonly TimeSpan SamplingDuration = TimeSpan.FromSeconds(10);

    [Fact]
    public void RecordSuccess_FromManyThreadsAtOnce_WindowCountsEverySuccess()
    {
        const int Threads = 8;
        const int PerThread = 20_000;
        var window = Create(new FakeTimeProvider());

        Concurrently.Run(Threads, _ =>
        {
            for (var i = 0; i < PerThread; i++)
            {
                window.RecordSuccess();
            }
        });

        Assert.Equal(((long)Threads * PerThread, 0L), window.Snapshot());
        Assert.False(window.RecordFailure(), "1 failure in 160,001 outcomes");
    }

    [Fact]
    public void RecordFailure_SuccessesOnEveryStripe_TripsExactlyAtTheRatio()
    {
        var successes = new StripedCounter(16);
        var window = Create(new FakeTimeProvider(), successes);

        // 10 successes, one through the window (which starts it) and one on each of 9 other stripes.
        window.RecordSuccess();
        for (var s = 1; s < 10; s++)
        {
            successes.IncrementStripe(s);
        }

        for (var i = 0; i < 9; i++)
        {
            Assert.False(window.RecordFailure(), $"{i + 1} failures, 10 successes: below MinimumThroughput 20");
        }

        successes.IncrementStripe(15);
        Assert.False(window.RecordFailure(), "10 of 21 failed (0.476 < 0.5)");
        Assert.True(window.RecordFailure(), "11 of 22 failed (0.5, the threshold)");
        Assert.Equal((11L, 11L), window.Snapshot());
    }

    [Fact]
    public void Snapshot_SuccessesOlderThanSamplingDuration_AgeOutBucketByBucket()
    {
        var time = new FakeTimeProvider();
        var window = Create(time);

        Record(window, 10);
        time.Advance(SamplingDuration / 2);
        Record(window, 7);
        Assert.Equal((17L, 0L), window.Snapshot());

        // The first 10 started a whole SamplingDuration ago; the 7 of half a window ago stay until they are as old.
        time.Advance(SamplingDuration / 2);
        Assert.Equal((7L, 0L), window.Snapshot());
        time.Advance(SamplingDuration / 2);
        Assert.Equal((0L, 0L), window.Snapshot());
    }

    [Fact]
    public void RecordSuccess_AfterTheWindowEmptiedAndStopped_CountsOnlyTheNewSuccesses()
    {
        var time = new FakeTimeProvider();
        var window = Create(time);
        Record(window, 30);

        // Empty after a whole SamplingDuration: the timer stops, and the next success starts the window again.
        time.Advance(SamplingDuration);
        Assert.Equal((0L, 0L), window.Snapshot());
        Record(window, 5);
        Assert.Equal((5L, 0L), window.Snapshot());

        time.Advance(SamplingDuration - TimeSpan.FromSeconds(1));
        Assert.Equal((5L, 0L), window.Snapshot());
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal((0L, 0L), window.Snapshot());
    }

    [Fact]
    public void Reset_AfterSuccesses_ForgetsThemAndCountsLaterOnes()
    {
        var window = Create(new FakeTimeProvider());
        Record(window, 30);

        window.Reset();
        Assert.Equal((0L, 0L), window.Snapshot());

        // Had the 30 stayed, 15 failures in 50 outcomes (0.3) would not trip; in 20 (0.75) they do.
        Record(window, 5);
        for (var i = 0; i < 14; i++)
        {
            Assert.False(window.RecordFailure(), $"{i + 1} failures, 5 successes: below MinimumThroughput 20");
        }

        Assert.True(window.RecordFailure(), "15 of 20 failed");
        Assert.Equal((5L, 15L), window.Snapshot());
    }

    private static FailureRatioWindow Create(FakeTimeProvider time, StripedCounter? successes = null) =>
        new(0.5, MinimumThroughput, SamplingDuration, time, successes ?? new StripedCounter());

    private static void Record(FailureRatioWindow window, int successes)
    {
        for (var i = 0; i < successes; i++)
        {
            window.RecordSuccess();
        }
    }
}
