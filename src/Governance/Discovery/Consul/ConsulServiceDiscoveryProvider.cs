using Governance.Configuration;
using Governance.Telemetry;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Primitives;

namespace Governance.Discovery.Consul;

/// <summary>
/// Endpoints from Consul's health API (<c>Discovery: Consul</c>). Each service gets a background blocking-query loop;
/// requests only read the loop's last published list. Watchers of the same query share one loop, so the configuration
/// reloads that rebuild every service's watcher neither restart the blocking queries nor forget the known endpoints; a
/// reload that changes the query (agent, token, filters) starts a new loop that serves the old loop's endpoints until
/// its first answer.
/// </summary>
internal sealed class ConsulServiceDiscoveryProvider : IServiceDiscoveryProvider, IAsyncDisposable, IDisposable
{
    private readonly object _gate = new();
    private readonly Dictionary<string, ConsulHealthWatch> _watches = new(StringComparer.Ordinal);
    private readonly IOptionsMonitor<GovernanceOptions> _options;
    private readonly ConsulHttpClient _http;
    private readonly TimeProvider _time;
    private readonly GovernanceInstrumentation _instrumentation;
    private readonly ILogger _logger;
    private bool _disposed;

    public ConsulServiceDiscoveryProvider(IOptionsMonitor<GovernanceOptions> options, ConsulHttpClient http, TimeProvider time, GovernanceInstrumentation instrumentation, ILoggerFactory loggerFactory)
    {
        _options = options;
        _http = http;
        _time = time;
        _instrumentation = instrumentation;
        _logger = loggerFactory.CreateLogger("Governance.Discovery.Consul");
    }

    public string Name => ServiceDiscoveryNames.Consul;

    /// <summary>Watches a service as the configuration the options monitor holds now describes it (a caller outside the runtime).</summary>
    public IServiceEndpointWatcher Watch(string serviceName, ServiceOptions options) => Watch(serviceName, options, _options.CurrentValue);

    /// <summary>
    /// Watches a service as <paramref name="root"/> describes it: the configuration the runtime is applying, whose Consul
    /// connection, datacenter and <c>Defaults</c> were validated with the service's options. The monitor may already hold
    /// a newer configuration (a reload landing meanwhile, perhaps one that validation will reject).
    /// </summary>
    internal IServiceEndpointWatcher Watch(string serviceName, ServiceOptions options, GovernanceOptions root)
    {
        ArgumentNullException.ThrowIfNull(serviceName);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(root);
        var connection = ConsulConnection.Create(root.Consul, root.KeyPrefix())
            ?? throw new InvalidOperationException($"Service '{serviceName}' uses Consul discovery but {root.KeyPrefix()}Consul:Address is not set");
        var query = CreateQuery(serviceName, options, root);
        var key = string.Join('\n', connection.BaseAddress.AbsoluteUri, connection.Token, query.Service.ToUpperInvariant(), query.Datacenter, query.OnlyPassing, query.Wait.Ticks, string.Join('\n', query.Tags));

        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_watches.TryGetValue(key, out var watch))
            {
                IReadOnlyList<ServiceEndpoint>? seed = null;
                foreach (var other in _watches.Values)
                {
                    if (string.Equals(other.Service, query.Service, StringComparison.OrdinalIgnoreCase) && other.Current is { } known)
                    {
                        seed = known;
                    }
                }

                watch = new ConsulHealthWatch(key, connection, query, _http, _time, _instrumentation, _logger, seed);
                _watches.Add(key, watch);
                watch.Start();
            }

            watch.References++;
            return new Watcher(this, watch);
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var watch in TakeAll())
        {
            await watch.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Stops every loop without waiting for it to end (a container disposed synchronously).</summary>
    public void Dispose()
    {
        foreach (var watch in TakeAll())
        {
            _ = watch.DisposeAsync().AsTask();
        }
    }

    private ConsulHealthWatch[] TakeAll()
    {
        lock (_gate)
        {
            _disposed = true;
            ConsulHealthWatch[] watches = [.. _watches.Values];
            _watches.Clear();
            return watches;
        }
    }

    /// <summary>
    /// The query of a service: its own <c>Tags</c> and <c>OnlyPassing</c> over those of <c>Defaults</c>. The runtime's
    /// merged options may not carry these keys, so the configuration being applied fills what they lack.
    /// </summary>
    internal static ConsulHealthQuery CreateQuery(string serviceName, ServiceOptions options, GovernanceOptions root)
    {
        root.Services.TryGetValue(serviceName, out var own);
        var defaults = root.Defaults;
        var tags = options.Tags.Count > 0 ? options.Tags
            : own is { Tags.Count: > 0 } ? own.Tags
            : defaults?.Tags ?? [];
        var onlyPassing = options.OnlyPassing ?? own?.OnlyPassing ?? defaults?.OnlyPassing ?? true;
        var cleaned = new List<string>(tags.Count);
        foreach (var tag in tags)
        {
            if (!string.IsNullOrWhiteSpace(tag) && !cleaned.Contains(tag.Trim(), StringComparer.Ordinal))
            {
                cleaned.Add(tag.Trim());
            }
        }

        cleaned.Sort(StringComparer.Ordinal);
        var datacenter = string.IsNullOrWhiteSpace(root.Consul?.Datacenter) ? null : root.Consul.Datacenter.Trim();
        return new ConsulHealthQuery(serviceName, cleaned, onlyPassing, datacenter, root.Consul?.WaitTime ?? ConsulConstants.DefaultWaitTime);
    }

    private async ValueTask ReleaseAsync(ConsulHealthWatch watch)
    {
        lock (_gate)
        {
            if (--watch.References > 0 || !_watches.Remove(watch.Key))
            {
                return;
            }
        }

        await watch.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>What <see cref="Watch(string, ServiceOptions, GovernanceOptions)"/> returns: a reference to a shared loop.</summary>
    internal sealed class Watcher(ConsulServiceDiscoveryProvider provider, ConsulHealthWatch watch) : IServiceEndpointWatcher, IReportsDiscoveryError
    {
        private int _disposed;

        public IReadOnlyList<ServiceEndpoint>? Current => watch.Current;

        /// <summary>Gets why the last query failed while Consul keeps failing, or <see langword="null"/>; for the error of a first request that found no answer.</summary>
        public string? LastError => watch.LastError;

        public IChangeToken GetChangeToken() => watch.GetChangeToken();

        public ValueTask DisposeAsync() =>
            Interlocked.Exchange(ref _disposed, 1) == 0 ? provider.ReleaseAsync(watch) : ValueTask.CompletedTask;
    }
}
