using System.Collections.Concurrent;
using Governance.Configuration;
using Governance.Discovery;
using Governance.Pipeline;
using Governance.Tests.Infrastructure;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;
using Xunit.Abstractions;

namespace Governance.Tests.Pipeline;

/// <summary>The runtime across reloads and disposal: concurrent reloads from two sources, services that fail to stop.</summary>
public sealed class GovernanceRuntimeTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Reload_TwoSourcesAtOnce_LatestConfigurationInForceAndNoServiceLeaked()
    {
        var discovery = new CountingProvider();
        var first = new EditableConfiguration();
        var second = new EditableConfiguration();
        // Two sections, each from its own configuration with its own change token, so that reloads of one do not wait
        // for the other's.
        var one = new ConfigurationBuilder()
            .AddInMemoryCollection(new Dictionary<string, string?> { ["MeshGovernance:Services:base:Discovery"] = CountingProvider.ProviderName })
            .Add(first)
            .Build();
        var two = new ConfigurationBuilder().Add(second).Build();
        var services = new ServiceCollection();
        services.AddSingleton<IServiceDiscoveryProvider>(discovery);
        services.AddMeshGovernance(one.GetSection("MeshGovernance"));
        services.AddMeshGovernance(two.GetSection("MeshGovernance"));
        await using var provider = services.BuildServiceProvider();
        var runtime = provider.GetRequiredService<GovernanceRuntime>();

        // Each thread adds and removes its own service, 300 times; every apply builds or disposes a service.
        const int Rounds = 300;
        using var start = new Barrier(2);
        void Toggle(EditableConfiguration source, string name)
        {
            start.SignalAndWait();
            for (var i = 0; i < Rounds; i++)
            {
                source.Change($"MeshGovernance:Services:{name}:Discovery", i % 2 == 0 ? CountingProvider.ProviderName : null);
            }

            source.Change($"MeshGovernance:Services:{name}:Discovery", CountingProvider.ProviderName);
        }

        await Task.WhenAll(Task.Run(() => Toggle(first, "one")), Task.Run(() => Toggle(second, "two"))).WaitAsync(TimeSpan.FromSeconds(60));

        // Disposals run in the background: wait until the watchers of removed services are gone.
        var settled = await discovery.WaitUntilAsync(live => live.Count == 3);
        var live = string.Join(", ", discovery.Live.GroupBy(n => n).OrderBy(g => g.Key).Select(g => $"{g.Key} x{g.Count()}"));
        output.WriteLine($"services in force: {string.Join(", ", runtime.Services.Keys.Order())}; live watchers: {live}; watchers created: {discovery.Created}");
        Assert.Equal(["base", "one", "two"], runtime.Services.Keys.Order());
        Assert.True(settled, $"watchers of services no longer in force are still live (leaked): {live}");
    }

    [Fact]
    public async Task DisposeAsync_WatchersThatThrowOnDispose_EveryServiceIsStoppedAndTheFailuresReported()
    {
        var discovery = new CountingProvider { ThrowOnDispose = true };
        var services = new ServiceCollection();
        services.AddSingleton<IServiceDiscoveryProvider>(discovery);
        services.AddMeshGovernance(o =>
        {
            foreach (var name in new[] { "one", "two", "three" })
            {
                o.Services[name] = new ServiceOptions { Discovery = CountingProvider.ProviderName };
            }
        });
        var provider = services.BuildServiceProvider();
        _ = provider.GetRequiredService<GovernanceRuntime>();
        Assert.Equal(3, discovery.Live.Count);

        var ex = await Assert.ThrowsAsync<AggregateException>(async () => await provider.DisposeAsync());

        output.WriteLine(ex.Message);
        Assert.Empty(discovery.Live);
        Assert.Equal(3, ex.InnerExceptions.Count);
    }

    [Fact]
    public async Task Reload_OldWatcherThrowsOnDispose_FailureLoggedNotLost()
    {
        var discovery = new CountingProvider { ThrowOnDispose = true };
        var logs = new CapturingLoggerProvider();
        var editable = new EditableConfiguration();
        var services = new ServiceCollection();
        services.AddSingleton<IServiceDiscoveryProvider>(discovery);
        services.AddLogging(l => l.AddProvider(logs));
        services.AddMeshGovernance(new ConfigurationBuilder().Add(editable).Build().GetSection("MeshGovernance"));
        editable.Change("MeshGovernance:Services:one:Discovery", CountingProvider.ProviderName);
        await using var provider = services.BuildServiceProvider();
        _ = provider.GetRequiredService<GovernanceRuntime>();

        // A reload gives the service a new watcher; disposing the old one fails in the background.
        editable.Change("MeshGovernance:Services:one:Retry:MaxRetries", "1");

        await logs.WaitForAsync(e => e.EventId.Id == Governance.Telemetry.GovernanceEventIds.WatcherDisposeFailed).WaitAsync(TimeSpan.FromSeconds(30));
        var logged = Assert.Single(logs.Entries, e => e.EventId.Id == Governance.Telemetry.GovernanceEventIds.WatcherDisposeFailed);
        Assert.Equal("Service one: a discovery watcher it no longer uses could not be disposed", logged.Message);
        discovery.ThrowOnDispose = false;
    }

    /// <summary>A discovery provider that answers at once and counts the watchers not yet disposed.</summary>
    private sealed class CountingProvider : IServiceDiscoveryProvider
    {
        public const string ProviderName = "Counting";

        private readonly ConcurrentDictionary<Watcher, string> _live = new();
        private readonly SemaphoreSlim _changed = new(0);
        private int _created;

        public string Name => ProviderName;

        public int Created => Volatile.Read(ref _created);

        /// <summary>Gets or sets a value indicating whether a watcher's dispose throws (after it is counted out).</summary>
        public bool ThrowOnDispose { get; set; }

        public List<string> Live => [.. _live.Values];

        public IServiceEndpointWatcher Watch(string serviceName, ServiceOptions options)
        {
            Interlocked.Increment(ref _created);
            var watcher = new Watcher(this);
            _live[watcher] = serviceName;
            return watcher;
        }

        /// <summary>Waits (wall-clock guarded) until the live watchers satisfy <paramref name="condition"/>; checked after each disposal.</summary>
        public async Task<bool> WaitUntilAsync(Func<List<string>, bool> condition)
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (!condition(Live))
            {
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero || !await _changed.WaitAsync(left))
                {
                    return false;
                }
            }

            return true;
        }

        private sealed class Watcher(CountingProvider owner) : IServiceEndpointWatcher
        {
            public IReadOnlyList<ServiceEndpoint>? Current { get; } = [new ServiceEndpoint(new Uri("http://127.0.0.1:5001"))];

            public IChangeToken GetChangeToken() => new CancellationChangeToken(CancellationToken.None);

            public ValueTask DisposeAsync()
            {
                owner._live.TryRemove(this, out _);
                owner._changed.Release();
                return owner.ThrowOnDispose ? ValueTask.FromException(new InvalidOperationException("watcher failed to stop")) : ValueTask.CompletedTask;
            }
        }
    }
}
