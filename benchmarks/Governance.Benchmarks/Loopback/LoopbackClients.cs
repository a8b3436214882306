using Governance.Benchmarks.Infrastructure;
using Microsoft.Extensions.DependencyInjection;

namespace Governance.Benchmarks.Loopback;

/// <summary>
/// One loopback server and one client of each kind, all over a <see cref="SocketsHttpHandler"/> with the same settings
/// (no proxy, no lifetime limit), so that they differ only in what sits above the socket handler:
/// <list type="bullet">
///   <item><description><c>Bare</c>: <c>new HttpClient(new SocketsHttpHandler())</c>, physical URL;</description></item>
///   <item><description><c>BareControl</c> (only in <c>loopback-rounds</c>): a second client built exactly like <c>Bare</c>. Its ratio to <c>Bare</c> is the noise floor and the bias of the method (an A/A comparison): differences between other clients smaller than its spread are not measured;</description></item>
///   <item><description><c>OneSyncLayer</c> and <c>OneAsyncLayer</c> (only in <c>loopback-rounds</c>): <c>Bare</c> under one <see cref="DelegatingHandler"/> that does nothing: one that returns its inner handler's task (no async layer), and one that awaits it (<c>async</c>/<c>await</c>, one async layer, as every governance handler has at least). What one handler layer costs on this machine, with no work in it;</description></item>
///   <item><description><c>RewriteLayer</c>, <c>PooledRewriteLayer</c> and <c>CallbackRewriteLayer</c> (only in <c>loopback-rounds</c>): <c>Bare</c> under a <see cref="RewritingHandler"/> or a <see cref="CallbackRewritingHandler"/>, logical URL: the URI rewrite and restore of a governed call in one plain async layer, one pooled async layer (governance's shape until session 5) or one cached continuation completing a task completion source (its shape since), without any of governance's work;</description></item>
///   <item><description><c>Factory</c>: an IHttpClientFactory client without governance, physical URL;</description></item>
///   <item><description><c>StandardResilience</c>: an IHttpClientFactory client with <c>AddStandardResilienceHandler()</c> (Microsoft.Extensions.Http.Resilience, its defaults), physical URL;</description></item>
///   <item><description><c>Governed</c>: an IHttpClientFactory client with <c>AddMeshGovernance</c>, logical URL, the server as the only endpoint, default resilience (retry 2, total and per-attempt timeouts, per-endpoint breaker, outlier detection);</description></item>
///   <item><description><c>GovernedFullStack</c>: <c>Governed</c> plus a token-bucket rate limit that never rejects (<see cref="Pipelines.NeverRejectingRateLimit"/>);</description></item>
///   <item><description><c>GovernedNoBreaker</c> and <c>GovernedTimeoutsOnly</c> (only in <c>loopback-rounds</c>, to tell which stage costs what): <c>Governed</c> with <c>CircuitBreaker:Enabled false</c>, and with the breaker, outlier detection and retries off (<c>Retry:MaxRetries 0</c>), which leaves the two timeouts;</description></item>
///   <item><description><c>GovernanceHandlerOnly</c>: <c>new HttpClient(governanceHandler over new SocketsHttpHandler())</c>, logical URL: governance without the factory's handlers (not something users can build; it isolates governance's own cost, compare with <c>Bare</c>);</description></item>
///   <item><description><c>GovernanceHandlerNoTimeouts</c> and <c>GovernanceHandlerLoadBalancingOnly</c> (only in <c>loopback-rounds</c>): <c>GovernanceHandlerOnly</c> with <c>Timeout:Enabled false</c>, and with every resilience stage off (<see cref="Pipelines.LoadBalancingOnly"/>: issue 2's governance, discovery and load balancing);</description></item>
///   <item><description><c>GovernanceHandlerNoBreaker</c>, <c>GovernanceHandlerNoOutlier</c>, <c>GovernanceHandlerNoRetry</c> and <c>GovernanceHandlerTimeoutsOnly</c> (only in <c>loopback-rounds</c>): <c>GovernanceHandlerOnly</c> with one stage off (<c>CircuitBreaker:Enabled false</c>, <c>OutlierDetection:Enabled false</c>, <c>Retry:MaxRetries 0</c>) or all three: which stage costs what on a socket;</description></item>
///   <item><description><c>GovernedLoadBalancingOnlyNoFactoryLoggers</c> (only in <c>loopback-rounds</c>): <c>GovernedNoFactoryLoggers</c> with every resilience stage off, what a user of issue 2's governance (discovery and load balancing, no resilience) gets from the factory without its loggers;</description></item>
///   <item><description><c>GovernedNoFactoryLoggers</c> and <c>GovernedFullStackNoFactoryLoggers</c>: <c>Governed</c> and <c>GovernedFullStack</c> with the factory's logging handlers removed (<c>RemoveAllLoggers()</c>), what a user who opts out of them gets;</description></item>
///   <item><description><c>ServiceDiscovery</c>: an IHttpClientFactory client with Microsoft.Extensions.ServiceDiscovery, logical URL, the server from configuration.</description></item>
/// </list>
/// </summary>
internal sealed class LoopbackClients : IAsyncDisposable
{
    private readonly List<ServiceProvider> _providers = [];

