namespace Governance.LoadBalancing;

/// <summary>Picks one endpoint per request from the immutable set it was built over.</summary>
public interface IEndpointPicker
{
    /// <summary>Picks an endpoint. Called concurrently on the request path: no allocation, no lock, no blocking.</summary>
    /// <param name="context">Per-request inputs such as the hash key.</param>
    /// <returns>An index into <see cref="EndpointPickerContext.Endpoints"/> (0 to count - 1), or -1 when none can be picked.</returns>
    int Pick(in PickContext context);
}
