using System.Threading.RateLimiting;
using BenchmarkDotNet.Attributes;
using Governance.Benchmarks.Infrastructure;
using Governance.Pipeline;
using Microsoft.Extensions.DependencyInjection;

namespace Governance.Benchmarks.Pipeline;

/// <summary>
/// A call that governance refuses, in memory: one <see cref="HttpMessageInvoker.SendAsync"/> of a reused request whose
/// returned task is faulted at once. Rows without a suffix only check <see cref="Task.IsFaulted"/>; <c>…Observed</c>
/// rows then mark the exception observed with <c>ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing)</c> and
/// <c>GetResult()</c>, which neither throws nor allocates (reading <see cref="Task.Exception"/> would allocate an
/// <see cref="AggregateException"/>), so nothing is thrown anywhere in the measured code unless the pipeline itself
/// throws. Calls that were not refused are counted and printed
/// by the cleanup (<c>// not refused: …</c> in the log), so a row that measured something else would show it.
/// One provider governs four services, each on the same 3 static endpoints and the default resilience:
/// <list type="bullet">
///   <item><description><c>open</c>: nothing refuses; <c>Accepted</c> is a normal governed call, the reference for the others;</description></item>
///   <item><description><c>limited</c>: <c>RateLimit:Algorithm Concurrency</c>, <c>Burst 1</c>, and the one permit is held by the setup for the whole run, so every call is rejected (the limiter's failed lease is a cached instance without metadata);</description></item>
///   <item><description><c>bucket</c>: <c>RateLimit:Algorithm TokenBucket</c>, <c>Burst 1</c>, <c>PermitsPerSecond 1</c>, its token taken by the setup; it refills one token a second, so about one call a second is accepted (counted), and each rejection carries a <c>RetryAfter</c>;</description></item>
///   <item><description><c>down</c>: every endpoint disabled (<c>SetAvailable(false)</c> then <c>Refresh()</c>, as an operator would), so the call fails with <see cref="NoAvailableEndpointException"/> before any permit or async layer.</description></item>
/// </list>
/// Rows without a suffix send through MeshGovernance's handler directly over the terminal (<c>HttpMessageInvoker</c>
/// over <c>GovernanceHandler</c>, as <c>GovernanceHandlerOnly</c> elsewhere): the governance pipeline alone. Rows with
/// <c>ViaFactory</c> send through the whole IHttpClientFactory chain, which is the only way users reach governance: the
/// factory's own logging handlers sit around it (they are async methods that await the faulted task, so the exception
/// is thrown and caught there; BenchmarkDotNet's <c>// Exceptions</c> line counts it); these rows observe the exception.
/// Governance answers refusals for one reason (per endpoint set, per policy and retry-after due time) with one shared
/// faulted task; the setup checks that. <c>FaultedTask…</c> are the floor of a new faulted task per call,
/// <c>SharedFaultedTaskObserved</c> the floor of a shared one.
/// </summary>
[MemoryDiagnoser]
public class RejectedCallBenchmarks
{
    private static readonly Uri[] Endpoints =
    [
        new("http://127.0.0.1:5001"),
        new("http://127.0.0.1:5002"),
        new("http://127.0.0.1:5003"),
    ];

    private static readonly Task<HttpResponseMessage> SharedFaulted = Task.FromException<HttpResponseMessage>(new RateLimitRejectedException("limited", retryAfter: null));

    private readonly CompletedResponseHandler _terminal = new();
    private readonly HttpRequestMessage _open = new(HttpMethod.Get, "http://open/api/items");
    private readonly HttpRequestMessage _limited = new(HttpMethod.Get, "http://limited/api/items");
    private readonly HttpRequestMessage _bucket = new(HttpMethod.Get, "http://bucket/api/items");
    private readonly HttpRequestMessage _down = new(HttpMethod.Get, "http://down/api/items");
    private ServiceProvider _provider = null!;
    private HttpMessageInvoker _handler = null!;
    private HttpMessageInvoker _factory = null!;
    private RateLimitLease _heldPermit = null!;
    private RateLimiter _bucketLimiter = null!;
    private long _notRefused;

