namespace Governance.Resilience;

/// <summary>
/// The failure-ratio statistics of one endpoint's circuit breaker: successes and failures over the last
/// <c>SamplingDuration</c>, the same rolling window as Polly's own (<c>RollingHealthMetrics</c>: ten buckets of a tenth
/// of the sampling duration each, a bucket dropped once it started a whole sampling duration ago; the circuit trips when
/// a failure brings the window to at least <c>MinimumThroughput</c> outcomes with a failure ratio at least
/// <c>FailureRatio</c>). Buckets here start on a fixed grid of the service's clock instead of at the first outcome after
/// the previous bucket ended; that moves bucket boundaries, not the rule.
/// <para>
/// Counting a success is one volatile read and one interlocked add on the calling core's stripe of a
/// <see cref="StripedCounter"/>: no lock, no allocation, no clock read (a clock read costs as much as the rest together
/// on some VMs) and no cache line that another core writes (one shared counter per endpoint, written by every core on
/// every success, cost several times the rest of the call on two cores). The stripes only grow: each bucket keeps the
/// success total at its start, so the successes of a bucket are the total at the next bucket's start minus its own, and
/// those of the window are the total now minus the start of its oldest bucket. The buckets are advanced by a one-shot
/// timer of the service's <see cref="TimeProvider"/> at each bucket boundary, which takes the total then, so a success
/// lands in the bucket of the moment it was counted, give or take the timer's lateness. The timer stops itself once
/// the whole window is empty (an idle or removed endpoint costs nothing), and the next outcome restarts it. Failures,
/// which may trip the circuit, read the clock, advance the window themselves and are evaluated under a lock, as in
/// Polly; only they, the timer and <see cref="Reset"/> sum the stripes.
/// </para>
/// <para>
/// Memory per endpoint: the striped counter ((stripes + 2) x 128 B: 512 B on 2 cores, at most 2,304 B from 9 cores up)
/// and ten 24 B buckets; nothing is allocated after construction.
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
    private readonly StripedCounter _successes;
    private readonly Bucket[] _ring = new Bucket[BucketCount];
    private readonly ITimer _timer;

    /// <summary>Whether a bucket is current and the timer runs; read on every success, written only under the lock.</summary>
    private volatile bool _ticking;

    /// <summary>The index of the current bucket (while <see cref="_ticking"/>); under the lock.</summary>
    private long _current;

    /// <summary>The success total when the window stopped or was reset: the start of the next bucket; under the lock.</summary>
    private long _mark;

    /// <summary>Initializes a window with Polly's rule for these settings, counting successes on <see cref="StripedCounter.DefaultStripes"/> stripes.</summary>
    /// <param name="failureRatio">The failure ratio at or above which the circuit opens.</param>
    /// <param name="minimumThroughput">The outcomes the window must hold before it may open the circuit.</param>
    /// <param name="samplingDuration">The window's length (ten buckets of a tenth each).</param>
    /// <param name="time">The service's clock: bucket boundaries and the timer that advances them.</param>
    public FailureRatioWindow(double failureRatio, int minimumThroughput, TimeSpan samplingDuration, TimeProvider time)
        : this(failureRatio, minimumThroughput, samplingDuration, time, new StripedCounter())
    {
    }

    /// <summary>Initializes a window that counts successes in <paramref name="successes"/> (tests choose its stripe count).</summary>
    internal FailureRatioWindow(double failureRatio, int minimumThroughput, TimeSpan samplingDuration, TimeProvider time, StripedCounter successes)
    {
        _time = time;
        _failureRatio = failureRatio;
        _minimumThroughput = minimumThroughput;
        _successes = successes;
        _origin = time.GetTimestamp();
        Array.Fill(_ring, Bucket.None);

        // A tenth of the sampling duration, as Polly's TimeSpan.FromTicks(SamplingDuration.Ticks / 10), in timestamp units.
        _bucketLength = Math.Max(1, (long)(samplingDuration.Ticks / BucketCount * (double)time.TimestampFrequency / TimeSpan.TicksPerSecond));

        // Created disarmed (and without the creator's execution context): armed by the first outcome.
        using (BackgroundWork.SuppressFlow())
        {
            _timer = time.CreateTimer(static s => ((FailureRatioWindow)s!).Tick(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>Counts a success: lock-free, allocation-free, no clock read (except the first after an idle window), no shared write.</summary>
    public void RecordSuccess()
    {
        if (!_ticking)
        {
            Resume();
        }

        _successes.Increment();
    }

    /// <summary>Counts a failure; returns <see langword="true"/> when the window now says the circuit should open.</summary>
    public bool RecordFailure()
    {
        lock (_gate)
        {
            var now = Index(_time.GetTimestamp());
            _ring[AdvanceTo_NeedsLock(now)].Failures++;
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
            Array.Fill(_ring, Bucket.None);
            _mark = _successes.Sum();
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

    private void Resume()
    {
        lock (_gate)
        {
            if (!_ticking)
            {
                AdvanceTo_NeedsLock(Index(_time.GetTimestamp()));
            }
        }
    }

    /// <summary>
    /// Makes bucket <paramref name="now"/> the current one (it replaces the one ten steps back) and keeps the timer
    /// running; returns the current bucket's slot in the ring.
    /// </summary>
    private int AdvanceTo_NeedsLock(long now)
    {
        if (_ticking && _current >= now)
        {
            return Slot(_current);
        }

        // Ticking: the successes so far belong to the buckets before this one. Stopped or reset: start where the window
        // stopped, so that a success counted by a thread that saw the window running just before it stopped is kept.
        Start_NeedsLock(now, _ticking ? _successes.Sum() : _mark);
        if (!_ticking)
        {
            _ticking = true;
            ArmFor_NeedsLock(now);
        }

        return Slot(now);
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
            if (_current < now)
            {
                var total = _successes.Sum();
                var (successes, failures) = Sum_NeedsLock(now, total);
                if (successes + failures == 0)
                {
                    // Nothing left in the window: stop until the next outcome (RecordSuccess then reads the clock once).
                    _mark = total;
                    _ticking = false;
                    return;
                }

                Start_NeedsLock(now, total);
            }

            ArmFor_NeedsLock(now);
        }
    }

    private void Start_NeedsLock(long index, long successesBefore)
    {
        _ring[Slot(index)] = new Bucket(index, successesBefore);
        _current = index;
    }

    /// <summary>Arms the timer for the start of bucket <paramref name="now"/> + 1 (rounded up, so that it never fires early).</summary>
    private void ArmFor_NeedsLock(long now)
    {
        var remaining = _origin + ((now + 1) * _bucketLength) - _time.GetTimestamp();
        var due = TimeSpan.FromTicks(Math.Max(1, (long)Math.Ceiling(remaining * (double)TimeSpan.TicksPerSecond / _time.TimestampFrequency)));
        _timer.Change(due, Timeout.InfiniteTimeSpan);
    }

    private (long Successes, long Failures) Sum_NeedsLock(long now) => Sum_NeedsLock(now, _successes.Sum());

    /// <summary>
    /// Sums the buckets that started less than a sampling duration before bucket <paramref name="now"/> ends: their
    /// failures, and as successes <paramref name="total"/> minus the success total when the oldest of them started
    /// (buckets follow each other in index order, so the buckets of the window are the latest ones).
    /// </summary>
    private (long Successes, long Failures) Sum_NeedsLock(long now, long total)
    {
        long failures = 0;
        var oldest = long.MaxValue;
        var successesBefore = total;
        foreach (var bucket in _ring)
        {
            if (bucket.Index > now - BucketCount && bucket.Index <= now)
            {
                failures += bucket.Failures;
                if (bucket.Index < oldest)
                {
                    oldest = bucket.Index;
                    successesBefore = bucket.SuccessesBefore;
                }
            }
        }

        return (Math.Max(0, total - successesBefore), failures);
    }

    private static int Slot(long index) => (int)(index % BucketCount);

    /// <summary>One bucket: written under the window's lock only (successes are in the striped counter, not here).</summary>
    private struct Bucket(long index, long successesBefore)
    {
        /// <summary>An empty slot: its index is never in a window.</summary>
        public static readonly Bucket None = new(long.MinValue, 0);

        /// <summary>The bucket's number on the grid of the service's clock (a tenth of the sampling duration each).</summary>
        public readonly long Index = index;

        /// <summary>The success total when the bucket started.</summary>
        public readonly long SuccessesBefore = successesBefore;

        /// <summary>The failures counted in the bucket.</summary>
        public int Failures;
    }
}
