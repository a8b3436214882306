namespace Governance.Resilience;

/// <summary>
/// Starts background work (timers, health-check loops, Polly's breaker scheduler) without the execution context of the
/// request that happened to create it, so that a long-lived loop neither keeps that request's span as its
/// <c>Activity.Current</c> nor keeps its context alive.
/// </summary>
internal static class BackgroundWork
{
    public static FlowScope SuppressFlow() => new(ExecutionContext.IsFlowSuppressed() ? null : ExecutionContext.SuppressFlow());

    /// <summary>
    /// Runs and awaits work that nobody else awaits (a service or watcher stopped in the background, a part of a stop that
    /// must not keep the others from stopping) and hands its failure to <paramref name="onFailure"/> (a log, or the
    /// failure kept for later), instead of leaving it in an unobserved task: also a failure thrown before the work's
    /// first await (a custom watcher's DisposeAsync that is not async).
    /// </summary>
    public static async Task ObserveAsync(Func<ValueTask> work, Action<Exception> onFailure)
    {
        try
        {
            await work().ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Nobody awaits this: the failure goes to onFailure.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            onFailure(ex);
        }
    }

    public readonly struct FlowScope(AsyncFlowControl? control) : IDisposable
    {
        public void Dispose() => control?.Undo();
    }
}
