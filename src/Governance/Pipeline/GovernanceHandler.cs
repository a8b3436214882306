using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using System.Threading.RateLimiting;
using Governance.Resilience;
using Governance.Telemetry;
using Polly;
using Polly.CircuitBreaker;

namespace Governance.Pipeline;

/// <summary>
/// The one <see cref="DelegatingHandler"/> MeshGovernance adds to a client. It runs every stage of a governed call
/// itself, in this order (outermost first), so that a request pays for one continuation on the socket's task
/// (GovernanceHandler.Inline.cs) instead of one async layer per concern:
/// <list type="number">
///   <item><description>routing: which service the logical host maps to (first: every stage below is per service, the
///   span's name and tags included), and for a service whose set is pending (discovery has not answered yet, or its
///   endpoints await a first health check) the wait for an endpoint;</description></item>
///   <item><description>tracing: the logical-call span and metrics, measured from when the call reached governance (the
///   waits for an endpoint and in the rate limit's queue included);</description></item>
///   <item><description>rate limit: per destination service, once per logical call, before any network work;</description></item>
///   <item><description>total timeout (<c>Timeout:Total</c>), from when the call was admitted;</description></item>
///   <item><description>retry (Polly), entered only after a first attempt failed in a retryable way;</description></item>
///   <item><description>load balancing: pick an endpoint (avoiding ones already tried), rewrite the URI, restore it after;</description></item>
///   <item><description>per-endpoint circuit breaker (Polly) and outlier accounting;</description></item>
///   <item><description>attempt timeout (<c>Timeout:PerAttempt</c>);</description></item>
///   <item><description>the primary handler (the socket).</description></item>
/// </list>
/// Requests whose host is not a governed service pass through untouched, without an async layer.
/// </summary>
internal sealed partial class GovernanceHandler : DelegatingHandler
{
    private readonly GovernanceRuntime _runtime;

    public GovernanceHandler(GovernanceRuntime runtime)
    {
        _runtime = runtime;
    }

    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var logical = request.RequestUri;
        if (logical is null || !logical.IsAbsoluteUri || !_runtime.TryGetService(logical, out var service))
        {
            return base.SendAsync(request, cancellationToken);
        }

