using Governance.LoadBalancing;
using Governance.Pipeline;
using Governance.Tests.Infrastructure;
using Governance.Tests.Resilience;
using Microsoft.Extensions.DependencyInjection;

namespace Governance.Tests.Pipeline;

/// <summary>
/// Failures of code that governance calls back while a call is on the wire: the call fails with that failure, its permit
/// and counts come back, and nothing escapes onto the socket's completion (which would end the test process).
/// </summary>
public sealed class FailureContainmentTests
{
    [Fact]
    public async Task SendAsync_PickerRebuildThrowsWhileAnAnswerIsCounted_CallFailsWithItAndNothingIsLeftHalfDone()
    {
        // The 503 ejects "bad" (Consecutive5xx 1), which rebuilds the endpoint set, and the custom policy throws on that
        // rebuild. That happens in the continuation on the socket's task.
        await using var good = await LoopbackServer.StartAsync("good");
        await using var bad = await Faults.StartStatusAsync("bad", 503);
        var policy = new BrokenRebuildPolicy();
        var settings = Governed.Service(Faults.Service, policy.Name, bad, good);
        settings[$"Services:{Faults.Service}:Retry:MaxRetries"] = "0";
        settings[$"Services:{Faults.Service}:CircuitBreaker:Enabled"] = "false";
        settings[$"Services:{Faults.Service}:OutlierDetection:Consecutive5xx"] = "1";
        settings[$"Services:{Faults.Service}:OutlierDetection:MaxEjectionPercent"] = "100";
        settings[$"Services:{Faults.Service}:RateLimit:Algorithm"] = "Concurrency";
        settings[$"Services:{Faults.Service}:RateLimit:Burst"] = "1";
        await using var governed = Governed.Create(settings, services => services.AddSingleton<ILoadBalancingPolicy>(policy));
        var logical = new Uri(Faults.Url);
        using var request = new HttpRequestMessage(HttpMethod.Get, logical);

        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => governed.Client.SendAsync(request).WaitAsync(Faults.Guard));

        Assert.Equal(BrokenRebuildPolicy.Message, ex.Message);
        Assert.Same(logical, request.RequestUri);
        var badState = Faults.State(governed, bad);
        Assert.False(Faults.Has(badState, EndpointConditions.Ejected), "the endpoint stayed ejected with no readmission");
        Assert.Equal(0, badState.ActiveRequests);

        // The one concurrency permit came back: the next call is admitted (and answered by the first endpoint, which the
        // policy always picks).
        policy.Fixed = true;
        using var next = await governed.Client.GetAsync(Faults.Url).WaitAsync(Faults.Guard);
        Assert.Equal("bad", Assert.Single(next.Headers.GetValues("x-server")));
    }

    /// <summary>Always picks the first endpoint; building a picker fails after the first build until <see cref="Fixed"/>.</summary>
    private sealed class BrokenRebuildPolicy : ILoadBalancingPolicy
    {
        public const string Message = "picker build failed";
        private int _builds;

        public string Name => "broken-rebuild";

        public bool Fixed { get; set; }

        public IEndpointPicker CreatePicker(EndpointPickerContext context)
        {
            if (Interlocked.Increment(ref _builds) > 1 && !Fixed)
            {
                throw new InvalidOperationException(Message);
            }

            return new FirstPicker();
        }

        private sealed class FirstPicker : IEndpointPicker
        {
            public int Pick(in PickContext context) => 0;
        }
    }
}
