namespace Governance;

/// <summary>
/// Thrown when the client-side rate limit of a service (<c>RateLimit</c>) rejects a call. The call never left the
/// process: no endpoint was picked and nothing was sent. Back off for <see cref="RetryAfter"/> when it is known.
/// </summary>
/// <remarks>
/// <para>
/// The retry-after hint is kept as a due time on a <see cref="TimeProvider"/>, not as a fixed delay:
/// <see cref="RetryAfter"/> is the time left until then, computed when it is read, and never negative. So the same
/// instance stays correct however late it is read.
/// </para>
/// <para>
/// Governance answers a rejected call with an already faulted task without throwing, and for speed it shares one
/// instance of this exception (and one faulted task) among the calls that its rate limit rejects for the same reason:
/// per service configuration, one instance for rejections without a hint, and one per due time for rejections with a
/// hint (replaced once that time has passed or when the limiter expects a permit sooner). Concurrent callers that
/// await such a task rethrow the same instance, as they would when sharing any faulted <see cref="Task"/> or a
/// <see cref="Lazy{T}"/> whose factory failed: <see cref="Exception.StackTrace"/> may then show another caller's
/// frames, and anything added to <see cref="Exception.Data"/> is seen by the other callers. Do not rely on either for
/// a rejected call.
/// </para>
/// </remarks>
public sealed class RateLimitRejectedException : GovernanceException
{
    private readonly TimeSpan? _retryAfter;
    private readonly TimeProvider? _time;
    private readonly long _rejectedAt;
    private string? _message;

    /// <summary>Creates the exception, with a retry-after hint measured from now on <see cref="TimeProvider.System"/>.</summary>
    /// <param name="serviceName">Logical service whose limit rejected the call.</param>
    /// <param name="retryAfter">When a permit is expected, from now, if the limiter can tell; a negative value counts as zero.</param>
    public RateLimitRejectedException(string serviceName, TimeSpan? retryAfter)
        : this(serviceName, retryAfter, TimeProvider.System)
    {
    }

    /// <summary>Creates the exception, with a retry-after hint measured from now on <paramref name="timeProvider"/>.</summary>
    /// <param name="serviceName">Logical service whose limit rejected the call.</param>
    /// <param name="retryAfter">When a permit is expected, from now, if the limiter can tell; a negative value counts as zero.</param>
    /// <param name="timeProvider">Clock on which <see cref="RetryAfter"/> counts down (the service's clock).</param>
    public RateLimitRejectedException(string serviceName, TimeSpan? retryAfter, TimeProvider timeProvider)
        : base(serviceName, message: null)
    {
        ArgumentNullException.ThrowIfNull(timeProvider);
        if (retryAfter is { } delay)
        {
            _retryAfter = delay < TimeSpan.Zero ? TimeSpan.Zero : delay;
            _time = timeProvider;
            _rejectedAt = timeProvider.GetTimestamp();
        }
    }

    /// <summary>
    /// Gets how long from now until the limiter expected a permit to be available, or <see langword="null"/> when it
    /// gave no estimate (the concurrency and sliding-window limiters never do). Computed when read: it decreases as time passes, down to
    /// <see cref="TimeSpan.Zero"/>, never below.
    /// </summary>
    public TimeSpan? RetryAfter
    {
        get
        {
            if (_retryAfter is not { } delay)
            {
                return null;
            }

            var left = delay - _time!.GetElapsedTime(_rejectedAt);
            return left > TimeSpan.Zero ? left : TimeSpan.Zero;
        }
    }

    /// <summary>
    /// Gets the message, which names the service and, when there is one, the retry-after hint as of the moment it is
    /// read (so it changes as time passes; without a hint it is built once, on first use: rejection is a hot path).
    /// </summary>
    public override string Message => RetryAfter is { } delay
        ? $"Service '{ServiceName}' rejected the call: its client-side rate limit is exhausted; retry after {delay}."
        : _message ??= $"Service '{ServiceName}' rejected the call: its client-side rate limit is exhausted.";
}