    private LoopbackClients(LoopbackServer server)
    {
        Server = server;
        PhysicalUri = new Uri(server.Address, "/api/items");
        LogicalUri = new Uri($"http://{Pipelines.ServiceName}/api/items");
        Bare = new HttpClient(CreateSocketsHandler());
        BareControl = new HttpClient(CreateSocketsHandler());
        OneSyncLayer = new HttpClient(new PassThroughHandler { InnerHandler = CreateSocketsHandler() });
        OneAsyncLayer = new HttpClient(new AwaitingHandler { InnerHandler = CreateSocketsHandler() });
        RewriteLayer = new HttpClient(new RewritingHandler(PhysicalUri, pooled: false) { InnerHandler = CreateSocketsHandler() });
        PooledRewriteLayer = new HttpClient(new RewritingHandler(PhysicalUri, pooled: true) { InnerHandler = CreateSocketsHandler() });
        CallbackRewriteLayer = new HttpClient(new CallbackRewritingHandler(PhysicalUri) { InnerHandler = CreateSocketsHandler() });
        Factory = Client(Pipelines.Factory(CreateSocketsHandler));
        StandardResilience = Client(Pipelines.StandardResilience(CreateSocketsHandler));
        var governed = Pipelines.Governed(CreateSocketsHandler, [server.Address]);
        Governed = Client(governed);
        GovernedFullStack = Client(Pipelines.Governed(CreateSocketsHandler, [server.Address], serviceKeys: Pipelines.NeverRejectingRateLimit));
        GovernedNoBreaker = Client(Pipelines.Governed(CreateSocketsHandler, [server.Address], serviceKeys: Pipelines.NoBreaker));
        GovernedTimeoutsOnly = Client(Pipelines.Governed(CreateSocketsHandler, [server.Address], serviceKeys: Pipelines.TimeoutsOnly));
        GovernanceHandlerOnly = new HttpClient(Pipelines.GovernanceHandlerOnly(governed, CreateSocketsHandler()));
        GovernanceHandlerNoTimeouts = HandlerOnly(Pipelines.NoTimeouts);
        GovernanceHandlerLoadBalancingOnly = HandlerOnly(Pipelines.LoadBalancingOnly);
        GovernanceHandlerNoBreaker = HandlerOnly(Pipelines.NoBreaker);
        GovernanceHandlerNoOutlier = HandlerOnly(Pipelines.NoOutlier);
        GovernanceHandlerNoRetry = HandlerOnly(Pipelines.NoRetry);
        GovernanceHandlerTimeoutsOnly = HandlerOnly(Pipelines.TimeoutsOnly);
        GovernedNoFactoryLoggers = Client(Pipelines.GovernedWithoutFactoryLoggers(CreateSocketsHandler, [server.Address]));
        GovernedFullStackNoFactoryLoggers = Client(Pipelines.GovernedWithoutFactoryLoggers(CreateSocketsHandler, [server.Address], Pipelines.NeverRejectingRateLimit));
        GovernedLoadBalancingOnlyNoFactoryLoggers = Client(Pipelines.GovernedWithoutFactoryLoggers(CreateSocketsHandler, [server.Address], Pipelines.LoadBalancingOnly));
        ServiceDiscovery = Client(Pipelines.ServiceDiscovery(CreateSocketsHandler, [server.Address]));
    }

    public LoopbackServer Server { get; }

    public Uri PhysicalUri { get; }

    public Uri LogicalUri { get; }

    public HttpClient Bare { get; }

    /// <summary>Gets a second client identical to <see cref="Bare"/>: the A/A control of <c>loopback-rounds</c>.</summary>
    public HttpClient BareControl { get; }

    /// <summary>Gets <see cref="Bare"/> under a handler that returns its inner handler's task.</summary>
    public HttpClient OneSyncLayer { get; }