    [GlobalSetup]
    public async Task Setup()
    {
        var settings = new Dictionary<string, string?>
        {
            ["MeshGovernance:Services:limited:RateLimit:Algorithm"] = "Concurrency",
            ["MeshGovernance:Services:limited:RateLimit:Burst"] = "1",
            ["MeshGovernance:Services:bucket:RateLimit:Algorithm"] = "TokenBucket",
            ["MeshGovernance:Services:bucket:RateLimit:Burst"] = "1",
            ["MeshGovernance:Services:bucket:RateLimit:PermitsPerSecond"] = "1",
        };
        foreach (var service in new[] { "open", "limited", "bucket", "down" })
        {
            for (var i = 0; i < Endpoints.Length; i++)
            {
                settings[$"MeshGovernance:Services:{service}:Endpoints:{i}"] = Endpoints[i].ToString();
            }
        }

        _provider = Pipelines.Governed(() => _terminal, settings);
        var runtime = _provider.GetRequiredService<GovernanceRuntime>();
        _handler = new HttpMessageInvoker(Pipelines.GovernanceHandlerOnly(_provider, _terminal), disposeHandler: false);
        _factory = new HttpMessageInvoker(Pipelines.CreateHandler(_provider), disposeHandler: false);

        // Hold the only permit of "limited"; take the only token of "bucket".
        runtime.TryGetService("limited", out var limited);
        _heldPermit = limited!.Policy.Limiter!.AttemptAcquire();
        runtime.TryGetService("bucket", out var bucket);
        _bucketLimiter = bucket!.Policy.Limiter!;
        using (var token = bucket!.Policy.Limiter!.AttemptAcquire())
        {
            Require(token.IsAcquired, "the bucket's token was not available");
        }

        // Disable every endpoint of "down".
        runtime.TryGetService("down", out var down);
        foreach (var endpoint in down!.Endpoints.All)
        {
            endpoint.SetAvailable(false);
        }

        down.Refresh();
        Require(_heldPermit.IsAcquired && down.Endpoints.Candidates.Length == 0, "setup did not take the permit or disable the endpoints");

        // Each row does what it says, through both chains, before anything is measured.
        foreach (var invoker in new[] { _handler, _factory })
        {
            var accepted = await invoker.SendAsync(_open, CancellationToken.None);
            Require(accepted.IsSuccessStatusCode, "the open service did not answer 200");
            Refused<RateLimitRejectedException>(invoker.SendAsync(_limited, CancellationToken.None));
            Refused<RateLimitRejectedException>(invoker.SendAsync(_bucket, CancellationToken.None));
            Refused<NoAvailableEndpointException>(invoker.SendAsync(_down, CancellationToken.None));
        }

        // Governance answers repeated refusals for one reason with one shared faulted task (see RefusedCall).
        Require(
            ReferenceEquals(_handler.SendAsync(_limited, CancellationToken.None), _handler.SendAsync(_limited, CancellationToken.None))
            && ReferenceEquals(_handler.SendAsync(_down, CancellationToken.None), _handler.SendAsync(_down, CancellationToken.None)),
            "refusals for one reason did not share one faulted task");
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        Console.WriteLine($"// not refused: {_notRefused}");
        _heldPermit.Dispose();
        _provider.Dispose();
    }

    [Benchmark(Baseline = true)]
    public Task<HttpResponseMessage> Accepted() => _handler.SendAsync(_open, CancellationToken.None);

    [Benchmark]
    public bool RateLimitedConcurrency() => IsRefused(_handler.SendAsync(_limited, CancellationToken.None));

    [Benchmark]
    public bool RateLimitedTokenBucket() => IsRefused(_handler.SendAsync(_bucket, CancellationToken.None));

    [Benchmark]
    public bool NoAvailableEndpoint() => IsRefused(_handler.SendAsync(_down, CancellationToken.None));

    [Benchmark]
    public bool RateLimitedConcurrencyObserved() => IsRefusedObserved(_handler.SendAsync(_limited, CancellationToken.None));

    [Benchmark]
    public bool RateLimitedTokenBucketObserved() => IsRefusedObserved(_handler.SendAsync(_bucket, CancellationToken.None));

    [Benchmark]
    public bool NoAvailableEndpointObserved() => IsRefusedObserved(_handler.SendAsync(_down, CancellationToken.None));

    [Benchmark]
    public Exception NewException() => new RateLimitRejectedException("limited", retryAfter: null);

    [Benchmark]
    public bool FaultedTask() => IsRefused(Task.FromException<HttpResponseMessage>(new RateLimitRejectedException("limited", retryAfter: null)));

    [Benchmark]
    public bool FaultedTaskObserved() => IsRefusedObserved(Task.FromException<HttpResponseMessage>(new RateLimitRejectedException("limited", retryAfter: null)));

    /// <summary>The floor of the shared-refusal design: one task faulted once, observed again (what a cached refusal costs without governance).</summary>
    [Benchmark]
    public bool SharedFaultedTaskObserved() => IsRefusedObserved(SharedFaulted);

    /// <summary>The token bucket's own share of <c>RateLimitedTokenBucket</c>: its rejection (a new failed lease) and the lease's <c>RetryAfter</c>, without governance.</summary>
    [Benchmark]
    public bool TokenBucketLimiterOnly()
    {
        using var lease = _bucketLimiter.AttemptAcquire();
        if (!lease.IsAcquired && lease.TryGetMetadata(MetadataName.RetryAfter, out _))
        {
            return true;
        }

        _notRefused++;
        return false;
    }

    [Benchmark]
    public bool RateLimitedConcurrencyViaFactory() => IsRefusedObserved(_factory.SendAsync(_limited, CancellationToken.None));

    [Benchmark]
    public bool NoAvailableEndpointViaFactory() => IsRefusedObserved(_factory.SendAsync(_down, CancellationToken.None));

    private static void Require(bool condition, string message)
    {
        if (!condition)
        {
            throw new InvalidOperationException(message);
        }
    }

    private static void Refused<TException>(Task<HttpResponseMessage> task)
        where TException : Exception
    {
        Require(task.IsFaulted && task.Exception!.InnerException is TException, $"expected a task faulted with {typeof(TException).Name}, got {task.Status} {task.Exception?.InnerException?.GetType().Name}");
    }

    private bool IsRefused(Task<HttpResponseMessage> task)
    {
        if (task.IsFaulted)
        {
            return true;
        }

        _notRefused++;
        return false;
    }

    private bool IsRefusedObserved(Task<HttpResponseMessage> task)
    {
        if (task.IsFaulted)
        {
            // Marks the exception observed, as an await would, without throwing and without allocating: the awaiter's
            // GetResult with SuppressThrowing calls Task.MarkExceptionsAsHandled, which suppresses the exception
            // holder's finalizer (so no UnobservedTaskException). Reading task.Exception would do the same but
            // allocate an AggregateException (168 B) that is the benchmark's cost, not governance's. SuppressThrowing
            // is only allowed on the non-generic Task, hence the cast.
            ((Task)task).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing).GetAwaiter().GetResult();
            return true;
        }

        _notRefused++;
        return false;
    }
}
