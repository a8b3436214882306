using System.Collections.Frozen;
using Governance.Configuration;
using Microsoft.Extensions.Primitives;

namespace Governance.Discovery;

/// <summary>
/// Endpoints from the service's <c>Endpoints</c> configuration. Reloading the configuration rebuilds the service, so
/// the watcher itself never changes.
/// </summary>
internal sealed class StaticServiceDiscoveryProvider : IServiceDiscoveryProvider
{
    public string Name => ServiceDiscoveryNames.Static;

    public IServiceEndpointWatcher Watch(string serviceName, ServiceOptions options)
    {
        var endpoints = new ServiceEndpoint[options.Endpoints.Count];
        for (var i = 0; i < endpoints.Length; i++)
        {
            var item = options.Endpoints[i];
            if (!GovernanceOptionsValidator.TryParseAddress(item.Address ?? string.Empty, out var address, out var problem))
            {
                throw new InvalidOperationException($"Endpoint {i} of service '{serviceName}', '{item.Address}', {problem}");
            }

            endpoints[i] = new ServiceEndpoint(address, item.Weight ?? 1, item.Zone, item.Metadata.Count == 0 ? null : item.Metadata.ToFrozenDictionary(StringComparer.Ordinal));
        }

        return new Watcher(endpoints);
    }

    private sealed class Watcher(IReadOnlyList<ServiceEndpoint> endpoints) : IServiceEndpointWatcher
    {
        private static readonly IChangeToken Never = new CancellationChangeToken(CancellationToken.None);

        public IReadOnlyList<ServiceEndpoint>? Current => endpoints;

        public IChangeToken GetChangeToken() => Never;

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
