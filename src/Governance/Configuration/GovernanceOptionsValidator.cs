using System.Globalization;
using Governance.Discovery;
using Governance.LoadBalancing;

namespace Governance.Configuration;

/// <summary>
/// Checks a whole <see cref="GovernanceOptions"/> and returns every problem at once, each naming the full key path,
/// the bad value and the allowed values or range. Used at startup and on every reload.
/// </summary>
internal sealed partial class GovernanceOptionsValidator
{
    public const int MaxWeight = 65535;

    private readonly LoadBalancingPolicyRegistry _policies;
    private readonly ServiceDiscoveryProviderRegistry _discovery;

    public GovernanceOptionsValidator(LoadBalancingPolicyRegistry policies, ServiceDiscoveryProviderRegistry discovery)
    {
        _policies = policies;
        _discovery = discovery;
    }

    public List<string> Validate(GovernanceOptions options)
    {
        // Malformed values were left out of binding and are reported here; everything else is checked as usual.
        var errors = new List<string>(options.ConfigurationErrors());

        var root = options.KeyPrefix();
        var defaults = options.Defaults ?? new ServiceOptions();
        if (defaults.Endpoints.Count > 0)
        {
            errors.Add($"{root}Defaults:Endpoints is not allowed: endpoints belong to a service under {root}Services");
        }

        ValidateDiscoveryName(defaults.Discovery, $"{root}Defaults:Discovery", errors);
        ValidateLoadBalancer(defaults.LoadBalancer, $"{root}Defaults:LoadBalancer", errors);
        ValidateResilience(defaults, $"{root}Defaults", errors);
        ValidateEffective(new ServiceOptions(), defaults, $"{root}Defaults", $"{root}Defaults", errors);

        var inheritHashPolicy = new List<string>();
        foreach (var (name, service) in options.Services)
        {
            var path = $"{options.ServiceKeyPrefix(name)}Services:{name}";
            if (Uri.CheckHostName(name) != UriHostNameType.Dns || name.Contains('.', StringComparison.Ordinal) && name.EndsWith('.'))
            {
                errors.Add($"{path}: '{name}' is not a valid service name: it is used as the host of request URIs (http://{name}/...), so it must be a DNS name of letters, digits, '-' and '.'");
            }
            else if (!System.Text.Ascii.IsValid(name))
            {
                // Requests may write an internationalized host in either form; the service is keyed by the ASCII one.
                errors.Add($"{path}: '{name}' is not a valid service name: {AsciiForm(name)}");
            }

            if (service is null)
            {
                errors.Add($"{path} is empty: list its Endpoints or set its Discovery");
                continue;
            }

            ValidateService(name, service, defaults, path, $"{root}Defaults", errors, inheritHashPolicy);
        }

        if (inheritHashPolicy.Count > 0)
        {
            // Reported once, where the policy comes from, naming the services that take it as it is.
            errors.Add($"{root}Defaults:LoadBalancer:HashHeader is required when {root}Defaults:LoadBalancer:Policy is ConsistentHash and a service sets no HashHeader of its own (service{(inheritHashPolicy.Count == 1 ? string.Empty : "s")} {string.Join(", ", inheritHashPolicy)}): name the request header that carries the affinity key, for example x-user-id");
        }

        ValidateConsul(options, errors);
        return errors;
    }

    /// <summary>What to write instead of a non-ASCII service name: its ASCII (punycode) form, when it has one.</summary>
    private static string AsciiForm(string name)
    {
        try
        {
            return $"write an internationalized name in its ASCII (punycode) form, '{new System.Globalization.IdnMapping().GetAscii(name)}' (requests may use either form)";
        }
        catch (ArgumentException)
        {
            return "it has no ASCII (punycode) form; service names are DNS names of letters, digits, '-' and '.'";
        }
    }

