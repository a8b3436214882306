using System.Globalization;
using Governance.RateLimiting;
using Governance.Resilience;

namespace Governance.Configuration;

/// <summary>Range and name checks of the resilience keys, and cross-field checks on a service's effective values.</summary>
internal sealed partial class GovernanceOptionsValidator
{
    private static readonly TimeSpan MinBreakerDuration = TimeSpan.FromMilliseconds(500);
    private static readonly TimeSpan MaxDuration = TimeSpan.FromDays(1);

    private static void ValidateResilience(ServiceOptions section, string path, List<string> errors)
    {
        if (section.Retry is { } retry)
        {
            var p = $"{path}:Retry";
            IntRange(retry.MaxRetries, $"{p}:MaxRetries", 0, 10, errors);
            OneOf(retry.Backoff, $"{p}:Backoff", "backoff", ResilienceConstants.BackoffNames, errors);
            Duration(retry.BaseDelay, $"{p}:BaseDelay", TimeSpan.Zero, errors);
            Duration(retry.MaxDelay, $"{p}:MaxDelay", TimeSpan.Zero, errors);
            if (retry is { BaseDelay: { } baseDelay, MaxDelay: { } maxDelay } && maxDelay < baseDelay)
            {
                errors.Add($"{p}:MaxDelay '{maxDelay}' must not be shorter than {p}:BaseDelay '{baseDelay}'");
            }

            for (var i = 0; i < retry.RetryOn.Count; i++)
            {
                var item = retry.RetryOn[i];
                var isCode = int.TryParse(item, NumberStyles.None, CultureInfo.InvariantCulture, out var code);
                if (isCode ? code is < 400 or > 599 : !Array.Exists(ResilienceConstants.RetryOnNames, n => string.Equals(n, item?.Trim(), StringComparison.OrdinalIgnoreCase)))
                {
                    errors.Add($"{p}:RetryOn:{i.ToString(CultureInfo.InvariantCulture)} '{item}' is not a retry condition ({string.Join(", ", ResilienceConstants.RetryOnNames)}, or a status code 400-599)");
                }
            }

            if (retry.Budget is { } budget)
            {
                if (budget.RetryPercent is { } percent && (percent < 0 || percent > 1000 || double.IsNaN(percent)))
                {
                    errors.Add($"{p}:Budget:RetryPercent '{percent.ToString(CultureInfo.InvariantCulture)}' must be between 0 and 1000");
                }

                IntRange(budget.MinRetriesPerSecond, $"{p}:Budget:MinRetriesPerSecond", 0, 100_000, errors);
            }
        }

        if (section.Timeout is { } timeout)
        {
            Duration(timeout.Total, $"{path}:Timeout:Total", TimeSpan.FromMilliseconds(1), errors);
            Duration(timeout.PerAttempt, $"{path}:Timeout:PerAttempt", TimeSpan.FromMilliseconds(1), errors);
        }

        if (section.CircuitBreaker is { } breaker)
        {
            var p = $"{path}:CircuitBreaker";
            if (breaker.FailureRatio is { } ratio && (ratio <= 0 || ratio > 1 || double.IsNaN(ratio)))
            {
                errors.Add($"{p}:FailureRatio '{ratio.ToString(CultureInfo.InvariantCulture)}' must be greater than 0 and at most 1");
            }

            IntRange(breaker.MinimumThroughput, $"{p}:MinimumThroughput", 2, int.MaxValue, errors);
            Duration(breaker.SamplingDuration, $"{p}:SamplingDuration", MinBreakerDuration, errors);
            Duration(breaker.BreakDuration, $"{p}:BreakDuration", MinBreakerDuration, errors);
        }

        if (section.OutlierDetection is { } outlier)
        {
            var p = $"{path}:OutlierDetection";
            IntRange(outlier.Consecutive5xx, $"{p}:Consecutive5xx", 1, int.MaxValue, errors);
            IntRange(outlier.ConsecutiveGatewayFailure, $"{p}:ConsecutiveGatewayFailure", 1, int.MaxValue, errors);
            Duration(outlier.BaseEjectionTime, $"{p}:BaseEjectionTime", TimeSpan.FromMilliseconds(1), errors);
            Duration(outlier.MaxEjectionTime, $"{p}:MaxEjectionTime", TimeSpan.FromMilliseconds(1), errors);
            IntRange(outlier.MaxEjectionPercent, $"{p}:MaxEjectionPercent", 0, 100, errors);
            IntRange(outlier.PanicThreshold, $"{p}:PanicThreshold", 0, 100, errors);
        }

        if (section.HealthCheck is { } health)
        {
            var p = $"{path}:HealthCheck";
            if (health.Path is { Length: > 0 } probe && (!probe.StartsWith('/') || !Uri.TryCreate(probe, UriKind.Relative, out _)))
            {
                errors.Add($"{p}:Path '{probe}' must be an absolute path such as /health");
            }

            Duration(health.Interval, $"{p}:Interval", TimeSpan.FromMilliseconds(100), errors);
            Duration(health.Timeout, $"{p}:Timeout", TimeSpan.FromMilliseconds(1), errors);
            IntRange(health.UnhealthyThreshold, $"{p}:UnhealthyThreshold", 1, 1000, errors);
            IntRange(health.HealthyThreshold, $"{p}:HealthyThreshold", 1, 1000, errors);
            OneOf(health.Protocol, $"{p}:Protocol", "health-check protocol", ResilienceConstants.HealthCheckProtocols, errors);
        }

        if (section.RateLimit is { } limit)
        {
            var p = $"{path}:RateLimit";
            OneOf(limit.Algorithm, $"{p}:Algorithm", "rate-limit algorithm", ResilienceConstants.RateLimitAlgorithms, errors);
            IntRange(limit.PermitsPerSecond, $"{p}:PermitsPerSecond", 1, int.MaxValue, errors);
            IntRange(limit.Burst, $"{p}:Burst", 1, int.MaxValue, errors);
            IntRange(limit.QueueLimit, $"{p}:QueueLimit", 0, int.MaxValue, errors);
        }

        if (section.Hedging is { } hedging)
        {
            Duration(hedging.Delay, $"{path}:Hedging:Delay", TimeSpan.Zero, errors);
            IntRange(hedging.MaxHedgedAttempts, $"{path}:Hedging:MaxHedgedAttempts", 1, 10, errors);
        }
    }

