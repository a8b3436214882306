using System.Collections.Frozen;

namespace Governance;

/// <summary>
/// One network endpoint of a logical service: where to send requests, how much traffic it takes relative to its peers,
/// and where it runs. Instances are immutable and safe to share between threads.
/// </summary>
public sealed class ServiceEndpoint : IEquatable<ServiceEndpoint>
{
    private static readonly IReadOnlyDictionary<string, string> EmptyMetadata = FrozenDictionary<string, string>.Empty;

    /// <summary>Creates an endpoint.</summary>
    /// <param name="address">Absolute <c>http</c> or <c>https</c> URI; only scheme, host and port are used.</param>
    /// <param name="weight">Relative share of traffic, 1 or more. Default 1.</param>
    /// <param name="zone">Zone (availability zone, rack, locality) the endpoint runs in; <see langword="null"/> when unknown. Surrounding blanks are trimmed, and a blank zone is unknown.</param>
    /// <param name="metadata">Free-form labels such as <c>version</c>; empty when <see langword="null"/>. Copied (a frozen dictionary is kept as it is), so a later change to the caller's dictionary does not change the endpoint.</param>
    /// <exception cref="ArgumentException"><paramref name="address"/> is not an absolute http(s) URI, or carries user information (which would reach logs and request URIs).</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="weight"/> is less than 1.</exception>
    public ServiceEndpoint(Uri address, int weight = 1, string? zone = null, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(address);
        if (!address.IsAbsoluteUri || (address.Scheme != Uri.UriSchemeHttp && address.Scheme != Uri.UriSchemeHttps))
        {
            throw new ArgumentException($"'{address}' is not an absolute http or https URI.", nameof(address));
        }

        if (address.UserInfo.Length > 0)
        {
            // Not echoed: it may hold a password.
            throw new ArgumentException("An endpoint address must not carry user information.", nameof(address));
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(weight, 1);
        Address = address;
        Weight = weight;
        Zone = string.IsNullOrWhiteSpace(zone) ? null : zone.Trim();
        Metadata = metadata is null || metadata.Count == 0 ? EmptyMetadata
            : metadata is FrozenDictionary<string, string> frozen ? frozen
            : metadata is Dictionary<string, string> dictionary ? dictionary.ToFrozenDictionary(dictionary.Comparer)
            : metadata.ToFrozenDictionary(StringComparer.Ordinal);
        Authority = address.GetLeftPart(UriPartial.Authority);
    }

    /// <summary>Gets the address; requests keep their path and query and take this scheme, host and port.</summary>
    public Uri Address { get; }

    /// <summary>Gets the relative share of traffic (1 or more; default 1).</summary>
    public int Weight { get; }

    /// <summary>Gets the zone the endpoint runs in, or <see langword="null"/> when unknown.</summary>
    public string? Zone { get; }

    /// <summary>Gets the endpoint's labels (never <see langword="null"/>).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Gets <c>scheme://host:port</c> of <see cref="Address"/> (without the port when it is the scheme's default), which identifies the endpoint.</summary>
    public string Authority { get; }

    /// <inheritdoc />
    public bool Equals(ServiceEndpoint? other) =>
        other is not null
        && string.Equals(Authority, other.Authority, StringComparison.OrdinalIgnoreCase)
        && Weight == other.Weight
        && string.Equals(Zone, other.Zone, StringComparison.Ordinal)
        && MetadataEquals(Metadata, other.Metadata);

    /// <inheritdoc />
    public override bool Equals(object? obj) => Equals(obj as ServiceEndpoint);

    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(StringComparer.OrdinalIgnoreCase.GetHashCode(Authority), Weight, Zone);

    /// <summary>Returns <see cref="Authority"/>.</summary>
    /// <returns>The endpoint's <c>scheme://host:port</c>.</returns>
    public override string ToString() => Authority;

    private static bool MetadataEquals(IReadOnlyDictionary<string, string> a, IReadOnlyDictionary<string, string> b)
    {
        if (ReferenceEquals(a, b))
        {
            return true;
        }

        if (a.Count != b.Count)
        {
            return false;
        }

        // Both ways, so that two dictionaries with different key comparers compare the same whichever is asked.
        return Contains(a, b) && Contains(b, a);
    }

    private static bool Contains(IReadOnlyDictionary<string, string> a, IReadOnlyDictionary<string, string> b)
    {
        foreach (var pair in a)
        {
            if (!b.TryGetValue(pair.Key, out var value) || !string.Equals(value, pair.Value, StringComparison.Ordinal))
            {
                return false;
            }
        }

        return true;
    }
}
