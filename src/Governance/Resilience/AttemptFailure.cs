using System.Net;
using System.Net.Sockets;
using Polly.CircuitBreaker;

namespace Governance.Resilience;

/// <summary>How an attempt failed, as seen by retry conditions, circuit breaking and outlier detection.</summary>
[Flags]
internal enum AttemptFailure
{
    None = 0,

    /// <summary>A 5xx answer.</summary>
    ServerError = 1,

    /// <summary>A 502, 503 or 504 answer.</summary>
    GatewayError = 2,

    /// <summary>The connection could not be made (refused, unreachable, TLS handshake, name resolution).</summary>
    ConnectFailure = 4,

    /// <summary>The connection broke after the request was sent (reset, response ended early).</summary>
    Reset = 8,

    /// <summary>The attempt timeout expired.</summary>
    Timeout = 16,

    /// <summary>A 409 answer.</summary>
    Retriable4xx = 32,

    /// <summary>The endpoint's circuit was open: nothing was sent.</summary>
    CircuitOpen = 64,

    /// <summary>An answer whose status code is listed in <c>Retry:RetryOn</c> and fits no other class.</summary>
    ListedStatus = 128,

    /// <summary>Any other exception.</summary>
    Other = 256,

    /// <summary>The call's total timeout expired during the attempt: final, never retried.</summary>
    TotalTimeout = 512,

    /// <summary>What Envoy's consecutive-5xx detector counts, and what the circuit breaker counts as a failure: 5xx answers and locally originated failures.</summary>
    CountsAs5xx = ServerError | ConnectFailure | Reset | Timeout,

    /// <summary>What Envoy's consecutive-gateway-failure detector counts.</summary>
    CountsAsGatewayFailure = GatewayError | ConnectFailure | Reset | Timeout,
}

/// <summary>Classifies attempt outcomes and requests; pure functions, no allocation.</summary>
internal static class AttemptClassifier
{
    public static AttemptFailure Classify(HttpResponseMessage response, RetrySettings? retry = null)
    {
        var code = (int)response.StatusCode;
        var failure = code switch
        {
            502 or 503 or 504 => AttemptFailure.ServerError | AttemptFailure.GatewayError,
            >= 500 and <= 599 => AttemptFailure.ServerError,
            409 => AttemptFailure.Retriable4xx,
            _ => AttemptFailure.None,
        };
        if (retry is not null && retry.StatusCodes.Count > 0 && retry.StatusCodes.Contains(code))
        {
            failure |= AttemptFailure.ListedStatus;
        }

        return failure;
    }

    /// <summary>Classifies an attempt's outcome: its exception, else its response.</summary>
    public static AttemptFailure Classify(Polly.Outcome<HttpResponseMessage> outcome, RetrySettings? retry = null) =>
        outcome.Exception is { } exception ? Classify(exception) : Classify(outcome.Result!, retry);

    public static AttemptFailure Classify(Exception exception) => exception switch
    {
        AttemptTimeoutException { IsTotal: false } => AttemptFailure.Timeout,
        AttemptTimeoutException => AttemptFailure.Timeout | AttemptFailure.TotalTimeout,
        BrokenCircuitException => AttemptFailure.CircuitOpen,

        // Not the endpoint's: it answered with a redirect that the primary handler followed elsewhere (never retried).
        Pipeline.RedirectFailedException => AttemptFailure.Other,
        HttpRequestException { HttpRequestError: HttpRequestError.ConnectionError or HttpRequestError.NameResolutionError or HttpRequestError.SecureConnectionError or HttpRequestError.ProxyTunnelError } => AttemptFailure.ConnectFailure,
        HttpRequestException { InnerException: SocketException { SocketErrorCode: SocketError.ConnectionRefused or SocketError.HostUnreachable or SocketError.NetworkUnreachable or SocketError.TimedOut } } => AttemptFailure.ConnectFailure,
        HttpRequestException { HttpRequestError: HttpRequestError.ResponseEnded or HttpRequestError.InvalidResponse or HttpRequestError.HttpProtocolError } => AttemptFailure.Reset,
        HttpRequestException { InnerException: IOException } => AttemptFailure.Reset,
        HttpIOException or IOException => AttemptFailure.Reset,
        _ => AttemptFailure.Other,
    };

