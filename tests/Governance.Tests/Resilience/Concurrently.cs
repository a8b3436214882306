namespace Governance.Tests.Resilience;

/// <summary>Runs an action on several dedicated threads released together, so that they really overlap.</summary>
internal static class Concurrently
{
    private static readonly TimeSpan Guard = TimeSpan.FromSeconds(30);

    /// <summary>Runs <paramref name="body"/> (given the thread's number) on <paramref name="threads"/> threads at once and waits for all.</summary>
    public static void Run(int threads, Action<int> body)
    {
        using var start = new Barrier(threads);
        var errors = new Exception?[threads];
        var workers = new Thread[threads];
        for (var t = 0; t < threads; t++)
        {
            var number = t;
            workers[t] = new Thread(() =>
            {
                try
                {
                    // Without every thread at the barrier they would not overlap: fail instead of running one after another.
                    Assert.True(start.SignalAndWait(Guard), $"thread {number}: not all {threads} threads reached the start within {Guard}");
                    body(number);
                }
                catch (Exception ex)
                {
                    errors[number] = ex;
                }
            })
            { IsBackground = true };
            workers[t].Start();
        }

        foreach (var worker in workers)
        {
            Assert.True(worker.Join(Guard), $"a worker thread did not finish within {Guard}");
        }

        foreach (var error in errors)
        {
            if (error is not null)
            {
                throw new AggregateException(error);
            }
        }
    }
}
