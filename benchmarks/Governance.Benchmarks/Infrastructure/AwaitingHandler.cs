namespace Governance.Benchmarks.Infrastructure;

/// <summary>
/// A handler with no work but one async layer: awaits its inner handler's task. The control row for what one handler
/// layer costs (<c>OneAsyncLayer</c> in <c>loopback-rounds</c> and <c>handoff-rounds</c>).
/// </summary>
internal sealed class AwaitingHandler : DelegatingHandler
{
    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) =>
        await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
}
