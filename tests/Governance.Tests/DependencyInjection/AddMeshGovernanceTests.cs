using Governance.Tests.Infrastructure;

namespace Governance.Tests.DependencyInjection;

public sealed class AddMeshGovernanceTests
{
    [Fact]
    public async Task GetAsync_GovernedHost_ReachesConfiguredEndpoint()
    {
        await using var server = await LoopbackServer.StartAsync("a");
        await using var governed = Governed.Create(Governed.Service("catalog", null, server));

        var answeredBy = await governed.GetServerAsync("http://catalog/items?id=1");

        Assert.Equal("a", answeredBy);
        Assert.Equal(1, server.RequestCount);
    }
}
