namespace Governance.Pipeline;

/// <summary>
/// What governance makes of redirects that the primary handler follows (<see cref="SocketsHttpHandler.AllowAutoRedirect"/>,
/// on by default). The primary handler follows them below governance, from the physical URI: a relative <c>Location</c>
/// stays on the endpoint that answered, an absolute one goes where it names (a governed service's name is resolved by
/// DNS, not by governance). Governance sees only where the request ended: the URI it holds when its attempt completes,
/// which is then not the physical URI the attempt was sent with.
/// </summary>
internal static class Redirects
{
    /// <summary>
    /// The URI the caller's request holds when its call ends, given the one it holds now (<paramref name="final"/>): its
    /// own logical URI when the request was not redirected; the logical URI with the target's path, query and fragment
    /// when the primary handler followed a redirect on an endpoint of the service (as HttpClient leaves the final URI in
    /// the request); any other target as it is (the caller sees where the response came from).
    /// </summary>
    /// <remarks>Off the request path: a call whose last attempt is known to hold its own physical URI restores the logical URI without calling this.</remarks>
    public static Uri CallersUri(GovernedCall call, Uri? final)
    {
        var logical = call.Logical;
        if (final is null || ReferenceEquals(final, logical) || !final.IsAbsoluteUri)
        {
            return logical;
        }

        var all = call.Service.Endpoints.All;
        foreach (var endpoint in all)
        {
            if (endpoint.Wrote(final))
            {
                return logical;
            }
        }

        var pathAndQuery = final.PathAndQuery;
        var fragment = final.Fragment;
        if (string.Equals(pathAndQuery, logical.PathAndQuery, StringComparison.Ordinal) && fragment.Length == 0)
        {
            // A physical URI of this call (built again since, or of an endpoint the service no longer has): no redirect,
            // or one to the same resource.
            return logical;
        }

        if (!IsEndpoint(all, final.GetLeftPart(UriPartial.Authority)))
        {
            return final;
        }

        // The physical URI had no fragment: the redirect target keeps the caller's unless its Location gave one (RFC 9110, 10.2.2).
        return new Uri(string.Concat(logical.GetLeftPart(UriPartial.Authority), pathAndQuery, fragment.Length > 0 ? fragment : logical.Fragment), UriKind.Absolute);
    }

    /// <summary>
    /// Whether the primary handler followed a redirect during an attempt of <paramref name="call"/> sent with
    /// <paramref name="physical"/> (none when nothing was sent): the request holds another URI now, and either its method
    /// is no longer the caller's or that URI is not <paramref name="physical"/>'s resource (another scheme, host, port or
    /// path). The redirect follower changed the request on its way (it drops <c>Authorization</c>, and turns a POST
    /// answered 301/302, or anything answered 303, into a GET without body), so such a call is never retried: a retry
    /// would send a request the caller did not write. A URI that differs from <paramref name="physical"/> in its query
    /// alone is taken for a handler between governance and the primary handler that rewrites every attempt's URI (one
    /// that appends an <c>api-version</c> or a key): a retry is rewritten the same way, so the call stays retryable. (A
    /// redirect on the endpoint to the same path with another query is taken for such a rewrite too.) Called only once
    /// an attempt failed in a retryable way.
    /// </summary>
    public static bool Followed(in GovernedCall call, Uri? physical)
    {
        var request = call.Request;
        if (physical is null || ReferenceEquals(request.RequestUri, physical))
        {
            return false;
        }

        return request.Method != call.Method
            || request.RequestUri is not { IsAbsoluteUri: true } final
            || !string.Equals(final.GetLeftPart(UriPartial.Authority), physical.GetLeftPart(UriPartial.Authority), StringComparison.OrdinalIgnoreCase)
            || !string.Equals(final.AbsolutePath, physical.AbsolutePath, StringComparison.Ordinal);
    }

    /// <summary>
    /// Whether an attempt sent to <paramref name="endpoint"/> with <paramref name="physical"/> ended on another host or
    /// port: the primary handler followed a redirect away from the endpoint, so what happened next (an answer, a timeout,
    /// any failure) is not the endpoint's, and neither its circuit breaker nor outlier detection counts it. On the request
    /// path this costs one reference comparison unless the request was redirected.
    /// </summary>
    public static bool LeftEndpoint(HttpRequestMessage request, Uri physical, EndpointState endpoint) =>
        request.RequestUri is { } final
        && !ReferenceEquals(final, physical)
        && final.IsAbsoluteUri
        && !string.Equals(final.GetLeftPart(UriPartial.Authority), endpoint.Authority, StringComparison.OrdinalIgnoreCase);

    private static bool IsEndpoint(EndpointState[] endpoints, string authority)
    {
        foreach (var endpoint in endpoints)
        {
            if (string.Equals(endpoint.Authority, authority, StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }

        return false;
    }
}

/// <summary>
/// An attempt failed after the primary handler followed a redirect away from the endpoint that answered: the failure is
/// the redirect target's, so it is neither counted against the endpoint (circuit breaker, outlier detection) nor retried
/// on another one (which would redirect the same way). Its message names the target and what to do when the target is a
/// governed service. The target is named without its user information, query or fragment: the message reaches the
/// caller's logs and the call's span status, where no query string is ever recorded (a Location may carry tokens).
/// </summary>
internal sealed class RedirectFailedException : HttpRequestException
{
    public RedirectFailedException(EndpointState endpoint, Uri target, HttpRequestException inner)
        : base(inner.HttpRequestError, Describe(endpoint, target, inner), inner, inner.StatusCode)
    {
    }

    private static string Describe(EndpointState endpoint, Uri target, HttpRequestException inner) =>
        $"{inner.Message} (the primary handler followed a redirect from endpoint {endpoint.Authority} to '{target.GetComponents(UriComponents.SchemeAndServer | UriComponents.Path, UriFormat.UriEscaped)}'; redirects it follows do not pass through MeshGovernance, so a Location that names a governed service is resolved by DNS: set AllowAutoRedirect = false on the primary handler and send the redirected request again to route it through governance)";
}
