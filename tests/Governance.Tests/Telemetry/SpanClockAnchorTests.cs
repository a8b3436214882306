using Governance.Telemetry;

namespace Governance.Tests.Telemetry;

/// <summary>When <see cref="SpanClock"/> reads the wall clock again.</summary>
public sealed class SpanClockAnchorTests
{
    [Fact]
    public void ToUtc_TimestampsLongBeforeTheAnchor_ConvertedWithoutReadingTheWallClockAgain()
    {
        // Spans of calls that waited (for a permit, for discovery) start from a timestamp seconds old.
        var clock = new CountingClock { Timestamp = 1_000_000_000, UtcNow = new DateTimeOffset(2026, 11, 27, 7, 0, 0, TimeSpan.Zero) };
        var spans = new SpanClock(clock);
        var reads = clock.UtcReads;
        var fiveSecondsAgo = clock.Timestamp - (5 * TimeSpan.TicksPerSecond);

        for (var i = 0; i < 100; i++)
        {
            Assert.Equal(clock.UtcNow.UtcDateTime.AddSeconds(-5), spans.ToUtc(fiveSecondsAgo));
        }

        Assert.Equal(reads, clock.UtcReads);
    }

    [Fact]
    public void ToUtc_AnchorMoreThanASecondOld_ReadsTheWallClockOnceAndFollowsItsStep()
    {
        var clock = new CountingClock { Timestamp = 1_000_000_000, UtcNow = new DateTimeOffset(2026, 11, 27, 7, 0, 0, TimeSpan.Zero) };
        var spans = new SpanClock(clock);
        var reads = clock.UtcReads;

        // Two seconds later, and the wall clock was stepped 3 s forward meanwhile (NTP): the next conversion re-anchors.
        clock.Timestamp += 2 * TimeSpan.TicksPerSecond;
        clock.UtcNow = clock.UtcNow.AddSeconds(5);
        Assert.Equal(clock.UtcNow.UtcDateTime, spans.ToUtc(clock.Timestamp));
        Assert.Equal(clock.UtcNow.UtcDateTime, spans.ToUtc(clock.Timestamp));
        Assert.Equal(reads + 1, clock.UtcReads);
    }

    /// <summary>A clock that moves only when told to (timestamps are ticks), counting wall-clock reads.</summary>
    private sealed class CountingClock : TimeProvider
    {
        public long Timestamp { get; set; }

        public DateTimeOffset UtcNow { get; set; }

        public int UtcReads { get; private set; }

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public override long GetTimestamp() => Timestamp;

        public override DateTimeOffset GetUtcNow()
        {
            UtcReads++;
            return UtcNow;
        }
    }
}
