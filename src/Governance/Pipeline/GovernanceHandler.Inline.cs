using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using System.Threading.RateLimiting;
using Governance.Resilience;
using Governance.Telemetry;
using Polly;

namespace Governance.Pipeline;

/// <summary>
/// Every governed call that is not hedged, without an async method. The span starts and the first attempt is sent
/// here, on the caller's thread; one pooled <see cref="InlineAttempt"/> puts one cached continuation on the socket's
/// task and, when it runs, ends the attempt, counts it and completes the one <see cref="TaskCompletionSource{TResult}"/>
/// the caller awaits. What this saves over a pooled async method (whose <see cref="ValueTask{TResult}"/> must be turned
/// into a task): the state machine's box and its resumption, the builder's pool and the <c>AsTask</c> hop, on the core
/// where the response arrives (benchmarks/README.md, session 5). A call that needs more than one synchronous step (no
/// endpoint, a circuit that is not closed, a breaker that trips, a retry) continues in <see cref="FinishAsync"/>.
/// </summary>
internal sealed partial class GovernanceHandler
{
    private Task<HttpResponseMessage> SendInline(GovernedCall call, RateLimitLease? lease)
    {
        if (!GovernanceInstrumentation.Source.HasListeners())
        {
            return SendFirstAttempt(call, lease);
        }

        // The span is current while the first attempt is sent (the socket handler's span is its child) and for the rest
        // of the call, which runs in the context captured then; the caller gets its own context back when this returns,
        // as when an async method returns at its first await (ExecutionContext.Restore: no allocation).
        var callerContext = ExecutionContext.Capture();
        var previous = System.Diagnostics.Activity.Current;
        try
        {
            System.Diagnostics.Activity? activity;
            try
            {
                activity = GovernanceInstrumentation.StartCall(call.Service, call.Request, call.ArrivedAt, call.Policy.SpanClock);
            }
#pragma warning disable CA1031 // A listener's callback threw as the span started: the call fails with it, through its task, its permit given back.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                lease?.Dispose();
                return Task.FromException<HttpResponseMessage>(ex);
            }

            return activity is null ? SendFirstAttempt(call, lease) : SendFirstAttempt(new GovernedCall(call, call.Request, activity), lease);
        }
        finally
        {
            if (callerContext is not null)
            {
                ExecutionContext.Restore(callerContext);
            }
            else
            {
                System.Diagnostics.Activity.Current = previous;
            }
        }
    }

    private Task<HttpResponseMessage> SendFirstAttempt(GovernedCall call, RateLimitLease? lease)
    {
        var policy = call.Policy;
        if (policy.UsesBudget)
        {
            policy.Budget.OnRequest(call.StartedAt);
        }

        EndpointState? endpoint;
        try
        {
            endpoint = call.Service.TryPick(call.Request);
        }
#pragma warning disable CA1031 // A custom picker's failure ends the call through its task, as an async method's would.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            return Fail(call, lease, null, ex);
        }

        TaskCompletionSource<HttpResponseMessage> promise;
        if (endpoint is null || (!(endpoint.Breaker?.IsClosed ?? true) && !SentDespiteCircuit(call.Service.Endpoints, endpoint)))
        {
            // No endpoint, or the pick's circuit is not closed (and it is not an endpoint panic mode brought back, which is
            // sent to as any): the general attempt (inside the breaker), asynchronously.
            // Without an endpoint the general attempt picks again (and waits if the set went pending meanwhile).
            var first = AttemptAsync(call, tried: null, attemptNumber: 1, call.CallerToken, endpoint);
            promise = new TaskCompletionSource<HttpResponseMessage>();
            _ = FinishAsync(call, lease, promise, first);
            return promise.Task;
        }

        // The first attempt. Nothing has run since the call's clock started, so the whole total timeout is left.
        AttemptState attempt;
        try
        {
            attempt = BeginAttempt(call, endpoint, call.StartedAt, policy.Timeout.Total, call.CallerToken);
        }
#pragma warning disable CA1031 // The call ends through its task, with its permit given back.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            return Fail(call, lease, null, ex);
        }

        Task<HttpResponseMessage> inner;
        try
        {
            inner = base.SendAsync(call.Request, attempt.Token);
        }
