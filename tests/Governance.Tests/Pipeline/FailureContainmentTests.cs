using Governance.LoadBalancing;
using Governance.Pipeline;
using Governance.Tests.Infrastructure;
using Governance.Tests.Resilience;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

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

    [Fact]
    public async Task SendAsync_PickerRebuildThrowsWhileARetryIsCounted_CallFailsWithItAndEveryResponseIsDisposed()
    {
        // One endpoint answering 503, one retry: the first 503 is retried (Polly disposes it), the second ejects "bad"
        // (Consecutive5xx 2), and the custom policy throws on that rebuild. The call fails with that failure, and the
        // second response is disposed too, not left holding its connection.
        await using var bad = await Faults.StartStatusAsync("bad", 503);
        var policy = new BrokenRebuildPolicy();
        var settings = Governed.Service(Faults.Service, policy.Name, bad);
        settings[$"Services:{Faults.Service}:Retry:MaxRetries"] = "1";
        settings[$"Services:{Faults.Service}:Retry:BaseDelay"] = "00:00:00";
        settings[$"Services:{Faults.Service}:Retry:MaxDelay"] = "00:00:00";
        settings[$"Services:{Faults.Service}:CircuitBreaker:Enabled"] = "false";
        settings[$"Services:{Faults.Service}:OutlierDetection:Consecutive5xx"] = "2";
        settings[$"Services:{Faults.Service}:OutlierDetection:MaxEjectionPercent"] = "100";
        var responses = 0;
        var disposed = 0;
        await using var governed = Governed.Create(settings, services => services
            .AddSingleton<ILoadBalancingPolicy>(policy)
            .ConfigureHttpClientDefaults(b => b.ConfigurePrimaryHttpMessageHandler(() => new TrackingHandler(
                () => Interlocked.Increment(ref responses),
                () => Interlocked.Increment(ref disposed)) { InnerHandler = new SocketsHttpHandler() })));

        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => governed.Client.GetAsync(Faults.Url).WaitAsync(Faults.Guard));

        Assert.Equal(BrokenRebuildPolicy.Message, ex.Message);
        Assert.Equal(2, bad.RequestCount);
        Assert.Equal(2, Volatile.Read(ref responses));
        Assert.Equal(2, Volatile.Read(ref disposed));
    }

    [Fact]
    public async Task SendAsync_PickerRebuildThrowsAsACircuitOpens_LoggedAndTheCallKeepsItsAnswer()
    {
        // The fourth 503 opens the circuit (Polly runs the transition inside that call), and the custom policy throws on
        // the rebuild it causes: logged (1101), the current endpoint set kept, and the call answered with its 503
        // (inside Polly, a failure there would lose the response).
        await using var bad = await Faults.StartStatusAsync("bad", 503);
        var policy = new BrokenRebuildPolicy();
        var logs = new CapturingLoggerProvider();
        var settings = Governed.Service(Faults.Service, policy.Name, bad);
        settings[$"Services:{Faults.Service}:Retry:MaxRetries"] = "0";
        settings[$"Services:{Faults.Service}:OutlierDetection:Enabled"] = "false";
        settings[$"Services:{Faults.Service}:CircuitBreaker:MinimumThroughput"] = "4";
        await using var governed = Governed.Create(settings, services => services.AddSingleton<ILoadBalancingPolicy>(policy).AddLogging(l => l.AddProvider(logs)));

        for (var i = 0; i < 4; i++)
        {
            using var response = await governed.Client.GetAsync(Faults.Url).WaitAsync(Faults.Guard);
            Assert.Equal(503, (int)response.StatusCode);
        }

        Assert.True(Faults.Has(Faults.State(governed, bad), EndpointConditions.CircuitOpen));
        var failed = Assert.Single(logs.Entries, e => e.EventId.Id == Governance.Telemetry.GovernanceEventIds.EndpointSetRebuildFailed);
        Assert.Equal(LogLevel.Error, failed.Level);
    }

    [Fact]
    public async Task Reload_NewWatcherCannotBeSubscribedTo_RejectedAndTheLimiterInForceStillServes()
    {
        // A reload changes the rate limit (a new limiter) and gets a new discovery watcher whose change token throws. The
        // reload is rejected as a whole: the service keeps its watcher and its limiter, which must not be disposed (calls
        // failed with ObjectDisposedException from the disposed limiter in force).
        await using var server = await LoopbackServer.StartAsync("a");
        var provider = new SwitchableProvider(new ServiceEndpoint(server.Address));
        var logs = new CapturingLoggerProvider();
        var settings = new Dictionary<string, string?>
        {
            [$"Services:{Faults.Service}:Discovery"] = provider.Name,
            [$"Services:{Faults.Service}:RateLimit:PermitsPerSecond"] = "100000",
        };
        await using var governed = Governed.Create(settings, services => services
            .AddSingleton<Governance.Discovery.IServiceDiscoveryProvider>(provider)
            .AddLogging(l => l.AddProvider(logs)));
        (await governed.Client.GetAsync(Faults.Url).WaitAsync(Faults.Guard)).Dispose();
        var limiter = Faults.Runtime(governed).Policy.Limiter;

        provider.FailSubscriptions = true;
        governed.Configuration[$"MeshGovernance:Services:{Faults.Service}:RateLimit:PermitsPerSecond"] = "90000";
        governed.Configuration.Reload();

        Assert.Single(logs.Entries, e => e.EventId.Id == Governance.Telemetry.GovernanceEventIds.ConfigurationReloadRejected);
        Assert.Same(limiter, Faults.Runtime(governed).Policy.Limiter);
        using var response = await governed.Client.GetAsync(Faults.Url).WaitAsync(Faults.Guard);
        Assert.Equal("a", Assert.Single(response.Headers.GetValues("x-server")));
    }

    [Fact]
    public async Task Reload_NewWatcherCannotBeSubscribedTo_OpenCircuitUntouchedAndReadmittedOnTime()
    {
        // bad's circuit is open when a reload edits the breaker and brings a watcher whose change token throws: the
        // reload is rejected before any endpoint state changes, so bad stays out and its readmission brings it back
        // (the rejected reload cleared its open mark without a rebuild, and the readmission then had nothing to clear).
        await using var bad = await Faults.StartStatusAsync("bad", 503);
        await using var good = await LoopbackServer.StartAsync("good");
        var provider = new SwitchableProvider(new ServiceEndpoint(bad.Address), new ServiceEndpoint(good.Address));
        var time = new ObservedTimeProvider();
        var settings = new Dictionary<string, string?>
        {
            [$"Services:{Faults.Service}:Discovery"] = provider.Name,
            [$"Services:{Faults.Service}:LoadBalancer:Policy"] = "RoundRobin",
            [$"Services:{Faults.Service}:Retry:BaseDelay"] = "00:00:00",
            [$"Services:{Faults.Service}:Retry:MaxDelay"] = "00:00:00",
            [$"Services:{Faults.Service}:OutlierDetection:Enabled"] = "false",
            [$"Services:{Faults.Service}:CircuitBreaker:MinimumThroughput"] = "4",
            [$"Services:{Faults.Service}:CircuitBreaker:BreakDuration"] = "00:00:05",
        };
        await using var governed = Governed.Create(settings, services => services
            .AddSingleton<Governance.Discovery.IServiceDiscoveryProvider>(provider)
            .AddSingleton<TimeProvider>(time));
        var badState = Faults.State(governed, bad);
        await Faults.SendUntilAsync(governed, () => Faults.Has(badState, EndpointConditions.CircuitOpen));
        await time.WaitForTimersAsync(TimeSpan.FromSeconds(5), 1).WaitAsync(Faults.Guard);

        provider.FailSubscriptions = true;
        governed.Configuration[$"MeshGovernance:Services:{Faults.Service}:CircuitBreaker:BreakDuration"] = "00:00:06";
        governed.Configuration.Reload();

        Assert.True(Faults.Has(badState, EndpointConditions.CircuitOpen), $"the rejected reload changed the endpoint: {badState.Conditions}");
        Assert.Single(Faults.Runtime(governed).Endpoints.Candidates);
        time.Advance(TimeSpan.FromSeconds(5));
        Assert.False(Faults.Has(badState, EndpointConditions.CircuitOpen), "not readmitted after the break");
        Assert.Equal(2, Faults.Runtime(governed).Endpoints.Candidates.Length);
    }

    [Fact]
    public async Task Readmission_PickerRebuildThrowsInTheTimer_LoggedInsteadOfEndingTheProcess()
    {
        // An ejection (the policy builds fine then), and its readmission timer fires while the policy fails to build: on
        // a real clock that exception would end the process; FakeTimeProvider runs the callback inside Advance.
        await using var good = await LoopbackServer.StartAsync("good");
        await using var bad = await Faults.StartStatusAsync("bad", 503);
        var policy = new BrokenRebuildPolicy { Fixed = true };
        var logs = new CapturingLoggerProvider();
        var time = new ObservedTimeProvider();
        var settings = Governed.Service(Faults.Service, policy.Name, bad, good);
        settings[$"Services:{Faults.Service}:Retry:MaxRetries"] = "0";
        settings[$"Services:{Faults.Service}:CircuitBreaker:Enabled"] = "false";
        settings[$"Services:{Faults.Service}:OutlierDetection:Consecutive5xx"] = "1";
        settings[$"Services:{Faults.Service}:OutlierDetection:MaxEjectionPercent"] = "100";
        await using var governed = Governed.Create(settings, services => services.AddSingleton<ILoadBalancingPolicy>(policy).AddSingleton<TimeProvider>(time).AddLogging(l => l.AddProvider(logs)));
        using (var response = await governed.Client.GetAsync(Faults.Url).WaitAsync(Faults.Guard))
        {
            Assert.Equal(503, (int)response.StatusCode);
        }

        var badState = Faults.State(governed, bad);
        Assert.True(Faults.Has(badState, EndpointConditions.Ejected));
        await time.WaitForTimersAsync(TimeSpan.FromSeconds(30), 1).WaitAsync(Faults.Guard);
        policy.Fixed = false;

        time.Advance(TimeSpan.FromSeconds(30));

        var failed = Assert.Single(logs.Entries, e => e.EventId.Id == Governance.Telemetry.GovernanceEventIds.EndpointSetRebuildFailed);
        Assert.Equal(LogLevel.Error, failed.Level);
        Assert.False(Faults.Has(badState, EndpointConditions.Ejected));
        Assert.Equal("good", await governed.GetServerAsync(Faults.Url));
    }

    [Fact]
    public async Task Reload_PickerCannotBeBuilt_RejectedAndTheServiceKeepsItsEndpointsPolicyAndLimiter()
    {
        // The edit is valid, but the custom policy fails to build a picker for it: the reload is rejected as a whole (and
        // logged), the service keeps serving with what it had, and a later edit applies once the policy builds again.
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        var policy = new BrokenRebuildPolicy();
        var logs = new CapturingLoggerProvider();
        var settings = Governed.Service(Faults.Service, policy.Name, a);
        settings[$"Services:{Faults.Service}:RateLimit:Algorithm"] = "Concurrency";
        settings[$"Services:{Faults.Service}:RateLimit:Burst"] = "1";
        await using var governed = Governed.Create(settings, services => services.AddSingleton<ILoadBalancingPolicy>(policy).AddLogging(l => l.AddProvider(logs)));
        var runtime = Faults.Runtime(governed);
        var limiter = runtime.Policy.Limiter;

        governed.Configuration[$"MeshGovernance:Services:{Faults.Service}:Endpoints:0"] = b.Address.ToString();
        governed.Configuration[$"MeshGovernance:Services:{Faults.Service}:RateLimit:Burst"] = "2";
        governed.Configuration.Reload();

        var rejected = Assert.Single(logs.Entries, e => e.EventId.Id == Governance.Telemetry.GovernanceEventIds.ConfigurationReloadRejected);
        Assert.Contains(BrokenRebuildPolicy.Message, rejected.Message, StringComparison.Ordinal);
        Assert.Same(limiter, runtime.Policy.Limiter);
        Assert.Equal("a", await governed.GetServerAsync(Faults.Url));

        policy.Fixed = true;
        governed.Configuration.Reload();
        Assert.Equal("b", await governed.GetServerAsync(Faults.Url));
        Assert.NotSame(limiter, runtime.Policy.Limiter);
    }

    /// <summary>Always picks the first endpoint; building a picker fails after the first build until <see cref="Fixed"/>.</summary>
    /// <summary>Under governance, above the socket: counts responses and the disposal of each one's content.</summary>
    private sealed class TrackingHandler(Action answered, Action disposed) : DelegatingHandler
    {
        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var response = await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
            answered();
            response.Content = new TrackedContent(response.Content, disposed);
            return response;
        }

        private sealed class TrackedContent(HttpContent inner, Action disposed) : HttpContent
        {
            private int _disposed;

            protected override Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context) => inner.CopyToAsync(stream);

            protected override bool TryComputeLength(out long length)
            {
                length = 0;
                return false;
            }

            protected override void Dispose(bool disposing)
            {
                if (disposing && Interlocked.Exchange(ref _disposed, 1) == 0)
                {
                    disposed();
                    inner.Dispose();
                }

                base.Dispose(disposing);
            }
        }
    }

    /// <summary>A provider of fixed endpoints whose watchers' change tokens throw once <see cref="FailSubscriptions"/> is set.</summary>
    private sealed class SwitchableProvider(params ServiceEndpoint[] endpoints) : Governance.Discovery.IServiceDiscoveryProvider
    {
        public string Name => "Switchable";

        public bool FailSubscriptions { get; set; }

        public Governance.Discovery.IServiceEndpointWatcher Watch(string serviceName, Governance.Configuration.ServiceOptions options) =>
            new Watcher(endpoints, FailSubscriptions);

        private sealed class Watcher(IReadOnlyList<ServiceEndpoint> endpoints, bool fail) : Governance.Discovery.IServiceEndpointWatcher
        {
            public IReadOnlyList<ServiceEndpoint>? Current => endpoints;

            public Microsoft.Extensions.Primitives.IChangeToken GetChangeToken() =>
                fail ? throw new InvalidOperationException("change token failed") : Microsoft.Extensions.FileProviders.NullChangeToken.Singleton;

            public ValueTask DisposeAsync() => ValueTask.CompletedTask;
        }
    }

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
