using System.Net;
using System.Net.Sockets;

namespace Governance.Tests.Infrastructure;

/// <summary>
/// A loopback port that refuses connections: a socket bound to 127.0.0.1:0 that never listens. Holding the binding
/// keeps the port from being handed to another test's server, so connections to it are refused for the whole test.
/// </summary>
public sealed class RefusingEndpoint : IDisposable
{
    private readonly Socket _socket;

    public RefusingEndpoint()
    {
        _socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        Address = new Uri($"http://127.0.0.1:{((IPEndPoint)_socket.LocalEndPoint!).Port}/");
    }

    public Uri Address { get; }

    public void Dispose() => _socket.Dispose();
}
