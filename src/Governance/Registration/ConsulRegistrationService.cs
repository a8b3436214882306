using Governance.Configuration;
using Governance.Discovery.Consul;
using Governance.Telemetry;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Governance.Registration;

/// <summary>
/// Registers this application in Consul once the host has started (after the server listens), keeps it registered
/// (TTL heartbeats every third of the TTL; with an HTTP check or none, a look-up every 30 s) and registers it again
/// when the agent has forgotten it (agent restart); deregisters it when the host begins a graceful shutdown, before the
/// server stops accepting requests. A failed registration is logged and retried with backoff; it stops the host only
/// with <c>Registration:FailFast</c>. Does nothing unless <c>MeshGovernance:Registration</c> is present.
/// </summary>
internal sealed partial class ConsulRegistrationService : IHostedLifecycleService, IAsyncDisposable, IDisposable
{
    /// <summary>What Consul before 1.10 answers (500) a heartbeat of a check it does not know.</summary>
    private const string UnknownTtlCheck = "does not have associated TTL";

    private readonly IOptionsMonitor<GovernanceOptions> _options;
    private readonly ConsulHttpClient _http;
    private readonly TimeProvider _time;
    private readonly IConfiguration? _configuration;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly object _gate = new();
    private RegistrationSettings? _settings;
    private IDisposable? _changes;
    private Task _loop = Task.CompletedTask;
    private volatile bool _registered;

    /// <summary>
    /// Whether Consul may have this instance although <see cref="_registered"/> is false: a register request left and no
    /// answer came back (cancelled at shutdown, timed out, connection lost), so the agent may have applied it.
    /// </summary>
    private volatile bool _mayBeRegistered;

    /// <summary>Whether deregistration was tried (on graceful stop): disposal does not try again.</summary>
    private bool _deregistrationTried;
    private bool _stopped;

    public ConsulRegistrationService(IOptionsMonitor<GovernanceOptions> options, ConsulHttpClient http, TimeProvider time, ILoggerFactory loggerFactory, IConfiguration? configuration = null)
    {
        _options = options;
        _http = http;
        _time = time;
        _configuration = configuration;
        _logger = loggerFactory.CreateLogger("Governance.Registration");
    }

    /// <summary>Gets or sets how environment variables are read (a seam for tests).</summary>
    internal Func<string, string?> Environment { get; set; } = System.Environment.GetEnvironmentVariable;

    /// <summary>Gets or sets how the address of a wildcard listener is found (a seam for tests).</summary>
    internal Func<string?> HostAddress { get; set; } = ListeningAddress.FindHostAddress;

    /// <summary>Gets a value indicating whether Consul currently has this instance, as far as this service knows.</summary>
    internal bool IsRegistered => _registered;

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StartedAsync(CancellationToken cancellationToken)
    {
        var settings = RegistrationSettings.Create(_options.CurrentValue, _configuration, Environment, HostAddress);
        if (settings is null)
        {
            return;
        }

        _settings = settings;
        _changes = _options.OnChange(OnOptionsChanged);
        var failures = 0;
        try
        {
            await RegisterAsync(settings, cancellationToken).ConfigureAwait(false);
        }
        catch (ConsulApiException ex)
        {
            if (settings.FailFast)
            {
                throw new InvalidOperationException($"MeshGovernance could not register instance '{settings.InstanceId}' of service '{settings.ServiceName}' in Consul, and {settings.Section}:FailFast is true, so the host does not start. {ex.Message}", ex);
            }

            failures = 1;
            LogRegistrationFailed(_logger, settings.InstanceId, settings.ServiceName, ex.Message, settings.Section);
        }

        lock (_gate)
        {
            if (!_stopped)
            {
                var stop = _stop.Token;
                _loop = Task.Run(() => MaintainAsync(settings, failures, stop), CancellationToken.None);
            }
        }
    }

    public Task StoppingAsync(CancellationToken cancellationToken) => StopAndDeregisterAsync(cancellationToken);

