using Governance.Pipeline;
using Polly;

namespace Governance.Resilience;

/// <summary>
/// Per-call state of the retry phase, created only when the first attempt failed in a retryable way. Polly's retry
/// strategy decides whether and when to retry; this object supplies each attempt (a fresh load-balancing pick that
/// avoids endpoints already tried) and the budget and deadline checks of its predicate.
/// </summary>
internal sealed class RetryState
{
    private readonly GovernanceHandler _handler;
    private Outcome<HttpResponseMessage>? _first;

    /// <summary>The physical URI the latest attempt was sent with (none when nothing was sent): whether it was redirected.</summary>
    private Uri? _lastPhysical;

    public RetryState(GovernanceHandler handler, GovernedCall call, AttemptResult first)
    {
        _handler = handler;
        Call = call;
        _first = first.Outcome;
        _lastPhysical = first.Physical;
        if (first.Endpoint is not null)
        {
            Tried.Add(first.Endpoint);
        }
    }

    public GovernedCall Call { get; }

    public List<EndpointState> Tried { get; } = new(4);

    public int Attempts { get; private set; } = 1;

    /// <summary>Gets a value indicating whether a retry was refused because the service's retry budget was spent.</summary>
    public bool BudgetExhausted { get; private set; }

    /// <summary>
    /// Runs the next attempt. Polly's first call replays the first attempt's outcome, which the handler already has:
    /// the fast path runs the first attempt without entering Polly at all, and Polly only takes over once it failed.
    /// </summary>
    public ValueTask<Outcome<HttpResponseMessage>> NextAsync(ResilienceContext context)
    {
        if (_first is { } first)
        {
            _first = null;
            return new ValueTask<Outcome<HttpResponseMessage>>(first);
        }

        Attempts++;
        return AttemptAsync(context.CancellationToken);
    }

    public bool ShouldRetry(Outcome<HttpResponseMessage> outcome, int attemptNumber)
    {
        var policy = Call.Policy;
        if (attemptNumber >= policy.Retry.MaxRetries || Call.CallerToken.IsCancellationRequested)
        {
            return false;
        }

        // An attempt that was sent (anything but an open circuit's refusal) is sent again only as the first one would be
        // (MayRetry): not after a redirect, and only an idempotent method (or RetryNonIdempotent) with a replayable body.
        // The retry phase may have begun with an open circuit's refusal, which lets any request go elsewhere once.
        var failure = AttemptClassifier.Classify(outcome, policy.Retry);
        if (!AttemptClassifier.IsRetryable(failure, policy.Retry)
            || ((failure & AttemptFailure.CircuitOpen) == 0 && (Redirects.Followed(Call, _lastPhysical) || !AttemptClassifier.MaySendAgain(Call.Request, policy.Retry))))
        {
            return false;
        }

        // A retry whose delay could land past the total timeout is not made: the caller gets the last outcome instead.
        // With the service's timeouts off there is no total, but a Retry-After longer than HttpClient's default timeout
        // (100 s) is not waited for either: a call is no place to wait that long (and a date years ahead would overflow
        // the delay's timer).
        var remaining = policy.Timeout.Enabled ? Call.Remaining : ResilienceConstants.UnboundedCallGrace;
        var delay = ServicePolicy.RetryAfter(outcome, policy.Time) ?? MaxBackoff(policy.Retry, attemptNumber);
        if (remaining <= TimeSpan.Zero || delay >= remaining)
        {
            return false;
        }

        // Nothing was sent to an open circuit, so trying elsewhere does not count against the budget.
        if ((failure & AttemptFailure.CircuitOpen) == 0 && !policy.Budget.TryRetry())
        {
            BudgetExhausted = true;
            return false;
        }

        Call.Service.Instrumentation.RecordRetry(Call.Service, Call.Activity, AttemptClassifier.Reason(failure, outcome.Result), Attempts + 1, Telemetry.GovernanceTelemetry.Events.Retry);
        return true;
    }

    /// <summary>The longest delay Polly's backoff can choose before retry number <paramref name="attemptNumber"/> + 1.</summary>
    internal static TimeSpan MaxBackoff(RetrySettings retry, int attemptNumber)
    {
        var factor = retry.Backoff switch
        {
            Polly.DelayBackoffType.Linear => attemptNumber + 1.0,
            Polly.DelayBackoffType.Exponential => Math.Pow(2, Math.Min(attemptNumber, 30)),
            _ => 1.0,
        };

        // Jitter can stretch a delay; bound it generously, then by MaxDelay, which Polly always honours.
        var ticks = retry.BaseDelay.Ticks * factor * (retry.Jitter ? 2 : 1);
        return ticks >= retry.MaxDelay.Ticks ? retry.MaxDelay : TimeSpan.FromTicks((long)ticks);
    }

    private async ValueTask<Outcome<HttpResponseMessage>> AttemptAsync(CancellationToken cancellationToken)
    {
        // The request is sent again: the trace context written for the previous attempt's HttpClient span goes, so that
        // this attempt gets its own (the socket handler writes it only when absent, and removes it itself only when it
        // follows redirects).
        Telemetry.GovernanceInstrumentation.ForgetPreviousAttemptsTraceContext(Call.Request);
        var result = await _handler.AttemptAsync(Call, Tried, Attempts, cancellationToken).ConfigureAwait(false);
        _lastPhysical = result.Physical;
        if (result.Endpoint is not null)
        {
            Tried.Add(result.Endpoint);
        }

        return result.Outcome;
    }
}
