namespace Governance.LoadBalancing;

/// <summary>Per-request inputs to <see cref="IEndpointPicker.Pick"/>.</summary>
public readonly struct PickContext
{
    /// <summary>Creates a pick context.</summary>
    /// <param name="hashKey">Affinity key (the value of the service's <c>LoadBalancer:HashHeader</c>), or <see langword="null"/>.</param>
    /// <param name="attempt">0 for a call's first pick; see <see cref="Attempt"/>.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="attempt"/> is negative.</exception>
    public PickContext(string? hashKey, int attempt = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(attempt);
        HashKey = hashKey;
        Attempt = attempt;
    }

    /// <summary>
    /// Gets the affinity key of the request: the value of the header named by the service's <c>LoadBalancer:HashHeader</c>,
    /// or <see langword="null"/> when the setting is empty or the request lacks the header.
    /// </summary>
    public string? HashKey { get; }

    /// <summary>
    /// Gets how many picks of this call came before this one and were turned down: 0 for a call's first pick (and for
    /// a retry's or hedge's first try); n when a retry or a hedge asks again because the n picks before named endpoints
    /// the call had already tried. A picker that hashes <see cref="HashKey"/> should derive its choice from the key and
    /// the attempt together, so that one key's retries go to the same alternate endpoints, in proportion to their
    /// weights (Envoy's ring-hash and Maglev balancers do the same with their host re-selection count). Other pickers may
    /// ignore it.
    /// </summary>
    public int Attempt { get; }
}
