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
        : this(0)
    {
    }

    /// <summary>
    /// Holds <paramref name="port"/>, e.g. the port of a server the test has just stopped: connections to it keep being
    /// refused, and no other test's server can be given it while the test still sends there. <c>ReuseAddress</c> lets
    /// the bind succeed while the stopped server's closed connections linger on the port.
    /// </summary>
    public RefusingEndpoint(int port)
    {
        _socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        if (port != 0)
        {
            _socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        }

        _socket.Bind(new IPEndPoint(IPAddress.Loopback, port));
        Address = new Uri($"http://127.0.0.1:{((IPEndPoint)_socket.LocalEndPoint!).Port}/");
    }

    public Uri Address { get; }

    public void Dispose() => _socket.Dispose();
}
