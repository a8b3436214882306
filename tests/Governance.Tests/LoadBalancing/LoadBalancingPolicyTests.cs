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
            // Equal weights, equal backends: each endpoint's share is a third. Random and ConsistentHash (distinct keys over
            // Maglev's evenly filled table) sample it: sigma 0.75 point, so ±5 points is 6.7 sigma. LeastRequest follows
            // the in-flight counts of endpoints that answer alike: ±8 points, room for a backend that stalls a moment.
            var tolerance = policy == "LeastRequest" ? 0.08 : 0.05;
            Assert.All(counts.Values, c => Assert.InRange(c / (double)Requests, (1 / 3.0) - tolerance, (1 / 3.0) + tolerance));
        }
    }
}
