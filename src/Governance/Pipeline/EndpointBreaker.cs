using System.Diagnostics;
using Governance.Resilience;
using Polly;
using Polly.CircuitBreaker;

namespace Governance.Pipeline;

/// <summary>
/// An endpoint's circuit breaker and the settings it was built with: our own failure-ratio window decides when the
/// circuit opens, Polly's breaker runs it from there.
/// <para>
/// Why split it: an attempt on a closed circuit is sent outside Polly, and letting Polly count its outcome meant running
/// it through the breaker pipeline (a pooled <see cref="ResilienceContext"/>, the pipeline's components, Polly's lock
/// taken twice, a wall-clock read to find the health bucket): about 137 ns per successful attempt, a third of
/// governance's in-memory cost, to add 1 to a counter. No cheaper way of feeding Polly's breaker exists, since every
/// outcome it counts goes through that path. So on a closed circuit outcomes are counted in a
/// <see cref="FailureRatioWindow"/> with Polly's rules (FailureRatio over SamplingDuration in ten buckets, at least
/// MinimumThroughput outcomes, evaluated on each failure), where a success costs one lock-free increment.
/// </para>
/// <para>
/// When the window says trip, Polly's breaker is opened by feeding it the failing outcome through <see cref="Pipeline"/>
/// with the trip operation key. That breaker is configured so that this opens it deterministically and nothing else
/// does: FailureRatio 0 and MinimumThroughput 2, so a handled failure opens it once it holds two outcomes, and at most
/// two trip executions are needed; its predicate handles trip executions, and otherwise only outcomes that reach it
/// while it is open or half-open. Polly therefore still owns everything after the trip: BreakDuration, the single
/// half-open probe (attempts on a circuit that is not closed run inside <see cref="Pipeline"/>, as before), closing
/// after a healthy probe and re-opening after a failed one, and the OnOpened/OnClosed transitions that drive
/// <see cref="IsClosed"/>. When Polly closes the circuit the window is emptied, as Polly empties its own metrics.
/// </para>
/// <para>
/// Counted as failures, as by the predicate this replaces: what <see cref="AttemptClassifier"/> classifies as
/// <see cref="AttemptFailure.CountsAs5xx"/> (5xx answers, connect failures, resets, attempt timeouts). Not counted:
/// cancellations (a hedge that lost, a caller that gave up, which say nothing about the endpoint) and outcomes recorded
/// after the circuit opened (stale evidence must not decide a half-open probe). A half-open probe is the exception: one
/// that was cancelled counts as a failure, since it did not show the endpoint healthy and Polly would otherwise close.
/// </para>
/// </summary>
internal sealed class EndpointBreaker
{
    /// <summary>Operation key of the executions that open Polly's breaker (<see cref="TripAsync"/>).</summary>
    private const string TripOperationKey = "MeshGovernance.CircuitTrip";

    /// <summary>
    /// The span of the call whose attempt an execution of <see cref="Pipeline"/> runs or trips for: the transition it
    /// causes is told on that span (and on no other call's).
    /// </summary>
    public static readonly ResiliencePropertyKey<Activity?> CallSpanKey = new("MeshGovernance.CallSpan");

    private readonly FailureRatioWindow _window;
    private readonly CircuitBreakerStateProvider _polly = new();
    private volatile bool _isClosed = true;

    /// <param name="settings">The endpoint's breaker settings.</param>
    /// <param name="time">The service's clock: the window's buckets and Polly's break timing.</param>
    /// <param name="onOpened">
    /// Called with the break duration after the circuit opened (after <see cref="IsClosed"/> turned false), and the span of
    /// the call whose outcome opened it (see <see cref="CallSpanKey"/>), if any.
    /// </param>
    /// <param name="onClosed">Called after the circuit closed (after <see cref="IsClosed"/> turned true), with the span of the call whose probe closed it.</param>
    public EndpointBreaker(CircuitBreakerSettings settings, TimeProvider time, Action<TimeSpan, Activity?> onOpened, Action<Activity?> onClosed)
    {
        Settings = settings;
        _window = new FailureRatioWindow(settings.FailureRatio, settings.MinimumThroughput, settings.SamplingDuration, time);
        using (BackgroundWork.SuppressFlow())
        {
            // Polly's breaker keeps a scheduler for its callbacks: build it without the current request's context.
            Pipeline = new ResiliencePipelineBuilder<HttpResponseMessage> { TimeProvider = time }
                .AddCircuitBreaker(new CircuitBreakerStrategyOptions<HttpResponseMessage>
                {
                    // Opened only by TripAsync (see the class remarks); the real ratio lives in the window.
                    FailureRatio = 0,
                    MinimumThroughput = 2,
                    SamplingDuration = settings.SamplingDuration,
                    BreakDuration = settings.BreakDuration,
                    StateProvider = _polly,
                    ShouldHandle = ShouldHandle,
                    OnOpened = args =>
                    {
                        _isClosed = false;
                        onOpened(args.BreakDuration, CallSpan(args.Context));
                        return default;
                    },
                    OnClosed = args =>
                    {
                        _window.Reset();
                        _isClosed = true;
                        onClosed(CallSpan(args.Context));
                        return default;
                    },
                })
                .Build();
        }
    }

