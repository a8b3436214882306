using Governance.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Governance.Tests.LoadBalancing;

public sealed class RandomLoadBalancingPolicyTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Pick_ThreeEqualEndpoints_EachGetsAThird()
    {
        await using var servers = await ServerGroup.StartAsync("a", "b", "c");
        await using var governed = Governed.Create(Traffic.Settings("Random", servers.Servers));

        var answeredBy = await Traffic.SendParallelAsync(governed, 3000, concurrency: 16);

        var counts = Traffic.Count(answeredBy, servers.Servers);
        output.WriteLine(Traffic.Describe(counts));

        // sigma of a share = sqrt((1/3)(2/3)/3000) = 0.86 points; ±5 points is 5.8 sigma (false failure < 1e-8),
        // while an endpoint left out or doubled fails.
        Assert.All(counts.Values, c => Assert.InRange(c / 3000.0, 1 / 3.0 - 0.05, 1 / 3.0 + 0.05));
        Assert.All(servers.Servers, s => Assert.Equal(counts[s.Name], s.RequestCount));
    }

    [Fact]
    public async Task Pick_Weights3To1_Splits75To25Within5Percent()
    {
        await using var servers = await ServerGroup.StartAsync("heavy", "light");
        await using var governed = Governed.Create(Traffic.Settings("Random", servers.Servers, weights: [3, 1]));

        var answeredBy = await Traffic.SendParallelAsync(governed, 4000, concurrency: 16);

        var counts = Traffic.Count(answeredBy, servers.Servers);
        output.WriteLine(Traffic.Describe(counts));

        // sigma = sqrt(0.75 x 0.25 / 4000) = 0.68 points; the issue's ±5 points is 7.3 sigma. Ignoring weights gives 50%.
        Assert.InRange(counts["heavy"] / 4000.0, 0.70, 0.80);
    }

    [Fact]
    public async Task Pick_EndpointHoldsRequestsOpen_StillGetsItsThird()
    {
        // The control for PowerOfTwoChoicesLoadBalancingPolicyTests: the same scenario under a load-blind policy, which
        // shows that the scenario itself does not starve the held endpoint.
        var (answeredBy, heldInFlight) = await Traffic.SendWithOneEndpointHoldingAsync("Random", 1200, concurrency: 32);

        var counts = Traffic.Count(answeredBy, []);
        output.WriteLine($"{Traffic.Describe(counts)}; held had {heldInFlight} requests open at the end");

        // sigma = sqrt((1/3)(2/3)/1200) = 1.4 points; ±8 points is 5.9 sigma.
        Assert.InRange(counts.GetValueOrDefault("held") / 1200.0, (1 / 3.0) - 0.08, (1 / 3.0) + 0.08);
    }
}
