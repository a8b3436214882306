using System.Globalization;
using System.Text;
using Governance.Configuration;
using Governance.Discovery.Consul;
using Microsoft.Extensions.Configuration;

namespace Governance.Registration;

/// <summary>The effective registration of this instance: configured values over the defaults, addresses resolved.</summary>
internal sealed class RegistrationSettings
{
    public static readonly TimeSpan DefaultInterval = TimeSpan.FromSeconds(10);
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(5);
    public static readonly TimeSpan DefaultDeregisterAfter = TimeSpan.FromMinutes(30);
    public const string DefaultHttpPath = "/health";

    private RegistrationSettings(ConsulConnection connection, ConsulServiceRegistration request, TimeSpan? ttl, bool failFast, string section)
    {
        Connection = connection;
        Request = request;
        Ttl = ttl;
        FailFast = failFast;
        Section = section;
    }

    public ConsulConnection Connection { get; }

    /// <summary>Gets the body of the registration request.</summary>
    public ConsulServiceRegistration Request { get; }

    public string InstanceId => Request.Id!;

    public string ServiceName => Request.Name!;

    /// <summary>Gets the id of the registration's check (Consul's default for a service's only check).</summary>
    public string CheckId => "service:" + InstanceId;

    /// <summary>Gets the time to live of a TTL check, or <see langword="null"/> for an HTTP check or none.</summary>
    public TimeSpan? Ttl { get; }

    /// <summary>
    /// Gets the interval between the starts of two heartbeats: a third of the TTL (with an HTTP check or none, the
    /// interval of the look-ups that verify the registration). After a failed heartbeat the next starts after
    /// <see cref="HeartbeatRetryInterval"/>.
    /// </summary>
    public TimeSpan HeartbeatInterval => Ttl is { } ttl ? ttl / 3 : ConsulConstants.RegistrationVerifyInterval;

    /// <summary>
    /// Gets how long after a failed heartbeat's start the next one starts, and how long a heartbeat may take (a sixth of
    /// the TTL; the request's own 10 s timeout bounds it too): heartbeats start at a fixed rate, whatever one takes, so
    /// two in a row may fail (hang, or be refused) with a sixth of the TTL to spare before it passes since the last one
    /// that reached the agent.
    /// </summary>
    public TimeSpan HeartbeatRetryInterval => HeartbeatInterval / 2;

    public bool FailFast { get; }

    /// <summary>Gets the configuration path of the registration section, for messages.</summary>
    public string Section { get; }

    /// <summary>
    /// Whether <paramref name="other"/> registers the same way: same agent, same registration body, same check kind and
    /// fail-fast switch (what a reload would have to re-register for).
    /// </summary>
    public bool SameAs(RegistrationSettings? other) =>
        other is not null
        && Connection.Equals(other.Connection)
        && Ttl == other.Ttl
        && FailFast == other.FailFast
        && System.Text.Json.JsonSerializer.Serialize(Request, ConsulJsonContext.Default.ConsulServiceRegistration)
            == System.Text.Json.JsonSerializer.Serialize(other.Request, ConsulJsonContext.Default.ConsulServiceRegistration);

    /// <summary>
    /// Resolves the registration, or returns <see langword="null"/> when it is off. The options were validated; what
    /// only shows at start (no listening address to be found) throws <see cref="InvalidOperationException"/>.
    /// </summary>
    public static RegistrationSettings? Create(GovernanceOptions options, IConfiguration? configuration, Func<string, string?> environment, Func<string?> hostAddress)
    {
        if (options.Registration is not { } registration || registration.Enabled == false)
        {
            return null;
        }

        var root = options.KeyPrefix();
        var section = root + "Registration";
        var connection = ConsulConnection.Create(options.Consul, root)
            ?? throw new InvalidOperationException($"{root}Consul:Address is required when registration is on");
        var name = options.Application?.Name?.Trim();
        if (string.IsNullOrEmpty(name))
        {
            throw new InvalidOperationException($"{root}Application:Name is required when registration is on");
        }

        var configuredAddress = NullIfEmpty(registration.Address);
        var configuredPort = registration.Port is > 0 ? registration.Port : null;
        ListeningAddress? listening = null;
        if (configuredAddress is null || configuredPort is null || registration.Scheme is null)
        {
            listening = ListeningAddress.Find(configuration, environment);
        }

        int port;
        if (configuredPort is { } p)
        {
            port = p;
        }
        else if (listening is null)
        {
            throw new InvalidOperationException($"{section}:Port is not set and the port this application listens on was not found ({ListeningAddress.SourcesText}): set {section}:Port");
        }
        else if (listening.Port == 0)
        {
            throw new InvalidOperationException($"{section}:Port is not set and this application listens on '{listening.Url}' ({listening.Source}), whose port 0 is chosen by the operating system at start: set {section}:Port");
        }
        else
        {
            port = listening.Port;
        }

        string address;
        if (configuredAddress is not null)
        {
            address = configuredAddress;
        }
        else if (listening is null)
        {
            throw new InvalidOperationException($"{section}:Address is not set and the address this application listens on was not found ({ListeningAddress.SourcesText}): set {section}:Address");
        }
        else if (listening.IsWildcard)
        {
            address = hostAddress()
                ?? throw new InvalidOperationException($"{section}:Address is not set and this application listens on every interface ('{listening.Url}', {listening.Source}), but no active non-loopback IPv4 address was found: set {section}:Address");
        }
        else if (string.Equals(listening.Host, "localhost", StringComparison.OrdinalIgnoreCase))
        {
            address = "127.0.0.1";
        }
        else
        {
            address = listening.Host;
        }

        // Consul takes IPv6 addresses without brackets.
        if (address.Length > 2 && address[0] == '[' && address[^1] == ']')
        {
            address = address[1..^1];
        }

        var scheme = NullIfEmpty(registration.Scheme)?.ToLowerInvariant() ?? listening?.Scheme ?? Uri.UriSchemeHttp;
        var instanceId = NullIfEmpty(registration.InstanceId) ?? DefaultInstanceId(name, Environment.MachineName, port);

        var meta = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in registration.Metadata)
        {
            meta[key] = value ?? string.Empty;
        }

