namespace Governance.Discovery.Consul;

/// <summary>
/// A Consul request that failed: unreachable agent, timeout, error status or unreadable answer. The message names the
/// agent, the operation and the cause, never the ACL token. Internal: callers of governed requests never see it.
/// </summary>
internal sealed class ConsulApiException : Exception
{
    public ConsulApiException()
    {
    }

    public ConsulApiException(string message)
        : base(message)
    {
    }

    public ConsulApiException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }

    public ConsulApiException(string message, int? statusCode, Exception? innerException = null)
        : base(message, innerException)
    {
        StatusCode = statusCode;
    }

    /// <summary>Gets the HTTP status Consul answered with, or <see langword="null"/> when there was no answer.</summary>
    public int? StatusCode { get; }
}