    public Task StopAsync(CancellationToken cancellationToken) => StopLoopAsync();

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// Stops the loop and deregisters the instance if it is (or may be) still registered: the host did not stop it
    /// gracefully (its start failed after this service registered, for example another service's start threw), and an
    /// instance left behind would stay in Consul, passing forever without a check.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        _changes?.Dispose();
        await StopAndDeregisterAsync(CancellationToken.None).ConfigureAwait(false);
        _stop.Dispose();
    }

    /// <summary>Stops the loop without waiting for it (a container disposed synchronously); no deregistration.</summary>
    public void Dispose()
    {
        _changes?.Dispose();
        _ = StopLoopAsync();
    }

    /// <summary>
    /// Registration is read once, when the host starts: a reload that changes it is not applied, and says so (instead of
    /// a silent "configuration applied").
    /// </summary>
    private void OnOptionsChanged(GovernanceOptions options, string? name)
    {
        if (_settings is not { } inForce || (name is not null && name != Options.DefaultName))
        {
            return;
        }

        try
        {
            if (!inForce.SameAs(RegistrationSettings.Create(options, _configuration, Environment, HostAddress)))
            {
                LogRegistrationChangeIgnored(_logger, inForce.Section, inForce.InstanceId);
            }
        }
#pragma warning disable CA1031 // An edit that could not even be read is not applied either; validation logs why.
        catch (Exception)
#pragma warning restore CA1031
        {
            LogRegistrationChangeIgnored(_logger, inForce.Section, inForce.InstanceId);
        }
    }

    private async Task StopAndDeregisterAsync(CancellationToken cancellationToken)
    {
        await StopLoopAsync().ConfigureAwait(false);
        var registered = _registered;
        if (_settings is not { } settings || !(registered || _mayBeRegistered) || _deregistrationTried)
        {
            return;
        }

        _deregistrationTried = true;

        using var timeout = new CancellationTokenSource(ConsulConstants.DeregistrationTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        try
        {
            await _http.DeregisterAsync(settings.Connection, settings.InstanceId, settings.ServiceName, linked.Token).ConfigureAwait(false);
            _registered = false;
            _mayBeRegistered = false;
            LogDeregistered(_logger, settings.InstanceId, settings.ServiceName, settings.Connection.ToString());
        }
        catch (ConsulApiException ex) when (!registered && ex.StatusCode == 404)
        {
            // The register request whose answer never came had not been applied: nothing to remove.
            _mayBeRegistered = false;
            LogNotRegistered(_logger, settings.InstanceId, settings.ServiceName);
        }
        catch (Exception ex) when (ex is ConsulApiException or OperationCanceledException)
        {
            LogDeregistrationFailed(_logger, settings.InstanceId, settings.ServiceName, ex.Message);
        }
    }

    private async Task StopLoopAsync()
    {
        Task loop;
        lock (_gate)
        {
            if (!_stopped)
            {
                _stopped = true;
                _stop.Cancel();
            }

            loop = _loop;
        }

        await loop.ConfigureAwait(false);
    }

    private async Task RegisterAsync(RegistrationSettings settings, CancellationToken cancellationToken)
    {
        try
        {
            await _http.RegisterAsync(settings.Connection, settings.Request, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not ConsulApiException { StatusCode: not null })
        {
            // No answer: the request may have reached the agent, which may have applied it; deregister on the way out.
            _mayBeRegistered = true;
            throw;
        }

        _registered = true;
        var request = settings.Request;
        var check = request.Check is null ? "no check" : request.Check.Ttl is { } ttl ? $"TTL check of {ttl}" : $"HTTP check of {request.Check.Http} every {request.Check.Interval}";
        LogRegistered(_logger, settings.InstanceId, settings.ServiceName, $"{request.Address}:{request.Port}", check, settings.Connection.ToString());
    }

    /// <summary>
    /// The agent lost the instance (restarted without its data): registers it again. Deregistration on the way out is
    /// still tried whatever happens here: the agent may hold the instance after all (a 404 then says there was nothing to
    /// remove).
    /// </summary>
    private Task RegisterAgainAsync(RegistrationSettings settings, string reason, CancellationToken stop)
    {
        _registered = false;
        _mayBeRegistered = true;
        LogRegistrationLost(_logger, settings.InstanceId, settings.ServiceName, reason);
        return RegisterAsync(settings, stop);
    }

    private async Task MaintainAsync(RegistrationSettings settings, int failures, CancellationToken stop)
    {
        // TTL heartbeats start at a fixed rate from the previous one's start (a slow one does not push the next back), and
        // sooner after one that failed; each may take until the next is due (RegistrationSettings.HeartbeatRetryInterval).
        long? heartbeatStarted = null;
        var heartbeatFailed = false;
        while (!stop.IsCancellationRequested)
        {
            try
            {
                TimeSpan delay;
                if (_registered && settings.Ttl is not null && heartbeatStarted is { } started)
                {
                    var due = (heartbeatFailed ? settings.HeartbeatRetryInterval : settings.HeartbeatInterval) - _time.GetElapsedTime(started);
                    delay = due > TimeSpan.Zero ? due : TimeSpan.Zero;
                }
                else
                {
                    delay = _registered ? settings.HeartbeatInterval : ConsulConstants.Backoff(failures);
                }

                await Task.Delay(delay, _time, stop).ConfigureAwait(false);
                if (!_registered)
                {
                    await RegisterAsync(settings, stop).ConfigureAwait(false);
                }
                else if (settings.Ttl is not null)
                {
                    heartbeatStarted = _time.GetTimestamp();
                    heartbeatFailed = true;
                    try
                    {
                        using var bounded = new CancellationTokenSource(settings.HeartbeatRetryInterval, _time);
                        using var linked = CancellationTokenSource.CreateLinkedTokenSource(stop, bounded.Token);
                        try
                        {
                            await _http.PassCheckAsync(settings.Connection, settings.CheckId, settings.ServiceName, linked.Token).ConfigureAwait(false);
                        }
                        catch (OperationCanceledException) when (bounded.IsCancellationRequested && !stop.IsCancellationRequested)
                        {
                            throw new TimeoutException($"the agent did not answer the heartbeat within {settings.HeartbeatRetryInterval}");
                        }

                        heartbeatFailed = false;
                    }
                    catch (ConsulApiException ex) when (ex.StatusCode is 404 || (ex.StatusCode is 500 && ex.Message.Contains(UnknownTtlCheck, StringComparison.Ordinal)))
                    {
                        // After an agent restart without its data, the check is unknown: 404 "Unknown check ID" (Consul
                        // 1.10 and later) or 500 "CheckID ... does not have associated TTL" (earlier). Any other 500 (no
                        // cluster leader, say) is a failed heartbeat, retried.
                        await RegisterAgainAsync(settings, ex.Message, stop).ConfigureAwait(false);
                    }
                }
                else if (!await _http.IsRegisteredAsync(settings.Connection, settings.InstanceId, settings.ServiceName, stop).ConfigureAwait(false))
                {
                    await RegisterAgainAsync(settings, "the agent no longer knows the instance", stop).ConfigureAwait(false);
                }

                failures = 0;
            }
            catch (Exception) when (stop.IsCancellationRequested)
            {
                // Stopping: a cancelled request, or one whose client the container disposed first (synchronous disposal).
                return;
            }
#pragma warning disable CA1031 // The loop keeps the instance registered for the host's lifetime: it must survive anything.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                // ConsulApiException carries Consul's own message; anything else (a bug, an unexpected failure) is logged
                // the same way rather than ending the heartbeats silently.
                failures++;
                var message = ex is ConsulApiException or TimeoutException ? ex.Message : ex.ToString();
                if (_registered)
                {
                    LogHeartbeatFailed(_logger, settings.InstanceId, settings.ServiceName, message);
                }
                else
                {
                    LogRegistrationFailed(_logger, settings.InstanceId, settings.ServiceName, message, settings.Section);
                }
            }
        }
    }

    [LoggerMessage(GovernanceEventIds.Registered, LogLevel.Information, "Registered instance {InstanceId} of service {Service} at {Address} with {Check} in Consul at {Consul}")]
    private static partial void LogRegistered(ILogger logger, string instanceId, string service, string address, string check, string consul);

    [LoggerMessage(GovernanceEventIds.RegistrationFailed, LogLevel.Error, "Could not register instance {InstanceId} of service {Service} in Consul; retrying in the background (set {Section}:FailFast to true to stop the host instead): {Error}")]
    private static partial void LogRegistrationFailed(ILogger logger, string instanceId, string service, string error, string section);

    [LoggerMessage(GovernanceEventIds.RegistrationLost, LogLevel.Warning, "Consul lost instance {InstanceId} of service {Service} (agent restarted?); registering it again: {Reason}")]
    private static partial void LogRegistrationLost(ILogger logger, string instanceId, string service, string reason);

    [LoggerMessage(GovernanceEventIds.RegistrationHeartbeatFailed, LogLevel.Warning, "Could not confirm the registration of instance {InstanceId} of service {Service} with Consul: {Error}")]
    private static partial void LogHeartbeatFailed(ILogger logger, string instanceId, string service, string error);

    [LoggerMessage(GovernanceEventIds.RegistrationChangeIgnored, LogLevel.Warning, "{Section} changed, but registration is read once, when the host starts: instance {InstanceId} stays registered as it was until the next start")]
    private static partial void LogRegistrationChangeIgnored(ILogger logger, string section, string instanceId);

    [LoggerMessage(GovernanceEventIds.Deregistered, LogLevel.Information, "Deregistered instance {InstanceId} of service {Service} from Consul at {Consul}")]
    private static partial void LogDeregistered(ILogger logger, string instanceId, string service, string consul);

    [LoggerMessage(GovernanceEventIds.DeregistrationNotNeeded, LogLevel.Debug, "Instance {InstanceId} of service {Service} was not registered in Consul (its last register request had no answer): nothing to deregister")]
    private static partial void LogNotRegistered(ILogger logger, string instanceId, string service);

    [LoggerMessage(GovernanceEventIds.DeregistrationFailed, LogLevel.Warning, "Could not deregister instance {InstanceId} of service {Service} from Consul; Consul removes it once its check has been critical for DeregisterCriticalServiceAfter: {Error}")]
    private static partial void LogDeregistrationFailed(ILogger logger, string instanceId, string service, string error);
}
