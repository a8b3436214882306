using BenchmarkDotNet.Attributes;
using Governance.Benchmarks.Infrastructure;
using Governance.Pipeline;
using Governance.Resilience;
using Microsoft.Extensions.DependencyInjection;
using Polly;

namespace Governance.Benchmarks.Pipeline;

/// <summary>
/// The pieces a successful one-attempt governed call runs, each called alone on the real objects of a governed
/// provider with default settings (3 static endpoints, LeastRequest, default resilience), to tell which stage dominates
/// the governed path. Internal APIs, reached through <c>InternalsVisibleTo</c>:
/// <list type="bullet">
///   <item><description><c>Pick</c>: <c>ServiceRuntime.TryPick</c> (endpoint set and LeastRequest picker);</description></item>
///   <item><description><c>Rewrite</c>: <c>EndpointState.Rewrite</c> of the same logical URI (cache hit);</description></item>
///   <item><description><c>AttemptTimeout</c>: renting the attempt's pooled <see cref="CancellationTokenSource"/> with <c>CancelAfter(Timeout:PerAttempt)</c> and returning it (<c>TryReset</c>);</description></item>
///   <item><description><c>BreakerRecord</c>: <c>EndpointBreaker.RecordAsync</c> of a 200 on a closed circuit;</description></item>
///   <item><description><c>BreakerRecordFailure</c>: <c>EndpointBreaker.RecordAsync</c> of a 503 on a closed circuit that never trips (a second provider with <c>FailureRatio</c> 1 and <c>MinimumThroughput</c> <see cref="int.MaxValue"/>, so every failure is counted and evaluated but none opens it);</description></item>
///   <item><description><c>OutlierRecord</c>: <c>ServiceRuntime.RecordOutcome</c> of a 200 (outlier accounting);</description></item>
///   <item><description><c>RetryBudget</c>: <c>RetryBudget.OnRequest</c>, counted once per call;</description></item>
///   <item><description><c>Timestamp</c>: one <c>TimeProvider.System.GetTimestamp()</c> (a successful first attempt reads the clock once, at the call's start; retries read it again for their remaining time, and a breaker failure for its window).</description></item>
/// </list>
/// </summary>
[MemoryDiagnoser]
public class GovernedComponentBenchmarks
{
    private static readonly Uri[] Endpoints =
    [
        new("http://127.0.0.1:5001"),
        new("http://127.0.0.1:5002"),
        new("http://127.0.0.1:5003"),
    ];

    private readonly CompletedResponseHandler _terminal = new();
    private readonly HttpRequestMessage _request = new(HttpMethod.Get, $"http://{Pipelines.ServiceName}/api/items");
    private readonly Outcome<HttpResponseMessage> _outcome = Outcome.FromResult(new HttpResponseMessage(System.Net.HttpStatusCode.OK));
    private readonly Outcome<HttpResponseMessage> _failure = Outcome.FromResult(new HttpResponseMessage(System.Net.HttpStatusCode.ServiceUnavailable));
    private ServiceProvider _provider = null!;
    private ServiceProvider _neverTripping = null!;
    private EndpointState _neverTrippingEndpoint = null!;
    private ServiceRuntime _service = null!;
    private EndpointState _endpoint = null!;
    private Uri _logical = null!;
    private long _now;
    private int _timeouts;

    [GlobalSetup]
    public void Setup()
    {
        _provider = Pipelines.Governed(() => _terminal, Endpoints);
        if (!_provider.GetRequiredService<GovernanceRuntime>().TryGetService(Pipelines.ServiceName, out var service))
        {
            throw new InvalidOperationException($"service {Pipelines.ServiceName} is not governed");
        }

        _service = service;
        _endpoint = service.Endpoints.All[0];
        _logical = _request.RequestUri!;
        if (_endpoint.Breaker is null || service.Policy.Settings.Outlier is null)
        {
            throw new InvalidOperationException("the default settings should enable the breaker and outlier detection");
        }

        _neverTripping = Pipelines.Governed(
            () => _terminal,
            Endpoints,
            serviceKeys: [new("CircuitBreaker:FailureRatio", "1"), new("CircuitBreaker:MinimumThroughput", int.MaxValue.ToString(System.Globalization.CultureInfo.InvariantCulture))]);
        if (!_neverTripping.GetRequiredService<GovernanceRuntime>().TryGetService(Pipelines.ServiceName, out var neverTripping)
            || neverTripping.Endpoints.All[0].Breaker is null)
        {
            throw new InvalidOperationException($"service {Pipelines.ServiceName} should have a breaker");
        }

        _neverTrippingEndpoint = neverTripping.Endpoints.All[0];
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _provider.Dispose();
        _neverTripping.Dispose();
    }

    [Benchmark]
    public object? Pick() => _service.TryPick(_request);

    [Benchmark]
    public Uri Rewrite() => _endpoint.Rewrite(_logical);

    [Benchmark]
    public void AttemptTimeout()
    {
        // The handler passes the call's start timestamp (read anyway): not counted here, refreshed every 1,024 timeouts so
        // that deadlines stay in the future, as a real call's are.
        var policy = _service.Policy;
        if ((_timeouts++ & 1023) == 0)
        {
            _now = policy.Time.GetTimestamp();
        }

        TimeoutScheduler.End(policy.Timeouts.Start(_now, policy.Timeout.PerAttempt));
    }

    [Benchmark]
    public ValueTask BreakerRecord() => _endpoint.Breaker!.RecordAsync(_outcome, span: null);

    [Benchmark]
    public ValueTask BreakerRecordFailure() => _neverTrippingEndpoint.Breaker!.RecordAsync(_failure, span: null);

    [Benchmark]
    public void OutlierRecord() => _service.RecordOutcome(_endpoint, _outcome);

    [Benchmark]
    public void RetryBudget() => _service.Policy.Budget.OnRequest();

    [Benchmark]
    public long Timestamp() => TimeProvider.System.GetTimestamp();
}
