namespace Governance.LoadBalancing;

/// <summary>
/// Least request by the power of two choices: two endpoints are sampled in proportion to weight and the one with fewer
/// in-flight requests per unit of weight wins, that is the one with the smaller (active + 1) / weight (Envoy's
/// least-request with an active-request bias of 1). O(1), lock-free, and without the herd effect of a global minimum.
/// </summary>
internal sealed class PowerOfTwoChoicesLoadBalancingPolicy : ILoadBalancingPolicy
{
    public string Name => LoadBalancingPolicyNames.LeastRequest;

    public IEndpointPicker CreatePicker(EndpointPickerContext context) =>
        new Picker(new WeightedSampler(context.Endpoints), context.Load, Weights(context.Endpoints));

    private static int[] Weights(IReadOnlyList<ServiceEndpoint> endpoints)
    {
        var weights = new int[endpoints.Count];
        for (var i = 0; i < weights.Length; i++)
        {
            weights[i] = endpoints[i].Weight;
        }

        return weights;
    }

    private sealed class Picker(WeightedSampler sampler, IEndpointLoad load, int[] weights) : IEndpointPicker
    {
        public int Pick(in PickContext context)
        {
            switch (weights.Length)
            {
                case 0:
                    return -1;
                case 1:
                    return 0;
            }

            var a = sampler.Sample();
            var b = sampler.Sample();
            if (a == b)
            {
                b = sampler.Sample();
                if (a == b)
                {
                    return a;
                }
            }

            // Compare (active_a + 1) / w_a with (active_b + 1) / w_b without dividing.
            var costA = (long)(load.GetActiveRequests(a) + 1) * weights[b];
            var costB = (long)(load.GetActiveRequests(b) + 1) * weights[a];
            return costA <= costB ? a : b;
        }
    }
}
