using System.Globalization;
using Governance.Configuration;
using Microsoft.Extensions.Configuration;

namespace Governance.Configuration;

/// <summary>
/// Reads a <c>MeshGovernance</c> configuration section into <see cref="GovernanceOptions"/>. The configuration binder
/// does the binding; this type first checks the raw section against the schema so that a misspelled key or a malformed
/// number becomes a validation message naming the key instead of being dropped or throwing on the first problem, and it
/// expands the bare-string shorthand of endpoints, which the binder would silently skip.
/// </summary>
internal static class GovernanceConfigurationReader
{
    public static void Read(IConfiguration configuration, GovernanceOptions options)
    {
        // A section is read as given. A whole configuration (builder.Configuration) is read from its MeshGovernance
        // section when it has one; any other is read as the section itself, its keys named as they are.
        var section = configuration;
        string path;
        if (configuration is IConfigurationSection given)
        {
            path = given.Path;
        }
        else if (configuration.GetSection(GovernanceOptions.SectionName) is { } inner && inner.Exists())
        {
            section = inner;
            path = inner.Path;
        }
        else
        {
            path = string.Empty;
        }

        options.SetKeyPrefix(path.Length == 0 ? string.Empty : path + ":");
        options.CountSource(found: section is IConfigurationSection read ? read.Exists() : section.GetChildren().Any());
        var found = new List<string>();
        var malformed = new List<string>();
        GovernanceConfigurationSchema.Root.Check(section, path, found, malformed);

        // One section registered through two IConfiguration objects (GetSection returns a new one per call) is read
        // twice: each problem is still reported once.
        var errors = options.ConfigurationErrors();
        foreach (var error in found)
        {
            if (!errors.Contains(error))
            {
                errors.Add(error);
            }
        }

        if (malformed.Count > 0)
        {
            // The binder would throw on the first malformed value; bind everything else so that the validator can
            // still report every other problem in the same pass.
            section = Without(section, path, malformed);
        }

        ClearListsSetBy(section, options);
        section.Bind(options);
        ReadEndpoints(section.GetSection("Defaults"), options.Defaults);
        var prefix = options.KeyPrefix();
        foreach (var service in section.GetSection("Services").GetChildren())
        {
            // Messages about this service name its keys under this source (the last one that names it).
            options.SetServiceKeyPrefix(service.Key, prefix);
            if (options.Services.TryGetValue(service.Key, out var serviceOptions))
            {
                ReadEndpoints(service, serviceOptions);
            }
        }
    }

    /// <summary>
    /// Empties the lists <paramref name="section"/> gives items to: the binder appends to a list that already has items,
    /// so a second source (or the same section read twice) would add to the first one's <c>RetryOn</c> or <c>Tags</c>
    /// instead of replacing them, as every other key of a later source does (endpoints are replaced in
    /// <see cref="ReadEndpoints"/>).
    /// </summary>
    private static void ClearListsSetBy(IConfiguration section, GovernanceOptions options)
    {
        ClearServiceLists(section.GetSection("Defaults"), options.Defaults);
        foreach (var service in section.GetSection("Services").GetChildren())
        {
            if (options.Services.TryGetValue(service.Key, out var serviceOptions))
            {
                ClearServiceLists(service, serviceOptions);
            }
        }

        if (options.Registration is { } registration)
        {
            ClearIfSet(section.GetSection("Registration:Tags"), registration.Tags);
        }

        static void ClearServiceLists(IConfigurationSection service, ServiceOptions options)
        {
            ClearIfSet(service.GetSection("Tags"), options.Tags);
            if (options.Retry is { } retry)
            {
                ClearIfSet(service.GetSection("Retry:RetryOn"), retry.RetryOn);
            }
        }

        static void ClearIfSet(IConfigurationSection list, IList<string> items)
        {
            if (list.GetChildren().Any())
            {
                items.Clear();
            }
        }
    }

    private static IConfiguration Without(IConfiguration section, string path, List<string> malformed)
    {
        var prefix = path.Length == 0 ? string.Empty : path + ":";
        var kept = new List<KeyValuePair<string, string?>>();
        foreach (var pair in section.AsEnumerable())
        {
            if (pair.Value is not null && pair.Key.StartsWith(prefix, StringComparison.OrdinalIgnoreCase) && !malformed.Contains(pair.Key, StringComparer.OrdinalIgnoreCase))
            {
                kept.Add(new(pair.Key, pair.Value));
            }
        }

        var copy = new ConfigurationBuilder().AddInMemoryCollection(kept).Build();
        return path.Length == 0 ? copy : copy.GetSection(path);
    }

