namespace Governance.Discovery.Consul;

/// <summary>Defaults and fixed tunings of the Consul integration (documented in README, section Consul).</summary>
internal static class ConsulConstants
{
    /// <summary>The <c>X-Consul-Token</c> request header that carries the ACL token.</summary>
    public const string TokenHeader = "X-Consul-Token";

    /// <summary>The response header of blocking endpoints that carries the index (matched case-insensitively).</summary>
    public const string IndexHeader = "X-Consul-Index";

    /// <summary>The endpoint metadata key that becomes <see cref="ServiceEndpoint.Zone"/>.</summary>
    public const string ZoneMetadataKey = "zone";

    /// <summary>The endpoint metadata key whose value <c>true</c> selects https (Steeltoe's convention).</summary>
    public const string SecureMetadataKey = "secure";

    public static readonly TimeSpan DefaultWaitTime = TimeSpan.FromMinutes(5);

    public static readonly TimeSpan MaxWaitTime = TimeSpan.FromMinutes(10);

    public static readonly TimeSpan MinWaitTime = TimeSpan.FromSeconds(1);

    public static readonly TimeSpan DefaultInitialResolutionTimeout = TimeSpan.FromSeconds(10);

    /// <summary>The timeout of requests that do not block (first query, registration, heartbeats, deregistration).</summary>
    public static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(10);

    /// <summary>Added to <c>wait + wait/16</c> for the timeout of a blocking query.</summary>
    public static readonly TimeSpan BlockingTimeoutMargin = TimeSpan.FromSeconds(5);

    /// <summary>Queries that may follow each other at once before the rate limit applies (Consul's advice: a token bucket with a burst of 2).</summary>
    public const int QueryBurst = 2;

    /// <summary>The sustained rate of queries of one service when answers keep changing: one per this interval.</summary>
    public static readonly TimeSpan QueryInterval = TimeSpan.FromSeconds(2);

    /// <summary>The delay after the first failure; it doubles with each failure in a row, with jitter, up to <see cref="MaxBackoff"/>.</summary>
    public static readonly TimeSpan BaseBackoff = TimeSpan.FromSeconds(1);

    public static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(30);

    /// <summary>How often an instance registered with an HTTP check (or none) asks its agent whether it still knows it.</summary>
    public static readonly TimeSpan RegistrationVerifyInterval = TimeSpan.FromSeconds(30);

    /// <summary>The longest a graceful shutdown waits for deregistration.</summary>
    public static readonly TimeSpan DeregistrationTimeout = TimeSpan.FromSeconds(5);

    /// <summary>
    /// The delay before retry number <paramref name="failures"/> (1 for the first): exponential from
    /// <see cref="BaseBackoff"/>, capped at <see cref="MaxBackoff"/>, randomized between half and all of it so that
    /// many clients do not retry in step.
    /// </summary>
    public static TimeSpan Backoff(int failures)
    {
        var exponent = Math.Clamp(failures - 1, 0, 16);
        var ceiling = Math.Min(BaseBackoff.Ticks * (1L << exponent), MaxBackoff.Ticks);
        return TimeSpan.FromTicks((ceiling / 2) + (long)(Random.Shared.NextDouble() * (ceiling / 2)));
    }

    /// <summary>Formats a duration the way Consul (Go's <c>time.ParseDuration</c>) reads it: <c>10s</c>, <c>1500ms</c>.</summary>
    public static string GoDuration(TimeSpan value)
    {
        var milliseconds = (long)value.TotalMilliseconds;
        return milliseconds % 1000 == 0
            ? (milliseconds / 1000).ToString(System.Globalization.CultureInfo.InvariantCulture) + "s"
            : milliseconds.ToString(System.Globalization.CultureInfo.InvariantCulture) + "ms";
    }
}
