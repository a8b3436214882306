using System.Diagnostics;
using System.Globalization;

namespace MeshGovernance.Demo;

/// <summary>Sends a fixed number of requests through a governed client with bounded concurrency and records each outcome.</summary>
internal static class LoadRun
{
    public static async Task<RunResult> RunAsync(
        HttpClient client,
        string service,
        int requests,
        int concurrency,
        int users,
        ProgressLine progress,
        CancellationToken cancellationToken)
    {
        var samples = new Sample[requests];
        var next = -1;
        var completed = 0;

        async Task WorkerAsync()
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < requests)
            {
                var user = users > 0 ? i % users : -1;
                samples[i] = await SendAsync(client, service, i, user, cancellationToken);
                Interlocked.Increment(ref completed);
            }
        }

        var started = Stopwatch.GetTimestamp();
        var workers = new Task[concurrency];
        for (var w = 0; w < workers.Length; w++)
        {
            workers[w] = Task.Run(WorkerAsync, cancellationToken);
        }

        var all = Task.WhenAll(workers);
        while (!all.IsCompleted)
        {
            await Task.WhenAny(all, Task.Delay(100, cancellationToken));
            cancellationToken.ThrowIfCancellationRequested();
            progress.Report(Volatile.Read(ref completed));
        }

        await all;
        var elapsed = Stopwatch.GetElapsedTime(started);
        progress.Complete(elapsed);
        return new RunResult(samples, elapsed);
    }

    private static async Task<Sample> SendAsync(HttpClient client, string service, int id, int user, CancellationToken cancellationToken)
    {
        // The logical address: MeshGovernance picks an endpoint of "catalog" and rewrites scheme, host and port.
        using var request = new HttpRequestMessage(HttpMethod.Get, string.Create(CultureInfo.InvariantCulture, $"http://{service}/items?id={id}"));
        if (user >= 0)
        {
            request.Headers.Add("x-user-id", string.Create(CultureInfo.InvariantCulture, $"user-{user}"));
        }

        var started = Stopwatch.GetTimestamp();
        try
        {
            using var response = await client.SendAsync(request, cancellationToken);
            var elapsed = Stopwatch.GetElapsedTime(started);
            if (!response.IsSuccessStatusCode)
            {
                return Sample.Failed(string.Create(CultureInfo.InvariantCulture, $"HTTP {(int)response.StatusCode}"));
            }

            return response.Headers.TryGetValues("x-server", out var servers)
                ? new Sample(servers.First(), elapsed, user, Error: null)
                : Sample.Failed("response without x-server header");
        }
        catch (Governance.RateLimitRejectedException)
        {
            // Refused in the process by the service's limiter: nothing was sent.
            return Sample.Failed(RunResult.RateLimited);
        }
        catch (HttpRequestException ex)
        {
            return Sample.Failed(ex.Message);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return Sample.Failed("timed out");
        }
    }
}

/// <summary>The outcome of one request: who answered and how long it took, or why it failed.</summary>
internal readonly record struct Sample(string? Server, TimeSpan Latency, int User, string? Error)
{
    public static Sample Failed(string error) => new(null, TimeSpan.Zero, -1, error);
}

/// <summary>The outcomes of one run.</summary>
internal sealed class RunResult(Sample[] samples, TimeSpan elapsed)
{
    /// <summary>The error of a sample that the rate limit refused.</summary>
    public const string RateLimited = "rate limited";

    public Sample[] Samples { get; } = samples;

    public TimeSpan Elapsed { get; } = elapsed;

    public double Throughput => Samples.Length / Elapsed.TotalSeconds;

    public IEnumerable<Sample> Failures => Samples.Where(static s => s.Error is not null);

    /// <summary>Gets the latency statistics of the requests <paramref name="server"/> answered, or of all successful ones when it is null.</summary>
    public EndpointStats Stats(string? server)
    {
        var latencies = Samples
            .Where(s => s.Error is null && (server is null || s.Server == server))
            .Select(static s => s.Latency.TotalMilliseconds)
            .Order()
            .ToArray();
        return new EndpointStats(latencies.Length, Percentile(latencies, 0.50), Percentile(latencies, 0.99));
    }

    /// <summary>Counts the users whose requests were answered by more than one endpoint.</summary>
    public (int Users, int Moved) Affinity()
    {
        var byUser = Samples
            .Where(static s => s.Error is null && s.User >= 0)
            .GroupBy(static s => s.User)
            .ToArray();
        return (byUser.Length, byUser.Count(static g => g.Select(static s => s.Server).Distinct().Skip(1).Any()));
    }

    // Nearest rank: the smallest value with at least q of the samples at or below it.
    private static double Percentile(double[] sorted, double q) =>
        sorted.Length == 0 ? double.NaN : sorted[Math.Max(0, (int)Math.Ceiling(q * sorted.Length) - 1)];
}

internal readonly record struct EndpointStats(int Requests, double P50Milliseconds, double P99Milliseconds);
