using System.Runtime.InteropServices;

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
/// Here, timeouts are kept per core (a shard is chosen by the current processor): each shard has a list of its
/// deadlines in deadline order, a free list of deadlines whose timer-less sources are reset and reused, and one timer
/// armed for its earliest pending deadline. A timeout is a constant added to a start time that only grows, so a new
/// deadline almost always goes at the end of the list and finds the timer already armed for an earlier one. When the
/// timer fires it cancels every deadline that has passed (exactly at the deadline on a fake clock, as <c>CancelAfter</c>
/// would) and re-arms itself for the next one; with nothing pending it stays disarmed, so an idle service costs nothing.
/// </para>
/// <para>
/// Only the shard's own core writes its list. A timeout usually ends on another core than the one that started it (a
/// socket's completion runs wherever the thread pool picks it up), so <see cref="End"/> does not touch the list: it marks
/// the deadline done with one compare-and-swap on the deadline itself (which races the timer's, so a deadline either
/// fires or ends, never both) and resets its source there. The owning shard unlinks done deadlines later, under its own
/// lock: from the head of the list, and a few more from a cursor on every start, so that one long timeout at the head
/// does not keep the ones behind it. Measured with <c>handoff-rounds</c> (benchmarks/README.md).
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
    private readonly int _shardCount;

    /// <summary>The shards, then <see cref="CacheLine.Size"/> bytes of empty slots: the first shard's lock word is not on the line of the last ones read.</summary>
    private readonly Shard[] _shards;

    public TimeoutScheduler(TimeProvider time)
        : this(time, Environment.ProcessorCount)
    {
    }

    /// <summary>A scheduler with <paramref name="shards"/> shards (clamped to 1–64); tests use one, so that what they check does not depend on the core a thread runs on.</summary>
    internal TimeoutScheduler(TimeProvider time, int shards)
    {
        _time = time;
        _timestampsPerTick = time.TimestampFrequency / (double)TimeSpan.TicksPerSecond;
        _millisecondTimers = time == TimeProvider.System;
        _shardCount = Math.Clamp(shards, 1, 64);
        _shards = new Shard[_shardCount + (CacheLine.Size / IntPtr.Size)];
        for (var i = 0; i < _shardCount; i++)
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
        return CurrentShard().Start(at);
    }

    /// <summary>
    /// Ends a timeout: its deadline no longer fires, and its source is reset for another timeout unless it was cancelled.
    /// The caller must not use <paramref name="deadline"/> afterwards.
    /// </summary>
    public static void End(Deadline deadline)
    {
        // The race with the timer: a deadline either fires or ends, never both.
        if (Interlocked.CompareExchange(ref deadline.State, Deadline.Ending, Deadline.Pending) != Deadline.Pending || !deadline.Source.TryReset())
        {
            // Fired (the timer may still be cancelling the source), or cancelled by the caller's token: the source is
            // dropped, not disposed; the deadline gets a new one when it is reused.
            deadline.Source = null!;
        }

        // Last: the owning shard unlinks and reuses the deadline once it sees Done.
        Volatile.Write(ref deadline.State, Deadline.Done);
    }

    /// <summary>Gets the number of deadlines neither ended nor fired, for tests.</summary>
    internal int PendingCount()
    {
        var count = 0;
        for (var i = 0; i < _shardCount; i++)
        {
            count += _shards[i].Count().Pending;
        }

        return count;
    }

    /// <summary>Gets the number of deadlines in the shards' lists, done ones not yet unlinked included, for tests.</summary>
    internal int ListedCount()
    {
        var count = 0;
        for (var i = 0; i < _shardCount; i++)
        {
            count += _shards[i].Count().Listed;
        }

        return count;
    }

    private Shard CurrentShard() => _shardCount == 1 ? _shards[0] : _shards[Thread.GetCurrentProcessorId() % _shardCount];

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
        /// <summary>Started, neither ended nor fired.</summary>
        internal const int Pending = 0;

        /// <summary><see cref="End"/> won the race with the timer and is resetting the source.</summary>
        internal const int Ending = 1;

        /// <summary>The timer won: the source is (being) cancelled; the timeout has not ended yet.</summary>
        internal const int Expired = 2;

        /// <summary>Ended: the owning shard may unlink and reuse it.</summary>
        internal const int Done = 3;

        internal int State;

        /// <summary>Gets the source whose token the timeout cancels (timer-less; reset and reused after a timeout that did not fire).</summary>
        public CancellationTokenSource Source { get; internal set; } = null!;

        internal long At { get; set; }

        internal Deadline? Previous { get; set; }

        /// <summary>Gets or sets the next deadline in the shard's list, or in its free list.</summary>
        internal Deadline? Next { get; set; }
    }

    /// <summary>
    /// The timeouts started on one core, locked on itself. Its state is written by every timeout started on that core, so
    /// it sits alone on its cache lines (<see cref="State"/>), lock word included: the array of shards and the scheduler,
    /// read by every timeout on every core, must not share a line with it (allocated one after the other, they would).
    /// </summary>
    internal sealed class Shard
    {
        /// <summary>Deadlines a start examines from the cursor, besides the head: more than one, so the cursor laps the list faster than it grows.</summary>
        private const int SweepPerStart = 2;

        private State _state;

        public Shard(TimeoutScheduler scheduler)
        {
            Scheduler = scheduler;
            _state.ArmedFor = long.MaxValue;
        }

        /// <summary>Gets the scheduler (read-only, outside the padded state).</summary>
        public TimeoutScheduler Scheduler { get; }

        public Deadline Start(long at)
        {
            ref var state = ref _state;
            lock (this)
            {
                Sweep_NeedsLock();
                var deadline = state.Free;
                if (deadline is null)
                {
                    deadline = new Deadline();
                }
                else
                {
                    state.Free = deadline.Next;
                    state.FreeCount--;
                }

                deadline.Source ??= new CancellationTokenSource();
                deadline.At = at;
                deadline.State = Deadline.Pending;

                // In deadline order; a new deadline is almost always the latest, so the walk back from the tail stops at once.
                var before = state.Tail;
                while (before is not null && before.At > at)
                {
                    before = before.Previous;
                }

                deadline.Previous = before;
                deadline.Next = before is null ? state.Head : before.Next;
                if (deadline.Next is null)
                {
                    state.Tail = deadline;
                }
                else
                {
                    deadline.Next.Previous = deadline;
                }

                if (before is null)
                {
                    state.Head = deadline;
                }
                else
                {
                    before.Next = deadline;
                }

                if (at < state.ArmedFor)
                {
                    Arm_NeedsLock(at, Scheduler._time.GetTimestamp());
                }

                return deadline;
            }
        }

        /// <summary>Gets the number of deadlines neither ended nor fired, and the number still in the list (done ones not yet unlinked included).</summary>
        public (int Pending, int Listed) Count()
        {
            ref var state = ref _state;
            lock (this)
            {
                var (pending, listed) = (0, 0);
                for (var d = state.Head; d is not null; d = d.Next)
                {
                    listed++;
                    if (Volatile.Read(ref d.State) == Deadline.Pending)
                    {
                        pending++;
                    }
                }

                return (pending, listed);
            }
        }

        /// <summary>Unlinks the done deadlines at the head of the list, then examines <see cref="SweepPerStart"/> more from the cursor.</summary>
        private void Sweep_NeedsLock()
        {
            ref var state = ref _state;
            while (state.Head is { } head && Volatile.Read(ref head.State) == Deadline.Done)
            {
                Reclaim_NeedsLock(head);
            }

            var cursor = state.Cursor ?? state.Head;
            for (var i = 0; i < SweepPerStart && cursor is not null; i++)
            {
                var next = cursor.Next;
                if (Volatile.Read(ref cursor.State) == Deadline.Done)
                {
                    Reclaim_NeedsLock(cursor);
                }

                cursor = next;
            }

            state.Cursor = cursor;
        }

        /// <summary>Unlinks a done deadline and keeps it for reuse (up to <see cref="MaxFreePerShard"/>).</summary>
        private void Reclaim_NeedsLock(Deadline deadline)
        {
            ref var state = ref _state;
            if (ReferenceEquals(state.Cursor, deadline))
            {
                state.Cursor = deadline.Next;
            }

            if (deadline.Previous is null)
            {
                state.Head = deadline.Next;
            }
            else
            {
                deadline.Previous.Next = deadline.Next;
            }

            if (deadline.Next is null)
            {
                state.Tail = deadline.Previous;
            }
            else
            {
                deadline.Next.Previous = deadline.Previous;
            }

            deadline.Previous = null;
            if (state.FreeCount < MaxFreePerShard)
            {
                deadline.Next = state.Free;
                state.Free = deadline;
                state.FreeCount++;
            }
            else
            {
                deadline.Next = null;
            }
        }

        private void Arm_NeedsLock(long at, long now)
        {
            ref var state = ref _state;
            if (state.Timer is null)
            {
                // Created disarmed and without the execution context of the request that happens to start it.
                using (BackgroundWork.SuppressFlow())
                {
                    state.Timer = Scheduler._time.CreateTimer(static s => ((Shard)s!).Fire(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                }
            }

            // Never a zero due time. A fake clock may still run an expired timer's callback on this thread (its Change wakes
            // every waiter whose time has come, this one included if another thread moved the clock meanwhile): the
            // monitor is reentrant and the list is consistent here, so Fire may run inside this lock.
            state.ArmedFor = at;
            state.Timer.Change(Scheduler.DueIn(at, now), Timeout.InfiniteTimeSpan);
        }

        /// <summary>
        /// The timer: walks the whole list once, unlinking done deadlines, firing the pending ones that have passed, and
        /// re-arms for the earliest deadline still pending.
        /// </summary>
        private void Fire()
        {
            CancellationTokenSource? single = null;
            List<CancellationTokenSource>? more = null;
            ref var state = ref _state;
            lock (this)
            {
                state.ArmedFor = long.MaxValue;
                var now = Scheduler._time.GetTimestamp();
                long? earliest = null;
                var unsettled = false;
                for (var deadline = state.Head; deadline is not null;)
                {
                    var next = deadline.Next;
                    var current = Volatile.Read(ref deadline.State);
                    if (current == Deadline.Done)
                    {
                        Reclaim_NeedsLock(deadline);
                    }
                    else if (current != Deadline.Pending)
                    {
                        // Fired or ending: done soon, unlinked by the next start or sweep.
                        unsettled = true;
                    }
                    else
                    {
                        if (deadline.At > now)
                        {
                            earliest ??= deadline.At;
                        }
                        else
                        {
                            unsettled = true;
                            // Read before the race: once End has won it, it may take the source away.
                            var source = deadline.Source;
                            if (Interlocked.CompareExchange(ref deadline.State, Deadline.Expired, Deadline.Pending) == Deadline.Pending)
                            {
                                // Fired: it stays listed until its timeout ends, as every deadline does.
                                if (single is null)
                                {
                                    single = source;
                                }
                                else
                                {
                                    (more ??= []).Add(source);
                                }
                            }
                        }
                    }

                    deadline = next;
                }

                if (earliest is { } at)
                {
                    Arm_NeedsLock(at, now);
                }
                else if (unsettled)
                {
                    // Nothing pending, but timeouts that fired have not ended yet: sweep again in a second, so that a
                    // shard no request starts on any more still unlinks them.
                    Arm_NeedsLock(now + Scheduler._time.TimestampFrequency, now);
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

        /// <summary>
        /// A shard's mutable state with <see cref="CacheLine.Size"/> bytes of padding on each side: whatever the heap puts
        /// before or after the shard never shares a line pair with it. The shard's monitor (its lock word, in the object
        /// header, before the leading padding) is on a line of its own too: the object before a shard is the previous
        /// shard, ending in padding, or the shard array, whose last 128 B are padding as well.
        /// </summary>
        [StructLayout(LayoutKind.Explicit, Size = (2 * CacheLine.Size) + 64)]
        private struct State
        {
            [FieldOffset(CacheLine.Size)]
            public Deadline? Head;

            [FieldOffset(CacheLine.Size + 8)]
            public Deadline? Tail;

            [FieldOffset(CacheLine.Size + 16)]
            public Deadline? Free;

            [FieldOffset(CacheLine.Size + 24)]
            public Deadline? Cursor;

            [FieldOffset(CacheLine.Size + 32)]
            public ITimer? Timer;

            [FieldOffset(CacheLine.Size + 40)]
            public long ArmedFor;

            [FieldOffset(CacheLine.Size + 48)]
            public int FreeCount;
        }
    }
}
