using Governance.Pipeline;
using Governance.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace Governance.Tests.Resilience;

/// <summary>The attempt loop under faults: a server stopped mid-traffic, and callers that cancel.</summary>
public sealed class GovernanceHandlerTests(ITestOutputHelper output)
{
    [Fact]
    public async Task SendAsync_EndpointStoppedWhileRequestsFlow_NoFailedCalls()
    {
        var time = new ObservedTimeProvider();
        var counter = new AttemptCounter();
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        var servedThirty = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var servedByCSoFar = 0;
        await using var c = await LoopbackServer.StartAsync("c", context =>
        {
            if (Interlocked.Increment(ref servedByCSoFar) >= 30)
            {
                servedThirty.TrySetResult();
            }

            return context.Response.WriteAsync("c", context.RequestAborted);
        });
        await using var governed = Faults.Create(Faults.Settings(a, b, c), time, attempts: counter);
        var cState = Faults.State(governed, c);

        // 4 calls in flight; "c" is stopped once it has served 30 of them, and traffic continues after it is gone.
        var before = Faults.SendManyAsync(governed, 600, 4);
        await Task.WhenAny(servedThirty.Task, before).WaitAsync(Faults.BatchGuard);
        await c.StopAsync();

        // Traffic still goes to c's port until c is ejected: hold the port (bound, not listening) so that no other
        // test's server is given it meanwhile and receives those requests.
        using var heldPort = new RefusingEndpoint(c.Port);
        var servedByC = c.RequestCount;
        var after = await Faults.SendManyAsync(governed, 300, 4);
        var results = (await before).Concat(after).ToArray();

        var attemptsToC = counter.ByAuthority.GetValueOrDefault(cState.Authority);
        var failedAtC = attemptsToC - c.RequestCount;
        output.WriteLine($"{results.Length} GETs: {Faults.Describe(results)}; attempts {counter.Attempts} ({counter.Attempts - results.Length} retries)");
        output.WriteLine($"c served {servedByC} before it stopped; {failedAtC} attempts to it failed afterwards (connection refused or reset) and were retried; c conditions: {cState.Conditions}");

        Assert.All(results, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.True(failedAtC >= 1, "no attempt hit the stopped endpoint: the test did not exercise the fault");
        Assert.True(Faults.Has(cState, EndpointConditions.Ejected), $"the stopped endpoint was not ejected: {cState.Conditions}");
    }

    [Fact]
    public async Task SendAsync_PrimaryHandlerConnectTimeout_RetriedElsewhereAndCountedAsConnectFailure()
    {
        // SocketsHttpHandler.ConnectTimeout gives up on an endpoint that never accepts (blackholed): it reports a
        // cancellation (inner TimeoutException) that neither the caller nor governance caused. It is a connect failure:
        // retried on the other endpoint and counted by outlier detection (not the caller's cancellation, nor a timeout of
        // the call).
        await using var blackholed = await LoopbackServer.StartAsync("blackholed");
        await using var good = await LoopbackServer.StartAsync("good");
        var connects = 0;
        var settings = Faults.Settings(blackholed, good)
            .With("LoadBalancer:Policy", "RoundRobin")
            .With("CircuitBreaker:Enabled", false)
            .With("OutlierDetection:Consecutive5xx", 2);
        await using var governed = Governed.Create(settings, services => services.ConfigureHttpClientDefaults(b => b.ConfigurePrimaryHttpMessageHandler(() => new SocketsHttpHandler
        {
            ConnectTimeout = TimeSpan.FromMilliseconds(200),
            ConnectCallback = async (context, cancellationToken) =>
            {
                if (context.DnsEndPoint.Port == blackholed.Port)
                {
                    Interlocked.Increment(ref connects);
                    await Task.Delay(Timeout.Infinite, cancellationToken);
                }

                var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    await socket.ConnectAsync(context.DnsEndPoint, cancellationToken);
                    return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        })));
        var state = Faults.State(governed, blackholed);

        var results = await Faults.SendSequentialAsync(governed, 6);
        output.WriteLine($"{Faults.Describe(results)}; connects to the blackholed endpoint: {connects}; its conditions: {state.Conditions}");

        Assert.All(results, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(6, good.RequestCount);
        Assert.Equal(2, Volatile.Read(ref connects));
        Assert.True(Faults.Has(state, EndpointConditions.Ejected), $"not ejected after two connect timeouts: {state.Conditions}");
    }

    [Fact]
    public async Task SendAsync_HandlerCancelsOnItsOwnWithTimeLeft_CancellationSurfacesAsIsNotAsTheTotalTimeout()
    {
        // A handler below governance cancels the attempt by itself (no caller, no governance deadline, no inner timeout):
        // the call ends with that cancellation, not with a CallTimeoutException that claims the 30 s total ran out.
        await using var server = await LoopbackServer.StartAsync("a");
        await using var governed = Governed.Create(Faults.Settings(server), services => services.ConfigureHttpClientDefaults(b => b.ConfigurePrimaryHttpMessageHandler(
            () => new CancelingHandler { InnerHandler = new SocketsHttpHandler() })));

        var ex = await Assert.ThrowsAnyAsync<OperationCanceledException>(() => governed.Client.GetAsync(Faults.Url).WaitAsync(Faults.Guard));

        output.WriteLine(ex.ToString());
        Assert.Equal(CancelingHandler.Message, ex.Message);
        Assert.Equal(0, server.RequestCount);
    }

    private sealed class CancelingHandler : DelegatingHandler
    {
        public const string Message = "cancelled by a handler on its own";

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) =>
            Task.FromException<HttpResponseMessage>(new OperationCanceledException(Message));
    }

    [Fact]
    public async Task SendAsync_EndpointAbortsConnections_GetsRetriedElsewhereAndEndpointEjected()
    {
        // "cut" reads each request and drops the connection without an answer: a reset, retried for idempotent calls.
        var counter = new AttemptCounter();
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        await using var cut = await LoopbackServer.StartAsync("cut", context =>
        {
            context.Abort();
            return Task.CompletedTask;
        });
        await using var governed = Faults.Create(Faults.Settings(a, b, cut), new ObservedTimeProvider(), attempts: counter);
        var cutState = Faults.State(governed, cut);

        var results = await Faults.SendManyAsync(governed, 300, 4);
        output.WriteLine($"300 GETs with one endpoint aborting every connection: {Faults.Describe(results)}; attempts {counter.Attempts}; cut received {cut.RequestCount} requests (the socket handler may resend once on a reused connection); cut conditions: {cutState.Conditions}");

        Assert.All(results, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.True(cut.RequestCount > 0, "no request reached the aborting endpoint");
        Assert.True(Faults.Has(cutState, EndpointConditions.Ejected), $"the aborting endpoint was not ejected: {cutState.Conditions}");
    }

    [Fact]
    public async Task SendAsync_PostToEndpointThatAbortsConnection_NotRetriedAndSurfacesServiceName()
    {
        // A reset after the request was sent: the POST may have been processed, so it is not sent again.
        await using var cut = await LoopbackServer.StartAsync("cut", context =>
        {
            context.Abort();
            return Task.CompletedTask;
        }, record: true);
        await using var other = await LoopbackServer.StartAsync("other", context =>
        {
            context.Abort();
            return Task.CompletedTask;
        }, record: true);
        await using var governed = Faults.Create(Faults.Settings(cut, other), new ObservedTimeProvider());

        var ex = await Assert.ThrowsAsync<HttpRequestException>(() => governed.Client.PostAsync(Faults.Url, new StringContent("order-1")).WaitAsync(Faults.Guard));
        output.WriteLine($"POST to an aborting endpoint: {ex.Message} (HttpRequestError {ex.HttpRequestError}); received cut={cut.RequestCount} other={other.RequestCount}");

        Assert.Contains($"Service '{Faults.Service}': 1 attempt failed", ex.Message, StringComparison.Ordinal);
        Assert.Equal(1, cut.Received.Count + other.Received.Count);
    }

    [Fact]
    public async Task SendAsync_CallerCancelsDuringAttempt_ThrowsOperationCanceledWithoutRetryOrEjection()
    {
        var held = new HeldRequests();
        var counter = new AttemptCounter();
        await using var h1 = await LoopbackServer.StartAsync("h1", held.Handle);
        await using var h2 = await LoopbackServer.StartAsync("h2", held.Handle);
        try
        {
            // A single failure would eject an endpoint, and a single timeout would be retried: neither may happen.
            var settings = Faults.Settings(h1, h2)
                .With("OutlierDetection:Consecutive5xx", 1)
                .With("OutlierDetection:ConsecutiveGatewayFailure", 1)
                .With("OutlierDetection:MaxEjectionPercent", 100);
            await using var governed = Faults.Create(settings, new ObservedTimeProvider(), attempts: counter);
            using var cancellation = new CancellationTokenSource();

            var call = governed.Client.GetAsync(Faults.Url, cancellation.Token);
            await held.WaitForArrivalAsync();
            await cancellation.CancelAsync();
            var ex = await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call.WaitAsync(Faults.Guard));
            output.WriteLine($"caller cancelled: {ex.GetType().Name}: {ex.Message}; attempts {counter.Attempts}");

            AssertNoGovernanceException(ex);
            Assert.Equal(1, counter.Attempts);
            Assert.Equal(1, held.Count);
            Assert.All(Faults.Runtime(governed).Endpoints.All, s => Assert.Equal(EndpointConditions.None, s.Conditions));
        }
        finally
        {
            held.Release();
        }
    }

    [Fact]
    public async Task SendAsync_CallerCancelsDuringRetryDelay_ThrowsOperationCanceledWithoutRetry()
    {
        var retryAfter = TimeSpan.FromSeconds(4);
        var time = new ObservedTimeProvider();
        await using var s1 = await Faults.StartStatusAsync("s1", 503, "4");
        await using var s2 = await Faults.StartStatusAsync("s2", 503, "4");
        await using var governed = Faults.Create(Faults.Settings(s1, s2), time);
        using var cancellation = new CancellationTokenSource();

        var call = governed.Client.GetAsync(Faults.Url, cancellation.Token);
        await time.WaitForTimersAsync(retryAfter, 1).WaitAsync(Faults.Guard);
        await cancellation.CancelAsync();
        var ex = await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call.WaitAsync(Faults.Guard));
        output.WriteLine($"caller cancelled while waiting {retryAfter} to retry: {ex.GetType().Name}: {ex.Message}");

        AssertNoGovernanceException(ex);

        // The cancelled retry delay never fires (timer callbacks run inside Advance, so this is certain at once): no
        // retry can follow. A request it sent would arrive only after this check.
        time.Advance(retryAfter);
        Assert.Equal(0, time.TimersFired(retryAfter));
        Assert.Equal(1, s1.RequestCount + s2.RequestCount);
    }

    [Fact]
    public async Task SendAsync_CallQueuedByRateLimiter_TotalTimeoutStartsWhenPermitGranted()
    {
        // The handler runs the rate limit outside the total timeout (GovernanceHandler's stage list, README "How a
        // governed call runs"), so time spent waiting for a permit must not be taken from Timeout:Total.
        // Concurrency limit 1 with a queue of 1, on a fake clock: call 1 holds the permit for 6 s; call 2 waits for it,
        // then reaches a server that answers after 5 s. With a 10 s total timeout counted from the permit, call 2
        // succeeds (it needs 5 s); counted from before the queue, it has 4 s left and fails.
        var total = TimeSpan.FromSeconds(10);
        var queued = TimeSpan.FromSeconds(6);
        var answerAfter = TimeSpan.FromSeconds(5);
        var time = new ObservedTimeProvider();
        var releaseFirst = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var arrivals = new SemaphoreSlim(0);
        var requests = 0;
        async Task Handler(HttpContext context)
        {
            if (Interlocked.Increment(ref requests) == 1)
            {
                arrivals.Release();
                await releaseFirst.Task.WaitAsync(context.RequestAborted);
                return;
            }

            var answer = Task.Delay(answerAfter, time, context.RequestAborted);
            arrivals.Release();
            await answer;
        }

        await using var server = await LoopbackServer.StartAsync("s", Handler);
        try
        {
            var settings = Faults.Settings(server)
                .With("Retry:MaxRetries", 0)
                .With("Timeout:Total", total)
                .With("Timeout:PerAttempt", total)
                .OnePermitOneWaiting();
            await using var governed = Faults.Create(settings, time);

            var first = Faults.TryGetAsync(governed);
            Assert.True(await arrivals.WaitAsync(Faults.Guard), "call 1 did not arrive");
            var second = Faults.TryGetAsync(governed);
            time.Advance(queued);
            Assert.Equal(1, Volatile.Read(ref requests));
            releaseFirst.TrySetResult();
            Assert.True((await first.WaitAsync(Faults.Guard)).Succeeded);
            Assert.True(await arrivals.WaitAsync(Faults.Guard), "call 2 did not arrive after call 1 released the permit");

            time.Advance(answerAfter);
            var result = await second.WaitAsync(Faults.Guard);
            output.WriteLine($"call 2 queued {queued}, then its server answered after {answerAfter} (Total {total}): {(result.Error is { } e ? $"{e.GetType().Name}: {e.Message}" : $"{result.Status}")}");

            Assert.True(result.Succeeded, $"call 2 failed although it was sent {answerAfter} before its answer and Total is {total}: {result.Error?.Message}");
        }
        finally
        {
            releaseFirst.TrySetResult();
        }
    }

    private static void AssertNoGovernanceException(Exception ex)
    {
        for (Exception? e = ex; e is not null; e = e.InnerException)
        {
            Assert.False(e is GovernanceException, $"caller cancellation surfaced as {e.GetType().Name}: {e.Message}");
        }
    }
}
