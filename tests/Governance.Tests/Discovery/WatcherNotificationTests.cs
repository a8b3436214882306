using Governance.Configuration;
using Governance.Discovery;
using Governance.Pipeline;
using Governance.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Primitives;

namespace Governance.Tests.Discovery;

/// <summary>A discovery notification that is being delivered while the service replaces or drops its watcher.</summary>
public sealed class WatcherNotificationTests
{
    private static readonly TimeSpan Guard = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task Reload_WhileTheOldWatcherNotifiesAChange_NeitherThreadDeadlocks()
    {
        // Deterministic interleaving: the reload builds the new endpoint set under the service's lock, which reads the new
        // watcher's Current; from there the old watcher fires a change on another thread, and Current returns only once
        // that notification is being delivered (ChangeToken asks the watcher for its next token before it calls the
        // service back, and the service's callback then waits for the lock). Disposing the old subscription under the
        // lock would wait for that callback forever: a deadlock of the reload and the discovery thread.
        var provider = new GatedProvider();
        var settings = new Dictionary<string, string?>
        {
            ["Services:catalog:Discovery"] = GatedProvider.ProviderName,
            ["Services:catalog:LoadBalancer:Policy"] = "RoundRobin",
        };
        // Disposed at the end under a guard, not by `await using`: after a deadlock the disposal would wait for the lock
        // forever and the test would hang instead of failing.
        var governed = Governed.Create(settings, services => services.AddSingleton<IServiceDiscoveryProvider>(provider));
        var runtime = governed.Services.GetRequiredService<GovernanceRuntime>();
        var old = Assert.Single(provider.Watchers);
        Task? firing = null;
        provider.OnNextCurrent = () =>
        {
            firing = Task.Run(old.Fire);
            Assert.True(old.Notifying.Wait(Guard), "the old watcher's change was not delivered");
        };

        governed.Configuration["MeshGovernance:Services:catalog:LoadBalancer:Policy"] = "Random";
        var reload = Task.Run(governed.Configuration.Reload);

        await reload.WaitAsync(Guard);

        // xunit's Assert.NotNull takes no message: say why the interleaving did not happen instead of failing on a null.
        Assert.True(firing is not null, "the reload never read the new watcher's Current, so the old watcher never fired its change during the reload");
        await firing.WaitAsync(Guard);
        Assert.True(runtime.TryGetService("catalog", out var service));
        Assert.Equal("Random", service.Settings.Policy.Name);
        Assert.Equal(2, provider.Watchers.Count);
        await governed.DisposeAsync().AsTask().WaitAsync(Guard);
    }

    [Fact]
    public async Task FirstAnswer_PublishedBetweenTheReadAndTheSubscription_IsNotLost()
    {
        // Deterministic interleaving: the service reads Current (no answer yet), then subscribes; the watcher's first answer
        // lands in between (here: as the subscription asks for its change token, which is then the one after that
        // answer and never fires). A stable service publishes nothing more, so a lost first answer left it unresolved:
        // every call waited for discovery and failed.
        await using var server = await LoopbackServer.StartAsync("a");
        var provider = new AnswersWhileSubscribedProvider(new ServiceEndpoint(server.Address));
        await using var governed = Governed.Create(
            new Dictionary<string, string?>
            {
                ["Services:catalog:Discovery"] = AnswersWhileSubscribedProvider.ProviderName,
                ["Services:catalog:Timeout:Total"] = "00:00:05",
                ["Services:catalog:Timeout:PerAttempt"] = "00:00:05",
            },
            services => services.AddSingleton<IServiceDiscoveryProvider>(provider));

        Assert.Equal("a", await governed.GetServerAsync("http://catalog/").WaitAsync(Guard));
    }

    private sealed class AnswersWhileSubscribedProvider(ServiceEndpoint endpoint) : IServiceDiscoveryProvider, IServiceEndpointWatcher
    {
        public const string ProviderName = "answers-while-subscribed";
        private CancellationTokenSource _changed = new();
        private int _tokens;

        public string Name => ProviderName;

        public IReadOnlyList<ServiceEndpoint>? Current { get; private set; }

        public IServiceEndpointWatcher Watch(string serviceName, ServiceOptions options) => this;

        public IChangeToken GetChangeToken()
        {
            if (Interlocked.Increment(ref _tokens) == 1)
            {
                // The first answer, published as a real watcher does: the list, then the token swapped and fired.
                Current = [endpoint];
                Interlocked.Exchange(ref _changed, new CancellationTokenSource()).Cancel();
            }

            return new CancellationChangeToken(Volatile.Read(ref _changed).Token);
        }

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    private sealed class GatedProvider : IServiceDiscoveryProvider
    {
        public const string ProviderName = "gated";

        public string Name => ProviderName;

        public List<GatedWatcher> Watchers { get; } = [];

        /// <summary>Runs once, the first time a watcher created from now on is asked for its endpoints.</summary>
        public Action? OnNextCurrent { get; set; }

        public IServiceEndpointWatcher Watch(string serviceName, ServiceOptions options)
        {
            var hook = OnNextCurrent;
            OnNextCurrent = null;
            var watcher = new GatedWatcher(hook);
            Watchers.Add(watcher);
            return watcher;
        }
    }

    private sealed class GatedWatcher(Action? onFirstCurrent) : IServiceEndpointWatcher
    {
        private CancellationTokenSource _changed = new();
        private Action? _onFirstCurrent = onFirstCurrent;
        private int _tokens;

        public ManualResetEventSlim Notifying { get; } = new();

        public IReadOnlyList<ServiceEndpoint>? Current
        {
            get
            {
                Interlocked.Exchange(ref _onFirstCurrent, null)?.Invoke();
                return [new ServiceEndpoint(new Uri("http://127.0.0.1:5001"))];
            }
        }

        /// <summary>Signals a change; later subscribers get a fresh token, as a real watcher's.</summary>
        public void Fire() => Interlocked.Exchange(ref _changed, new CancellationTokenSource()).Cancel();

        public IChangeToken GetChangeToken()
        {
            // The first call subscribes; a later one is ChangeToken delivering a change (it asks for the next token first).
            if (Interlocked.Increment(ref _tokens) > 1)
            {
                Notifying.Set();
            }

            return new CancellationChangeToken(Volatile.Read(ref _changed).Token);
        }

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
