namespace Governance.Resilience;

/// <summary>
/// Caps retries to <c>RetryPercent</c> of the requests plus <c>MinRetriesPerSecond</c>, counted over a sliding window of
/// ten one-second buckets (the Linkerd/Finagle retry budget), so that a dead service receives at most that much extra
/// load instead of a multiple of it. Lock-free; a second that starts while another thread counts may put a request in
/// the neighbouring second or lose a retry, which only makes the budget slightly more or less generous for that second.
/// <para>
/// Every call counts a request, so requests go to a <see cref="StripedCounter"/> (the calling core's stripe, no cache
/// line shared with other cores), which only grows; each bucket keeps the request total when its second started, so
/// the requests of the window are the total now minus the start of its oldest bucket. Only <see cref="TryRetry"/> (a
/// retry or hedge decision) and the first request of each second sum the stripes. Retries are rare and stay plain
/// per-bucket counts. Memory: the striped counter ((stripes + 2) x 128 B: 512 B on 2 cores, at most 2,304 B) and ten
/// buckets, per service policy.
/// </para>
/// </summary>
internal sealed class RetryBudget
{
    private const int Buckets = 10;
    private readonly TimeProvider _time;
    private readonly long _ticksPerBucket;
    private readonly double _ratio;
    private readonly int _reserve;
    private readonly StripedCounter _requests;

    /// <summary>The second each bucket holds (<see cref="long.MinValue"/> when unused).</summary>
    private readonly long[] _epoch = new long[Buckets];

    /// <summary>The request total when each bucket's second started.</summary>
    private readonly long[] _requestsBefore = new long[Buckets];

    private readonly int[] _retries = new int[Buckets];

    /// <summary>The latest second counted, written once a second.</summary>
    private long _second = long.MinValue;

    /// <summary>
    /// The timestamp at which the second after <see cref="_second"/> starts: read by every request, which compares its
    /// timestamp with it instead of dividing (a 64-bit division costs tens of cycles on the request path).
    /// </summary>
    private long _nextSecondStarts = long.MinValue;

    /// <summary>Initializes a budget counting requests on <see cref="StripedCounter.DefaultStripes"/> stripes.</summary>
    /// <param name="time">The service's clock (one-second buckets of its timestamps).</param>
    /// <param name="retryPercent">The retries allowed, as a percentage of the requests in the window.</param>
    /// <param name="minRetriesPerSecond">The retries allowed per second whatever the requests (ten seconds' worth per window).</param>
    public RetryBudget(TimeProvider time, double retryPercent, int minRetriesPerSecond)
        : this(time, retryPercent, minRetriesPerSecond, new StripedCounter())
    {
    }

    /// <summary>Initializes a budget that counts requests in <paramref name="requests"/> (tests choose its stripe count).</summary>
    internal RetryBudget(TimeProvider time, double retryPercent, int minRetriesPerSecond, StripedCounter requests)
    {
        _time = time;
        _ticksPerBucket = time.TimestampFrequency;
        _ratio = retryPercent / 100.0;
        _reserve = minRetriesPerSecond * Buckets;
        _requests = requests;
        Array.Fill(_epoch, long.MinValue);
        RetryPercent = retryPercent;
        MinRetriesPerSecond = minRetriesPerSecond;
    }

    /// <summary>Gets the retries allowed as a percentage of the requests (compared on reload to keep the budget).</summary>
    public double RetryPercent { get; }

    /// <summary>Gets the retries allowed per second whatever the requests (compared on reload to keep the budget).</summary>
    public int MinRetriesPerSecond { get; }

    /// <summary>Counts a logical request (one per call, not per attempt).</summary>
    public void OnRequest() => OnRequest(_time.GetTimestamp());

    /// <summary>Counts a logical request that started at <paramref name="timestamp"/> (saves a clock read on the request path).</summary>
    public void OnRequest(long timestamp)
    {
        if (timestamp >= Volatile.Read(ref _nextSecondStarts))
        {
            Roll(timestamp / _ticksPerBucket);
        }

        _requests.Increment();
    }

    /// <summary>Takes one retry from the budget; <see langword="false"/> when it is spent.</summary>
    public bool TryRetry()
    {
        var now = _time.GetTimestamp() / _ticksPerBucket;
        if (now > Volatile.Read(ref _second))
        {
            Roll(now);
        }

        // Read the buckets before the total, so that a request counted meanwhile is in the total, never lost.
        long retries = 0;
        var oldest = long.MaxValue;
        long requestsBefore = 0;
        for (var i = 0; i < Buckets; i++)
        {
            var epoch = Volatile.Read(ref _epoch[i]);
            if (epoch > now - Buckets)
            {
                retries += Volatile.Read(ref _retries[i]);
                if (epoch < oldest)
                {
                    oldest = epoch;
                    requestsBefore = Volatile.Read(ref _requestsBefore[i]);
                }
            }
        }

        long requests = oldest == long.MaxValue ? 0 : Math.Max(0, _requests.Sum() - requestsBefore);
        if (retries >= _reserve + (_ratio * requests))
        {
            return false;
        }

        // The latest second's bucket (this one's, unless another thread's clock is already in the next second).
        Interlocked.Increment(ref _retries[Slot(Volatile.Read(ref _second))]);
        return true;
    }

    private static int Slot(long second) => (int)(((second % Buckets) + Buckets) % Buckets);

    /// <summary>Starts the bucket of <paramref name="second"/> unless a later second already started (only the thread that moves <see cref="_second"/> does).</summary>
    private void Roll(long second)
    {
        var seen = Volatile.Read(ref _second);
        while (second > seen)
        {
            var prior = Interlocked.CompareExchange(ref _second, second, seen);
            if (prior == seen)
            {
                // Unused while it is rewritten, then published with its new second last.
                var slot = Slot(second);
                Volatile.Write(ref _epoch[slot], long.MinValue);
                Volatile.Write(ref _requestsBefore[slot], _requests.Sum());
                Volatile.Write(ref _retries[slot], 0);
                Volatile.Write(ref _epoch[slot], second);
                break;
            }

            seen = prior;
        }

        // Racing rolls may write an older boundary after a newer one; the next request then rolls again (a no-op past
        // the compare-and-swap) and moves it forward.
        Volatile.Write(ref _nextSecondStarts, (Volatile.Read(ref _second) + 1) * _ticksPerBucket);
    }
}
