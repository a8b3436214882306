using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Governance.Telemetry;
using Governance.Tests.Infrastructure;
using Governance.Tests.Resilience;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Governance.Tests.Telemetry;

[CollectionDefinition(nameof(TelemetryTests), DisableParallelization = true)]
public sealed class TelemetryTestGroup;

/// <summary>
/// Spans, events, metrics and logs against real Kestrel backends. Listeners are process-wide, so this collection runs
/// alone, and every assertion filters by the test's own trace id or service name.
/// </summary>
[Collection(nameof(TelemetryTests))]
public sealed class TelemetryTests(ITestOutputHelper output) : IDisposable
{
    private static readonly ActivitySource TestSource = new("Governance.Tests");
    private readonly ConcurrentQueue<Activity> _stopped = new();
    private readonly ActivityListener _listener = new();

    private ActivityListener Listen()
    {
        _listener.ShouldListenTo = s => s.Name is GovernanceTelemetry.Name or "System.Net.Http" or "Governance.Tests";
        _listener.Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded;
        _listener.ActivityStopped = _stopped.Enqueue;
        ActivitySource.AddActivityListener(_listener);
        return _listener;
    }

    public void Dispose() => _listener.Dispose();

    private List<Activity> Spans(ActivityTraceId trace) => _stopped.Where(a => a.TraceId == trace).ToList();

    /// <summary>
    /// Starts a GET under a root span of its own, on this thread (so that when it returns, the call has gone as far as it
    /// goes synchronously: holding a permit, queued, waiting for discovery, or sent), and gives the caller's current
    /// activity back.
    /// </summary>
    private static (ActivityTraceId Trace, Task<HttpResponseMessage> Call) StartTraced(HttpClient client, string url, CancellationToken cancellationToken = default)
    {
        var previous = Activity.Current;
        using var root = TestSource.StartActivity("call")!;
        var call = client.GetAsync(url, cancellationToken);
        Activity.Current = previous;
        return (root.TraceId, call);
    }

    [Fact]
    public async Task GetAsync_WaitedInTheRateLimitQueue_SpanIncludesTheWait()
    {
        Listen();
        var held = new HeldRequests();
        await using var server = await LoopbackServer.StartAsync("held", held.Handle);
        var time = new ObservedTimeProvider();
        var settings = Faults.Settings(server)
            .OnePermitOneWaiting();
        await using var governed = Faults.Create(settings, time);
        var wait = TimeSpan.FromSeconds(5);
        try
        {
            // The first call holds the only permit; the second waits for it in the queue while 5 s pass.
            var (firstTrace, first) = Traced("first");
            await held.WaitForArrivalAsync();
            var (queuedTrace, queued) = Traced("queued");
            time.Advance(wait);
            held.Release();
            (await first.WaitAsync(TimeSpan.FromSeconds(30))).Dispose();
            (await queued.WaitAsync(TimeSpan.FromSeconds(30))).Dispose();

            var span = Assert.Single(Spans(queuedTrace), a => a.Source.Name == GovernanceTelemetry.Name);
            output.WriteLine($"queued call's span: {span.Duration}; the first call's: {Assert.Single(Spans(firstTrace), a => a.Source.Name == GovernanceTelemetry.Name).Duration}");
            Assert.True(span.Duration >= wait, $"the span of a call that waited {wait} for its permit lasted {span.Duration}");
        }
        finally
        {
            held.Release();
        }

        // When GetAsync returns, the call holds its permit or waits in the queue.
        (ActivityTraceId Trace, Task<HttpResponseMessage> Call) Traced(string name) => StartTraced(governed.Client, $"{Faults.Url}/{name}");
    }

    [Fact]
    public async Task GetAsync_WaitedForDiscoverysFirstAnswer_SpanIncludesTheWait()
    {
        Listen();
        await using var server = await LoopbackServer.StartAsync("a");
        var time = new ObservedTimeProvider();
        var discovery = new LateDiscovery();
        await using var governed = Governed.Create(
            new Dictionary<string, string?> { ["Services:catalog:Discovery"] = LateDiscovery.ProviderName },
            services => services.AddSingleton<Governance.Discovery.IServiceDiscoveryProvider>(discovery).AddSingleton<TimeProvider>(time));
        var wait = TimeSpan.FromSeconds(3);

        // When GetAsync returns, the call waits for discovery's first answer.
        var (trace, call) = StartTraced(governed.Client, "http://catalog/");
        time.Advance(wait);
        discovery.Resolve(new ServiceEndpoint(server.Address));
        (await call.WaitAsync(TimeSpan.FromSeconds(30))).Dispose();

        var span = Assert.Single(Spans(trace), a => a.Source.Name == GovernanceTelemetry.Name);
        output.WriteLine($"span of a call that waited {wait} for discovery: {span.Duration}");
        Assert.True(span.Duration >= wait, $"the span lasted {span.Duration}");
    }

    [Fact]
    public async Task GetAsync_DiscoveryNeverAnswers_RefusedCallHasItsSpanAndDurationFromArrival()
    {
        Listen();
        var durations = new ConcurrentQueue<(double Seconds, object? ErrorType)>();
        using var meters = ListenToDurations(durations);
        var time = new ObservedTimeProvider();
        await using var governed = Governed.Create(
            new Dictionary<string, string?> { ["Services:catalog:Discovery"] = LateDiscovery.ProviderName },
            services => services.AddSingleton<Governance.Discovery.IServiceDiscoveryProvider>(new LateDiscovery()).AddSingleton<TimeProvider>(time));

        // When GetAsync returns, the call waits for discovery's first answer (at most Timeout:Total).
        var (trace, call) = StartTraced(governed.Client, "http://catalog/");
        var total = TimeSpan.FromSeconds(30);
        time.Advance(total);
        await Assert.ThrowsAsync<NoAvailableEndpointException>(() => call.WaitAsync(TimeSpan.FromSeconds(30)));

        var span = Assert.Single(Spans(trace), a => a.Source.Name == GovernanceTelemetry.Name);
        output.WriteLine($"refused after {total} without discovery's answer: span {span.Duration}, status {span.Status} '{span.StatusDescription}'");
        Assert.Equal(ActivityStatusCode.Error, span.Status);
        Assert.Equal(typeof(NoAvailableEndpointException).FullName, span.GetTagItem("error.type"));
        Assert.True(span.Duration >= total, $"the span lasted {span.Duration}");
        Assert.Contains(durations, d => Equals(d.ErrorType, typeof(NoAvailableEndpointException).FullName) && d.Seconds >= total.TotalSeconds);
    }

