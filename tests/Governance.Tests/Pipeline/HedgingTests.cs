using Governance.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;

namespace Governance.Tests.Pipeline;

public sealed class HedgingTests
{
    [Fact]
    public async Task GetAsync_PrimaryEndpointHangs_HedgedAttemptToOtherEndpointWins()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var stuck = await LoopbackServer.StartAsync("stuck", async context =>
        {
            await release.Task.WaitAsync(TimeSpan.FromSeconds(60));
            await context.Response.WriteAsync("stuck");
        });
        await using var fast = await LoopbackServer.StartAsync("fast");
        var settings = Governed.Service("catalog", "RoundRobin", stuck, fast);
        settings["Services:catalog:Hedging:Enabled"] = "true";
        settings["Services:catalog:Hedging:Delay"] = "00:00:00.050";
        settings["Services:catalog:Timeout:PerAttempt"] = "00:00:30";
        settings["Services:catalog:CircuitBreaker:Enabled"] = "false";
        await using var governed = Governed.Create(settings);
        try
        {
            // Round robin alternates, so half of the primaries go to the stuck endpoint: without hedging they would hang.
            for (var i = 0; i < 6; i++)
            {
                using var response = await governed.Client.GetAsync($"http://catalog/items/{i}").WaitAsync(TimeSpan.FromSeconds(30));
                Assert.Equal("fast", Assert.Single(response.Headers.GetValues("x-server")));
                Assert.Equal(new Uri($"http://catalog/items/{i}"), response.RequestMessage!.RequestUri);
            }

            Assert.InRange(stuck.RequestCount, 1, 6);
        }
        finally
        {
            release.SetResult();
        }
    }

    [Fact]
    public async Task PostAsync_HedgingEnabled_IsNotHedged()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var arrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var stuck = await LoopbackServer.StartAsync("stuck", async context =>
        {
            arrived.TrySetResult();
            await release.Task.WaitAsync(TimeSpan.FromSeconds(60));
            await context.Response.WriteAsync("stuck");
        });
        var settings = Governed.Service("catalog", null, stuck);
        settings["Services:catalog:Hedging:Enabled"] = "true";
        settings["Services:catalog:Hedging:Delay"] = "00:00:00";
        await using var governed = Governed.Create(settings);

        var post = governed.Client.PostAsync("http://catalog/orders", new StringContent("{}"));
        await arrived.Task.WaitAsync(TimeSpan.FromSeconds(30));
        release.SetResult();
        using var response = await post.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal("stuck", Assert.Single(response.Headers.GetValues("x-server")));
        Assert.Equal(1, stuck.RequestCount);
    }
}
