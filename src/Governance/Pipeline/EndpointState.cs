namespace Governance.Pipeline;

/// <summary>
/// Live state of one endpoint of one service, kept across endpoint-set rebuilds (matched by <c>scheme://host:port</c>)
/// so that in-flight counts survive reloads and discovery updates.
/// </summary>
internal sealed class EndpointState
{
    private int _activeRequests;
    private volatile bool _isAvailable = true;
    private RewriteEntry? _lastRewrite;

    public EndpointState(ServiceEndpoint endpoint)
    {
        Endpoint = endpoint;
        Authority = endpoint.Authority;
    }

    /// <summary>Gets or sets the latest description of the endpoint (weight, zone and metadata may change on reload).</summary>
    public ServiceEndpoint Endpoint { get; set; }

    public string Authority { get; }

    public int ActiveRequests => Volatile.Read(ref _activeRequests);

    /// <summary>
    /// Gets a value indicating whether the endpoint may take new requests. Health signals clear it; the service
    /// rebuilds its <see cref="EndpointSet"/> when it changes.
    /// </summary>
    public bool IsAvailable => _isAvailable;

    /// <summary>Sets availability; returns <see langword="true"/> when it changed.</summary>
    public bool SetAvailable(bool available)
    {
        var changed = _isAvailable != available;
        _isAvailable = available;
        return changed;
    }

    public void OnRequestStarted() => Interlocked.Increment(ref _activeRequests);

    public void OnRequestEnded() => Interlocked.Decrement(ref _activeRequests);

    /// <summary>
    /// Returns <paramref name="logical"/> with this endpoint's scheme, host and port. The last result is cached, so
    /// repeated calls with the same path and query (the common case of a client hitting one resource) allocate nothing;
    /// <see cref="Uri"/> is immutable, so the cached instance is shared safely between concurrent requests.
    /// </summary>
    public Uri Rewrite(Uri logical)
    {
        var last = _lastRewrite;
        if (last is not null && (ReferenceEquals(last.Logical, logical) || string.Equals(last.Logical.OriginalString, logical.OriginalString, StringComparison.Ordinal)))
        {
            return last.Physical;
        }

        var physical = new Uri(string.Concat(Authority, logical.PathAndQuery), UriKind.Absolute);
        _lastRewrite = new RewriteEntry(logical, physical);
        return physical;
    }

    private sealed record RewriteEntry(Uri Logical, Uri Physical);
}
