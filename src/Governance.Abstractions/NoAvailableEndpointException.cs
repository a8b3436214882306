namespace Governance;

/// <summary>
/// Thrown without any network I/O when a governed service has no endpoint that can take the call: discovery returned
/// none, or every endpoint is excluded. Catch it to fail over or degrade; it is never retried against the same service.
/// </summary>
public sealed class NoAvailableEndpointException : GovernanceException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="serviceName">Logical service that has no usable endpoint.</param>
    /// <param name="reason">Why no endpoint is usable, appended to the message.</param>
    public NoAvailableEndpointException(string serviceName, string reason)
        : base(serviceName, message: null)
    {
        Reason = reason;
    }

    /// <summary>Gets why no endpoint is usable.</summary>
    public string Reason { get; }

    /// <summary>Gets the message, which names the service and the reason (built on first use: refusal is a hot path).</summary>
    public override string Message => _message ??= $"Service '{ServiceName}' has no available endpoint: {Reason}";

    private string? _message;
}
