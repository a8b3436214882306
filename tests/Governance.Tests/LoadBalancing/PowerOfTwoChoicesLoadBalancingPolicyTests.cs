using Governance.Configuration;
using Governance.LoadBalancing;
using Governance.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Governance.Tests.LoadBalancing;

public sealed class PowerOfTwoChoicesLoadBalancingPolicyTests(ITestOutputHelper output)
{
    private const int Picks = 100_000;

    [Fact]
    public void Pick_OneOfTwoEndpointsBusy_PrefersTheIdleOne()
    {
        var load = new FixedLoad([10, 0]);
        var shares = Shares(Picker([1, 1], load));
        output.WriteLine($"busy {shares[0]:P2}, idle {shares[1]:P2}");

        // The two candidates are always different, so with two endpoints every pick compares them and the busy one
        // never wins; a policy blind to load would give it 50%, one that may draw a single endpoint twice 1 in 8 or more.
        Assert.Equal(0, shares[0]);
    }

    [Fact]
    public void Pick_ThreeEndpointsOneIdle_IdleOneGetsMost()
    {
        var load = new FixedLoad([5, 0, 5]);
        var shares = Shares(Picker([1, 1, 1], load));
        output.WriteLine($"busy {shares[0]:P2}, idle {shares[1]:P2}, busy {shares[2]:P2}");

        // The idle one wins whenever it is one of the two (different) candidates: 2/3, against 1/3 for a load-blind
        // policy and 5/9 for one that may draw the same endpoint twice. sigma 0.15 points; bound 2/3 - 2 points.
        Assert.True(shares[1] >= 0.645, $"idle endpoint got {shares[1]:P2}");
    }

    [Fact]
    public void Pick_EqualLoadEqualWeights_SpreadsEvenly()
    {
        var shares = Shares(Picker([1, 1, 1], new FixedLoad([2, 2, 2])));
        output.WriteLine(string.Join(", ", shares.Select(s => s.ToString("P2", System.Globalization.CultureInfo.InvariantCulture))));

        // sigma = sqrt((1/3)(2/3)/100000) = 0.15 points; ±1 point is 6.7 sigma.
        Assert.All(shares, s => Assert.InRange(s, (1 / 3.0) - 0.01, (1 / 3.0) + 0.01));
    }

    [Fact]
    public void Pick_LoadChangesAfterPickerBuilt_FollowsLiveLoad()
    {
        var load = new FixedLoad([0, 10]);
        var picker = Picker([1, 1], load);
        var before = Shares(picker);

        load.Active[0] = 10;
        load.Active[1] = 0;
        var after = Shares(picker);

        output.WriteLine($"endpoint 0: {before[0]:P2} while idle, {after[0]:P2} once busy");
        Assert.True(before[0] >= 0.85, $"idle endpoint 0 got {before[0]:P2}");
        Assert.True(after[0] <= 0.15, $"busy endpoint 0 got {after[0]:P2}");
    }

    [Fact]
    public void Pick_IdleEndpointsWeighted3To1_Splits75To25()
    {
        // With nothing in flight, least request must honour weights exactly like weighted random (Envoy's weighted
        // least request: weight / (active + 1), so 3:1 when idle). sigma = 0.14 points over 100,000 picks; ±1 point
        // is 7 sigma; a policy that counts the weight twice (sampling by weight, then comparing per weight) gives ~98%.
        var shares = Shares(Picker([3, 1], new FixedLoad([0, 0])));
        output.WriteLine($"heavy {shares[0]:P2}, light {shares[1]:P2}");

        Assert.InRange(shares[0], 0.74, 0.76);
    }

    [Theory]
    [InlineData(new[] { 3, 1 }, 64, 0.75, 0.02)]
    [InlineData(new[] { 9, 1 }, 64, 0.90, 0.02)]
    [InlineData(new[] { 3, 1, 1 }, 64, 0.60, 0.02)]
    [InlineData(new[] { 3, 1 }, 4, 0.75, 0.06)]

    // Few in flight with skewed weights: the light endpoint is often idle. An idle candidate winning whatever the weights
    // gave the weight-1 canary 25% (99:1) and the light one 25% (9:1) with 4 in flight; sharing by weight / (in flight + 1)
    // gives about 3.5% and 16% (simulated). A hard floor, not the exact weights: one request is the least a pick gives.
    [InlineData(new[] { 99, 1 }, 4, 0.965, 0.025)]
    [InlineData(new[] { 9, 1 }, 4, 0.84, 0.04)]
    [InlineData(new[] { 99, 1 }, 64, 0.985, 0.01)]

