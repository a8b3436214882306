namespace Governance;

/// <summary>
/// Base type of every error raised because governance refused or could not complete a call to a logical service
/// (as opposed to an error returned by the service itself). The message always names the service.
/// </summary>
public abstract class GovernanceException : Exception
{
    /// <summary>Initializes the exception.</summary>
    /// <param name="serviceName">Logical service the call was addressed to.</param>
    /// <param name="message">Message naming the service and the reason, or <see langword="null"/> when a derived type overrides <see cref="Exception.Message"/>.</param>
    /// <param name="innerException">Underlying error, if any.</param>
    protected GovernanceException(string serviceName, string? message, Exception? innerException = null)
        : base(message, innerException)
    {
        ServiceName = serviceName;
    }

    /// <summary>Gets the logical service the call was addressed to.</summary>
    public string ServiceName { get; }
}
