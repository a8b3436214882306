namespace Governance.Resilience;

/// <summary>
/// The failure-ratio statistics of one endpoint's circuit breaker: successes and failures over the last
/// <c>SamplingDuration</c>, the same rolling window as Polly's own (<c>RollingHealthMetrics</c>: ten buckets of a tenth
/// of the sampling duration each, a bucket dropped once it started a whole sampling duration ago; the circuit trips when
/// a failure brings the window to at least <c>MinimumThroughput</c> outcomes with a failure ratio at least
/// <c>FailureRatio</c>). Buckets here start on a fixed grid of the service's clock instead of at the first outcome after
/// the previous bucket ended; that moves bucket boundaries, not the rule.
/// <para>
/// Counting a success is one volatile read and one <see cref="Interlocked.Increment(ref int)"/>: no lock, no
/// allocation and no clock read (a clock read costs as much as the rest together on some VMs). The current bucket is
/// instead advanced by a one-shot timer of the service's <see cref="TimeProvider"/> at each bucket boundary, so a success
/// lands in the bucket of the moment it was counted, give or take the timer's lateness. The timer stops itself once the
/// whole window is empty (an idle or removed endpoint costs nothing), and the next outcome restarts it. Failures, which
/// may trip the circuit, read the clock, advance the window themselves and are evaluated under a lock, as in Polly.
/// </para>
/// </summary>
internal sealed class FailureRatioWindow
{
    /// <summary>Polly's <c>NumberOfWindows</c>.</summary>
    internal const int BucketCount = 10;

    private readonly TimeProvider _time;
    private readonly double _failureRatio;
    private readonly int _minimumThroughput;
    private readonly long _origin;
    private readonly long _bucketLength;
    private readonly Lock _gate = new();
    private readonly Bucket?[] _ring = new Bucket?[BucketCount];
    private readonly ITimer _timer;
    private Bucket? _current;
    private bool _ticking;

    public FailureRatioWindow(double failureRatio, int minimumThroughput, TimeSpan samplingDuration, TimeProvider time)
    {
        _time = time;
        _failureRatio = failureRatio;
        _minimumThroughput = minimumThroughput;
        _origin = time.GetTimestamp();

        // A tenth of the sampling duration, as Polly's TimeSpan.FromTicks(SamplingDuration.Ticks / 10), in timestamp units.
        _bucketLength = Math.Max(1, (long)(samplingDuration.Ticks / BucketCount * (double)time.TimestampFrequency / TimeSpan.TicksPerSecond));

        // Created disarmed (and without the creator's execution context): armed by the first outcome.
        using (BackgroundWork.SuppressFlow())
        {
            _timer = time.CreateTimer(static s => ((FailureRatioWindow)s!).Tick(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>Counts a success: lock-free, allocation-free, no clock read (except the first after an idle window).</summary>
    public void RecordSuccess()
    {
        var bucket = Volatile.Read(ref _current) ?? Resume();
        Interlocked.Increment(ref bucket.Successes);
    }

    /// <summary>Counts a failure; returns <see langword="true"/> when the window now says the circuit should open.</summary>
    public bool RecordFailure()
    {
        lock (_gate)
        {
            var now = Index(_time.GetTimestamp());
            AdvanceTo_NeedsLock(now).Failures++;
            var (successes, failures) = Sum_NeedsLock(now);
            var throughput = successes + failures;

            // Polly's AdvancedCircuitBehavior: Throughput >= MinimumThroughput && FailureRate >= FailureRatio.
            return throughput >= _minimumThroughput && failures / (double)throughput >= _failureRatio;
        }
    }

    /// <summary>Forgets every outcome (the circuit closed: Polly resets its own metrics at the same point).</summary>
    public void Reset()
    {
        lock (_gate)
        {
            Array.Clear(_ring);
            Volatile.Write(ref _current, null);
            if (_ticking)
            {
                _ticking = false;
                _timer.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            }
        }
    }

    /// <summary>Gets the outcomes in the window now, for tests.</summary>
    internal (long Successes, long Failures) Snapshot()
    {
        lock (_gate)
        {
            return Sum_NeedsLock(Index(_time.GetTimestamp()));
        }
    }

    private long Index(long timestamp) => (timestamp - _origin) / _bucketLength;

    private Bucket Resume()
    {
        lock (_gate)
        {
            return _current ?? AdvanceTo_NeedsLock(Index(_time.GetTimestamp()));
        }
    }

    /// <summary>Makes bucket <paramref name="now"/> the current one (a new bucket replaces the one ten steps back) and keeps the timer running.</summary>
    private Bucket AdvanceTo_NeedsLock(long now)
    {
        var current = _current;
        if (current is not null && current.Index >= now)
        {
            return current;
        }

        var bucket = new Bucket(now);
        _ring[now % BucketCount] = bucket;
        Volatile.Write(ref _current, bucket);
        if (!_ticking)
        {
            _ticking = true;
            ArmFor_NeedsLock(now);
        }

        return bucket;
    }

    private void Tick()
    {
        lock (_gate)
        {
            if (!_ticking)
            {
                return;
            }

            var now = Index(_time.GetTimestamp());
            if (_current is { } current && current.Index < now)
            {
                var (successes, failures) = Sum_NeedsLock(now);
                if (successes + failures == 0)
                {
                    // Nothing left in the window: stop until the next outcome (RecordSuccess then reads the clock once).
                    Volatile.Write(ref _current, null);
                    _ticking = false;
                    return;
                }

                var bucket = new Bucket(now);
                _ring[now % BucketCount] = bucket;
                Volatile.Write(ref _current, bucket);
            }

            ArmFor_NeedsLock(now);
        }
    }

    /// <summary>Arms the timer for the start of bucket <paramref name="now"/> + 1 (rounded up, so that it never fires early).</summary>
    private void ArmFor_NeedsLock(long now)
    {
        var remaining = _origin + ((now + 1) * _bucketLength) - _time.GetTimestamp();
        var due = TimeSpan.FromTicks(Math.Max(1, (long)Math.Ceiling(remaining * (double)TimeSpan.TicksPerSecond / _time.TimestampFrequency)));
        _timer.Change(due, Timeout.InfiniteTimeSpan);
    }

    /// <summary>Sums the buckets that started less than a sampling duration before bucket <paramref name="now"/> ends.</summary>
    private (long Successes, long Failures) Sum_NeedsLock(long now)
    {
        long successes = 0, failures = 0;
        foreach (var bucket in _ring)
        {
            if (bucket is not null && bucket.Index > now - BucketCount && bucket.Index <= now)
            {
                successes += Volatile.Read(ref bucket.Successes);
                failures += bucket.Failures;
            }
        }

        return (successes, failures);
    }

    /// <summary>
    /// One bucket. A new instance per bucket, never reused, so that a success counted by a thread that read
    /// <see cref="_current"/> just before the window moved lands in the bucket it read, never in a later one.
    /// </summary>
    private sealed class Bucket(long index)
    {
        public readonly long Index = index;

        /// <summary>Incremented lock-free.</summary>
        public int Successes;

        /// <summary>Written under the window's lock only.</summary>
        public int Failures;
    }
}
