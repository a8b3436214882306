using System.Globalization;
using Governance.Benchmarks.Infrastructure;
using Governance.Pipeline;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace Governance.Benchmarks.Loopback;

/// <summary>
/// <c>toggle-rounds</c>: what governance, or a few of its configuration keys, cost on a socket, measured inside one
/// client. One loopback server, one socket handler and one <see cref="HttpClient"/> over a <see cref="HostRouter"/> that
/// sends the logical host through governance (its handler alone, or <c>--via factory</c> the factory's chain without its
/// logging handlers) to that socket handler, and the server's own address straight to the same socket handler. State A
/// is governance with the base keys; state B is, with <c>--keys Key=Value;...</c>, governance with A's keys plus those
/// (switched by a live reload of the configuration, as an edited file would), or a control on the same socket handler
/// and connection pool:
/// <list type="bullet">
///   <item><description><c>bare</c>: no governance, the server's own address;</description></item>
///   <item><description><c>layer</c>: the server's address through one handler that only awaits the socket handler
///   (<see cref="AwaitingHandler"/>: what any handler that sees the response costs at least);</description></item>
///   <item><description><c>rewrite</c>: another logical host through one plain <c>async</c> handler that sends it to the
///   server's address and restores the caller's URI (<see cref="RewritingHandler"/>: what any handler that reroutes a
///   call costs at least);</description></item>
///   <item><description><c>factory</c>: the server's address through a factory client's chain without governance and
///   without its loggers (what the factory itself costs);</description></item>
///   <item><description><c>handler</c>, <c>hop</c>, <c>hop-frame</c>: the same governance (one runtime) placed
///   otherwise: its handler alone over the socket handler; under one pass-through handler that tail-calls it, as the
///   factory's outermost handler does; under one that keeps its frame (no tail call).</description></item>
/// </list>
/// Rounds alternate A, B, A, B..., each after a short unrecorded warm-up. Every pair of rounds is one paired measurement
/// on the same connection pool, server and process a second or two apart, so the differences between processes, between
/// clients and the machine's drifts, which <c>loopback-rounds</c> compares across, cancel out. It reports the mean and
/// standard error of the per-pair differences in CPU time per request and the median and mean of the per-pair
/// throughput ratios. The base is the whole stack of issue 3 (defaults plus a token bucket that never rejects);
/// <c>--base</c> adds keys to it.
/// </summary>
internal static class ToggleRounds
{
    public const string Command = "toggle-rounds";

    /// <summary>The control states B can be instead of a reload (<c>--keys &lt;name&gt;</c>), with what B then is.</summary>
    private static readonly Dictionary<string, string> Controls = new(StringComparer.Ordinal)
    {
        ["bare"] = "no governance (the server's address, same socket handler)",
        ["layer"] = "no governance, one awaiting handler (the server's address, same socket handler)",
        ["rewrite"] = "no governance, one plain async handler that rewrites another host to the server's address and restores it (same socket handler)",
        ["factory"] = "no governance, the server's address through a factory client's chain without its loggers (same socket handler)",
        ["handler"] = "the same governance, its handler alone over the socket handler",
        ["hop"] = "the same governance, its handler alone under one pass-through handler that tail-calls it (as the factory's outermost handler does)",
        ["hop-frame"] = "the same governance, its handler alone under one pass-through handler that keeps its frame (no tail call)",
    };

    private static readonly string Usage = $"--keys Key=Value[;Key=Value...]|{string.Join('|', Controls.Keys)} [--base Key=Value[;...]] [--via handler|factory] [--rounds 100] [--requests 10000] [--concurrency 32] (keys relative to MeshGovernance:Services:catalog)";

