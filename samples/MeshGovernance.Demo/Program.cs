using System.Diagnostics;
using System.Globalization;
using Governance.LoadBalancing;
using MeshGovernance.Demo;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

// Three local backends of one logical service, "catalog" (backend-c is slow), and one governed HttpClient that calls
// http://catalog/items?id=N. Each run switches the load-balancing policy by a live configuration reload and sends the
// same load; the next run changes an endpoint's weight the same way. Then resilience: one backend starts failing (its
// 503s are retried elsewhere and it is ejected), and a rate limit is switched on by reload (rejections stay in process).

const string Service = "catalog";
const string ServiceSection = "MeshGovernance:Services:" + Service;
const string PolicyKey = ServiceSection + ":LoadBalancer:Policy";
const int WarmUpRequests = 300;
const int RequestsPerRun = 3000;
const int Concurrency = 16;
const int Users = 250;
var slowDelay = TimeSpan.FromMilliseconds(10);

var started = Stopwatch.GetTimestamp();
var sent = 0;
var redirected = Console.IsOutputRedirected;
using var cancel = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    // Stop the runs, not the process: the backends shut down cleanly and the exit code says what happened.
    e.Cancel = true;
    cancel.Cancel();
};

int exitCode;
try
{
    exitCode = await RunAsync(cancel.Token) ? 0 : 1;
}
catch (OperationCanceledException) when (cancel.IsCancellationRequested)
{
    Console.WriteLine();
    Console.WriteLine("Cancelled.");
    return 130;
}
catch (OptionsValidationException ex)
{
    // Startup validation lists every configuration error at once.
    Console.Error.WriteLine("Invalid MeshGovernance configuration:");
    foreach (var failure in ex.Failures)
    {
        Console.Error.WriteLine("  " + failure);
    }

    return 2;
}

Console.WriteLine();
Console.WriteLine(Invariant($"{(exitCode == 0 ? "All checks passed" : "FAILED")} in {Stopwatch.GetElapsedTime(started).TotalSeconds:0.0} s ({sent:N0} requests, including startup and shutdown)."));
return exitCode;

