using Governance.Resilience;

namespace Governance.Pipeline;

/// <summary>What every attempt of one logical call needs, passed by value (no allocation on the fast path).</summary>
internal readonly struct GovernedCall
{
    /// <param name="service">The governed service.</param>
    /// <param name="policy">The service's policy for this call.</param>
    /// <param name="request">The caller's request.</param>
    /// <param name="logical">The caller's (logical) URI.</param>
    /// <param name="callerToken">The caller's token.</param>
    /// <param name="arrivedAt">
    /// When the call reached governance (a timestamp of the service's clock), if it waited before starting (in the rate
    /// limit's queue, or for discovery's first answer); the call starts now otherwise.
    /// </param>
    public GovernedCall(ServiceRuntime service, ServicePolicy policy, HttpRequestMessage request, Uri logical, CancellationToken callerToken, long? arrivedAt = null)
    {
        Service = service;
        Policy = policy;
        Request = request;
        Logical = logical;
        CallerToken = callerToken;
        Method = request.Method;
        StartedAt = policy.Time.GetTimestamp();
        ArrivedAt = arrivedAt ?? StartedAt;
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
        Method = call.Method;
        StartedAt = call.StartedAt;
        ArrivedAt = call.ArrivedAt;
    }

    public ServiceRuntime Service { get; }

    public ServicePolicy Policy { get; }

    public HttpRequestMessage Request { get; }

    public Uri Logical { get; }

    public CancellationToken CallerToken { get; }

    /// <summary>Gets the caller's method, as the call began: a redirect the primary handler follows may change the request's.</summary>
    public HttpMethod Method { get; }

    /// <summary>Gets when the call started (a timestamp of the service's clock): its total timeout runs from here.</summary>
    public long StartedAt { get; }

    /// <summary>
    /// Gets when the call reached governance: <see cref="StartedAt"/>, or earlier when it first waited in the rate
    /// limit's queue or for discovery's first answer. Its span and duration run from here.
    /// </summary>
    public long ArrivedAt { get; }

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

/// <summary>
/// The outcome of one attempt, the endpoint it went to and the physical URI it was sent with (none when no endpoint could
/// be picked or nothing was sent).
/// </summary>
internal readonly record struct AttemptResult(Polly.Outcome<HttpResponseMessage> Outcome, EndpointState? Endpoint, Uri? Physical = null);
