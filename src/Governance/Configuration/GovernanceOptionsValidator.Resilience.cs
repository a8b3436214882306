using System.Globalization;
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
                if (isCode ? code is < 100 or > 599 : !Array.Exists(ResilienceConstants.RetryOnNames, n => string.Equals(n, item?.Trim(), StringComparison.OrdinalIgnoreCase)))
                {
                    errors.Add($"{p}:RetryOn:{i.ToString(CultureInfo.InvariantCulture)} '{item}' is not a retry condition ({string.Join(", ", ResilienceConstants.RetryOnNames)}, or a status code 100-599)");
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

    /// <summary>Checks that only make sense once Defaults and the service's keys are merged.</summary>
    private static void ValidateEffective(ServiceOptions service, ServiceOptions defaults, string path, List<string> errors)
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

        if (settings.Timeout.Enabled && settings.Timeout.PerAttempt > settings.Timeout.Total)
        {
            errors.Add($"{path}:Timeout:PerAttempt '{settings.Timeout.PerAttempt}' must not exceed {path}:Timeout:Total '{settings.Timeout.Total}'");
        }

        if (settings.Retry.MaxDelay < settings.Retry.BaseDelay)
        {
            errors.Add($"{path}:Retry:MaxDelay '{settings.Retry.MaxDelay}' must not be shorter than {path}:Retry:BaseDelay '{settings.Retry.BaseDelay}'");
        }

        if (settings.Outlier is { } outlier && outlier.MaxEjectionTime < outlier.BaseEjectionTime)
        {
            errors.Add($"{path}:OutlierDetection:MaxEjectionTime '{outlier.MaxEjectionTime}' must not be shorter than {path}:OutlierDetection:BaseEjectionTime '{outlier.BaseEjectionTime}'");
        }

        if (settings.HealthCheck is { } health && health.Timeout > health.Interval)
        {
            errors.Add($"{path}:HealthCheck:Timeout '{health.Timeout}' must not exceed {path}:HealthCheck:Interval '{health.Interval}'");
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
