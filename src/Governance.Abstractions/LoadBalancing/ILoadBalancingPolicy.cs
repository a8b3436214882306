namespace Governance.LoadBalancing;

/// <summary>
/// A load-balancing algorithm, selected by <see cref="Name"/> (case-insensitive) in a service's
/// <c>LoadBalancer:Policy</c> setting. Register custom implementations as singletons of this interface in the
/// service collection; a custom policy with a built-in name replaces the built-in one.
/// </summary>
/// <remarks>
/// The policy is consulted off the request path: whenever a service's endpoint set changes (discovery update,
/// configuration reload, endpoint ejected or readmitted) it builds an immutable <see cref="IEndpointPicker"/>
/// over that set. Only <see cref="IEndpointPicker.Pick"/> runs per request.
/// </remarks>
public interface ILoadBalancingPolicy
{
    /// <summary>Gets the name used in configuration, for example <see cref="LoadBalancingPolicyNames.RoundRobin"/>.</summary>
    string Name { get; }

    /// <summary>Builds a picker over one immutable endpoint set.</summary>
    /// <param name="context">The endpoints, their live load and the service's settings.</param>
    /// <returns>A thread-safe picker; it must not allocate, lock or block in <see cref="IEndpointPicker.Pick"/>.</returns>
    IEndpointPicker CreatePicker(EndpointPickerContext context);
}
