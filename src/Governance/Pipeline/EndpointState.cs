using Governance.Resilience;

namespace Governance.Pipeline;

/// <summary>Why an endpoint is out of load balancing; several may hold at once.</summary>
[Flags]
internal enum EndpointConditions
{
    None = 0,

    /// <summary>Taken out by an operator or a test.</summary>
    Disabled = 1,

    /// <summary>Its circuit breaker is open.</summary>
    CircuitOpen = 2,

    /// <summary>Ejected by outlier detection.</summary>
    Ejected = 4,

    /// <summary>Failed active health checks.</summary>
    FailedHealthCheck = 8,
}

/// <summary>
/// Live state of one endpoint of one service, kept across endpoint-set rebuilds (matched by <c>scheme://host:port</c>)
/// so that in-flight counts, breaker state and ejections survive reloads and discovery updates.
/// </summary>
internal sealed class EndpointState
{
    private int _activeRequests;
    private int _conditions;
    private int _consecutive5xx;
    private int _consecutiveGatewayFailures;
    private RewriteEntry? _lastRewrite;

    public EndpointState(ServiceEndpoint endpoint)
    {
        Endpoint = endpoint;
        Authority = endpoint.Authority;
        Host = endpoint.Address.Host;
        BoxedPort = endpoint.Address.Port;
    }

    /// <summary>Gets or sets the latest description of the endpoint (weight, zone and metadata may change on reload).</summary>
    public ServiceEndpoint Endpoint { get; set; }

    public string Authority { get; }

    /// <summary>Gets the host, for the <c>server.address</c> telemetry tag.</summary>
    public string Host { get; }

    /// <summary>Gets the port, boxed once for the <c>server.port</c> telemetry tag.</summary>
    public object BoxedPort { get; }

    public int ActiveRequests => Volatile.Read(ref _activeRequests);

    /// <summary>Gets why the endpoint is out of load balancing (<see cref="EndpointConditions.None"/> when it is in).</summary>
    public EndpointConditions Conditions => (EndpointConditions)Volatile.Read(ref _conditions);

    /// <summary>Gets a value indicating whether the endpoint may take new requests.</summary>
    public bool IsAvailable => Volatile.Read(ref _conditions) == 0;

    /// <summary>Gets or sets the endpoint's circuit breaker (with the settings it was built from), or <see langword="null"/> when breaking is off.</summary>
    public EndpointBreaker? Breaker { get; set; }

    /// <summary>Gets or sets how many times outlier detection ejected the endpoint in a row (drives the ejection length).</summary>
    public int EjectionCount { get; set; }

    /// <summary>Gets or sets when the endpoint was last readmitted after an ejection (timestamp of the service's clock).</summary>
    public long LastReadmittedAt { get; set; }

    public void OnRequestStarted() => Interlocked.Increment(ref _activeRequests);

    public void OnRequestEnded() => Interlocked.Decrement(ref _activeRequests);

    /// <summary>Sets or clears a condition; returns <see langword="true"/> when availability changed.</summary>
    public bool Set(EndpointConditions condition, bool on)
    {
        while (true)
        {
            var before = Volatile.Read(ref _conditions);
            var after = on ? before | (int)condition : before & ~(int)condition;
            if (Interlocked.CompareExchange(ref _conditions, after, before) == before)
            {
                return (before == 0) != (after == 0);
            }
        }
    }

    /// <summary>Sets availability as an operator would (<see cref="EndpointConditions.Disabled"/>); returns <see langword="true"/> when it changed.</summary>
    public bool SetAvailable(bool available) => Set(EndpointConditions.Disabled, !available);

    /// <summary>Counts one attempt's result for outlier detection; returns the consecutive (5xx, gateway) failure counts.</summary>
    public (int Consecutive5xx, int ConsecutiveGatewayFailures) RecordOutcome(AttemptFailure failure) =>
        (Count(ref _consecutive5xx, (failure & AttemptFailure.CountsAs5xx) != 0),
         Count(ref _consecutiveGatewayFailures, (failure & AttemptFailure.CountsAsGatewayFailure) != 0));

    public void ResetOutlierCounters()
    {
        Volatile.Write(ref _consecutive5xx, 0);
        Volatile.Write(ref _consecutiveGatewayFailures, 0);
    }

    /// <summary>
    /// Returns <paramref name="logical"/> with this endpoint's scheme, host and port. The last result is cached, so
    /// repeated calls with the same path and query (the common case of a client hitting one resource) allocate nothing;
    /// <see cref="Uri"/> is immutable, so the cached instance is shared safely between concurrent requests.
    /// </summary>
    public Uri Rewrite(Uri logical)
    {
        var last = _lastRewrite;
        if (last is not null && (ReferenceEquals(last.Logical, logical) || string.Equals(last.Logical.OriginalString, logical.OriginalString, StringComparison.Ordinal)))
        {
            return last.Physical;
        }

        var physical = new Uri(string.Concat(Authority, logical.PathAndQuery), UriKind.Absolute);
        _lastRewrite = new RewriteEntry(logical, physical);
        return physical;
    }

    private static int Count(ref int counter, bool failed)
    {
        if (failed)
        {
            return Interlocked.Increment(ref counter);
        }

        // Avoid a write (and cache-line traffic) on the common all-good path.
        if (Volatile.Read(ref counter) != 0)
        {
            Volatile.Write(ref counter, 0);
        }

        return 0;
    }

    private sealed record RewriteEntry(Uri Logical, Uri Physical);
}
