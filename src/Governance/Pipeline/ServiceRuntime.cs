using Governance.Discovery;
using Governance.LoadBalancing;
using Governance.Telemetry;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;

namespace Governance.Pipeline;

/// <summary>
/// One governed service: its discovery watcher, its endpoint states and the current immutable <see cref="EndpointSet"/>.
/// Rebuilds (reload, discovery update, availability change) happen under a lock off the request path and publish a
/// new set with one volatile write; requests only read.
/// </summary>
internal sealed partial class ServiceRuntime : IAsyncDisposable
{
    private readonly object _gate = new();
    private readonly ILogger _logger;
    private readonly Dictionary<string, EndpointState> _states = new(StringComparer.OrdinalIgnoreCase);
    private volatile ServiceState _state;
    private IServiceEndpointWatcher _watcher;
    private IDisposable? _watcherRegistration;
    private bool _disposed;

    public ServiceRuntime(ServiceSettings settings, ILogger logger)
    {
        Name = settings.Name;
        _logger = logger;
        _watcher = settings.Discovery.Watch(settings.Name, settings.Options);
        _state = Build(settings, _watcher);
        _watcherRegistration = Subscribe(_watcher);
    }

    public string Name { get; }

    public ServiceSettings Settings => _state.Settings;

    public EndpointSet Endpoints => _state.Set;

    /// <summary>Picks the endpoint for one attempt of <paramref name="request"/>.</summary>
    /// <exception cref="NoAvailableEndpointException">No endpoint can take the request.</exception>
    public EndpointState Pick(HttpRequestMessage request)
    {
        var state = _state;
        var header = state.Settings.HashHeader;
        var context = new PickContext(header is null ? null : GetFirstHeaderValue(request, header));
        return state.Set.Pick(context) ?? ThrowNoEndpoint(state);
    }

    /// <summary>Applies new settings (configuration reload), keeping endpoint states that still exist.</summary>
    public void Reconfigure(ServiceSettings settings)
    {
        IServiceEndpointWatcher? oldWatcher;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            oldWatcher = _watcher;
            _watcherRegistration?.Dispose();
            _watcher = settings.Discovery.Watch(settings.Name, settings.Options);
            Publish(Build(settings, _watcher));
            _watcherRegistration = Subscribe(_watcher);
        }

        _ = oldWatcher.DisposeAsync().AsTask();
    }

    /// <summary>Rebuilds the endpoint set after an endpoint's availability changed.</summary>
    public void Refresh()
    {
        lock (_gate)
        {
            if (!_disposed)
            {
                Publish(Build(_state.Settings, _watcher));
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        IServiceEndpointWatcher watcher;
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            _watcherRegistration?.Dispose();
            watcher = _watcher;
        }

        await watcher.DisposeAsync().ConfigureAwait(false);
    }

    private static string? GetFirstHeaderValue(HttpRequestMessage request, string name)
    {
        if (request.Headers.NonValidated.TryGetValues(name, out var values))
        {
            foreach (var value in values)
            {
                return value;
            }
        }

        return null;
    }

    private static EndpointState ThrowNoEndpoint(ServiceState state) =>
        throw new NoAvailableEndpointException(state.Settings.Name, state.Set.EmptyReason);

    private IDisposable Subscribe(IServiceEndpointWatcher watcher) =>
        ChangeToken.OnChange(watcher.GetChangeToken, static state => state.Self.OnEndpointsChanged(state.Watcher), (Self: this, Watcher: watcher));

    private void OnEndpointsChanged(IServiceEndpointWatcher watcher)
    {
        lock (_gate)
        {
            // A late notification from a watcher that a reload replaced is ignored.
            if (!_disposed && ReferenceEquals(watcher, _watcher))
            {
                Publish(Build(_state.Settings, watcher));
            }
        }
    }

    private void Publish(ServiceState state)
    {
        var before = _state.Set;
        _state = state;
        if (!SameEndpoints(before, state.Set) && _logger.IsEnabled(LogLevel.Information))
        {
            LogEndpointsChanged(_logger, Name, state.Set.All.Length, string.Join(", ", Array.ConvertAll(state.Set.All, static s => s.Authority)));
        }
    }

    private static bool SameEndpoints(EndpointSet a, EndpointSet b)
    {
        if (a.All.Length != b.All.Length)
        {
            return false;
        }

        for (var i = 0; i < a.All.Length; i++)
        {
            if (!ReferenceEquals(a.All[i], b.All[i]) || !a.All[i].Endpoint.Equals(b.All[i].Endpoint))
            {
                return false;
            }
        }

        return true;
    }

    private ServiceState Build(ServiceSettings settings, IServiceEndpointWatcher watcher)
    {
        var endpoints = watcher.Current;
        EndpointSet set;
        if (endpoints is null)
        {
            set = EndpointSet.Create(settings.Name, [], settings.LocalZone, settings.Policy, settings.LoadBalancer, $"discovery ({settings.Discovery.Name}) has not resolved the service yet");
        }
        else
        {
            var states = new EndpointState[endpoints.Count];
            var live = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
            for (var i = 0; i < states.Length; i++)
            {
                var endpoint = endpoints[i];
                if (!_states.TryGetValue(endpoint.Authority, out var state))
                {
                    state = new EndpointState(endpoint);
                    _states[endpoint.Authority] = state;
                }

                state.Endpoint = endpoint;
                states[i] = state;
                live.Add(endpoint.Authority);
            }

            // Forget endpoints that left; requests still in flight to them hold their own reference.
            foreach (var authority in _states.Keys.ToArray())
            {
                if (!live.Contains(authority))
                {
                    _states.Remove(authority);
                }
            }

            set = EndpointSet.Create(settings.Name, states, settings.LocalZone, settings.Policy, settings.LoadBalancer);
        }

        return new ServiceState(settings, set);
    }

    [LoggerMessage(GovernanceEventIds.EndpointsChanged, LogLevel.Information, "Service {Service} now has {Count} endpoints: {Endpoints}")]
    private static partial void LogEndpointsChanged(ILogger logger, string service, int count, string endpoints);

    private sealed record ServiceState(ServiceSettings Settings, EndpointSet Set);
}
