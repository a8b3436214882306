using Governance.Tests.Infrastructure;
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
