using System.Globalization;
using System.Net;
using Governance.Pipeline;
using Governance.Tests.Infrastructure;
using Governance.Tests.LoadBalancing;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Governance.Tests.Resilience;

/// <summary>
/// Fault-test helpers: configuration of the <c>catalog</c> service with retries that never wait on the clock, governed
/// clients on a fake clock, servers that fail or hold requests, and a driver that records every outcome instead of
/// stopping at the first failure.
/// </summary>
internal static class Faults
{
    public const string Service = Traffic.Service;

    public const string Url = Traffic.Url;

    /// <summary>Wall-clock guard of one network await.</summary>
    public static readonly TimeSpan Guard = Traffic.Guard;

    /// <summary>Wall-clock guard of a batch of requests or of a condition polled in the background.</summary>
    public static readonly TimeSpan BatchGuard = Traffic.BatchGuard;

    /// <summary>
    /// Settings of <see cref="Service"/> over <paramref name="endpoints"/> with RoundRobin and retries without delay
    /// (<c>BaseDelay</c> 0, <c>Constant</c>, no jitter): on a fake clock a retry then never waits for the test to advance it.
    /// </summary>
    public static Dictionary<string, string?> Settings(params Uri[] endpoints)
    {
        var settings = new Dictionary<string, string?>
        {
            [$"Services:{Service}:LoadBalancer:Policy"] = "RoundRobin",
            [$"Services:{Service}:Retry:BaseDelay"] = "00:00:00",
            [$"Services:{Service}:Retry:Backoff"] = "Constant",
            [$"Services:{Service}:Retry:Jitter"] = "false",
        };
        for (var i = 0; i < endpoints.Length; i++)
        {
            settings[$"Services:{Service}:Endpoints:{i}"] = endpoints[i].ToString();
        }

        return settings;
    }

    public static Dictionary<string, string?> Settings(params LoopbackServer[] servers) =>
        Settings(Array.ConvertAll(servers, s => s.Address));

    /// <summary>Sets a key of <see cref="Service"/>'s section, e.g. <c>Retry:MaxRetries</c>.</summary>
    public static Dictionary<string, string?> With(this Dictionary<string, string?> settings, string key, object value)
    {
        settings[$"Services:{Service}:{key}"] = Convert.ToString(value, CultureInfo.InvariantCulture);
        return settings;
    }

    /// <summary>A concurrency limit of one call in flight, with room for one more waiting for its permit.</summary>
    public static Dictionary<string, string?> OnePermitOneWaiting(this Dictionary<string, string?> settings) =>
        settings.With("RateLimit:Algorithm", "Concurrency").With("RateLimit:Burst", 1).With("RateLimit:QueueLimit", 1);

    /// <summary>A governed client; <paramref name="time"/> is registered before <c>AddMeshGovernance</c> so that governance runs on it.</summary>
    public static Governed Create(Dictionary<string, string?> settings, TimeProvider? time = null, CapturingLoggerProvider? logs = null, AttemptCounter? attempts = null) =>
        Governed.Create(settings, services =>
        {
            if (time is not null)
            {
                services.AddSingleton(time);
            }

            if (logs is not null)
            {
                services.AddLogging(l => l.AddProvider(logs).SetMinimumLevel(LogLevel.Trace));
            }

            attempts?.AddTo(services);
        });

    /// <summary>A server that answers every request with <paramref name="status"/> (and a <c>Retry-After</c> when given).</summary>
    public static Task<LoopbackServer> StartStatusAsync(string name, int status, string? retryAfter = null, bool record = false) =>
        LoopbackServer.StartAsync(name, context =>
        {
            context.Response.StatusCode = status;
            if (retryAfter is not null)
            {
                context.Response.Headers.RetryAfter = retryAfter;
            }

            return context.Response.WriteAsync(name, context.RequestAborted);
        }, record);

    public static ServiceRuntime Runtime(Governed governed) => Traffic.Runtime(governed);

    public static EndpointState State(Governed governed, LoopbackServer server) => Traffic.State(governed, server);

    public static bool Has(EndpointState state, EndpointConditions condition) => (state.Conditions & condition) != 0;

