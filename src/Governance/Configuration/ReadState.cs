using System.Runtime.CompilerServices;

namespace Governance.Configuration;

/// <summary>
/// What reading the raw configuration learned about an options instance, kept beside it (not in the Abstractions
/// package's types, which must not expose internals to this one: the two packages may be upgraded apart): the key prefix
/// that names its settings in messages, the errors found while reading, and which endpoints were written as a bare
/// address. Instances the reader never saw (options configured in code only) have the defaults.
/// </summary>
internal static class ReadState
{
    private static readonly ConditionalWeakTable<GovernanceOptions, Options> States = new();
    private static readonly ConditionalWeakTable<EndpointOptions, object> Shorthands = new();

    /// <summary>Gets the configuration path the options were read from followed by <c>:</c> (empty for a configuration root whose top-level keys are the settings).</summary>
    public static string KeyPrefix(this GovernanceOptions options) =>
        States.TryGetValue(options, out var state) ? state.KeyPrefix : GovernanceOptions.SectionName + ":";

    /// <summary>Gets the errors found while reading the raw configuration (unknown keys, malformed values), added to by the reader.</summary>
    public static List<string> ConfigurationErrors(this GovernanceOptions options) => States.GetOrCreateValue(options).Errors;

    public static void SetKeyPrefix(this GovernanceOptions options, string prefix) => States.GetOrCreateValue(options).KeyPrefix = prefix;

    /// <summary>
    /// Gets the key prefix of the source that last named <paramref name="service"/> (several sections may be registered),
    /// or <see cref="KeyPrefix"/> when no source did (a service configured in code).
    /// </summary>
    public static string ServiceKeyPrefix(this GovernanceOptions options, string service) =>
        States.TryGetValue(options, out var state) && state.ServicePrefixes.TryGetValue(service, out var prefix) ? prefix : options.KeyPrefix();

    /// <summary>Records that the source with <paramref name="prefix"/> names <paramref name="service"/>.</summary>
    public static void SetServiceKeyPrefix(this GovernanceOptions options, string service, string prefix) =>
        States.GetOrCreateValue(options).ServicePrefixes[service] = prefix;

    /// <summary>Counts a configuration source read into the options, and whether it had anything in it.</summary>
    public static void CountSource(this GovernanceOptions options, bool found)
    {
        var state = States.GetOrCreateValue(options);
        state.SourcesRead++;
        state.SourcesFound += found ? 1 : 0;
    }

    /// <summary>
    /// Gets a value indicating whether configuration sources were read into the options and none of them existed (no
    /// <c>MeshGovernance</c> section: misspelled, or a file deleted or emptied by a failed parse); <see langword="false"/>
    /// for options configured in code only.
    /// </summary>
    public static bool EverySourceMissing(this GovernanceOptions options) =>
        States.TryGetValue(options, out var state) && state.SourcesRead > 0 && state.SourcesFound == 0;

    /// <summary>Gets a value indicating whether at least one configuration source read into the options existed.</summary>
    public static bool AnySourceFound(this GovernanceOptions options) =>
        States.TryGetValue(options, out var state) && state.SourcesFound > 0;

    /// <summary>Gets a value indicating whether the endpoint was written as a bare address string (messages then name the item, not its <c>Address</c>).</summary>
    public static bool IsShorthand(this EndpointOptions endpoint) => Shorthands.TryGetValue(endpoint, out _);

    public static void MarkShorthand(this EndpointOptions endpoint) => Shorthands.AddOrUpdate(endpoint, Marker);

    private static readonly object Marker = new();

    private sealed class Options
    {
        public string KeyPrefix { get; set; } = GovernanceOptions.SectionName + ":";

        public List<string> Errors { get; } = [];

        public Dictionary<string, string> ServicePrefixes { get; } = new(StringComparer.OrdinalIgnoreCase);

        public int SourcesRead { get; set; }

        public int SourcesFound { get; set; }
    }
}
