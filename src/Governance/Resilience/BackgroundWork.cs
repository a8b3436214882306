namespace Governance.Resilience;

/// <summary>
/// Starts background work (timers, health-check loops, Polly's breaker scheduler) without the execution context of the
/// request that happened to create it, so that a long-lived loop neither keeps that request's span as its
/// <c>Activity.Current</c> nor keeps its context alive.
/// </summary>
internal static class BackgroundWork
{
    public static FlowScope SuppressFlow() => new(ExecutionContext.IsFlowSuppressed() ? null : ExecutionContext.SuppressFlow());

    public readonly struct FlowScope(AsyncFlowControl? control) : IDisposable
    {
        public void Dispose() => control?.Undo();
    }
}
