using System.Collections.Concurrent;

namespace Governance.Resilience;

/// <summary>
/// Reusable cancellation sources whose timers run on the configured <see cref="TimeProvider"/>, so that attempt and total
/// timeouts cost no allocation per request in steady state and follow a fake clock in tests.
/// </summary>
internal sealed class CancellationTokenSourcePool(TimeProvider time)
{
    private const int MaxPooled = 1024;
    private readonly ConcurrentQueue<CancellationTokenSource> _pool = new();
    private int _count;

    public CancellationTokenSource Rent(TimeSpan delay)
    {
        if (_pool.TryDequeue(out var source))
        {
            Interlocked.Decrement(ref _count);
        }
        else
        {
            source = new CancellationTokenSource(Timeout.InfiniteTimeSpan, time);
        }

        source.CancelAfter(delay);
        return source;
    }

    public void Return(CancellationTokenSource source)
    {
        // A source that fired cannot be reset; it is dropped.
        if (source.TryReset() && Interlocked.Increment(ref _count) <= MaxPooled)
        {
            _pool.Enqueue(source);
            return;
        }

        source.Dispose();
    }
}
