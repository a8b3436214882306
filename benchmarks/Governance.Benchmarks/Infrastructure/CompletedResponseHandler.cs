using System.Net;

namespace Governance.Benchmarks.Infrastructure;

/// <summary>
/// The in-memory terminal handler: answers every request with one cached, already completed 200 response, so a
/// pipeline's measured cost is only what the handlers above it add. Remembers the URI it received while
/// <see cref="Record"/> is set, so that setup can check where a pipeline sent the request. Disposing it (the factory
/// may dispose primary handlers) changes nothing: <see cref="HttpMessageHandler"/> holds no resources.
/// </summary>
internal sealed class CompletedResponseHandler : HttpMessageHandler
{
    private readonly Task<HttpResponseMessage> _response = Task.FromResult(new HttpResponseMessage(HttpStatusCode.OK));

    public bool Record { get; set; }

    public Uri? LastUri { get; private set; }

    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        if (Record)
        {
            LastUri = request.RequestUri;
        }

        return _response;
    }

    protected override HttpResponseMessage Send(HttpRequestMessage request, CancellationToken cancellationToken) =>
        SendAsync(request, cancellationToken).Result;
}
