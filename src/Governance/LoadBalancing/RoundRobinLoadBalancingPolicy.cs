namespace Governance.LoadBalancing;

/// <summary>
/// Smooth weighted round robin (nginx's algorithm): for weights 5, 1, 1 the order is a a b a c a a, never
/// a a a a a b c, and after any number of picks every endpoint is within one pick of its weighted share. The schedule
/// (one period of the sequence, sum of weights / their gcd) is computed once per endpoint set; a pick is then one atomic
/// increment and an array read. Each picker starts at a random point of the schedule so that many clients do not all
/// begin on the same endpoint. Schedules longer than <see cref="MaxScheduleLength"/> slots (or, above 1,024 endpoints,
/// than 2^26 / endpoints, which keeps the build near 2^26 steps up to 8,192 endpoints) are built from weights scaled
/// down by one factor (equal weights keep equal slots, every endpoint at least one: with few slots per endpoint small
/// weights get more than their share).
/// </summary>
internal sealed class RoundRobinLoadBalancingPolicy : ILoadBalancingPolicy
{
    internal const int MaxScheduleLength = 65536;

    public string Name => LoadBalancingPolicyNames.RoundRobin;

    public IEndpointPicker CreatePicker(EndpointPickerContext context) => new Picker(BuildSchedule(context.Endpoints));

    internal static int[] BuildSchedule(IReadOnlyList<ServiceEndpoint> endpoints)
    {
        var n = endpoints.Count;
        if (n == 0)
        {
            return [];
        }

        var weights = new long[n];
        long gcd = 0;
        long total = 0;
        for (var i = 0; i < n; i++)
        {
            weights[i] = endpoints[i].Weight;
            gcd = Gcd(gcd, weights[i]);
            total += weights[i];
        }

        for (var i = 0; i < n; i++)
        {
            weights[i] /= gcd;
        }

        total /= gcd;
        // Keep the build near 2^26 steps: fewer slots per endpoint when there are very many endpoints (above 8,192 each
        // has about one, and the build grows with the square of their number).
        var length = Math.Max(n, Math.Min(MaxScheduleLength, (1 << 26) / n));
        if (total > length)
        {
            total = Scale(weights, total, length);
        }

        // nginx: every endpoint gains its weight, the richest is picked and pays the total. O(length x n) once per set.
        var schedule = new int[total];
        var current = new long[n];
        for (var slot = 0; slot < schedule.Length; slot++)
        {
            var best = 0;
            for (var i = 0; i < n; i++)
            {
                current[i] += weights[i];
                if (current[i] > current[best])
                {
                    best = i;
                }
            }

            current[best] -= total;
            schedule[slot] = best;
        }

        return schedule;
    }

    /// <summary>
    /// Scales <paramref name="weights"/> (reduced, summing to <paramref name="total"/>) into at most <paramref name="length"/>
    /// slots: one factor for every weight, so that endpoints of equal weight keep equal slots (and a larger weight never
    /// gets fewer), every endpoint at least one; then the slots left go, a whole weight class at a time, to the classes
    /// whose exact share lost most. Returns the schedule's length.
    /// </summary>
    private static long Scale(long[] weights, long total, int length)
    {
        var original = (long[])weights.Clone();

        // The largest factor whose slots fit (every endpoint at least one; all ones fit, as length >= n), by bisection:
        // length / total fits unless the one-slot floor of small weights goes over.
        var factor = (double)length / total;
        if (Slots(original, factor, weights) > length)
        {
            var (low, high) = (0.0, factor);
            for (var i = 0; i < 64; i++)
            {
                var middle = (low + high) / 2;
                (low, high) = Slots(original, middle, weights) <= length ? (middle, high) : (low, middle);
            }

            factor = low;
        }

        var scaledTotal = Slots(original, factor, weights);

        // Weight classes: (remainder lost to the floor, weight, size), largest remainder first.
        var classes = new Dictionary<long, (double Remainder, int Size)>();
        for (var i = 0; i < weights.Length; i++)
        {
            var remainder = (original[i] * factor) - weights[i];
            classes[original[i]] = (remainder, classes.TryGetValue(original[i], out var c) ? c.Size + 1 : 1);
        }

        var order = new List<KeyValuePair<long, (double Remainder, int Size)>>(classes);
        order.Sort(static (x, y) => y.Value.Remainder.CompareTo(x.Value.Remainder) is var byRemainder && byRemainder != 0 ? byRemainder : y.Key.CompareTo(x.Key));
        foreach (var (weight, (remainder, size)) in order)
        {
            // Stop at the first class that does not fit: skipping it for one further down could give a smaller weight
            // more slots than a larger one with the same floor (whose remainder is larger).
            if (remainder <= 0 || scaledTotal + size > length)
            {
                break;
            }

            for (var i = 0; i < weights.Length; i++)
            {
                weights[i] += original[i] == weight ? 1 : 0;
            }

            scaledTotal += size;
        }

        return scaledTotal;
    }

    /// <summary>Each weight's slots at <paramref name="factor"/> (at least one) into <paramref name="slots"/>; returns their sum.</summary>
    private static long Slots(long[] weights, double factor, long[] slots)
    {
        var sum = 0L;
        for (var i = 0; i < weights.Length; i++)
        {
            slots[i] = Math.Max(1L, (long)(weights[i] * factor));
            sum += slots[i];
        }

        return sum;
    }

    private static long Gcd(long a, long b)
    {
        while (b != 0)
        {
            (a, b) = (b, a % b);
        }

        return a;
    }

    private sealed class Picker : IEndpointPicker
    {
        private readonly int[] _schedule;
        private long _next;

        public Picker(int[] schedule)
        {
            _schedule = schedule;
            _next = schedule.Length == 0 ? 0 : Random.Shared.Next(schedule.Length);
        }

        public int Pick(in PickContext context)
        {
            var schedule = _schedule;
            return schedule.Length switch
            {
                0 => -1,
                1 => schedule[0],
                _ => schedule[(int)((ulong)Interlocked.Increment(ref _next) % (ulong)schedule.Length)],
            };
        }
    }
}