        if (NullIfEmpty(options.Application?.Zone) is { } zone)
        {
            meta.TryAdd(ConsulConstants.ZoneMetadataKey, zone);
        }

        if (scheme == Uri.UriSchemeHttps)
        {
            meta.TryAdd(ConsulConstants.SecureMetadataKey, "true");
        }

        var tags = new List<string>();
        foreach (var tag in registration.Tags)
        {
            if (!string.IsNullOrWhiteSpace(tag) && !tags.Contains(tag.Trim(), StringComparer.Ordinal))
            {
                tags.Add(tag.Trim());
            }
        }

        var check = registration.Check;
        ConsulCheckDefinition? definition = null;
        TimeSpan? ttl = null;
        if (check?.Enabled != false)
        {
            var deregisterAfter = ConsulConstants.GoDuration(check?.DeregisterCriticalServiceAfter ?? DefaultDeregisterAfter);
            if (check?.Ttl is { } t)
            {
                ttl = t;
                definition = new ConsulCheckDefinition
                {
                    CheckId = "service:" + instanceId,
                    Name = $"Service '{name}' TTL check",
                    Ttl = ConsulConstants.GoDuration(t),
                    // A TTL check starts critical unless told otherwise; the instance is up, so it starts passing.
                    Status = "passing",
                    DeregisterCriticalServiceAfter = deregisterAfter,
                };
            }
            else
            {
                var host = address.Contains(':', StringComparison.Ordinal) ? $"[{address}]" : address;
                var path = NullIfEmpty(check?.HttpPath) ?? DefaultHttpPath;
                definition = new ConsulCheckDefinition
                {
                    CheckId = "service:" + instanceId,
                    Name = $"Service '{name}' HTTP check",
                    Http = $"{scheme}://{host}:{port.ToString(CultureInfo.InvariantCulture)}{path}",
                    Method = "GET",
                    Interval = ConsulConstants.GoDuration(check?.Interval ?? DefaultInterval),
                    Timeout = ConsulConstants.GoDuration(check?.Timeout ?? DefaultTimeout),
                    DeregisterCriticalServiceAfter = deregisterAfter,
                };
            }
        }

        var request = new ConsulServiceRegistration
        {
            Id = instanceId,
            Name = name,
            Tags = tags,
            Address = address,
            Port = port,
            Meta = meta,
            Weights = new ConsulWeights { Passing = registration.Weights?.Passing ?? 1, Warning = registration.Weights?.Warning ?? 1 },
            Check = definition,
        };
        return new RegistrationSettings(connection, request, ttl, registration.FailFast ?? false, section);
    }

    /// <summary>
    /// <c>{name}-{machine}-{port}</c>, lower case, characters other than letters, digits, <c>-</c>, <c>_</c> and <c>.</c>
    /// replaced by <c>-</c>: stable across restarts of the same instance and unique per machine and port.
    /// </summary>
    internal static string DefaultInstanceId(string name, string machine, int port)
    {
        var raw = $"{name}-{machine}-{port.ToString(CultureInfo.InvariantCulture)}".ToLowerInvariant();
        var id = new StringBuilder(raw.Length);
        foreach (var c in raw)
        {
            id.Append(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' ? c : '-');
        }

        return id.ToString();
    }

    private static string? NullIfEmpty(string? value) => string.IsNullOrWhiteSpace(value) ? null : value.Trim();
}
