using Governance.Resilience;

namespace Governance.Tests.Resilience;

/// <summary>The per-core striped counter behind breaker-window successes and retry-budget requests.</summary>
public sealed class StripedCounterTests
{
    private static readonly TimeSpan Guard = TimeSpan.FromSeconds(30);

    [Fact]
    public void Sum_IncrementsFromManyThreadsAtOnce_CountsEveryOne()
    {
        const int Threads = 8;
        const int PerThread = 100_000;
        var counter = new StripedCounter();

        Concurrently.Run(Threads, _ =>
        {
            for (var i = 0; i < PerThread; i++)
            {
                counter.Increment();
            }
        });

        Assert.Equal((long)Threads * PerThread, counter.Sum());
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(16)]
    public void Sum_EveryStripeIncremented_CountsEveryStripe(int stripes)
    {
        var counter = new StripedCounter(stripes);

        // Stripe s gets s + 1, so that a stripe left out of the sum (or counted twice) changes it.
        for (var s = 0; s < stripes; s++)
        {
            for (var i = 0; i <= s; i++)
            {
                counter.IncrementStripe(s);
            }
        }

        Assert.Equal(stripes * (stripes + 1) / 2, counter.Sum());
    }

    [Fact]
    public void Seal_WhileManyThreadsAdd_EveryAddEitherSealedOrRefused()
    {
        const int Threads = 4;
        const int PerThread = 200_000;
        var counter = new StripedCounter();
        var refused = new long[Threads];
        long sealedCount = 0;

        Concurrently.Run(Threads + 1, thread =>
        {
            if (thread == Threads)
            {
                // Seal once the adders are well under way (whatever the machine's speed: a wall-clock guard, not a spin count).
                Assert.True(SpinWait.SpinUntil(() => counter.Sum() >= PerThread, Guard), $"the adders had not made {PerThread} adds within {Guard}");
                sealedCount = counter.Seal();
                return;
            }

            for (var i = 0; i < PerThread; i++)
            {
                if (!counter.TryIncrement())
                {
                    refused[thread]++;
                }
            }
        });

        // Every add either landed before the seal (in its count) or was refused; and the count holds at least the adds
        // that the sealer saw summed before sealing.
        Assert.Equal((long)Threads * PerThread, sealedCount + refused.Sum());
        Assert.InRange(sealedCount, PerThread, (long)Threads * PerThread);
        Assert.False(counter.TryIncrement());
        Assert.False(counter.TryDecrement());
        Assert.Equal(0, counter.Seal());
    }

    [Fact]
    public void Seal_AfterIncrementsAndDecrements_ReturnsTheirNet()
    {
        var counter = new StripedCounter(4);
        for (var s = 0; s < 4; s++)
        {
            counter.IncrementStripe(s);
        }

        Assert.True(counter.TryDecrement());
        Assert.True(counter.TryIncrement());
        Assert.True(counter.TryDecrement());

        Assert.Equal(3, counter.Seal());
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 4)]
    [InlineData(16, 16)]
    public void Stripes_Requested_RoundedUpToAPowerOfTwo(int requested, int expected)
    {
        Assert.Equal(expected, new StripedCounter(requested).Stripes);
    }

    [Fact]
    public void DefaultStripes_ThisMachine_OnePerCoreUpToTheCap()
    {
        var stripes = StripedCounter.DefaultStripes;

        Assert.True(stripes >= Math.Min(Environment.ProcessorCount, StripedCounter.MaxStripes), $"{stripes} stripes for {Environment.ProcessorCount} cores");
        Assert.True(stripes <= StripedCounter.MaxStripes, $"{stripes} stripes");
        Assert.Equal(0, stripes & (stripes - 1));
        Assert.Equal(stripes, new StripedCounter().Stripes);
    }
}
