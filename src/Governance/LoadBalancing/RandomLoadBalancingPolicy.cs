namespace Governance.LoadBalancing;

/// <summary>Weighted random: every request independently picks an endpoint with probability weight / total weight.</summary>
internal sealed class RandomLoadBalancingPolicy : ILoadBalancingPolicy
{
    public string Name => LoadBalancingPolicyNames.Random;

    public IEndpointPicker CreatePicker(EndpointPickerContext context) => new Picker(new WeightedSampler(context.Endpoints));

    private sealed class Picker(WeightedSampler sampler) : IEndpointPicker
    {
        public int Pick(in PickContext context) => sampler.Count == 0 ? -1 : sampler.Sample();
    }
}
