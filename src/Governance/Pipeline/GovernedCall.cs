using Governance.Resilience;

namespace Governance.Pipeline;

/// <summary>What every attempt of one logical call needs, passed by value (no allocation on the fast path).</summary>
internal readonly struct GovernedCall
{
    public GovernedCall(ServiceRuntime service, ServicePolicy policy, HttpRequestMessage request, Uri logical, CancellationToken callerToken)
    {
        Service = service;
        Policy = policy;
        Request = request;
        Logical = logical;
        CallerToken = callerToken;
        StartedAt = policy.Time.GetTimestamp();
    }

    /// <summary>Initializes a copy of <paramref name="call"/> for another request message (a hedged attempt) or with its span.</summary>
    public GovernedCall(GovernedCall call, HttpRequestMessage request, System.Diagnostics.Activity? activity)
    {
        Activity = activity;
        Service = call.Service;
        Policy = call.Policy;
        Request = request;
        Logical = call.Logical;
        CallerToken = call.CallerToken;
        StartedAt = call.StartedAt;
    }

    public ServiceRuntime Service { get; }

    public ServicePolicy Policy { get; }

    public HttpRequestMessage Request { get; }

    public Uri Logical { get; }

    public CancellationToken CallerToken { get; }

    public long StartedAt { get; }

    /// <summary>Gets the span of the logical call, or <see langword="null"/> when nobody listens.</summary>
    public System.Diagnostics.Activity? Activity { get; }

    /// <summary>Gets the time left before the total timeout.</summary>
    public TimeSpan Remaining => RemainingAt(Policy.Time.GetTimestamp());

    /// <summary>
    /// Gets the time left before the total timeout at <paramref name="now"/> (a timestamp of the service's clock);
    /// <see cref="TimeSpan.MaxValue"/> when the service's timeouts are off (<c>Timeout:Enabled false</c>).
    /// </summary>
    public TimeSpan RemainingAt(long now) => Policy.Timeout.Enabled ? Policy.Timeout.Total - Policy.Time.GetElapsedTime(StartedAt, now) : TimeSpan.MaxValue;
}

/// <summary>The outcome of one attempt and the endpoint it went to (none when no endpoint could be picked).</summary>
internal readonly record struct AttemptResult(Polly.Outcome<HttpResponseMessage> Outcome, EndpointState? Endpoint);
