using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Governance.Configuration;

namespace Governance.Discovery.Consul;

/// <summary>Turns the instances of a health answer into endpoints.</summary>
internal static class ConsulEndpointMapper
{
    /// <summary>
    /// Maps every usable instance: address from <c>Service.Address</c>, else <c>Node.Address</c> (IPv6 bracketed);
    /// weight from <c>Service.Weights</c> (passing or warning, by the instance's worst check); <c>Service.Meta</c> as
    /// metadata, its <c>zone</c> as the zone and <c>secure=true</c> as https. Instances with a critical check, with a
    /// warning check when only passing ones are wanted, or with a warning weight of 0 are left out; unusable ones
    /// (no address, bad port) are reported to <paramref name="skipped"/>. The result is sorted by authority, one endpoint
    /// per authority, so that equal answers give equal lists.
    /// </summary>
    public static List<ServiceEndpoint> Map(IReadOnlyList<ConsulHealthEntry?> entries, bool onlyPassing, Action<string, string>? skipped = null) =>
        Map(entries, onlyPassing, skipped, out _);

    /// <summary>As <see cref="Map(IReadOnlyList{ConsulHealthEntry?}, bool, Action{string, string}?)"/>; <paramref name="unusable"/> counts the instances reported to <paramref name="skipped"/>.</summary>
    public static List<ServiceEndpoint> Map(IReadOnlyList<ConsulHealthEntry?> entries, bool onlyPassing, Action<string, string>? skipped, out int unusable)
    {
        unusable = 0;
        var endpoints = new List<ServiceEndpoint>(entries.Count);
        var seen = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var entry in entries)
        {
            var service = entry?.Service;
            var id = service?.Id ?? service?.Name ?? "(no id)";
            if (service is null)
            {
                Skip(ref unusable, skipped, id, "the entry has no Service");
                continue;
            }

            var status = WorstStatus(entry!.Checks);
            if (status == Status.Critical || (status == Status.Warning && onlyPassing))
            {
                continue;
            }

            // Consul's defaults are 1 and 1; a warning weight of 0 means "no traffic while in warning".
            var weight = status == Status.Warning ? service.Weights?.Warning ?? 1 : service.Weights?.Passing ?? 1;
            if (weight < 1)
            {
                if (status == Status.Warning)
                {
                    continue;
                }

                weight = 1;
            }

            var host = string.IsNullOrWhiteSpace(service.Address) ? entry.Node?.Address : service.Address;
            if (string.IsNullOrWhiteSpace(host))
            {
                Skip(ref unusable, skipped, id, "neither Service.Address nor Node.Address is set");
                continue;
            }

            if (service.Port is < 1 or > 65535)
            {
                Skip(ref unusable, skipped, id, $"port {service.Port.ToString(CultureInfo.InvariantCulture)} is not between 1 and 65535");
                continue;
            }

            if (!TryFormatHost(host.Trim(), out var formatted))
            {
                Skip(ref unusable, skipped, id, $"address '{host}' is not a host name or an IP address");
                continue;
            }

            Dictionary<string, string>? metadata = null;
            string? zone = null;
            var secure = false;
            if (service.Meta is { Count: > 0 } meta)
            {
                metadata = new Dictionary<string, string>(meta.Count, StringComparer.Ordinal);
                foreach (var (key, value) in meta)
                {
                    if (key is not null && value is not null)
                    {
                        metadata[key] = value;
                    }
                }

                metadata.TryGetValue(ConsulConstants.ZoneMetadataKey, out zone);
                secure = metadata.TryGetValue(ConsulConstants.SecureMetadataKey, out var s) && string.Equals(s, "true", StringComparison.OrdinalIgnoreCase);
            }

            var scheme = secure ? Uri.UriSchemeHttps : Uri.UriSchemeHttp;
            if (!Uri.TryCreate($"{scheme}://{formatted}:{service.Port.ToString(CultureInfo.InvariantCulture)}/", UriKind.Absolute, out var address))
            {
                Skip(ref unusable, skipped, id, $"address '{host}' does not make a valid URI");
                continue;
            }

            var endpoint = new ServiceEndpoint(address, Math.Min(weight, GovernanceOptionsValidator.MaxWeight), zone, metadata);
            if (seen.Add(endpoint.Authority))
            {
                endpoints.Add(endpoint);
            }
            else
            {
                Skip(ref unusable, skipped, id, $"another instance already has the address {endpoint.Authority}");
            }
        }

        endpoints.Sort(static (a, b) => string.CompareOrdinal(a.Authority, b.Authority));
        return endpoints;

        static void Skip(ref int count, Action<string, string>? report, string id, string reason)
        {
            count++;
            report?.Invoke(id, reason);
        }
    }

    /// <summary>Brackets IPv6 literals; accepts IPv4 literals and DNS names.</summary>
    internal static bool TryFormatHost(string host, out string formatted)
    {
        var bare = host.Length > 2 && host[0] == '[' && host[^1] == ']' ? host[1..^1] : host;
        if (IPAddress.TryParse(bare, out var ip))
        {
            formatted = ip.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{ip}]" : ip.ToString();
            return true;
        }

        formatted = host;
        return Uri.CheckHostName(host) == UriHostNameType.Dns;
    }

    private static Status WorstStatus(List<ConsulCheck?>? checks)
    {
        var worst = Status.Passing;
        if (checks is null)
        {
            return worst;
        }

        foreach (var check in checks)
        {
            var status = check?.Status;
            if (string.Equals(status, "critical", StringComparison.OrdinalIgnoreCase) || string.Equals(status, "maintenance", StringComparison.OrdinalIgnoreCase))
            {
                return Status.Critical;
            }

            if (string.Equals(status, "warning", StringComparison.OrdinalIgnoreCase))
            {
                worst = Status.Warning;
            }
        }

        return worst;
    }

    private enum Status
    {
        Passing,
        Warning,
        Critical,
    }
}