async Task<bool> RunAsync(CancellationToken cancellationToken)
{
    await using var a = await Backend.StartAsync("backend-a", TimeSpan.Zero, cancellationToken);
    await using var b = await Backend.StartAsync("backend-b", TimeSpan.Zero, cancellationToken);
    await using var c = await Backend.StartAsync("backend-c", slowDelay, cancellationToken);
    string[] endpoints = [a.Name, b.Name, c.Name];

    Console.WriteLine(Invariant($"MeshGovernance demo: GET http://{Service}/items?id=N, {RequestsPerRun:N0} requests per run, {Concurrency} in flight"));
    foreach (var backend in (Backend[])[a, b, c])
    {
        var speed = backend.Delay == TimeSpan.Zero ? "fast" : Invariant($"slow: +{backend.Delay.TotalMilliseconds:0} ms per request");
        Console.WriteLine(Invariant($"  {backend.Name}  {Authority(backend)}  {speed}"));
    }

    var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = args, ContentRootPath = AppContext.BaseDirectory });

    // Optional: with MeshGovernance:Consul:Address set (command line, environment), the endpoints of catalog come from
    // a real Consul agent instead of appsettings.json; see ConsulDemoRegistry.cs and README, section Consul.
    var consulAddress = builder.Configuration["MeshGovernance:Consul:Address"];
    await using var consul = string.IsNullOrWhiteSpace(consulAddress) ? null : new ConsulDemoRegistry(new Uri(consulAddress), builder.Configuration["MeshGovernance:Consul:Token"]);
    RuntimeOverrides overrides;
    if (consul is null)
    {
        // appsettings.json holds the documented configuration; the real (ephemeral) addresses go over it. Endpoints 0
        // and 1 are objects there (address, weight, zone, metadata), endpoint 2 is a bare address string.
        overrides = new RuntimeOverrides(new Dictionary<string, string?>
        {
            [ServiceSection + ":Endpoints:0:Address"] = Authority(a),
            [ServiceSection + ":Endpoints:1:Address"] = Authority(b),
            [ServiceSection + ":Endpoints:2"] = Authority(c),
        });
        builder.Configuration.Sources.Add(overrides);
        builder.Services.AddMeshGovernance();
    }
    else
    {
        Console.WriteLine(Invariant($"  Consul at {consulAddress}: registering the backends as instances of {Service}"));
        await consul.RegisterAsync(Service, a, weight: 1, "zone-a", cancellationToken);
        await consul.RegisterAsync(Service, b, weight: 1, "zone-b", cancellationToken);
        await consul.RegisterAsync(Service, c, weight: 1, zone: null, cancellationToken);

        // The same MeshGovernance settings, minus the static endpoints of catalog, which discovers them in Consul.
        overrides = new RuntimeOverrides(builder.Configuration.GetSection("MeshGovernance").AsEnumerable()
            .Where(static p => p.Value is not null && !p.Key.StartsWith(ServiceSection + ":Endpoints", StringComparison.OrdinalIgnoreCase))
            .Append(KeyValuePair.Create<string, string?>(ServiceSection + ":Discovery", "Consul")));
        builder.Services.AddMeshGovernance(new ConfigurationBuilder().Add(overrides).Build().GetSection("MeshGovernance"));
    }

    DemoTelemetry.Add(builder);

    builder.Services.AddHttpClient(Service, static client => client.Timeout = TimeSpan.FromSeconds(10));

    using var host = builder.Build();
    await host.StartAsync(cancellationToken); // Validates the MeshGovernance section.
    // SIGTERM (and Ctrl+C) reach the host's lifetime too: stop the runs the same way.
    var stopping = host.Services.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping.Register(cancel.Cancel);

    // One client for the whole demo: every policy and weight change below reaches it through configuration reload.
    var client = host.Services.GetRequiredService<IHttpClientFactory>().CreateClient(Service);
    var ok = true;
    if (consul is not null)
    {
        ok &= Expect(await ConsulDiscoveredAsync(client, endpoints, cancellationToken), "every backend should be discovered through Consul (checks passing) within 30 s");
    }

    Console.WriteLine();
    Console.WriteLine("Warm-up with appsettings.json as it is (RoundRobin): connections, JIT");
    ok &= Check(await RunOnceAsync(client, users: 0, WarmUpRequests, cancellationToken));

    (string Policy, string What, int Users)[] runs =
    [
        (LoadBalancingPolicyNames.RoundRobin, "each endpoint in turn, however slow it is", 0),
        (LoadBalancingPolicyNames.Random, "each request independently at random", 0),
        (LoadBalancingPolicyNames.LeastRequest, "the less busy of two random endpoints, so the slow one gets less", 0),
        (LoadBalancingPolicyNames.ConsistentHash, Invariant($"by the x-user-id header ({Users} users): each user sticks to one endpoint"), Users),
    ];

    foreach (var run in runs)
    {
        Console.WriteLine();
        Console.WriteLine($"{run.Policy}: {run.What}");
        overrides.Apply(KeyValuePair.Create<string, string?>(PolicyKey, run.Policy));
        var result = await RunOnceAsync(client, run.Users, RequestsPerRun, cancellationToken);
        ResultTable.Print(result, endpoints);
        ok &= Check(result);
        if (run.Users > 0)
        {
            var (users, moved) = result.Affinity();
            Console.WriteLine(Invariant($"    affinity: {users} users, {moved} answered by more than one endpoint"));
            ok &= Expect(moved == 0, "every user should stay on one endpoint");
        }
    }

    Console.WriteLine();
    if (consul is null)
    {
        Console.WriteLine(Invariant($"Live reload: {ServiceSection}:Endpoints:0:Weight 1 -> 6 with RoundRobin (same client, no restart)"));
        overrides.Apply(
            KeyValuePair.Create<string, string?>(PolicyKey, LoadBalancingPolicyNames.RoundRobin),
            KeyValuePair.Create<string, string?>(ServiceSection + ":Endpoints:0:Weight", "6"));
    }
    else
    {
        Console.WriteLine(Invariant($"Consul: {a.Name} re-registered with Weights.Passing 1 -> 6, RoundRobin (the blocking query delivers it)"));
        overrides.Apply(KeyValuePair.Create<string, string?>(PolicyKey, LoadBalancingPolicyNames.RoundRobin));
        await consul.RegisterAsync(Service, a, weight: 6, "zone-a", cancellationToken);
        ok &= Expect(await WeightAppliedAsync(client, a.Name, cancellationToken), "the new weight should reach the client within 15 s");
    }

    var reloaded = await RunOnceAsync(client, users: 0, RequestsPerRun, cancellationToken);
    ResultTable.Print(reloaded, endpoints);
    ok &= Check(reloaded);
    var share = (double)reloaded.Stats(a.Name).Requests / RequestsPerRun;
    ok &= Expect(share is > 0.70 and < 0.80, Invariant($"{a.Name} should take 6/8 = 75% of the requests, took {share:P1}"));

    // Resilience with its defaults: a failed attempt is retried on another endpoint (2 retries), and an endpoint that
    // answers 5 server errors in a row is ejected from load balancing (30 s, longer each time it happens again).
    Console.WriteLine();
    Console.WriteLine(Invariant($"Outlier ejection: {b.Name} answers 503 from now on (LeastRequest, weights back to 1, default resilience)"));
    overrides.Apply(
        KeyValuePair.Create<string, string?>(PolicyKey, LoadBalancingPolicyNames.LeastRequest),
        KeyValuePair.Create<string, string?>(ServiceSection + ":Endpoints:0:Weight", "1"));
    b.Failing = true;
    var faulty = await RunOnceAsync(client, users: 0, RequestsPerRun, cancellationToken);
    ResultTable.Print(faulty, endpoints);
    Console.WriteLine(Invariant($"    {b.Name} answered {b.Failed} requests with 503, each retried on another endpoint, then was ejected: callers saw {faulty.Failures.Count()} failures"));
    ok &= Check(faulty);
    ok &= Expect(b.Failed <= 5 + Concurrency, Invariant($"{b.Name} should be ejected after 5 consecutive 503s (at most 5 + {Concurrency} in flight); it answered {b.Failed}"));
    b.Failing = false;

    // A client-side rate limit, per destination service and per logical call, checked before any network work.
    const int PermitsPerSecond = 1000;
    const int Burst = 100;
    Console.WriteLine();
    Console.WriteLine(Invariant($"Rate limit (live reload): {ServiceSection}:RateLimit PermitsPerSecond {PermitsPerSecond}, Burst {Burst}; {Concurrency} workers send as fast as they can"));
    var reachedBefore = a.Served + b.Served + c.Served;
    overrides.Apply(
        KeyValuePair.Create<string, string?>(ServiceSection + ":RateLimit:PermitsPerSecond", PermitsPerSecond.ToString(CultureInfo.InvariantCulture)),
        KeyValuePair.Create<string, string?>(ServiceSection + ":RateLimit:Burst", Burst.ToString(CultureInfo.InvariantCulture)));
    var limited = await RunOnceAsync(client, users: 0, RequestsPerRun, cancellationToken);
    var rejected = limited.Failures.Count(static f => f.Error == RunResult.RateLimited);
    var admitted = limited.Samples.Length - limited.Failures.Count();
    var reached = a.Served + b.Served + c.Served - reachedBefore;

    // The bucket starts full and gains PermitsPerSecond / 10 every 100 ms: at most one refill more than the elapsed time.
    var maxAdmitted = Burst + (int)(PermitsPerSecond * limited.Elapsed.TotalSeconds) + (PermitsPerSecond / 10);
    Console.WriteLine(Invariant($"    admitted {admitted:N0} in {limited.Elapsed.TotalSeconds:0.00} s (at most {maxAdmitted:N0}), rejected in the process {rejected:N0} (RateLimitRejectedException), backends received {reached:N0}"));
    ok &= Expect(limited.Failures.All(static f => f.Error == RunResult.RateLimited), "the only failures should be rate-limit rejections");
    ok &= Expect(rejected > 0 && admitted >= Burst && admitted <= maxAdmitted, Invariant($"the limit should admit between {Burst} and {maxAdmitted} and reject the rest"));
    ok &= Expect(reached == admitted, "a rejected call should never reach a backend");

    await stopping.DisposeAsync();
    await host.StopAsync(CancellationToken.None);
    return ok;
}

