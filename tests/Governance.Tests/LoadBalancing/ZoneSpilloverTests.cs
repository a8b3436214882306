using Governance.Pipeline;
using Governance.Tests.Infrastructure;
using Governance.Tests.Resilience;
using Microsoft.AspNetCore.Http;
using Xunit.Abstractions;

namespace Governance.Tests.LoadBalancing;

/// <summary>
/// Zone spill-over end to end, driven by the path production uses: a local endpoint answering 503 is ejected by
/// outlier detection, and readmitted by its ejection timer on the fake clock (README "Zone-aware routing": the local
/// zone takes min(1, 1.4 x available local / all local) of the requests).
/// </summary>
public sealed class ZoneSpilloverTests(ITestOutputHelper output)
{
    private static readonly TimeSpan BaseEjection = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task Pick_LocalEndpointEjectedFor503s_SeventyPercentStaysLocalUntilItIsReadmitted()
    {
        var time = new ObservedTimeProvider();
        var failing = 1;
        await using var z1a = await LoopbackServer.StartAsync("z1a");
        await using var z1b = await LoopbackServer.StartAsync("z1b", context =>
        {
            context.Response.StatusCode = Volatile.Read(ref failing) == 1 ? StatusCodes.Status503ServiceUnavailable : StatusCodes.Status200OK;
            return context.Response.WriteAsync("z1b", context.RequestAborted);
        });
        await using var z2a = await LoopbackServer.StartAsync("z2a");
        await using var z2b = await LoopbackServer.StartAsync("z2b");
        LoopbackServer[] servers = [z1a, z1b, z2a, z2b];
        var settings = Traffic.Settings("RoundRobin", servers, zones: ["z1", "z1", "z2", "z2"])
            .With("Retry:BaseDelay", TimeSpan.Zero)
            .With("Retry:Backoff", "Constant")
            .With("Retry:Jitter", false)
            .With("OutlierDetection:Consecutive5xx", 1)
            .With("OutlierDetection:BaseEjectionTime", BaseEjection);
        settings["Application:Zone"] = "z1";
        await using var governed = Faults.Create(settings, time);
        var service = Faults.Runtime(governed);
        var z1bState = Faults.State(governed, z1b);
        Assert.Equal(1.0, service.Endpoints.LocalShare);

        // Round robin inside z1 sends one of the first two GETs to z1b: its 503 ejects it (Consecutive5xx 1) and the GET
        // is retried elsewhere.
        Assert.All(await Faults.SendSequentialAsync(governed, 2), r => Assert.True(r.Succeeded, r.ToString()));
        Assert.True(Faults.Has(z1bState, EndpointConditions.Ejected), $"z1b not ejected: {z1bState.Conditions}");
        Assert.Equal(0.7, service.Endpoints.LocalShare, precision: 12);

        // min(1, 1.4 x 1/2) = 0.7 local. sigma = sqrt(0.7 x 0.3 / 2000) = 1.0 point, so ±6 points is 5.9 sigma; staying
        // all local (100%) or splitting by endpoint count (1 of 3 available: 33%) fails.
        const int Requests = 2000;
        var z1bBefore = z1b.RequestCount;
        var spilled = await Faults.SendManyAsync(governed, Requests, 16);
        var counts = servers.ToDictionary(s => s.Name, s => spilled.Count(r => r.Server == s.Name));
        var local = (double)counts["z1a"] / Requests;
        output.WriteLine($"z1b ejected: {Traffic.Describe(counts)}; local share {local:P2} (README's rule: 70%)");

        Assert.All(spilled, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.InRange(local, 0.64, 0.76);
        Assert.Equal(z1bBefore, z1b.RequestCount);
        Assert.InRange(counts["z2a"] - counts["z2b"], -2, 2);

        // z1b heals; after BaseEjectionTime on the fake clock it is readmitted (in the timer's callback, inside Advance)
        // and z1 takes every request again, split evenly by round robin (±2 picks, README).
        Volatile.Write(ref failing, 0);
        await time.WaitForTimersAsync(BaseEjection, 1).WaitAsync(Faults.Guard);
        time.Advance(BaseEjection - TimeSpan.FromTicks(1));
        Assert.True(Faults.Has(z1bState, EndpointConditions.Ejected), "z1b readmitted before BaseEjectionTime");
        Assert.Equal(0.7, service.Endpoints.LocalShare, precision: 12);
        time.Advance(TimeSpan.FromTicks(1));
        Assert.Equal(EndpointConditions.None, z1bState.Conditions);
        Assert.Equal(1.0, service.Endpoints.LocalShare);

        var back = await Faults.SendManyAsync(governed, 400, 8);
        var backCounts = servers.ToDictionary(s => s.Name, s => back.Count(r => r.Server == s.Name));
        output.WriteLine($"z1b readmitted after {BaseEjection}: {Traffic.Describe(backCounts)}");

        Assert.All(back, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(0, backCounts["z2a"] + backCounts["z2b"]);
        Assert.InRange(backCounts["z1b"], 198, 202);
    }
}
