using System.Diagnostics;
using System.Globalization;
using Governance.Benchmarks.Infrastructure;
using Microsoft.Extensions.DependencyInjection;

namespace Governance.Benchmarks.Pipeline;

/// <summary>
/// <c>contention-rounds</c>: the in-memory governed call on one thread and on every core at once. BenchmarkDotNet runs
/// one thread, where shared counters (in-flight requests, the breaker window, the retry budget, the timeout pool and
/// timer queue) stay in that core's cache; on a real socket the same calls run on every core, and each write to a
/// shared cache line makes the other cores fetch it again. Rounds alternate between the clients; per client and thread
/// count it prints the median nanoseconds of CPU-parallel work per call (wall time x threads / calls).
/// </summary>
internal static class ContentionRounds
{
    public const string Command = "contention-rounds";

    public static int Run(string[] args)
    {
        var options = RoundArguments.Parse(args, Command, "[--rounds 7] [--calls 2000000]", "--rounds", "--calls");
        if (options is null)
        {
            return 2;
        }

        var rounds = options.Int("--rounds", 7);
        var calls = options.Int("--calls", 2_000_000);

        var terminal = new CompletedResponseHandler();
        Uri[] one = [new("http://127.0.0.1:5001")];
        using var governed = Pipelines.Governed(() => terminal, one);
        using var timeoutsOnly = Pipelines.Governed(() => terminal, one, serviceKeys: Pipelines.TimeoutsOnly);
        (string Name, HttpMessageInvoker Invoker, Uri Uri)[] clients =
        [
            ("Bare", new HttpMessageInvoker(terminal, disposeHandler: false), one[0]),
            ("GovernanceHandlerOnly", new HttpMessageInvoker(Pipelines.GovernanceHandlerOnly(governed, terminal), disposeHandler: false), new Uri($"http://{Pipelines.ServiceName}/api/items")),
            ("TimeoutsOnly", new HttpMessageInvoker(Pipelines.GovernanceHandlerOnly(timeoutsOnly, terminal), disposeHandler: false), new Uri($"http://{Pipelines.ServiceName}/api/items")),
        ];

        int[] threadCounts = Environment.ProcessorCount > 1 ? [1, Environment.ProcessorCount] : [1];
        var results = new double[clients.Length, threadCounts.Length, rounds];
        for (var c = 0; c < clients.Length; c++)
        {
            foreach (var t in threadCounts)
            {
                Measure(clients[c].Invoker, clients[c].Uri, t, calls / 10);
            }
        }

        for (var round = 0; round < rounds; round++)
        {
            for (var k = 0; k < clients.Length; k++)
            {
                var c = round % 2 == 0 ? k : clients.Length - 1 - k;
                for (var t = 0; t < threadCounts.Length; t++)
                {
                    var elapsed = Measure(clients[c].Invoker, clients[c].Uri, threadCounts[t], calls);
                    results[c, t, round] = elapsed.TotalNanoseconds * threadCounts[t] / calls;
                }
            }
        }

        Console.WriteLine($"contention-rounds: {rounds} rounds x {calls} calls, {Environment.ProcessorCount} logical CPUs");
        Console.WriteLine();
        var header = "| Client |";
        var rule = "|---|";
        foreach (var t in threadCounts)
        {
            header += $" ns/call x threads, {t} thread{(t == 1 ? string.Empty : "s")} (median, min-max) | over Bare |";
            rule += "---:|---:|";
        }

        Console.WriteLine(header);
        Console.WriteLine(rule);
        for (var c = 0; c < clients.Length; c++)
        {
            var line = $"| {clients[c].Name} |";
            for (var t = 0; t < threadCounts.Length; t++)
            {
                var values = new double[rounds];
                var bare = new double[rounds];
                for (var r = 0; r < rounds; r++)
                {
                    values[r] = results[c, t, r];
                    bare[r] = results[0, t, r];
                }

                line += string.Create(CultureInfo.InvariantCulture, $" {RoundStatistics.Median(values):F1} ({values.Min():F1}-{values.Max():F1}) | {RoundStatistics.Median(values) - RoundStatistics.Median(bare):+0.0;-0.0;0} |");
            }

            Console.WriteLine(line);
        }

        return 0;
    }

    private static TimeSpan Measure(HttpMessageInvoker invoker, Uri uri, int threads, int calls)
    {
        var perThread = calls / threads;
        using var start = new Barrier(threads + 1);
        var workers = new Thread[threads];
        for (var t = 0; t < threads; t++)
        {
            workers[t] = new Thread(() =>
            {
                using var request = new HttpRequestMessage(HttpMethod.Get, uri);
                start.SignalAndWait();
                for (var i = 0; i < perThread; i++)
                {
                    var task = invoker.SendAsync(request, CancellationToken.None);
                    if (!task.IsCompletedSuccessfully)
                    {
                        task.GetAwaiter().GetResult();
                    }
                }
            });
            workers[t].Start();
        }

        start.SignalAndWait();
        var begin = Stopwatch.GetTimestamp();
        foreach (var worker in workers)
        {
            worker.Join();
        }

        return Stopwatch.GetElapsedTime(begin);
    }
}
