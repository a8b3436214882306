using System.Collections.Concurrent;
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Governance.Tests.Infrastructure;

/// <summary>
/// A real Kestrel server on 127.0.0.1 with an ephemeral port. By default it answers 200 with its own name in the body
/// and the <c>x-server</c> header, and counts the requests it received; a custom handler models faults (status codes,
/// delays, held requests).
/// </summary>
public sealed class LoopbackServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private int _requests;

    private LoopbackServer(WebApplication app, string name)
    {
        _app = app;
        Name = name;
    }

    public string Name { get; }

    public Uri Address { get; private set; } = null!;

    public int Port => Address.Port;

    public int RequestCount => Volatile.Read(ref _requests);

    /// <summary>Gets the requests as received: method, path and query, headers.</summary>
    public ConcurrentQueue<ReceivedRequest> Received { get; } = new();

    public static Task<LoopbackServer> StartAsync(string name, Func<HttpContext, Task>? handler = null) =>
        StartAsync(name, handler, record: false);

    public static Task<LoopbackServer> StartAsync(string name, Func<HttpContext, Task>? handler, bool record) =>
        StartAsync(name, handler, record, Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols.Http1AndHttp2);

    /// <summary>A server that speaks HTTP/2 only: in clear text (h2c), as gRPC servers without TLS do.</summary>
    public static Task<LoopbackServer> StartHttp2OnlyAsync(string name, Func<HttpContext, Task>? handler = null) =>
        StartAsync(name, handler, record: false, Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols.Http2);

    private static async Task<LoopbackServer> StartAsync(string name, Func<HttpContext, Task>? handler, bool record, Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols protocols)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(o => o.Listen(IPAddress.Loopback, 0, l => l.Protocols = protocols));
        var app = builder.Build();
        var server = new LoopbackServer(app, name);
        app.Run(async context =>
        {
            Interlocked.Increment(ref server._requests);
            if (record)
            {
                server.Received.Enqueue(new ReceivedRequest(
                    context.Request.Method,
                    context.Request.Path + context.Request.QueryString,
                    context.Request.Headers.ToDictionary(h => h.Key, h => h.Value.ToString(), StringComparer.OrdinalIgnoreCase),
                    await new StreamReader(context.Request.Body).ReadToEndAsync(context.RequestAborted)));
            }

            context.Response.Headers["x-server"] = name;
            if (handler is not null)
            {
                await handler(context);
            }
            else
            {
                await context.Response.WriteAsync(name, context.RequestAborted);
            }
        });
        await app.StartAsync().WaitAsync(TimeSpan.FromSeconds(30));
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        server.Address = new Uri(address);
        return server;
    }

    public Task StopAsync() => _app.StopAsync().WaitAsync(TimeSpan.FromSeconds(30));

    public async ValueTask DisposeAsync()
    {
        try
        {
            await StopAsync();
        }
        catch (ObjectDisposedException)
        {
        }

        await _app.DisposeAsync();
    }
}

public sealed record ReceivedRequest(string Method, string PathAndQuery, IReadOnlyDictionary<string, string> Headers, string Body);
