using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Governance.Telemetry;
using Governance.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace Governance.Tests.Pipeline;

/// <summary>
/// The unobserved call's path without an async method (<c>GovernanceHandler.Inline.cs</c>): it must keep what an async
/// method would guarantee. These tests run outside the telemetry collection, so nothing listens to governance's spans
/// and every call here takes that path.
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
        using var meters = new MeterListener
        {
            InstrumentPublished = (instrument, listener) =>
            {
                if (instrument.Meter.Name == GovernanceTelemetry.Name && instrument.Name == GovernanceTelemetry.Instruments.RequestDuration)
                {
                    listener.EnableMeasurementEvents(instrument);
                }
            },
        };
        meters.SetMeasurementEventCallback<double>((_, _, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == GovernanceTelemetry.ServiceTag && Equals(tag.Value, Service))
                {
                    seen.Enqueue(CallerValue.Value);
                }
            }
        });
        meters.Start();
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
