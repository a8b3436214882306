using Microsoft.Extensions.Time.Testing;

namespace Governance.Tests.Infrastructure;

/// <summary>
/// A <see cref="FakeTimeProvider"/> that also tells a test when a timer with a given due time has been created, so that
/// the test advances the clock only once the library is actually waiting on it (a retry delay, an ejection or break
/// timer, the pause between health-check rounds). Advancing before the timer exists would let it start later and never
/// fire. Timers created with an infinite due time (cancellation sources armed later with <c>CancelAfter</c>) are not
/// tracked by due time.
/// </summary>
public sealed class ObservedTimeProvider : FakeTimeProvider
{
    private readonly object _gate = new();
    private readonly Dictionary<TimeSpan, int> _created = [];
    private readonly List<(TimeSpan DueTime, int Count, TaskCompletionSource Reached)> _waits = [];

    /// <summary>Gets how many timers were created with <paramref name="dueTime"/> so far.</summary>
    public int TimersCreated(TimeSpan dueTime)
    {
        lock (_gate)
        {
            return _created.GetValueOrDefault(dueTime);
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

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var timer = base.CreateTimer(callback, state, dueTime, period);
        if (dueTime == Timeout.InfiniteTimeSpan)
        {
            return timer;
        }

        List<TaskCompletionSource>? reached = null;
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
        }

        reached?.ForEach(r => r.TrySetResult());
        return timer;
    }
}
