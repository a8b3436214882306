using System.Diagnostics;
using System.Globalization;
using Governance.Benchmarks.Infrastructure;

namespace Governance.Benchmarks.Loopback;

/// <summary>
/// <c>loopback-rounds</c>: the loopback comparison in alternating rounds, which BenchmarkDotNet cannot do (it runs one
/// benchmark after another). Each round sends <c>--requests</c> GETs with <c>--concurrency</c> workers in a closed loop
/// (each worker sends its next request as soon as its previous one completed) through each client in turn; the order
/// of the clients is reversed every other round so that no client always runs first or last. Per client and round it
/// records throughput, allocated bytes per request (<see cref="GC.GetTotalAllocatedBytes(bool)"/>, precise, whole
/// process: the in-process server's allocations are included and are the same for every client) and the latency of
/// every request (<see cref="Stopwatch.GetTimestamp"/> before the GET and after its body was read, stored in a
/// preallocated array, so recording allocates nothing), from which it takes that round's p50 and p99. It then prints
/// the median and min-max spread across rounds, the ratio of medians to Bare and to Factory, and the median and spread
/// of the per-round paired ratios to Bare. It also records the process's CPU time per request
/// (<see cref="Environment.CpuUsage"/>, user + kernel, client and server together): on a shared VM, time stolen by other
/// guests lowers throughput but is not charged to the process, so CPU per request is the steadier measure of what a
/// client costs. It also records each round's garbage-collection pause time (<see cref="GC.GetTotalPauseDuration"/>) and
/// gen0/gen1 collection counts per request. <c>--clients Bare,Governed,...</c> runs a subset (Bare, Factory and the A/A control BareControl are always included).
/// </summary>
internal static class LoopbackRounds
{
    public const string Command = "loopback-rounds";

    public static async Task<int> RunAsync(string[] args)
    {
        var options = RoundArguments.Parse(args, Command, "[--rounds 10] [--requests 20000] [--concurrency 32] [--clients Bare,Factory,Governed,...] [--profile <client> [--switch Namespace.Type.Field=0,1]]", "--rounds", "--requests", "--concurrency", "--clients", "--profile", "--switch");
        if (options is null)
        {
            return 2;
        }

        var rounds = options.Int("--rounds", 10);
        var requests = options.Int("--requests", 20_000);
        var concurrency = options.Int("--concurrency", LoopbackBenchmarks.Concurrency);
        var only = options.Text("--clients")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var profile = options.Text("--profile");

        await using var clients = await LoopbackClients.StartAsync();
        var targets = clients.All();
        if (only is not null)
        {
            targets = Array.FindAll(targets, t => t.Name is "Bare" or "Factory" or "BareControl" || Array.IndexOf(only, t.Name) >= 0);
        }

        if (profile is not null)
        {
            // One client for --rounds rounds, nothing else: for a profiler (perf record with DOTNET_PerfMapEnabled=1).
            if (RoundArguments.FindByName(clients.All(), t => t.Name, profile, "client") is not { } target)
            {
                return 2;
            }

            // --switch: code variants of a scratch build compared inside this process (CodeSwitch).
            CodeSwitch? codeSwitch = null;
            if (options.Text("--switch") is { } switchText && (codeSwitch = CodeSwitch.Parse(switchText)) is null)
            {
                return 2;
            }

            var buffer = new long[requests];
            for (var round = 0; round < rounds; round++)
            {
                var variant = codeSwitch is null ? string.Empty : $" [{codeSwitch.Set(round)}]";
                var (contentions, switches, workItems) = (Monitor.LockContentionCount, ContextSwitches(), ThreadPool.CompletedWorkItemCount);
                var (seconds, _, cpuTime) = await RunRoundAsync(target.Client, target.Uri, requests, concurrency, buffer);
                codeSwitch?.Record(round, cpuTime.TotalMicroseconds / requests, requests / seconds);
                Console.WriteLine(string.Create(
                    CultureInfo.InvariantCulture,
                    $"{profile}{variant}: {requests / seconds:F0} req/s, {cpuTime.TotalMicroseconds / requests:F2} cpu-us/req, per 1,000 requests: {(Monitor.LockContentionCount - contentions) * 1000.0 / requests:F2} lock contentions, {(ContextSwitches() - switches) * 1000.0 / requests:F1} context switches, {(ThreadPool.CompletedWorkItemCount - workItems) * 1000.0 / requests:F0} work items, {ThreadPool.ThreadCount} pool threads"));
            }

            codeSwitch?.PrintSummary();
            return 0;
        }

        var throughput = NewTable(targets.Length, rounds);
        var cpu = NewTable(targets.Length, rounds);
        var gcPause = NewTable(targets.Length, rounds);
        var gen0 = NewTable(targets.Length, rounds);
        var gen1 = NewTable(targets.Length, rounds);
        var allocated = NewTable(targets.Length, rounds);
        var p50 = NewTable(targets.Length, rounds);
        var p99 = NewTable(targets.Length, rounds);
        var latencies = new long[requests];

        Console.WriteLine($"loopback-rounds: {rounds} rounds x {requests} GETs per client, {concurrency} concurrent, server {clients.Server.Address}");
        Console.WriteLine($"runtime {Environment.Version}, {Environment.ProcessorCount} logical CPUs, server GC {System.Runtime.GCSettings.IsServerGC}");

        // Warm-up: JIT, tiering and connection pools, not recorded. A full round per client, so that the first recorded
        // round is not slower than the rest.
        for (var c = 0; c < targets.Length; c++)
        {
            await RunRoundAsync(targets[c].Client, targets[c].Uri, requests, concurrency, latencies);
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
                var pauseBefore = GC.GetTotalPauseDuration();
                var gen0Before = GC.CollectionCount(0);
                var gen1Before = GC.CollectionCount(1);
                var (seconds, bytes, cpuTime) = await RunRoundAsync(targets[c].Client, targets[c].Uri, requests, concurrency, latencies);
                gcPause[c][round] = (GC.GetTotalPauseDuration() - pauseBefore).TotalMicroseconds / requests;
                gen0[c][round] = (GC.CollectionCount(0) - gen0Before) * 10_000.0 / requests;
                gen1[c][round] = (GC.CollectionCount(1) - gen1Before) * 10_000.0 / requests;
                throughput[c][round] = requests / seconds;
                cpu[c][round] = cpuTime.TotalMicroseconds / requests;
                allocated[c][round] = (double)bytes / requests;

                // After the allocation count: sorting is the only step here that could allocate.
                Array.Sort(latencies);
                p50[c][round] = Microseconds(Percentile(latencies, 0.50));
                p99[c][round] = Microseconds(Percentile(latencies, 0.99));
                line += $"  {targets[c].Name} {throughput[c][round],6:F0} req/s {allocated[c][round],5:F0} B/req {cpu[c][round],5:F1} cpu-us/req p50 {p50[c][round],5:F0} p99 {p99[c][round],6:F0} us";
            }

            Console.WriteLine(line);
        }

