namespace Governance.Pipeline;

/// <summary>
/// The answer to every call that governance refuses for one reason: one exception and one task already faulted with
/// it, shared by those calls until the reason changes. A refusal then costs no allocation and no exception per call.
/// </summary>
/// <remarks>
/// Sharing one faulted task among many awaiters is what a shared <see cref="Task"/> or a failed <see cref="Lazy{T}"/>
/// does: each awaiter rethrows the same exception instance with <c>ExceptionDispatchInfo</c>, which the runtime
/// supports from several threads at once (dotnet/runtime#45929, fixed in .NET 6); the price is that the instance's
/// stack trace may show another awaiter's frames (dotnet/runtime#32009) and that its <see cref="Exception.Data"/> is
/// shared. Only exceptions that carry no per-call data are shared this way, and telemetry still records every call.
/// A cached task that nobody ever awaits raises <see cref="TaskScheduler.UnobservedTaskException"/> once, when it is
/// collected after being replaced, instead of once per refused call; the first awaiter marks it observed for good.
/// </remarks>
internal sealed class RefusedCall
{
    public RefusedCall(GovernanceException error, object? owner = null, long dueAt = 0, long granted = 0)
    {
        Error = error;
        Owner = owner;
        DueAt = dueAt;
        Granted = granted;
        Task = System.Threading.Tasks.Task.FromException<HttpResponseMessage>(error);
    }

    public GovernanceException Error { get; }

    /// <summary>Gets the task faulted with <see cref="Error"/>, returned to every call refused for this reason.</summary>
    public Task<HttpResponseMessage> Task { get; }

    /// <summary>Gets the state this refusal was made for (the <see cref="EndpointSet"/> of a no-endpoint refusal): a new state needs a new refusal.</summary>
    public object? Owner { get; }

    /// <summary>Gets the timestamp (on the service's clock) at which a rate limiter expected a permit, or 0 when it gave no hint.</summary>
    public long DueAt { get; }

    /// <summary>Gets how many permits the rate limiter had granted when this refusal was made (a later grant means it replenished since).</summary>
    public long Granted { get; }
}