    /// <summary>Sends one GET and records its outcome; never throws for a failed call.</summary>
    public static async Task<CallResult> TryGetAsync(Governed governed, CancellationToken cancellationToken = default)
    {
        try
        {
            using var response = await governed.Client.GetAsync(Url, cancellationToken).WaitAsync(Guard, cancellationToken);
            var server = response.Headers.TryGetValues("x-server", out var values) ? values.Single() : null;
            return new CallResult((int)response.StatusCode, server, null);
        }
        catch (Exception ex) when (ex is not TimeoutException)
        {
            return new CallResult(0, null, ex);
        }
    }

    /// <summary>Sends <paramref name="count"/> GETs with at most <paramref name="concurrency"/> in flight; result i is request i's.</summary>
    public static async Task<CallResult[]> SendManyAsync(Governed governed, int count, int concurrency)
    {
        var results = new CallResult[count];
        var options = new ParallelOptions { MaxDegreeOfParallelism = concurrency };
        await Parallel.ForEachAsync(Enumerable.Range(0, count), options, async (i, ct) =>
        {
            results[i] = await TryGetAsync(governed, ct);
        }).WaitAsync(BatchGuard);
        return results;
    }

    /// <summary>Sends <paramref name="count"/> GETs one after another.</summary>
    public static async Task<CallResult[]> SendSequentialAsync(Governed governed, int count)
    {
        var results = new CallResult[count];
        for (var i = 0; i < count; i++)
        {
            results[i] = await TryGetAsync(governed);
        }

        return results;
    }

    /// <summary>Sends GETs one at a time (each must succeed) until <paramref name="condition"/> holds, at most 40; returns how many.</summary>
    public static async Task<int> SendUntilAsync(Governed governed, Func<bool> condition)
    {
        for (var i = 1; i <= 40; i++)
        {
            var result = await TryGetAsync(governed);
            Assert.True(result.Succeeded, result.ToString());
            if (condition())
            {
                return i;
            }
        }

        Assert.Fail("condition not reached within 40 GETs");
        return 0;
    }

    public static int Count(this IEnumerable<LogEntry> entries, int eventId) => entries.Count(e => e.EventId.Id == eventId);

    public static string Describe(IEnumerable<CallResult> results) =>
        string.Join(", ", results
            .GroupBy(r => r.Error is { } e ? e.GetType().Name : $"{r.Status} from {r.Server}")
            .OrderBy(g => g.Key, StringComparer.Ordinal)
            .Select(g => $"{g.Key}: {g.Count()}"));
}

/// <summary>What one governed call ended with: a status and the server that answered, or the exception.</summary>
internal readonly record struct CallResult(int Status, string? Server, Exception? Error)
{
    public bool Succeeded => Error is null && Status is >= 200 and < 300;
}

/// <summary>
/// A server handler that holds every request until <see cref="Release"/> (or until the client gives up on it) and
/// signals each arrival, so that a test knows an attempt is in flight before it moves the fake clock.
/// </summary>
internal sealed class HeldRequests
{
    private readonly TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly SemaphoreSlim _arrived = new(0);
    private int _count;
    private volatile int _status = (int)HttpStatusCode.OK;

    public int Count => Volatile.Read(ref _count);

    public async Task Handle(HttpContext context)
    {
        Interlocked.Increment(ref _count);
        _arrived.Release();
        await _release.Task.WaitAsync(context.RequestAborted);
        context.Response.StatusCode = _status;
        await context.Response.WriteAsync("released", context.RequestAborted);
    }

    /// <summary>Waits (wall-clock guarded) for the next request to arrive.</summary>
    public async Task WaitForArrivalAsync()
    {
        Assert.True(await _arrived.WaitAsync(Faults.Guard), $"no request arrived within {Faults.Guard}");
    }

    /// <summary>Completes with <see langword="true"/> when the next request arrives, <see langword="false"/> after the wall-clock guard.</summary>
    public Task<bool> NextArrivalAsync() => _arrived.WaitAsync(Faults.Guard);

    /// <summary>Lets every held request (and every later one) go on, answered with <paramref name="status"/>.</summary>
    public void Release(HttpStatusCode status = HttpStatusCode.OK)
    {
        _status = (int)status;
        _release.TrySetResult();
    }
}
