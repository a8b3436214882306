using Microsoft.Extensions.Time.Testing;

namespace Governance.Tests.Infrastructure;

/// <summary>
/// A <see cref="FakeTimeProvider"/> that also tells a test when a timer with a given due time has been created, so that
/// the test advances the clock only once the library is actually waiting on it (a retry delay, an ejection or break
/// timer, the pause between health-check rounds). Advancing before the timer exists would let it start later and never
/// fire. Timers created with an infinite due time (cancellation sources armed later with <c>CancelAfter</c>) are not
/// tracked by due time.
/// </summary>
/// <remarks>
/// It also counts the timers that fired (their callbacks run synchronously inside <see cref="FakeTimeProvider.Advance"/>,
/// so right after an advance the count says for certain whether anything was due), and keeps the <em>delays</em> that
/// are pending: one-shot timers armed when created whose callback is not a <see cref="CancellationTokenSource"/>'s
/// (<c>Task.Delay</c>, <c>Task.WaitAsync</c>, the library's own one-shot timers). Timeouts of work in flight
/// (<c>new CancellationTokenSource(timeout, timeProvider)</c>) are not delays: the code is not waiting for them to fire.
/// </remarks>
public sealed class ObservedTimeProvider : FakeTimeProvider
{
    private readonly object _gate = new();
    private readonly Dictionary<TimeSpan, int> _created = [];
    private readonly Dictionary<TimeSpan, int> _fired = [];
    private readonly List<(TimeSpan DueTime, int Count, TaskCompletionSource Reached)> _waits = [];
    private readonly HashSet<ObservedTimer> _delays = [];
    private readonly List<(TaskCompletionSource Pending, TimeSpan Within)> _delayWaiters = [];
    private int _firedTotal;

    /// <summary>Gets how many timers were created with <paramref name="dueTime"/> so far.</summary>
    public int TimersCreated(TimeSpan dueTime)
    {
        lock (_gate)
        {
            return _created.GetValueOrDefault(dueTime);
        }
    }

    /// <summary>Gets how many timer callbacks have run so far (every timer, timeouts included).</summary>
    public int TimersFired()
    {
        lock (_gate)
        {
            return _firedTotal;
        }
    }

    /// <summary>Gets how many times timers created with <paramref name="dueTime"/> have fired so far.</summary>
    public int TimersFired(TimeSpan dueTime)
    {
        lock (_gate)
        {
            return _fired.GetValueOrDefault(dueTime);
        }
    }

    /// <summary>Completes once <paramref name="count"/> timers with <paramref name="dueTime"/> have been created (already armed when it completes).</summary>
    public Task WaitForTimersAsync(TimeSpan dueTime, int count)
    {
        lock (_gate)
        {
            if (_created.GetValueOrDefault(dueTime) >= count)
            {
                return Task.CompletedTask;
            }

            var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waits.Add((dueTime, count, reached));
            return reached.Task;
        }
    }

    /// <summary>Completes once a delay is pending (already armed when it completes): the code under test waits on the clock.</summary>
    public Task WaitForDelayAsync() => WaitForDelayAsync(TimeSpan.MaxValue);

    /// <summary>
    /// Completes once a delay that is due within <paramref name="within"/> of the current time is pending (already armed
    /// when it completes), e.g. a retry delay while a much longer ejection timer is pending too.
    /// </summary>
    public Task WaitForDelayAsync(TimeSpan within)
    {
        lock (_gate)
        {
            var now = GetUtcNow();
            if (_delays.Any(d => d.Due - now <= within))
            {
                return Task.CompletedTask;
            }

            var pending = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _delayWaiters.Add((pending, within));
            return pending.Task;
        }
    }

    /// <summary>Advances the clock to the due time of the earliest pending delay, which fires it (and whatever else is due by then).</summary>
    public void AdvanceToNextDelay()
    {
        DateTimeOffset due;
        lock (_gate)
        {
            if (_delays.Count == 0)
            {
                throw new InvalidOperationException("No delay is pending.");
            }

            due = _delays.Min(d => d.Due);
        }

        var step = due - GetUtcNow();
        Advance(step > TimeSpan.Zero ? step : TimeSpan.Zero);
    }

