using System.Runtime.CompilerServices;
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

    /// <summary>
    /// New while active health checks are on, and not probed yet: out of load balancing, and out of what panic mode and
    /// zone-aware routing count, until its first probe decides (Envoy's hosts excluded until their first check).
    /// </summary>
    AwaitingHealthCheck = 16,
}

/// <summary>
/// Live state of one endpoint of one service, kept across endpoint-set rebuilds (matched by <c>scheme://host:port</c>)
/// so that in-flight counts, breaker state and ejections survive reloads and discovery updates.
/// </summary>
internal sealed class EndpointState
{
    /// <summary>The in-flight count until a picker reads it: the calling core's stripe, no line shared between cores.</summary>
    private readonly StripedCounter _inFlightStripes = new();

    /// <summary>
    /// The in-flight count once a picker has read it (see <see cref="ActiveRequests"/>): one counter, written by every
    /// core, alone on its cache lines so that its writes do not invalidate the fields every call reads
    /// (<see cref="_conditions"/>, <see cref="_lastRewrite"/>, <see cref="Breaker"/>, <see cref="Endpoint"/>). Its
    /// <see cref="IsolatedCounter.Flag"/> says whether a picker has read it (read by every attempt and every read, set
    /// once), on the counter's line so that neither attempts nor picks touch another line for it; nobody writes that
    /// line until the flag is set.
    /// </summary>
    private IsolatedCounter _inFlight;

    private int _conditions;
    private int _consecutive5xx;
    private int _consecutiveGatewayFailures;
    private RewriteEntry? _lastRewrite;

    /// <summary>How often the endpoint's circuit opened: a readmission timer acts only for the opening that armed it.</summary>
#pragma warning disable SA1401, CA1051 // Incremented and read with Interlocked/Volatile by ServiceRuntime; never on the request path.
    internal int CircuitOpenings;

    /// <summary>How often outlier detection ejected the endpoint: a readmission timer acts only for the ejection that armed it.</summary>
    internal int Ejections;

    /// <summary>When the endpoint was last readmitted after an ejection (timestamp of the service's clock; 0: never), read and written whole (Volatile).</summary>
    internal long LastReadmittedAt;
#pragma warning restore SA1401, CA1051

    public EndpointState(ServiceEndpoint endpoint)
    {
        Endpoint = endpoint;
        Authority = endpoint.Authority;
        AddressSeed = (long)System.IO.Hashing.XxHash3.HashToUInt64(System.Runtime.InteropServices.MemoryMarshal.AsBytes(endpoint.Authority.ToUpperInvariant().AsSpan()));
        Host = endpoint.Address.Host;
        BoxedPort = endpoint.Address.Port;
    }

    /// <summary>Gets or sets the latest description of the endpoint (weight, zone and metadata may change on reload).</summary>
    public ServiceEndpoint Endpoint { get; set; }

    public string Authority { get; }

    /// <summary>Gets a stable hash of <see cref="Authority"/> (case-insensitive), the endpoint's seed in hashes of a key (the retry fallback of <c>ServiceRuntime.TryPick</c>).</summary>
    public long AddressSeed { get; }

    /// <summary>Gets the host, for the <c>server.address</c> telemetry tag.</summary>
    public string Host { get; }

    /// <summary>Gets the port, boxed once for the <c>server.port</c> telemetry tag.</summary>
    public object BoxedPort { get; }

