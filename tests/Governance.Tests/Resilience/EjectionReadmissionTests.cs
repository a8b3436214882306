using Governance.Pipeline;
using Governance.Tests.Infrastructure;

namespace Governance.Tests.Resilience;

/// <summary>Which readmission ends an ejection, when reloads switched outlier detection off and on in between.</summary>
public sealed class EjectionReadmissionTests
{
    [Fact]
    public async Task Readmission_ArmedByAnEjectionAReloadCleared_DoesNotEndALaterEjectionEarly()
    {
        await using var a = await LoopbackServer.StartAsync("a");
        await using var failing = await Faults.StartStatusAsync("failing", 503);
        var time = new ObservedTimeProvider();
        var settings = Faults.Settings(a, failing)
            .With("OutlierDetection:Consecutive5xx", 1)
            .With("CircuitBreaker:Enabled", false);
        await using var governed = Faults.Create(settings, time);
        var state = Faults.State(governed, failing);
        var key = $"MeshGovernance:Services:{Faults.Service}:OutlierDetection:Enabled";

        // Ejected at 0 s: its readmission is armed for 30 s.
        await EjectAsync();

        // Outlier detection off (the endpoint is back at once), then on again at 10 s, and the endpoint ejected again:
        // its readmission is due at 40 s.
        governed.Configuration[key] = "false";
        governed.Configuration.Reload();
        Assert.False(Faults.Has(state, EndpointConditions.Ejected));
        time.Advance(TimeSpan.FromSeconds(10));
        governed.Configuration[key] = "true";
        governed.Configuration.Reload();
        await EjectAsync();

        // 30 s: the first ejection's readmission fires and must not readmit the second ejection.
        time.Advance(TimeSpan.FromSeconds(20));
        Assert.True(Faults.Has(state, EndpointConditions.Ejected), "the first ejection's readmission ended the second one early");

        // 40 s: the second ejection's own readmission.
        time.Advance(TimeSpan.FromSeconds(10));
        Assert.False(Faults.Has(state, EndpointConditions.Ejected));

        async Task EjectAsync()
        {
            for (var i = 0; i < 10 && !Faults.Has(state, EndpointConditions.Ejected); i++)
            {
                _ = await Faults.TryGetAsync(governed);
            }

            Assert.True(Faults.Has(state, EndpointConditions.Ejected));
        }
    }
}
