using System.Collections.Frozen;
using System.Diagnostics.CodeAnalysis;
using Governance.Configuration;
using Governance.Discovery;
using Governance.LoadBalancing;
using Governance.Resilience;
using Governance.Telemetry;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Governance.Pipeline;

/// <summary>
/// The live state of every governed service, built from <see cref="GovernanceOptions"/> and rebuilt on reload.
/// An invalid first configuration throws <see cref="OptionsValidationException"/> with every error; an invalid reload
/// is logged and the last good configuration stays in force. Requests read one immutable dictionary.
/// </summary>
internal sealed partial class GovernanceRuntime : IAsyncDisposable, IDisposable
{
    private readonly object _gate = new();

    /// <summary>Held while a configuration is validated and put in force: one apply at a time, whichever thread reloads.</summary>
    private readonly object _applyGate = new();
    private readonly IOptionsMonitor<GovernanceOptions> _options;
    private readonly GovernanceOptionsValidator _validator;
    private readonly LoadBalancingPolicyRegistry _policies;
    private readonly ServiceDiscoveryProviderRegistry _discovery;
    private readonly ILoggerFactory _loggerFactory;
    private readonly TimeProvider _time;
    private readonly GovernanceInstrumentation _instrumentation;
    private readonly ILogger _logger;
    private readonly IDisposable? _subscription;
    private volatile FrozenDictionary<string, ServiceRuntime> _services = FrozenDictionary<string, ServiceRuntime>.Empty;
    private GovernanceOptions? _seen;

    /// <summary>Whether a configured section existed in the configuration in force (one that vanishes since is rejected).</summary>
    private bool _sectionFound;
    private bool _disposed;

    public GovernanceRuntime(
        IOptionsMonitor<GovernanceOptions> options,
        GovernanceOptionsValidator validator,
        LoadBalancingPolicyRegistry policies,
        ServiceDiscoveryProviderRegistry discovery,
        TimeProvider time,
        GovernanceInstrumentation instrumentation,
        ILoggerFactory loggerFactory)
    {
        _time = time;
        _instrumentation = instrumentation;
        _validator = validator;
        _policies = policies;
        _discovery = discovery;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger("Governance.Configuration");

        _options = options;

        var initial = options.CurrentValue;
        var errors = validator.Validate(initial);
        if (errors.Count > 0)
        {
            throw new OptionsValidationException(Options.DefaultName, typeof(GovernanceOptions), errors);
        }

        if (initial.EverySourceMissing() && initial.Services.Count == 0)
        {
            LogSectionMissing(_logger, "no service is governed");
        }

        lock (_applyGate)
        {
            Apply(initial);
            _sectionFound = initial.AnySourceFound();
            _seen = initial;

            // Subscribed under the gate: a change from now on is applied after this one; a change since the first read
            // is applied here.
            _subscription = options.OnChange(OnChange);
            if (!ReferenceEquals(options.CurrentValue, initial))
            {
                ApplyLatest();
            }
        }

        instrumentation.Observe(() => _services.Values);
    }

    /// <summary>Gets the governed services by logical name (case-insensitive).</summary>
    public FrozenDictionary<string, ServiceRuntime> Services => _services;

    public bool TryGetService(string host, [NotNullWhen(true)] out ServiceRuntime? service) => _services.TryGetValue(host, out service);

    /// <summary>
    /// The service a request's URI names: by its host as written, or, for an internationalized host written in Unicode,
    /// by its ASCII (punycode) form, the only form service names take (validation).
    /// </summary>
    public bool TryGetService(Uri logical, [NotNullWhen(true)] out ServiceRuntime? service)
    {
        var host = logical.Host;
        return _services.TryGetValue(host, out service) || (!System.Text.Ascii.IsValid(host) && _services.TryGetValue(logical.IdnHost, out service));
    }

    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    public async ValueTask DisposeAsync()
    {
        FrozenDictionary<string, ServiceRuntime> services;
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            _subscription?.Dispose();
            services = _services;
        }

