using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using Governance.Pipeline;
using Governance.Resilience;
using Microsoft.Extensions.Logging;

namespace Governance.Telemetry;

/// <summary>
/// The <c>MeshGovernance</c> activity source and meter (through <see cref="IMeterFactory"/> when the host has one), and
/// the helpers that record into them. Every recording checks <see cref="ActivitySource.HasListeners"/> or
/// <see cref="Instrument.Enabled"/> first, so an unobserved call pays a few branches and allocates nothing.
/// </summary>
internal sealed partial class GovernanceInstrumentation : IDisposable
{
    /// <summary>The package's version (<c>0.1.0</c>, without build metadata), for the source and the meter alike.</summary>
    private static readonly string? Version = typeof(GovernanceInstrumentation).Assembly
        .GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), inherit: false)
        is [System.Reflection.AssemblyInformationalVersionAttribute { InformationalVersion: var informational }, ..]
        ? informational.Split('+')[0]
        : typeof(GovernanceInstrumentation).Assembly.GetName().Version?.ToString();

    public static readonly ActivitySource Source = new(GovernanceTelemetry.Name, Version);

    private const string MethodTag = "http.request.method";
    private const string TraceParentHeader = "traceparent";
    private const string TraceStateHeader = "tracestate";
    private const string MethodOriginalTag = "http.request.method_original";

    /// <summary>The <c>http.request.method</c> of a method HTTP does not define (OpenTelemetry's conventions).</summary>
    private const string OtherMethod = "_OTHER";

    /// <summary>The methods HTTP defines, by their canonical names, in <see cref="MethodIndex"/>'s order.</summary>
    internal static readonly string[] KnownMethods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT"];
    private const string StatusCodeTag = "http.response.status_code";
    private const string ErrorTypeTag = "error.type";
    private const string ServerAddressTag = "server.address";
    private const string ServerPortTag = "server.port";
    private const string UrlTemplateTag = "url.template";

    private static readonly object[] StatusCodes = CreateStatusCodes();
    private static readonly string[] ErrorStatuses = CreateErrorStatuses();
    private readonly Meter _meter;
    private readonly bool _ownsMeter;
    private Func<IEnumerable<ServiceRuntime>>? _services;

    public GovernanceInstrumentation(IMeterFactory? meterFactory, ILoggerFactory loggerFactory)
    {
        if (meterFactory is not null)
        {
            _meter = meterFactory.Create(new MeterOptions(GovernanceTelemetry.Name) { Version = Version });
        }
        else
        {
            _meter = new Meter(GovernanceTelemetry.Name, Version);
            _ownsMeter = true;
        }

        Logger = loggerFactory.CreateLogger("Governance.Pipeline");
        RequestDuration = _meter.CreateHistogram(
            GovernanceTelemetry.Instruments.RequestDuration,
            unit: "s",
            description: "Duration of governed logical calls up to their response headers: all attempts and delays, and waits for discovery or a first health check and in the rate limit's queue, included.",
            tags: null,
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10] });
        Attempts = _meter.CreateCounter<long>(GovernanceTelemetry.Instruments.Attempts, "{attempt}", "Attempts sent to endpoints.");
        Retries = _meter.CreateCounter<long>(GovernanceTelemetry.Instruments.Retries, "{retry}", "Retries and hedged attempts, by reason.");
        RateLimitRejections = _meter.CreateCounter<long>(GovernanceTelemetry.Instruments.RateLimitRejections, "{call}", "Calls rejected by the client-side rate limit.");
        OutlierEjections = _meter.CreateCounter<long>(GovernanceTelemetry.Instruments.OutlierEjections, "{ejection}", "Endpoints ejected by outlier detection.");
        CircuitTransitions = _meter.CreateCounter<long>(GovernanceTelemetry.Instruments.CircuitBreakerTransitions, "{transition}", "Per-endpoint circuit breaker transitions.");
        DiscoveryRefreshes = _meter.CreateCounter<long>(GovernanceTelemetry.Instruments.DiscoveryRefreshes, "{refresh}", "Endpoint lists received from discovery.");
        DiscoveryErrors = _meter.CreateCounter<long>(GovernanceTelemetry.Instruments.DiscoveryErrors, "{error}", "Failed discovery resolutions.");
        _meter.CreateObservableGauge(GovernanceTelemetry.Instruments.LoadBalancerEndpoints, ObserveEndpoints, "{endpoint}", "Endpoints of each service by state.");
    }

    public ILogger Logger { get; }

    public Histogram<double> RequestDuration { get; }

    public Counter<long> Attempts { get; }

    public Counter<long> Retries { get; }

    public Counter<long> RateLimitRejections { get; }

    public Counter<long> OutlierEjections { get; }

    public Counter<long> CircuitTransitions { get; }

    public Counter<long> DiscoveryRefreshes { get; }

    public Counter<long> DiscoveryErrors { get; }

    /// <summary>Connects the endpoint gauge to the live services (the runtime is built after this object).</summary>
    public void Observe(Func<IEnumerable<ServiceRuntime>> services) => _services = services;

    /// <summary>Starts the span of a logical call, or returns <see langword="null"/> when nobody listens.</summary>
    public static Activity? StartCall(ServiceRuntime service, HttpRequestMessage request) =>
        Source.HasListeners() ? StartCall(service, request, startTime: default) : null;

    /// <summary>
    /// Starts the span of a governed call at <paramref name="startedAt"/>, the call's own start timestamp, converted by
    /// <paramref name="clock"/>: the span does not read the wall clock again.
    /// </summary>
    public static Activity? StartCall(ServiceRuntime service, HttpRequestMessage request, long startedAt, SpanClock clock) =>
        Source.HasListeners() ? StartCall(service, request, new DateTimeOffset(clock.ToUtc(startedAt))) : null;

    /// <summary>
    /// Starts the span; the callers checked that something listens (<c>startTime</c> default: the wall clock now). When a
    /// listener's callback throws, the span it had started is stopped before the exception goes on (see
    /// <see cref="StopAbandoned"/>): every caller fails with it, and none is left with an open span it never received.
    /// </summary>
    private static Activity? StartCall(ServiceRuntime service, HttpRequestMessage request, DateTimeOffset startTime)
    {
        var previous = Activity.Current;
        Activity? activity;
        try
        {
            // A default parent context: Activity.Current is the parent, as with StartActivity(name, kind).
            activity = Source.StartActivity(service.SpanName(request.Method), ActivityKind.Internal, parentContext: default, startTime: startTime);
        }
        catch (Exception)
        {
            StopAbandoned(previous);
            throw;
        }

        if (activity is { IsAllDataRequested: true })
        {
            // AddTag, not SetTag: the span is new and each tag is set once (no search of the existing tags).
            activity.AddTag(GovernanceTelemetry.ServiceTag, service.Name);
            var method = MethodTagValue(request.Method);
            activity.AddTag(MethodTag, method);
            if (ReferenceEquals(method, OtherMethod))
            {
                activity.AddTag(MethodOriginalTag, request.Method.Method);
            }

            if (GovernanceHttpRequestMessageExtensions.PeekUrlTemplate(request) is { } template)
            {
                activity.AddTag(UrlTemplateTag, template);
            }
        }

        return activity;
    }

    /// <summary>Ends the logical call: span tags and status, duration histogram.</summary>
    /// <remarks>
    /// One clock read: the end timestamp. The elapsed time from the call's start timestamp is the histogram's duration
    /// and, added to the span's start time, the span's end time (set before the histogram is recorded, so that the
    /// recording still happens inside the span, for exemplars): span and histogram agree, and both are monotonic. Tags go on the stack in a <see cref="TagBuffer"/>, which costs less
    /// than a <see cref="TagList"/> of the same tags.
    /// </remarks>
    public void EndCall(Activity? activity, ServiceRuntime service, HttpRequestMessage request, long startedAt, TimeProvider time, SpanClock clock, HttpResponseMessage? response, Exception? error)
    {
        var durationEnabled = RequestDuration.Enabled && startedAt != 0;
        if (activity is null && !durationEnabled)
        {
            return;
        }

        var code = response is null ? 0 : (int)response.StatusCode;
        var status = response is null ? null : StatusCode(code);
        var errorType = error is not null ? error.GetType().FullName : code >= 400 ? ErrorStatus(code) : null;
        if (activity is not null)
        {
            if (activity.IsAllDataRequested)
            {
                if (status is not null)
                {
                    activity.AddTag(StatusCodeTag, status);
                }

                if (errorType is not null)
                {
                    activity.AddTag(ErrorTypeTag, errorType);
                }
            }

            if (errorType is not null)
            {
                activity.SetStatus(ActivityStatusCode.Error, error?.Message);
            }
        }

        // One clock reading for both. The span ends at its start plus the monotonic elapsed time, never at a second
        // wall-clock conversion (which a clock step between the two conversions would skew, even below zero), and
        // Activity.Stop keeps an end time already set.
        var end = time.GetTimestamp();
        var elapsed = startedAt != 0 ? time.GetElapsedTime(startedAt, end) : TimeSpan.Zero;
        if (activity is not null)
        {
            activity.SetEndTime(startedAt != 0 ? activity.StartTimeUtc + elapsed : clock.ToUtc(end));
        }

        if (durationEnabled)
        {
            var duration = elapsed;

            var tags = default(TagBuffer);
            tags[0] = new(GovernanceTelemetry.ServiceTag, service.Name);
            tags[1] = new(MethodTag, MethodTagValue(request.Method));
            var count = 2;
            if (status is not null)
            {
                tags[count++] = new(StatusCodeTag, status);
            }

            if (errorType is not null)
            {
                tags[count++] = new(ErrorTypeTag, errorType);
            }

            if (GovernanceHttpRequestMessageExtensions.PeekUrlTemplate(request) is { } template)
            {
                tags[count++] = new(UrlTemplateTag, template);
            }

            RequestDuration.Record(duration.TotalSeconds, tags.Slice(count));
        }

        activity?.Stop();
    }

    public void RecordAttempt(ServiceRuntime service, EndpointState endpoint, int attempt, Polly.Outcome<HttpResponseMessage> outcome)
    {
        // An attempt the endpoint's circuit turned away sent nothing: not an attempt sent to the endpoint (the debug log
        // still says what happened to it).
        if (Attempts.Enabled && outcome.Exception is not Polly.CircuitBreaker.BrokenCircuitException)
        {
            var tags = default(TagBuffer);
            tags[0] = new(GovernanceTelemetry.ServiceTag, service.Name);
            tags[1] = new(ServerAddressTag, endpoint.Host);
            tags[2] = new(ServerPortTag, endpoint.BoxedPort);
            var count = 3;
            if (outcome.Result is { } response)
            {
                tags[count++] = new(StatusCodeTag, StatusCode((int)response.StatusCode));
            }
            else if (outcome.Exception is { } exception)
            {
                tags[count++] = new(ErrorTypeTag, exception.GetType().FullName);
            }

            Attempts.Add(1, tags.Slice(count));
        }

        if (Logger.IsEnabled(LogLevel.Debug))
        {
            LogAttempt(Logger, service.Name, attempt, endpoint.Authority, outcome.Result is { } r ? ((int)r.StatusCode).ToString(System.Globalization.CultureInfo.InvariantCulture) : outcome.Exception?.GetType().Name ?? "none");
        }
    }

    public void RecordRetry(ServiceRuntime service, Activity? activity, string reason, int attempt, string eventName)
    {
        if (Retries.Enabled)
        {
            Retries.Add(1, new KeyValuePair<string, object?>(GovernanceTelemetry.ServiceTag, service.Name), new KeyValuePair<string, object?>(GovernanceTelemetry.ReasonTag, reason));
        }

        activity?.AddEvent(new ActivityEvent(eventName, tags: new ActivityTagsCollection
        {
            { GovernanceTelemetry.ReasonTag, reason },
            { GovernanceTelemetry.AttemptTag, attempt },
        }));
    }

    public void RecordRejection(ServiceRuntime service, HttpRequestMessage request, TimeSpan? retryAfter)
    {
        CountRejection(service);
        RecordRefusedDuration(service, request, typeof(RateLimitRejectedException));

        if (Source.HasListeners())
        {
            // A rejected call still gets its span, so that traces show what was refused and why.
            var previous = Activity.Current;
            using var activity = StartCall(service, request);
            if (activity is not null)
            {
                activity.AddEvent(RejectedEvent(retryAfter));
                activity.SetTag(ErrorTypeTag, typeof(RateLimitRejectedException).FullName);
                activity.SetStatus(ActivityStatusCode.Error, "rate limit");
            }

            Activity.Current = previous;
        }
    }

    /// <summary>
    /// A call that ended while it waited, before any attempt: refused after discovery's first answer (or a first health
    /// check's pass, while no endpoint was available and some awaited one) did not come, rejected by the rate limit after queueing, or
    /// cancelled by its caller in either wait. Its span and duration run from
    /// <paramref name="arrivedAt"/> (when it reached governance) to now, with <paramref name="error"/>; a rejection also
    /// counts in the rejections counter and puts its event, with the limiter's <paramref name="retryAfter"/>, on the span.
    /// </summary>
    public void RecordWaitEnded(ServiceRuntime service, ServicePolicy policy, HttpRequestMessage request, long arrivedAt, Exception error, TimeSpan? retryAfter = null)
    {
        var rejected = error is RateLimitRejectedException;
        if (rejected)
        {
            CountRejection(service);
        }

        var previous = Activity.Current;
        var activity = StartCall(service, request, arrivedAt, policy.SpanClock);
        if (rejected && activity is { IsAllDataRequested: true })
        {
            activity.AddEvent(RejectedEvent(retryAfter));
        }

        EndCall(activity, service, request, arrivedAt, policy.Time, policy.SpanClock, response: null, error);
        Activity.Current = previous;
    }

    /// <summary>A rate-limit rejection in the rejections counter.</summary>
    private void CountRejection(ServiceRuntime service)
    {
        if (RateLimitRejections.Enabled)
        {
            RateLimitRejections.Add(1, new KeyValuePair<string, object?>(GovernanceTelemetry.ServiceTag, service.Name));
        }
    }

    /// <summary>The span event of a rate-limit rejection, with the limiter's retry-after hint when it has one.</summary>
    private static ActivityEvent RejectedEvent(TimeSpan? retryAfter) =>
        new(GovernanceTelemetry.Events.RateLimitRejected, tags: retryAfter is { } delay
            ? new ActivityTagsCollection { { GovernanceTelemetry.RetryAfterTag, delay.TotalSeconds } }
            : null);

    /// <summary>A call refused before any attempt (no endpoint): it still gets its span, with error status, and its duration.</summary>
    public void RecordRefused(ServiceRuntime service, HttpRequestMessage request, Exception error)
    {
        RecordRefusedDuration(service, request, error.GetType());
        if (!Source.HasListeners())
        {
            return;
        }

        var previous = Activity.Current;
        using (var activity = StartCall(service, request))
        {
            if (activity is not null)
            {
                activity.SetTag(ErrorTypeTag, error.GetType().FullName);
                activity.SetStatus(ActivityStatusCode.Error, error.Message);
            }
        }

        Activity.Current = previous;
    }

    /// <summary>
    /// Stops a governance span that a listener's callback failed to see through: <see cref="ActivitySource.StartActivity(string, ActivityKind)"/>
    /// makes the span current before it notifies listeners, so when one throws the span is current and nobody holds it.
    /// <paramref name="previous"/> is what was current before; a failure of the stop's own listeners is dropped (the
    /// call already fails with the first one).
    /// </summary>
    private static void StopAbandoned(Activity? previous)
    {
        if (Activity.Current is { } started && !ReferenceEquals(started, previous) && ReferenceEquals(started.Source, Source))
        {
            try
            {
                started.Stop();
            }
#pragma warning disable CA1031 // Another listener failure while the call fails with the first.
            catch (Exception)
#pragma warning restore CA1031
            {
            }
        }
    }

    /// <summary>
    /// Removes the W3C trace context (<c>traceparent</c>, <c>tracestate</c>) that .NET's HttpClient instrumentation wrote
    /// on <paramref name="request"/> for its previous attempt, before the request is sent again. The socket handler writes
    /// these headers only when they are absent and removes them itself only when it follows redirects
    /// (<c>AllowAutoRedirect</c>), so a retry would otherwise name the previous attempt's span as its parent. What it
    /// wrote is told apart from what a caller set by its content: the current trace, with a parent other than the current
    /// span (the previous attempt's own HttpClient span, a child of it) and other than the current span's parent (a
    /// caller that wrote its own span's context, under which governance's span runs). Baggage is left: it is written
    /// from the same context and would be written the same again.
    /// </summary>
    internal static void ForgetPreviousAttemptsTraceContext(HttpRequestMessage request)
    {
        if (Activity.Current is not { } current || !request.Headers.NonValidated.TryGetValues(TraceParentHeader, out var values) || values.Count != 1)
        {
            return;
        }

        if (ActivityContext.TryParse(values.ToString(), null, out var context) && context.TraceId == current.TraceId && context.SpanId != current.SpanId && context.SpanId != current.ParentSpanId)
        {
            request.Headers.Remove(TraceParentHeader);
            request.Headers.Remove(TraceStateHeader);
        }
    }

    /// <summary>
    /// The <c>http.request.method</c> tag: the canonical name of a method HTTP defines (matched without case, as
    /// <see cref="HttpMethod"/> compares), <c>_OTHER</c> for any other, so that a caller-supplied method cannot grow the
    /// metrics' cardinality; spans also carry the original in <c>http.request.method_original</c>. As .NET's own
    /// HttpClient instrumentation does.
    /// </summary>
    internal static string MethodTagValue(HttpMethod method) =>
        MethodIndex(method) is var index && index < KnownMethods.Length ? KnownMethods[index] : OtherMethod;

    /// <summary>
    /// The position of <paramref name="method"/> in <see cref="KnownMethods"/>, or <c>KnownMethods.Length</c> for a
    /// method HTTP does not define; shared by the method tag and the span names (<see cref="ServiceRuntime.SpanName"/>).
    /// </summary>
    internal static int MethodIndex(HttpMethod method) =>
        method == HttpMethod.Get ? 0
        : method == HttpMethod.Post ? 1
        : method == HttpMethod.Put ? 2
        : method == HttpMethod.Delete ? 3
        : method == HttpMethod.Patch ? 4
        : method == HttpMethod.Head ? 5
        : method == HttpMethod.Options ? 6
        : method == HttpMethod.Trace ? 7
        : method == HttpMethod.Connect ? 8
        : KnownMethods.Length;

    /// <summary>A refused call is a logical call too: it is recorded with duration 0 and its error type.</summary>
    private void RecordRefusedDuration(ServiceRuntime service, HttpRequestMessage request, Type error)
    {
        if (RequestDuration.Enabled)
        {
            var tags = default(TagBuffer);
            tags[0] = new(GovernanceTelemetry.ServiceTag, service.Name);
            tags[1] = new(MethodTag, MethodTagValue(request.Method));
            tags[2] = new(ErrorTypeTag, error.FullName);
            var count = 3;
            if (GovernanceHttpRequestMessageExtensions.PeekUrlTemplate(request) is { } template)
            {
                tags[count++] = new(UrlTemplateTag, template);
            }

            RequestDuration.Record(0, tags.Slice(count));
        }
    }

    public void RecordEjection(ServiceRuntime service, EndpointState endpoint, TimeSpan duration)
    {
        if (OutlierEjections.Enabled)
        {
            OutlierEjections.Add(1, new TagList { { GovernanceTelemetry.ServiceTag, service.Name }, { ServerAddressTag, endpoint.Host }, { ServerPortTag, endpoint.BoxedPort } });
        }

        // On the governed call's span only (current while its attempts are counted), and only when it records events: never
        // on an application's span that happens to be current, and nothing allocated when nobody listens.
        if (Activity.Current is not { IsAllDataRequested: true } current || !ReferenceEquals(current.Source, Source))
        {
            return;
        }

        current.AddEvent(new ActivityEvent(GovernanceTelemetry.Events.Ejection, tags: new ActivityTagsCollection
        {
            { ServerAddressTag, endpoint.Host },
            { ServerPortTag, endpoint.BoxedPort },
            { GovernanceTelemetry.EjectionDurationTag, duration.TotalSeconds },
        }));
    }

    public void RecordCircuit(ServiceRuntime service, EndpointState endpoint, string state)
    {
        if (CircuitTransitions.Enabled)
        {
            CircuitTransitions.Add(1, new TagList { { GovernanceTelemetry.ServiceTag, service.Name }, { ServerAddressTag, endpoint.Host }, { ServerPortTag, endpoint.BoxedPort }, { GovernanceTelemetry.StateTag, state } });
        }
    }

    /// <summary>Adds a circuit transition the attempt caused (or observed) to the logical call's span.</summary>
    public static void CircuitEvent(Activity? activity, EndpointState endpoint, string state) =>
        activity?.AddEvent(new ActivityEvent(GovernanceTelemetry.Events.CircuitTransition, tags: new ActivityTagsCollection
        {
            { ServerAddressTag, endpoint.Host },
            { ServerPortTag, endpoint.BoxedPort },
            { GovernanceTelemetry.StateTag, state },
        }));

    public void RecordDiscovery(string service, string provider, bool error)
    {
        var counter = error ? DiscoveryErrors : DiscoveryRefreshes;
        if (counter.Enabled)
        {
            counter.Add(1, new KeyValuePair<string, object?>(GovernanceTelemetry.ServiceTag, service), new KeyValuePair<string, object?>(GovernanceTelemetry.DiscoveryProviderTag, provider));
        }
    }

    public void Dispose()
    {
        if (_ownsMeter)
        {
            _meter.Dispose();
        }
    }

    private static object StatusCode(int code) => (uint)code < (uint)StatusCodes.Length ? StatusCodes[code] : code;

    /// <summary>The <c>error.type</c> of a call answered with a status of 400 or more: the code as a string, cached up to 599.</summary>
    private static string ErrorStatus(int code) =>
        (uint)(code - 400) < (uint)ErrorStatuses.Length ? ErrorStatuses[code - 400] : code.ToString(System.Globalization.CultureInfo.InvariantCulture);

    private static string[] CreateErrorStatuses()
    {
        var statuses = new string[200];
        for (var i = 0; i < statuses.Length; i++)
        {
            statuses[i] = (400 + i).ToString(System.Globalization.CultureInfo.InvariantCulture);
        }

        return statuses;
    }

    private static object[] CreateStatusCodes()
    {
        var codes = new object[600];
        for (var i = 0; i < codes.Length; i++)
        {
            codes[i] = i;
        }

        return codes;
    }

    private IEnumerable<Measurement<int>> ObserveEndpoints()
    {
        if (_services?.Invoke() is not { } services)
        {
            yield break;
        }

        foreach (var service in services)
        {
            int available = 0, ejected = 0, open = 0, unhealthy = 0, disabled = 0, pending = 0;
            foreach (var endpoint in service.Endpoints.All)
            {
                var conditions = endpoint.Conditions;
                available += conditions == EndpointConditions.None ? 1 : 0;
                ejected += (conditions & EndpointConditions.Ejected) != 0 ? 1 : 0;
                open += (conditions & EndpointConditions.CircuitOpen) != 0 ? 1 : 0;
                unhealthy += (conditions & EndpointConditions.FailedHealthCheck) != 0 ? 1 : 0;
                disabled += (conditions & EndpointConditions.Disabled) != 0 ? 1 : 0;
                pending += (conditions & EndpointConditions.AwaitingHealthCheck) != 0 ? 1 : 0;
            }

            yield return Measure(service.Name, "available", available);
            yield return Measure(service.Name, "ejected", ejected);
            yield return Measure(service.Name, "circuit_open", open);
            yield return Measure(service.Name, "unhealthy", unhealthy);
            yield return Measure(service.Name, "disabled", disabled);
            yield return Measure(service.Name, "pending", pending);
        }

        static Measurement<int> Measure(string service, string state, int value) =>
            new(value, new KeyValuePair<string, object?>(GovernanceTelemetry.ServiceTag, service), new KeyValuePair<string, object?>(GovernanceTelemetry.StateTag, state));
    }

    [LoggerMessage(GovernanceEventIds.AttemptCompleted, LogLevel.Debug, "Service {Service}: attempt {Attempt} to {Endpoint} ended with {Result}")]
    private static partial void LogAttempt(ILogger logger, string service, int attempt, string endpoint, string result);

    /// <summary>
    /// Room for the tags of one measurement on the stack (at most 5 here), passed to the instrument as a span: about a
    /// third of a <see cref="TagList"/>'s size, without its per-Add bookkeeping.
    /// </summary>
    [InlineArray(Capacity)]
    private struct TagBuffer
    {
        private const int Capacity = 5;
        private KeyValuePair<string, object?> _first;

        [UnscopedRef]
        public ReadOnlySpan<KeyValuePair<string, object?>> Slice(int count) => ((ReadOnlySpan<KeyValuePair<string, object?>>)this)[..count];
    }
}
