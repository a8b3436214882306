using System.Numerics;

namespace Governance.Resilience;

/// <summary>
/// A count that many cores add to at once on the request path and that is only summed on a rare path (a failure, a
/// retry decision, a timer tick). One shared counter would be one cache line written by every core on every call: each
/// write makes the other cores fetch the line again, which on two cores costs several times the rest of the call. Here
/// each core adds to its own stripe, picked by <see cref="Thread.GetCurrentProcessorId"/>, and <see cref="Sum"/> reads
/// every stripe.
/// <para>
/// Stripes are <see cref="CacheLine.Size"/> (128 B) apart, with 128 B of padding before the first and after the last,
/// as <c>ConcurrentQueue</c>'s <c>PaddedHeadAndTail</c> pads its head and tail: two stripes, or a stripe and anything else, are never in
/// the same pair of 64 B lines that adjacent-line prefetch moves together. Two threads may still share a stripe (more
/// threads than stripes, a stale processor id after a migration), so stripes are updated with
/// <see cref="Interlocked"/>; an uncontended interlocked add on a line the core already owns costs a few nanoseconds.
/// </para>
/// <para>
/// Counts that only grow (a long never wraps in practice) are never reset: windows keep the total at each bucket's start
/// and subtract. A count that also goes down (requests in flight) may be handed over to a single counter once with
/// <see cref="Seal"/>, after which <see cref="TryIncrement"/> and <see cref="TryDecrement"/> refuse. Memory: (<see cref="Stripes"/> + 2) x 128 B, that is 512 B on 2 cores and
/// at most 2,304 B (<see cref="MaxStripes"/> = 16 stripes, reached from 9 cores up).
/// </para>
/// </summary>
internal sealed class StripedCounter
{
    /// <summary>What <see cref="Seal"/> leaves in every stripe: so far below any count that an add landing on it is recognised.</summary>
    private const long Sealed = long.MinValue / 2;

    /// <summary>The most stripes a counter has, whatever the core count: bounds its memory and the cost of <see cref="Sum"/>.</summary>
    internal const int MaxStripes = 16;

    private readonly PaddedInt64[] _cells;
    private readonly int _mask;

    /// <summary>Initializes a counter with <see cref="DefaultStripes"/> stripes.</summary>
    public StripedCounter()
        : this(DefaultStripes)
    {
    }

    /// <summary>Initializes a counter with <paramref name="stripes"/> stripes (rounded up to a power of two), for tests and benchmarks.</summary>
    internal StripedCounter(int stripes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(stripes, 1);
        Stripes = (int)BitOperations.RoundUpToPowerOf2((uint)stripes);
        _mask = Stripes - 1;

        // Cell 0 and the last cell are padding: the first stripe is not next to the array's length (read by every
        // bounds check), the last one not next to whatever object the heap puts after the array.
        _cells = new PaddedInt64[Stripes + 2];
    }

    /// <summary>
    /// Gets the stripe count of a new counter: the processor count rounded up to a power of two (so that a processor id
    /// maps to a stripe with a mask), at most <see cref="MaxStripes"/>.
    /// </summary>
    public static int DefaultStripes { get; } = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Clamp(Environment.ProcessorCount, 1, MaxStripes));

    /// <summary>Gets the number of stripes.</summary>
    public int Stripes { get; }

    /// <summary>Adds one on the calling core's stripe: no allocation, no lock, no shared cache line.</summary>
    public void Increment() => Interlocked.Increment(ref _cells[1 + (Thread.GetCurrentProcessorId() & _mask)].Value);

    /// <summary>Adds one on the calling core's stripe; <see langword="false"/>, having added nothing, once the counter is sealed.</summary>
    public bool TryIncrement() => TryAdd(1);

    /// <summary>
    /// Subtracts one on the calling core's stripe (a stripe may go below zero: only the sum means anything);
    /// <see langword="false"/>, having subtracted nothing, once the counter is sealed.
    /// </summary>
    public bool TryDecrement() => TryAdd(-1);

    /// <summary>
    /// Seals the counter and returns its count, for a caller that counts in one place from now on: every stripe is
    /// swapped for a sealed value, atomically, so an add either lands before the swap (and is in the count returned) or
    /// after it (and is refused, so its caller counts it in the new place): none is lost or counted twice. Sealing again
    /// returns 0. <see cref="Sum"/> means nothing after sealing.
    /// </summary>
    public long Seal()
    {
        var cells = _cells;
        long sum = 0;
        for (var i = 1; i < cells.Length - 1; i++)
        {
            var value = Interlocked.Exchange(ref cells[i].Value, Sealed);
            if (value > Sealed / 2)
            {
                sum += value;
            }
        }

        return sum;
    }

    /// <summary>Adds one on stripe <paramref name="stripe"/> (modulo <see cref="Stripes"/>), for tests that must hit every stripe.</summary>
    internal void IncrementStripe(int stripe) => Interlocked.Increment(ref _cells[1 + (stripe & _mask)].Value);

    /// <summary>
    /// Gets the count: the sum of every stripe, each read once (volatile). Adds that run during the sum may or may not
    /// be in it; every add that finished before the sum started is.
    /// </summary>
    public long Sum()
    {
        var cells = _cells;
        long sum = 0;
        for (var i = 1; i < cells.Length - 1; i++)
        {
            sum += Volatile.Read(ref cells[i].Value);
        }

        return sum;
    }

    private bool TryAdd(long delta)
    {
        ref var cell = ref _cells[1 + (Thread.GetCurrentProcessorId() & _mask)].Value;
        if (Interlocked.Add(ref cell, delta) > Sealed / 2)
        {
            return true;
        }

        // Sealed: take the add back (the stripe stays sealed: nothing reads it again) and let the caller count elsewhere.
        Interlocked.Add(ref cell, -delta);
        return false;
    }
}
