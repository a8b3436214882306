namespace Governance;

/// <summary>
/// Thrown when a governed service has no endpoint that can take the call: discovery returned none, or every endpoint is
/// excluded. Nothing is sent for the attempt it refuses (earlier attempts of the call may have been, when every endpoint
/// left during the call). Catch it to fail over or degrade; it is never retried against the same service.
/// </summary>
/// <remarks>
/// A call refused before any attempt is answered with an already faulted task, without throwing, and for speed the
/// calls refused while the service's endpoints stay the same share one instance of this exception (and one faulted
/// task); a new one is made when the endpoints change, so <see cref="Reason"/> is always the current one. Concurrent
/// callers that await it rethrow the same instance, as they would when sharing any faulted <see cref="Task"/>:
/// <see cref="Exception.StackTrace"/> may then show another caller's frames, and anything added to
/// <see cref="Exception.Data"/> is seen by the other callers. A call that fails because every endpoint it tried turned
/// it away gets an instance of its own.
/// </remarks>
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
