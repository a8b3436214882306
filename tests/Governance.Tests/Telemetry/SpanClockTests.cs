using System.Collections.Concurrent;
using System.Diagnostics;
using Governance.Telemetry;
using Governance.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Xunit.Abstractions;

namespace Governance.Tests.Telemetry;

/// <summary>
/// Span times come from the service's own timestamps through an anchored conversion (one wall-clock read a second at
/// most), so a traced call reads the clock twice, not three times. On a fake clock the conversion is exact; a governed
/// call's span starts and ends at the service clock's times. Runs in the telemetry collection (listeners are process-wide).
/// </summary>
[Collection(nameof(TelemetryTests))]
public sealed class SpanClockTests(ITestOutputHelper output) : IDisposable
{
    private static readonly ActivitySource TestSource = new("Governance.Tests.SpanClock");
    private readonly ConcurrentQueue<Activity> _stopped = new();
    private ActivityListener? _listener;

    [Theory]
    [InlineData(1_000_000_000L)] // nanoseconds (Stopwatch on Linux): integer division
    [InlineData(10_000_000L)] // ticks (FakeTimeProvider): as is
    [InlineData(3_579_545L)] // any other (an old ACPI timer): double arithmetic, rounded
    public void ToUtc_EachTimestampFrequency_AnchorTimePlusTheDistance(long frequency)
    {
        var anchorUtc = new DateTimeOffset(2026, 11, 26, 12, 0, 0, TimeSpan.Zero);
        var time = new ManualClock(frequency) { Timestamp = 7 * frequency, UtcNow = anchorUtc };
        var clock = new SpanClock(time);

        var quarterLater = clock.ToUtc(time.Timestamp + (frequency / 4));
        var halfBefore = clock.ToUtc(time.Timestamp - (frequency / 2));
        output.WriteLine($"{frequency} Hz: +0.25 s -> {quarterLater:O}, -0.5 s -> {halfBefore:O}");

        Assert.InRange((quarterLater - anchorUtc.UtcDateTime).Ticks, TimeSpan.FromSeconds(0.25).Ticks - 1, TimeSpan.FromSeconds(0.25).Ticks + 1);
        Assert.InRange((anchorUtc.UtcDateTime - halfBefore).Ticks, TimeSpan.FromSeconds(0.5).Ticks - 1, TimeSpan.FromSeconds(0.5).Ticks + 1);
        Assert.Equal(DateTimeKind.Utc, quarterLater.Kind);
    }

    [Fact]
    public void ToUtc_NanosecondTimestamps_SubTickRemainderDropped()
    {
        var anchorUtc = new DateTimeOffset(2026, 11, 26, 12, 0, 0, TimeSpan.Zero);
        var time = new ManualClock(1_000_000_000) { Timestamp = 42_000_000_000, UtcNow = anchorUtc };
        var clock = new SpanClock(time);

        // 12,399 ns is 123 whole ticks of 100 ns (rounding would give 124).
        Assert.Equal(anchorUtc.UtcDateTime.AddTicks(123), clock.ToUtc(time.Timestamp + 12_399));
    }

    [Fact]
    public void ToUtc_FakeClock_ExactAtAnyDistanceFromTheAnchor()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 11, 26, 12, 0, 0, TimeSpan.Zero));
        var clock = new SpanClock(time);

        foreach (var step in new[] { TimeSpan.Zero, TimeSpan.FromMilliseconds(1.2345), TimeSpan.FromSeconds(0.999), TimeSpan.FromSeconds(3), TimeSpan.FromHours(5) })
        {
            time.Advance(step);
            var converted = clock.ToUtc(time.GetTimestamp());
            output.WriteLine($"+{step}: {converted:O} (clock {time.GetUtcNow():O})");
            Assert.Equal(time.GetUtcNow().UtcDateTime, converted);
            Assert.Equal(DateTimeKind.Utc, converted.Kind);
        }

        // A timestamp taken earlier converts to its own time, not to the anchor's.
        var earlier = time.GetTimestamp();
        var earlierUtc = time.GetUtcNow().UtcDateTime;
        time.Advance(TimeSpan.FromMilliseconds(400));
        Assert.Equal(earlierUtc, clock.ToUtc(earlier));
    }

    [Fact]
    public void ToUtc_SystemClock_AgreesWithTheWallClock()
    {
        // Compiled beforehand, so that the window between the two wall-clock reads holds the clock reads and little else.
        _ = new SpanClock(TimeProvider.System).ToUtc(TimeProvider.System.GetTimestamp());

        // In this order the bounds hold whatever preemption happens in between: the clock's anchor reads UTC (after
        // `before`) and then its timestamp, the converted timestamp is read after that, and `after` last. The conversion
        // is the anchor's UTC time plus at most the time that passed until the converted timestamp was read.
        var before = DateTime.UtcNow;
        var clock = new SpanClock(TimeProvider.System);
        var converted = clock.ToUtc(TimeProvider.System.GetTimestamp());
        var after = DateTime.UtcNow;

        output.WriteLine($"{before:O} <= {converted:O} <= {after:O} (+{(converted - before).Ticks}, +{(after - converted).Ticks} ticks)");

        // Slack for rounding only: a timestamp distance becomes whole ticks, rounded to the nearest one at an uncommon
        // timestamp frequency (truncated otherwise), so the conversion may be up to one tick late, never early.
        Assert.InRange(converted, before, after.AddTicks(1));
    }

    [Fact]
    public async Task SendAsync_FakeServiceClock_SpanStartsAndEndsAtTheServiceClockTimes()
    {
        // Far from the real date: a span that read the wall clock instead would be years long or end before it started.
        var time = new FakeTimeProvider(new DateTimeOffset(2001, 2, 3, 4, 5, 6, TimeSpan.Zero));
        time.Advance(TimeSpan.FromMilliseconds(7.5));
        Listen();
        await using var server = await LoopbackServer.StartAsync("a");
        await using var governed = Governed.Create(Governed.Service("clocked", null, server), s => s.AddSingleton<TimeProvider>(time));
        using var root = TestSource.StartActivity("test")!;

        using var response = await governed.Client.GetAsync(new Uri("http://clocked/")).WaitAsync(TimeSpan.FromSeconds(30));
        response.EnsureSuccessStatusCode();

        var logical = Assert.Single(_stopped, s => s.TraceId == root.TraceId && s.Source.Name == GovernanceTelemetry.Name);
        output.WriteLine($"span {logical.StartTimeUtc:O} + {logical.Duration}; service clock {time.GetUtcNow():O}");
        Assert.Equal(time.GetUtcNow().UtcDateTime, logical.StartTimeUtc);

        // The fake clock did not move during the call, so the span is empty; Activity keeps a zero duration for "not
        // ended" and stores an empty span as one tick.
        Assert.Equal(TimeSpan.FromTicks(1), logical.Duration);
    }

    public void Dispose() => _listener?.Dispose();

    private void Listen()
    {
        _listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name is GovernanceTelemetry.Name or "Governance.Tests.SpanClock",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = _stopped.Enqueue,
        };
        ActivitySource.AddActivityListener(_listener);
    }

    /// <summary>A clock that stays where the test puts it, at any timestamp frequency.</summary>
    private sealed class ManualClock(long frequency) : TimeProvider
    {
        public long Timestamp { get; set; }

        public DateTimeOffset UtcNow { get; set; }

        public override long TimestampFrequency => frequency;

        public override long GetTimestamp() => Timestamp;

        public override DateTimeOffset GetUtcNow() => UtcNow;
    }
}
