using Governance.LoadBalancing;
using Xunit.Abstractions;

namespace Governance.Tests.LoadBalancing;

public sealed class WeightedSamplerTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(new[] { 1, 1, 1 })]
    [InlineData(new[] { 3, 1 })]
    [InlineData(new[] { 5, 3, 1, 1 })]
    [InlineData(new[] { 1, 2, 3, 4, 5, 6, 7 })]
    [InlineData(new[] { 100, 1, 10 })]
    public void Sample_Weights_FrequenciesProportionalToWeight(int[] weights)
    {
        const int Samples = 200_000;
        var sampler = new WeightedSampler(Endpoints(weights));
        var counts = new int[weights.Length];
        for (var i = 0; i < Samples; i++)
        {
            counts[sampler.Sample()]++;
        }

        var total = weights.Sum();
        for (var i = 0; i < weights.Length; i++)
        {
            // Binomial: sigma = sqrt(p (1 - p) / n); the tolerance is 6 sigma (at most 0.0034 for p = 1/2), so a false
            // failure has odds below 1e-8 per column, while a column off by even one percentage point fails.
            var p = (double)weights[i] / total;
            var share = (double)counts[i] / Samples;
            var tolerance = 6 * Math.Sqrt(p * (1 - p) / Samples);
            output.WriteLine($"weight {weights[i]}: expected {p:P3}, measured {share:P3} (tolerance ±{tolerance:P3})");
            Assert.InRange(share, p - tolerance, p + tolerance);
        }
    }

    [Fact]
    public void Sample_ExtremeWeights_LightEndpointStillSampledAtItsTinyRate()
    {
        // Weight 1 against 65,535 (the maximum): p = 1/65,536, so 1,000,000 samples expect 15.3 light picks
        // (Poisson; P(0) = 2e-7, P(more than 60) < 1e-15). Zero would mean the threshold rounded the column away.
        const int Samples = 1_000_000;
        var sampler = new WeightedSampler(Endpoints([65535, 1]));
        var light = 0;
        for (var i = 0; i < Samples; i++)
        {
            light += sampler.Sample();
        }

        output.WriteLine($"light picks: {light} of {Samples} (expected 15.3)");
        Assert.InRange(light, 1, 60);
    }

    [Fact]
    public void Sample_SingleEndpoint_AlwaysZero()
    {
        var sampler = new WeightedSampler(Endpoints([7]));

        Assert.Equal(1, sampler.Count);
        for (var i = 0; i < 1000; i++)
        {
            Assert.Equal(0, sampler.Sample());
        }
    }

    internal static ServiceEndpoint[] Endpoints(int[] weights) =>
        [.. weights.Select((w, i) => new ServiceEndpoint(new Uri($"http://10.0.{i / 250}.{(i % 250) + 1}:8080"), w))];
}