#pragma warning disable CA1031 // Every failure becomes an outcome that retry, breaker and outlier detection classify.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            inner = Task.FromException<HttpResponseMessage>(ex);
        }

        if (inner.IsCompleted)
        {
            // Answered at once (a handler that completes synchronously, a cancelled token): no continuation, and a
            // completed task instead of a promise when the call ends here too.
            var outcome = FirstOutcome(call, inner, attempt.Deadline, attempt.Physical, endpoint);
            EndAttempt(endpoint, attempt.Registration, attempt.Deadline);
            return FinishFirstAttempt(call, endpoint, attempt.Physical, outcome, lease, promise: null);
        }

        promise = new TaskCompletionSource<HttpResponseMessage>();
        InlineAttempt.Rent().Start(this, call, endpoint, attempt, lease, inner, promise);
        return promise.Task;
    }

    /// <summary>The outcome of a first attempt whose send completed: its response, or what awaiting it would throw.</summary>
    private static Outcome<HttpResponseMessage> FirstOutcome(GovernedCall call, Task<HttpResponseMessage> inner, TimeoutScheduler.Deadline? deadline, Uri physical, EndpointState endpoint)
    {
        if (inner.IsCompletedSuccessfully)
        {
            return Outcome.FromResult(inner.Result);
        }

        try
        {
            // Throws what awaiting the task would throw (the original exception, or the cancellation).
            return Outcome.FromResult(inner.GetAwaiter().GetResult());
        }
#pragma warning disable CA1031 // Every failure becomes an outcome that retry, breaker and outlier detection classify.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            // The first attempt began with the whole total timeout left (see SendInline).
            var (timeout, isTotal) = AttemptTimeout(call, call.Policy.Timeout.Total);
            return AttemptState.Failed(ex, deadline, timeout, isTotal, call.Request, physical, endpoint, call.CallerToken);
        }
    }

    /// <summary>
    /// After the first attempt's outcome: the breaker counts it (synchronously unless it trips), outlier detection and
    /// metrics count it, then the call ends here or, when a retry is due or the breaker is opening, in <see cref="FinishAsync"/>.
    /// Completes <paramref name="promise"/> and returns its task; without one (the send completed synchronously) returns
    /// a completed task, or a new promise's task when the call goes on.
    /// </summary>
    private Task<HttpResponseMessage> FinishFirstAttempt(GovernedCall call, EndpointState endpoint, Uri physical, Outcome<HttpResponseMessage> outcome, RateLimitLease? lease, TaskCompletionSource<HttpResponseMessage>? promise)
    {
        AttemptResult first;
        try
        {
            var answeredElsewhere = Redirects.LeftEndpoint(call.Request, physical, endpoint);
            var breaker = endpoint.Breaker;
            if (breaker is not null && !answeredElsewhere)
            {
                var recorded = breaker.RecordAsync(outcome, call.Activity);
                if (!recorded.IsCompletedSuccessfully)
                {
                    promise ??= new TaskCompletionSource<HttpResponseMessage>();
                    _ = FinishAsync(call, lease, promise, RecordThenAccountAsync(call, endpoint, physical, outcome, recorded));
                    return promise.Task;
                }

                recorded.GetAwaiter().GetResult();
            }

            first = Account(call, endpoint, physical, attemptNumber: 1, outcome, answeredElsewhere);
        }
#pragma warning disable CA1031 // Code called back while counting (a custom policy's picker, a listener) failed: the call fails with it.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            // This runs on the socket's completion: an exception thrown from here would end the process.
            outcome.Result?.Dispose();
            return Fail(call, lease, promise, ex, physical);
        }

        if (MayRetry(call, first))
        {
            promise ??= new TaskCompletionSource<HttpResponseMessage>();
            _ = FinishAsync(call, lease, promise, new ValueTask<AttemptResult>(first));
            return promise.Task;
        }

        HttpResponseMessage response;
        try
        {
            response = Complete(call, first.Outcome, attempts: 1, budgetExhausted: false);
        }
