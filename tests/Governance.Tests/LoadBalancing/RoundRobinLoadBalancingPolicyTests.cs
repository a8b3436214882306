using Governance.LoadBalancing;
using Governance.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Governance.Tests.LoadBalancing;

public sealed class RoundRobinLoadBalancingPolicyTests(ITestOutputHelper output)
{
    [Fact]
    public void BuildSchedule_Weights5_1_1_IsTheDocumentedSmoothOrder()
    {
        // The class documentation promises "a a b a c a a, never a a a a a b c" (nginx's smooth weighted round robin).
        var schedule = Schedule(5, 1, 1);
        output.WriteLine($"schedule for 5,1,1: {string.Join(' ', schedule)}");

        Assert.Equal([0, 0, 1, 0, 2, 0, 0], schedule);
    }

    [Theory]
    [InlineData(new[] { 3, 1 })]
    [InlineData(new[] { 5, 1, 1 })]
    [InlineData(new[] { 1, 1, 1 })]
    [InlineData(new[] { 2, 3, 4 })]
    [InlineData(new[] { 7, 3, 2, 1 })]
    [InlineData(new[] { 1, 7, 17, 15, 19, 1 })]
    public void BuildSchedule_AnyWeights_EveryPrefixWithinOnePickOfItsShare(int[] weights)
    {
        // Smoothness, the property nginx's algorithm has (its worst case over these and 3,000 random weight sets is
        // exactly 1): after any k picks, endpoint i has k * w_i / W picks, give or take less than one more.
        var schedule = Schedule(weights);
        var total = weights.Sum();
        var counts = new int[weights.Length];
        var worst = 0.0;
        for (var k = 1; k <= schedule.Length; k++)
        {
            counts[schedule[k - 1]]++;
            for (var i = 0; i < weights.Length; i++)
            {
                worst = Math.Max(worst, Math.Abs(counts[i] - ((double)k * weights[i] / total)));
            }
        }

        output.WriteLine($"weights {string.Join(',', weights)}: schedule {string.Join(' ', schedule)}; worst prefix deviation {worst:F3} picks");
        Assert.True(worst <= 1.0 + 1e-9, $"worst prefix deviation {worst:F3} picks exceeds 1 for weights {string.Join(',', weights)}: {string.Join(' ', schedule)}");
    }

    [Theory]
    [InlineData(new[] { 3, 1 }, new[] { 3, 1 })]
    [InlineData(new[] { 2, 4, 6 }, new[] { 1, 2, 3 })]
    [InlineData(new[] { 5, 5, 5 }, new[] { 1, 1, 1 })]
    [InlineData(new[] { 7 }, new[] { 1 })]
    public void BuildSchedule_IntegerWeights_OneCycleWithReducedWeights(int[] weights, int[] expectedCounts)
    {
        var schedule = Schedule(weights);

        var counts = new int[weights.Length];
        foreach (var index in schedule)
        {
            counts[index]++;
        }

        Assert.Equal(expectedCounts, counts);
    }

    [Fact]
    public void BuildSchedule_TotalWeightAboveMaximumLength_ScalesProportionallyKeepingEveryEndpoint()
    {
        int[] weights = [65535, 40000, 1, 3];
        var schedule = Schedule(weights);

        var counts = new int[weights.Length];
        foreach (var index in schedule)
        {
            counts[index]++;
        }

        output.WriteLine($"length {schedule.Length}, counts {string.Join(',', counts)}");
        Assert.True(schedule.Length <= RoundRobinLoadBalancingPolicy.MaxScheduleLength);
        Assert.All(counts, c => Assert.True(c >= 1));

        // Largest remainder: each count is within one slot of its exact proportional share of the schedule.
        var total = weights.Sum();
        for (var i = 0; i < weights.Length; i++)
        {
            var exact = (double)weights[i] * schedule.Length / total;
            Assert.True(Math.Abs(counts[i] - exact) <= 1.0, $"endpoint {i}: {counts[i]} slots, exact share {exact:F2}");
        }
    }

    [Theory]
    // 5,000 endpoints (the schedule is capped at 2^26 / 5,000 = 13,421 slots), Consul's Passing 10 and one Warning 1: the
    // 4,999 of weight 10 must get the same slots (largest remainder one endpoint at a time gave 3 to two thirds, 2 to the rest).
    [InlineData(4999, 10, 1, 1)]
    // 100 endpoints of weight 1,000 and 100 of 999 (200,... reduced total above 65,536 slots).
    [InlineData(100, 1000, 100, 999)]

