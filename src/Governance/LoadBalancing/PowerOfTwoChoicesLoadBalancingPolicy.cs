namespace Governance.LoadBalancing;

/// <summary>
/// Least request by the power of two choices (Mitzenmacher), weight-aware: two candidates are sampled in proportion to
/// weight and the one with fewer requests in flight wins (on a tie, the first sample). With nothing in flight this is
/// exactly weighted random, so weights are honoured; under load, a slow or stuck endpoint accumulates in-flight requests
/// and loses the comparisons. O(1), lock-free, and free of the herd effect of always choosing the global minimum.
/// </summary>
internal sealed class PowerOfTwoChoicesLoadBalancingPolicy : ILoadBalancingPolicy
{
    public string Name => LoadBalancingPolicyNames.LeastRequest;

    public IEndpointPicker CreatePicker(EndpointPickerContext context) =>
        new Picker(new WeightedSampler(context.Endpoints), context.Load);

    private sealed class Picker(WeightedSampler sampler, IEndpointLoad load) : IEndpointPicker
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

            return load.GetActiveRequests(b) < load.GetActiveRequests(a) ? b : a;
        }
    }
}
