using System.Threading.RateLimiting;
using Governance.Resilience;

namespace Governance.RateLimiting;

/// <summary>
/// Builds a service's limiter from <see cref="RateLimitSettings"/> with System.Threading.RateLimiting. Window and bucket
/// limiters replenish on their own timer (that library has no <see cref="TimeProvider"/> hook); queued calls are served
/// oldest first.
/// </summary>
internal static class RateLimiterFactory
{
    /// <summary>The shortest replenishment period a token bucket is given (the system timer's resolution).</summary>
    private static readonly TimeSpan ShortestPeriod = TimeSpan.FromMilliseconds(1);

    public static RateLimiter Create(RateLimitSettings settings)
    {
        var second = TimeSpan.FromSeconds(1);
        return settings.Algorithm.ToUpperInvariant() switch
        {
            "FIXEDWINDOW" => new FixedWindowRateLimiter(new FixedWindowRateLimiterOptions
            {
                PermitLimit = settings.PermitsPerSecond,
                Window = second,
                QueueLimit = settings.QueueLimit,
                QueueProcessingOrder = QueueProcessingOrder.OldestFirst,
                AutoReplenishment = true,
            }),
            "SLIDINGWINDOW" => new SlidingWindowRateLimiter(new SlidingWindowRateLimiterOptions
            {
                PermitLimit = settings.PermitsPerSecond,
                Window = second,
                SegmentsPerWindow = 10,
                QueueLimit = settings.QueueLimit,
                QueueProcessingOrder = QueueProcessingOrder.OldestFirst,
                AutoReplenishment = true,
            }),
            "CONCURRENCY" => new ConcurrencyLimiter(new ConcurrencyLimiterOptions
            {
                PermitLimit = settings.Burst,
                QueueLimit = settings.QueueLimit,
                QueueProcessingOrder = QueueProcessingOrder.OldestFirst,
            }),
            _ => CreateTokenBucket(settings),
        };
    }

    /// <summary>Whether <paramref name="settings"/> describe a token bucket (the default algorithm).</summary>
    public static bool UsesBucket(RateLimitSettings settings) =>
        string.Equals(settings.Algorithm, ResilienceConstants.RateLimitAlgorithm, StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// Whether a token bucket can sustain <see cref="RateLimitSettings.PermitsPerSecond"/>: each refill adds at most
    /// <see cref="RateLimitSettings.Burst"/> tokens (System.Threading.RateLimiting caps the bucket at its size on every
    /// refill) and refills come at most once a millisecond.
    /// </summary>
    public static bool CanRefill(RateLimitSettings settings) => settings.Burst >= MinimumBurst(settings.PermitsPerSecond);

    /// <summary>The smallest bucket that sustains <paramref name="permitsPerSecond"/>: what one millisecond's refill adds.</summary>
    public static int MinimumBurst(int permitsPerSecond) => (int)Math.Ceiling(permitsPerSecond / 1000.0);

    /// <summary>
    /// A bucket of <see cref="RateLimitSettings.Burst"/> tokens refilled at <see cref="RateLimitSettings.PermitsPerSecond"/>:
    /// ten refills a second where the bucket holds a tenth of the rate, else refills of a full bucket, as often as the
    /// rate needs, since the library caps every refill at the bucket's size and larger refills would lower the rate.
    /// </summary>
    private static TokenBucketRateLimiter CreateTokenBucket(RateLimitSettings settings)
    {
        var tokensPerPeriod = Math.Clamp(settings.PermitsPerSecond / 10, 1, settings.Burst);
        var period = TimeSpan.FromSeconds(tokensPerPeriod / (double)settings.PermitsPerSecond);
        return new TokenBucketRateLimiter(new TokenBucketRateLimiterOptions
        {
            TokenLimit = settings.Burst,
            TokensPerPeriod = tokensPerPeriod,
            ReplenishmentPeriod = period < ShortestPeriod ? ShortestPeriod : period,
            QueueLimit = settings.QueueLimit,
            QueueProcessingOrder = QueueProcessingOrder.OldestFirst,
            AutoReplenishment = true,
        });
    }
}
