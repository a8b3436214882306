namespace Governance.LoadBalancing;

/// <summary>Live load of the endpoints a picker was built over, maintained by the host (SDK handler or sidecar).</summary>
public interface IEndpointLoad
{
    /// <summary>Gets the number of requests currently in flight to an endpoint.</summary>
    /// <param name="index">Index into <see cref="EndpointPickerContext.Endpoints"/>.</param>
    /// <returns>The in-flight request count, 0 or more.</returns>
    int GetActiveRequests(int index);
}