    /// <summary>
    /// Advances the clock to the due time of the earliest pending delay when it is due within <paramref name="within"/>
    /// of the current time, which fires it; returns <see langword="false"/> (and leaves the clock alone) when none is.
    /// </summary>
    public bool TryAdvanceToNextDelay(TimeSpan within)
    {
        TimeSpan step;
        lock (_gate)
        {
            if (_delays.Count == 0)
            {
                return false;
            }

            step = _delays.Min(d => d.Due) - GetUtcNow();
            if (step > within)
            {
                return false;
            }
        }

        Advance(step > TimeSpan.Zero ? step : TimeSpan.Zero);
        return true;
    }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var observed = new ObservedTimer(this, dueTime);
        var isDelay = dueTime != Timeout.InfiniteTimeSpan && period == Timeout.InfiniteTimeSpan && state is not CancellationTokenSource;
        List<TaskCompletionSource>? reached = null;
        observed.Inner = base.CreateTimer(
            static s =>
            {
                var (timer, callback, state) = ((ObservedTimer, TimerCallback, object?))s!;
                timer.Owner.OnFired(timer);
                callback(state);
            },
            (observed, callback, state),
            dueTime,
            period);
        if (dueTime == Timeout.InfiniteTimeSpan)
        {
            return observed;
        }

        lock (_gate)
        {
            var count = _created.GetValueOrDefault(dueTime) + 1;
            _created[dueTime] = count;
            for (var i = _waits.Count - 1; i >= 0; i--)
            {
                if (_waits[i].DueTime == dueTime && _waits[i].Count <= count)
                {
                    (reached ??= []).Add(_waits[i].Reached);
                    _waits.RemoveAt(i);
                }
            }

            // A delay is pending only once its timer is armed, and not if it already fired (a zero due time may fire
            // at once). Its due time is read now, after the timer read the clock: when another thread moved the clock in
            // between, it is later than the timer's, never earlier, so advancing to it always fires the timer.
            if (isDelay && !observed.Ended)
            {
                observed.Due = GetUtcNow() + dueTime;
                _delays.Add(observed);
                for (var i = _delayWaiters.Count - 1; i >= 0; i--)
                {
                    if (dueTime <= _delayWaiters[i].Within)
                    {
                        (reached ??= []).Add(_delayWaiters[i].Pending);
                        _delayWaiters.RemoveAt(i);
                    }
                }
            }
        }

        reached?.ForEach(r => r.TrySetResult());
        return observed;
    }

    private void OnFired(ObservedTimer timer)
    {
        lock (_gate)
        {
            _firedTotal++;
            _fired[timer.CreatedDueTime] = _fired.GetValueOrDefault(timer.CreatedDueTime) + 1;
            timer.Ended = true;
            _delays.Remove(timer);
        }
    }

    private void OnChangedOrDisposed(ObservedTimer timer)
    {
        // A delay that is re-armed or disposed (a cancelled Task.Delay) is no longer a plain delay.
        lock (_gate)
        {
            timer.Ended = true;
            _delays.Remove(timer);
        }
    }

    private sealed class ObservedTimer(ObservedTimeProvider owner, TimeSpan createdDueTime) : ITimer
    {
        public ObservedTimeProvider Owner { get; } = owner;

        public TimeSpan CreatedDueTime { get; } = createdDueTime;

        public ITimer Inner { get; set; } = null!;

        public DateTimeOffset Due { get; set; }

        /// <summary>Gets or sets whether the timer fired, was re-armed or was disposed (written under the owner's lock).</summary>
        public bool Ended { get; set; }

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            Owner.OnChangedOrDisposed(this);
            return Inner.Change(dueTime, period);
        }

        public void Dispose()
        {
            Owner.OnChangedOrDisposed(this);
            Inner.Dispose();
        }

        public ValueTask DisposeAsync()
        {
            Owner.OnChangedOrDisposed(this);
            return Inner.DisposeAsync();
        }
    }
}