    /// <summary>Whether the failure matches the configured <c>RetryOn</c> conditions.</summary>
    public static bool IsRetryable(AttemptFailure failure, RetrySettings retry)
    {
        if (failure == AttemptFailure.None || (failure & AttemptFailure.TotalTimeout) != 0)
        {
            return false;
        }

        // Nothing was sent to an open circuit: trying another endpoint is always safe.
        if ((failure & AttemptFailure.CircuitOpen) != 0 || (failure & AttemptFailure.ListedStatus) != 0)
        {
            return true;
        }

        // RetryConditions uses the bit values of the failures it names, so the configured conditions are a mask.
        return (failure & (AttemptFailure)(int)retry.Conditions) != 0;
    }

    /// <summary>The reason recorded in telemetry when an attempt with this failure is retried.</summary>
    public static string Reason(AttemptFailure failure, HttpResponseMessage? response) =>
        (failure & AttemptFailure.CircuitOpen) != 0 ? "circuit-open"
        : (failure & AttemptFailure.Timeout) != 0 ? "timeout"
        : (failure & AttemptFailure.ConnectFailure) != 0 ? "connect-failure"
        : (failure & AttemptFailure.Reset) != 0 ? "reset"
        : (failure & AttemptFailure.GatewayError) != 0 ? "gateway-error"
        : (failure & AttemptFailure.ServerError) != 0 ? "5xx"
        : (failure & AttemptFailure.Retriable4xx) != 0 ? "retriable-4xx"
        : response is not null ? ((int)response.StatusCode).ToString(System.Globalization.CultureInfo.InvariantCulture)
        : "error";

    /// <summary>
    /// Whether a request that was sent may be sent again: its method is idempotent (or <c>Retry:RetryNonIdempotent</c> is
    /// on) and its body can be read again. A request that was not sent (an open circuit turned it away) may always go.
    /// </summary>
    public static bool MaySendAgain(HttpRequestMessage request, RetrySettings retry) =>
        (retry.RetryNonIdempotent || IsIdempotent(request.Method)) && IsReplayable(request.Content);

    /// <summary>GET, HEAD, OPTIONS, PUT, DELETE and TRACE are idempotent (RFC 9110, 9.2.2).</summary>
    public static bool IsIdempotent(HttpMethod method) =>
        method == HttpMethod.Get || method == HttpMethod.Head || method == HttpMethod.Options
        || method == HttpMethod.Put || method == HttpMethod.Delete || method == HttpMethod.Trace;

    /// <summary>
    /// Whether the request body can be sent again: no body, or content that re-serializes from memory
    /// (<see cref="ByteArrayContent"/> and its subclasses <see cref="StringContent"/> and
    /// <see cref="FormUrlEncodedContent"/>, <see cref="ReadOnlyMemoryContent"/>, <c>JsonContent</c>, and multipart
    /// content made only of those). A stream body can be read once, so such a request is never retried.
    /// </summary>
    public static bool IsReplayable(HttpContent? content) => content switch
    {
        null => true,
        ByteArrayContent or ReadOnlyMemoryContent => true,
        MultipartContent multipart => AllReplayable(multipart),
        System.Net.Http.Json.JsonContent => true,
        _ => false,
    };

    private static bool AllReplayable(MultipartContent multipart)
    {
        foreach (var part in multipart)
        {
            if (!IsReplayable(part))
            {
                return false;
            }
        }

        return true;
    }
}

/// <summary>
/// An attempt ran out of time: its own timeout (<c>Timeout:PerAttempt</c>, retryable on another endpoint) or, when
/// <see cref="IsTotal"/>, the call's total timeout (final).
/// </summary>
internal sealed class AttemptTimeoutException(TimeSpan timeout, bool isTotal, Exception? inner)
    : TimeoutException($"The attempt did not complete within {timeout}.", inner)
{
    public TimeSpan Timeout { get; } = timeout;

    public bool IsTotal { get; } = isTotal;
}
