using System.Diagnostics;
using System.Globalization;
using System.Net;
using Governance.Benchmarks.Infrastructure;

namespace Governance.Benchmarks.Pipeline;

/// <summary>
/// <c>handoff-rounds</c>: in memory, the way a socket runs a call on a multi-core machine: the call starts on one
/// thread-pool thread and its response completes on whichever thread picks it up. The terminal handler registers on the
/// request's token (as <see cref="SocketsHttpHandler"/> does) and completes each call from a work item on the thread
/// pool's global queue (as the socket engine hands over a completed receive), so that everything after the response (the
/// handlers' continuations, HttpClient's own) runs where that work item runs, often the other core. Whatever a handler
/// wrote at the start of a call is then read, and whatever it pooled returned, on another core: the cache-line
/// transfers that <c>contention-rounds</c> (a call starts and ends on one thread) cannot show and that loopback measures
/// only through its noise, without the sockets' kernel time. <c>--window</c> workers send through an
/// <see cref="HttpClient"/> in a closed loop. Prints, per client, the median over alternating rounds of the process's CPU
/// time per call (user + kernel, every thread) and of wall time per call, and the differences to Bare. Clients:
/// <c>Bare</c> and its A/A control <c>BareControl</c>; <c>OneAsyncLayer</c> (a handler that only awaits) and
/// <c>OneAsyncLayerBig</c> (the same with 240 B more state kept across the await, about what governance's call keeps:
/// what a bigger async box costs when it is resumed on another core); <c>GovernanceHandlerOnly</c> (default
/// resilience), <c>TimeoutsOnly</c> (breaker, outlier detection and retries off), <c>NoTimeouts</c>
/// (<c>Timeout:Enabled false</c>, the rest on) and <c>LoadBalancingOnly</c> (every resilience stage off). Run it with
/// <c>DOTNET_ThreadPool_ForceMinWorkerThreads=2 DOTNET_ThreadPool_ForceMaxWorkerThreads=2</c> on a 2-core machine for
/// steadier numbers: with more pool threads than cores, the scheduler's switches between them add their own noise.
/// </summary>
internal static class HandoffRounds
{
    public const string Command = "handoff-rounds";

