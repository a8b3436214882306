namespace Governance.LoadBalancing;

/// <summary>
/// Smooth weighted round robin. The interleaved schedule (for weights 5, 1, 1: a a b a c a a, never a a a a a b c) is
/// computed once per endpoint set by earliest-deadline-first, which yields the same smooth order as nginx's algorithm;
/// a pick is then one atomic increment and an array read. Each picker starts at a random point of the schedule so that
/// many clients do not all begin on the same endpoint. Schedules longer than <see cref="MaxScheduleLength"/> slots are
/// built from weights scaled down proportionally (largest remainder, every endpoint keeps at least one slot).
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
        var length = Math.Max(MaxScheduleLength, n);
        if (total > length)
        {
            total = Scale(weights, total, length);
        }

        // Earliest deadline first: endpoint i is due every 1/w[i]; ties go to the lower index.
        var schedule = new int[total];
        var queue = new PriorityQueue<int, (double Deadline, int Index)>(n);
        for (var i = 0; i < n; i++)
        {
            queue.Enqueue(i, (1.0 / weights[i], i));
        }

        for (var slot = 0; slot < schedule.Length; slot++)
        {
            queue.TryDequeue(out var index, out var priority);
            schedule[slot] = index;
            queue.Enqueue(index, (priority.Deadline + (1.0 / weights[index]), index));
        }

        return schedule;
    }

    private static long Scale(long[] weights, long total, int length)
    {
        var scaledTotal = 0L;
        var remainders = new (double Remainder, int Index)[weights.Length];
        for (var i = 0; i < weights.Length; i++)
        {
            var exact = (double)weights[i] * length / total;
            var floor = Math.Max(1L, (long)exact);
            remainders[i] = (exact - floor, i);
            weights[i] = floor;
            scaledTotal += floor;
        }

        Array.Sort(remainders, static (x, y) => y.Remainder.CompareTo(x.Remainder));
        for (var k = 0; k < remainders.Length && scaledTotal < length; k++)
        {
            if (remainders[k].Remainder > 0)
            {
                weights[remainders[k].Index]++;
                scaledTotal++;
            }
        }

        return scaledTotal;
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
        private int _next;

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
                _ => schedule[(int)((uint)Interlocked.Increment(ref _next) % (uint)schedule.Length)],
            };
        }
    }
}