    // One in flight: every pick sees every endpoint idle, so it is exactly weighted random, with three endpoints too
    // (sharing by weight when both candidates are idle counted the weight twice: 67%).
    [InlineData(new[] { 3, 1, 1 }, 1, 0.60, 0.01)]
    public void Pick_SteadyLoadOnEquallyFastEndpoints_HonoursWeights(int[] weights, int concurrency, double heavyShare, double tolerance)
    {
        // A closed system of requests always in flight to equally fast endpoints: at each step one of them, any one with
        // equal chance, completes, and the picker places the next. Each endpoint then holds requests in proportion to its
        // share, so only a comparison per unit of weight keeps the split at the weights; comparing raw counts pulls it
        // towards equal shares (3:1 served ~53:47, 9:1 ~73:27, 3:1:1 ~36:32:32 with 64 in flight; a simulation of both
        // rules). The completion order is seeded; the picker's own sampling is random: sigma < 0.2 point over 200,000 picks.
        var load = new FixedLoad(new int[weights.Length]);
        var (picker, _) = Picker(weights, load);
        var completions = new Random(7);
        var inFlight = new int[concurrency];
        for (var i = 0; i < inFlight.Length; i++)
        {
            inFlight[i] = picker.Pick(new PickContext(null));
            load.Active[inFlight[i]]++;
        }

        var counts = new int[weights.Length];
        for (var step = 0; step < 220_000; step++)
        {
            var done = completions.Next(inFlight.Length);
            load.Active[inFlight[done]]--;
            var next = picker.Pick(new PickContext(null));
            load.Active[next]++;
            inFlight[done] = next;
            if (step >= 20_000)
            {
                counts[next]++;
            }
        }

        var shares = counts.Select(c => c / 200_000.0).ToArray();
        output.WriteLine($"weights {string.Join(":", weights)} with {concurrency} in flight: {string.Join(", ", shares.Select(s => s.ToString("P2", System.Globalization.CultureInfo.InvariantCulture)))}");

        Assert.InRange(shares[0], heavyShare - tolerance, heavyShare + tolerance);
    }

    [Fact]
    public async Task Pick_Weights3To1Sequential_Splits75To25Within5Percent()
    {
        await using var servers = await ServerGroup.StartAsync("heavy", "light");
        await using var governed = Governed.Create(Traffic.Settings("LeastRequest", servers.Servers, weights: [3, 1]));

        // One request at a time: every pick sees zero in flight everywhere, so only the weights can decide.
        var answeredBy = await Traffic.SendSequentialAsync(governed, 4000);

        var counts = Traffic.Count(answeredBy, servers.Servers);
        output.WriteLine(Traffic.Describe(counts));

        // The issue's ±5 points over 4,000 requests: sigma 0.68 points, so 7.3 sigma.
        Assert.InRange(counts["heavy"] / 4000.0, 0.70, 0.80);
    }

    [Fact]
    public async Task Pick_EndpointHoldsRequestsOpen_GetsMeasurablyLessTraffic()
    {
        // 2,000 requests, 32 outstanding to the fast endpoints at any time; "held" answers nothing until the end.
        var (answeredBy, heldInFlight) = await Traffic.SendWithOneEndpointHoldingAsync("LeastRequest", 2000, concurrency: 32);

        var counts = Traffic.Count(answeredBy, []);
        var heldShare = counts.GetValueOrDefault("held") / 2000.0;
        output.WriteLine($"{Traffic.Describe(counts)}; held had {heldInFlight} requests open at the end");

        // A load-blind policy gives "held" a third (see RandomLoadBalancingPolicyTests). Power of two choices stops
        // choosing it once it has more in flight than a fast one (at most 32 between them): with two different
        // candidates it never wins again, so it gets a few dozen requests at most (under 2%; a policy that may draw it
        // as both candidates would give it 1 in 27 of the rest, about 4.5% in all). Bound 3%, which also holds against
        // any speed of machine since the in-flight counts, not timings, decide.
        Assert.True(heldShare < 0.03, $"held endpoint got {heldShare:P2} of requests");
        Assert.True(counts.GetValueOrDefault("held") * 2 < Math.Min(counts["a"], counts["b"]), "held endpoint got more than half of a fast one's requests");
    }

    private static (IEndpointPicker Picker, int Count) Picker(int[] weights, FixedLoad load) =>
        (new PowerOfTwoChoicesLoadBalancingPolicy().CreatePicker(new EndpointPickerContext("catalog", WeightedSamplerTests.Endpoints(weights), load, new LoadBalancerOptions())), weights.Length);

    private static double[] Shares((IEndpointPicker Picker, int Count) picker)
    {
        var counts = new int[picker.Count];
        for (var i = 0; i < Picks; i++)
        {
            counts[picker.Picker.Pick(new PickContext(null))]++;
        }

        return [.. counts.Select(c => (double)c / Picks)];
    }
}
