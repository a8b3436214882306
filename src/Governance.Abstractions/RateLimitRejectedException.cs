namespace Governance;

/// <summary>
/// Thrown when the client-side rate limit of a service (<c>RateLimit</c>) rejects a call. The call never left the
/// process: no endpoint was picked and nothing was sent. Back off for <see cref="RetryAfter"/> when it is known.
/// </summary>
public sealed class RateLimitRejectedException : GovernanceException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="serviceName">Logical service whose limit rejected the call.</param>
    /// <param name="retryAfter">When a permit is expected, if the limiter can tell.</param>
    public RateLimitRejectedException(string serviceName, TimeSpan? retryAfter)
        : base(serviceName, message: null)
    {
        RetryAfter = retryAfter;
    }

    /// <summary>Gets the limiter's estimate of when a permit is available again, or <see langword="null"/> when it has none.</summary>
    public TimeSpan? RetryAfter { get; }

    /// <summary>Gets the message, which names the service and the retry-after hint (built on first use: rejection is a hot path).</summary>
    public override string Message => _message ??= RetryAfter is { } delay
        ? $"Service '{ServiceName}' rejected the call: its client-side rate limit is exhausted; retry after {delay}."
        : $"Service '{ServiceName}' rejected the call: its client-side rate limit is exhausted.";

    private string? _message;
}
