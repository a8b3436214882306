using System.Globalization;
using System.Text.RegularExpressions;
using Governance.LoadBalancing;
using Governance.Pipeline;
using Governance.Resilience;
using Governance.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Polly;
using Xunit.Abstractions;

namespace Governance.Tests.Resilience;

/// <summary>
/// Fault tests 1, 2 and 5 of issue 3 under each load-balancing policy (LeastRequest, the default, left unset) and the
/// library's default retry backoff (exponential with jitter, <c>BaseDelay</c> 25 ms, <c>MaxDelay</c> 250 ms), unlike
/// <see cref="Faults.Settings(Uri[])"/>'s RoundRobin without delays. Only the issue's bounds are asserted, since the
/// counts of LeastRequest and Random are not exact. Retry delays run on the fake clock: while the requests flow, the
/// clock jumps to each pending delay no longer than <c>MaxDelay</c> (so an ejection timer is never reached), and moves
/// at no other time.
/// </summary>
public sealed partial class DefaultPolicyFaultTests(ITestOutputHelper output)
{
    private const int Concurrency = 8;

    [Theory]
    [InlineData(LoadBalancingPolicyNames.RoundRobin)]
    [InlineData(LoadBalancingPolicyNames.LeastRequest)]
    [InlineData(LoadBalancingPolicyNames.Random)]
    public async Task OneOfThreeEndpointsAlways503_DefaultBackoff_AtLeast999PerMilleSucceedAndItIsEjected(string policy)
    {
        const int Requests = 2000;
        var time = new ObservedTimeProvider();
        var counter = new AttemptCounter();
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        await using var bad = await Faults.StartStatusAsync("bad", 503);
        await using var governed = Faults.Create(Settings(policy, a.Address, b.Address, bad.Address), time, attempts: counter);
        var retry = AssertDefaults(governed, policy);
        var badState = Faults.State(governed, bad);
        var started = time.GetUtcNow();

        var burst = await WithRetryDelaysOnTheClockAsync(time, retry.MaxDelay, Faults.SendManyAsync(governed, Requests, Concurrency));
        var waited = time.GetUtcNow() - started;
        var succeeded = burst.Count(r => r.Succeeded);
        var retries = counter.Attempts - Requests;
        output.WriteLine($"{policy}, default backoff: {succeeded}/{Requests} succeeded ({(double)succeeded / Requests:P2}); {Faults.Describe(burst)}");
        output.WriteLine($"server requests: a={a.RequestCount} b={b.RequestCount} bad={bad.RequestCount} (bad share {(double)bad.RequestCount / counter.Attempts:P2}); {retries} retries waited {waited.TotalMilliseconds:0.#} ms of fake time in all; bad: {badState.Conditions}");

        Assert.True(succeeded >= Requests * 0.999, $"{succeeded}/{Requests} succeeded, below 99.9%: {Faults.Describe(burst)}");
        Assert.True(Faults.Has(badState, EndpointConditions.Ejected), $"bad not ejected: {badState.Conditions}");
        Assert.True(bad.RequestCount <= 5 + Concurrency, $"bad received {bad.RequestCount} requests; ejection after 5 consecutive 503s allows at most 5 + {Concurrency} in flight");
        Assert.True(retries >= 5, $"{retries} retries: bad's five 503s before its ejection were not all retried");

        // The retries waited on the clock: the backoff really was the default one, not a zero delay.
        Assert.True(waited > TimeSpan.Zero, "no retry waited for a backoff delay");

        // While it is ejected (its 30 s are far off on the fake clock) it gets nothing, whatever the policy.
        var before = bad.RequestCount;
        var idle = await WithRetryDelaysOnTheClockAsync(time, retry.MaxDelay, Faults.SendManyAsync(governed, 300, Concurrency));
        output.WriteLine($"while ejected: 300 GETs -> {Faults.Describe(idle)}; bad received {bad.RequestCount - before}");
        Assert.All(idle, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.Equal(before, bad.RequestCount);
    }

    [Theory]
    [InlineData(LoadBalancingPolicyNames.RoundRobin)]
    [InlineData(LoadBalancingPolicyNames.LeastRequest)]
    [InlineData(LoadBalancingPolicyNames.Random)]
    public async Task OneEndpointStoppedWhileRequestsFlow_DefaultBackoff_NoFailedCalls(string policy)
    {
        var time = new ObservedTimeProvider();
        var counter = new AttemptCounter();
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        var servedThirty = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var servedByCSoFar = 0;
        await using var c = await LoopbackServer.StartAsync("c", context =>
        {
            if (Interlocked.Increment(ref servedByCSoFar) >= 30)
            {
                servedThirty.TrySetResult();
            }

            return context.Response.WriteAsync("c", context.RequestAborted);
        });
        await using var governed = Faults.Create(Settings(policy, a.Address, b.Address, c.Address), time, attempts: counter);
        var retry = AssertDefaults(governed, policy);
        var cState = Faults.State(governed, c);
        var servedByC = 0;
        RefusingEndpoint? heldPort = null;

        // 4 calls in flight; "c" is stopped once it has served 30 of them, its port is then held by a socket that does
        // not listen (so no other test's server can get it while traffic still goes there), and traffic goes on.
        async Task<CallResult[]> TrafficAsync()
        {
            var before = Faults.SendManyAsync(governed, 600, 4);
            await Task.WhenAny(servedThirty.Task, before).WaitAsync(Faults.BatchGuard);
            await c.StopAsync();
            heldPort = new RefusingEndpoint(c.Port);
            servedByC = c.RequestCount;
            var after = await Faults.SendManyAsync(governed, 300, 4);
            return [.. await before, .. after];
        }

        CallResult[] results;
        try
        {
            results = await WithRetryDelaysOnTheClockAsync(time, retry.MaxDelay, TrafficAsync());
        }
        finally
        {
            heldPort?.Dispose();
        }

        var attemptsToC = counter.ByAuthority.GetValueOrDefault(cState.Authority);
        var failedAtC = attemptsToC - c.RequestCount;
        output.WriteLine($"{policy}, default backoff: {results.Length} GETs: {Faults.Describe(results)}; attempts {counter.Attempts} ({counter.Attempts - results.Length} retries)");
        output.WriteLine($"c served {servedByC} before it stopped; {failedAtC} attempts to it failed afterwards (connection refused or reset) and were retried; c conditions: {cState.Conditions}");

        Assert.All(results, r => Assert.True(r.Succeeded, r.ToString()));
        Assert.True(failedAtC >= 1, "no attempt hit the stopped endpoint: the test did not exercise the fault");
        Assert.True(Faults.Has(cState, EndpointConditions.Ejected), $"the stopped endpoint was not ejected: {cState.Conditions}");
    }

    /// <summary>
    /// Fault test 5 with the default backoff. As in <see cref="RetryBudgetTests"/>, breaker and ejection are off (every
    /// attempt reaches a refusing port) and <c>MinRetriesPerSecond</c> is 0, so that the budget's bound is exact while its
    /// ten-second window does not move: at most ceil(20% x 300) = 60 retries, plus fewer than the calls in flight.
    /// </summary>
    [Theory]
    [InlineData(LoadBalancingPolicyNames.RoundRobin)]
    [InlineData(LoadBalancingPolicyNames.LeastRequest)]
    [InlineData(LoadBalancingPolicyNames.Random)]
    public async Task AllEndpointsRefuseConnections_DefaultBackoff_AttemptsWithinBudgetAndErrorNamesService(string policy)
    {
        const int Requests = 300;
        const int InFlight = 4;
        var time = new ObservedTimeProvider();
        var counter = new AttemptCounter();
        using var r1 = new RefusingEndpoint();
        using var r2 = new RefusingEndpoint();
        var settings = Settings(policy, r1.Address, r2.Address)
            .With("CircuitBreaker:Enabled", false)
            .With("OutlierDetection:Enabled", false)
            .With("Retry:Budget:MinRetriesPerSecond", 0);
        await using var governed = Faults.Create(settings, time, attempts: counter);
        var retry = AssertDefaults(governed, policy);
        var maxRetries = (int)Math.Ceiling(Requests * retry.BudgetPercent / 100);
        var started = time.GetUtcNow();

        var results = await WithRetryDelaysOnTheClockAsync(time, retry.MaxDelay, Faults.SendManyAsync(governed, Requests, InFlight));
        var waited = time.GetUtcNow() - started;
        var errors = results.Select(r => Assert.IsType<HttpRequestException>(r.Error)).ToArray();
        var perCall = errors.Select(e => int.Parse(AttemptsFailed().Match(e.Message).Groups[1].Value, CultureInfo.InvariantCulture)).ToArray();
        var attempts = counter.Attempts;
        var bound = Requests + maxRetries + InFlight;
        output.WriteLine($"{policy}, default backoff: {Requests} GETs to refusing ports: {attempts} attempts ({attempts - Requests} retries; budget bound {bound}, without a budget up to {Requests * (1 + retry.MaxRetries)}); attempts per call: {string.Join(", ", perCall.GroupBy(n => n).OrderBy(g => g.Key).Select(g => $"{g.Key} x{g.Count()}"))}; retries waited {waited.TotalMilliseconds:0.#} ms of fake time in all");
        output.WriteLine($"last error: {errors[^1].Message}");

        Assert.All(errors, e => Assert.Contains($"Service '{Faults.Service}'", e.Message, StringComparison.Ordinal));
        Assert.All(perCall, n => Assert.InRange(n, 1, 1 + retry.MaxRetries));
        Assert.Equal(attempts, perCall.Sum());
        Assert.True(attempts <= bound, $"{attempts} attempts exceed the budget bound {bound}");
        Assert.True(attempts >= Requests + maxRetries - InFlight, $"{attempts} attempts: the budget of {maxRetries} retries was not used");

        // The premise of the exact bound: the budget's window (ten one-second buckets) held every request and retry.
        // Default delays are at most ~35 ms before a first retry and ~71 ms before a second, so well under 9 s in all.
        Assert.True(waited > TimeSpan.Zero, "no retry waited for a backoff delay");
        Assert.True(waited < TimeSpan.FromSeconds(9), $"retries waited {waited} of fake time: the budget's window may have moved");
    }

    /// <summary>
    /// The service's settings with only endpoints and, unless it is the default (LeastRequest), the policy: every retry
    /// key keeps its default.
    /// </summary>
    private static Dictionary<string, string?> Settings(string policy, params Uri[] endpoints)
    {
        var settings = new Dictionary<string, string?>();
        if (policy != LoadBalancingPolicyNames.LeastRequest)
        {
            settings[$"Services:{Faults.Service}:LoadBalancer:Policy"] = policy;
        }

        for (var i = 0; i < endpoints.Length; i++)
        {
            settings[$"Services:{Faults.Service}:Endpoints:{i}"] = endpoints[i].ToString();
        }

        return settings;
    }

    /// <summary>Checks that the service runs <paramref name="policy"/> and the default backoff; returns its retry settings.</summary>
    private static RetrySettings AssertDefaults(Governed governed, string policy)
    {
        var settings = Faults.Runtime(governed).Settings;
        Assert.Equal(policy, settings.Policy.Name);
        var retry = settings.Resilience.Retry;
        Assert.Equal((DelayBackoffType.Exponential, ResilienceConstants.BaseDelay, ResilienceConstants.MaxDelay, true), (retry.Backoff, retry.BaseDelay, retry.MaxDelay, retry.Jitter));
        return retry;
    }

    /// <summary>
    /// Awaits <paramref name="work"/> while moving the fake clock to each pending delay due within
    /// <paramref name="maxRetryDelay"/> (a retry's backoff), as soon as one is pending. Longer timers (an ejection's
    /// <c>BaseEjectionTime</c>, the timeouts) are left alone, and the clock moves at no other time.
    /// </summary>
    private static async Task<T> WithRetryDelaysOnTheClockAsync<T>(ObservedTimeProvider time, TimeSpan maxRetryDelay, Task<T> work)
    {
        while (!work.IsCompleted)
        {
            await Task.WhenAny(work, time.WaitForDelayAsync(maxRetryDelay)).WaitAsync(Faults.BatchGuard);
            if (!work.IsCompleted)
            {
                time.TryAdvanceToNextDelay(maxRetryDelay);
            }
        }

        return await work;
    }

    [GeneratedRegex(@"': (\d+) attempts? failed")]
    private static partial Regex AttemptsFailed();
}