    /// <summary>
    /// Gets the number of attempts in flight to this endpoint. Least request compares it between two candidates on every
    /// pick; the first read moves the count to a single counter for good.
    /// </summary>
    /// <remarks>
    /// <para>
    /// Every attempt counts itself in and out, from every core. One shared counter costs two cache-line transfers between
    /// cores per attempt (on two cores, more than the rest of an in-memory call); a per-core <see cref="StripedCounter"/>
    /// costs none, but reading it means summing every stripe, each on its own line, for each of the two candidates of
    /// every pick. Measured on 2 cores (least request over real endpoint states, benchmarks/README.md): summing the
    /// stripes on every read made a pick 24-42 ns with 2 stripes and 35-83 ns with 16 (3 to 1,000 endpoints), against
    /// 16-25 ns with one counter, and more while another core counts attempts on the stripes it reads.
    /// </para>
    /// <para>
    /// So the count goes where it is cheapest for who uses it: to the stripes while nobody reads it (round robin, random,
    /// consistent hash, least request with a single candidate, which never compares: no shared write per attempt), and
    /// to <see cref="_inFlight"/> from the first read on (least request with two candidates or more, for which one shared
    /// counter is inherent; picks then cost what they cost with one counter). The switch is one-way: the stripes are
    /// sealed and their count moved to the counter (<see cref="StripedCounter.Seal"/>), an attempt that started on a
    /// stripe ends on the counter, and a start or end that races the switch lands on exactly one of the two, so the count
    /// stays exact. An endpoint that a picker read once keeps the single counter if the policy later changes (a reload),
    /// as every endpoint did before. Memory: 256 B for the counter and the striped counter's (stripes + 2) x 128 B
    /// (512 B on 2 cores, at most 2,304 B).
    /// </para>
    /// </remarks>
    public int ActiveRequests
    {
        get
        {
            if (!Volatile.Read(ref _inFlight.Flag))
            {
                SwitchInFlightToCounter();
            }

            // Never below zero: between the switch and the move of the stripes' count, an end may come first.
            return Math.Max(0, Volatile.Read(ref _inFlight.Value));
        }
    }

    /// <summary>Gets why the endpoint is out of load balancing (<see cref="EndpointConditions.None"/> when it is in).</summary>
    public EndpointConditions Conditions => (EndpointConditions)Volatile.Read(ref _conditions);

    /// <summary>Gets a value indicating whether the endpoint may take new requests.</summary>
    public bool IsAvailable => Volatile.Read(ref _conditions) == 0;

    /// <summary>Gets a value indicating whether the endpoint waits for its first health check (<see cref="EndpointConditions.AwaitingHealthCheck"/>).</summary>
    public bool AwaitingFirstHealthCheck => (Conditions & EndpointConditions.AwaitingHealthCheck) != 0;

    /// <summary>Gets or sets the endpoint's circuit breaker (with the settings it was built from), or <see langword="null"/> when breaking is off.</summary>
    public EndpointBreaker? Breaker { get; set; }

    /// <summary>Gets or sets the endpoint's ejection backoff n (Envoy's): its latest ejection lasted n x BaseEjectionTime (see ServiceRuntime.TryEject).</summary>
    public int EjectionCount { get; set; }

    /// <summary>Counts an attempt in flight (paired with one <see cref="OnRequestEnded"/>): see <see cref="ActiveRequests"/> for where.</summary>
    public void OnRequestStarted()
    {
        if (Volatile.Read(ref _inFlight.Flag) || !_inFlightStripes.TryIncrement())
        {
            Interlocked.Increment(ref _inFlight.Value);
        }
    }

    /// <summary>Counts the end of an attempt begun with <see cref="OnRequestStarted"/>.</summary>
    public void OnRequestEnded()
    {
        if (Volatile.Read(ref _inFlight.Flag) || !_inFlightStripes.TryDecrement())
        {
            Interlocked.Decrement(ref _inFlight.Value);
        }
    }

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
        return last is not null && (ReferenceEquals(last.Logical, logical) || string.Equals(last.Logical.OriginalString, logical.OriginalString, StringComparison.Ordinal))
            ? last.Physical
            : RewriteAndRemember(logical);
    }

    /// <summary>Whether <paramref name="uri"/> is the physical URI this endpoint's last <see cref="Rewrite"/> returned.</summary>
    public bool Wrote(Uri uri) => ReferenceEquals(_lastRewrite?.Physical, uri);

    /// <summary>A new path and query: the physical URI built and kept. Never inlined, so that the hit stays small where it is inlined.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private Uri RewriteAndRemember(Uri logical)
    {
        var physical = new Uri(string.Concat(Authority, logical.PathAndQuery), UriKind.Absolute);
        _lastRewrite = new RewriteEntry(logical, physical);
        return physical;
    }

    /// <summary>
    /// Moves the in-flight count from the stripes to the single counter, once: new starts and ends go to the counter,
    /// the stripes' count is added to it, and adds that reach a stripe after it was sealed are refused and redone on the
    /// counter by their callers. Racing readers may both get here: each stripe's count is taken by exactly one of them.
    /// </summary>
    private void SwitchInFlightToCounter()
    {
        Volatile.Write(ref _inFlight.Flag, true);
        Interlocked.Add(ref _inFlight.Value, (int)_inFlightStripes.Seal());
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
