namespace Governance.Resilience;

/// <summary>
/// The attempt and total timeouts of one service: a cancellation token per timeout, cancelled when its deadline on the
/// service's <see cref="TimeProvider"/> passes, at no allocation and no shared write per timeout in steady state.
/// <para>
/// Why not <see cref="CancellationTokenSource.CancelAfter(TimeSpan)"/> on pooled sources (what this replaces): every
/// <c>CancelAfter</c> and every reset inserts into and removes from the runtime's timer queue under its lock, and a pooled
/// source wanders between cores, so on a busy multi-core client those two steps and the shared pool cost ~1 µs per
/// call in cache-line traffic (<c>contention-rounds</c> in benchmarks/README.md), ten times their single-threaded cost.
/// </para>
/// <para>
/// Here, timeouts are kept per core (a shard is chosen by the current processor): each shard has a list of its pending
/// deadlines in deadline order, a free list of deadlines whose timer-less sources are reset and reused, and one timer
/// armed for its earliest deadline. A timeout is a constant added to a start time that only grows, so a new deadline
/// almost always goes at the end of the list and finds the timer already armed for an earlier one: starting and ending a
/// timeout are a few writes under the shard's uncontended lock. When the timer fires it cancels every deadline that has
/// passed (exactly at the deadline on a fake clock, as <c>CancelAfter</c> would) and re-arms itself for the next one;
/// with nothing pending it stays disarmed, so an idle service costs nothing.
/// </para>
/// </summary>
internal sealed class TimeoutScheduler
{
    /// <summary>Deadlines kept for reuse per shard; more are dropped (the high-water mark of concurrent timeouts per core).</summary>
    private const int MaxFreePerShard = 1024;

    /// <summary>The longest a timer is armed for at once (the system timer's limit is ~49.7 days); a later deadline re-arms it.</summary>
    private static readonly TimeSpan LongestArm = TimeSpan.FromDays(30);

    private readonly TimeProvider _time;
    private readonly double _timestampsPerTick;
    private readonly bool _millisecondTimers;
    private readonly Shard[] _shards;

    public TimeoutScheduler(TimeProvider time)
    {
        _time = time;
        _timestampsPerTick = time.TimestampFrequency / (double)TimeSpan.TicksPerSecond;
        _millisecondTimers = time == TimeProvider.System;
        _shards = new Shard[Math.Clamp(Environment.ProcessorCount, 1, 64)];
        for (var i = 0; i < _shards.Length; i++)
        {
            _shards[i] = new Shard(this);
        }
    }

    /// <summary>
    /// Starts a timeout of <paramref name="timeout"/> from <paramref name="now"/> (a timestamp of the service's clock, read
    /// by the caller, who usually has one already). Every <see cref="Start"/> is paired with one <see cref="End"/>.
    /// </summary>
    public Deadline Start(long now, TimeSpan timeout)
    {
        var ticks = timeout.Ticks * _timestampsPerTick;
        var at = ticks >= long.MaxValue - now ? long.MaxValue : now + Math.Max(1, (long)Math.Ceiling(ticks));
        var shard = _shards.Length == 1 ? _shards[0] : _shards[Thread.GetCurrentProcessorId() % _shards.Length];
        return shard.Start(at);
    }

    /// <summary>
    /// Ends a timeout: its deadline no longer fires, and its source is reset for another timeout unless it was cancelled.
    /// The caller must not use <paramref name="deadline"/> afterwards.
    /// </summary>
    public static void End(Deadline deadline) => deadline.Owner.End(deadline);

    /// <summary>Gets the number of pending deadlines, for tests.</summary>
    internal int PendingCount()
    {
        var count = 0;
        foreach (var shard in _shards)
        {
            count += shard.PendingCount();
        }

        return count;
    }

    private TimeSpan DueIn(long at, long now)
    {
        // Rounded up, so that the timer never fires before the deadline; a timer that fires early anyway re-arms. The
        // system timer counts whole milliseconds and truncates, so its due time is rounded up to one (else a deadline
        // less than a millisecond away would re-arm at zero until it passed).
        var ticks = Math.Max(1, (long)Math.Ceiling((at - now) / _timestampsPerTick));
        if (_millisecondTimers)
        {
            ticks = (ticks + TimeSpan.TicksPerMillisecond - 1) / TimeSpan.TicksPerMillisecond * TimeSpan.TicksPerMillisecond;
        }

        return ticks >= LongestArm.Ticks ? LongestArm : TimeSpan.FromTicks(ticks);
    }

    /// <summary>One timeout: its token, its deadline and its place in its shard's list.</summary>
    internal sealed class Deadline
    {
        internal const int Pending = 0;
        internal const int Ended = 1;
        internal const int Expired = 2;

        internal Deadline(Shard owner)
        {
            Owner = owner;
        }

        /// <summary>Gets the source whose token the timeout cancels (timer-less; reset and reused after a timeout that did not fire).</summary>
        public CancellationTokenSource Source { get; internal set; } = null!;