Task<RunResult> RunOnceAsync(HttpClient client, int users, int requests, CancellationToken cancellationToken)
{
    sent += requests;
    return LoadRun.RunAsync(client, Service, requests, Concurrency, users, new ProgressLine(requests, redirected), cancellationToken);
}

// Consul path: wait until round robin has reached every backend, i.e. Consul reports them all passing.
static async Task<bool> ConsulDiscoveredAsync(HttpClient client, string[] names, CancellationToken cancellationToken)
{
    var seen = new HashSet<string>();
    var started = Stopwatch.GetTimestamp();
    while (seen.Count < names.Length && Stopwatch.GetElapsedTime(started) < TimeSpan.FromSeconds(30))
    {
        try
        {
            using var response = await client.GetAsync(new Uri($"http://{Service}/items?id=0"), cancellationToken);
            if (response.Headers.TryGetValues("x-server", out var server))
            {
                seen.UnionWith(server);
            }
        }
        catch (Governance.NoAvailableEndpointException)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(200), cancellationToken); // Not resolved yet, or no check passed yet.
        }
    }

    return seen.Count == names.Length;
}

// Consul path: wait until round robin gives backend a 6 of every 8 requests.
static async Task<bool> WeightAppliedAsync(HttpClient client, string name, CancellationToken cancellationToken)
{
    var started = Stopwatch.GetTimestamp();
    while (Stopwatch.GetElapsedTime(started) < TimeSpan.FromSeconds(15))
    {
        var hits = 0;
        for (var i = 0; i < 80; i++)
        {
            using var response = await client.GetAsync(new Uri($"http://{Service}/items?id={i}"), cancellationToken);
            hits += response.Headers.GetValues("x-server").Contains(name) ? 1 : 0;
        }

        if (hits >= 56)
        {
            return true;
        }
    }

    return false;
}

static bool Check(RunResult result)
{
    var failures = result.Failures.ToArray();
    foreach (var group in failures.GroupBy(static f => f.Error).Take(5))
    {
        Console.WriteLine(Invariant($"    {group.Count()} failed: {group.Key}"));
    }

    return failures.Length == 0;
}

static bool Expect(bool condition, string what)
{
    if (!condition)
    {
        Console.WriteLine("    FAILED: " + what);
    }

    return condition;
}

static string Authority(Backend backend) => backend.Address.GetLeftPart(UriPartial.Authority);

static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
