using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace MeshGovernance.Demo;

/// <summary>
/// One instance of the <c>catalog</c> service: a real Kestrel server on 127.0.0.1 with an ephemeral port. It answers
/// every request with its name in the body and in the <c>x-server</c> header, after <see cref="Delay"/>.
/// </summary>
internal sealed class Backend : IAsyncDisposable
{
    private readonly WebApplication _app;
    private volatile bool _failing;
    private int _served;
    private int _failed;

    private Backend(WebApplication app, string name, TimeSpan delay, Uri address)
    {
        _app = app;
        Name = name;
        Delay = delay;
        Address = address;
    }

    public string Name { get; }

    /// <summary>Gets the time the backend spends on each request (zero for a fast one).</summary>
    public TimeSpan Delay { get; }

    public Uri Address { get; }

    /// <summary>Gets or sets a value indicating whether the backend answers every request with 503 (a fault the demo injects).</summary>
    public bool Failing
    {
        get => _failing;
        set => _failing = value;
    }

    /// <summary>Gets the number of requests the backend received (answered or failed).</summary>
    public int Served => Volatile.Read(ref _served);

    /// <summary>Gets the number of requests the backend answered with 503 while <see cref="Failing"/>.</summary>
    public int Failed => Volatile.Read(ref _failed);

    public static async Task<Backend> StartAsync(string name, TimeSpan delay, CancellationToken cancellationToken)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, 0));
        var app = builder.Build();
        Backend? self = null;
        app.Run(async context =>
        {
            context.Response.Headers["x-server"] = name;
            Interlocked.Increment(ref self!._served);
            if (self._failing)
            {
                Interlocked.Increment(ref self._failed);
                context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
                return;
            }

            if (delay > TimeSpan.Zero)
            {
                // Stands in for real work (a database call, say); the demo's load balancer only sees the latency.
                await Task.Delay(delay, context.RequestAborted);
            }

            await context.Response.WriteAsync(name, context.RequestAborted);
        });

        await app.StartAsync(cancellationToken);
        var address = app.Services.GetRequiredService<IServer>().Features.GetRequiredFeature<IServerAddressesFeature>().Addresses.First();
        self = new Backend(app, name, delay, new Uri(address));
        return self;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