        internal Shard Owner { get; }

        internal long At { get; set; }

        internal int State { get; set; }

        internal Deadline? Previous { get; set; }

        /// <summary>Gets or sets the next deadline in the pending list, or in the free list.</summary>
        internal Deadline? Next { get; set; }
    }

    /// <summary>
    /// The timeouts started on one core. Locked on itself: the lock word is in this object's header, on the same cache
    /// line as the fields it guards (a separate lock object would be allocated next to another shard).
    /// </summary>
    internal sealed class Shard
    {
        private readonly TimeoutScheduler _scheduler;
        private Deadline? _head;
        private Deadline? _tail;
        private Deadline? _free;
        private int _freeCount;
        private long _armedFor = long.MaxValue;
        private ITimer? _timer;
#pragma warning disable CS0169, IDE0051 // Keeps the next shard's fields off this shard's cache lines.
        private readonly CacheLinePadding _padding;
#pragma warning restore CS0169, IDE0051

        public Shard(TimeoutScheduler scheduler)
        {
            _scheduler = scheduler;
        }

        public Deadline Start(long at)
        {
            lock (this)
            {
                var deadline = _free;
                if (deadline is null)
                {
                    deadline = new Deadline(this);
                }
                else
                {
                    _free = deadline.Next;
                    _freeCount--;
                }

                deadline.Source ??= new CancellationTokenSource();
                deadline.At = at;
                deadline.State = Deadline.Pending;

                // In deadline order; a new deadline is almost always the latest, so the walk back from the tail stops at once.
                var before = _tail;
                while (before is not null && before.At > at)
                {
                    before = before.Previous;
                }

                deadline.Previous = before;
                deadline.Next = before is null ? _head : before.Next;
                if (deadline.Next is null)
                {
                    _tail = deadline;
                }
                else
                {
                    deadline.Next.Previous = deadline;
                }

                if (before is null)
                {
                    _head = deadline;
                }
                else
                {
                    before.Next = deadline;
                }

                if (at < _armedFor)
                {
                    Arm_NeedsLock(at, _scheduler._time.GetTimestamp());
                }

                return deadline;
            }
        }

        public void End(Deadline deadline)
        {
            lock (this)
            {
                if (deadline.State == Deadline.Pending)
                {
                    Unlink_NeedsLock(deadline);
                }

                // A source that was cancelled (by its deadline, or by the caller through a registration) cannot be reset;
                // the timer may still be cancelling it, so it is dropped, not disposed. The deadline gets a new one when reused.
                if (deadline.State == Deadline.Expired || !deadline.Source.TryReset())
                {
                    deadline.Source = null!;
                }

                deadline.State = Deadline.Ended;
                deadline.Previous = null;
                if (_freeCount < MaxFreePerShard)
                {
                    deadline.Next = _free;
                    _free = deadline;
                    _freeCount++;
                }
                else
                {
                    deadline.Next = null;
                }
            }
        }

        public int PendingCount()
        {
            lock (this)
            {
                var count = 0;
                for (var d = _head; d is not null; d = d.Next)
                {
                    count++;
                }

                return count;
            }
        }

        private void Unlink_NeedsLock(Deadline deadline)
        {
            if (deadline.Previous is null)
            {
                _head = deadline.Next;
            }
            else
            {
                deadline.Previous.Next = deadline.Next;
            }

            if (deadline.Next is null)
            {
                _tail = deadline.Previous;
            }
            else
            {
                deadline.Next.Previous = deadline.Previous;
            }
        }

        private void Arm_NeedsLock(long at, long now)
        {
            if (_timer is null)
            {
                // Created disarmed and without the execution context of the request that happens to start it.
                using (BackgroundWork.SuppressFlow())
                {
                    _timer = _scheduler._time.CreateTimer(static s => ((Shard)s!).Fire(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                }
            }

            // Never a zero due time: a fake clock would run the callback on this thread, inside this lock.
            _armedFor = at;
            _timer.Change(_scheduler.DueIn(at, now), Timeout.InfiniteTimeSpan);
        }

        private void Fire()
        {
            CancellationTokenSource? single = null;
            List<CancellationTokenSource>? more = null;
            lock (this)
            {
                _armedFor = long.MaxValue;
                var now = _scheduler._time.GetTimestamp();
                while (_head is { } head && head.At <= now)
                {
                    Unlink_NeedsLock(head);
                    head.State = Deadline.Expired;
                    head.Previous = null;
                    head.Next = null;
                    if (single is null)
                    {
                        single = head.Source;
                    }
                    else
                    {
                        (more ??= []).Add(head.Source);
                    }
                }

                if (_head is { } next)
                {
                    Arm_NeedsLock(next.At, now);
                }
            }

            // Outside the lock: cancellation runs the callbacks registered on the tokens (the socket handler's), which
            // may end other timeouts of this shard.
            single?.Cancel();
            if (more is not null)
            {
                foreach (var source in more)
                {
                    source.Cancel();
                }
            }
        }
    }
}
