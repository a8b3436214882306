using Governance.Resilience;
using Governance.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;
using Xunit.Abstractions;

namespace Governance.Tests.Resilience;

/// <summary>
/// The retry budget when every endpoint fails: no retry storm. On a fake clock the 10-second window never moves, so the
/// bound is exact: <c>TryRetry</c> grants a retry while retries &lt; reserve + ratio x requests, which with
/// <c>MinRetriesPerSecond</c> 0 and <c>RetryPercent</c> 20 allows at most ceil(0.2 x 300) = 60 retries for 300 requests.
/// Its check-then-count is not atomic, so concurrent calls may overshoot by fewer than the calls in flight.
/// </summary>
public sealed class RetryBudgetTests(ITestOutputHelper output)
{
    private const int Requests = 300;
    private const int Concurrency = 4;
    private const double RetryPercent = 20;
    private static readonly int MaxBudgetedRetries = (int)Math.Ceiling(Requests * RetryPercent / 100);

    [Fact]
    public async Task TryRetry_AllEndpointsAnswer503_AttemptsStayWithinBudgetAndLast503Returned()
    {
        await using var s1 = await Faults.StartStatusAsync("s1", 503);
        await using var s2 = await Faults.StartStatusAsync("s2", 503);
        await using var s3 = await Faults.StartStatusAsync("s3", 503);
        await using var governed = Faults.Create(Settings(s1.Address, s2.Address, s3.Address), new ObservedTimeProvider());

        var results = await Faults.SendManyAsync(governed, Requests, Concurrency);
        var attempts = s1.RequestCount + s2.RequestCount + s3.RequestCount;
        var bound = Requests + MaxBudgetedRetries + Concurrency;
        output.WriteLine($"{Requests} GETs, MaxRetries 2, budget {RetryPercent}% + 0/s: {attempts} server-side attempts ({attempts - Requests} retries; budget bound {bound}, without a budget up to {Requests * 3}); {Faults.Describe(results)}");

        Assert.All(results, r => Assert.Equal(503, r.Status));
        Assert.True(attempts <= bound, $"{attempts} attempts exceed the budget bound {bound}");
        Assert.True(attempts >= Requests + MaxBudgetedRetries - Concurrency, $"{attempts} attempts: the budget of {MaxBudgetedRetries} retries was not used");
    }

    [Fact]
    public async Task TryRetry_AllEndpointsRefuseConnections_AttemptsStayWithinBudgetAndErrorNamesService()
    {
        using var r1 = new RefusingEndpoint();
        using var r2 = new RefusingEndpoint();
        var counter = new AttemptCounter();
        await using var governed = Faults.Create(Settings(r1.Address, r2.Address), new ObservedTimeProvider(), attempts: counter);

        var results = await Faults.SendManyAsync(governed, Requests, Concurrency);
        var attempts = counter.Attempts;
        var bound = Requests + MaxBudgetedRetries + Concurrency;
        var errors = results.Select(r => Assert.IsType<HttpRequestException>(r.Error)).ToArray();
        var exhausted = errors.Count(e => e.Message.Contains("(retry budget exhausted)", StringComparison.Ordinal));
        output.WriteLine($"{Requests} GETs to refusing ports: {attempts} attempts ({attempts - Requests} retries; budget bound {bound}); {exhausted} errors say the budget is exhausted");
        output.WriteLine($"first error: {errors[0].Message}");
        output.WriteLine($"last error: {errors[^1].Message}");

        Assert.True(attempts <= bound, $"{attempts} attempts exceed the budget bound {bound}");
        Assert.True(attempts >= Requests + MaxBudgetedRetries - Concurrency, $"{attempts} attempts: the budget of {MaxBudgetedRetries} retries was not used");
        Assert.All(errors, e =>
        {
            Assert.Contains($"Service '{Faults.Service}'", e.Message, StringComparison.Ordinal);
            Assert.Equal(HttpRequestError.ConnectionError, e.HttpRequestError);
        });
        Assert.True(exhausted >= Requests - MaxBudgetedRetries - Concurrency, $"only {exhausted} errors mention the exhausted budget");
    }

    [Fact]
    public void TryRetry_RequestsCountedOnManyThreadsAtOnce_GrantsExactlyTheRatio()
    {
        const int Threads = 8;
        const int PerThread = 1_000;
        var budget = new RetryBudget(new FakeTimeProvider(), RetryPercent, minRetriesPerSecond: 0);

        Concurrently.Run(Threads, _ =>
        {
            for (var i = 0; i < PerThread; i++)
            {
                budget.OnRequest();
            }
        });

        // 20% of 8,000 requests, to the retry: a request lost by the striped count would show here.
        Assert.Equal(Threads * PerThread * (int)RetryPercent / 100, Drain(budget));
    }

    [Fact]
    public void TryRetry_RequestsOlderThanTenSeconds_LeaveTheWindow()
    {
        var time = new FakeTimeProvider();
        var budget = new RetryBudget(time, RetryPercent, minRetriesPerSecond: 0);
        Request(budget, 100);
        time.Advance(TimeSpan.FromSeconds(5));
        Request(budget, 50);

        // 11 s after the first 100 (a second whose bucket no later second has reused yet), they have left the ten
        // one-second buckets; the 50 of 6 s ago remain: 10 retries.
        time.Advance(TimeSpan.FromSeconds(6));
        Assert.Equal(10, Drain(budget));

        // 5 s later the 50 have left too, the 10 retries of 5 s ago remain: 100 new requests allow 20 - 10 more.
        time.Advance(TimeSpan.FromSeconds(5));
        Assert.False(budget.TryRetry());
        Request(budget, 100);
        Assert.Equal(10, Drain(budget));
    }

    [Fact]
    public void TryRetry_NoRequests_GrantsTheReserveOfTheWindow()
    {
        var budget = new RetryBudget(new FakeTimeProvider(), RetryPercent, minRetriesPerSecond: 2);

        Assert.Equal(20, Drain(budget));
    }

    /// <summary>Takes retries until the budget refuses one; returns how many it granted.</summary>
    private static int Drain(RetryBudget budget)
    {
        var granted = 0;
        while (budget.TryRetry())
        {
            Assert.True(++granted <= 1_000_000, "the budget never refused a retry");
        }

        return granted;
    }

    private static void Request(RetryBudget budget, int requests)
    {
        for (var i = 0; i < requests; i++)
        {
            budget.OnRequest();
        }
    }

    private static Dictionary<string, string?> Settings(params Uri[] endpoints) =>
        Faults.Settings(endpoints)
            .With("CircuitBreaker:Enabled", false)
            .With("OutlierDetection:Enabled", false)
            .With("Retry:MaxRetries", 2)
            .With("Retry:RetryOn:0", "5xx")
            .With("Retry:RetryOn:1", "connect-failure")
            .With("Retry:Budget:RetryPercent", RetryPercent)
            .With("Retry:Budget:MinRetriesPerSecond", 0);
}