        // Index 0 is Bare, index 1 the factory client without governance (see LoopbackClients.All; --clients keeps both).
        Console.WriteLine();
        Console.WriteLine("Throughput and allocations:");
        Console.WriteLine();
        Console.WriteLine("| Client | Median req/s | Min req/s | Max req/s | Ratio to Bare (medians) | Paired ratio to Bare, median (min-max) | Ratio to Factory (medians) | Median B/req | Min-max B/req | B/req over Bare | B/req over Factory |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        var bareThroughput = RoundStatistics.Median(throughput[0]);
        var factoryThroughput = RoundStatistics.Median(throughput[1]);
        var bareBytes = RoundStatistics.Median(allocated[0]);
        var factoryBytes = RoundStatistics.Median(allocated[1]);
        for (var c = 0; c < targets.Length; c++)
        {
            var paired = RoundStatistics.Ratios(throughput[c], throughput[0]);
            var median = RoundStatistics.Median(throughput[c]);
            var bytes = RoundStatistics.Median(allocated[c]);
            Console.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"| {targets[c].Name} | {median:F0} | {throughput[c].Min():F0} | {throughput[c].Max():F0} | {median / bareThroughput:F3} | {RoundStatistics.Median(paired):F3} ({paired.Min():F3}-{paired.Max():F3}) | {median / factoryThroughput:F3} | {bytes:F0} | {allocated[c].Min():F0}-{allocated[c].Max():F0} | {bytes - bareBytes:+0;-0;0} | {bytes - factoryBytes:+0;-0;0} |"));
        }

        Console.WriteLine();
        Console.WriteLine("CPU time per request (us of process CPU, user + kernel, client and server together; lower is better):");
        Console.WriteLine();
        Console.WriteLine("| Client | Median CPU us/req | Min-max | Ratio to Bare (medians) | Paired ratio to Bare, median (min-max) | Over Bare (us, medians) |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|");
        var bareCpu = RoundStatistics.Median(cpu[0]);
        for (var c = 0; c < targets.Length; c++)
        {
            var paired = RoundStatistics.Ratios(cpu[c], cpu[0]);
            var median = RoundStatistics.Median(cpu[c]);
            Console.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"| {targets[c].Name} | {median:F2} | {cpu[c].Min():F2}-{cpu[c].Max():F2} | {median / bareCpu:F3} | {RoundStatistics.Median(paired):F3} ({paired.Min():F3}-{paired.Max():F3}) | {median - bareCpu:+0.00;-0.00;0} |"));
        }

        Console.WriteLine();
        Console.WriteLine("Garbage collection (process-wide, client and server together; medians across rounds):");
        Console.WriteLine();
        Console.WriteLine("| Client | GC pause us/req | Over Bare (us) | Gen0 GCs per 10k req | Gen1 GCs per 10k req |");
        Console.WriteLine("|---|---:|---:|---:|---:|");
        var barePause = RoundStatistics.Median(gcPause[0]);
        for (var c = 0; c < targets.Length; c++)
        {
            var pause = RoundStatistics.Median(gcPause[c]);
            Console.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"| {targets[c].Name} | {pause:F3} | {pause - barePause:+0.000;-0.000;0} | {RoundStatistics.Median(gen0[c]):F2} | {RoundStatistics.Median(gen1[c]):F2} |"));
        }

        Console.WriteLine();
        Console.WriteLine("Latency per request (us; p50 and p99 of each round, then the median across rounds):");
        Console.WriteLine();
        Console.WriteLine("| Client | Median p50 | Median p99 | Min-max p99 | p99 ratio to Bare (medians) | Paired p99 ratio to Bare, median (min-max) | p99 ratio to Factory (medians) | p50 ratio to Bare (medians) |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|");
        var bareP99 = RoundStatistics.Median(p99[0]);
        var factoryP99 = RoundStatistics.Median(p99[1]);
        var bareP50 = RoundStatistics.Median(p50[0]);
        for (var c = 0; c < targets.Length; c++)
        {
            var paired = RoundStatistics.Ratios(p99[c], p99[0]);
            var median50 = RoundStatistics.Median(p50[c]);
            var median99 = RoundStatistics.Median(p99[c]);
            Console.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"| {targets[c].Name} | {median50:F0} | {median99:F0} | {p99[c].Min():F0}-{p99[c].Max():F0} | {median99 / bareP99:F3} | {RoundStatistics.Median(paired):F3} ({paired.Min():F3}-{paired.Max():F3}) | {median99 / factoryP99:F3} | {median50 / bareP50:F3} |"));
        }

        return 0;
    }

    /// <summary>The context switches of every thread of the process so far (voluntary and not), from /proc; 0 where there is no /proc.</summary>
    private static long ContextSwitches()
    {
        long total = 0;
        if (!Directory.Exists("/proc/self/task"))
        {
            return 0;
        }

        foreach (var task in Directory.EnumerateDirectories("/proc/self/task"))
        {
            try
            {
                foreach (var line in File.ReadLines(Path.Combine(task, "status")))
                {
                    if (line.StartsWith("voluntary_ctxt_switches:", StringComparison.Ordinal) || line.StartsWith("nonvoluntary_ctxt_switches:", StringComparison.Ordinal))
                    {
                        total += long.Parse(line.AsSpan(line.IndexOf(':', StringComparison.Ordinal) + 1).Trim(), CultureInfo.InvariantCulture);
                    }
                }
            }
            catch (IOException)
            {
                // The thread ended meanwhile.
            }
        }

        return total;
    }

    /// <summary>One round: <paramref name="requests"/> GETs by <paramref name="concurrency"/> workers in a closed loop; its wall time, bytes allocated (whole process) and process CPU time.</summary>
    internal static async Task<(double Seconds, long Bytes, TimeSpan Cpu)> RunRoundAsync(HttpClient client, Uri uri, int requests, int concurrency, long[] latencies)
    {
        var issued = 0;
        var workers = new Task[concurrency];
        var cpuBefore = Environment.CpuUsage.TotalTime;
        var allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
        var start = Stopwatch.GetTimestamp();
        for (var w = 0; w < workers.Length; w++)
        {
            workers[w] = Task.Run(async () =>
            {
                int index;
                while ((index = Interlocked.Increment(ref issued)) <= requests)
                {
                    var sent = Stopwatch.GetTimestamp();
                    await LoopbackClients.GetAsync(client, uri);
                    latencies[index - 1] = Stopwatch.GetTimestamp() - sent;
                }
            });
        }

        await Task.WhenAll(workers).WaitAsync(TimeSpan.FromMinutes(5));
        var elapsed = Stopwatch.GetElapsedTime(start);
        var bytes = GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore;
        return (elapsed.TotalSeconds, bytes, Environment.CpuUsage.TotalTime - cpuBefore);
    }

    private static double[][] NewTable(int clients, int rounds)
    {
        var table = new double[clients][];
        for (var c = 0; c < clients; c++)
        {
            table[c] = new double[rounds];
        }

        return table;
    }

    /// <summary>Nearest-rank percentile of sorted values.</summary>
    private static long Percentile(long[] sorted, double fraction) =>
        sorted[Math.Clamp((int)Math.Ceiling(fraction * sorted.Length) - 1, 0, sorted.Length - 1)];

    private static double Microseconds(long ticks) => ticks * 1_000_000.0 / Stopwatch.Frequency;
}
