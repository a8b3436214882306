using System.IO.Hashing;
using System.Runtime.InteropServices;

namespace Governance.LoadBalancing;

/// <summary>
/// Consistent hashing with Google's Maglev lookup table (Eisenbud et al., NSDI 2016), weighted the way Envoy weights it.
/// The table has <see cref="TableSize"/> slots (a prime, Envoy's default); each endpoint fills slots in the order of its
/// own permutation, derived from stable hashes of its <c>scheme://host:port</c>, so every client process with the same
/// endpoints builds the same table whatever order discovery lists them in. A pick hashes the key (XxHash3 of its UTF-16
/// code units) and reads one slot: O(1), no allocation. Removing one of N endpoints remaps its own keys plus a small
/// extra share of others (measured in the tests). A retry that must avoid the endpoints a call tried hashes the key again
/// with the attempt (<see cref="PickContext.Attempt"/>), as Envoy's Maglev does. Requests without a key are spread by
/// weighted random.
/// </summary>
internal sealed class MaglevLoadBalancingPolicy : ILoadBalancingPolicy
{
    internal const int TableSize = 65537;

    /// <summary>The hash seeds of a retry's picks start here (seed 0 is a key's first pick, 2 its zone spill point).</summary>
    private const long RetrySeed = 0x5EED_0000;

    public string Name => LoadBalancingPolicyNames.ConsistentHash;

    public IEndpointPicker CreatePicker(EndpointPickerContext context) =>
        new Picker(BuildTable(context.Endpoints), new WeightedSampler(context.Endpoints));

    internal static int[] BuildTable(IReadOnlyList<ServiceEndpoint> endpoints)
    {
        var n = endpoints.Count;
        if (n == 0)
        {
            return [];
        }

        // Fill in a canonical order (by authority) so that the table does not depend on the order of the list.
        var order = new int[n];
        for (var i = 0; i < n; i++)
        {
            order[i] = i;
        }

        Array.Sort(order, (x, y) => StringComparer.OrdinalIgnoreCase.Compare(endpoints[x].Authority, endpoints[y].Authority));

        var offset = new long[n];
        var skip = new long[n];
        var next = new long[n];
        var claimed = new long[n];
        var maxWeight = 0;
        for (var k = 0; k < n; k++)
        {
            var endpoint = endpoints[order[k]];
            var key = MemoryMarshal.AsBytes(endpoint.Authority.ToUpperInvariant().AsSpan());
            offset[k] = (long)(XxHash3.HashToUInt64(key, seed: 0) % TableSize);
            skip[k] = (long)(XxHash3.HashToUInt64(key, seed: 1) % (TableSize - 1)) + 1;
            maxWeight = Math.Max(maxWeight, endpoint.Weight);
        }

        var table = new int[TableSize];
        Array.Fill(table, -1);
        var filled = 0;
        for (long round = 1; filled < TableSize; round++)
        {
            for (var k = 0; k < n && filled < TableSize; k++)
            {
                // An endpoint of weight w takes a turn in w of every maxWeight rounds.
                if (claimed[k] * maxWeight >= round * endpoints[order[k]].Weight)
                {
                    continue;
                }

                long slot;
                do
                {
                    slot = (offset[k] + (skip[k] * next[k])) % TableSize;
                    next[k]++;
                }
                while (table[slot] >= 0);

                table[slot] = order[k];
                claimed[k]++;
                filled++;
            }
        }

        return table;
    }

    internal static ulong Hash(string key, long seed = 0) => XxHash3.HashToUInt64(MemoryMarshal.AsBytes(key.AsSpan()), seed);

    private sealed class Picker(int[] table, WeightedSampler fallback) : IEndpointPicker
    {
        public int Pick(in PickContext context)
        {
            if (table.Length == 0)
            {
                return -1;
            }

            if (context.HashKey is not { } key)
            {
                return fallback.Sample();
            }

            // A retry's pick after the key's endpoint (and any alternate before) was tried: the key hashed again with
            // the attempt, so that its retries go to the same alternates, each as likely as its share of the table.
            var hash = context.Attempt == 0 ? Hash(key) : Hash(key, RetrySeed + context.Attempt);
            return table[(int)(hash % TableSize)];
        }
    }
}
