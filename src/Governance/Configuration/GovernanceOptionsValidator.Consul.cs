using System.Globalization;
using System.Net;
using Governance.Discovery;
using Governance.Discovery.Consul;

namespace Governance.Configuration;

/// <summary>Checks of the <c>Consul</c> and <c>Registration</c> sections and of the Consul keys of services.</summary>
internal sealed partial class GovernanceOptionsValidator
{
    private const int MaxMetadataPairs = 64;
    private const int MaxMetadataKeyLength = 128;
    private const int MaxMetadataValueLength = 512;
    private static readonly string[] Schemes = [Uri.UriSchemeHttp, Uri.UriSchemeHttps];

    private void ValidateConsul(GovernanceOptions options, List<string> errors)
    {
        var root = options.KeyPrefix();
        var consul = options.Consul ?? new ConsulOptions();
        var path = $"{root}Consul";
        if (!string.IsNullOrWhiteSpace(consul.Address))
        {
            var address = consul.Address.Trim();
            if (!Uri.TryCreate(address, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
            {
                errors.Add($"{path}:Address '{consul.Address}' is not an absolute http or https URI, such as http://127.0.0.1:8500");
            }
            else if (uri.UserInfo.Length > 0 || uri.Query.Length > 0 || uri.Fragment.Length > 0)
            {
                errors.Add($"{path}:Address '{uri.Scheme}://{uri.Authority}{uri.AbsolutePath}' must not have user info, a query or a fragment: give the ACL token in {path}:Token");
            }
        }

        if (consul.Token is { Length: > 0 } token && !IsHeaderValue(token.Trim()))
        {
            // Never echo the token.
            errors.Add($"{path}:Token contains characters that cannot be sent in an HTTP header (the value is not shown)");
        }

        if (consul.Datacenter is { Length: > 0 } datacenter && !IsConsulName(datacenter.Trim()))
        {
            errors.Add($"{path}:Datacenter '{datacenter}' is not a datacenter name: use lower-case letters, digits, '-' and '_'");
        }
        else if (consul.Datacenter is { Length: > 0 } named && named.Trim().Any(char.IsAsciiLetterUpper))
        {
            // Consul lower-cases the names of its datacenters but routes ?dc= as given: an upper-case name never resolves.
            errors.Add($"{path}:Datacenter '{named}' has upper-case letters: Consul's datacenter names are lower case, so queries for it would never be answered (use '{named.Trim().ToLowerInvariant()}')");
        }

        Duration(consul.WaitTime, $"{path}:WaitTime", ConsulConstants.MinWaitTime, ConsulConstants.MaxWaitTime, errors);
        Duration(consul.InitialResolutionTimeout, $"{path}:InitialResolutionTimeout", TimeSpan.Zero, ConsulConstants.MaxWaitTime, errors);

        var defaults = options.Defaults ?? new ServiceOptions();
        ValidateTags(defaults.Tags, $"{root}Defaults:Tags", errors);
        var builtInConsul = _discovery.Contains(ServiceDiscoveryNames.Consul) && _discovery.Get(ServiceDiscoveryNames.Consul) is ConsulServiceDiscoveryProvider;
        var consulServices = new List<string>();
        foreach (var (name, service) in options.Services)
        {
            if (service is null)
            {
                continue;
            }

            var servicePath = $"{options.ServiceKeyPrefix(name)}Services:{name}";
            ValidateTags(service.Tags, $"{servicePath}:Tags", errors);
            var discovery = service.Discovery ?? defaults.Discovery;
            if (discovery is null || string.Equals(discovery, ServiceDiscoveryNames.Static, StringComparison.OrdinalIgnoreCase))
            {
                if (service.Tags.Count > 0)
                {
                    errors.Add($"{servicePath}:Tags is only used with Discovery 'Consul', but service '{name}' uses Static endpoints: remove the tags or set {servicePath}:Discovery to Consul");
                }

                if (service.OnlyPassing is not null)
                {
                    errors.Add($"{servicePath}:OnlyPassing is only used with Discovery 'Consul', but service '{name}' uses Static endpoints: remove it or set {servicePath}:Discovery to Consul");
                }
            }
            else if (builtInConsul && string.Equals(discovery, ServiceDiscoveryNames.Consul, StringComparison.OrdinalIgnoreCase))
            {
                consulServices.Add(name);
            }
        }

        var registration = options.Registration;
        var registering = registration is not null && registration.Enabled != false;
        if (string.IsNullOrWhiteSpace(consul.Address) && (consulServices.Count > 0 || registering))
        {
            var users = new List<string>(2);
            if (consulServices.Count > 0)
            {
                users.Add(consulServices.Count == 1
                    ? $"service '{consulServices[0]}' uses Discovery 'Consul'"
                    : $"services {string.Join(", ", consulServices.Select(static s => $"'{s}'"))} use Discovery 'Consul'");
            }

            if (registering)
            {
                users.Add($"{root}Registration is on");
            }

            errors.Add($"{path}:Address is required because {string.Join(" and ", users)}: give the HTTP address of a Consul agent, such as http://127.0.0.1:8500");
        }

        if (registration is not null)
        {
            ValidateRegistration(registration, registering, options, errors);
        }
    }

    private static void ValidateRegistration(RegistrationOptions registration, bool registering, GovernanceOptions options, List<string> errors)
    {
        var root = options.KeyPrefix();
        var path = $"{root}Registration";
        var name = options.Application?.Name?.Trim();
        if (registering && string.IsNullOrEmpty(name))
        {
            errors.Add($"{root}Application:Name is required when {path} is on: it is the service name registered in Consul");
        }
        else if (registering && Uri.CheckHostName(name) != UriHostNameType.Dns)
        {
            errors.Add($"{root}Application:Name '{name}' cannot be registered in Consul: other services discover it by name as the host of their request URIs, so it must be a DNS name of letters, digits, '-' and '.'");
        }

        if (registration.InstanceId is { Length: > 0 } id && id.Trim().Any(static c => c is '/' or '\\' or '?' or '#' or '%' || char.IsWhiteSpace(c) || char.IsControl(c)))
        {
            errors.Add($"{path}:InstanceId '{id}' must not contain '/', '\\', '?', '#', '%', whitespace or control characters: it is part of Consul's URLs");
        }

        if (registration.Address is { Length: > 0 } address && !IsHostOrIp(address.Trim()))
        {
            errors.Add($"{path}:Address '{address}' is not a host name or IP address: give it without scheme or port, such as 10.0.0.5 (the port goes in {path}:Port)");
        }

        IntRange(registration.Port, $"{path}:Port", 0, 65535, errors);
        OneOf(registration.Scheme, $"{path}:Scheme", "scheme", Schemes, errors);
        ValidateTags(registration.Tags, $"{path}:Tags", errors);
        ValidateMetadata(registration.Metadata, $"{path}:Metadata", errors);
        ValidateAddedMetadata(options, registration, root, path, errors);
        if (registration.Weights is { } weights)
        {
            IntRange(weights.Passing, $"{path}:Weights:Passing", 1, MaxWeight, errors);
            IntRange(weights.Warning, $"{path}:Weights:Warning", 0, MaxWeight, errors);
        }

        if (registration.Check is { } check)
        {
            var p = $"{path}:Check";
            if (check.HttpPath is { Length: > 0 } probe && (!probe.StartsWith('/') || !Uri.TryCreate(probe, UriKind.Relative, out _)))
            {
                errors.Add($"{p}:HttpPath '{probe}' must be an absolute path such as /health");
            }

            if (!string.IsNullOrWhiteSpace(check.HttpPath) && check.Ttl is not null)
            {
                errors.Add($"{p}:HttpPath and {p}:Ttl are both set: the check is either an HTTP check (HttpPath) or a TTL check (Ttl), so remove one of them");
            }

            if (check.Ttl is not null && string.IsNullOrWhiteSpace(check.HttpPath) && (check.Interval is not null || check.Timeout is not null))
            {
                var both = check.Interval is not null && check.Timeout is not null;
                var keys = both ? "Interval, Timeout" : check.Interval is not null ? "Interval" : "Timeout";
                errors.Add($"{p}:{keys} {(both ? "have" : "has")} no effect with {p}:Ttl: Consul runs an HTTP check at an interval with a timeout, while a TTL check is kept passing by heartbeats every Ttl/3; remove {(both ? "them" : "it")} or Ttl");
            }

            Duration(check.Interval, $"{p}:Interval", TimeSpan.FromSeconds(1), errors);
            Duration(check.Timeout, $"{p}:Timeout", TimeSpan.FromMilliseconds(1), errors);
            Duration(check.Ttl, $"{p}:Ttl", TimeSpan.FromSeconds(1), errors);
            Duration(check.DeregisterCriticalServiceAfter, $"{p}:DeregisterCriticalServiceAfter", TimeSpan.FromMinutes(1), errors);
            var interval = check.Interval ?? Registration.RegistrationSettings.DefaultInterval;
            var timeout = check.Timeout ?? Registration.RegistrationSettings.DefaultTimeout;
            if (check.Ttl is null && timeout > interval && timeout <= MaxDuration && interval >= TimeSpan.FromSeconds(1))
            {
                errors.Add($"{p}:Timeout '{timeout}' must not exceed {p}:Interval '{interval}'");
            }
        }
    }

    private static void ValidateTags(IList<string> tags, string path, List<string> errors)
    {
        for (var i = 0; i < tags.Count; i++)
        {
            if (string.IsNullOrWhiteSpace(tags[i]))
            {
                errors.Add($"{path}:{i.ToString(CultureInfo.InvariantCulture)} is empty: a tag must have text");
            }
        }
    }

    private static void ValidateMetadata(IDictionary<string, string> metadata, string path, List<string> errors)
    {
        if (metadata.Count > MaxMetadataPairs)
        {
            errors.Add($"{path} has {metadata.Count.ToString(CultureInfo.InvariantCulture)} keys: Consul allows at most {MaxMetadataPairs.ToString(CultureInfo.InvariantCulture)}");
        }

        foreach (var (key, value) in metadata)
        {
            if (key.Length is 0 or > MaxMetadataKeyLength || !key.All(static c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'))
            {
                errors.Add($"{path}:{key} is not a Consul metadata key: use 1 to {MaxMetadataKeyLength.ToString(CultureInfo.InvariantCulture)} letters, digits, '-' and '_'");
            }
            else if (key.StartsWith("consul-", StringComparison.OrdinalIgnoreCase))
            {
                errors.Add($"{path}:{key} uses the prefix 'consul-', which Consul reserves");
            }

            if (value is { Length: > MaxMetadataValueLength })
            {
                errors.Add($"{path}:{key} is {value.Length.ToString(CultureInfo.InvariantCulture)} characters long: Consul allows at most {MaxMetadataValueLength.ToString(CultureInfo.InvariantCulture)}");
            }
        }
    }

    /// <summary>
    /// The keys registration adds to the configured metadata (<c>zone</c> from <c>Application:Zone</c>, <c>secure</c> for
    /// an https scheme set in configuration) count against Consul's limits too: the registration would be refused with
    /// 400 on every attempt. (An https scheme learnt from the server's listening address is known only at start.)
    /// </summary>
    private static void ValidateAddedMetadata(GovernanceOptions options, RegistrationOptions registration, string root, string path, List<string> errors)
    {
        var added = new List<string>();
        if (options.Application?.Zone?.Trim() is { Length: > 0 } zone && !registration.Metadata.ContainsKey(ConsulConstants.ZoneMetadataKey))
        {
            added.Add($"'{ConsulConstants.ZoneMetadataKey}' (from {root}Application:Zone)");
            if (zone.Length > MaxMetadataValueLength)
            {
                errors.Add($"{root}Application:Zone is {zone.Length.ToString(CultureInfo.InvariantCulture)} characters long: registration puts it in Consul metadata, which allows at most {MaxMetadataValueLength.ToString(CultureInfo.InvariantCulture)}");
            }
        }

        if (string.Equals(registration.Scheme?.Trim(), Uri.UriSchemeHttps, StringComparison.OrdinalIgnoreCase) && !registration.Metadata.ContainsKey(ConsulConstants.SecureMetadataKey))
        {
            added.Add($"'{ConsulConstants.SecureMetadataKey}' (for {path}:Scheme https)");
        }

        var total = registration.Metadata.Count + added.Count;
        if (added.Count > 0 && registration.Metadata.Count <= MaxMetadataPairs && total > MaxMetadataPairs)
        {
            errors.Add($"{path}:Metadata has {registration.Metadata.Count.ToString(CultureInfo.InvariantCulture)} keys and registration adds {string.Join(" and ", added)}: Consul allows at most {MaxMetadataPairs.ToString(CultureInfo.InvariantCulture)} in all");
        }
    }

    private static void Duration(TimeSpan? value, string path, TimeSpan min, TimeSpan max, List<string> errors)
    {
        if (value is { } v && (v < min || v > max))
        {
            errors.Add($"{path} '{v}' must be between {min} and {max}");
        }
    }

    private static bool IsHostOrIp(string value)
    {
        var bare = value.Length > 2 && value[0] == '[' && value[^1] == ']' ? value[1..^1] : value;
        return IPAddress.TryParse(bare, out _) || Uri.CheckHostName(value) == UriHostNameType.Dns;
    }

    private static bool IsConsulName(string value) => value.All(static c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_');

    private static bool IsHeaderValue(string value)
    {
        foreach (var c in value)
        {
            if (c <= ' ' || c >= 127)
            {
                return false;
            }
        }

        return true;
    }
}