#pragma warning disable CA1031 // The caller gets every failure through its task.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            return Fail(call, lease, promise, ex, physical);
        }

        return Succeed(call, lease, promise, response, physical);
    }

    /// <summary>
    /// The breaker is opening its circuit (Polly runs its <c>OnOpened</c>, which tells the call's span): the rest of the
    /// first attempt once it has.
    /// </summary>
    private static async ValueTask<AttemptResult> RecordThenAccountAsync(GovernedCall call, EndpointState endpoint, Uri physical, Outcome<HttpResponseMessage> outcome, ValueTask recorded)
    {
        try
        {
            await recorded.ConfigureAwait(false);
        }
        catch
        {
            // As on the synchronous path (FinishFirstAttempt): the call fails with it, the response is not left open.
            outcome.Result?.Dispose();
            throw;
        }

        return AccountOrDispose(call, endpoint, physical, attemptNumber: 1, outcome, answeredElsewhere: false);
    }

    /// <summary>The rest of a call whose first attempt is <paramref name="pending"/>: the retry phase when due, then the end of the call.</summary>
    private async Task FinishAsync(GovernedCall call, RateLimitLease? lease, TaskCompletionSource<HttpResponseMessage> promise, ValueTask<AttemptResult> pending)
    {
        HttpResponseMessage response;
        try
        {
            var first = await pending.ConfigureAwait(false);
            response = MayRetry(call, first)
                ? await RetryAsync(call, first).ConfigureAwait(false)
                : Complete(call, first.Outcome, attempts: 1, budgetExhausted: false);
        }
#pragma warning disable CA1031 // The caller gets every failure through its task.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            _ = Fail(call, lease, promise, ex);
            return;
        }

        _ = Succeed(call, lease, promise, response);
    }

    /// <summary>
    /// Ends a call with its response: metrics, the caller's URI back, the permit returned, then the caller's task
    /// (<paramref name="promise"/>'s, or a completed one). <paramref name="physical"/> is the URI the call's last attempt
    /// was sent with, when known.
    /// </summary>
    private static Task<HttpResponseMessage> Succeed(GovernedCall call, RateLimitLease? lease, TaskCompletionSource<HttpResponseMessage>? promise, HttpResponseMessage response, Uri? physical = null)
    {
        var ended = TryEndCall(call, response, null, out var telemetryFailure);
        RestoreUri(call, physical);
        lease?.Dispose();
        if (!ended)
        {
            // A listener's callback threw: the caller gets that failure, as from an async method, never a process crash.
            response.Dispose();
            promise ??= new TaskCompletionSource<HttpResponseMessage>();
            promise.TrySetException(telemetryFailure!);
            return promise.Task;
        }

        if (promise is null)
        {
            return Task.FromResult(response);
        }

        promise.TrySetResult(response);
        return promise.Task;
    }

    /// <summary>
    /// Gives the caller's request its URI back: the logical one when it still holds <paramref name="physical"/> (the URI
    /// its last attempt was sent with), otherwise what <see cref="Redirects.CallersUri"/> makes of the URI it holds.
    /// </summary>
    private static void RestoreUri(GovernedCall call, Uri? physical)
    {
        var request = call.Request;
        var final = request.RequestUri;
        request.RequestUri = physical is not null && ReferenceEquals(final, physical) ? call.Logical : Redirects.CallersUri(call, final);
    }

    /// <summary>
    /// <see cref="EndCall"/> where nothing may escape: it runs on the socket's completion, and the telemetry listeners it
    /// calls back are application code.
    /// </summary>
    private static bool TryEndCall(GovernedCall call, HttpResponseMessage? response, Exception? error, [System.Diagnostics.CodeAnalysis.NotNullWhen(false)] out Exception? failure)
    {
        try
        {
            EndCall(call, response, error);
            failure = null;
            return true;
        }
#pragma warning disable CA1031 // Handed to the caller (Succeed) or dropped for the call's own failure (Fail).
        catch (Exception ex)
#pragma warning restore CA1031
        {
            failure = ex;
            return false;
        }
    }

    /// <summary>
    /// Ends a call with its failure, as an async method would: a cancellation cancels the caller's task, anything else
    /// faults it.
    /// </summary>
    private static Task<HttpResponseMessage> Fail(GovernedCall call, RateLimitLease? lease, TaskCompletionSource<HttpResponseMessage>? promise, Exception exception, Uri? physical = null)
    {
        // The call's own failure is what the caller gets, even if a listener's callback throws while it is recorded.
        _ = TryEndCall(call, null, exception, out _);
        RestoreUri(call, physical);
        lease?.Dispose();
        if (exception is OperationCanceledException canceled)
        {
            // Cancelled as an async method would be: the task is Canceled and awaiting it throws this very exception
            // (its message and inner exception, e.g. the socket's, which HttpClient passes on), not a new one that keeps
            // only the token, as TrySetCanceled would.
            var rethrown = CanceledWith(canceled);
            if (promise is null)
            {
                return rethrown;
            }

            promise.TrySetFromTask(rethrown);
            return promise.Task;
        }

        promise ??= new TaskCompletionSource<HttpResponseMessage>();
        promise.TrySetException(exception);
        return promise.Task;
    }

    /// <summary>A Canceled task whose awaiting throws <paramref name="exception"/> itself (what an async method builder makes of it).</summary>