    public static int Run(string[] args)
    {
        var options = RoundArguments.Parse(args, Command, "[--rounds 15] [--calls 200000] [--window 32] [--profile <client>]", "--rounds", "--calls", "--window", "--profile");
        if (options is null)
        {
            return 2;
        }

        var rounds = options.Int("--rounds", 15);
        var calls = options.Int("--calls", 200_000);
        var window = options.Int("--window", 32);

        var terminal = new HandoffHandler();
        Uri[] one = [new("http://127.0.0.1:5001")];
        var logical = new Uri($"http://{Pipelines.ServiceName}/api/items");
        using var governed = Pipelines.Governed(() => terminal, one);
        using var timeoutsOnly = Pipelines.Governed(() => terminal, one, serviceKeys: Pipelines.TimeoutsOnly);
        using var noTimeouts = Pipelines.Governed(() => terminal, one, serviceKeys: Pipelines.NoTimeouts);
        using var loadBalancingOnly = Pipelines.Governed(() => terminal, one, serviceKeys: Pipelines.LoadBalancingOnly);
        (string Name, HttpClient Client, Uri Uri)[] clients =
        [
            ("Bare", new HttpClient(terminal, disposeHandler: false), one[0]),
            ("BareControl", new HttpClient(terminal, disposeHandler: false), one[0]),
            ("OneAsyncLayer", new HttpClient(new AwaitingHandler { InnerHandler = terminal }, disposeHandler: false), one[0]),
            ("OneAsyncLayerBig", new HttpClient(new BigAwaitingHandler { InnerHandler = terminal }, disposeHandler: false), one[0]),
            ("GovernanceHandlerOnly", new HttpClient(Pipelines.GovernanceHandlerOnly(governed, terminal), disposeHandler: false), logical),
            ("TimeoutsOnly", new HttpClient(Pipelines.GovernanceHandlerOnly(timeoutsOnly, terminal), disposeHandler: false), logical),
            ("NoTimeouts", new HttpClient(Pipelines.GovernanceHandlerOnly(noTimeouts, terminal), disposeHandler: false), logical),
            ("LoadBalancingOnly", new HttpClient(Pipelines.GovernanceHandlerOnly(loadBalancingOnly, terminal), disposeHandler: false), logical),
        ];

        if (options.Text("--profile") is { } profile)
        {
            // One client for --rounds rounds, nothing else: for a profiler (perf record with DOTNET_PerfMapEnabled=1).
            if (RoundArguments.FindByName(clients, t => t.Name, profile, "client") is not { } target)
            {
                return 2;
            }

            for (var round = 0; round < rounds; round++)
            {
                var (wallNs, cpuNs) = Measure(target.Client, target.Uri, calls, window);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{profile}: {cpuNs:F0} CPU ns/call, {wallNs:F0} wall ns/call, {ThreadPool.ThreadCount} pool threads"));
            }

            return 0;
        }

        // Warm-up (JIT and tiering), not recorded.
        for (var i = 0; i < 3; i++)
        {
            foreach (var (_, client, uri) in clients)
            {
                Measure(client, uri, calls / 2, window);
            }
        }

        var cpu = new double[clients.Length][];
        var wall = new double[clients.Length][];
        for (var c = 0; c < clients.Length; c++)
        {
            cpu[c] = new double[rounds];
            wall[c] = new double[rounds];
        }

        for (var round = 0; round < rounds; round++)
        {
            for (var k = 0; k < clients.Length; k++)
            {
                var c = round % 2 == 0 ? k : clients.Length - 1 - k;
                GC.Collect();
                (wall[c][round], cpu[c][round]) = Measure(clients[c].Client, clients[c].Uri, calls, window);
            }
        }

        Console.WriteLine($"{Command}: {rounds} rounds x {calls} calls, {window} concurrent, {Environment.ProcessorCount} logical CPUs, {ThreadPool.ThreadCount} pool threads at the end");
        Console.WriteLine();
        Console.WriteLine("| Client | CPU ns per call (median, min-max) | over Bare (medians) | over Bare, paired (median, min-max) | wall ns per call (median) | over Bare, paired (median) |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|");
        for (var c = 0; c < clients.Length; c++)
        {
            var paired = Difference(cpu[c], cpu[0]);
            var median = RoundStatistics.Median(cpu[c]);
            Console.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"| {clients[c].Name} | {median:F0} ({cpu[c].Min():F0}-{cpu[c].Max():F0}) | {median - RoundStatistics.Median(cpu[0]):+0;-0;0} | {RoundStatistics.Median(paired):+0;-0;0} ({paired.Min():+0;-0;0} to {paired.Max():+0;-0;0}) | {RoundStatistics.Median(wall[c]):F0} | {RoundStatistics.Median(Difference(wall[c], wall[0])):+0;-0;0} |"));
        }

        foreach (var (_, client, _) in clients)
        {
            client.Dispose();
        }

        return 0;
    }

    private static double[] Difference(double[] values, double[] baseline)
    {
        var differences = new double[values.Length];
        for (var r = 0; r < values.Length; r++)
        {
            differences[r] = values[r] - baseline[r];
        }

        return differences;
    }

    private static (double WallNs, double CpuNs) Measure(HttpClient client, Uri uri, int calls, int window)
    {
        var issued = 0;
        var workers = new Task[window];
        var cpuBefore = Environment.CpuUsage.TotalTime;
        var start = Stopwatch.GetTimestamp();
        for (var w = 0; w < workers.Length; w++)
        {
            workers[w] = Task.Run(async () =>
            {
                while (Interlocked.Increment(ref issued) <= calls)
                {
                    using var request = new HttpRequestMessage(HttpMethod.Get, uri);
                    using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead).ConfigureAwait(false);
                }
            });
        }

        Task.WaitAll(workers);
        var wall = Stopwatch.GetElapsedTime(start);
        var cpu = Environment.CpuUsage.TotalTime - cpuBefore;
        return (wall.TotalNanoseconds / calls, cpu.TotalNanoseconds / calls);
    }

    /// <summary>
    /// The terminal handler: registers on the request's token and completes the call from a thread-pool work item on the
    /// global queue, as the socket engine hands a completed receive to the pool.
    /// </summary>
    private sealed class HandoffHandler : HttpMessageHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var pending = new Pending(request);
            pending.Registration = cancellationToken.UnsafeRegister(static s => ((Pending)s!).TrySetCanceled(), pending);
            ThreadPool.UnsafeQueueUserWorkItem(pending, preferLocal: false);
            return pending.Task;
        }

        private sealed class Pending(HttpRequestMessage request) : TaskCompletionSource<HttpResponseMessage>, IThreadPoolWorkItem
        {
            public CancellationTokenRegistration Registration { get; set; }

            public void Execute()
            {
                // The caller's token may have won (HttpClient's timeout): then the response is not needed.
                Registration.Dispose();
                var response = new HttpResponseMessage(HttpStatusCode.OK) { RequestMessage = request };
                if (!TrySetResult(response))
                {
                    response.Dispose();
                }
            }
        }
    }

    /// <summary><see cref="AwaitingHandler"/> with 30 references written before the await and read after it (a 240 B bigger box).</summary>
    private sealed class BigAwaitingHandler : DelegatingHandler
    {
        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var big = new Big { A = request, B = request, C = request, D = request, E = request, F = request, G = request, H = request };
            big.Fill(request);
            var response = await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
            big.Check(response);
            return response;
        }

        private struct Big
        {
#pragma warning disable SA1132, SA1401 // Benchmark filler: many fields on one line.
            public object A, B, C, D, E, F, G, H, I, J, K, L, M, N, O, P, Q, R, S, T, U, V, W, X, Y, Z, A1, A2, A3, A4;
#pragma warning restore SA1132, SA1401

            public void Fill(object o)
            {
                I = J = K = L = M = N = O = P = Q = R = S = T = U = V = W = X = Y = Z = A1 = A2 = A3 = A4 = o;
            }

            public readonly void Check(HttpResponseMessage response)
            {
                if (A4 is null || A is null || P is null || response is null)
                {
                    throw new InvalidOperationException();
                }
            }
        }
    }
}
