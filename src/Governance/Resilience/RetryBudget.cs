namespace Governance.Resilience;

/// <summary>
/// Caps retries to <c>RetryPercent</c> of the requests plus <c>MinRetriesPerSecond</c>, counted over a sliding window of
/// ten one-second buckets (the Linkerd/Finagle retry budget), so that a dead service receives at most that much extra
/// load instead of a multiple of it. Lock-free; a bucket that rolls over while another thread counts may lose a count,
/// which only makes the budget slightly more or less generous for that second.
/// </summary>
internal sealed class RetryBudget
{
    private const int Buckets = 10;
    private readonly TimeProvider _time;
    private readonly long _ticksPerBucket;
    private readonly double _ratio;
    private readonly int _reserve;
    private readonly long[] _epoch = new long[Buckets];
    private readonly int[] _requests = new int[Buckets];
    private readonly int[] _retries = new int[Buckets];

    public RetryBudget(TimeProvider time, double retryPercent, int minRetriesPerSecond)
    {
        _time = time;
        _ticksPerBucket = time.TimestampFrequency;
        _ratio = retryPercent / 100.0;
        _reserve = minRetriesPerSecond * Buckets;
        RetryPercent = retryPercent;
        MinRetriesPerSecond = minRetriesPerSecond;
    }

    public double RetryPercent { get; }

    public int MinRetriesPerSecond { get; }

    /// <summary>Counts a logical request (one per call, not per attempt).</summary>
    public void OnRequest() => OnRequest(_time.GetTimestamp());

    /// <summary>Counts a logical request that started at <paramref name="timestamp"/> (saves a clock read on the request path).</summary>
    public void OnRequest(long timestamp) => Interlocked.Increment(ref _requests[Bucket(timestamp, out _)]);

    /// <summary>Takes one retry from the budget; <see langword="false"/> when it is spent.</summary>
    public bool TryRetry()
    {
        var index = Bucket(_time.GetTimestamp(), out var now);
        long requests = 0;
        long retries = 0;
        for (var i = 0; i < Buckets; i++)
        {
            if (now - Volatile.Read(ref _epoch[i]) < Buckets)
            {
                requests += Volatile.Read(ref _requests[i]);
                retries += Volatile.Read(ref _retries[i]);
            }
        }

        if (retries >= _reserve + (_ratio * requests))
        {
            return false;
        }

        Interlocked.Increment(ref _retries[index]);
        return true;
    }

    private int Bucket(long timestamp, out long now)
    {
        now = timestamp / _ticksPerBucket;
        var index = (int)(now % Buckets);
        var epoch = Volatile.Read(ref _epoch[index]);
        if (epoch != now && Interlocked.CompareExchange(ref _epoch[index], now, epoch) == epoch)
        {
            Volatile.Write(ref _requests[index], 0);
            Volatile.Write(ref _retries[index], 0);
        }

        return index;
    }
}