    private void ValidateService(string name, ServiceOptions service, ServiceOptions defaults, string path, string defaultsPath, List<string> errors, List<string> inheritHashPolicy)
    {
        var discovery = service.Discovery ?? defaults.Discovery;
        if (service.Discovery is not null)
        {
            ValidateDiscoveryName(service.Discovery, $"{path}:Discovery", errors);
        }

        var isStatic = discovery is null || string.Equals(discovery, ServiceDiscoveryNames.Static, StringComparison.OrdinalIgnoreCase);
        if (isStatic && service.Endpoints.Count == 0)
        {
            errors.Add(discovery is null
                ? $"{path}:Endpoints must list at least one endpoint, or {path}:Discovery must name a discovery provider ({_discovery.NameList})"
                : $"{path}:Endpoints must list at least one endpoint when Discovery is '{discovery}'");
        }
        else if (!isStatic && service.Endpoints.Count > 0)
        {
            errors.Add($"{path}:Endpoints is only used with Discovery 'Static', but {(service.Discovery is null ? defaultsPath : path)}:Discovery is '{discovery}': remove the endpoints or set {path}:Discovery to Static");
        }

        var seen = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
        for (var i = 0; i < service.Endpoints.Count; i++)
        {
            ValidateEndpoint(service.Endpoints[i], $"{path}:Endpoints:{i.ToString(CultureInfo.InvariantCulture)}", seen, i, errors);
        }

        if (service.LoadBalancer is not null)
        {
            ValidateLoadBalancer(service.LoadBalancer, $"{path}:LoadBalancer", errors);
        }

        var policy = service.LoadBalancer?.Policy ?? defaults.LoadBalancer?.Policy;
        var hashHeader = service.LoadBalancer?.HashHeader ?? defaults.LoadBalancer?.HashHeader;
        if (string.Equals(policy, LoadBalancingPolicyNames.ConsistentHash, StringComparison.OrdinalIgnoreCase) && string.IsNullOrWhiteSpace(hashHeader))
        {
            if (service.LoadBalancer?.Policy is null)
            {
                inheritHashPolicy.Add(name);
            }
            else
            {
                errors.Add($"{path}:LoadBalancer:HashHeader is required when the policy of service '{name}' is ConsistentHash: name the request header that carries the affinity key, for example x-user-id");
            }
        }

        ValidateResilience(service, path, errors);
        ValidateEffective(service, defaults, path, defaultsPath, errors);
    }

    private static void ValidateEndpoint(EndpointOptions? endpoint, string path, Dictionary<string, int> seen, int index, List<string> errors)
    {
        if (endpoint is null)
        {
            errors.Add($"{path} is empty: give an address such as http://10.0.0.5:8080");
            return;
        }

        var addressPath = endpoint.IsShorthand() ? path : $"{path}:Address";
        if (string.IsNullOrWhiteSpace(endpoint.Address))
        {
            errors.Add($"{addressPath} is required: give an absolute http or https address such as http://10.0.0.5:8080");
        }
        else if (!TryParseAddress(endpoint.Address, out var uri, out var problem))
        {
            errors.Add($"{addressPath} '{endpoint.Address}' {problem}");
        }
        else
        {
            var authority = uri.GetLeftPart(UriPartial.Authority);
            if (seen.TryGetValue(authority, out var first))
            {
                errors.Add($"{addressPath} '{endpoint.Address}' duplicates endpoint {first.ToString(CultureInfo.InvariantCulture)} of the same service");
            }
            else
            {
                seen[authority] = index;
            }
        }

        if (endpoint.Weight is { } weight && (weight < 1 || weight > MaxWeight))
        {
            errors.Add($"{path}:Weight '{weight.ToString(CultureInfo.InvariantCulture)}' must be between 1 and {MaxWeight.ToString(CultureInfo.InvariantCulture)}");
        }
    }

    internal static bool TryParseAddress(string address, out Uri uri, out string problem)
    {
        if (!Uri.TryCreate(address.Trim(), UriKind.Absolute, out uri!) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
        {
            problem = "is not an absolute http or https URI, such as http://10.0.0.5:8080";
            return false;
        }

        if (uri.AbsolutePath != "/" || uri.Query.Length > 0 || uri.Fragment.Length > 0 || uri.UserInfo.Length > 0)
        {
            problem = "must be only scheme://host:port: requests keep their own path and query, so a path, query, fragment or user info here would be ignored";
            return false;
        }

        if (uri.Port == 0)
        {
            problem = "has port 0, which no request can be sent to: give the port the endpoint listens on";
            return false;
        }

        if (System.Net.IPAddress.TryParse(uri.Host, out var ip) && (ip.Equals(System.Net.IPAddress.Any) || ip.Equals(System.Net.IPAddress.IPv6Any)))
        {
            problem = $"has the wildcard address {uri.Host}, which a server listens on but no request can be sent to: give the endpoint's own address";
            return false;
        }

        problem = string.Empty;
        return true;
    }

    private void ValidateDiscoveryName(string? name, string path, List<string> errors)
    {
        if (name is not null && !_discovery.Contains(name))
        {
            errors.Add($"{path} '{name}' is not a known discovery provider ({_discovery.NameList})");
        }
    }

    private void ValidateLoadBalancer(LoadBalancerOptions? options, string path, List<string> errors)
    {
        if (options is null)
        {
            return;
        }

        if (options.Policy is not null && !_policies.Contains(options.Policy))
        {
            errors.Add($"{path}:Policy '{options.Policy}' is not a known policy ({_policies.NameList})");
        }

        if (options.HashHeader is { Length: > 0 } header && !IsHeaderToken(header))
        {
            errors.Add($"{path}:HashHeader '{header}' is not a valid HTTP header name");
        }
    }

    private static bool IsHeaderToken(string name)
    {
        foreach (var c in name)
        {
            if (c <= ' ' || c >= 127 || "\"(),/:;<=>?@[\\]{}".Contains(c, StringComparison.Ordinal))
            {
                return false;
            }
        }

        return true;
    }
}
