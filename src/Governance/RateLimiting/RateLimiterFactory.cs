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
            _ => new TokenBucketRateLimiter(new TokenBucketRateLimiterOptions
            {
                TokenLimit = settings.Burst,
                TokensPerPeriod = Math.Max(1, settings.PermitsPerSecond / 10),
                ReplenishmentPeriod = TimeSpan.FromSeconds(Math.Max(1, settings.PermitsPerSecond / 10) / (double)settings.PermitsPerSecond),
                QueueLimit = settings.QueueLimit,
                QueueProcessingOrder = QueueProcessingOrder.OldestFirst,
                AutoReplenishment = true,
            }),
        };
    }
}
