using Governance.Pipeline;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Governance.Tests.Configuration;

/// <summary>Validation messages of the resilience keys, pinned word for word, and their defaults.</summary>
public sealed class ResilienceValidationTests
{
    private const string Service = "MeshGovernance:Services:catalog";

    private static List<string> Validate(Dictionary<string, string?> settings)
    {
        settings[$"{Service}:Endpoints:0"] = "http://127.0.0.1:5001";
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(new ConfigurationBuilder().AddInMemoryCollection(settings).Build());
        services.AddMeshGovernance();
        using var provider = services.BuildServiceProvider();
        return Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<GovernanceRuntime>()).Failures.ToList();
    }

    private static List<string> TryValidate(Dictionary<string, string?> settings)
    {
        settings[$"{Service}:Endpoints:0"] = "http://127.0.0.1:5001";
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(new ConfigurationBuilder().AddInMemoryCollection(settings).Build());
        services.AddMeshGovernance();
        using var provider = services.BuildServiceProvider();
        try
        {
            provider.GetRequiredService<GovernanceRuntime>();
            return [];
        }
        catch (OptionsValidationException ex)
        {
            return ex.Failures.ToList();
        }
    }

    private static List<string> ValidateWithoutService(Dictionary<string, string?> settings)
    {
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(new ConfigurationBuilder().AddInMemoryCollection(settings).Build());
        services.AddMeshGovernance();
        using var provider = services.BuildServiceProvider();
        return Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<GovernanceRuntime>()).Failures.ToList();
    }

    [Fact]
    public void Validate_RangeErrorAndConflictInOneSection_BothReportedAtOnce()
    {
        var failures = Validate(new()
        {
            ["MeshGovernance:Services:catalog:RateLimit:QueueLimit"] = "-1",
            ["MeshGovernance:Services:catalog:Timeout:Total"] = "00:00:01",
            ["MeshGovernance:Services:catalog:Timeout:PerAttempt"] = "00:00:05",
            ["MeshGovernance:Defaults:Retry:BaseDelay"] = "2.00:00:00",
            ["MeshGovernance:Services:catalog:Retry:MaxDelay"] = "00:00:01",
        });

        Assert.Equal(
            [
                "MeshGovernance:Defaults:Retry:BaseDelay '2.00:00:00' must be between 00:00:00 and 1.00:00:00",
                "MeshGovernance:Services:catalog:RateLimit:QueueLimit '-1' must be 0 or more",
                "MeshGovernance:Services:catalog:Timeout:PerAttempt '00:00:05' must not exceed MeshGovernance:Services:catalog:Timeout:Total '00:00:01'",
            ],
            failures.Order(StringComparer.Ordinal));
    }

    [Theory]
    [InlineData("Retry:RetryOn:0", "200", "Retry:RetryOn:0 '200' is not a retry condition (5xx, gateway-error, connect-failure, reset, timeout, retriable-4xx, or a status code 400-599)")]
    [InlineData("Retry:MaxRetries", "11", "Retry:MaxRetries '11' must be between 0 and 10")]
    [InlineData("Retry:Backoff", "Fibonacci", "Retry:Backoff 'Fibonacci' is not a known backoff (Constant, Linear, Exponential)")]
    [InlineData("Retry:BaseDelay", "-00:00:01", "Retry:BaseDelay '-00:00:01' must be between 00:00:00 and 1.00:00:00")]
    [InlineData("Retry:BaseDelay", "soon", "Retry:BaseDelay 'soon' is not a duration such as 00:00:05 (hh:mm:ss) or 00:00:00.250")]
    [InlineData("CircuitBreaker:BreakDuration", "5", "CircuitBreaker:BreakDuration '5' must give hours, minutes and seconds (hh:mm:ss, such as 00:00:05 or 00:00:00.250): as written, .NET reads it as 5.00:00:00 (days)")]
    [InlineData("HealthCheck:Interval", "00:30", "HealthCheck:Interval '00:30' must give hours, minutes and seconds (hh:mm:ss, such as 00:00:05 or 00:00:00.250): as written, .NET reads it as 00:30:00 (hours and minutes)")]
    [InlineData("CircuitBreaker:BreakDuration", "00:00:05:00", "CircuitBreaker:BreakDuration '00:00:05:00' must give hours, minutes and seconds (hh:mm:ss, such as 00:00:05, or d.hh:mm:ss for days): as written, .NET reads it as 00:05:00 (days, hours, minutes and seconds)")]
    [InlineData("Retry:Jitter", "maybe", "Retry:Jitter 'maybe' is not true or false")]
    [InlineData("Retry:RetryOn:0", "4xx", "Retry:RetryOn:0 '4xx' is not a retry condition (5xx, gateway-error, connect-failure, reset, timeout, retriable-4xx, or a status code 400-599)")]
    [InlineData("Retry:RetryOn:0", "700", "Retry:RetryOn:0 '700' is not a retry condition (5xx, gateway-error, connect-failure, reset, timeout, retriable-4xx, or a status code 400-599)")]
    [InlineData("Retry:Budget:RetryPercent", "1001", "Retry:Budget:RetryPercent '1001' must be between 0 and 1000")]
    [InlineData("Retry:Budget:MinRetriesPerSecond", "-1", "Retry:Budget:MinRetriesPerSecond '-1' must be between 0 and 100000")]
    [InlineData("Timeout:Total", "00:00:00", "Timeout:Total '00:00:00' must be between 00:00:00.0010000 and 1.00:00:00")]
    [InlineData("Timeout:Enabled", "off", "Timeout:Enabled 'off' is not true or false")]
    [InlineData("CircuitBreaker:FailureRatio", "0", "CircuitBreaker:FailureRatio '0' must be greater than 0 and at most 1")]
    [InlineData("CircuitBreaker:FailureRatio", "1.5", "CircuitBreaker:FailureRatio '1.5' must be greater than 0 and at most 1")]
    [InlineData("CircuitBreaker:MinimumThroughput", "1", "CircuitBreaker:MinimumThroughput '1' must be 2 or more")]
    [InlineData("CircuitBreaker:BreakDuration", "00:00:00.100", "CircuitBreaker:BreakDuration '00:00:00.1000000' must be between 00:00:00.5000000 and 1.00:00:00")]
    [InlineData("OutlierDetection:Consecutive5xx", "0", "OutlierDetection:Consecutive5xx '0' must be 1 or more")]
    [InlineData("OutlierDetection:MaxEjectionPercent", "101", "OutlierDetection:MaxEjectionPercent '101' must be between 0 and 100")]
    [InlineData("OutlierDetection:PanicThreshold", "-5", "OutlierDetection:PanicThreshold '-5' must be between 0 and 100")]
    [InlineData("HealthCheck:Path", "health", "HealthCheck:Path 'health' must be an absolute path such as /health")]
    [InlineData("HealthCheck:Protocol", "Http3", "HealthCheck:Protocol 'Http3' is not a known health-check protocol (Http1, Http2)")]
    [InlineData("HealthCheck:Interval", "00:00:00.010", "HealthCheck:Interval '00:00:00.0100000' must be between 00:00:00.1000000 and 1.00:00:00")]
    [InlineData("RateLimit:Algorithm", "LeakyBucket", "RateLimit:Algorithm 'LeakyBucket' is not a known rate-limit algorithm (TokenBucket, FixedWindow, SlidingWindow, Concurrency)")]
    [InlineData("RateLimit:PermitsPerSecond", "0", "RateLimit:PermitsPerSecond '0' must be 1 or more")]
    [InlineData("RateLimit:QueueLimit", "-1", "RateLimit:QueueLimit '-1' must be 0 or more")]
    [InlineData("Hedging:MaxHedgedAttempts", "0", "Hedging:MaxHedgedAttempts '0' must be between 1 and 10")]
    [InlineData("Hedging:Enabled", "yes", "Hedging:Enabled 'yes' is not true or false")]
    public void Validate_BadResilienceValue_NamesKeyValueAndRange(string key, string value, string expected)
    {
        var failures = Validate(new() { [$"{Service}:{key}"] = value });

        Assert.Equal($"{Service}:{expected}", Assert.Single(failures));
    }

    [Fact]
    public void Validate_BadValueInDefaults_NamesDefaultsKey()
    {
        var failures = Validate(new() { ["MeshGovernance:Defaults:Retry:MaxRetries"] = "-1" });

        Assert.Equal("MeshGovernance:Defaults:Retry:MaxRetries '-1' must be between 0 and 10", Assert.Single(failures));
    }

    [Fact]
    public void Validate_PerAttemptLongerThanTotalAcrossDefaults_IsRejected()
    {
        var failures = Validate(new()
        {
            ["MeshGovernance:Defaults:Timeout:Total"] = "00:00:02",
            ["MeshGovernance:Defaults:Timeout:PerAttempt"] = "00:00:01",
            [$"{Service}:Timeout:PerAttempt"] = "00:00:05",
        });

        Assert.Equal($"{Service}:Timeout:PerAttempt '00:00:05' must not exceed MeshGovernance:Defaults:Timeout:Total '00:00:02'", Assert.Single(failures));
    }

    [Fact]
    public void Validate_ConflictWithinDefaults_ReportedOnceUnderDefaults()
    {
        // Two services inherit the conflict; it is Defaults' own, so it is reported once, by its keys.
        var failures = Validate(new()
        {
            ["MeshGovernance:Defaults:Timeout:Total"] = "00:00:02",
            ["MeshGovernance:Defaults:Timeout:PerAttempt"] = "00:00:05",
            ["MeshGovernance:Services:search:Endpoints:0"] = "http://127.0.0.1:5002",
        });

        Assert.Equal("MeshGovernance:Defaults:Timeout:PerAttempt '00:00:05' must not exceed MeshGovernance:Defaults:Timeout:Total '00:00:02'", Assert.Single(failures));
    }

    [Fact]
    public void Validate_DefaultsTotalBelowBuiltInPerAttempt_NamesDefaultsAndTheBuiltInDefault()
    {
        // Every service would inherit the conflict: reported once, for Defaults, naming the built-in value it meets.
        var failures = Validate(new() { ["MeshGovernance:Defaults:Timeout:Total"] = "00:00:02" });

        Assert.Equal("MeshGovernance:Defaults:Timeout:PerAttempt (default) '00:00:10' must not exceed MeshGovernance:Defaults:Timeout:Total '00:00:02'", Assert.Single(failures));
    }

    [Fact]
    public void Validate_ConflictWithinDefaultsAndNoService_IsRejected()
    {
        var failures = ValidateWithoutService(new()
        {
            ["MeshGovernance:Defaults:Retry:MaxDelay"] = "00:00:00.010",
        });

        Assert.Equal("MeshGovernance:Defaults:Retry:MaxDelay '00:00:00.0100000' must not be shorter than MeshGovernance:Defaults:Retry:BaseDelay (default) '00:00:00.0250000'", Assert.Single(failures));
    }

    [Fact]
    public void Validate_TokenBucketTooSmallForItsRate_NamesBothKeysAndTheMinimum()
    {
        var failures = Validate(new()
        {
            [$"{Service}:RateLimit:PermitsPerSecond"] = "1000000",
            [$"{Service}:RateLimit:Burst"] = "10",
        });

        Assert.Equal(
            $"{Service}:RateLimit:Burst '10' is too small for {Service}:RateLimit:PermitsPerSecond '1000000': a token bucket refills at most once a millisecond and never above its Burst, so Burst must be at least 1000 (PermitsPerSecond / 1000, rounded up)",
            Assert.Single(failures));
    }

    [Theory]
    [InlineData("FixedWindow", "Burst", "5", "its window admits PermitsPerSecond calls a second")]
    [InlineData("SlidingWindow", "Burst", "5", "its window admits PermitsPerSecond calls a second")]
    [InlineData("Concurrency", "PermitsPerSecond", "50", "it limits the calls in flight to Burst, whatever their rate")]
    public void Validate_RateLimitKeyTheAlgorithmIgnores_IsRejected(string algorithm, string key, string value, string why)
    {
        var failures = Validate(new()
        {
            [$"{Service}:RateLimit:Algorithm"] = algorithm,
            [$"{Service}:RateLimit:{key}"] = value,
        });

        Assert.Equal($"{Service}:RateLimit:{key} '{value}' is not used by {Service}:RateLimit:Algorithm '{algorithm}': {why}; remove it", Assert.Single(failures));
    }

    [Theory]
    [InlineData("Concurrency", "PermitsPerSecond", "50", "it limits the calls in flight to Burst, whatever their rate")]
    [InlineData("FixedWindow", "Burst", "10", "its window admits PermitsPerSecond calls a second")]
    public void Validate_ServicesOwnRateLimitKeyTheInheritedAlgorithmIgnores_IsRejected(string algorithm, string key, string value, string why)
    {
        // The algorithm comes from Defaults; the service's own key is its choice, which it can remove (it was silently
        // ignored: a service asking for 50 calls a second under a Concurrency default got 100 in flight and no rate).
        var failures = Validate(new()
        {
            ["MeshGovernance:Defaults:RateLimit:Algorithm"] = algorithm,
            [$"{Service}:RateLimit:{key}"] = value,
        });

        Assert.Equal($"{Service}:RateLimit:{key} '{value}' is not used by MeshGovernance:Defaults:RateLimit:Algorithm '{algorithm}': {why}; remove it", Assert.Single(failures));
    }

    [Fact]
    public void Validate_ConflictBetweenDefaultsValuesOfAFeatureOnlyTheServiceTurnsOn_IsReported()
    {
        // Defaults leave health checks and timeouts off, so the pass over Defaults cannot check their values; the service
        // turns them on, and the conflicts of what it inherits are its pass's to report (they went into force unchecked).
        var failures = Validate(new()
        {
            ["MeshGovernance:Defaults:HealthCheck:Timeout"] = "00:00:20",
            ["MeshGovernance:Defaults:Timeout:Enabled"] = "false",
            ["MeshGovernance:Defaults:Timeout:Total"] = "00:00:05",
            [$"{Service}:HealthCheck:Path"] = "/health",
            [$"{Service}:Timeout:Enabled"] = "true",
        });

        Assert.Equal(
            [
                $"{Service}:Timeout:PerAttempt (default) '00:00:10' must not exceed MeshGovernance:Defaults:Timeout:Total '00:00:05'",
                $"MeshGovernance:Defaults:HealthCheck:Timeout '00:00:20' must not exceed {Service}:HealthCheck:Interval (default) '00:00:10'",
            ],
            failures);
    }

    [Fact]
    public void Validate_KeysOfFeaturesSwitchedOnNowhere_AreRejectedAsHavingNoEffect()
    {
        var failures = Validate(new()
        {
            [$"{Service}:Hedging:Delay"] = "00:00:00.050",
            [$"{Service}:Hedging:MaxHedgedAttempts"] = "2",
            [$"{Service}:HealthCheck:Interval"] = "00:00:05",
        });

        Assert.Equal(
            [
                $"{Service}:HealthCheck:Interval has no effect: active health checks are off unless HealthCheck:Path is set; set {Service}:HealthCheck:Path, for example to /health (an empty Path turns them off on purpose), or remove it",
                $"{Service}:Hedging:Delay, MaxHedgedAttempts have no effect: hedging is off unless Hedging:Enabled is true (the default is false); set {Service}:Hedging:Enabled to true, or remove them",
            ],
            failures.Order(StringComparer.Ordinal));
    }

    [Theory]
    [InlineData("Hedging:Enabled", "false")] // switched off on purpose: the keys are kept for later
    [InlineData("HealthCheck:Path", "")]
    public void Validate_KeysOfFeaturesSwitchedOffOnPurpose_AreAccepted(string key, string value)
    {
        var failures = TryValidate(new()
        {
            [$"{Service}:Hedging:Delay"] = "00:00:00.050",
            [$"{Service}:HealthCheck:Interval"] = "00:00:05",
            [$"{Service}:{key}"] = value,
            [key.StartsWith("Hedging", StringComparison.Ordinal) ? "MeshGovernance:Defaults:HealthCheck:Path" : "MeshGovernance:Defaults:Hedging:Enabled"] = key.StartsWith("Hedging", StringComparison.Ordinal) ? "" : "false",
        });

        Assert.Empty(failures);
    }

    [Fact]
    public void Validate_InheritedBurstUnderAWindowAlgorithm_IsAccepted()
    {
        // Defaults' Burst serves the services that use a bucket; one service's window algorithm cannot unset it.
        var failures = TryValidate(new()
        {
            ["MeshGovernance:Defaults:RateLimit:Burst"] = "50",
            [$"{Service}:RateLimit:Algorithm"] = "FixedWindow",
        });

        Assert.Empty(failures);
    }

    [Fact]
    public void Validate_TimeoutsOff_PerAttemptLongerThanTotalIsNotAnError()
    {
        // Limits that bound nothing are not checked against each other; every other key still is.
        var failures = Validate(new()
        {
            [$"{Service}:Timeout:Enabled"] = "false",
            [$"{Service}:Timeout:Total"] = "00:00:02",
            [$"{Service}:Timeout:PerAttempt"] = "00:00:05",
            [$"{Service}:Retry:MaxRetries"] = "11",
        });

        Assert.Equal($"{Service}:Retry:MaxRetries '11' must be between 0 and 10", Assert.Single(failures));
    }

    [Fact]
    public void Validate_MaxDelayShorterThanBaseDelay_IsRejected()
    {
        var failures = Validate(new()
        {
            [$"{Service}:Retry:BaseDelay"] = "00:00:01",
            [$"{Service}:Retry:MaxDelay"] = "00:00:00.500",
        });

        Assert.Equal($"{Service}:Retry:MaxDelay '00:00:00.5000000' must not be shorter than {Service}:Retry:BaseDelay '00:00:01'", Assert.Single(failures));
    }

    [Fact]
    public void Validate_HealthCheckTimeoutLongerThanInterval_IsRejected()
    {
        var failures = Validate(new()
        {
            [$"{Service}:HealthCheck:Path"] = "/health",
            [$"{Service}:HealthCheck:Interval"] = "00:00:01",
            [$"{Service}:HealthCheck:Timeout"] = "00:00:02",
        });

        Assert.Equal($"{Service}:HealthCheck:Timeout '00:00:02' must not exceed {Service}:HealthCheck:Interval '00:00:01'", Assert.Single(failures));
    }

    [Fact]
    public void Validate_UnknownResilienceKey_ListsKnownKeys()
    {
        var failures = Validate(new() { [$"{Service}:Retry:MaxRetry"] = "3" });

        Assert.Equal($"{Service}:Retry:MaxRetry is not a known setting (MaxRetries, Backoff, BaseDelay, MaxDelay, Jitter, RetryNonIdempotent, RetryOn, Budget)", Assert.Single(failures));
    }

    [Fact]
    public void Create_NothingConfigured_AppliesDocumentedDefaults()
    {
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { [$"{Service}:Endpoints:0"] = "http://127.0.0.1:5001" }).Build());
        services.AddMeshGovernance();
        using var provider = services.BuildServiceProvider();
        Assert.True(provider.GetRequiredService<GovernanceRuntime>().TryGetService("catalog", out var service));

        var r = service.Settings.Resilience;

        Assert.Equal(2, r.Retry.MaxRetries);
        Assert.Equal(Polly.DelayBackoffType.Exponential, r.Retry.Backoff);
        Assert.Equal(TimeSpan.FromMilliseconds(25), r.Retry.BaseDelay);
        Assert.Equal(TimeSpan.FromMilliseconds(250), r.Retry.MaxDelay);
        Assert.True(r.Retry.Jitter);
        Assert.False(r.Retry.RetryNonIdempotent);
        Assert.Equal(Governance.Resilience.RetryConditions.ServerError | Governance.Resilience.RetryConditions.ConnectFailure | Governance.Resilience.RetryConditions.Reset | Governance.Resilience.RetryConditions.Timeout, r.Retry.Conditions);
        Assert.Equal(20, r.Retry.BudgetPercent);
        Assert.Equal(3, r.Retry.MinRetriesPerSecond);
        Assert.Equal(new Governance.Resilience.TimeoutSettings(TimeSpan.FromSeconds(30), TimeSpan.FromSeconds(10)), r.Timeout);
        Assert.Equal(new Governance.Resilience.CircuitBreakerSettings(0.5, 20, TimeSpan.FromSeconds(30), TimeSpan.FromSeconds(5)), r.CircuitBreaker);
        Assert.Equal(new Governance.Resilience.OutlierSettings(5, 5, TimeSpan.FromSeconds(30), TimeSpan.FromMinutes(5), 10), r.Outlier);
        Assert.Equal(50, r.PanicThreshold);
        Assert.Null(r.HealthCheck);
        Assert.Null(r.RateLimit);
        Assert.Null(r.Hedging);
        Assert.NotNull(service.Policy.RetryPipeline);
        Assert.Null(service.Policy.Limiter);
    }

    [Fact]
    public void Create_RateLimitKeyInDefaults_EnablesItWithDefaultsAndServiceCanOptOut()
    {
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["MeshGovernance:Defaults:RateLimit:PermitsPerSecond"] = "50",
            [$"{Service}:Endpoints:0"] = "http://127.0.0.1:5001",
            ["MeshGovernance:Services:orders:Endpoints:0"] = "http://127.0.0.1:5002",
            ["MeshGovernance:Services:orders:RateLimit:Enabled"] = "false",
        }).Build());
        services.AddMeshGovernance();
        using var provider = services.BuildServiceProvider();
        var runtime = provider.GetRequiredService<GovernanceRuntime>();

        Assert.True(runtime.TryGetService("catalog", out var catalog));
        Assert.True(runtime.TryGetService("orders", out var orders));

        Assert.Equal(new Governance.Resilience.RateLimitSettings("TokenBucket", 50, 50, 0), catalog.Settings.Resilience.RateLimit);
        Assert.NotNull(catalog.Policy.Limiter);
        Assert.Null(orders.Settings.Resilience.RateLimit);
    }
}
