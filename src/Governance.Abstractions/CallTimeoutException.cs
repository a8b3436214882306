namespace Governance;

/// <summary>
/// Thrown when a governed call to a service does not complete in time: its total timeout (<c>Timeout:Total</c>,
/// retries and their delays included) expired, or its last allowed attempt ran out of its attempt timeout
/// (<c>Timeout:PerAttempt</c>) with no retry left. <see cref="Timeout"/> is the length of the limit that expired (the two
/// cannot be told apart by it when they are configured equal).
/// </summary>
public sealed class CallTimeoutException : GovernanceException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="serviceName">Logical service that did not answer in time.</param>
    /// <param name="timeout">The timeout that expired.</param>
    /// <param name="attempts">Attempts made before it expired.</param>
    /// <param name="innerException">The cancellation or error of the last attempt, if any.</param>
    public CallTimeoutException(string serviceName, TimeSpan timeout, int attempts, Exception? innerException = null)
        : base(serviceName, $"Service '{serviceName}' did not answer within {timeout} ({attempts} attempt{(attempts == 1 ? string.Empty : "s")}).", innerException)
    {
        Timeout = timeout;
        Attempts = attempts;
    }

    /// <summary>Gets the timeout that expired.</summary>
    public TimeSpan Timeout { get; }

    /// <summary>Gets the number of attempts made.</summary>
    public int Attempts { get; }
}
