namespace Governance.LoadBalancing;

/// <summary>
/// Least request by the power of two choices (Mitzenmacher), weight-aware: two different candidates are sampled in
/// proportion to weight and the one with fewer requests in flight per unit of weight wins (on a tie, the first sample). With nothing in
/// flight this is exactly weighted random; under load, equally fast endpoints hold requests in proportion to the traffic
/// they get, so comparing in-flight counts per unit of weight keeps the split at the weights (comparing raw counts would
/// pull it towards equal shares: 3:1 weights served about 53:47 with 64 requests in flight), and a slow or stuck endpoint
/// accumulates in-flight requests and loses the comparisons. When one of two candidates of unequal weights is idle (it
/// would win whatever the weights, so a light endpoint would take about one request in flight whenever compared), they
/// share the pick in proportion to weight / (in flight + 1), Envoy's effective weight. O(1), lock-free, no allocation,
/// and free of the herd effect of always choosing the global minimum.
/// </summary>
internal sealed class PowerOfTwoChoicesLoadBalancingPolicy : ILoadBalancingPolicy
{
    public string Name => LoadBalancingPolicyNames.LeastRequest;

    public IEndpointPicker CreatePicker(EndpointPickerContext context) =>
        new Picker(new WeightedSampler(context.Endpoints), context.Load, Weights(context.Endpoints));

    /// <summary>The endpoints' weights, or <see langword="null"/> when they are all equal (then raw counts compare alike).</summary>
    private static int[]? Weights(IReadOnlyList<ServiceEndpoint> endpoints)
    {
        var weights = new int[endpoints.Count];
        var uniform = true;
        for (var i = 0; i < weights.Length; i++)
        {
            weights[i] = endpoints[i].Weight;
            uniform &= weights[i] == weights[0];
        }

        return uniform ? null : weights;
    }

    private sealed class Picker(WeightedSampler sampler, IEndpointLoad load, int[]? weights) : IEndpointPicker
    {
        public int Pick(in PickContext context)
        {
            switch (sampler.Count)
            {
                case 0:
                    return -1;
                case 1:
                    return 0;
            }

            // Two different candidates: a pair drawn twice would go to that endpoint without any comparison, so a stuck
            // endpoint would keep its weight's square of the traffic (1 in 4 of two equal ones). The second is drawn by
            // weight again; after a second clash (likely only when one weight dominates) it is any other endpoint.
            var a = sampler.Sample();
            var b = sampler.Sample();
            if (a == b)
            {
                b = sampler.Sample();
                if (a == b)
                {
                    b = (a + 1 + Random.Shared.Next(sampler.Count - 1)) % sampler.Count;
                }
            }

            var activeA = load.GetActiveRequests(a);
            var activeB = load.GetActiveRequests(b);
            if (weights is null)
            {
                return activeB < activeA ? b : a;
            }

            long weightA = weights[a], weightB = weights[b];
            if (weightA != weightB && (activeA == 0) != (activeB == 0))
            {
                // One of two unequal endpoints is idle (both idle: the first sample, drawn by weight, wins, so that with
                // nothing in flight the pick stays exactly weighted random): per unit of weight it would always win, so a light endpoint would
                // take about one request in flight whenever it is compared (a weight-1 canary beside weight 99: a quarter
                // of the calls with four in flight). The two share the pick in proportion to weight / (in flight + 1)
                // instead (Envoy's effective weight for unequal weights), which keeps the weights with little in flight.
                var effectiveA = weightA * (activeB + 1);
                var effectiveB = weightB * (activeA + 1);
                return Random.Shared.NextInt64(effectiveA + effectiveB) < effectiveA ? a : b;
            }

            // b wins when activeB / weightB < activeA / weightA, compared without division (weights are at least 1).
            return activeB * weightA < activeA * weightB ? b : a;
        }
    }
}