    /// <summary>
    /// Checks that only make sense once Defaults and the service's keys are merged. Each value is named by the key it comes
    /// from: the service's own key, else the one under Defaults, else the service's key with "(default)". A conflict
    /// between two values that both come from Defaults (or built-in defaults) is not the service's: it is reported once,
    /// by the pass over Defaults alone (<paramref name="service"/> empty, <paramref name="path"/> the Defaults path),
    /// which runs whether or not any service is configured. Runs after the range checks, so that a user sees every error
    /// at once: a conflict is left out only when one of its two values was already reported out of range.
    /// </summary>
    private static void ValidateEffective(ServiceOptions service, ServiceOptions defaults, string path, string defaultsPath, List<string> errors)
    {
        ResilienceSettings settings;
        try
        {
            settings = ResilienceSettings.Create(service, defaults);
        }
        catch (ArgumentException)
        {
            return; // An unknown name, already reported by the range checks.
        }

        var isDefaultsPass = string.Equals(path, defaultsPath, StringComparison.Ordinal);

        // Where a value comes from, and whether this pass reports a conflict between two of them.
        (string Key, bool Own) From(string key, object? own, object? fromDefaults) =>
            own is not null ? ($"{path}:{key}", true)
            : fromDefaults is not null ? ($"{defaultsPath}:{key}", isDefaultsPass)
            : ($"{path}:{key} (default)", false);

        // A value already reported out of range (by the range checks of this section or of Defaults) is not compared again.
        bool Reported(string key) => errors.Exists(e => e.StartsWith(key + " '", StringComparison.Ordinal));

        // The pass over Defaults checks a feature's conflicts only when Defaults turn the feature on; one that a service
        // turns on is checked in that service's pass even when both values come from Defaults (or built-in defaults).
        ResilienceSettings? checkedByDefaults = null;
        if (!isDefaultsPass)
        {
            try
            {
                checkedByDefaults = ResilienceSettings.Create(new ServiceOptions(), defaults);
            }
            catch (ArgumentException)
            {
                // An unknown name under Defaults, reported by its range checks.
            }
        }

        void Conflict((string Key, bool Own) a, object aValue, string relation, (string Key, bool Own) b, object bValue, string? why = null, bool onInDefaults = true)
        {
            var notCheckedInDefaults = checkedByDefaults is not null && !onInDefaults;
            if ((a.Own || b.Own || notCheckedInDefaults) && !Reported(a.Key) && !Reported(b.Key))
            {
                var message = string.Create(CultureInfo.InvariantCulture, $"{a.Key} '{aValue}' {relation} {b.Key} '{bValue}'{(why is null ? null : ": " + why)}");
                if (!errors.Contains(message))
                {
                    errors.Add(message);
                }
            }
        }

        if (settings.Timeout.Enabled && settings.Timeout.PerAttempt > settings.Timeout.Total)
        {
            Conflict(
                From("Timeout:PerAttempt", service.Timeout?.PerAttempt, defaults.Timeout?.PerAttempt), settings.Timeout.PerAttempt,
                "must not exceed",
                From("Timeout:Total", service.Timeout?.Total, defaults.Timeout?.Total), settings.Timeout.Total,
                onInDefaults: checkedByDefaults?.Timeout.Enabled ?? true);
        }

        if (settings.Retry.MaxDelay < settings.Retry.BaseDelay)
        {
            Conflict(
                From("Retry:MaxDelay", service.Retry?.MaxDelay, defaults.Retry?.MaxDelay), settings.Retry.MaxDelay,
                "must not be shorter than",
                From("Retry:BaseDelay", service.Retry?.BaseDelay, defaults.Retry?.BaseDelay), settings.Retry.BaseDelay);
        }

        if (settings.Outlier is { } outlier && outlier.MaxEjectionTime < outlier.BaseEjectionTime)
        {
            Conflict(
                From("OutlierDetection:MaxEjectionTime", service.OutlierDetection?.MaxEjectionTime, defaults.OutlierDetection?.MaxEjectionTime), outlier.MaxEjectionTime,
                "must not be shorter than",
                From("OutlierDetection:BaseEjectionTime", service.OutlierDetection?.BaseEjectionTime, defaults.OutlierDetection?.BaseEjectionTime), outlier.BaseEjectionTime,
                onInDefaults: checkedByDefaults?.Outlier is not null || checkedByDefaults is null);
        }

        if (settings.HealthCheck is { } health && health.Timeout > health.Interval)
        {
            Conflict(
                From("HealthCheck:Timeout", service.HealthCheck?.Timeout, defaults.HealthCheck?.Timeout), health.Timeout,
                "must not exceed",
                From("HealthCheck:Interval", service.HealthCheck?.Interval, defaults.HealthCheck?.Interval), health.Interval,
                onInDefaults: checkedByDefaults?.HealthCheck is not null || checkedByDefaults is null);
        }

        if (settings.RateLimit is { } used && service.RateLimit is var own && (own ?? defaults.RateLimit) is { } section)
        {
            // A key the chosen algorithm does not read, set in the same section as the algorithm. (From the service's own
            // section in a service's pass, from Defaults in the Defaults pass: an inherited key is not the service's
            // choice, and the service could not unset it.)
            var algorithm = From("RateLimit:Algorithm", own?.Algorithm, defaults.RateLimit?.Algorithm);
            var (key, value, why) = used.Algorithm.ToUpperInvariant() switch
            {
                "FIXEDWINDOW" or "SLIDINGWINDOW" => ("RateLimit:Burst", section.Burst, "its window admits PermitsPerSecond calls a second"),
                "CONCURRENCY" => ("RateLimit:PermitsPerSecond", section.PermitsPerSecond, "it limits the calls in flight to Burst, whatever their rate"),
                _ => (string.Empty, null, string.Empty),
            };
            var ownValue = key switch
            {
                "RateLimit:Burst" => own?.Burst,
                "RateLimit:PermitsPerSecond" => own?.PermitsPerSecond,
                _ => null,
            };
            if (algorithm.Own && value is { } unused)
            {
                errors.Add(string.Create(CultureInfo.InvariantCulture, $"{(own is null ? defaultsPath : path)}:{key} '{unused}' is not used by {algorithm.Key} '{used.Algorithm}': {why}; remove it"));
            }
            else if (!isDefaultsPass && ownValue is { } ownUnused)
            {
                // The service's own key under an algorithm it inherits: its own choice, which it can remove.
                errors.Add(string.Create(CultureInfo.InvariantCulture, $"{path}:{key} '{ownUnused}' is not used by {algorithm.Key} '{used.Algorithm}': {why}; remove it"));
            }
        }

        if (!isDefaultsPass)
        {
            // Keys a service sets for a feature that is off because its switch is set nowhere: the user most likely
            // expected them to turn it on (as RateLimit keys do). A switch set to off (here or in Defaults) parks them on purpose.
            if (service.Hedging is { Enabled: null } hedging && defaults.Hedging?.Enabled is null)
            {
                NoEffect(
                    $"{path}:Hedging",
                    $"hedging is off unless Hedging:Enabled is true (the default is false); set {path}:Hedging:Enabled to true",
                    [hedging.Delay is null ? null : "Delay", hedging.MaxHedgedAttempts is null ? null : "MaxHedgedAttempts"]);
            }

            if (service.HealthCheck is { Path: null } checks && defaults.HealthCheck?.Path is null)
            {
                NoEffect(
                    $"{path}:HealthCheck",
                    $"active health checks are off unless HealthCheck:Path is set; set {path}:HealthCheck:Path, for example to /health (an empty Path turns them off on purpose)",
                    [
                        checks.Interval is null ? null : "Interval",
                        checks.Timeout is null ? null : "Timeout",
                        checks.UnhealthyThreshold is null ? null : "UnhealthyThreshold",
                        checks.HealthyThreshold is null ? null : "HealthyThreshold",
                        checks.Protocol is null ? null : "Protocol",
                    ]);
            }
        }

        // Reports the keys set (the others are null) under one section that do nothing, and why.
        void NoEffect(string section, string why, ReadOnlySpan<string?> set)
        {
            var keys = new List<string>(set.Length);
            foreach (var key in set)
            {
                // A value already reported out of range is not reported again.
                if (key is not null && !Reported($"{section}:{key}"))
                {
                    keys.Add(key);
                }
            }

            if (keys.Count > 0)
            {
                errors.Add($"{section}:{string.Join(", ", keys)} {(keys.Count == 1 ? "has" : "have")} no effect: {why}, or remove {(keys.Count == 1 ? "it" : "them")}");
            }
        }

        if (settings.RateLimit is { } limit && RateLimiterFactory.UsesBucket(limit) && !RateLimiterFactory.CanRefill(limit))
        {
            // The bucket refills at most once a millisecond and never past Burst, so it could not sustain the rate.
            Conflict(
                From("RateLimit:Burst", service.RateLimit?.Burst, defaults.RateLimit?.Burst), limit.Burst,
                "is too small for",
                From("RateLimit:PermitsPerSecond", service.RateLimit?.PermitsPerSecond, defaults.RateLimit?.PermitsPerSecond), limit.PermitsPerSecond,
                string.Create(CultureInfo.InvariantCulture, $"a token bucket refills at most once a millisecond and never above its Burst, so Burst must be at least {RateLimiterFactory.MinimumBurst(limit.PermitsPerSecond)} (PermitsPerSecond / 1000, rounded up)"),
                onInDefaults: checkedByDefaults is null || (checkedByDefaults.RateLimit is { } inDefaults && RateLimiterFactory.UsesBucket(inDefaults)));
        }
    }

    private static void IntRange(int? value, string path, int min, int max, List<string> errors)
    {
        if (value is { } v && (v < min || v > max))
        {
            errors.Add(max == int.MaxValue
                ? $"{path} '{v.ToString(CultureInfo.InvariantCulture)}' must be {min.ToString(CultureInfo.InvariantCulture)} or more"
                : $"{path} '{v.ToString(CultureInfo.InvariantCulture)}' must be between {min.ToString(CultureInfo.InvariantCulture)} and {max.ToString(CultureInfo.InvariantCulture)}");
        }
    }

    private static void Duration(TimeSpan? value, string path, TimeSpan min, List<string> errors)
    {
        if (value is { } v && (v < min || v > MaxDuration))
        {
            errors.Add($"{path} '{v}' must be between {min} and {MaxDuration}");
        }
    }

    private static void OneOf(string? value, string path, string what, string[] allowed, List<string> errors)
    {
        if (value is not null && !Array.Exists(allowed, a => string.Equals(a, value.Trim(), StringComparison.OrdinalIgnoreCase)))
        {
            errors.Add($"{path} '{value}' is not a known {what} ({string.Join(", ", allowed)})");
        }
    }
}
