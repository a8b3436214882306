using Governance.Configuration;
using Governance.Discovery;
using Governance.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;

namespace Governance.Tests.Pipeline;

/// <summary>The first request to a service whose discovery has not answered yet waits for the answer, bounded by the total timeout.</summary>
public sealed class PendingDiscoveryTests
{
    [Fact]
    public async Task GetAsync_DiscoveryAnswersLater_FirstRequestWaitsThenSucceeds()
    {
        await using var server = await LoopbackServer.StartAsync("a");
        var provider = new ManualProvider();
        await using var governed = Governed.Create(
            new Dictionary<string, string?> { ["Services:catalog:Discovery"] = "Manual" },
            services => services.AddSingleton<IServiceDiscoveryProvider>(provider));

        var first = governed.Client.GetAsync("http://catalog/");
        Assert.False(first.IsCompleted);
        provider.Resolve([new ServiceEndpoint(server.Address)]);
        using var response = await first.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal("a", Assert.Single(response.Headers.GetValues("x-server")));
    }

    [Fact]
    public async Task GetAsync_DiscoveryNeverAnswers_FailsAfterTotalTimeoutNamingServiceAndProvider()
    {
        var time = new ObservedTimeProvider();
        var provider = new ManualProvider();
        await using var governed = Governed.Create(
            new Dictionary<string, string?> { ["Services:catalog:Discovery"] = "Manual", ["Services:catalog:Timeout:Total"] = "00:00:05", ["Services:catalog:Timeout:PerAttempt"] = "00:00:05" },
            services => services.AddSingleton<IServiceDiscoveryProvider>(provider).AddSingleton<TimeProvider>(time));

        // The clock moves only once the call waits for discovery (its 5 s wait is armed).
        var first = governed.Client.GetAsync("http://catalog/");
        await time.WaitForTimersAsync(TimeSpan.FromSeconds(5), 1).WaitAsync(TimeSpan.FromSeconds(30));
        time.Advance(TimeSpan.FromSeconds(4));
        Assert.False(first.IsCompleted);
        time.Advance(TimeSpan.FromSeconds(1));
        var ex = await Assert.ThrowsAsync<NoAvailableEndpointException>(() => first.WaitAsync(TimeSpan.FromSeconds(30)));

        Assert.Equal("Service 'catalog' has no available endpoint: discovery (Manual) did not resolve the service within 00:00:05", ex.Message);
    }

    [Fact]
    public async Task GetAsync_ProviderListsAnEndpointTwice_UsedOnceAndLoggedOnce()
    {
        // A custom provider answers [a, a (weight 5), b, a]: a is one endpoint (first listed, weight 1), so RoundRobin gives a
        // and b half each, not two thirds and one third; each duplicated address is logged once per answer.
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        var provider = new ManualProvider();
        var logs = new CapturingLoggerProvider();
        await using var governed = Governed.Create(
            new Dictionary<string, string?> { ["Services:catalog:Discovery"] = "Manual", ["Services:catalog:LoadBalancer:Policy"] = "RoundRobin" },
            services => services.AddSingleton<IServiceDiscoveryProvider>(provider).AddLogging(l => l.AddProvider(logs)));
        provider.Resolve([new ServiceEndpoint(a.Address), new ServiceEndpoint(a.Address, weight: 5), new ServiceEndpoint(b.Address), new ServiceEndpoint(a.Address)]);

        for (var i = 0; i < 300; i++)
        {
            using var response = await governed.Client.GetAsync("http://catalog/").WaitAsync(TimeSpan.FromSeconds(30));
            response.EnsureSuccessStatusCode();
        }

        var runtime = Governance.Tests.LoadBalancing.Traffic.Runtime(governed);
        Assert.Equal(2, runtime.Endpoints.All.Length);
        Assert.Equal(1, runtime.Endpoints.All.Single(s => s.Endpoint.Address.Port == a.Port).Endpoint.Weight);
        Assert.Equal(150, a.RequestCount);
        Assert.Equal(150, b.RequestCount);
        var warning = Assert.Single(logs.Entries, e => e.EventId.Id == Governance.Telemetry.GovernanceEventIds.DuplicateEndpoint);
        Assert.Contains(new ServiceEndpoint(a.Address).Authority, warning.Message, StringComparison.Ordinal);
    }

    /// <summary>A provider whose single answer the test gives by hand.</summary>
    private sealed class ManualProvider : IServiceDiscoveryProvider, IServiceEndpointWatcher
    {
        private CancellationTokenSource _changed = new();

        public string Name => "Manual";

        public IReadOnlyList<ServiceEndpoint>? Current { get; private set; }

        public IServiceEndpointWatcher Watch(string serviceName, ServiceOptions options) => this;

        public IChangeToken GetChangeToken() => new CancellationChangeToken(_changed.Token);

        public void Resolve(IReadOnlyList<ServiceEndpoint> endpoints)
        {
            // A fired token is never handed out again: the next one is for the next change.
            var fired = _changed;
            _changed = new CancellationTokenSource();
            Current = endpoints;
            fired.Cancel();
        }

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
