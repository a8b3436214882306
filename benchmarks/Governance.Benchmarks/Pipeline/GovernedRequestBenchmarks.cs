using BenchmarkDotNet.Attributes;
using Governance.Benchmarks.Infrastructure;
using Microsoft.Extensions.DependencyInjection;

namespace Governance.Benchmarks.Pipeline;

/// <summary>
/// One request through a client pipeline whose terminal handler answers in memory with a cached, completed response,
/// so each row is the cost of the handlers alone. Every row sends the same reused <see cref="HttpRequestMessage"/>
/// through <see cref="HttpMessageInvoker.SendAsync"/> (no <see cref="HttpClient"/> layer), over the same terminal:
/// <list type="bullet">
///   <item><description><c>Bare</c>: the terminal handler only, physical URL (the baseline of the Ratio column);</description></item>
///   <item><description><c>Factory</c>: the IHttpClientFactory chain with no governance, physical URL;</description></item>
///   <item><description><c>StandardResilience</c>: the factory chain with <c>AddStandardResilienceHandler()</c> (Microsoft.Extensions.Http.Resilience, its defaults), physical URL;</description></item>
///   <item><description><c>Governed</c>: the same factory chain with <c>AddMeshGovernance</c>, logical URL <c>http://catalog/...</c>, 3 static endpoints, default policy (LeastRequest) and default resilience (retry 2, total and per-attempt timeouts, per-endpoint breaker, outlier detection);</description></item>
///   <item><description><c>GovernedFullStack</c>: <c>Governed</c> plus a token-bucket rate limit that never rejects;</description></item>
///   <item><description><c>GovernanceHandlerOnly</c>: MeshGovernance's handler directly over the terminal, no factory handlers, logical URL (isolates governance's own cost: compare with <c>Bare</c>);</description></item>
///   <item><description><c>GovernedPassThrough</c>: the governed chain with a physical URL (host not governed);</description></item>
///   <item><description><c>ServiceDiscovery</c>: the factory chain with Microsoft.Extensions.ServiceDiscovery, logical URL, the same 3 endpoints from configuration.</description></item>
/// </list>
/// <see cref="Url"/> <c>Same</c> sends one URI object every time (the governed handler's per-endpoint rewrite cache
/// hits); <c>Varying</c> rotates through 1,024 URIs that differ in the query string (every rewrite misses).
/// </summary>
[MemoryDiagnoser]
public class GovernedRequestBenchmarks
{
    private const int UriCount = 1024;

    private static readonly Uri[] Endpoints =
    [
        new("http://127.0.0.1:5001"),
        new("http://127.0.0.1:5002"),
        new("http://127.0.0.1:5003"),
    ];

    private readonly CompletedResponseHandler _terminal = new();
    private readonly HttpRequestMessage _request = new(HttpMethod.Get, "http://127.0.0.1:5001/");
    private readonly List<ServiceProvider> _providers = [];
    private HttpMessageInvoker _bare = null!;
    private HttpMessageInvoker _factory = null!;
    private HttpMessageInvoker _standardResilience = null!;
    private HttpMessageInvoker _governed = null!;
    private HttpMessageInvoker _governedFullStack = null!;
    private HttpMessageInvoker _governanceHandlerOnly = null!;
    private HttpMessageInvoker _serviceDiscovery = null!;
    private Uri[] _physical = null!;
    private Uri[] _logical = null!;
    private int _next;

    public enum UrlKind
    {
        Same,
        Varying,
    }

    [Params(UrlKind.Same, UrlKind.Varying)]
    public UrlKind Url { get; set; }

    [GlobalSetup]
    public async Task Setup()
    {
        var count = Url == UrlKind.Same ? 1 : UriCount;
        _physical = new Uri[count];
        _logical = new Uri[count];
        for (var i = 0; i < count; i++)
        {
            _physical[i] = new Uri($"http://127.0.0.1:5001/api/items?page={i}");
            _logical[i] = new Uri($"http://{Pipelines.ServiceName}/api/items?page={i}");
        }

        _bare = new HttpMessageInvoker(_terminal, disposeHandler: false);
        _factory = Invoker(Pipelines.Factory(() => _terminal));
        _standardResilience = Invoker(Pipelines.StandardResilience(() => _terminal));
        var governed = Pipelines.Governed(() => _terminal, Endpoints);
        _governed = Invoker(governed);
        _governedFullStack = Invoker(Pipelines.Governed(() => _terminal, Endpoints, serviceKeys: Pipelines.NeverRejectingRateLimit));
        _governanceHandlerOnly = new HttpMessageInvoker(Pipelines.GovernanceHandlerOnly(governed, _terminal), disposeHandler: false);
        _serviceDiscovery = Invoker(Pipelines.ServiceDiscovery(() => _terminal, Endpoints));

        // Prove each pipeline sends where it should (and warm the discovery caches) before measuring.
        _terminal.Record = true;
        await Check(_factory, _physical[0], expectedHost: "127.0.0.1");
        await Check(_standardResilience, _physical[0], expectedHost: "127.0.0.1");
        await Check(_governed, _logical[0], expectedHost: "127.0.0.1");
        await Check(_governedFullStack, _logical[0], expectedHost: "127.0.0.1");
        await Check(_governed, _physical[0], expectedHost: "127.0.0.1");
        await Check(_governanceHandlerOnly, _logical[0], expectedHost: "127.0.0.1");
        await Check(_serviceDiscovery, _logical[0], expectedHost: "127.0.0.1");
        _terminal.Record = false;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var provider in _providers)
        {
            provider.Dispose();
        }
    }

    [Benchmark(Baseline = true)]
    public Task<HttpResponseMessage> Bare() => Send(_bare, _physical);

    [Benchmark]
    public Task<HttpResponseMessage> Factory() => Send(_factory, _physical);

    [Benchmark]
    public Task<HttpResponseMessage> StandardResilience() => Send(_standardResilience, _physical);

    [Benchmark]
    public Task<HttpResponseMessage> Governed() => Send(_governed, _logical);

    [Benchmark]
    public Task<HttpResponseMessage> GovernedFullStack() => Send(_governedFullStack, _logical);

    [Benchmark]
    public Task<HttpResponseMessage> GovernanceHandlerOnly() => Send(_governanceHandlerOnly, _logical);

    [Benchmark]
    public Task<HttpResponseMessage> GovernedPassThrough() => Send(_governed, _physical);

    [Benchmark]
    public Task<HttpResponseMessage> ServiceDiscovery() => Send(_serviceDiscovery, _logical);

    private Task<HttpResponseMessage> Send(HttpMessageInvoker invoker, Uri[] uris)
    {
        _request.RequestUri = uris[_next++ & (uris.Length - 1)];
        return invoker.SendAsync(_request, CancellationToken.None);
    }

    private HttpMessageInvoker Invoker(ServiceProvider provider)
    {
        _providers.Add(provider);
        return new HttpMessageInvoker(Pipelines.CreateHandler(provider), disposeHandler: false);
    }

    private async Task Check(HttpMessageInvoker invoker, Uri uri, string expectedHost)
    {
        _request.RequestUri = uri;
        // Not disposed: the terminal hands out one shared response.
        _ = await invoker.SendAsync(_request, CancellationToken.None);
        if (_terminal.LastUri?.Host != expectedHost || _request.RequestUri != uri)
        {
            throw new InvalidOperationException($"{uri} reached the terminal as {_terminal.LastUri} and came back as {_request.RequestUri}; expected host {expectedHost} and the logical URI restored.");
        }
    }
}