    /// <summary>Gets <see cref="Bare"/> under a handler that awaits its inner handler's task.</summary>
    public HttpClient OneAsyncLayer { get; }

    /// <summary>Gets <see cref="Bare"/> under a plain async handler that rewrites the logical URI to the server's and restores it.</summary>
    public HttpClient RewriteLayer { get; }

    /// <summary>Gets <see cref="RewriteLayer"/> as a pooled <see cref="ValueTask{TResult}"/> method returned as a task, governance's shape until session 5.</summary>
    public HttpClient PooledRewriteLayer { get; }

    /// <summary>Gets <see cref="RewriteLayer"/> without an async method: one cached continuation on the inner task completes a task completion source.</summary>
    public HttpClient CallbackRewriteLayer { get; }

    public HttpClient Factory { get; }

    public HttpClient StandardResilience { get; }

    public HttpClient Governed { get; }

    public HttpClient GovernedFullStack { get; }

    public HttpClient GovernedNoBreaker { get; }

    public HttpClient GovernedTimeoutsOnly { get; }

    public HttpClient GovernanceHandlerOnly { get; }

    /// <summary>Gets <see cref="GovernanceHandlerOnly"/> with governance's timeouts off (<c>Timeout:Enabled false</c>).</summary>
    public HttpClient GovernanceHandlerNoTimeouts { get; }

    /// <summary>Gets <see cref="GovernanceHandlerOnly"/> with every resilience stage off: discovery and load balancing only.</summary>
    public HttpClient GovernanceHandlerLoadBalancingOnly { get; }

    /// <summary>Gets <see cref="GovernanceHandlerOnly"/> with the circuit breaker off.</summary>
    public HttpClient GovernanceHandlerNoBreaker { get; }

    /// <summary>Gets <see cref="GovernanceHandlerOnly"/> with outlier detection off.</summary>
    public HttpClient GovernanceHandlerNoOutlier { get; }

    /// <summary>Gets <see cref="GovernanceHandlerOnly"/> with retries off.</summary>
    public HttpClient GovernanceHandlerNoRetry { get; }

    /// <summary>Gets <see cref="GovernanceHandlerOnly"/> with breaker, outlier detection and retries off: the two timeouts remain.</summary>
    public HttpClient GovernanceHandlerTimeoutsOnly { get; }

    /// <summary>Gets <c>Governed</c> with the factory's logging handlers removed (<c>RemoveAllLoggers()</c>): what a user gets who opts out of them.</summary>
    public HttpClient GovernedNoFactoryLoggers { get; }

    /// <summary>Gets <c>GovernedFullStack</c> (never-rejecting token bucket included) with the factory's logging handlers removed.</summary>
    public HttpClient GovernedFullStackNoFactoryLoggers { get; }

    /// <summary>Gets <c>GovernedNoFactoryLoggers</c> with every resilience stage off: discovery and load balancing only.</summary>
    public HttpClient GovernedLoadBalancingOnlyNoFactoryLoggers { get; }

    public HttpClient ServiceDiscovery { get; }

    public static async Task<LoopbackClients> StartAsync()
    {
        var clients = new LoopbackClients(await LoopbackServer.StartAsync());

        // Every client reaches the server before anything is measured.
        foreach (var (_, client, uri) in clients.All())
        {
            using var response = await client.GetAsync(uri).WaitAsync(TimeSpan.FromSeconds(30));
            response.EnsureSuccessStatusCode();
        }

        return clients;
    }

