using System.Diagnostics;
using System.Globalization;

namespace Governance.Benchmarks.Loopback;

/// <summary>
/// <c>loopback-rounds</c>: the loopback comparison in alternating rounds, which BenchmarkDotNet cannot do (it runs one
/// benchmark after another). Each round sends <c>--requests</c> GETs with <c>--concurrency</c> workers in a closed loop
/// (each worker sends its next request as soon as its previous one completed) through each client in turn; the order
/// of the clients is reversed every other round so that no client always runs first or last. Per client and round it
/// records throughput and allocated bytes per request (<see cref="GC.GetTotalAllocatedBytes(bool)"/>, precise, whole
/// process: the in-process server's allocations are included and are the same for every client), then prints the
/// median and min-max spread, the ratio of medians to Bare, and the median and spread of the per-round paired ratios.
/// </summary>
internal static class LoopbackRounds
{
    public const string Command = "loopback-rounds";

    public static async Task<int> RunAsync(string[] args)
    {
        var rounds = 10;
        var requests = 20_000;
        var concurrency = LoopbackBenchmarks.Concurrency;
        for (var i = 0; i + 1 < args.Length; i += 2)
        {
            var value = int.Parse(args[i + 1], CultureInfo.InvariantCulture);
            switch (args[i])
            {
                case "--rounds":
                    rounds = value;
                    break;
                case "--requests":
                    requests = value;
                    break;
                case "--concurrency":
                    concurrency = value;
                    break;
                default:
                    Console.Error.WriteLine($"unknown option {args[i]}; usage: {Command} [--rounds 10] [--requests 20000] [--concurrency 32]");
                    return 2;
            }
        }

        await using var clients = await LoopbackClients.StartAsync();
        var targets = clients.All();
        var throughput = new double[targets.Length][];
        var allocated = new double[targets.Length][];
        for (var c = 0; c < targets.Length; c++)
        {
            throughput[c] = new double[rounds];
            allocated[c] = new double[rounds];
        }

        Console.WriteLine($"loopback-rounds: {rounds} rounds x {requests} GETs per client, {concurrency} concurrent, server {clients.Server.Address}");
        Console.WriteLine($"runtime {Environment.Version}, {Environment.ProcessorCount} logical CPUs, server GC {System.Runtime.GCSettings.IsServerGC}");

        // Warm-up: JIT, tiering and connection pools, not recorded.
        for (var c = 0; c < targets.Length; c++)
        {
            await RunRoundAsync(targets[c].Client, targets[c].Uri, Math.Max(concurrency, requests / 4), concurrency);
        }

        for (var round = 0; round < rounds; round++)
        {
            var line = $"round {round + 1,2}:";
            for (var k = 0; k < targets.Length; k++)
            {
                var c = round % 2 == 0 ? k : targets.Length - 1 - k;
                GC.Collect();
                GC.WaitForPendingFinalizers();
                GC.Collect();
                var (seconds, bytes) = await RunRoundAsync(targets[c].Client, targets[c].Uri, requests, concurrency);
                throughput[c][round] = requests / seconds;
                allocated[c][round] = (double)bytes / requests;
                line += $"  {targets[c].Name} {throughput[c][round],8:F0} req/s {allocated[c][round],6:F0} B/req";
            }

            Console.WriteLine(line);
        }

        Console.WriteLine();
        // Index 0 is Bare, index 1 the factory client without governance (see LoopbackClients.All).
        Console.WriteLine("| Client | Median req/s | Min req/s | Max req/s | Ratio to Bare (medians) | Paired ratio to Bare, median (min-max) | Ratio to Factory (medians) | Median B/req | Min-max B/req | B/req over Bare | B/req over Factory |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        var bareThroughput = Median(throughput[0]);
        var factoryThroughput = Median(throughput[1]);
        var bareBytes = Median(allocated[0]);
        var factoryBytes = Median(allocated[1]);
        for (var c = 0; c < targets.Length; c++)
        {
            var paired = new double[rounds];
            for (var r = 0; r < rounds; r++)
            {
                paired[r] = throughput[c][r] / throughput[0][r];
            }

            var median = Median(throughput[c]);
            var bytes = Median(allocated[c]);
            Console.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"| {targets[c].Name} | {median:F0} | {throughput[c].Min():F0} | {throughput[c].Max():F0} | {median / bareThroughput:F3} | {Median(paired):F3} ({paired.Min():F3}-{paired.Max():F3}) | {median / factoryThroughput:F3} | {bytes:F0} | {allocated[c].Min():F0}-{allocated[c].Max():F0} | {bytes - bareBytes:+0;-0;0} | {bytes - factoryBytes:+0;-0;0} |"));
        }

        return 0;
    }

    private static async Task<(double Seconds, long Bytes)> RunRoundAsync(HttpClient client, Uri uri, int requests, int concurrency)
    {
        var issued = 0;
        var workers = new Task[concurrency];
        var allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
        var start = Stopwatch.GetTimestamp();
        for (var w = 0; w < workers.Length; w++)
        {
            workers[w] = Task.Run(async () =>
            {
                while (Interlocked.Increment(ref issued) <= requests)
                {
                    await LoopbackClients.GetAsync(client, uri);
                }
            });
        }

        await Task.WhenAll(workers).WaitAsync(TimeSpan.FromMinutes(5));
        var elapsed = Stopwatch.GetElapsedTime(start);
        var bytes = GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore;
        return (elapsed.TotalSeconds, bytes);
    }

    private static double Median(double[] values)
    {
        var sorted = (double[])values.Clone();
        Array.Sort(sorted);
        var middle = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
    }
}
