using Governance.Telemetry;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;

namespace Governance.Discovery.Consul;

/// <summary>
/// The blocking-query loop of one Consul service (one query: service, filters, agent, token), shared by every watcher
/// of that query so that a configuration reload does not restart it. It publishes a new immutable endpoint list only
/// when Consul's answer changes, and on errors keeps the last list.
/// </summary>
/// <remarks>
/// Follows Consul's rules for blocking queries: the index comes from <c>X-Consul-Index</c>; an index that goes backwards
/// restarts the loop from 0; an index of 0 is read as 1 so that the next query blocks; an answer with the same index is
/// no change; the loop is rate limited by a token bucket (burst 2, then one query per 2 s) so that a churning service
/// degrades into polling instead of a busy loop; failures back off exponentially with jitter (1 s doubling to 30 s).
/// Every wait runs on the <see cref="TimeProvider"/>.
/// </remarks>
internal sealed partial class ConsulHealthWatch : IAsyncDisposable
{
    private readonly ConsulConnection _connection;
    private readonly ConsulHealthQuery _query;
    private readonly ConsulHttpClient _http;
    private readonly TimeProvider _time;
    private readonly GovernanceInstrumentation _instrumentation;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private volatile IReadOnlyList<ServiceEndpoint>? _current;
    private CancellationTokenSource _changed = new();
    private volatile string? _lastError;

    /// <summary>Instances reported as unusable and still unusable: each is logged once, not on every answer (loop only).</summary>
    private HashSet<string> _skipped = new(StringComparer.Ordinal);
    private Task _loop = Task.CompletedTask;

    // seed: the endpoints another query of the same service last published (a reload changed the query), used until
    // this query's first answer, so that reconfiguring never leaves the service without endpoints.
    public ConsulHealthWatch(string key, ConsulConnection connection, ConsulHealthQuery query, ConsulHttpClient http, TimeProvider time, GovernanceInstrumentation instrumentation, ILogger logger, IReadOnlyList<ServiceEndpoint>? seed = null)
    {
        Key = key;
        _current = seed;
        _connection = connection;
        _query = query;
        _http = http;
        _time = time;
        _instrumentation = instrumentation;
        _logger = logger;
    }

    /// <summary>Gets the identity of the query (never logged: it contains the token).</summary>
    public string Key { get; }

    /// <summary>Gets the Consul service name.</summary>
    public string Service => _query.Service;

    /// <summary>Gets or sets how many watchers use this loop; guarded by the provider's lock.</summary>
    public int References { get; set; }

    /// <summary>Gets the latest endpoints (at first, those of the query this one replaced, if any), or <see langword="null"/> until Consul first answered.</summary>
    public IReadOnlyList<ServiceEndpoint>? Current => _current;

    /// <summary>Gets the last failure's message while the loop is failing, or <see langword="null"/> once Consul answers.</summary>
    public string? LastError => _lastError;

    public IChangeToken GetChangeToken() => new CancellationChangeToken(Volatile.Read(ref _changed).Token);

    public void Start()
    {
        // The loop lives as long as the watch: start it without the context of the request that created it.
        using (Resilience.BackgroundWork.SuppressFlow())
        {
            _loop = Task.Run(() => RunAsync(_stop.Token));
        }
    }