        return SendGoverned(service, request, logical, arrivedAt: null, cancellationToken);
    }

    /// <summary>
    /// A call to a governed service, from the first stage on; <paramref name="arrivedAt"/> is when it reached governance
    /// if it already waited for discovery's first answer.
    /// </summary>
    private Task<HttpResponseMessage> SendGoverned(ServiceRuntime service, HttpRequestMessage request, Uri logical, long? arrivedAt, CancellationToken cancellationToken)
    {
        // Fail fast, before any limiter permit or async layer, when the service has no endpoint to offer; calls to a
        // service whose set is pending (discovery's first answer, or a first health check, not in yet) wait instead.
        if (service.Endpoints is { Candidates.Length: 0 } empty)
        {
            if (empty.IsPending)
            {
                return SendWhenResolvedAsync(service, request, logical, arrivedAt ?? service.Policy.Time.GetTimestamp(), cancellationToken);
            }

            // One exception and one faulted task per endpoint set, shared by the calls it refuses (RefusedCall);
            // telemetry still records each call.
            var refused = service.NoEndpointRefusal(empty);
            if (arrivedAt is { } waited)
            {
                // It waited for discovery's first answer, which had no endpoint: its span and duration include the wait.
                service.Instrumentation.RecordWaitEnded(service, service.Policy, request, waited, refused.Error);
            }
            else
            {
                service.Instrumentation.RecordRefused(service, request, refused.Error);
            }

            return refused.Task;
        }

        var policy = service.Policy;
        RateLimitLease? lease = null;
        if (policy.Limiter is { } limiter)
        {
            lease = limiter.AttemptAcquire();
            if (!lease.IsAcquired)
            {
                if (policy.Settings.RateLimit!.QueueLimit > 0)
                {
                    lease.Dispose();
                    return SendQueuedAsync(service, policy, request, logical, limiter, arrivedAt ?? policy.Time.GetTimestamp(), cancellationToken);
                }

                // Rejected before any network work, without throwing inside the pipeline.
                return arrivedAt is { } waited
                    ? Task.FromException<HttpResponseMessage>(Rejected(service, policy, request, lease, waited))
                    : Rejected(service, policy, request, lease);
            }
        }

        return SendGoverned(new GovernedCall(service, policy, request, logical, cancellationToken, arrivedAt), lease);
    }

    protected override HttpResponseMessage Send(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var logical = request.RequestUri;
        if (logical is null || !logical.IsAbsoluteUri || !_runtime.TryGetService(logical, out _))
        {
            return base.Send(request, cancellationToken);
        }

        // The synchronous API runs the same stages; it blocks this thread as HttpClient.Send does.
        return SendAsync(request, cancellationToken).GetAwaiter().GetResult();
    }

    /// <summary>
    /// One attempt: pick, rewrite, breaker, attempt timeout, send, outlier accounting. An endpoint whose circuit turns
    /// the attempt away (nothing was sent) is replaced by another candidate within the same attempt, so open circuits
    /// never spend retries and are skipped even when retries are off. The first attempt of a call whose pick has a closed
    /// circuit does not come here: <see cref="SendInline"/> runs it without an async method (the same steps)
    /// and passes the endpoint it <paramref name="picked"/> when the circuit is not closed. A hedged attempt passes its
    /// call's <paramref name="hedge"/>, which learns each endpoint as soon as it is picked (before anything is sent), so
    /// that an attempt launched while this one is in flight avoids it.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    internal async ValueTask<AttemptResult> AttemptAsync(GovernedCall call, List<EndpointState>? tried, int attemptNumber, CancellationToken outer, EndpointState? picked = null, HedgeState? hedge = null)
    {
        var exclude = tried;
        while (true)
        {
            var endpoint = picked ?? call.Service.TryPick(call.Request, exclude);
            picked = null;
            if (endpoint is null)
            {
                // The set went pending since the call started (every address replaced while health checks are on): the
                // attempt waits for an endpoint to pass its first probe, as the call's start would have, within what is
                // left of the total timeout.
                // Hedges do not wait: launched every Delay while the first attempt waits, they would all send at once.
                if (call.Service.Endpoints.IsPending && (hedge is null || attemptNumber == 1))
                {
                    var waited = await WaitForEndpointsAsync(call, outer).ConfigureAwait(false);
                    if (waited == true)
                    {
                        continue;
                    }

                    if (waited is null)
                    {
                        // The wait ran until the total timeout: that is how the call ends, whichever timer fired first.
                        return new AttemptResult(Outcome.FromException<HttpResponseMessage>(new AttemptTimeoutException(call.Policy.Timeout.Total, isTotal: true, null)), null);
                    }
                }

                return new AttemptResult(Outcome.FromException<HttpResponseMessage>(call.Service.NoEndpoint()), null);
            }

            hedge?.OnPicked(endpoint);

            var now = call.Policy.Time.GetTimestamp();
            var remaining = call.RemainingAt(now);
            if (remaining <= TimeSpan.Zero)
            {
                return new AttemptResult(Outcome.FromException<HttpResponseMessage>(new AttemptTimeoutException(call.Policy.Timeout.Total, isTotal: true, null)), null);
            }

            var breaker = endpoint.Breaker;
            var wasClosed = breaker?.IsClosed ?? true;
            var attempt = BeginAttempt(call, endpoint, now, remaining, outer);
            Outcome<HttpResponseMessage> outcome;
            bool answeredElsewhere;
            try
            {
                // Panic mode uses a level's endpoints again, those whose circuit is open included: their breaker is not
                // asked (it would turn them away), and it does not count what they answer (see RecordAsync).
                if (wasClosed || SentDespiteCircuit(call.Service.Endpoints, endpoint))
                {
                    // No breaker, or a closed one: send, then let the breaker count the outcome. Counting completes
                    // synchronously unless it trips the circuit.
                    outcome = await SendAttemptAsync(attempt).ConfigureAwait(false);
                    answeredElsewhere = Redirects.LeftEndpoint(call.Request, attempt.Physical, endpoint);
                    if (breaker is not null && !answeredElsewhere)
                    {
                        await RecordAsync(breaker, outcome, call.Activity).ConfigureAwait(false);
                    }
                }
                else
                {
                    // Open, half-open or isolated: the attempt runs inside the breaker, which rejects it or lets it
                    // through as the single half-open probe.
                    var context = ResilienceContextPool.Shared.Get(attempt.Token);
                    context.Properties.Set(EndpointBreaker.CallSpanKey, call.Activity);
                    try
                    {
                        outcome = await breaker!.Pipeline.ExecuteOutcomeAsync(static (_, s) => s.Handler.SendAttemptAsync(s), context, attempt).ConfigureAwait(false);
                    }
                    finally
                    {
                        ResilienceContextPool.Shared.Return(context);
                    }

                    answeredElsewhere = Redirects.LeftEndpoint(call.Request, attempt.Physical, endpoint);
                }
            }
            finally
            {
                EndAttempt(attempt);
            }

            if (outcome.Exception is BrokenCircuitException)
            {
                // Nothing was sent: another candidate takes the attempt while one is left that this call has not tried
                // (the tried list may hold endpoints that have left the candidates since, such as one just ejected).
                if (AnyUntried(call.Service.Endpoints.Candidates, exclude, endpoint))
                {
                    exclude = exclude is null ? [endpoint] : [.. exclude, endpoint];
                    continue;
                }
            }

            return AccountOrDispose(call, endpoint, attempt.Physical, attemptNumber, outcome, answeredElsewhere);
        }
    }

    /// <summary>
    /// The breaker counts an attempt's outcome; when code it calls back fails (a custom policy's picker rebuilt as the
    /// circuit opens, a logger), the call fails with that and the attempt's response is disposed, not left holding its
    /// connection.
    /// </summary>
    private static async ValueTask RecordAsync(EndpointBreaker breaker, Outcome<HttpResponseMessage> outcome, System.Diagnostics.Activity? span)
    {
        try
        {
            await breaker.RecordAsync(outcome, span).ConfigureAwait(false);
        }
        catch
        {
            outcome.Result?.Dispose();
            throw;
        }
    }

    /// <summary><see cref="Account"/>, disposing the attempt's response when code it calls back fails (see <see cref="RecordAsync"/>).</summary>
    private static AttemptResult AccountOrDispose(GovernedCall call, EndpointState endpoint, Uri physical, int attemptNumber, Outcome<HttpResponseMessage> outcome, bool answeredElsewhere)
    {
        try
        {
            return Account(call, endpoint, physical, attemptNumber, outcome, answeredElsewhere);
        }
        catch
        {
            outcome.Result?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Whether an endpoint whose circuit is not closed is sent to without asking its breaker: only one that is out of load
    /// balancing (its circuit open) and a candidate because its level is in panic mode. One that is back in (half-open)
    /// gets its single probe through the breaker, panic mode elsewhere or not.
    /// </summary>
    private static bool SentDespiteCircuit(EndpointSet set, EndpointState endpoint) => set.IsPanic && !endpoint.IsAvailable;

    private static bool AnyUntried(EndpointState[] candidates, List<EndpointState>? tried, EndpointState last)
    {
        foreach (var candidate in candidates)
        {
            if (!ReferenceEquals(candidate, last) && (tried is null || !tried.Contains(candidate)))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Waits until the service's pending set resolves, at most the shorter of its first-answer wait and what is left of
    /// the call's total timeout: <see langword="true"/> when it resolved, <see langword="false"/> when the first-answer
    /// wait ran out, <see langword="null"/> when the wait was the rest of the total timeout and it ran out (told by which
    /// limit was set, not by reading the clock again: timers fire a few milliseconds early or late).
    /// </summary>
    private static async ValueTask<bool?> WaitForEndpointsAsync(GovernedCall call, CancellationToken outer)
    {
        var wait = call.Service.Settings.FirstAnswerTimeout;
        var remaining = call.Remaining;
        var total = remaining <= wait;
        if (total)
        {
            wait = remaining > TimeSpan.Zero ? remaining : TimeSpan.Zero;
        }

        // A cancellation (the caller's, or the attempt's) ends the attempt as any cancellation does.
        return await call.Service.WaitUntilResolvedAsync(wait, outer).ConfigureAwait(false) ? true : total ? null : false;
    }

    /// <summary>
    /// Starts an attempt on <paramref name="endpoint"/>: arms its timeout (the per-attempt timeout, or what is left of
    /// the total one when that is shorter) and links the caller's token to it, unless the service's timeouts are off
    /// (then the attempt is sent with <paramref name="outer"/> itself); counts it in flight and rewrites the URI.
    /// Every <see cref="BeginAttempt"/> is paired with one <see cref="EndAttempt(AttemptState)"/>.
    /// </summary>
    private AttemptState BeginAttempt(GovernedCall call, EndpointState endpoint, long now, TimeSpan remaining, CancellationToken outer)
    {
        // First the only step that parses (the physical URI), so that if it ever throws nothing below is left half done:
        // no count, deadline or registration without its EndAttempt.
        var physical = endpoint.Rewrite(call.Logical);
        var (timeout, isTotal) = AttemptTimeout(call, remaining);
        TimeoutScheduler.Deadline? deadline = null;
        var token = outer;
        CancellationTokenRegistration registration = default;
        if (call.Policy.Timeout.Enabled)
        {
            deadline = call.Policy.Timeouts.Start(now, isTotal ? remaining : timeout);
            token = deadline.Source.Token;
            registration = outer.CanBeCanceled ? outer.UnsafeRegister(static s => ((CancellationTokenSource)s!).Cancel(), deadline.Source) : default;
        }

        endpoint.OnRequestStarted();
        call.Request.RequestUri = physical;
        return new AttemptState(this, call.Request, physical, deadline, registration, timeout, isTotal, endpoint, outer, token);
    }

    /// <summary>
    /// Which timeout bounds an attempt with <paramref name="remaining"/> of the total left: the total one (reported as
    /// <c>Timeout:Total</c>) when that is no longer than the per-attempt one, else the per-attempt one.
    /// </summary>
    private static (TimeSpan Timeout, bool IsTotal) AttemptTimeout(GovernedCall call, TimeSpan remaining) =>
        remaining <= call.Policy.Timeout.PerAttempt ? (call.Policy.Timeout.Total, true) : (call.Policy.Timeout.PerAttempt, false);

    private static void EndAttempt(AttemptState attempt) => EndAttempt(attempt.Endpoint, attempt.Registration, attempt.Deadline);

    private static void EndAttempt(EndpointState endpoint, CancellationTokenRegistration registration, TimeoutScheduler.Deadline? deadline)
    {
        endpoint.OnRequestEnded();
        if (deadline is not null)
        {
            // The registration goes first: once disposed, the caller's token can no longer cancel a source about to be reused.
            registration.Dispose();
            TimeoutScheduler.End(deadline);
        }
    }

    /// <summary>
    /// Counts a finished attempt (attempts metric, outlier detection unless the answer came from elsewhere: see
    /// <see cref="Redirects.LeftEndpoint"/>) and pairs its outcome with its endpoint.
    /// </summary>
    private static AttemptResult Account(GovernedCall call, EndpointState endpoint, Uri physical, int attemptNumber, Outcome<HttpResponseMessage> outcome, bool answeredElsewhere)
    {
        call.Service.Instrumentation.RecordAttempt(call.Service, endpoint, attemptNumber, outcome);
        if (!answeredElsewhere)
        {
            call.Service.RecordOutcome(endpoint, outcome);
        }

        return new AttemptResult(outcome, endpoint, physical);
    }

    private static bool MayRetry(GovernedCall call, AttemptResult attempt)
    {
        var outcome = attempt.Outcome;
        if (call.Policy.RetryPipeline is null || call.CallerToken.IsCancellationRequested)
        {
            return false;
        }

        var failure = AttemptClassifier.Classify(outcome, call.Policy.Retry);
        if (!AttemptClassifier.IsRetryable(failure, call.Policy.Retry))
        {
            return false;
        }

        // Nothing was sent to an open circuit: any request may go elsewhere, whatever its method or body.
        if ((failure & AttemptFailure.CircuitOpen) != 0)
        {
            return true;
        }

        return !Redirects.Followed(call, attempt.Physical) && AttemptClassifier.MaySendAgain(call.Request, call.Policy.Retry);
    }

    private static bool MayHedge(GovernedCall call) =>
        AttemptClassifier.IsIdempotent(call.Request.Method) && AttemptClassifier.IsReplayable(call.Request.Content);

    private async Task<HttpResponseMessage> HedgeAsync(GovernedCall call)
    {
        var state = new HedgeState(this, call);
        var outcome = await ExecuteWithinTotalAsync(call, call.Policy.HedgingPipeline!, HedgeState.Key, state, static (ctx, s) => s.AttemptAsync(ctx)).ConfigureAwait(false);
        return Complete(call, outcome, state.Attempts, budgetExhausted: false);
    }

    /// <summary>
    /// Runs a Polly phase (retry or hedging) of a call: its context carries <paramref name="state"/> and a token that
    /// fires at the call's total timeout or when the caller cancels, so Polly's delays are bounded by the total timeout too
    /// (the caller's token alone when the service's timeouts are off).
    /// </summary>
    private static async Task<Outcome<HttpResponseMessage>> ExecuteWithinTotalAsync<TState>(
        GovernedCall call,
        ResiliencePipeline<HttpResponseMessage> pipeline,
        ResiliencePropertyKey<TState> key,
        TState state,
        Func<ResilienceContext, TState, ValueTask<Outcome<HttpResponseMessage>>> callback)
    {
        TimeoutScheduler.Deadline? total = null;
        CancellationTokenRegistration registration = default;
        var token = call.CallerToken;
        if (call.Policy.Timeout.Enabled)
        {
            var now = call.Policy.Time.GetTimestamp();
            var remaining = call.RemainingAt(now);
            total = call.Policy.Timeouts.Start(now, remaining > TimeSpan.Zero ? remaining : TimeSpan.FromTicks(1));
            registration = call.CallerToken.UnsafeRegister(static s => ((CancellationTokenSource)s!).Cancel(), total.Source);
            token = total.Source.Token;
        }

        var context = ResilienceContextPool.Shared.Get(token);
        context.Properties.Set(key, state);
        try
        {
            return await pipeline.ExecuteOutcomeAsync(callback, context, state).ConfigureAwait(false);
        }
        finally
        {
            ResilienceContextPool.Shared.Return(context);
            if (total is not null)
            {
                registration.Dispose();
                TimeoutScheduler.End(total);
            }
        }
    }

    /// <summary>
    /// A call the limiter rejected at once: answered with the policy's shared faulted task (one exception per policy
    /// and retry-after due time, see <see cref="ServicePolicy.Rejection"/>), recorded in telemetry per call.
    /// </summary>
    private static Task<HttpResponseMessage> Rejected(ServiceRuntime service, ServicePolicy policy, HttpRequestMessage request, RateLimitLease lease)
    {
        TimeSpan? retryAfter = lease.TryGetMetadata(MetadataName.RetryAfter, out var delay) ? delay : null;
        lease.Dispose();
        var refused = policy.Rejection(service.Name, retryAfter, out var hint);
        service.Instrumentation.RecordRejection(service, request, hint);
        return refused.Task;
    }

    /// <summary>
    /// A queued call the limiter rejected: its own exception, since the caller's async path throws it; its span and
    /// duration include the time it queued since <paramref name="arrivedAt"/>.
    /// </summary>
    private static RateLimitRejectedException Rejected(ServiceRuntime service, ServicePolicy policy, HttpRequestMessage request, RateLimitLease lease, long arrivedAt)
    {
        TimeSpan? retryAfter = lease.TryGetMetadata(MetadataName.RetryAfter, out var delay) ? delay : null;
        lease.Dispose();
        var rejected = new RateLimitRejectedException(service.Name, retryAfter, policy.Time);
        service.Instrumentation.RecordWaitEnded(service, policy, request, arrivedAt, rejected, retryAfter);
        return rejected;
    }

    /// <summary>The call's response, or what its last outcome's failure becomes for the caller (<see cref="ThrowFailure"/>).</summary>
    private static HttpResponseMessage Complete(GovernedCall call, Outcome<HttpResponseMessage> outcome, int attempts, bool budgetExhausted) =>
        outcome.Exception is { } exception ? ThrowFailure(call, exception, attempts, budgetExhausted) : outcome.Result!;

    /// <summary>
    /// Throws what a failed call surfaces as. Never inlined: its exception messages would make every method on the success
    /// path larger (code and stack frame), and that code is what a call pays for in cache misses on a socket.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static HttpResponseMessage ThrowFailure(GovernedCall call, Exception exception, int attempts, bool budgetExhausted)
    {
        var name = call.Service.Name;
        switch (exception)
        {
            case AttemptTimeoutException timeout:
                throw new CallTimeoutException(name, timeout.IsTotal ? call.Policy.Timeout.Total : timeout.Timeout, attempts, timeout);
            case OperationCanceledException when call.Policy.Timeout.Enabled && !call.CallerToken.IsCancellationRequested && call.Remaining <= TimeSpan.Zero:
                // The total timeout's token ended the retry or hedging phase (a cancellation nobody else explains passes as is).
                throw new CallTimeoutException(name, call.Policy.Timeout.Total, attempts, exception);
            case BrokenCircuitException:
                throw new NoAvailableEndpointException(name, $"the circuit breaker of every endpoint tried is open ({attempts} attempt{(attempts == 1 ? string.Empty : "s")})");
            case HttpRequestException http:
                throw new HttpRequestException(
                    http.HttpRequestError,
                    $"Service '{name}': {attempts} attempt{(attempts == 1 ? string.Empty : "s")} failed{(budgetExhausted ? " (retry budget exhausted)" : string.Empty)}; last error: {http.Message}",
                    http,
                    http.StatusCode);
            default:
                ExceptionDispatchInfo.Throw(exception);
                return null!;
        }
    }

    private async Task<HttpResponseMessage> SendWhenResolvedAsync(ServiceRuntime service, HttpRequestMessage request, Uri logical, long arrivedAt, CancellationToken cancellationToken)
    {
        // The wait runs from the call's arrival: a call that finds the set pending again (replaced meanwhile) waits only
        // for what is left.
        var timeout = service.Settings.FirstAnswerTimeout;
        var left = timeout - service.Policy.Time.GetElapsedTime(arrivedAt);
        bool resolved;
        try
        {
            resolved = await service.WaitUntilResolvedAsync(left > TimeSpan.Zero ? left : TimeSpan.Zero, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException canceled)
        {
            service.Instrumentation.RecordWaitEnded(service, service.Policy, request, arrivedAt, canceled);
            throw;
        }

        if (!resolved)
        {
            var cause = service.DiscoveryError is { } error ? $"; its last error: {error}" : string.Empty;
            var refused = new NoAvailableEndpointException(
                service.Name,
                service.Endpoints is { AwaitsHealthChecks: true } waiting
                    ? $"{waiting.EmptyReason} (waited {timeout})"
                    : $"discovery ({service.Settings.Discovery.Name}) did not resolve the service within {timeout}{cause}");
            service.Instrumentation.RecordWaitEnded(service, service.Policy, request, arrivedAt, refused);
            throw refused;
        }

        if (service.Endpoints.IsPending)
        {
            // Pending again already (every address replaced since): go round on the thread pool (never the caller's
            // context), never deeper on this stack.
            await Task.CompletedTask.ConfigureAwait(ConfigureAwaitOptions.ForceYielding);
        }

        return await SendGoverned(service, request, logical, arrivedAt, cancellationToken).ConfigureAwait(false);
    }

    private async Task<HttpResponseMessage> SendQueuedAsync(ServiceRuntime service, ServicePolicy policy, HttpRequestMessage request, Uri logical, RateLimiter limiter, long arrivedAt, CancellationToken cancellationToken)
    {
        // The rate limit is outside the total timeout: the call's clock starts when the permit is granted.
        RateLimitLease lease;
        try
        {
            lease = await limiter.AcquireAsync(1, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException canceled)
        {
            service.Instrumentation.RecordWaitEnded(service, policy, request, arrivedAt, canceled);
            throw;
        }

        if (!lease.IsAcquired)
        {
            throw Rejected(service, policy, request, lease, arrivedAt);
        }

        return await SendGoverned(new GovernedCall(service, policy, request, logical, cancellationToken, arrivedAt), lease).ConfigureAwait(false);
    }

    /// <summary>
    /// Sends a governed call: hedged when the service hedges and the request may be sent twice (<see cref="SendHedgedAsync"/>),
    /// otherwise through <see cref="SendInline"/>, its first attempt started here and no async method on the way.
    /// </summary>
    private Task<HttpResponseMessage> SendGoverned(GovernedCall call, RateLimitLease? lease) =>
        call.Policy.HedgingPipeline is not null && MayHedge(call)
            ? SendHedgedAsync(call, lease).AsTask()
            : SendInline(call, lease);

    /// <summary>
    /// A hedged call: its span, the hedging phase (Polly) within the total timeout, the end of the call. Built with
    /// <see cref="PoolingAsyncValueTaskMethodBuilder{TResult}"/>: its state machine comes from the runtime's per-thread
    /// and per-core cache, so a hedged call allocates only the <see cref="Task"/> that <see cref="SendAsync"/> returns
    /// (and what its attempts allocate).
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<HttpResponseMessage> SendHedgedAsync(GovernedCall call, RateLimitLease? lease)
    {
        Uri? final = null;
        HttpResponseMessage? response = null;
        var answered = false;
        try
        {
            // The span starts here, inside the async method, so that Activity.Current changes stay inside this call, and
            // inside the try, so that a listener that throws as it starts still gets the permit given back.
            if (GovernanceInstrumentation.StartCall(call.Service, call.Request, call.ArrivedAt, call.Policy.SpanClock) is { } activity)
            {
                call = new GovernedCall(call, call.Request, activity);
            }

            // Hedged attempts share the request's content: its length, computed lazily and stored in its headers on first
            // read, is computed here once, before two attempts could read (and store) it at the same time.
            _ = call.Request.Content?.Headers.ContentLength;
            call.Policy.Budget.OnRequest(call.StartedAt);
            response = await HedgeAsync(call).ConfigureAwait(false);
            if (response.RequestMessage is { } sent && !ReferenceEquals(sent, call.Request))
            {
                // A hedge's copy answered: the caller sees the request it sent, with where the copy ended.
                final = sent.RequestUri;
                response.RequestMessage = call.Request;
            }

            answered = true;
        }
        catch (Exception ex) when (EndCall(call, null, ex))
        {
            // Not reached: the filter records the failure and lets the exception continue unchanged.
            throw;
        }
        finally
        {
            call.Request.RequestUri = Redirects.CallersUri(call, final ?? call.Request.RequestUri);
            if (!answered)
            {
                // Failed: the filter above ended its span; the permit goes back now.
                lease?.Dispose();
            }
        }

        // Outside the try: a listener that throws as the call ends fails the call once (not recorded again by the filter)
        // and the response it would have returned is disposed. As on the inline path (Succeed), the span ends before the
        // permit goes back, so that a concurrency limit never admits a call while a finished one is still being recorded.
        if (!TryEndCall(call, response, null, out var telemetryFailure))
        {
            lease?.Dispose();
            response.Dispose();
            ExceptionDispatchInfo.Throw(telemetryFailure);
        }

        lease?.Dispose();
        return response;
    }

    /// <summary>Ends the call's span and records its duration; returns <see langword="false"/> so that it can serve as an exception filter.</summary>
    private static bool EndCall(GovernedCall call, HttpResponseMessage? response, Exception? error)
    {
        var instrumentation = call.Service.Instrumentation;
        if (call.Activity is not null || instrumentation.RequestDuration.Enabled)
        {
            instrumentation.EndCall(call.Activity, call.Service, call.Request, call.ArrivedAt, call.Policy.Time, call.Policy.SpanClock, response, error);
        }

        return false;
    }

    /// <summary>The retry phase: Polly decides whether and when; the total timeout bounds its delays too.</summary>
    private async Task<HttpResponseMessage> RetryAsync(GovernedCall call, AttemptResult first)
    {
        var state = new RetryState(this, call, first);
        var outcome = await ExecuteWithinTotalAsync(call, call.Policy.RetryPipeline!, ServicePolicy.RetryStateKey, state, static (ctx, s) => s.NextAsync(ctx)).ConfigureAwait(false);
        return Complete(call, outcome, state.Attempts, state.BudgetExhausted);
    }

    /// <summary>
    /// The send of an attempt made by <see cref="AttemptAsync"/> (retries, hedges, and attempts that run inside a Polly
    /// breaker whose circuit is not closed); every failure becomes an outcome.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<Outcome<HttpResponseMessage>> SendAttemptAsync(AttemptState attempt)
    {
        try
        {
            return Outcome.FromResult(await base.SendAsync(attempt.Request, attempt.Token).ConfigureAwait(false));
        }
#pragma warning disable CA1031 // Every failure becomes an outcome that retry, breaker and outlier detection classify.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            return attempt.Failed(ex);
        }
    }

    /// <summary>
    /// One attempt in flight: what its send needs (passed by value through Polly's state parameter) and what ends it.
    /// <see cref="Token"/> is its timeout's token, linked to the caller's, or the caller's own token and no
    /// <see cref="Deadline"/> when the service's timeouts are off.
    /// </summary>
    private readonly record struct AttemptState(
        GovernanceHandler Handler,
        HttpRequestMessage Request,
        Uri Physical,
        TimeoutScheduler.Deadline? Deadline,
        CancellationTokenRegistration Registration,
        TimeSpan Timeout,
        bool IsTotal,
        EndpointState Endpoint,
        CancellationToken Outer,
        CancellationToken Token)
    {
        /// <summary>
        /// Turns a failed send into an outcome: a cancellation by the attempt's own timer becomes an
        /// <see cref="AttemptTimeoutException"/>, and a failure after the primary handler followed a redirect away from the
        /// endpoint a <see cref="RedirectFailedException"/>.
        /// </summary>
        public Outcome<HttpResponseMessage> Failed(Exception exception) => Failed(exception, Deadline, Timeout, IsTotal, Request, Physical, Endpoint, Outer);

        /// <summary>Turns a failed send into an outcome, from the parts of an attempt: see <see cref="Failed(Exception)"/>.</summary>
        public static Outcome<HttpResponseMessage> Failed(Exception exception, TimeoutScheduler.Deadline? deadline, TimeSpan timeout, bool isTotal, HttpRequestMessage request, Uri physical, EndpointState endpoint, CancellationToken outer)
        {
            if (exception is OperationCanceledException && !outer.IsCancellationRequested)
            {
                if (deadline is not null && deadline.Source.IsCancellationRequested)
                {
                    return Outcome.FromException<HttpResponseMessage>(new AttemptTimeoutException(timeout, isTotal, exception));
                }

                if (exception.InnerException is TimeoutException connectTimeout)
                {
                    // Neither the caller nor a governance timeout cancelled it: the primary handler gave up connecting
                    // (SocketsHttpHandler.ConnectTimeout reports a cancellation whose inner exception is a timeout). It is
                    // a connect failure, retried and counted as one, not the caller's cancellation or the call's timeout.
                    exception = new HttpRequestException(HttpRequestError.ConnectionError, connectTimeout.Message, exception);
                }
            }

            return Outcome.FromException<HttpResponseMessage>(
                exception is HttpRequestException http && Redirects.LeftEndpoint(request, physical, endpoint)
                    ? new RedirectFailedException(endpoint, request.RequestUri!, http)
                    : exception);
        }
    }
}
