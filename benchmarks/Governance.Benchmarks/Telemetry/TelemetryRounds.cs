using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using Governance.Benchmarks.Infrastructure;
using Governance.Telemetry;

namespace Governance.Benchmarks.Telemetry;

/// <summary>
/// <c>telemetry-rounds</c>: the cost of observability per governed call, measured in one process in alternating rounds.
/// BenchmarkDotNet runs each telemetry row in its own process, and those processes are bimodal (the same row measured
/// 229 and 358 ns in two launches), which swamps a 10 % comparison between rows. Here one process times, per round and
/// in an order that alternates between rounds: <c>unobserved</c> (governance's handler over the in-memory terminal, no
/// listener), <c>observed</c> (the same call with an <see cref="ActivityListener"/> sampling everything and a
/// <see cref="MeterListener"/> enabling every MeshGovernance instrument, as in <see cref="ObservedTelemetryBenchmarks"/>)
/// and <c>bare</c> (starting and stopping one <see cref="Activity"/> with the same three tags under the same listener).
/// Each round also times the call with only the activity listener and with only the meter listener, to tell the span's
/// share from the metrics'. The cost of observability is observed − unobserved; the goal compares it with bare. Listeners are added and
/// removed between phases, so nothing listens during the unobserved phase (checked every round).
/// </summary>
internal static class TelemetryRounds
{
    public const string Command = "telemetry-rounds";

