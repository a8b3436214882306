using System.Diagnostics;
using System.Diagnostics.Metrics;
using BenchmarkDotNet.Attributes;
using Governance.Benchmarks.Infrastructure;
using Governance.Pipeline;
using Governance.Telemetry;
using Microsoft.Extensions.DependencyInjection;
using Polly;

namespace Governance.Benchmarks.Telemetry;

/// <summary>
/// The cost of MeshGovernance's tracing and metrics per governed call, in memory (terminal handler returning a cached,
/// completed 200). The same rows run twice, in two classes, so that listeners never reach the unobserved rows
/// (<see cref="ActivitySource.HasListeners"/> and <see cref="Instrument.Enabled"/> are process-wide; BenchmarkDotNet
/// runs every case in its own process, and listeners are created only by the observed class's setup):
/// <see cref="UnobservedTelemetryBenchmarks"/> with no listener at all, <see cref="ObservedTelemetryBenchmarks"/> with an
/// <see cref="ActivityListener"/> that samples every activity of the <c>MeshGovernance</c> source (and of this
/// benchmark's baseline source; not <c>System.Net.Http</c>, which the in-memory terminal does not use anyway) with
/// <see cref="ActivitySamplingResult.AllDataAndRecorded"/>, and a <see cref="MeterListener"/> that enables every
/// instrument of the <c>MeshGovernance</c> meter with no-op measurement callbacks. Rows:
/// <list type="bullet">
///   <item><description><c>Governed</c>: the IHttpClientFactory chain with <c>AddMeshGovernance</c>, logical URL (the same URI every time), 3 static endpoints, default policy and resilience;</description></item>
///   <item><description><c>GovernanceHandlerOnly</c>: MeshGovernance's handler directly over the terminal (no factory handlers);</description></item>
///   <item><description><c>TelemetryHooks</c>: only the telemetry calls a successful one-attempt governed call makes, on the real objects of that provider: <c>StartCall</c>, <c>RecordAttempt</c>, <c>EndCall</c> (span with service, method and status tags; the duration histogram; the attempts counter). With no listener this is everything telemetry adds to the call's code path;</description></item>
///   <item><description><c>BareActivity</c>: start and stop one <see cref="Activity"/> of a test source, with the span's tags (<c>governance.service</c>, <c>http.request.method</c>, <c>http.response.status_code</c>), under the same listener: the reference of the "1.1x one bare Activity" goal.</description></item>
/// </list>
/// </summary>
public abstract class TelemetryBenchmarks
{
    /// <summary>The baseline activity source; the observed class's listener samples it like <c>MeshGovernance</c>.</summary>
    public const string BaselineSourceName = "Governance.Benchmarks.Baseline";

    private static readonly ActivitySource BaselineSource = new(BaselineSourceName);
    private static readonly object Status200 = 200;

    private static readonly Uri[] Endpoints =
    [
        new("http://127.0.0.1:5001"),
        new("http://127.0.0.1:5002"),
        new("http://127.0.0.1:5003"),
    ];

    private readonly CompletedResponseHandler _terminal = new();
    private readonly HttpRequestMessage _request = new(HttpMethod.Get, $"http://{Pipelines.ServiceName}/api/items");
    private readonly HttpResponseMessage _response = new(System.Net.HttpStatusCode.OK);
    private ServiceProvider _provider = null!;
    private HttpMessageInvoker _governed = null!;
    private HttpMessageInvoker _governanceHandlerOnly = null!;
    private GovernanceInstrumentation _instrumentation = null!;
    private ServiceRuntime _service = null!;
    private EndpointState _endpoint = null!;
    private Outcome<HttpResponseMessage> _outcome;
    private long _startedAt;
    private int _calls;

    /// <summary>Gets the instrumentation of the governed provider (to check which instruments are enabled).</summary>
    private protected GovernanceInstrumentation Instrumentation => _instrumentation;

    protected void DisposeProvider() => _provider.Dispose();

    [Benchmark]
    public Task<HttpResponseMessage> Governed() => _governed.SendAsync(_request, CancellationToken.None);

    [Benchmark]
    public Task<HttpResponseMessage> GovernanceHandlerOnly() => _governanceHandlerOnly.SendAsync(_request, CancellationToken.None);

    [Benchmark]
    public void TelemetryHooks()
    {
        // What GovernanceHandler does around a successful first attempt (SendGovernedAsync and AttemptAsync): the call's
        // start timestamp is taken whatever telemetry does (it drives the total timeout), so it is not counted here.
        // It is refreshed now and then so that it stays within the span clock's one-second anchor, as a real call's is.
        if ((++_calls & 1023) == 0)
        {
            _startedAt = TimeProvider.System.GetTimestamp();
        }

        var clock = _service.Policy.SpanClock;
        var activity = GovernanceInstrumentation.StartCall(_service, _request, _startedAt, clock);
        _instrumentation.RecordAttempt(_service, _endpoint, 1, _outcome);
        if (activity is not null || _instrumentation.RequestDuration.Enabled)
        {
            _instrumentation.EndCall(activity, _service, _request, _startedAt, TimeProvider.System, clock, _response, null);
        }
    }

    [Benchmark]
    public void BareActivity() => RunBareActivity();

