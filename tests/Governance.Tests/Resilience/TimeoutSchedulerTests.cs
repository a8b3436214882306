using Governance.Resilience;
using Microsoft.Extensions.Time.Testing;
using Xunit.Abstractions;

namespace Governance.Tests.Resilience;

/// <summary>
/// The per-core deadline lists behind attempt and total timeouts, on a fake clock: a token is cancelled exactly when its
/// deadline passes (not a tick before), never after its timeout ended, and sources are reused only when that is safe.
/// </summary>
public sealed class TimeoutSchedulerTests(ITestOutputHelper output)
{
    [Fact]
    public void Start_DeadlinePasses_CancelsExactlyAtTheTimeout()
    {
        var time = new FakeTimeProvider();
        var scheduler = new TimeoutScheduler(time);

        var deadline = scheduler.Start(time.GetTimestamp(), TimeSpan.FromSeconds(2));
        time.Advance(TimeSpan.FromSeconds(2) - TimeSpan.FromTicks(1));
        Assert.False(deadline.Source.IsCancellationRequested, "cancelled a tick before its 2 s timeout");

        time.Advance(TimeSpan.FromTicks(1));
        Assert.True(deadline.Source.IsCancellationRequested, "not cancelled at its 2 s timeout");
        Assert.Equal(0, scheduler.PendingCount());
        TimeoutScheduler.End(deadline);
    }

    [Fact]
    public void End_BeforeTheDeadline_NeverCancelsAndReusesTheSource()
    {
        var time = new FakeTimeProvider();
        var scheduler = new TimeoutScheduler(time, shards: 1);

        var first = scheduler.Start(time.GetTimestamp(), TimeSpan.FromSeconds(1));
        var source = first.Source;
        TimeoutScheduler.End(first);
        time.Advance(TimeSpan.FromSeconds(5));

        Assert.False(source.IsCancellationRequested, "a timeout that ended was cancelled later");
        Assert.Equal(0, scheduler.PendingCount());

        // One shard: the next timeout reuses the reset source.
        var second = scheduler.Start(time.GetTimestamp(), TimeSpan.FromSeconds(1));
        Assert.Same(source, second.Source);
        Assert.False(second.Source.IsCancellationRequested);
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.True(second.Source.IsCancellationRequested, "the reused source did not time out");
        TimeoutScheduler.End(second);
    }

    [Fact]
    public void Start_DeadlinesOutOfOrder_EachCancelledAtItsOwnTime()
    {
        var time = new FakeTimeProvider();
        var scheduler = new TimeoutScheduler(time);
        var start = time.GetTimestamp();
        int[] seconds = [5, 1, 3, 2, 4, 1];
        var deadlines = seconds.Select(s => scheduler.Start(start, TimeSpan.FromSeconds(s))).ToArray();

        for (var elapsed = 1; elapsed <= 5; elapsed++)
        {
            time.Advance(TimeSpan.FromSeconds(1));
            var cancelled = deadlines.Select(d => d.Source.IsCancellationRequested).ToArray();
            output.WriteLine($"{elapsed} s: {string.Join(", ", cancelled)}");
            for (var i = 0; i < seconds.Length; i++)
            {
                Assert.Equal(seconds[i] <= elapsed, cancelled[i]);
            }
        }

        foreach (var deadline in deadlines)
        {
            TimeoutScheduler.End(deadline);
        }

        Assert.Equal(0, scheduler.PendingCount());
    }

    [Fact]
    public void End_AfterTheSourceWasCancelledOrExpired_NextTimeoutGetsAFreshSource()
    {
        var time = new FakeTimeProvider();
        var scheduler = new TimeoutScheduler(time, shards: 1);

        var byCaller = scheduler.Start(time.GetTimestamp(), TimeSpan.FromSeconds(10));
        var cancelledSource = byCaller.Source;
        cancelledSource.Cancel();
        TimeoutScheduler.End(byCaller);

        var expired = scheduler.Start(time.GetTimestamp(), TimeSpan.FromSeconds(1));
        time.Advance(TimeSpan.FromSeconds(1));
        var expiredSource = expired.Source;
        Assert.True(expiredSource.IsCancellationRequested);
        TimeoutScheduler.End(expired);

        var next = scheduler.Start(time.GetTimestamp(), TimeSpan.FromSeconds(1));
        Assert.False(next.Source.IsCancellationRequested, "a cancelled source was handed out again");
        Assert.NotSame(cancelledSource, next.Source);
        Assert.NotSame(expiredSource, next.Source);
        TimeoutScheduler.End(next);
    }

    [Fact]
    public void Fire_CallbackEndsAnotherTimeoutOfTheSameShard_NoDeadlockAndThatOneNeverFires()
    {
        var time = new FakeTimeProvider();
        var scheduler = new TimeoutScheduler(time);
        var later = scheduler.Start(time.GetTimestamp(), TimeSpan.FromSeconds(2));
        var laterSource = later.Source;
        var first = scheduler.Start(time.GetTimestamp(), TimeSpan.FromSeconds(1));
        using var registration = first.Source.Token.Register(() => TimeoutScheduler.End(later));

        time.Advance(TimeSpan.FromSeconds(1));
        Assert.True(first.Source.IsCancellationRequested);
        time.Advance(TimeSpan.FromSeconds(5));

        Assert.False(laterSource.IsCancellationRequested, "a timeout ended by another's cancellation callback still fired");
        Assert.Equal(0, scheduler.PendingCount());
        TimeoutScheduler.End(first);
    }