#pragma warning disable CS1998 // The method only throws: its builder turns the exception into the Canceled task.
    private static async Task<HttpResponseMessage> CanceledWith(OperationCanceledException exception)
    {
        // Rethrown with its stack trace kept (appended to, as an await would).
        ExceptionDispatchInfo.Throw(exception);
        return null!;
    }
#pragma warning restore CS1998

    /// <summary>
    /// The first attempt of an inline call while it is on the wire. Pooled as <see cref="PoolingAsyncValueTaskMethodBuilder"/>
    /// pools its boxes (one per thread, then one per core; taken when a call starts and given back, on whichever thread
    /// the response completes, before the caller's task is completed), so that its continuation delegate is allocated
    /// once, not per call. The continuation runs in the caller's <see cref="ExecutionContext"/>, as an async method's would.
    /// </summary>
    private sealed class InlineAttempt
    {
        /// <summary>Slots per core in <see cref="PerCore"/>: 128 bytes apart, so that two cores never write one cache line.</summary>
        private const int Stride = 16;

        private static readonly ContextCallback RunComplete = static s => ((InlineAttempt)s!).Complete();
        private static readonly int Cores = Environment.ProcessorCount;

        /// <summary>One free attempt per core, at <c>(core + 1) * Stride</c> (the first and last 128 bytes are padding).</summary>
        private static readonly InlineAttempt?[] PerCore = new InlineAttempt?[(Cores + 2) * Stride];

        [ThreadStatic]
        private static InlineAttempt? t_free;

        private readonly Action _onCompleted;
        private GovernanceHandler? _handler;
        private GovernedCall _call;
        private EndpointState? _endpoint;
        private Uri? _physical;
        private TimeoutScheduler.Deadline? _deadline;
        private CancellationTokenRegistration _registration;
        private RateLimitLease? _lease;
        private Task<HttpResponseMessage>? _inner;
        private TaskCompletionSource<HttpResponseMessage>? _promise;
        private ExecutionContext? _context;

        private InlineAttempt() => _onCompleted = OnCompleted;

        public static InlineAttempt Rent()
        {
            var attempt = t_free;
            if (attempt is not null)
            {
                t_free = null;
                return attempt;
            }

            return Interlocked.Exchange(ref CoreSlot(), null) ?? new InlineAttempt();
        }

        public void Start(GovernanceHandler handler, GovernedCall call, EndpointState endpoint, AttemptState attempt, RateLimitLease? lease, Task<HttpResponseMessage> inner, TaskCompletionSource<HttpResponseMessage> promise)
        {
            _handler = handler;
            _call = call;
            _endpoint = endpoint;
            _physical = attempt.Physical;
            _deadline = attempt.Deadline;
            _registration = attempt.Registration;
            _lease = lease;
            _inner = inner;
            _promise = promise;
            _context = ExecutionContext.Capture();
            inner.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(_onCompleted);
        }

        private static ref InlineAttempt? CoreSlot() => ref PerCore[(int)(((uint)Thread.GetCurrentProcessorId() % (uint)Cores) + 1) * Stride];

        private void OnCompleted()
        {
            // Usually the completing thread already runs in the caller's context (both default, or the socket's task
            // completed inside an async method the caller started); otherwise switch to it for the rest of the call.
            if (_context is { } context && !ReferenceEquals(context, ExecutionContext.Capture()))
            {
                ExecutionContext.Run(context, RunComplete, this);
            }
            else
            {
                Complete();
            }
        }

        private void Return()
        {
            if (t_free is null)
            {
                t_free = this;
            }
            else
            {
                Interlocked.CompareExchange(ref CoreSlot(), this, null);
            }
        }

        private void Complete()
        {
            var (handler, call, endpoint, physical, deadline, registration, lease, inner, promise) = (_handler!, _call, _endpoint!, _physical!, _deadline, _registration, _lease, _inner!, _promise!);
            (_handler, _call, _endpoint, _physical, _deadline, _registration, _lease, _inner, _promise, _context) = (null, default, null, null, null, default, null, null, null, null);
            Return();

            var outcome = FirstOutcome(call, inner, deadline, physical, endpoint);
            EndAttempt(endpoint, registration, deadline);
            _ = handler.FinishFirstAttempt(call, endpoint, physical, outcome, lease, promise);
        }
    }
}
