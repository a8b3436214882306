using Governance.LoadBalancing;

namespace Governance.Tests.LoadBalancing;

/// <summary>In-flight counts set by the test; a picker reads them live on every pick.</summary>
internal sealed class FixedLoad(int[] active) : IEndpointLoad
{
    public int[] Active { get; } = active;

    public int GetActiveRequests(int index) => Active[index];
}