    [Fact]
    public async Task StartEnd_ManyThreads_NothingPendingAndNoFreshSourceCancelled()
    {
        var time = new FakeTimeProvider();
        var scheduler = new TimeoutScheduler(time);
        var handedOutCancelled = 0;
        var expired = 0;
        var workers = Enumerable.Range(0, 8).Select(w => Task.Run(() =>
        {
            for (var i = 0; i < 20_000; i++)
            {
                var timeout = TimeSpan.FromMilliseconds(1 + (i % 50));
                var started = time.GetTimestamp();
                var deadline = scheduler.Start(started, timeout);

                // Cancelled before its own timeout passed: a source left over from an earlier timeout.
                if (deadline.Source.IsCancellationRequested && time.GetElapsedTime(started) < timeout)
                {
                    Interlocked.Increment(ref handedOutCancelled);
                }

                if (i % 7 == 0)
                {
                    // Time moves while other workers hold timeouts: some expire under them.
                    time.Advance(TimeSpan.FromMilliseconds(1));
                }

                if (deadline.Source.IsCancellationRequested)
                {
                    Interlocked.Increment(ref expired);
                }

                TimeoutScheduler.End(deadline);
            }
        })).ToArray();

        await Task.WhenAll(workers).WaitAsync(TimeSpan.FromMinutes(1));
        output.WriteLine($"160,000 timeouts on 8 threads; {expired} expired while held");

        Assert.Equal(0, handedOutCancelled);
        Assert.Equal(0, scheduler.PendingCount());
        Assert.True(expired > 0, "no timeout expired: the test did not exercise expiry under concurrency");
    }

    [Fact]
    public void End_ManyTimeoutsBehindOneStillPending_TheirDeadlinesAreReusedMeanwhile()
    {
        // End only marks a deadline done; the shard unlinks it later. One long timeout at the head of the list must not
        // keep every later one listed (a hung request would otherwise grow the list by one per call).
        var time = new FakeTimeProvider();
        var scheduler = new TimeoutScheduler(time, shards: 1);
        var hung = scheduler.Start(time.GetTimestamp(), TimeSpan.FromSeconds(30));
        var longest = 0;
        for (var i = 0; i < 10_000; i++)
        {
            var deadline = scheduler.Start(time.GetTimestamp(), TimeSpan.FromSeconds(1));
            TimeoutScheduler.End(deadline);
            longest = Math.Max(longest, scheduler.ListedCount());
        }

        output.WriteLine($"10,000 timeouts behind a pending one: at most {longest} listed");
        Assert.Equal(1, scheduler.PendingCount());
        Assert.InRange(longest, 1, 2);
        Assert.False(hung.Source.IsCancellationRequested);
        TimeoutScheduler.End(hung);
    }

    [Fact]
    public void Fire_DoneDeadlinesListed_UnlinksThemAndStaysDisarmedWhenIdle()
    {
        var time = new FakeTimeProvider();
        var scheduler = new TimeoutScheduler(time);
        var deadlines = Enumerable.Range(1, 5).Select(s => scheduler.Start(time.GetTimestamp(), TimeSpan.FromSeconds(s))).ToArray();
        var sources = deadlines.Select(d => d.Source).ToArray();
        foreach (var deadline in deadlines)
        {
            TimeoutScheduler.End(deadline);
        }

        Assert.Equal(0, scheduler.PendingCount());
        var listedBefore = scheduler.ListedCount();

        // The timer was armed for the first deadline; when it fires it finds nothing pending and unlinks what ended.
        time.Advance(TimeSpan.FromSeconds(10));
        output.WriteLine($"listed before the timer: {listedBefore}, after: {scheduler.ListedCount()}");
        Assert.Equal(0, scheduler.ListedCount());
        Assert.All(sources, source => Assert.False(source.IsCancellationRequested, "a timeout that ended was cancelled by the timer"));
    }

    [Fact]
    public void Fire_TimeoutFiredButNotYetEnded_SweptLaterWithoutAnotherStart()
    {
        var time = new FakeTimeProvider();
        var scheduler = new TimeoutScheduler(time);
        var deadline = scheduler.Start(time.GetTimestamp(), TimeSpan.FromSeconds(1));
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.True(deadline.Source.IsCancellationRequested);

        // Ended after it fired, and no timeout starts on this shard again: the timer's next sweep unlinks it.
        TimeoutScheduler.End(deadline);
        Assert.Equal(1, scheduler.ListedCount());
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(0, scheduler.ListedCount());
    }

    [Fact]
    public async Task End_OnAnotherThreadThanStart_NeverFiresAndTheDeadlineIsReused()
    {
        // A socket's completion usually runs on another thread (often another core) than the one that sent the request.
        var time = new FakeTimeProvider();
        var scheduler = new TimeoutScheduler(time, shards: 1);
        var sources = new HashSet<CancellationTokenSource>();
        for (var i = 0; i < 200; i++)
        {
            var deadline = scheduler.Start(time.GetTimestamp(), TimeSpan.FromSeconds(1));
            sources.Add(deadline.Source);
            await Task.Run(() => TimeoutScheduler.End(deadline));
        }

        time.Advance(TimeSpan.FromSeconds(5));
        output.WriteLine($"200 timeouts ended on pool threads used {sources.Count} sources");
        Assert.All(sources, source => Assert.False(source.IsCancellationRequested, "a timeout ended on another thread still fired"));
        Assert.InRange(sources.Count, 1, 2);
        Assert.Equal(0, scheduler.ListedCount());
    }
}