    /// <summary>Gets the clients by name with the URL each one sends to.</summary>
    public (string Name, HttpClient Client, Uri Uri)[] All() =>
    [
        (nameof(Bare), Bare, PhysicalUri),
        (nameof(Factory), Factory, PhysicalUri),
        (nameof(BareControl), BareControl, PhysicalUri),
        (nameof(OneSyncLayer), OneSyncLayer, PhysicalUri),
        (nameof(OneAsyncLayer), OneAsyncLayer, PhysicalUri),
        (nameof(RewriteLayer), RewriteLayer, LogicalUri),
        (nameof(PooledRewriteLayer), PooledRewriteLayer, LogicalUri),
        (nameof(CallbackRewriteLayer), CallbackRewriteLayer, LogicalUri),
        (nameof(StandardResilience), StandardResilience, PhysicalUri),
        (nameof(Governed), Governed, LogicalUri),
        (nameof(GovernedFullStack), GovernedFullStack, LogicalUri),
        (nameof(GovernedNoBreaker), GovernedNoBreaker, LogicalUri),
        (nameof(GovernedTimeoutsOnly), GovernedTimeoutsOnly, LogicalUri),
        (nameof(GovernanceHandlerOnly), GovernanceHandlerOnly, LogicalUri),
        (nameof(GovernanceHandlerNoTimeouts), GovernanceHandlerNoTimeouts, LogicalUri),
        (nameof(GovernanceHandlerLoadBalancingOnly), GovernanceHandlerLoadBalancingOnly, LogicalUri),
        (nameof(GovernanceHandlerNoBreaker), GovernanceHandlerNoBreaker, LogicalUri),
        (nameof(GovernanceHandlerNoOutlier), GovernanceHandlerNoOutlier, LogicalUri),
        (nameof(GovernanceHandlerNoRetry), GovernanceHandlerNoRetry, LogicalUri),
        (nameof(GovernanceHandlerTimeoutsOnly), GovernanceHandlerTimeoutsOnly, LogicalUri),
        (nameof(GovernedNoFactoryLoggers), GovernedNoFactoryLoggers, LogicalUri),
        (nameof(GovernedFullStackNoFactoryLoggers), GovernedFullStackNoFactoryLoggers, LogicalUri),
        (nameof(GovernedLoadBalancingOnlyNoFactoryLoggers), GovernedLoadBalancingOnlyNoFactoryLoggers, LogicalUri),
        (nameof(ServiceDiscovery), ServiceDiscovery, LogicalUri),
    ];

    public async ValueTask DisposeAsync()
    {
        Bare.Dispose();
        BareControl.Dispose();
        OneSyncLayer.Dispose();
        OneAsyncLayer.Dispose();
        RewriteLayer.Dispose();
        PooledRewriteLayer.Dispose();
        CallbackRewriteLayer.Dispose();
        Factory.Dispose();
        StandardResilience.Dispose();
        Governed.Dispose();
        GovernedFullStack.Dispose();
        GovernedNoBreaker.Dispose();
        GovernedTimeoutsOnly.Dispose();
        GovernanceHandlerOnly.Dispose();
        GovernanceHandlerNoTimeouts.Dispose();
        GovernanceHandlerLoadBalancingOnly.Dispose();
        GovernanceHandlerNoBreaker.Dispose();
        GovernanceHandlerNoOutlier.Dispose();
        GovernanceHandlerNoRetry.Dispose();
        GovernanceHandlerTimeoutsOnly.Dispose();
        GovernedNoFactoryLoggers.Dispose();
        GovernedFullStackNoFactoryLoggers.Dispose();
        GovernedLoadBalancingOnlyNoFactoryLoggers.Dispose();
        ServiceDiscovery.Dispose();
        foreach (var provider in _providers)
        {
            await provider.DisposeAsync();
        }

        await Server.DisposeAsync();
    }

    /// <summary>Sends <paramref name="count"/> GETs at once and waits for all of them (body read, response disposed).</summary>
    public static async Task SendConcurrentlyAsync(HttpClient client, Uri uri, Task[] tasks)
    {
        for (var i = 0; i < tasks.Length; i++)
        {
            tasks[i] = GetAsync(client, uri);
        }

        await Task.WhenAll(tasks);
    }

    /// <summary>One GET: buffered body, status checked, response disposed.</summary>
    public static async Task GetAsync(HttpClient client, Uri uri)
    {
        using var response = await client.GetAsync(uri);
        response.EnsureSuccessStatusCode();
    }

    /// <summary>The socket handler under every client: no proxy, no redirects, no connection lifetime limit.</summary>
    internal static SocketsHttpHandler CreateSocketsHandler() => new()
    {
        UseProxy = false,
        AllowAutoRedirect = false,
        PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
    };

    private HttpClient Client(ServiceProvider provider) => Pipelines.CreateClient(Own(provider));

    /// <summary>Governance's handler alone over a socket handler, with <paramref name="serviceKeys"/> set on the service.</summary>
    private HttpClient HandlerOnly(KeyValuePair<string, string?>[] serviceKeys) =>
        new(Pipelines.GovernanceHandlerOnly(Own(Pipelines.Governed(CreateSocketsHandler, [Server.Address], serviceKeys: serviceKeys)), CreateSocketsHandler()));

    /// <summary>Keeps <paramref name="provider"/> for disposal with the clients.</summary>
    private ServiceProvider Own(ServiceProvider provider)
    {
        _providers.Add(provider);
        return provider;
    }

    /// <summary>A handler with no work: returns its inner handler's task.</summary>
    private sealed class PassThroughHandler : DelegatingHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) =>
            base.SendAsync(request, cancellationToken);
    }
}