    private static void ReadEndpoints(IConfigurationSection service, ServiceOptions options)
    {
        // A source that names the service without listing endpoints (a later section that only sets its retries) keeps
        // what an earlier one listed, as for every other key.
        // An empty list in JSON ("Endpoints": []) is a key with no value and no children: present, so it still replaces.
        var list = service.GetSection("Endpoints");
        if (!list.Exists() && !service.GetChildren().Any(c => string.Equals(c.Key, "Endpoints", StringComparison.OrdinalIgnoreCase)))
        {
            return;
        }

        var items = list.GetChildren();
        options.Endpoints.Clear();
        foreach (var item in items)
        {
            var endpoint = new EndpointOptions();
            if (item.Value is { } address)
            {
                endpoint.Address = address;
                endpoint.MarkShorthand();
            }
            else
            {
                item.Bind(endpoint);
            }

            options.Endpoints.Add(endpoint);
        }
    }
}

/// <summary>The shape of the configuration section: which keys exist and what kind of value each takes.</summary>
internal sealed class GovernanceConfigurationSchema
{
    private readonly Kind _kind;
    private readonly Dictionary<string, GovernanceConfigurationSchema>? _children;
    private readonly GovernanceConfigurationSchema? _item;

    private GovernanceConfigurationSchema(Kind kind, Dictionary<string, GovernanceConfigurationSchema>? children = null, GovernanceConfigurationSchema? item = null)
    {
        _kind = kind;
        _children = children;
        _item = item;
    }

    private enum Kind
    {
        Text,
        Integer,
        Number,
        Boolean,
        Duration,
        Object,
        Map,
        List,
        TextOrObject,
    }

    public static GovernanceConfigurationSchema Root { get; } = CreateRoot();

    public void Check(IConfiguration node, string path, List<string> errors, List<string> malformed)
    {
        var value = (node as IConfigurationSection)?.Value;

        // An empty value (`"Ttl": ""`) means "not set" for typed settings, as the binder reads it.
        if (value is { Length: 0 } && _kind is Kind.Integer or Kind.Number or Kind.Boolean or Kind.Duration)
        {
            return;
        }

        switch (_kind)
        {
            case Kind.Text:
                ExpectLeaf(node, path, "a text value", errors);
                break;
            case Kind.Integer:
                if (ExpectLeaf(node, path, "a whole number", errors) && value is not null
                    && !int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out _))
                {
                    errors.Add($"{path} '{value}' is not a whole number");
                    malformed.Add(path);
                }

                break;
            case Kind.Number:
                if (ExpectLeaf(node, path, "a number", errors) && value is not null
                    && !double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out _))
                {
                    errors.Add($"{path} '{value}' is not a number");
                    malformed.Add(path);
                }

                break;
            case Kind.Boolean:
                if (ExpectLeaf(node, path, "true or false", errors) && value is not null && !bool.TryParse(value, out _))
                {
                    errors.Add($"{path} '{value}' is not true or false");
                    malformed.Add(path);
                }

                break;
            case Kind.Duration:
                if (ExpectLeaf(node, path, "a duration", errors) && value is not null)
                {
                    if (!TimeSpan.TryParse(value, CultureInfo.InvariantCulture, out _))
                    {
                        errors.Add($"{path} '{value}' is not a duration such as 00:00:05 (hh:mm:ss) or 00:00:00.250");
                        malformed.Add(path);
                    }
                    else if (value.Count(':') > 2)
                    {
                        // TimeSpan reads '00:00:05:00' as days, hours, minutes and seconds (5 minutes): a shifted field.
                        errors.Add($"{path} '{value}' must give hours, minutes and seconds (hh:mm:ss, such as 00:00:05, or d.hh:mm:ss for days): as written, .NET reads it as {TimeSpan.Parse(value, CultureInfo.InvariantCulture).ToString("c", CultureInfo.InvariantCulture)} (days, hours, minutes and seconds)");
                        malformed.Add(path);
                    }
                    else if (value.Count(':') < 2)
                    {
                        // TimeSpan reads '5' as 5 days and '00:30' as 30 minutes: almost never what such a value means here.
                        errors.Add($"{path} '{value}' must give hours, minutes and seconds (hh:mm:ss, such as 00:00:05 or 00:00:00.250): as written, .NET reads it as {TimeSpan.Parse(value, CultureInfo.InvariantCulture).ToString("c", CultureInfo.InvariantCulture)} ({(value.Contains(':', StringComparison.Ordinal) ? "hours and minutes" : "days")})");
                        malformed.Add(path);
                    }
                }

                break;
            case Kind.TextOrObject when !string.IsNullOrEmpty(value):
                var extra = node.GetChildren().Select(c => c.Key).ToList();
                if (extra.Count > 0)
                {
                    errors.Add($"{path} is a bare address '{value}' but also has the keys {string.Join(", ", extra)}: write it as an object with Address");
                }

                break;
            case Kind.Object or Kind.TextOrObject:
                // An empty JSON object or array arrives as an empty value.
                if (!string.IsNullOrEmpty(value))
                {
                    errors.Add($"{path} '{value}' must be a section with the keys {string.Join(", ", _children!.Keys)}");
                    break;
                }

                foreach (var child in node.GetChildren())
                {
                    if (_children!.TryGetValue(child.Key, out var schema))
                    {
                        schema.Check(child, child.Path, errors, malformed);
                    }
                    else
                    {
                        errors.Add($"{child.Path} is not a known setting ({string.Join(", ", _children.Keys)})");
                    }
                }

