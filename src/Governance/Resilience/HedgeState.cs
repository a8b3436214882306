using Governance.Pipeline;
using Polly;

namespace Governance.Resilience;

/// <summary>
/// Per-call state of a hedged call (<c>Hedging:Enabled</c>, idempotent and replayable requests only). Polly's hedging
/// strategy launches the attempts; each hedged attempt sends a copy of the request (same method, headers, options and
/// body content) to an endpoint not yet tried, and the first good answer wins. Losing attempts are cancelled and their
/// responses disposed by Polly.
/// </summary>
internal sealed class HedgeState
{
    public static readonly ResiliencePropertyKey<HedgeState> Key = new("MeshGovernance.HedgeState");
    public static readonly ResiliencePropertyKey<int> AttemptKey = new("MeshGovernance.HedgeAttempt");

    private readonly GovernanceHandler _handler;
    private readonly HttpRequestMessage _template;
    private readonly List<EndpointState> _tried = new(4);
    private int _attempts;
    private int _started;

    public HedgeState(GovernanceHandler handler, GovernedCall call)
    {
        _handler = handler;
        Call = call;

        // Hedges are copies of the request as the caller wrote it, taken before the first attempt is sent: that attempt
        // sends the caller's own message, which the primary handler may change on its way (a redirect it follows drops
        // Authorization and may turn the method into GET) while the hedges are being copied.
        _template = Copy(call.Request, call.Logical);
    }

    public GovernedCall Call { get; }

    public int Attempts => Volatile.Read(ref _attempts);

    /// <summary>
    /// Whether an attempt's outcome is not yet the call's answer (Polly then waits for the other attempts, or launches the
    /// next hedge): a failure of any kind (a refused connection, no endpoint left for this hedge: another attempt may
    /// still answer, and when all fail Polly returns the last outcome), or an answer that <c>Retry:RetryOn</c> retries.
    /// Only the caller's cancellation and the end of the total timeout end the call at once.
    /// </summary>
    public static bool ShouldHedge(Outcome<HttpResponseMessage> outcome, ResilienceContext context)
    {
        var state = context.Properties.GetValue(Key, null!);
        if (state.Call.CallerToken.IsCancellationRequested)
        {
            return false;
        }

        if (outcome.Exception is not null)
        {
            // Except when the call's total timeout ran out: no attempt can answer in time, and none is launched.
            return outcome.Exception is not AttemptTimeoutException { IsTotal: true } && state.Call.Remaining > TimeSpan.Zero;
        }

        var failure = AttemptClassifier.Classify(outcome, state.Call.Policy.Retry);
        return AttemptClassifier.IsRetryable(failure, state.Call.Policy.Retry);
    }

    public async ValueTask<Outcome<HttpResponseMessage>> AttemptAsync(ResilienceContext context)
    {
        Interlocked.Increment(ref _attempts);
        var number = context.Properties.GetValue(AttemptKey, 0);
        var original = Call.Request;
        var request = number == 0 ? original : Copy(_template, Call.Logical);
        List<EndpointState> tried;
        lock (_tried)
        {
            tried = [.. _tried];
        }

        var attempt = Interlocked.Increment(ref _started);
        if (number != 0)
        {
            Call.Service.Instrumentation.RecordRetry(Call.Service, Call.Activity, "hedge", attempt, Telemetry.GovernanceTelemetry.Events.Hedge);
        }

        var call = new GovernedCall(Call, request, Call.Activity);
        var result = await _handler.AttemptAsync(call, tried, attempt, context.CancellationToken, hedge: this).ConfigureAwait(false);
        return result.Outcome;
    }

    /// <summary>
    /// Records the endpoint an attempt of this call picked, when it picks it: attempts launched while it is still in
    /// flight (the hedges) then avoid it while other candidates remain.
    /// </summary>
    public void OnPicked(EndpointState endpoint)
    {
        lock (_tried)
        {
            if (!_tried.Contains(endpoint))
            {
                _tried.Add(endpoint);
            }
        }
    }

    private static bool Contains(IReadOnlyCollection<string> names, string name)
    {
        foreach (var candidate in names)
        {
            if (string.Equals(candidate, name, StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }

        return false;
    }

    private static HttpRequestMessage Copy(HttpRequestMessage request, Uri logical)
    {
        // The body is shared: only replayable (in-memory) content is hedged, and reading it concurrently is safe.
        var copy = new HttpRequestMessage(request.Method, logical)
        {
            Version = request.Version,
            VersionPolicy = request.VersionPolicy,
            Content = request.Content,
        };
        // Trace-context headers are written by each attempt's own HttpClient span: leave them out so that each hedged
        // attempt gets its own parent id. A Cookie header is the caller's (the primary handler adds its container's
        // cookies while writing the request, never into its headers), so it is copied like any other.
        var propagated = System.Diagnostics.DistributedContextPropagator.Current.Fields;
        // Read without validation: a validating read parses and stores header values, which is not safe while another
        // thread reads them (the template is read by hedges launched at the same time).
        foreach (var header in request.Headers.NonValidated)
        {
            if (!Contains(propagated, header.Key))
            {
                copy.Headers.TryAddWithoutValidation(header.Key, header.Value);
            }
        }

        foreach (var option in request.Options)
        {
            ((IDictionary<string, object?>)copy.Options)[option.Key] = option.Value;
        }

        return copy;
    }
}
