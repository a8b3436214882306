using BenchmarkDotNet.Attributes;
using Governance.Benchmarks.Infrastructure;
using Microsoft.Extensions.DependencyInjection;

namespace Governance.Benchmarks.Pipeline;

/// <summary>
/// Where the time of a governed call goes, by configuration: one send of the same logical URI through MeshGovernance's
/// handler directly over the in-memory terminal (as <c>GovernanceHandlerOnly</c> in
/// <see cref="GovernedRequestBenchmarks"/>), with the resilience stages that can be switched off switched off one at a
/// time, then the timeouts too: <c>LoadBalancingOnly</c> is the cheapest governed call there is.
/// <list type="bullet">
///   <item><description><c>Defaults</c>: retry 2, total and per-attempt timeouts, per-endpoint circuit breaker, outlier detection;</description></item>
///   <item><description><c>NoBreaker</c>: <c>CircuitBreaker:Enabled false</c>;</description></item>
///   <item><description><c>NoOutlier</c>: <c>OutlierDetection:Enabled false</c>;</description></item>
///   <item><description><c>NoRetry</c>: <c>Retry:MaxRetries 0</c>;</description></item>
///   <item><description><c>TimeoutsOnly</c>: all three off;</description></item>
///   <item><description><c>NoTimeouts</c>: <c>Timeout:Enabled false</c>, every other stage on;</description></item>
///   <item><description><c>LoadBalancingOnly</c>: all four off (discovery and load balancing only).</description></item>
/// </list>
/// </summary>
[MemoryDiagnoser]
public class GovernedStagesBenchmarks
{
    private static readonly Uri[] Endpoints =
    [
        new("http://127.0.0.1:5001"),
        new("http://127.0.0.1:5002"),
        new("http://127.0.0.1:5003"),
    ];

    private readonly CompletedResponseHandler _terminal = new();
    private readonly HttpRequestMessage _request = new(HttpMethod.Get, $"http://{Pipelines.ServiceName}/api/items");
    private ServiceProvider _provider = null!;
    private HttpMessageInvoker _invoker = null!;

    public enum StageSet
    {
        Defaults,
        NoBreaker,
        NoOutlier,
        NoRetry,
        TimeoutsOnly,
        NoTimeouts,
        LoadBalancingOnly,
    }

    [Params(StageSet.Defaults, StageSet.NoBreaker, StageSet.NoOutlier, StageSet.NoRetry, StageSet.TimeoutsOnly, StageSet.NoTimeouts, StageSet.LoadBalancingOnly)]
    public StageSet Stages { get; set; }

    [GlobalSetup]
    public async Task Setup()
    {
        KeyValuePair<string, string?>[] keys = Stages switch
        {
            StageSet.NoBreaker => Pipelines.NoBreaker,
            StageSet.NoOutlier => Pipelines.NoOutlier,
            StageSet.NoRetry => Pipelines.NoRetry,
            StageSet.TimeoutsOnly => Pipelines.TimeoutsOnly,
            StageSet.NoTimeouts => Pipelines.NoTimeouts,
            StageSet.LoadBalancingOnly => Pipelines.LoadBalancingOnly,
            _ => [],
        };
        _provider = Pipelines.Governed(() => _terminal, Endpoints, serviceKeys: keys);
        _invoker = new HttpMessageInvoker(Pipelines.GovernanceHandlerOnly(_provider, _terminal), disposeHandler: false);

        _terminal.Record = true;
        var response = await _invoker.SendAsync(_request, CancellationToken.None);
        if (!response.IsSuccessStatusCode || _terminal.LastUri?.Host != "127.0.0.1")
        {
            throw new InvalidOperationException($"the governed call reached {_terminal.LastUri} with {response.StatusCode}");
        }

        _terminal.Record = false;
    }

    [GlobalCleanup]
    public void Cleanup() => _provider.Dispose();

    [Benchmark]
    public Task<HttpResponseMessage> GovernanceHandlerOnly() => _invoker.SendAsync(_request, CancellationToken.None);
}
