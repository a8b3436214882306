using System.Collections.Concurrent;
using Governance.Telemetry;
using Governance.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace Governance.Tests.Pipeline;

/// <summary>
/// The governed call without an async method (<c>GovernanceHandler.Inline.cs</c>, every call that is not hedged): it
/// must keep what an async method would guarantee. The observed variant (span current during the send, the caller's
/// context back when the handler returns) is pinned in <c>TelemetryTests</c>.
/// </summary>
public sealed class InlineCallTests(ITestOutputHelper output)
{
    private static readonly AsyncLocal<string?> CallerValue = new();

    [Fact]
    public async Task SendAsync_ResponseCompletesOnThreadWithoutCallersContext_CallEndsInCallersContext()
    {
        // The handler right under governance completes each response from a thread-pool item started with the execution
        // context's flow suppressed, so the continuation that ends the call starts without the caller's context.
        // Governance records the call's duration while it ends the call: the meter callback sees the caller's
        // AsyncLocal only if the end ran in the caller's context, as it would after an await.
        const string Service = "inline-context";
        await using var server = await LoopbackServer.StartAsync("a");
        var seen = new ConcurrentQueue<string?>();
        using var meters = ServiceMeters.Listen<double>(GovernanceTelemetry.Instruments.RequestDuration, Service, _ => seen.Enqueue(CallerValue.Value));
        await using var governed = Governed.Create(
            Governed.Service(Service, null, server),
            services => services.ConfigureHttpClientDefaults(client => client
                .RemoveAllLoggers() // the factory's inner logging handler would complete governance's task in an async method of its own
                .ConfigurePrimaryHttpMessageHandler(() => new CompletesWithoutContextHandler { InnerHandler = new SocketsHttpHandler() })));

        string[] expected = ["caller-0", "caller-1", "caller-2"];
        foreach (var value in expected)
        {
            CallerValue.Value = value;
            using var response = await governed.Client.GetAsync($"http://{Service}/");
            response.EnsureSuccessStatusCode();
        }

        output.WriteLine($"values the duration recordings saw: {string.Join(", ", seen.Select(v => v ?? "(none)"))}");
        Assert.Equal(expected, seen);
    }

    [Fact]
    public async Task SendAsync_HandlerAnswersSynchronously_ResponseReturnedAndSynchronousFailureRetriedElsewhere()
    {
        // An in-memory handler under governance that answers before returning (as a cache or a test server might): port 1
        // throws a connection failure from SendAsync itself, port 2 returns a completed task. Every call must end with
        // port 2's answer, through a retry when round robin picked port 1 first, and give the caller its URI back.
        const string Service = "inline-sync";
        var settings = new Dictionary<string, string?>
        {
            [$"Services:{Service}:LoadBalancer:Policy"] = "RoundRobin",
            [$"Services:{Service}:Endpoints:0"] = "http://127.0.0.1:1/",
            [$"Services:{Service}:Endpoints:1"] = "http://127.0.0.1:2/",
            [$"Services:{Service}:Retry:BaseDelay"] = "00:00:00",
            [$"Services:{Service}:Retry:Backoff"] = "Constant",
            [$"Services:{Service}:Retry:Jitter"] = "false",
            [$"Services:{Service}:OutlierDetection:Enabled"] = "false",
        };
        var handler = new SynchronousHandler();
        await using var governed = Governed.Create(
            settings,
            services => services.ConfigureHttpClientDefaults(client => client.RemoveAllLoggers().ConfigurePrimaryHttpMessageHandler(() => handler)));

        var answers = new List<string>();
        for (var i = 0; i < 4; i++)
        {
            var logical = new Uri($"http://{Service}/items?id={i}");
            using var request = new HttpRequestMessage(HttpMethod.Get, logical);
            using var response = await governed.Client.SendAsync(request);
            answers.Add(await response.Content.ReadAsStringAsync());
            Assert.Same(logical, request.RequestUri);
        }

        output.WriteLine($"answers: {string.Join(", ", answers)}; sends to port 1: {handler.Refused}, to port 2: {handler.Answered}");
        Assert.All(answers, (answer, i) => Assert.Equal($"127.0.0.1:2 /items?id={i}", answer));
        Assert.True(handler.Refused >= 1, "round robin never picked port 1 first: the synchronous failure was not exercised");
        Assert.Equal(4, handler.Answered);
    }