                break;
            case Kind.Map or Kind.List:
                if (!string.IsNullOrEmpty(value))
                {
                    errors.Add($"{path} '{value}' must be a {(_kind == Kind.List ? "list" : "section")}");
                    break;
                }

                foreach (var child in node.GetChildren())
                {
                    if (_kind == Kind.List && !int.TryParse(child.Key, NumberStyles.None, CultureInfo.InvariantCulture, out _))
                    {
                        errors.Add($"{child.Path} is not a list item: {path} must be a list");
                        continue;
                    }

                    _item!.Check(child, child.Path, errors, malformed);
                }

                break;
        }
    }

    private static bool ExpectLeaf(IConfiguration node, string path, string what, List<string> errors)
    {
        using var children = node.GetChildren().GetEnumerator();
        if (children.MoveNext())
        {
            errors.Add($"{path} must be {what}, not a section");
            return false;
        }

        return true;
    }

    private static GovernanceConfigurationSchema Object(params (string Key, GovernanceConfigurationSchema Schema)[] keys) =>
        new(Kind.Object, keys.ToDictionary(k => k.Key, k => k.Schema, StringComparer.OrdinalIgnoreCase));

    private static GovernanceConfigurationSchema CreateRoot()
    {
        var text = new GovernanceConfigurationSchema(Kind.Text);
        var integer = new GovernanceConfigurationSchema(Kind.Integer);
        var number = new GovernanceConfigurationSchema(Kind.Number);
        var boolean = new GovernanceConfigurationSchema(Kind.Boolean);
        var duration = new GovernanceConfigurationSchema(Kind.Duration);
        var textMap = new GovernanceConfigurationSchema(Kind.Map, item: text);
        var textList = new GovernanceConfigurationSchema(Kind.List, item: text);
        var endpoint = new GovernanceConfigurationSchema(
            Kind.TextOrObject,
            Object(("Address", text), ("Weight", integer), ("Zone", text), ("Metadata", textMap))._children);
        var service = Object(
            ("Discovery", text),
            ("Endpoints", new GovernanceConfigurationSchema(Kind.List, item: endpoint)),
            ("Tags", textList),
            ("OnlyPassing", boolean),
            ("LoadBalancer", Object(("Policy", text), ("HashHeader", text))),
            ("Retry", Object(
                ("MaxRetries", integer),
                ("Backoff", text),
                ("BaseDelay", duration),
                ("MaxDelay", duration),
                ("Jitter", boolean),
                ("RetryNonIdempotent", boolean),
                ("RetryOn", textList),
                ("Budget", Object(("RetryPercent", number), ("MinRetriesPerSecond", integer))))),
            ("Timeout", Object(("Enabled", boolean), ("Total", duration), ("PerAttempt", duration))),
            ("CircuitBreaker", Object(
                ("Enabled", boolean),
                ("FailureRatio", number),
                ("MinimumThroughput", integer),
                ("SamplingDuration", duration),
                ("BreakDuration", duration))),
            ("OutlierDetection", Object(
                ("Enabled", boolean),
                ("Consecutive5xx", integer),
                ("ConsecutiveGatewayFailure", integer),
                ("BaseEjectionTime", duration),
                ("MaxEjectionTime", duration),
                ("MaxEjectionPercent", integer),
                ("PanicThreshold", integer))),
            ("HealthCheck", Object(
                ("Path", text),
                ("Interval", duration),
                ("Timeout", duration),
                ("UnhealthyThreshold", integer),
                ("HealthyThreshold", integer),
                ("Protocol", text))),
            ("RateLimit", Object(("Enabled", boolean), ("Algorithm", text), ("PermitsPerSecond", integer), ("Burst", integer), ("QueueLimit", integer))),
            ("Hedging", Object(("Enabled", boolean), ("Delay", duration), ("MaxHedgedAttempts", integer))));
        var consul = Object(
            ("Address", text),
            ("Token", text),
            ("Datacenter", text),
            ("WaitTime", duration),
            ("InitialResolutionTimeout", duration));
        var registration = Object(
            ("Enabled", boolean),
            ("InstanceId", text),
            ("Address", text),
            ("Port", integer),
            ("Scheme", text),
            ("Tags", textList),
            ("Metadata", textMap),
            ("Weights", Object(("Passing", integer), ("Warning", integer))),
            ("Check", Object(
                ("Enabled", boolean),
                ("HttpPath", text),
                ("Interval", duration),
                ("Timeout", duration),
                ("Ttl", duration),
                ("DeregisterCriticalServiceAfter", duration))),
            ("FailFast", boolean));
        return Object(
            ("Application", Object(("Name", text), ("Zone", text))),
            ("Defaults", service),
            ("Services", new GovernanceConfigurationSchema(Kind.Map, item: service)),
            ("Consul", consul),
            ("Registration", registration));
    }
}
