namespace Governance.LoadBalancing;

/// <summary>
/// Samples an index in proportion to integer weights in O(1) with Vose's alias method: one 63-bit random number per
/// sample (the high half picks a column, the low half decides between the column and its alias), no allocation.
/// </summary>
internal sealed class WeightedSampler
{
    private readonly uint[] _threshold;
    private readonly int[] _alias;
    private readonly bool _uniform;

    public WeightedSampler(IReadOnlyList<ServiceEndpoint> endpoints)
    {
        var n = endpoints.Count;
        Count = n;
        _threshold = new uint[n];
        _alias = new int[n];
        long total = 0;
        var uniform = true;
        for (var i = 0; i < n; i++)
        {
            total += endpoints[i].Weight;
            uniform &= endpoints[i].Weight == endpoints[0].Weight;
        }

        _uniform = uniform;
        if (uniform || n == 0)
        {
            return;
        }

        // Scaled probabilities: p[i] = w[i] * n / total; columns below 1 borrow from columns above 1.
        var scaled = new double[n];
        var small = new Stack<int>();
        var large = new Stack<int>();
        for (var i = 0; i < n; i++)
        {
            scaled[i] = (double)endpoints[i].Weight * n / total;
            (scaled[i] < 1.0 ? small : large).Push(i);
        }

        while (small.Count > 0 && large.Count > 0)
        {
            var s = small.Pop();
            var l = large.Pop();
            _threshold[s] = ToThreshold(scaled[s]);
            _alias[s] = l;
            scaled[l] = scaled[l] + scaled[s] - 1.0;
            (scaled[l] < 1.0 ? small : large).Push(l);
        }

        while (large.Count > 0)
        {
            var l = large.Pop();
            _threshold[l] = uint.MaxValue;
            _alias[l] = l;
        }

        while (small.Count > 0)
        {
            // Only reachable through rounding: the column is full.
            var s = small.Pop();
            _threshold[s] = uint.MaxValue;
            _alias[s] = s;
        }
    }

    public int Count { get; }

    public int Sample()
    {
        // 63 random bits: bits 32-62 choose the column, bits 0-31 decide column or alias.
        var random = (ulong)Random.Shared.NextInt64();
        var column = (int)(((random >> 32) * (ulong)(uint)Count) >> 31);
        if (_uniform)
        {
            return column;
        }

        return (uint)random < _threshold[column] ? column : _alias[column];
    }

    private static uint ToThreshold(double probability) =>
        probability >= 1.0 ? uint.MaxValue : (uint)(probability * 4294967296.0);
}
