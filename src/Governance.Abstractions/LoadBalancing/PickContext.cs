namespace Governance.LoadBalancing;

/// <summary>Per-request inputs to <see cref="IEndpointPicker.Pick"/>.</summary>
public readonly struct PickContext
{
    /// <summary>Creates a pick context.</summary>
    /// <param name="hashKey">Affinity key (the value of the service's <c>LoadBalancer:HashHeader</c>), or <see langword="null"/>.</param>
    public PickContext(string? hashKey)
    {
        HashKey = hashKey;
    }

    /// <summary>
    /// Gets the affinity key of the request: the value of the header named by the service's <c>LoadBalancer:HashHeader</c>,
    /// or <see langword="null"/> when the setting is empty or the request lacks the header.
    /// </summary>
    public string? HashKey { get; }
}