    [Fact]
    public async Task GetAsync_CancelledWhileQueuedForAPermit_SpanAndDurationRecorded()
    {
        Listen();
        var durations = new ConcurrentQueue<(double Seconds, object? ErrorType)>();
        using var meters = ListenToDurations(durations);
        var held = new HeldRequests();
        await using var server = await LoopbackServer.StartAsync("held", held.Handle);
        await using var governed = Faults.Create(Faults.Settings(server).OnePermitOneWaiting());
        using var cancel = new CancellationTokenSource();
        try
        {
            var first = governed.Client.GetAsync($"{Faults.Url}/first");
            await held.WaitForArrivalAsync();

            // When GetAsync returns, the call waits in the queue for the one permit.
            var (trace, queued) = StartTraced(governed.Client, $"{Faults.Url}/queued", cancel.Token);
            await cancel.CancelAsync();
            var thrown = await Assert.ThrowsAnyAsync<OperationCanceledException>(() => queued.WaitAsync(TimeSpan.FromSeconds(30)));

            var span = Assert.Single(Spans(trace), a => a.Source.Name == GovernanceTelemetry.Name);
            output.WriteLine($"cancelled in the queue: {thrown.GetType().Name}; span status {span.Status}, error.type {span.GetTagItem("error.type")}");
            Assert.Equal(ActivityStatusCode.Error, span.Status);
            Assert.NotNull(span.GetTagItem("error.type"));
            Assert.Contains(durations, d => d.ErrorType is string type && type.Contains("Canceled", StringComparison.Ordinal));
            Assert.Equal(1, held.Count);
            held.Release();
            (await first.WaitAsync(TimeSpan.FromSeconds(30))).Dispose();
        }
        finally
        {
            held.Release();
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task GetAsync_ListenerThrowsAsTheSpanStarts_CallFailsAndItsPermitComesBack(bool hedged)
    {
        // A concurrency limit of one permit: a call whose permit is not given back leaves every later call rejected.
        var service = hedged ? "throwing-start-hedged" : "throwing-start";
        await using var server = await LoopbackServer.StartAsync("a");
        await using var governed = Governed.Create(OnePermit(service, server, hedged));
        var spanName = $"GET {service}";
        var stopped = 0;
        using (var throwing = new ActivityListener
        {
            ShouldListenTo = s => s.Name == GovernanceTelemetry.Name,
            Sample = (ref ActivityCreationOptions<ActivityContext> o) => o.Name == spanName ? ActivitySamplingResult.AllDataAndRecorded : ActivitySamplingResult.None,
            ActivityStarted = a =>
            {
                if (a.OperationName == spanName)
                {
                    throw new InvalidOperationException("listener failed");
                }
            },
            ActivityStopped = a =>
            {
                if (a.OperationName == spanName)
                {
                    Interlocked.Increment(ref stopped);
                }
            },
        })
        {
            ActivitySource.AddActivityListener(throwing);
            var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => governed.Client.GetAsync($"http://{service}/").WaitAsync(TimeSpan.FromSeconds(30)));
            Assert.Equal("listener failed", ex.Message);

            // The span had started when the listener threw: it is stopped, not left open.
            Assert.Equal(1, Volatile.Read(ref stopped));
        }

        // The listener is gone: the next call gets the one permit.
        using var response = await governed.Client.GetAsync($"http://{service}/").WaitAsync(TimeSpan.FromSeconds(30));
        response.EnsureSuccessStatusCode();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task GetAsync_Succeeds_SpanEndsBeforeItsPermitComesBack(bool hedged)
    {
        // A concurrency limit of one permit, read as the call's span stops: the finished call still holds it, so no other
        // call can be admitted while this one is being recorded (inline and hedged calls alike).
        var service = hedged ? "span-then-permit-hedged" : "span-then-permit";
        await using var server = await LoopbackServer.StartAsync("a");
        await using var governed = Governed.Create(OnePermit(service, server, hedged));
        Assert.True(governed.Services.GetRequiredService<Governance.Pipeline.GovernanceRuntime>().TryGetService(service, out var runtime));
        var limiter = runtime.Policy.Limiter!;
        var spanName = $"GET {service}";
        long? permitsWhenStopped = null;
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == GovernanceTelemetry.Name,
            Sample = (ref ActivityCreationOptions<ActivityContext> o) => o.Name == spanName ? ActivitySamplingResult.AllDataAndRecorded : ActivitySamplingResult.None,
            ActivityStopped = a =>
            {
                if (a.OperationName == spanName)
                {
                    permitsWhenStopped = limiter.GetStatistics()!.CurrentAvailablePermits;
                }
            },
        };
        ActivitySource.AddActivityListener(listener);

        using var response = await governed.Client.GetAsync($"http://{service}/").WaitAsync(TimeSpan.FromSeconds(30));
        response.EnsureSuccessStatusCode();
        Assert.Equal(0, permitsWhenStopped);
        Assert.Equal(1, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public async Task Attempts_TurnedAwayByAHalfOpenCircuit_NotCountedAsSent()
    {
        // One endpoint: its circuit opens, is readmitted half-open after the break, and its probe is held; a second call
        // meanwhile is turned away by the circuit, which sends nothing.
        const string Service = "half-open-attempts";
        var held = new HeldRequests();
        var failing = true;
        await using var server = await LoopbackServer.StartAsync("flaky", c =>
        {
            if (Volatile.Read(ref failing))
            {
                c.Response.StatusCode = 503;
                return Task.CompletedTask;
            }

            return held.Handle(c);
        });
        var time = new ObservedTimeProvider();
        await using var governed = Governed.Create(OneEndpointBreaker(Service, server), services => services.AddSingleton<TimeProvider>(time));
        var attempts = 0;
        using var meters = ServiceMeters.Listen<long>(GovernanceTelemetry.Instruments.Attempts, Service, _ => Interlocked.Increment(ref attempts));
        Assert.True(governed.Services.GetRequiredService<Governance.Pipeline.GovernanceRuntime>().TryGetService(Service, out var service));
        for (var i = 0; i < 10 && service.Endpoints.Candidates.Length > 0; i++)
        {
            try
            {
                (await governed.Client.GetAsync($"http://{Service}/").WaitAsync(TimeSpan.FromSeconds(30))).Dispose();
            }
            catch (GovernanceException)
            {
            }
        }

        Assert.Empty(service.Endpoints.Candidates);
        Volatile.Write(ref failing, false);
        time.Advance(TimeSpan.FromSeconds(5));
        Assert.Single(service.Endpoints.Candidates);
        try
        {
            var probe = governed.Client.GetAsync($"http://{Service}/");
            await held.WaitForArrivalAsync();
            var sentBefore = Volatile.Read(ref attempts);

            await Assert.ThrowsAsync<NoAvailableEndpointException>(() => governed.Client.GetAsync($"http://{Service}/").WaitAsync(TimeSpan.FromSeconds(30)));

            output.WriteLine($"attempts counted before the turned-away call: {sentBefore}, after: {Volatile.Read(ref attempts)}");
            Assert.Equal(sentBefore, Volatile.Read(ref attempts));
            held.Release();
            (await probe.WaitAsync(TimeSpan.FromSeconds(30))).Dispose();
            Assert.Equal(sentBefore + 1, Volatile.Read(ref attempts));
        }
        finally
        {
            held.Release();
        }
    }

    [Fact]
    public async Task CircuitEvents_OnlyOnTheCallsWhoseOutcomesCausedThem()
    {
        Listen();
        const string Service = "circuit-events";
        var held = new HeldRequests();
        var failing = true;
        var holding = false;
        await using var server = await LoopbackServer.StartAsync("flaky", c =>
        {
            if (Volatile.Read(ref holding))
            {
                return held.Handle(c);
            }

            c.Response.StatusCode = Volatile.Read(ref failing) ? 503 : 200;
            return Task.CompletedTask;
        });
        var time = new ObservedTimeProvider();
        await using var governed = Governed.Create(OneEndpointBreaker(Service, server), services => services.AddSingleton<TimeProvider>(time));
        Assert.True(governed.Services.GetRequiredService<Governance.Pipeline.GovernanceRuntime>().TryGetService(Service, out var service));

        // Failures until the circuit opens: only the call whose failure opened it tells "opened".
        var calls = new List<ActivityTraceId>();
        for (var i = 0; i < 10 && service.Endpoints.Candidates.Length > 0; i++)
        {
            calls.Add(await TracedCallAsync());
        }

        Assert.Empty(service.Endpoints.Candidates);
        Assert.Equal([.. Enumerable.Repeat(string.Empty, calls.Count - 1), "opened"], calls.Select(States));

        // Readmitted half-open after the break: the probe fails and opens the circuit again, told on the probe's span.
        time.Advance(TimeSpan.FromSeconds(5));
        Assert.Equal("opened", States(await TracedCallAsync()));
        Assert.Empty(service.Endpoints.Candidates);

        // Readmitted again: the probe is held, a call meanwhile is turned away (no transition of its own), then the probe
        // succeeds and closes the circuit, told on the probe's span only.
        time.Advance(TimeSpan.FromSeconds(5));
        Volatile.Write(ref failing, false);
        Volatile.Write(ref holding, true);
        try
        {
            var (probeTrace, probe) = Traced();
            await held.WaitForArrivalAsync();
            var turnedAway = await TracedCallAsync();
            held.Release();
            (await probe.WaitAsync(TimeSpan.FromSeconds(30))).Dispose();
            Assert.Equal(string.Empty, States(turnedAway));
            Assert.Equal("closed", States(probeTrace));
        }
        finally
        {
            held.Release();
        }

        async Task<ActivityTraceId> TracedCallAsync()
        {
            var (trace, call) = Traced();
            try
            {
                (await call.WaitAsync(TimeSpan.FromSeconds(30))).Dispose();
            }
            catch (GovernanceException)
            {
            }

            return trace;
        }

        (ActivityTraceId Trace, Task<HttpResponseMessage> Call) Traced() => StartTraced(governed.Client, $"http://{Service}/");

        string States(ActivityTraceId trace) => string.Join(
            ",",
            Assert.Single(Spans(trace), a => a.Source.Name == GovernanceTelemetry.Name).Events
                .Where(e => e.Name == GovernanceTelemetry.Events.CircuitTransition)
                .Select(e => e.Tags.First(t => t.Key == GovernanceTelemetry.StateTag).Value));
    }

    /// <summary>
    /// One endpoint whose circuit opens after two outcomes of which half failed, with nothing else in the way: no retries,
    /// no outlier detection, no panic mode (which would send to the open circuit).
    /// </summary>
    /// <summary><paramref name="service"/> over <paramref name="server"/> with a concurrency limit of one permit, hedged or not.</summary>
    private static Dictionary<string, string?> OnePermit(string service, LoopbackServer server, bool hedged)
    {
        var settings = Governed.Service(service, null, server);
        settings[$"Services:{service}:RateLimit:Algorithm"] = "Concurrency";
        settings[$"Services:{service}:RateLimit:Burst"] = "1";
        settings[$"Services:{service}:Hedging:Enabled"] = hedged ? "true" : "false";
        return settings;
    }

    private static Dictionary<string, string?> OneEndpointBreaker(string service, LoopbackServer server)
    {
        var settings = Governed.Service(service, null, server);
        settings[$"Services:{service}:Retry:MaxRetries"] = "0";
        settings[$"Services:{service}:OutlierDetection:Enabled"] = "false";
        settings[$"Services:{service}:OutlierDetection:PanicThreshold"] = "0";
        settings[$"Services:{service}:CircuitBreaker:MinimumThroughput"] = "2";
        settings[$"Services:{service}:CircuitBreaker:FailureRatio"] = "0.5";
        return settings;
    }

    /// <summary>Collects every <c>governance.client.request.duration</c> measurement with its <c>error.type</c>.</summary>
    private static MeterListener ListenToDurations(ConcurrentQueue<(double Seconds, object? ErrorType)> durations)
    {
        var meters = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == GovernanceTelemetry.Name && instrument.Name == GovernanceTelemetry.Instruments.RequestDuration)
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        meters.SetMeasurementEventCallback<double>((_, value, tags, _) =>
        {
            object? errorType = null;
            foreach (var tag in tags)
            {
                if (tag.Key == "error.type")
                {
                    errorType = tag.Value;
                }
            }

            durations.Enqueue((value, errorType));
        });
        meters.Start();
        return meters;
    }

    [Fact]
    public async Task GetAsync_PanicModeSendsToAnOpenCircuit_NoCircuitEventForATransitionThatDidNotHappen()
    {
        Listen();
        var healthy = false;
        Task Handler(HttpContext context)
        {
            context.Response.StatusCode = Volatile.Read(ref healthy) ? 200 : 503;
            return Task.CompletedTask;
        }

        await using var one = await LoopbackServer.StartAsync("one", Handler);
        await using var two = await LoopbackServer.StartAsync("two", Handler);
        var settings = Faults.Settings(one, two)
            .With("OutlierDetection:Enabled", false)
            .With("CircuitBreaker:MinimumThroughput", 2)
            .With("CircuitBreaker:FailureRatio", 0.5);
        await using var governed = Faults.Create(settings, new ObservedTimeProvider());
        var states = Faults.Runtime(governed).Endpoints.All;
        for (var i = 0; i < 10 && !states.All(e => Faults.Has(e, Governance.Pipeline.EndpointConditions.CircuitOpen)); i++)
        {
            _ = await Faults.TryGetAsync(governed);
        }

        Assert.True(Faults.Runtime(governed).Endpoints.IsPanic);
        Volatile.Write(ref healthy, true);

        // Every circuit is open and stays open; panic mode sends the call anyway. Its span tells no circuit event.
        using (var root = TestSource.StartActivity("panic")!)
        {
            (await governed.Client.GetAsync(Faults.Url).WaitAsync(TimeSpan.FromSeconds(30))).Dispose();
            root.Stop();
            var span = Assert.Single(Spans(root.TraceId), a => a.Source.Name == GovernanceTelemetry.Name);
            Assert.DoesNotContain(span.Events, e => e.Name == GovernanceTelemetry.Events.CircuitTransition);
        }
    }

    [Fact]
    public async Task GetAsync_Listened_OneLogicalSpanWithAttemptSpansAsChildren()
    {
        Listen();
        await using var server = await LoopbackServer.StartAsync("a");
        await using var governed = Governed.Create(Governed.Service("catalog", null, server));
        using var root = TestSource.StartActivity("test")!;

        using var response = await governed.Client.GetAsync("http://catalog/items?id=1").WaitAsync(TimeSpan.FromSeconds(30));
        root.Stop();

        var spans = Spans(root.TraceId);
        var logical = Assert.Single(spans, s => s.Source.Name == GovernanceTelemetry.Name);
        Assert.Equal("GET catalog", logical.DisplayName);
        Assert.Equal(ActivityKind.Internal, logical.Kind);
        Assert.Equal(root.SpanId, logical.ParentSpanId);
        Assert.Equal("catalog", logical.GetTagItem(GovernanceTelemetry.ServiceTag));
        Assert.Equal("GET", logical.GetTagItem("http.request.method"));
        Assert.Equal(200, logical.GetTagItem("http.response.status_code"));
        Assert.Null(logical.GetTagItem("error.type"));
        Assert.Equal(ActivityStatusCode.Unset, logical.Status);
        var attempt = Assert.Single(spans, s => s.Source.Name == "System.Net.Http");
        Assert.Equal(logical.SpanId, attempt.ParentSpanId);
        Assert.Equal("127.0.0.1", attempt.GetTagItem("server.address"));
        Assert.Equal(server.Port, attempt.GetTagItem("server.port"));
    }

    [Fact]
    public async Task SendAsync_MethodHttpDoesNotDefine_SpanNamedHttpAndMethodTagOther()
    {
        // OpenTelemetry's conventions: bounded span names and method tags; the original method on the span only.
        Listen();
        await using var server = await LoopbackServer.StartAsync("a");
        await using var governed = Governed.Create(Governed.Service("catalog", null, server));
        using var root = TestSource.StartActivity("test")!;
        using var request = new HttpRequestMessage(new HttpMethod("PURGE"), "http://catalog/items?id=1");

        using var response = await governed.Client.SendAsync(request).WaitAsync(TimeSpan.FromSeconds(30));
        root.Stop();

        var logical = Assert.Single(Spans(root.TraceId), s => s.Source.Name == GovernanceTelemetry.Name);
        Assert.Equal("HTTP catalog", logical.DisplayName);
        Assert.Equal("_OTHER", logical.GetTagItem("http.request.method"));
        Assert.Equal("PURGE", logical.GetTagItem("http.request.method_original"));
    }

    [Fact]
    public async Task GetAsync_EjectionWhileOnlyTheApplicationsSpanIsListened_NoEventOnThatSpan()
    {
        // Nobody listens to MeshGovernance: the ejection's span event has no governed span to go on, and must not land on
        // the application's span that happens to be current.
        _listener.ShouldListenTo = s => s.Name == "Governance.Tests";
        _listener.Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded;
        ActivitySource.AddActivityListener(_listener);
        await using var good = await LoopbackServer.StartAsync("good");
        await using var bad = await LoopbackServer.StartAsync("bad", context =>
        {
            context.Response.StatusCode = 503;
            return Task.CompletedTask;
        });
        var settings = Governed.Service("catalog", "RoundRobin", bad, good);
        settings["Services:catalog:OutlierDetection:Consecutive5xx"] = "1";
        settings["Services:catalog:OutlierDetection:MaxEjectionPercent"] = "100";
        settings["Services:catalog:CircuitBreaker:Enabled"] = "false";
        await using var governed = Governed.Create(settings);
        using var root = TestSource.StartActivity("test")!;

        for (var i = 0; i < 4; i++)
        {
            using var response = await governed.Client.GetAsync("http://catalog/items").WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(response.IsSuccessStatusCode);
        }

        root.Stop();
        Assert.True(bad.RequestCount >= 1);
        Assert.Empty(root.Events);
    }

    [Theory]
    [InlineData("GET", "GET")]
    [InlineData("get", "GET")]
    [InlineData("TRACE", "TRACE")]
    [InlineData("CONNECT", "CONNECT")]
    [InlineData("PURGE", "_OTHER")]
    [InlineData("x-custom", "_OTHER")]
    public void MethodTagValue_KnownMethodsCanonicalAnyOtherIsOther(string method, string expected) =>
        Assert.Equal(expected, GovernanceInstrumentation.MethodTagValue(new HttpMethod(method)));

    [Fact]
    public async Task SendAsync_Listened_CallersCurrentActivityIsBackWhenTheHandlerReturns()
    {
        // Governance's span is current while the first attempt is sent, and the handler returns to its caller before the
        // answer (no async method in between: no loggers, an invoker that returns the handler's task): the caller's
        // Activity.Current must be its own again at that moment, as after an async method's first await.
        Listen();
        await using var server = await LoopbackServer.StartAsync("a");
        await using var governed = Governed.Create(
            Governed.Service("catalog", null, server),
            services => services.ConfigureHttpClientDefaults(client => client.RemoveAllLoggers()));
        using var invoker = new HttpMessageInvoker(governed.Services.GetRequiredService<IHttpMessageHandlerFactory>().CreateHandler(), disposeHandler: false);
        using var root = TestSource.StartActivity("test")!;
        using var request = new HttpRequestMessage(HttpMethod.Get, "http://catalog/items?id=1");

        var pending = invoker.SendAsync(request, CancellationToken.None);
        var currentWhenSendReturned = Activity.Current;
        using var response = await pending.WaitAsync(TimeSpan.FromSeconds(30));
        root.Stop();

        output.WriteLine($"current when SendAsync returned: {currentWhenSendReturned?.DisplayName ?? "(none)"}; the call's span: {_stopped.FirstOrDefault(s => s.Source.Name == GovernanceTelemetry.Name)?.DisplayName}");
        Assert.Same(root, currentWhenSendReturned);
        var logical = Assert.Single(Spans(root.TraceId), s => s.Source.Name == GovernanceTelemetry.Name);
        Assert.Equal(root.SpanId, logical.ParentSpanId);
        Assert.Equal(200, logical.GetTagItem("http.response.status_code"));
    }

    [Fact]
    public async Task GetAsync_FirstEndpointFails_RetryEventAndOneAttemptSpanPerAttempt()
    {
        Listen();
        await using var failing = await LoopbackServer.StartAsync("failing", c => { c.Response.StatusCode = 503; return Task.CompletedTask; });
        await using var healthy = await LoopbackServer.StartAsync("healthy");
        var settings = Governed.Service("catalog", "RoundRobin", failing, healthy);
        settings["Services:catalog:Retry:BaseDelay"] = "00:00:00";
        settings["Services:catalog:Retry:Backoff"] = "Constant";
        await using var governed = Governed.Create(settings);

        // Round robin alternates: of two calls, one starts on the failing endpoint and is retried on the healthy one.
        var traces = new List<ActivityTraceId>();
        for (var i = 0; i < 2; i++)
        {
            using var root = TestSource.StartActivity("test")!;
            using var response = await governed.Client.GetAsync("http://catalog/").WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal("healthy", Assert.Single(response.Headers.GetValues("x-server")));
            traces.Add(root.TraceId);
        }

        // Round robin counts the retry's pick too, so one or both calls may start on the failing endpoint.
        var retried = traces.Select(Spans).First(s => s.Count(a => a.Source.Name == "System.Net.Http") == 2);
        Assert.All(traces.Select(Spans), s => Assert.InRange(s.Count(a => a.Source.Name == "System.Net.Http"), 1, 2));
        var logical = Assert.Single(retried, s => s.Source.Name == GovernanceTelemetry.Name);
        var retry = Assert.Single(logical.Events, e => e.Name == GovernanceTelemetry.Events.Retry);
        Assert.Equal("gateway-error", retry.Tags.Single(t => t.Key == GovernanceTelemetry.ReasonTag).Value);
        Assert.Equal(2, retry.Tags.Single(t => t.Key == GovernanceTelemetry.AttemptTag).Value);
        var attempts = retried.Where(s => s.Source.Name == "System.Net.Http").ToList();
        Assert.All(attempts, a => Assert.Equal(logical.SpanId, a.ParentSpanId));
        Assert.Equal(new[] { failing.Port, healthy.Port }.Order(), attempts.Select(a => (int)a.GetTagItem("server.port")!).Order());
        Assert.Equal(ActivityStatusCode.Unset, logical.Status);
    }

    [Fact]
    public async Task GetAsync_CallFails_LogicalSpanHasErrorStatusAndType()
    {
        Listen();
        await using var failing = await LoopbackServer.StartAsync("failing", c => { c.Response.StatusCode = 503; return Task.CompletedTask; });
        var settings = Governed.Service("catalog", null, failing);
        settings["Services:catalog:Retry:MaxRetries"] = "0";
        await using var governed = Governed.Create(settings);
        using var root = TestSource.StartActivity("test")!;

        using var response = await governed.Client.GetAsync("http://catalog/").WaitAsync(TimeSpan.FromSeconds(30));

        var logical = Assert.Single(Spans(root.TraceId), s => s.Source.Name == GovernanceTelemetry.Name);
        Assert.Equal(ActivityStatusCode.Error, logical.Status);
        Assert.Equal("503", logical.GetTagItem("error.type"));
        Assert.Equal(503, logical.GetTagItem("http.response.status_code"));
    }

    [Fact]
    public async Task GetAsync_NoEndpointReachable_ErrorTypeIsExceptionType()
    {
        Listen();
        await using var stopped = await LoopbackServer.StartAsync("stopped");
        var settings = Governed.Service("catalog", null, stopped);
        settings["Services:catalog:Retry:MaxRetries"] = "0";
        await stopped.StopAsync();
        await using var governed = Governed.Create(settings);
        using var root = TestSource.StartActivity("test")!;

        await Assert.ThrowsAsync<HttpRequestException>(() => governed.Client.GetAsync("http://catalog/").WaitAsync(TimeSpan.FromSeconds(30)));

        var logical = Assert.Single(Spans(root.TraceId), s => s.Source.Name == GovernanceTelemetry.Name);
        Assert.Equal(ActivityStatusCode.Error, logical.Status);
        Assert.Equal(typeof(HttpRequestException).FullName, logical.GetTagItem("error.type"));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task GetAsync_IncomingTrace_ContinuedThroughRetriesWithOwnParentPerAttempt(bool autoRedirect)
    {
        // With AllowAutoRedirect false (what README advises for redirects through governance) .NET leaves the trace
        // headers it wrote for an attempt on the request: a retry must not send the previous attempt's parent.
        Listen();
        var received = new ConcurrentQueue<(string Server, string? TraceParent, string? Baggage)>();
        Func<HttpContext, Task> record(string name, int status) => c =>
        {
            received.Enqueue((name, c.Request.Headers.TraceParent.ToString(), c.Request.Headers.Baggage.ToString()));
            c.Response.StatusCode = status;
            return Task.CompletedTask;
        };
        await using var failing = await LoopbackServer.StartAsync("failing", record("failing", 503));
        await using var healthy = await LoopbackServer.StartAsync("healthy", record("healthy", 200));
        var settings = Governed.Service("catalog", "RoundRobin", failing, healthy);
        settings["Services:catalog:Retry:BaseDelay"] = "00:00:00";
        await using var governed = Governed.Create(
            settings,
            services => services.ConfigureHttpClientDefaults(b => b.ConfigurePrimaryHttpMessageHandler(() => new SocketsHttpHandler { AllowAutoRedirect = autoRedirect })));

        // An incoming request's trace, as ASP.NET Core would have restored it from its traceparent header.
        var incoming = ActivityContext.Parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", null);
        for (var i = 0; i < 2; i++)
        {
            using var server = TestSource.StartActivity("incoming", ActivityKind.Server, incoming)!;
            server.AddBaggage("tenant", "t1");
            using var response = await governed.Client.GetAsync("http://catalog/").WaitAsync(TimeSpan.FromSeconds(30));
            response.EnsureSuccessStatusCode();
        }

        // Two calls; round robin (retries included) sends at least one of them to the failing endpoint first.
        var headers = received.ToList();
        Assert.InRange(headers.Count, 3, 4);
        Assert.Contains(headers, h => h.Server == "failing");
        var parents = new HashSet<string>();
        foreach (var (_, traceParent, baggage) in headers)
        {
            var context = ActivityContext.Parse(traceParent!, null);
            Assert.Equal(incoming.TraceId, context.TraceId);
            Assert.NotEqual(incoming.SpanId, context.SpanId);
            Assert.True(parents.Add(context.SpanId.ToHexString()), "each attempt carries its own parent id");
            // .NET 10's default W3C propagator writes "key = value" (whitespace is allowed by the W3C baggage format).
            Assert.Equal("tenant=t1", baggage!.Replace(" ", string.Empty, StringComparison.Ordinal));

            // The parent of each attempt is that attempt's own HttpClient span, a child of the logical span.
            var attemptSpan = Assert.Single(_stopped, a => a.SpanId == context.SpanId);
            var logical = Assert.Single(_stopped, a => a.SpanId == attemptSpan.ParentSpanId);
            Assert.Equal(GovernanceTelemetry.Name, logical.Source.Name);
        }
    }

    [Fact]
    public async Task GetAsync_CallerSetTraceParentOfAnotherTrace_KeptOnRetries()
    {
        Listen();
        var received = new ConcurrentQueue<string>();
        Func<HttpContext, Task> record(int status) => c =>
        {
            received.Enqueue(c.Request.Headers.TraceParent.ToString());
            c.Response.StatusCode = status;
            return Task.CompletedTask;
        };
        await using var failing = await LoopbackServer.StartAsync("failing", record(503));
        await using var healthy = await LoopbackServer.StartAsync("healthy", record(200));
        var settings = Governed.Service("catalog", "RoundRobin", failing, healthy);
        settings["Services:catalog:Retry:BaseDelay"] = "00:00:00";
        await using var governed = Governed.Create(
            settings,
            services => services.ConfigureHttpClientDefaults(b => b.ConfigurePrimaryHttpMessageHandler(() => new SocketsHttpHandler { AllowAutoRedirect = false })));

        // A caller that forwards a trace context of its own (not the current one): every attempt sends it as given.
        const string Forwarded = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for (var i = 0; i < 2; i++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "http://catalog/");
            request.Headers.TryAddWithoutValidation("traceparent", Forwarded);
            using var response = await governed.Client.SendAsync(request).WaitAsync(TimeSpan.FromSeconds(30));
            response.EnsureSuccessStatusCode();
        }

        Assert.InRange(received.Count, 3, 4);
        Assert.All(received, r => Assert.Equal(Forwarded, r));

        // A caller that writes its own span's context (governance's span is that span's child): kept on retries too.
        var sent = 0;
        for (var i = 0; i < 2; i++)
        {
            received.Clear();
            using var caller = TestSource.StartActivity("caller")!;
            var own = $"00-{caller.TraceId.ToHexString()}-{caller.SpanId.ToHexString()}-01";
            using var request = new HttpRequestMessage(HttpMethod.Get, "http://catalog/");
            request.Headers.TryAddWithoutValidation("traceparent", own);
            using var response = await governed.Client.SendAsync(request).WaitAsync(TimeSpan.FromSeconds(30));
            response.EnsureSuccessStatusCode();
            Assert.All(received, r => Assert.Equal(own, r));
            sent += received.Count;
        }

        Assert.InRange(sent, 3, 4);
    }

    [Fact]
    public async Task GetAsync_Hedged_EachAttemptCarriesItsOwnParent()
    {
        Listen();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var seen = new ConcurrentQueue<string>();
        await using var stuck = await LoopbackServer.StartAsync("stuck", async c =>
        {
            seen.Enqueue(c.Request.Headers.TraceParent.ToString());
            await release.Task.WaitAsync(TimeSpan.FromSeconds(60));
        });
        await using var fast = await LoopbackServer.StartAsync("fast", c =>
        {
            seen.Enqueue(c.Request.Headers.TraceParent.ToString());
            return Task.CompletedTask;
        });
        var settings = Governed.Service("catalog", "RoundRobin", stuck, fast);
        settings["Services:catalog:Hedging:Enabled"] = "true";
        settings["Services:catalog:Hedging:Delay"] = "00:00:00.020";
        await using var governed = Governed.Create(settings);
        try
        {
            for (var i = 0; i < 4 && stuck.RequestCount == 0; i++)
            {
                using var root = TestSource.StartActivity("test")!;
                using var response = await governed.Client.GetAsync("http://catalog/").WaitAsync(TimeSpan.FromSeconds(30));
                Assert.Equal("fast", Assert.Single(response.Headers.GetValues("x-server")));
            }
        }
        finally
        {
            release.SetResult();
        }

        // Every request that reached a backend carried a distinct parent: the hedged copy did not reuse the first attempt's.
        var parents = seen.Select(t => ActivityContext.Parse(t, null).SpanId.ToHexString()).ToList();
        Assert.True(stuck.RequestCount >= 1, "a primary attempt went to the stuck endpoint and was hedged");
        Assert.Equal(parents.Count, parents.Distinct().Count());
    }

    [Fact]
    public async Task Metrics_NamesUnitsAndTagsArePinned()
    {
        var measurements = new ConcurrentQueue<(string Instrument, string? Unit, object Value, Dictionary<string, object?> Tags)>();
        using var meters = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == GovernanceTelemetry.Name)
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        void Record<T>(Instrument instrument, T value, ReadOnlySpan<KeyValuePair<string, object?>> tags, object? state)
        {
            var dictionary = new Dictionary<string, object?>();
            foreach (var tag in tags)
            {
                dictionary[tag.Key] = tag.Value;
            }

            measurements.Enqueue((instrument.Name, instrument.Unit, value!, dictionary));
        }

        meters.SetMeasurementEventCallback<double>(Record);
        meters.SetMeasurementEventCallback<long>(Record);
        meters.SetMeasurementEventCallback<int>(Record);
        meters.Start();

        await using var failing = await LoopbackServer.StartAsync("failing", c => { c.Response.StatusCode = 503; return Task.CompletedTask; });
        await using var healthy = await LoopbackServer.StartAsync("healthy");
        var settings = Governed.Service("metered", "RoundRobin", failing, healthy);
        settings["Services:metered:Retry:BaseDelay"] = "00:00:00";
        settings["Services:metered:RateLimit:Algorithm"] = "Concurrency";
        settings["Services:metered:RateLimit:Burst"] = "1";
        await using var governed = Governed.Create(settings);

        for (var i = 0; i < 2; i++)
        {
            using var response = await governed.Client.GetAsync("http://metered/?q=1").WaitAsync(TimeSpan.FromSeconds(30));
            response.EnsureSuccessStatusCode();
        }

        // The only permit is held here (a real-clock token bucket could refill before the call on a slow machine): the
        // third call is rejected before any network work.
        Assert.True(governed.Services.GetRequiredService<Governance.Pipeline.GovernanceRuntime>().TryGetService("metered", out var metered));
        using var held = metered.Policy.Limiter!.AttemptAcquire();
        Assert.True(held.IsAcquired);
        await Assert.ThrowsAsync<RateLimitRejectedException>(() => governed.Client.GetAsync("http://metered/").WaitAsync(TimeSpan.FromSeconds(30)));
        meters.RecordObservableInstruments();

        var ours = measurements.Where(m => Equals(m.Tags.GetValueOrDefault(GovernanceTelemetry.ServiceTag), "metered")).ToList();
        foreach (var m in ours)
        {
            output.WriteLine($"{m.Instrument} [{m.Unit}] {m.Value} {string.Join(", ", m.Tags.Select(t => $"{t.Key}={t.Value}"))}");
        }

        // Two answered calls and the rejected one: every logical call has its duration.
        var durations = ours.Where(m => m.Instrument == GovernanceTelemetry.Instruments.RequestDuration).ToList();
        Assert.Equal(3, durations.Count);
        var rejected = Assert.Single(durations, d => d.Tags.ContainsKey("error.type"));
        Assert.Equal(typeof(RateLimitRejectedException).FullName, rejected.Tags["error.type"]);
        durations.Remove(rejected);
        Assert.All(durations, d =>
        {
            Assert.Equal("s", d.Unit);
            Assert.Equal("GET", d.Tags["http.request.method"]);
            Assert.Equal(200, d.Tags["http.response.status_code"]);
            Assert.InRange((double)d.Value, 0, 30);
        });
        // Two calls over round robin (which counts retry picks too): one or both start on the failing endpoint.
        var attempts = ours.Where(m => m.Instrument == GovernanceTelemetry.Instruments.Attempts).ToList();
        Assert.InRange(attempts.Count, 3, 4);
        Assert.All(attempts, a => Assert.Equal("127.0.0.1", a.Tags["server.address"]));
        Assert.Contains(attempts, a => Equals(a.Tags["server.port"], failing.Port) && Equals(a.Tags["http.response.status_code"], 503));
        var retries = ours.Where(m => m.Instrument == GovernanceTelemetry.Instruments.Retries).ToList();
        Assert.Equal(attempts.Count - 2, retries.Count);
        Assert.All(retries, r => Assert.Equal("gateway-error", r.Tags[GovernanceTelemetry.ReasonTag]));
        Assert.Single(ours, m => m.Instrument == GovernanceTelemetry.Instruments.RateLimitRejections);
        Assert.Contains(ours, m => m.Instrument == GovernanceTelemetry.Instruments.DiscoveryRefreshes && Equals(m.Tags[GovernanceTelemetry.DiscoveryProviderTag], "Static"));
        var gauge = ours.Where(m => m.Instrument == GovernanceTelemetry.Instruments.LoadBalancerEndpoints).ToDictionary(m => (string)m.Tags[GovernanceTelemetry.StateTag]!, m => (int)m.Value);
        Assert.Equal(2, gauge["available"]);
        Assert.Equal(0, gauge["ejected"]);
        Assert.DoesNotContain(ours, m => m.Tags.Values.Any(v => v is string s && s.Contains("q=1", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task Telemetry_QueryHeadersAndBody_NeverRecorded()
    {
        Listen();
        var logs = new CapturingLoggerProvider();
        await using var server = await LoopbackServer.StartAsync("a", c => { c.Response.StatusCode = 503; return Task.CompletedTask; });
        var settings = Governed.Service("catalog", null, server);
        settings["Services:catalog:Retry:MaxRetries"] = "1";
        settings["Services:catalog:Retry:BaseDelay"] = "00:00:00";
        await using var governed = Governed.Create(settings, s => s.AddLogging(l => l.AddProvider(logs).SetMinimumLevel(LogLevel.Trace)));
        using var root = TestSource.StartActivity("test")!;
        using var request = new HttpRequestMessage(HttpMethod.Put, "http://catalog/users/7?token=s3cr3t-query") { Content = new StringContent("s3cr3t-body") };
        request.Headers.Add("Authorization", "Bearer s3cr3t-header");

        using var response = await governed.Client.SendAsync(request).WaitAsync(TimeSpan.FromSeconds(30));

        var ours = Spans(root.TraceId).Where(s => s.Source.Name == GovernanceTelemetry.Name).ToList();
        Assert.NotEmpty(ours);
        var recorded = ours.SelectMany(s => s.TagObjects.Select(t => $"{t.Key}={t.Value}")
            .Concat(s.Events.SelectMany(e => e.Tags.Select(t => $"{e.Name}:{t.Key}={t.Value}")))
            .Append(s.DisplayName)
            .Append(s.StatusDescription ?? string.Empty))
            .Concat(logs.Entries.Select(e => e.Message))
            .ToList();
        Assert.Contains(logs.Entries, e => e.EventId.Id == 1201);
        Assert.DoesNotContain(recorded, r => r.Contains("s3cr3t", StringComparison.Ordinal));
    }

    [Fact]
    public async Task StartCall_NobodyListens_CreatesNoSpan()
    {
        await using var server = await LoopbackServer.StartAsync("a");
        var current = new ConcurrentQueue<string>();
        await using var governed = Governed.Create(
            Governed.Service("catalog", null, server),
            services => services.ConfigureHttpClientDefaults(b => b.AddHttpMessageHandler(() => new CurrentActivityRecorder(current))));

        // No listener for MeshGovernance here (this collection runs alone): nothing is created. What is current while the
        // attempt leaves governance (a handler under it records it) is the caller's: none.
        Assert.False(GovernanceInstrumentation.Source.HasListeners());
        using var response = await governed.Client.GetAsync("http://catalog/").WaitAsync(TimeSpan.FromSeconds(30));

        response.EnsureSuccessStatusCode();
        Assert.Equal(["(none)"], current);
    }

    /// <summary>Records the source and name of <see cref="Activity.Current"/> as each request passes, or "(none)".</summary>
    private sealed class CurrentActivityRecorder(ConcurrentQueue<string> seen) : DelegatingHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            seen.Enqueue(Activity.Current is { } current ? $"{current.Source.Name}: {current.OperationName}" : "(none)");
            return base.SendAsync(request, cancellationToken);
        }
    }

    /// <summary>A discovery provider that has no answer until the test gives one.</summary>
    private sealed class LateDiscovery : Governance.Discovery.IServiceDiscoveryProvider, Governance.Discovery.IServiceEndpointWatcher
    {
        public const string ProviderName = "Late";
        private CancellationTokenSource _changed = new();

        public string Name => ProviderName;

        public IReadOnlyList<ServiceEndpoint>? Current { get; private set; }

        public Governance.Discovery.IServiceEndpointWatcher Watch(string serviceName, Governance.Configuration.ServiceOptions options) => this;

        public Microsoft.Extensions.Primitives.IChangeToken GetChangeToken() => new Microsoft.Extensions.Primitives.CancellationChangeToken(_changed.Token);

        public void Resolve(ServiceEndpoint endpoint)
        {
            // A fired token is never handed out again (ChangeToken.OnChange would register on it forever).
            var fired = _changed;
            _changed = new CancellationTokenSource();
            Current = [endpoint];
            fired.Cancel();
        }

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