    public static async Task<int> RunAsync(string[] args)
    {
        var options = RoundArguments.Parse(args, Command, "[--rounds 15] [--operations 200000] [--profile traces|hooks|unobserved]", "--rounds", "--operations", "--profile");
        if (options is null)
        {
            return 2;
        }

        var rounds = options.Int("--rounds", 15);
        var operations = options.Int("--operations", 200_000);
        var profile = options.Text("--profile");

        var terminal = new CompletedResponseHandler();
        await using var provider = Pipelines.Governed(() => terminal, [new Uri("http://127.0.0.1:5001"), new Uri("http://127.0.0.1:5002"), new Uri("http://127.0.0.1:5003")]);
        using var invoker = new HttpMessageInvoker(Pipelines.GovernanceHandlerOnly(provider, terminal), disposeHandler: false);
        using var request = new HttpRequestMessage(HttpMethod.Get, $"http://{Pipelines.ServiceName}/api/items");

        var unobserved = new double[rounds];
        var observed = new double[rounds];
        var bare = new double[rounds];
        var tracesOnly = new double[rounds];
        var bareInAsync = new double[rounds];
        var hooks = new double[rounds];
        var instrumentation = Microsoft.Extensions.DependencyInjection.ServiceProviderServiceExtensions.GetRequiredService<GovernanceInstrumentation>(provider);
        Microsoft.Extensions.DependencyInjection.ServiceProviderServiceExtensions.GetRequiredService<Governance.Pipeline.GovernanceRuntime>(provider).TryGetService(Pipelines.ServiceName, out var service);
        using var response = new HttpResponseMessage(System.Net.HttpStatusCode.OK);
        var metricsOnly = new double[rounds];
        if (profile is not null)
        {
            // One phase in a loop for --rounds x --operations calls, for a profiler (perf record with DOTNET_PerfMapEnabled=1).
            using (Listen(traces: profile != "unobserved", metrics: false))
            {
                for (var r = 0; r < rounds; r++)
                {
                    var ns = profile == "hooks" ? Hooks(instrumentation, service!, request, response, operations) : Calls(invoker, request, operations);
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{profile}: {ns:F1} ns/call"));
                }
            }

            return 0;
        }

        Console.WriteLine($"{Command}: {rounds} rounds x {operations} calls per phase, runtime {Environment.Version}");

        // Warm-up of every phase (JIT tiering), not recorded.
        for (var w = 0; w < 3; w++)
        {
            Unobserved(invoker, request, operations);
            using (Listen())
            {
                Observed(invoker, request, operations);
                Bare(operations);
            }
        }

        for (var round = 0; round < rounds; round++)
        {
            if (round % 2 == 0)
            {
                unobserved[round] = Unobserved(invoker, request, operations);
                using var listening = Listen();
                observed[round] = Observed(invoker, request, operations);
                bare[round] = Bare(operations);
            }
            else
            {
                using (Listen())
                {
                    bare[round] = Bare(operations);
                    observed[round] = Observed(invoker, request, operations);
                }

                unobserved[round] = Unobserved(invoker, request, operations);
            }

            using (Listen(traces: true, metrics: false))
            {
                tracesOnly[round] = Observed(invoker, request, operations);
                bareInAsync[round] = BareInAsyncMethod(operations);
                hooks[round] = Hooks(instrumentation, service!, request, response, operations);
            }

            using (Listen(traces: false, metrics: true))
            {
                metricsOnly[round] = Calls(invoker, request, operations);
            }

            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"round {round + 1,2}: unobserved {unobserved[round],7:F1} ns  observed {observed[round],7:F1} ns  bare Activity {bare[round],7:F1} ns  cost {observed[round] - unobserved[round],7:F1} ns = {(observed[round] - unobserved[round]) / bare[round]:F3}x bare"));
        }

        var cost = new double[rounds];
        var ratio = new double[rounds];
        for (var r = 0; r < rounds; r++)
        {
            cost[r] = observed[r] - unobserved[r];
            ratio[r] = cost[r] / bare[r];
        }

        Console.WriteLine();
        Console.WriteLine("| Phase | Median ns/call | Min-max |");
        Console.WriteLine("|---|---:|---:|");
        Row("Governance handler, nothing listening", unobserved);
        Row("Governance handler, traces + metrics listened to", observed);
        Row("Cost of observability (observed - unobserved, per round)", cost);
        Row("One bare Activity with the same tags, listened to", bare);
        Row("Governance handler, traces only (activity listener)", tracesOnly);
        Row("Governance handler, metrics only (meter listener)", metricsOnly);
        Row("One bare Activity started and stopped inside a pooled async method (completes synchronously)", bareInAsync);
        Row("The handler's telemetry calls alone, traces only (StartCall, RecordAttempt, EndCall)", hooks);
        Console.WriteLine();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Cost of observability / bare Activity: median of per-round ratios {RoundStatistics.Median(ratio):F3} (min {ratio.Min():F3}, max {ratio.Max():F3}); ratio of medians {RoundStatistics.Median(cost) / RoundStatistics.Median(bare):F3}"));
        return 0;
    }

    private static void Row(string name, double[] values) =>
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {name} | {RoundStatistics.Median(values):F1} | {values.Min():F1}-{values.Max():F1} |"));

    private static double Unobserved(HttpMessageInvoker invoker, HttpRequestMessage request, int operations)
    {
        if (GovernanceInstrumentation.Source.HasListeners())
        {
            throw new InvalidOperationException("something listens to MeshGovernance in the unobserved phase");
        }

        return Calls(invoker, request, operations);
    }

    private static double Observed(HttpMessageInvoker invoker, HttpRequestMessage request, int operations)
    {
        if (!GovernanceInstrumentation.Source.HasListeners())
        {
            throw new InvalidOperationException("nothing listens to MeshGovernance in the observed phase");
        }

        return Calls(invoker, request, operations);
    }

    private static double Calls(HttpMessageInvoker invoker, HttpRequestMessage request, int operations)
    {
        var start = Stopwatch.GetTimestamp();
        for (var i = 0; i < operations; i++)
        {
            // Completes synchronously over the in-memory terminal.
            invoker.SendAsync(request, CancellationToken.None).GetAwaiter().GetResult();
        }

        return Stopwatch.GetElapsedTime(start).TotalNanoseconds / operations;
    }

    private static double Bare(int operations)
    {
        var start = Stopwatch.GetTimestamp();
        for (var i = 0; i < operations; i++)
        {
            TelemetryBenchmarks.RunBareActivity();
        }

        return Stopwatch.GetElapsedTime(start).TotalNanoseconds / operations;
    }

    private static double Hooks(GovernanceInstrumentation instrumentation, Governance.Pipeline.ServiceRuntime service, HttpRequestMessage request, HttpResponseMessage response, int operations)
    {
        var endpoint = service.Endpoints.All[0];
        var outcome = Polly.Outcome.FromResult(response);
        var clock = service.Policy.SpanClock;
        var start = Stopwatch.GetTimestamp();

        // The call's start timestamp is taken whatever telemetry does (it drives the total timeout), so it is not
        // counted: refreshed every 1,024 calls, which keeps it within the span clock's one-second anchor.
        var startedAt = start;
        for (var i = 0; i < operations; i++)
        {
            if ((i & 1023) == 1023)
            {
                startedAt = Stopwatch.GetTimestamp();
            }

            var activity = GovernanceInstrumentation.StartCall(service, request, startedAt, clock);
            instrumentation.RecordAttempt(service, endpoint, 1, outcome);
            instrumentation.EndCall(activity, service, request, startedAt, TimeProvider.System, clock, response, null);
        }

        return Stopwatch.GetElapsedTime(start).TotalNanoseconds / operations;
    }

    /// <summary>
    /// The bare <see cref="Activity"/> as governance's handler runs its span: inside an async method (which restores the
    /// caller's execution context when it returns, so that <see cref="Activity.Current"/> does not leak to the caller).
    /// </summary>
    private static double BareInAsyncMethod(int operations)
    {
        var start = Stopwatch.GetTimestamp();
        for (var i = 0; i < operations; i++)
        {
            var pending = BareAsync();
            if (!pending.IsCompletedSuccessfully)
            {
                throw new InvalidOperationException("BareAsync did not complete synchronously");
            }
        }

        return Stopwatch.GetElapsedTime(start).TotalNanoseconds / operations;
    }

    [System.Runtime.CompilerServices.AsyncMethodBuilder(typeof(System.Runtime.CompilerServices.PoolingAsyncValueTaskMethodBuilder))]
    private static async ValueTask BareAsync()
    {
        TelemetryBenchmarks.RunBareActivity();
        await Task.CompletedTask.ConfigureAwait(false);
    }

    /// <summary>Starts the activity and meter listeners of <see cref="ObservedTelemetryBenchmarks"/>; disposing stops both.</summary>
    private static Listeners Listen(bool traces = true, bool metrics = true) =>
        new(traces ? TelemetryBenchmarks.StartActivityListener() : null, metrics ? TelemetryBenchmarks.StartMeterListener() : null);

    private sealed class Listeners(ActivityListener? activities, MeterListener? meters) : IDisposable
    {
        public void Dispose()
        {
            activities?.Dispose();
            meters?.Dispose();
        }
    }
}