    [Fact]
    public async Task SendAsync_CallerCancelsWhileOnTheWire_CallerGetsTheCancellationThatWasThrown()
    {
        // The server holds the request until the caller cancels. The handler under governance turns the socket handler's
        // cancellation into one of its own (a message and the socket's exception inside): the caller must get that very
        // exception (HttpClient puts it inside its own, with its message, when its token is not the caller's), as through
        // an async method; a new TaskCanceledException holding only the token would lose it.
        const string Service = "inline-cancel";
        var received = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = await LoopbackServer.StartAsync("hold", async context =>
        {
            received.TrySetResult();
            await Task.Delay(Timeout.Infinite, context.RequestAborted);
        });
        var marking = new MarksCancellationHandler { InnerHandler = new SocketsHttpHandler() };
        await using var governed = Governed.Create(
            Governed.Service(Service, null, server),
            services => services.ConfigureHttpClientDefaults(client => client.RemoveAllLoggers().ConfigurePrimaryHttpMessageHandler(() => marking)));

        using var cancel = new CancellationTokenSource();
        var call = governed.Client.GetAsync($"http://{Service}/", cancel.Token);
        await received.Task.WaitAsync(TimeSpan.FromSeconds(30));
        cancel.Cancel();
        var caught = await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call.WaitAsync(TimeSpan.FromSeconds(30)));

        var thrown = Assert.Single(marking.Thrown);
        output.WriteLine($"thrown under governance: {thrown.GetType().Name} '{thrown.Message}' (inner {thrown.InnerException?.GetType().Name}); caller got: {caught.GetType().Name} '{caught.Message}' (inner {caught.InnerException?.GetType().Name})");
        Assert.Equal(cancel.Token, caught.CancellationToken);
        Assert.Equal(thrown.Message, caught.Message);
        Assert.Same(thrown, caught.InnerException);
        Assert.NotNull(thrown.InnerException);
    }

    /// <summary>Rethrows the socket handler's cancellation as its own, with a message of its own and the original inside; keeps what it threw.</summary>
    private sealed class MarksCancellationHandler : DelegatingHandler
    {
        public ConcurrentQueue<OperationCanceledException> Thrown { get; } = new();

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            try
            {
                return await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException ex)
            {
                var marked = new OperationCanceledException($"cancelled under governance ({ex.Message})", ex, ex.CancellationToken);
                Thrown.Enqueue(marked);
                throw marked;
            }
        }
    }

    /// <summary>Answers before returning: port 1 throws a connection failure from <c>SendAsync</c>, any other port returns a completed task.</summary>
    private sealed class SynchronousHandler : HttpMessageHandler
    {
        private int _refused;
        private int _answered;

        public int Refused => Volatile.Read(ref _refused);

        public int Answered => Volatile.Read(ref _answered);

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var uri = request.RequestUri!;
            if (uri.Port == 1)
            {
                Interlocked.Increment(ref _refused);
                throw new HttpRequestException(HttpRequestError.ConnectionError, "refused (synchronously)");
            }

            Interlocked.Increment(ref _answered);
            return Task.FromResult(new HttpResponseMessage(System.Net.HttpStatusCode.OK)
            {
                RequestMessage = request,
                Content = new StringContent($"{uri.Authority} {uri.PathAndQuery}"),
            });
        }
    }

    /// <summary>Completes each response from a thread-pool item that does not carry the sender's execution context.</summary>
    private sealed class CompletesWithoutContextHandler : DelegatingHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var inner = base.SendAsync(request, cancellationToken);
            var completion = new TaskCompletionSource<HttpResponseMessage>();
            using (ExecutionContext.SuppressFlow())
            {
                _ = Task.Run(async () =>
                {
                    try
                    {
                        completion.TrySetResult(await inner.ConfigureAwait(false));
                    }
                    catch (Exception ex)
                    {
                        completion.TrySetException(ex);
                    }
                }, CancellationToken.None);
            }

            return completion.Task;
        }
    }
}
