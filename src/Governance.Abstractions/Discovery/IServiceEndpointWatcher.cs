using Microsoft.Extensions.Primitives;

namespace Governance.Discovery;

/// <summary>Publishes the latest endpoints of one logical service.</summary>
public interface IServiceEndpointWatcher : IAsyncDisposable
{
    /// <summary>
    /// Gets the latest endpoints, or <see langword="null"/> before the first resolution completed. An empty list means the
    /// registry reported no usable endpoint. Providers keep the last good list when the registry cannot be reached.
    /// </summary>
    IReadOnlyList<ServiceEndpoint>? Current { get; }

    /// <summary>
    /// Gets a token that fires when <see cref="Current"/> next changes. Once a token has fired, return a new one: the
    /// runtime re-subscribes through <c>ChangeToken.OnChange</c>, which would loop on a token that has already fired.
    /// </summary>
    /// <returns>A change token; one that never fires when the endpoints never change.</returns>
    IChangeToken GetChangeToken();
}
