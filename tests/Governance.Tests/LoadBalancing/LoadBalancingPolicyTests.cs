using Governance.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Governance.Tests.LoadBalancing;

/// <summary>What every built-in <see cref="Governance.LoadBalancing.ILoadBalancingPolicy"/> owes under concurrency.</summary>
public sealed class LoadBalancingPolicyTests(ITestOutputHelper output)
{
    private const int Requests = 4000;

    [Theory]
    [InlineData("RoundRobin")]
    [InlineData("Random")]
    [InlineData("LeastRequest")]
    [InlineData("ConsistentHash")]
    public async Task Pick_ThousandsOfParallelRequests_NoErrorsCountsAddUpNothingLeftInFlight(string policy)
    {
        await using var servers = await ServerGroup.StartAsync("a", "b", "c");
        await using var governed = Governed.Create(Traffic.Settings(policy, servers.Servers));

        // 4,000 requests, 64 in flight; ConsistentHash gets a distinct key per request. Any exception fails the test.
        var answeredBy = await Traffic.SendParallelAsync(governed, Requests, concurrency: 64, key: i => $"user-{i}");

        var counts = Traffic.Count(answeredBy, servers.Servers);
        output.WriteLine($"{policy}: {Traffic.Describe(counts)}");

        Assert.Equal(Requests, servers.Servers.Sum(s => s.RequestCount));
        Assert.All(servers.Servers, s => Assert.Equal(counts[s.Name], s.RequestCount));
        Assert.All(servers.Servers, s => Assert.Equal(0, Traffic.State(governed, s).ActiveRequests));
        if (policy == "RoundRobin")
        {
            // One atomic counter: concurrent picks still walk the schedule exactly (4,000 = 1,333 x 3 + 1).
            Assert.InRange(counts.Values.Max() - counts.Values.Min(), 0, 1);
        }
        else
        {
            // Every endpoint takes part: an equal share is 33%; 10% is far below any sampling noise (sigma 0.75 point).
            Assert.All(counts.Values, c => Assert.True(c >= Requests / 10, $"an endpoint got only {c} of {Requests} requests"));
        }
    }
}