    public static async Task<int> RunAsync(string[] args)
    {
        var options = RoundArguments.Parse(args, Command, Usage, "--keys", "--base", "--via", "--rounds", "--requests", "--concurrency");
        var keysText = options?.Text("--keys");
        // A control state B (no reload): another path for the same requests, or governance placed differently.
        var control = keysText is not null && Controls.ContainsKey(keysText) ? keysText : null;
        if (options is null || keysText is null || (control is not null ? [] : ParseKeys(keysText)) is not { } keys || ParseKeys(options.Text("--base") ?? string.Empty) is not { } extraBase)
        {
            Console.Error.WriteLine($"usage: {Command} {Usage}");
            return 2;
        }

        var via = options.Text("--via") ?? "handler";
        if (via is not ("handler" or "factory"))
        {
            Console.Error.WriteLine($"--via '{via}' is not handler or factory");
            return 2;
        }

        var pairs = options.Int("--rounds", 100);
        var requests = options.Int("--requests", 10_000);
        var concurrency = options.Int("--concurrency", LoopbackBenchmarks.Concurrency);

        await using var server = await LoopbackServer.StartAsync();
        var baseKeys = new List<KeyValuePair<string, string?>>(Pipelines.NeverRejectingRateLimit);
        baseKeys.AddRange(extraBase);
        var stateA = Pipelines.ServiceSettings([server.Address], baseKeys);
        var stateB = control is not null ? stateA : Pipelines.ServiceSettings([server.Address], [.. baseKeys, .. keys]);
        var configuration = new SwitchableConfigurationSource(stateA, stateB);
        // One socket handler under both paths (disposed with governance's chain, or with the provider's factory).
        var sockets = LoopbackClients.CreateSocketsHandler();
        await using var provider = Pipelines.Governed(() => sockets, new ConfigurationBuilder().Add(configuration).Build(), removeFactoryLoggers: true);
        var governed = via == "handler" ? Pipelines.GovernanceHandlerOnly(provider, sockets) : Pipelines.CreateHandler(provider);
        var physical = new Uri(server.Address, "/api/items");
        await using var ungovernedFactory = control == "factory" ? Pipelines.Factory(() => sockets, removeLoggers: true) : null;
        HttpMessageHandler other = control switch
        {
            "layer" => new AwaitingHandler { InnerHandler = sockets },
            "rewrite" => new RewritingHandler(physical, pooled: false) { InnerHandler = sockets },
            "factory" => Pipelines.CreateHandler(ungovernedFactory!),
            _ => sockets,
        };

        // --keys handler, hop, hop-frame: B is the same governance (one runtime) placed differently above the socket handler.
        HttpMessageHandler? alternate = control switch
        {
            "handler" => Pipelines.GovernanceHandlerOnly(provider, sockets),
            "hop" => new PassThroughHandler(keepFrame: false) { InnerHandler = Pipelines.GovernanceHandlerOnly(provider, sockets) },
            "hop-frame" => new PassThroughHandler(keepFrame: true) { InnerHandler = Pipelines.GovernanceHandlerOnly(provider, sockets) },
            _ => null,
        };
        var router = new HostRouter(Pipelines.ServiceName, governed, other, alternate);
        using var client = new HttpClient(router);
        var logical = new Uri($"http://{Pipelines.ServiceName}/api/items");

        // B's requests: another logical host for the rewriting handler, the logical one for governance placed otherwise.
        var ungoverned = control switch
        {
            "rewrite" => new Uri("http://unrouted/api/items"),
            "handler" or "hop" or "hop-frame" => logical,
            _ => physical,
        };
        var service = provider.GetRequiredService<GovernanceRuntime>().Services[Pipelines.ServiceName];
        Uri Switch(int state)
        {
            if (control is not null)
            {
                router.UseAlternate = state == 1;
                return state == 0 ? logical : ungoverned;
            }

            // A reload that validation rejects keeps the running policy (and is only logged): the two states would be one.
            var before = service.Policy;
            configuration.Switch(state);
            if (ReferenceEquals(before, service.Policy))
            {
                throw new InvalidOperationException($"the reload to state {(state == 0 ? "A" : "B")} did not change the service's policy: is every key valid?");
            }

            return logical;
        }

        Console.WriteLine($"{Command}: {pairs} pairs of rounds x {requests} GETs, {concurrency} concurrent, governance {(via == "handler" ? "handler alone" : "through the factory, no loggers")}, server {server.Address}");
        Console.WriteLine($"A: governance, the whole stack{(extraBase.Count == 0 ? string.Empty : " + " + options.Text("--base"))}; B: {(control is not null ? Controls[control] : "A + " + keysText)}");
        Console.WriteLine($"runtime {Environment.Version}, {Environment.ProcessorCount} logical CPUs");

        var latencies = new long[requests];
        var warmUp = Math.Max(500, requests / 10);

        // Warm-up of both states: JIT, tiering, connection pool.
        configuration.Switch(0);
        for (var state = 1; state < 5; state++)
        {
            await LoopbackRounds.RunRoundAsync(client, Switch(state % 2), requests, concurrency, latencies);
        }

        var throughput = new[] { new double[pairs], new double[pairs] };
        var cpu = new[] { new double[pairs], new double[pairs] };
        var allocated = new[] { new double[pairs], new double[pairs] };
        for (var pair = 0; pair < pairs; pair++)
        {
            for (var state = 0; state < 2; state++)
            {
                // The live reload, then a short unrecorded round: the first calls after a reload build the new policy's state.
                var uri = Switch(state);
                await LoopbackRounds.RunRoundAsync(client, uri, warmUp, concurrency, latencies);
                GC.Collect();
                GC.WaitForPendingFinalizers();
                GC.Collect();
                var (seconds, bytes, cpuTime) = await LoopbackRounds.RunRoundAsync(client, uri, requests, concurrency, latencies);
                throughput[state][pair] = requests / seconds;
                cpu[state][pair] = cpuTime.TotalMicroseconds / requests;
                allocated[state][pair] = (double)bytes / requests;
            }

            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"pair {pair + 1,3}: A {throughput[0][pair],6:F0} req/s {cpu[0][pair],6:F2} cpu-us/req {allocated[0][pair],5:F0} B/req   B {throughput[1][pair],6:F0} req/s {cpu[1][pair],6:F2} cpu-us/req {allocated[1][pair],5:F0} B/req"));
        }

        var ratios = RoundStatistics.Ratios(throughput[1], throughput[0]);
        var cpuDifferences = RoundStatistics.Differences(cpu[1], cpu[0]);

        var (cpuMean, cpuError) = RoundStatistics.MeanAndStandardError(cpuDifferences);
        var (ratioMean, ratioError) = RoundStatistics.MeanAndStandardError(ratios);
        var inverse = Array.ConvertAll(ratios, r => 1 / r);
        var (inverseMean, inverseError) = RoundStatistics.MeanAndStandardError(inverse);
        Console.WriteLine();
        Console.WriteLine("| State | Median req/s | Median CPU us/req | Median B/req |");
        Console.WriteLine("|---|---:|---:|---:|");
        for (var state = 0; state < 2; state++)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {(state == 0 ? "A" : "B")} | {RoundStatistics.Median(throughput[state]):F0} | {RoundStatistics.Median(cpu[state]):F2} | {RoundStatistics.Median(allocated[state]):F0} |"));
        }

        Console.WriteLine();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"B - A, CPU per request: mean {cpuMean:+0.00;-0.00} us (standard error {cpuError:F2}), median {RoundStatistics.Median(cpuDifferences):+0.00;-0.00} us"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"B / A, throughput: median of pairs {RoundStatistics.Median(ratios):F3}, mean {ratioMean:F3} (standard error {ratioError:F3}); A / B: median of pairs {RoundStatistics.Median(inverse):F3}, mean {inverseMean:F3} (standard error {inverseError:F3})"));
        return 0;
    }

    /// <summary>Parses <c>Key=Value;Key=Value</c>; <see langword="null"/>, after saying why, when an item has no '='.</summary>
    private static List<KeyValuePair<string, string?>>? ParseKeys(string text)
    {
        var keys = new List<KeyValuePair<string, string?>>();
        foreach (var item in text.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var equals = item.IndexOf('=', StringComparison.Ordinal);
            if (equals <= 0)
            {
                Console.Error.WriteLine($"'{item}' is not Key=Value");
                return null;
            }

            keys.Add(new(item[..equals], item[(equals + 1)..]));
        }

        return keys;
    }

    /// <summary>A configuration source with two sets of keys; <see cref="Switch"/> makes one of them current and raises a reload, as an edited file would.</summary>
    private sealed class SwitchableConfigurationSource(Dictionary<string, string?> stateA, Dictionary<string, string?> stateB) : ConfigurationProvider, IConfigurationSource
    {
        private int _state;

        public IConfigurationProvider Build(IConfigurationBuilder builder) => this;

        public override void Load() => Data = new Dictionary<string, string?>(_state == 0 ? stateA : stateB, StringComparer.OrdinalIgnoreCase);

        public void Switch(int state)
        {
            _state = state;
            Load();
            OnReload();
        }
    }

    /// <summary>
    /// A handler that only passes the call on: as <see cref="DelegatingHandler"/> itself (whose <c>SendAsync</c> returns
    /// the inner handler's task with a tail call, as the factory's outermost handler does), or keeping its own frame on
    /// the stack while the inner handler runs (<paramref name="keepFrame"/>: no tail call).
    /// </summary>
    private sealed class PassThroughHandler(bool keepFrame) : DelegatingHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var task = base.SendAsync(request, cancellationToken);
            if (keepFrame)
            {
                // A use of this frame after the call: the JIT cannot turn the call above into a tail call.
                GC.KeepAlive(this);
            }

            return task;
        }
    }

    /// <summary>
    /// Sends requests for <c>host</c> through governance (or, while <see cref="UseAlternate"/> is set, through
    /// <c>alternate</c>: the same governance placed otherwise) and every other request to <c>bare</c> (the socket handler,
    /// or one awaiting or rewriting handler, or an ungoverned factory chain, over it), so that all of them share one
    /// connection pool. It returns its inner handlers' tasks (no async layer), and every path passes through it; only the
    /// governed invoker disposes its handler (governance's chain disposes the socket handler).
    /// </summary>
    private sealed class HostRouter(string host, HttpMessageHandler governed, HttpMessageHandler bare, HttpMessageHandler? alternate) : HttpMessageHandler
    {
        private readonly HttpMessageInvoker _governed = new(governed, disposeHandler: true);

        // Not disposed: an awaiting or rewriting handler, or an alternate governance handler, would dispose the socket handler.
        private readonly HttpMessageInvoker _bare = new(bare, disposeHandler: false);
        private readonly HttpMessageInvoker? _alternate = alternate is null ? null : new(alternate, disposeHandler: false);

        /// <summary>Gets or sets a value indicating whether requests for <c>host</c> go through the alternate handler, when there is one.</summary>
        public bool UseAlternate { get; set; }

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) =>
            string.Equals(request.RequestUri!.Host, host, StringComparison.OrdinalIgnoreCase)
                ? (UseAlternate && _alternate is not null ? _alternate : _governed).SendAsync(request, cancellationToken)
                : _bare.SendAsync(request, cancellationToken);

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                _governed.Dispose();
            }

            base.Dispose(disposing);
        }
    }
}