    public CircuitBreakerSettings Settings { get; }

    /// <summary>Gets Polly's breaker, through which attempts run while the circuit is not closed (open: rejected; half-open: one probe).</summary>
    public ResiliencePipeline<HttpResponseMessage> Pipeline { get; }

    /// <summary>
    /// Gets a value indicating whether the circuit is closed, as last reported by Polly (<c>OnOpened</c> clears it,
    /// <c>OnClosed</c> sets it). Read without Polly's lock on every attempt.
    /// </summary>
    public bool IsClosed => _isClosed;

    /// <summary>Gets the window's counts now, for tests.</summary>
    internal (long Successes, long Failures) Window => _window.Snapshot();

    /// <summary>Whether the breaker counts the outcome as a failure (a 5xx or a local failure; never a cancellation).</summary>
    public static bool IsFailure(Outcome<HttpResponseMessage> outcome) =>
        outcome.Exception is not OperationCanceledException && (AttemptClassifier.Classify(outcome) & AttemptFailure.CountsAs5xx) != 0;

    /// <summary>
    /// Counts an outcome obtained outside Polly (the closed-circuit fast path). Completes synchronously unless the
    /// outcome trips the circuit, in which case it completes once Polly has opened it and run <c>OnOpened</c>.
    /// Outcomes that arrive after the circuit opened are not counted.
    /// </summary>
    /// <param name="outcome">The attempt's outcome.</param>
    /// <param name="span">The span of the attempt's call, told of the opening if this outcome opens the circuit.</param>
    public ValueTask RecordAsync(Outcome<HttpResponseMessage> outcome, Activity? span) => _isClosed ? CountAsync(outcome, span) : default;

    private static Activity? CallSpan(ResilienceContext context) => context.Properties.TryGetValue(CallSpanKey, out var span) ? span : null;

    private ValueTask CountAsync(Outcome<HttpResponseMessage> outcome, Activity? span)
    {
        if (outcome.Exception is OperationCanceledException)
        {
            return default;
        }

        if ((AttemptClassifier.Classify(outcome) & AttemptFailure.CountsAs5xx) == 0)
        {
            _window.RecordSuccess();
            return default;
        }

        return _window.RecordFailure() ? TripAsync(outcome, span) : default;
    }

    /// <summary>
    /// Opens Polly's breaker: each execution with the trip key is a handled failure, and with FailureRatio 0 and
    /// MinimumThroughput 2 the second at the latest opens it (the first does when Polly already holds an outcome).
    /// Only a closed Polly breaker is fed: an open one needs nothing and a half-open one belongs to its probe.
    /// </summary>
    private async ValueTask TripAsync(Outcome<HttpResponseMessage> outcome, Activity? span)
    {
        for (var i = 0; i < 2 && _polly.CircuitState == CircuitState.Closed; i++)
        {
            var context = ResilienceContextPool.Shared.Get(TripOperationKey, CancellationToken.None);
            context.Properties.Set(CallSpanKey, span);
            try
            {
                await Pipeline.ExecuteOutcomeAsync(static (_, o) => new ValueTask<Outcome<HttpResponseMessage>>(o), context, outcome).ConfigureAwait(false);
            }
            finally
            {
                ResilienceContextPool.Shared.Return(context);
            }
        }
    }

    /// <summary>
    /// Polly's predicate. Trip executions are failures. Outcomes of attempts run inside the pipeline are classified
    /// while Polly's circuit is open or half-open (the probe decides; others only touch metrics Polly resets on
    /// closing). An attempt that entered the pipeline while the circuit was closing reaches it closed: it is counted in
    /// the window like any closed-circuit outcome, and reported to Polly as a success so that only the window trips it.
    /// </summary>
    private ValueTask<bool> ShouldHandle(CircuitBreakerPredicateArguments<HttpResponseMessage> args)
    {
        if (ReferenceEquals(args.Context.OperationKey, TripOperationKey))
        {
            return new ValueTask<bool>(true);
        }

        if (_polly.CircuitState != CircuitState.Closed)
        {
            // A probe that did not finish (its caller, HttpClient.Timeout or a winning hedge cancelled it) showed nothing
            // good: Polly closes a half-open circuit on any outcome it does not handle, so it counts as a failure here.
            return new ValueTask<bool>(args.Outcome.Exception is OperationCanceledException || IsFailure(args.Outcome));
        }

        var counted = CountAsync(args.Outcome, CallSpan(args.Context));
        return counted.IsCompletedSuccessfully ? new ValueTask<bool>(false) : AfterAsync(counted);

        static async ValueTask<bool> AfterAsync(ValueTask counted)
        {
            await counted.ConfigureAwait(false);
            return false;
        }
    }
}