        // Every service is stopped even if one fails to (a custom watcher's dispose that throws); the failures are rethrown together.
        List<Exception>? failures = null;
        foreach (var service in services.Values)
        {
            try
            {
                await service.DisposeAsync().ConfigureAwait(false);
            }
#pragma warning disable CA1031 // Collected and rethrown once every service is stopped.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                (failures ??= []).Add(ex);
            }
        }

        if (failures is not null)
        {
            throw new AggregateException("MeshGovernance: stopping some services failed; every service was stopped.", failures);
        }
    }

    private void OnChange(GovernanceOptions changed, string? name)
    {
        if (name is not null && name != Options.DefaultName)
        {
            return;
        }

        // Two sources may reload at once (two files of one ConfigMap), each on its own thread: the applies are serialized,
        // and each puts the latest configuration in force, so an older one never replaces a newer one.
        lock (_applyGate)
        {
            ApplyLatest();
        }
    }

    /// <summary>Validates and applies the monitor's current configuration unless it was already seen. Called under <see cref="_applyGate"/>.</summary>
    private void ApplyLatest()
    {
        try
        {
            // Read inside the try: building the options runs configuration code (a custom IConfigureOptions may throw).
            var options = _options.CurrentValue;
            if (ReferenceEquals(options, _seen))
            {
                return;
            }

            _seen = options;
            var errors = _validator.Validate(options);
            if (errors.Count > 0)
            {
                LogReloadRejected(_logger, errors.Count, string.Join(Environment.NewLine, errors));
                return;
            }

            if (options.EverySourceMissing() && _sectionFound)
            {
                // The section vanished (a file deleted, or emptied by a parse error that a later reload of another
                // source brings in): far more likely a broken deployment than a wish to stop governing every service,
                // which an explicit empty "Services" expresses. The last good configuration stays in force.
                LogSectionMissing(_logger, "the change is rejected and the last good configuration stays in force");
                return;
            }

            Apply(options);
            _sectionFound = options.AnySourceFound();
        }
#pragma warning disable CA1031 // A reload runs on the configuration's change callback: never let it tear that down.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            LogReloadRejected(_logger, 1, ex.ToString());
        }
    }

    private void Apply(GovernanceOptions options)
    {
        // Build every service's settings first so that a failure leaves the running configuration untouched.
        var settings = new List<ServiceSettings>(options.Services.Count);
        foreach (var (name, service) in options.Services)
        {
            settings.Add(ServiceSettings.Create(name, service, options, _policies, _discovery));
        }

        // New services are built before anything changes; if one fails, or putting the configuration in force fails, the
        // services created for it never go into force: their watchers and health checks are stopped. (Services
        // reconfigured before such a failure keep their new settings, which passed validation; only a plug-in's bug can
        // fail there.)
        var current = _services;
        var created = new Dictionary<string, ServiceRuntime>(StringComparer.OrdinalIgnoreCase);
        List<ServiceRuntime> removed = [];
        bool applied;
        try
        {
            foreach (var setting in settings)
            {
                if (!current.ContainsKey(setting.Name))
                {
                    created[setting.Name] = new ServiceRuntime(setting, _time, _instrumentation, _loggerFactory.CreateLogger("Governance.Resilience"));
                }
            }

            applied = ApplyLocked(settings, created, removed);
        }
        catch
        {
            foreach (var service in created.Values)
            {
                _ = StopInBackgroundAsync(service, retire: false);
            }

            throw;
        }

        foreach (var service in removed)
        {
            // A service this reload removed: calls that already read it may still wait for or hold its limiter's permits.
            _ = StopInBackgroundAsync(service, retire: applied);
        }

        if (!applied)
        {
            return;
        }

        LogApplied(_logger, settings.Count, string.Join(", ", settings.ConvertAll(static s => $"{s.Name} ({s.Policy.Name}, {s.Discovery.Name})")));
        WarnIfZoneUnmatched(options);
    }

    /// <summary>Stops a service that is no longer in force, off the reload's thread; a failure is logged (event 1003), not lost.</summary>
    private Task StopInBackgroundAsync(ServiceRuntime service, bool retire) =>
        BackgroundWork.ObserveAsync(retire ? service.RetireAsync : service.DisposeAsync, ex => LogServiceStopFailed(_logger, service.Name, ex));

    /// <summary>
    /// Puts <paramref name="settings"/> in force under the lock: existing services reconfigured, <paramref name="created"/>
    /// ones added, the others listed in <paramref name="removed"/>. Returns <see langword="false"/> when the runtime was
    /// disposed meanwhile (then every created service is listed in <paramref name="removed"/>).
    /// </summary>
    private bool ApplyLocked(List<ServiceSettings> settings, Dictionary<string, ServiceRuntime> created, List<ServiceRuntime> removed)
    {
        lock (_gate)
        {
            if (_disposed)
            {
                removed.AddRange(created.Values);
                return false;
            }

            var current = _services;
            var next = new Dictionary<string, ServiceRuntime>(StringComparer.OrdinalIgnoreCase);
            foreach (var setting in settings)
            {
                if (current.TryGetValue(setting.Name, out var existing))
                {
                    existing.Reconfigure(setting);
                    next[setting.Name] = existing;
                }
                else
                {
                    next[setting.Name] = created[setting.Name];
                }
            }

            foreach (var (name, service) in current)
            {
                if (!next.ContainsKey(name))
                {
                    removed.Add(service);
                }
            }

            _services = next.ToFrozenDictionary(StringComparer.OrdinalIgnoreCase);
            return true;
        }
    }

    /// <summary>
    /// A likely typo: <c>Application:Zone</c> is set, configured endpoints name zones, and none names this one, so zone
    /// preference is off everywhere (every zone is remote). Not checked against discovered endpoints, which come later and
    /// may legitimately live elsewhere.
    /// </summary>
    private void WarnIfZoneUnmatched(GovernanceOptions options)
    {
        var zone = options.Application?.Zone?.Trim();
        if (string.IsNullOrEmpty(zone))
        {
            return;
        }

        var zones = new SortedSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var service in options.Services.Values)
        {
            foreach (var endpoint in service?.Endpoints ?? [])
            {
                if (endpoint?.Zone?.Trim() is { Length: > 0 } endpointZone)
                {
                    if (string.Equals(endpointZone, zone, StringComparison.OrdinalIgnoreCase))
                    {
                        return;
                    }

                    zones.Add(endpointZone);
                }
            }
        }

        if (zones.Count > 0)
        {
            LogZoneUnmatched(_logger, $"{options.KeyPrefix()}Application:Zone", zone, string.Join(", ", zones));
        }
    }

    [LoggerMessage(GovernanceEventIds.ConfigurationSectionMissing, LogLevel.Warning, "MeshGovernance configuration: no configured section exists (a misspelled section name, or a file deleted or that failed to parse): {Consequence}")]
    private static partial void LogSectionMissing(ILogger logger, string consequence);

    [LoggerMessage(GovernanceEventIds.ConfigurationApplied, LogLevel.Information, "MeshGovernance configuration applied: {Count} services: {Services}")]
    private static partial void LogApplied(ILogger logger, int count, string services);

    [LoggerMessage(GovernanceEventIds.ApplicationZoneUnmatched, LogLevel.Warning, "{Key} '{Zone}' matches the Zone of no configured endpoint (zones configured: {Zones}): zone-aware routing prefers no endpoint until endpoints of that zone appear")]
    private static partial void LogZoneUnmatched(ILogger logger, string key, string zone, string zones);

    [LoggerMessage(GovernanceEventIds.ServiceStopFailed, LogLevel.Warning, "Service {Service}, no longer in force, could not be stopped cleanly")]
    private static partial void LogServiceStopFailed(ILogger logger, string service, Exception exception);

    [LoggerMessage(GovernanceEventIds.ConfigurationReloadRejected, LogLevel.Warning, "MeshGovernance configuration change rejected with {Count} errors; the last good configuration stays in force.\n{Errors}")]
    private static partial void LogReloadRejected(ILogger logger, int count, string errors);
}