    /// <summary>Stops the loop and waits for it to end.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        try
        {
            await _loop.ConfigureAwait(false);
        }
        finally
        {
            _stop.Dispose();
        }
    }

    private async Task RunAsync(CancellationToken stop)
    {
        ulong index = 0;
        var failures = 0;
        var tokens = (double)ConsulConstants.QueryBurst;
        var refilledAt = _time.GetTimestamp();
        while (!stop.IsCancellationRequested)
        {
            try
            {
                // Token bucket: a couple of queries back to back, then one per QueryInterval while answers keep coming.
                var now = _time.GetTimestamp();
                tokens = Math.Min(ConsulConstants.QueryBurst, tokens + (_time.GetElapsedTime(refilledAt, now) / ConsulConstants.QueryInterval));
                refilledAt = now;
                tokens--;
                if (tokens < 0)
                {
                    await Task.Delay(-tokens * ConsulConstants.QueryInterval, _time, stop).ConfigureAwait(false);
                }

                var answer = await _http.GetServiceHealthAsync(_connection, _query, index, stop).ConfigureAwait(false);
                index = Accept(index, answer);

                // Recovered only once an answer was applied: one that cannot be (Accept throws) is a failure like any
                // other, counted towards the backoff.
                if (failures > 0)
                {
                    LogRecovered(_logger, _query.Service, _connection.ToString(), failures);
                    failures = 0;
                }

                _lastError = null;
            }
            catch (Exception) when (stop.IsCancellationRequested)
            {
                // Stopping: a cancelled query, or the HTTP client disposed under it at shutdown, is not a discovery failure.
                return;
            }
#pragma warning disable CA1031 // The loop must survive anything: it is the service's only source of endpoints.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                failures++;
                var delay = ConsulConstants.Backoff(failures);
                var failedAt = _time.GetTimestamp();
                var message = ex is ConsulApiException ? ex.Message : $"Consul discovery of service '{_query.Service}' failed: {_connection.Redact(ex.Message)}";
                var repeated = string.Equals(message, _lastError, StringComparison.Ordinal);
                _lastError = message;
                _instrumentation.RecordDiscovery(_query.Service, ServiceDiscoveryNames.Consul, error: true);
                var known = _current;
                if (!repeated)
                {
                    LogQueryFailed(_logger, _query.Service, failures, known is null ? "no endpoints are known yet" : $"keeping the {known.Count} last known endpoints", delay, message);
                }
                else if (_logger.IsEnabled(LogLevel.Debug))
                {
                    LogQueryFailedAgain(_logger, _query.Service, failures, delay, message);
                }

                try
                {
                    // Measured from the failure, so that time that passed while logging counts.
                    var remaining = delay - _time.GetElapsedTime(failedAt);
                    if (remaining > TimeSpan.Zero)
                    {
                        await Task.Delay(remaining, _time, stop).ConfigureAwait(false);
                    }
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    return;
                }
            }
        }
    }

    /// <summary>Applies one answer and returns the index of the next query.</summary>
    private ulong Accept(ulong previous, ConsulHealthAnswer answer)
    {
        if (answer.Entries is null)
        {
            return previous; // Same index: no change.
        }

        var skipped = new HashSet<string>(StringComparer.Ordinal);
        var endpoints = ConsulEndpointMapper.Map(
            answer.Entries,
            _query.OnlyPassing,
            (id, reason) =>
            {
                if (skipped.Add(id) && !_skipped.Contains(id))
                {
                    LogInstanceSkipped(_logger, id, _query.Service, reason);
                }
            },
            out var unusable);
        _skipped = skipped;
        if (endpoints.Count == 0 && unusable > 0)
        {
            // Consul listed instances but those that are healthy cannot be used: an error in the registrations, not a
            // service with no instance; the last known endpoints stay. (Instances left out because their checks are
            // critical, or warning when only passing ones are wanted, are not an error: with none left the list is empty,
            // as Consul's own answer with passing=true would be.)
            throw new ConsulApiException($"Consul at {_connection} listed {answer.Entries.Count} instances of service '{_query.Service}' but none that is healthy has a usable address and port");
        }

        if (answer.MayBeFilteredByAcl && _current is not { Count: 0 })
        {
            // Once per turn to empty (the first answer included), not on every query while it stays empty.
            LogEmptyMayBeAclFiltered(_logger, _query.Service, _connection.ToString(), _connection.TokenKey);
        }

        var next = answer.Index;
        if (answer.Index == 0)
        {
            // No usable index (a proxy that strips X-Consul-Index, say): Consul's advice is to go on from 1, since an
            // index of 0 would make every following query return at once. Not "went backwards": nothing is reset.
            next = 1;
        }
        else if (answer.Index < previous)
        {
            LogIndexReset(_logger, _query.Service, previous, answer.Index);
            next = 0;
        }

        Publish(endpoints);
        return next;
    }

    private void Publish(List<ServiceEndpoint> endpoints)
    {
        var current = _current;
        if (current is not null && SameEndpoints(current, endpoints))
        {
            return;
        }

        _current = endpoints.AsReadOnly();
        var changed = Interlocked.Exchange(ref _changed, new CancellationTokenSource());
        changed.Cancel();
    }

    private static bool SameEndpoints(IReadOnlyList<ServiceEndpoint> a, List<ServiceEndpoint> b)
    {
        if (a.Count != b.Count)
        {
            return false;
        }

        for (var i = 0; i < a.Count; i++)
        {
            if (!a[i].Equals(b[i]))
            {
                return false;
            }
        }

        return true;
    }

    [LoggerMessage(GovernanceEventIds.ConsulQueryFailed, LogLevel.Warning, "Consul discovery of service {Service} failed ({Failures} in a row), {Kept}; next query in {Delay}: {Error}")]
    private static partial void LogQueryFailed(ILogger logger, string service, int failures, string kept, TimeSpan delay, string error);

    [LoggerMessage(GovernanceEventIds.ConsulQueryFailedAgain, LogLevel.Debug, "Consul discovery of service {Service} failed again ({Failures} in a row); next query in {Delay}: {Error}")]
    private static partial void LogQueryFailedAgain(ILogger logger, string service, int failures, TimeSpan delay, string error);

    [LoggerMessage(GovernanceEventIds.ConsulQueryRecovered, LogLevel.Information, "Consul discovery of service {Service} at {Consul} works again after {Failures} failed queries")]
    private static partial void LogRecovered(ILogger logger, string service, string consul, int failures);

    [LoggerMessage(GovernanceEventIds.ConsulIndexReset, LogLevel.Information, "Consul index of service {Service} went backwards ({Previous} to {Index}): restarting its blocking query from 0")]
    private static partial void LogIndexReset(ILogger logger, string service, ulong previous, ulong index);

    [LoggerMessage(GovernanceEventIds.ConsulEmptyAnswerMayBeAclFiltered, LogLevel.Warning, "Consul at {Consul} answered that service {Service} has no instance to a query without an ACL token while its default ACL policy is deny: if the agent's default token may not read the service (service:read and node:read), set {TokenKey}; the service has no endpoints now")]
    private static partial void LogEmptyMayBeAclFiltered(ILogger logger, string service, string consul, string tokenKey);

    [LoggerMessage(GovernanceEventIds.ConsulInstanceSkipped, LogLevel.Warning, "Consul instance {InstanceId} of service {Service} is not used: {Reason}")]
    private static partial void LogInstanceSkipped(ILogger logger, string instanceId, string service, string reason);
}
