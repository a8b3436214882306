using Governance.Pipeline;
using Governance.Tests.Infrastructure;

namespace Governance.Tests.Resilience;

/// <summary>A health checker a reload replaced or stopped changes nothing, even with a result it had in hand.</summary>
public sealed class HealthCheckerReplacedTests
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(10);

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task OnHealthChanged_FromACheckerNoLongerInForce_Ignored(bool replaced)
    {
        // A checker can be past its own stop check when a reload replaces it (or switches health checks off); the result it
        // then reports must not flag the endpoint: nothing of the checker in force (or none) would ever clear it.
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        var time = new ObservedTimeProvider();
        var settings = Faults.Settings(a, b)
            .With("HealthCheck:Path", "/health")
            .With("HealthCheck:Interval", Interval)
            .With("HealthCheck:Timeout", TimeSpan.FromSeconds(2));
        await using var governed = Faults.Create(settings, time);
        var service = Faults.Runtime(governed);
        var old = service.HealthChecker;
        Assert.NotNull(old);

        // The first round, which lets a and b in (each new endpoint waits for its first probe), ends with the pause.
        await time.WaitForTimersAsync(Interval, 1).WaitAsync(Faults.Guard);
        Assert.Equal(2, service.Endpoints.Candidates.Length);

        var prefix = $"MeshGovernance:Services:{Faults.Service}:HealthCheck:";
        if (replaced)
        {
            governed.Configuration[prefix + "Interval"] = TimeSpan.FromSeconds(20).ToString();
        }
        else
        {
            governed.Configuration[prefix + "Path"] = string.Empty;
            governed.Configuration[prefix + "Interval"] = null;
            governed.Configuration[prefix + "Timeout"] = null;
        }

        governed.Configuration.Reload();
        Assert.NotSame(old, service.HealthChecker);

        var endpoint = Faults.State(governed, a);
        service.OnHealthChanged(old!, [(endpoint, false)]);

        Assert.False(Faults.Has(endpoint, EndpointConditions.FailedHealthCheck), "a replaced checker flagged the endpoint");
        Assert.Equal(2, service.Endpoints.Candidates.Length);
    }
}