    // 1,000 of weight 1,000 and 10 of 999 floor alike (64 slots); the larger remainder's class does not fit in the slots
    // left, and must not be skipped for the smaller weight's (which would then get 65 against 64).
    [InlineData(1000, 1000, 10, 999)]
    public void BuildSchedule_ScaledDown_EqualWeightsKeepEqualSlotsAndLargerNeverFewer(int heavyCount, int heavyWeight, int lightCount, int lightWeight)
    {
        var endpoints = new List<ServiceEndpoint>();
        for (var i = 0; i < heavyCount + lightCount; i++)
        {
            endpoints.Add(new ServiceEndpoint(new Uri($"http://10.{i / 65536}.{i / 256 % 256}.{i % 256}:8080"), i < heavyCount ? heavyWeight : lightWeight));
        }

        var schedule = RoundRobinLoadBalancingPolicy.BuildSchedule(endpoints);

        var counts = new int[endpoints.Count];
        foreach (var index in schedule)
        {
            counts[index]++;
        }

        var heavy = counts[..heavyCount].Distinct().ToArray();
        var light = counts[heavyCount..].Distinct().ToArray();
        output.WriteLine($"{schedule.Length} slots: weight {heavyWeight} -> {string.Join("/", heavy)} slots, weight {lightWeight} -> {string.Join("/", light)}");
        Assert.True(schedule.Length <= Math.Min(RoundRobinLoadBalancingPolicy.MaxScheduleLength, (1 << 26) / endpoints.Count), $"{schedule.Length} slots");
        Assert.Single(heavy);
        Assert.Single(light);
        Assert.True(heavy[0] >= light[0] && light[0] >= 1);
    }

    [Fact]
    public async Task Pick_ThreeEqualEndpointsSequential_SplitsEvenlyInStrictRotation()
    {
        await using var servers = await ServerGroup.StartAsync("a", "b", "c");
        await using var governed = Governed.Create(Traffic.Settings("RoundRobin", servers.Servers));

        var answeredBy = await Traffic.SendSequentialAsync(governed, 3000);

        var counts = Traffic.Count(answeredBy, servers.Servers);
        output.WriteLine(Traffic.Describe(counts));

        // Exact: 3,000 picks are 1,000 full cycles wherever the picker's random start is (tolerance ±1 per endpoint).
        Assert.All(counts.Values, c => Assert.InRange(c, 999, 1001));

        // Strict rotation: any three consecutive requests went to three different endpoints.
        for (var i = 0; i + 2 < answeredBy.Length; i++)
        {
            Assert.Equal(3, answeredBy.Skip(i).Take(3).Distinct().Count());
        }

        Assert.All(servers.Servers, s => Assert.Equal(counts[s.Name], s.RequestCount));
    }

    [Fact]
    public async Task Pick_Weights3To1Sequential_Splits75To25AndInterleaves()
    {
        await using var servers = await ServerGroup.StartAsync("heavy", "light");
        await using var governed = Governed.Create(Traffic.Settings("RoundRobin", servers.Servers, weights: [3, 1]));

        var answeredBy = await Traffic.SendSequentialAsync(governed, 4000);

        var counts = Traffic.Count(answeredBy, servers.Servers);
        var heavyShare = counts["heavy"] / 4000.0;
        var longestHeavyRun = LongestRun(answeredBy, "heavy");
        output.WriteLine($"{Traffic.Describe(counts)}; longest run of heavy: {longestHeavyRun}");

        // The issue's requirement: 75/25 within ±5 percentage points.
        Assert.InRange(heavyShare, 0.70, 0.80);

        // What round robin actually owes: 4,000 picks are 1,000 full cycles of 4 slots, so the split is exact (±1).
        Assert.InRange(counts["heavy"], 2999, 3001);

        // Interleaving: every window of 4 consecutive picks holds exactly one light pick, so heavy never runs past 3.
        Assert.True(longestHeavyRun <= 3, $"heavy answered {longestHeavyRun} requests in a row");
        for (var i = 0; i + 3 < answeredBy.Length; i++)
        {
            Assert.Equal(1, answeredBy.Skip(i).Take(4).Count(n => n == "light"));
        }
    }

    internal static int LongestRun(IEnumerable<string> sequence, string name)
    {
        int longest = 0, current = 0;
        foreach (var item in sequence)
        {
            current = item == name ? current + 1 : 0;
            longest = Math.Max(longest, current);
        }

        return longest;
    }

    private static int[] Schedule(params int[] weights) =>
        RoundRobinLoadBalancingPolicy.BuildSchedule([.. weights.Select((w, i) => new ServiceEndpoint(new Uri($"http://10.0.0.{i + 1}:8080"), w))]);
}