    /// <summary>The baseline of the "1.1x one bare Activity" goal: start and stop one activity with the span's three tags.</summary>
    internal static void RunBareActivity()
    {
        using var activity = BaselineSource.StartActivity("GET catalog", ActivityKind.Internal);
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag(GovernanceTelemetry.ServiceTag, Pipelines.ServiceName);
            activity.SetTag("http.request.method", "GET");
            activity.SetTag("http.response.status_code", Status200);
        }
    }

    /// <summary>Starts the activity listener of the observed rows: everything of MeshGovernance and of the baseline source, all data.</summary>
    internal static ActivityListener StartActivityListener()
    {
        var listener = new ActivityListener
        {
            ShouldListenTo = static source => source.Name is GovernanceTelemetry.Name or BaselineSourceName,
            Sample = static (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            SampleUsingParentId = static (ref ActivityCreationOptions<string> _) => ActivitySamplingResult.AllDataAndRecorded,
        };
        ActivitySource.AddActivityListener(listener);
        return listener;
    }

    /// <summary>Starts the meter listener of the observed rows: every MeshGovernance instrument, no-op callbacks.</summary>
    internal static MeterListener StartMeterListener()
    {
        var listener = new MeterListener
        {
            InstrumentPublished = static (instrument, listener) =>
            {
                if (instrument.Meter.Name == GovernanceTelemetry.Name)
                {
                    listener.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>(static (_, _, _, _) => { });
        listener.SetMeasurementEventCallback<double>(static (_, _, _, _) => { });
        listener.SetMeasurementEventCallback<int>(static (_, _, _, _) => { });
        listener.Start();
        return listener;
    }

    /// <summary>Builds the pipelines after the derived class has (or has not) started its listeners, and checks them.</summary>
    protected async Task BuildAsync()
    {
        _provider = Pipelines.Governed(() => _terminal, Endpoints);
        _governed = new HttpMessageInvoker(Pipelines.CreateHandler(_provider), disposeHandler: false);
        _governanceHandlerOnly = new HttpMessageInvoker(Pipelines.GovernanceHandlerOnly(_provider, _terminal), disposeHandler: false);
        _instrumentation = _provider.GetRequiredService<GovernanceInstrumentation>();
        if (!_provider.GetRequiredService<GovernanceRuntime>().TryGetService(Pipelines.ServiceName, out var service))
        {
            throw new InvalidOperationException($"service {Pipelines.ServiceName} is not governed");
        }

        _service = service;
        _endpoint = service.Endpoints.All[0];
        _outcome = Outcome.FromResult(_response);
        _startedAt = TimeProvider.System.GetTimestamp();

        _terminal.Record = true;
        foreach (var invoker in new[] { _governed, _governanceHandlerOnly })
        {
            var response = await invoker.SendAsync(_request, CancellationToken.None);
            if (!response.IsSuccessStatusCode || _terminal.LastUri?.Host != "127.0.0.1")
            {
                throw new InvalidOperationException($"the governed call reached {_terminal.LastUri} with {response.StatusCode}");
            }
        }

        _terminal.Record = false;
    }
}

/// <summary>The telemetry rows with nothing listening (see <see cref="TelemetryBenchmarks"/>).</summary>
[MemoryDiagnoser]
public class UnobservedTelemetryBenchmarks : TelemetryBenchmarks
{
    [GlobalSetup]
    public async Task Setup()
    {
        await BuildAsync();
        if (GovernanceInstrumentation.Source.HasListeners() || Instrumentation.RequestDuration.Enabled || Instrumentation.Attempts.Enabled)
        {
            throw new InvalidOperationException("something listens to MeshGovernance in the unobserved process");
        }
    }

    [GlobalCleanup]
    public void Cleanup() => DisposeProvider();
}

/// <summary>
/// The telemetry rows with an activity listener and a meter listener (see <see cref="TelemetryBenchmarks"/>), plus
/// <c>GovernanceHandlerOnly</c> and <c>TelemetryHooks</c> with only one of the two listeners, to tell tracing's share
/// from metrics'.
/// </summary>
[MemoryDiagnoser]
public class ObservedTelemetryBenchmarks : TelemetryBenchmarks
{
    private ActivityListener? _activityListener;
    private MeterListener? _meterListener;

    [GlobalSetup]
    public Task Setup() => StartAsync(traces: true, metrics: true);

    [GlobalSetup(Targets = [nameof(GovernanceHandlerOnlyTracesOnly), nameof(TelemetryHooksTracesOnly)])]
    public Task SetupTracesOnly() => StartAsync(traces: true, metrics: false);

    [GlobalSetup(Targets = [nameof(GovernanceHandlerOnlyMetricsOnly), nameof(TelemetryHooksMetricsOnly)])]
    public Task SetupMetricsOnly() => StartAsync(traces: false, metrics: true);

    [GlobalCleanup]
    public void Cleanup()
    {
        DisposeProvider();
        _activityListener?.Dispose();
        _meterListener?.Dispose();
    }

    [Benchmark]
    public Task<HttpResponseMessage> GovernanceHandlerOnlyTracesOnly() => GovernanceHandlerOnly();

    [Benchmark]
    public Task<HttpResponseMessage> GovernanceHandlerOnlyMetricsOnly() => GovernanceHandlerOnly();

    [Benchmark]
    public void TelemetryHooksTracesOnly() => TelemetryHooks();

    [Benchmark]
    public void TelemetryHooksMetricsOnly() => TelemetryHooks();

    private async Task StartAsync(bool traces, bool metrics)
    {
        _activityListener = traces ? StartActivityListener() : null;
        _meterListener = metrics ? StartMeterListener() : null;
        await BuildAsync();
        if (GovernanceInstrumentation.Source.HasListeners() != traces || Instrumentation.RequestDuration.Enabled != metrics || Instrumentation.Attempts.Enabled != metrics)
        {
            throw new InvalidOperationException($"MeshGovernance source listened: {GovernanceInstrumentation.Source.HasListeners()} (expected {traces}); instruments enabled: {Instrumentation.RequestDuration.Enabled} (expected {metrics})");
        }
    }
}
