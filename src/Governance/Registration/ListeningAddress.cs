using System.Globalization;
using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using Microsoft.Extensions.Configuration;

namespace Governance.Registration;

/// <summary>
/// The address the application listens on, as far as configuration tells, without depending on ASP.NET Core. Sources in
/// Kestrel's order of precedence: <c>Kestrel:Endpoints:*:Url</c>, <c>urls</c>, <c>http_ports</c> and <c>https_ports</c>
/// (ASP.NET Core maps <c>ASPNETCORE_URLS</c>, <c>ASPNETCORE_HTTP_PORTS</c>, <c>UseUrls</c> and <c>--urls</c> to these
/// keys), then the environment variables <c>ASPNETCORE_URLS</c>, <c>DOTNET_URLS</c>, <c>ASPNETCORE_HTTP_PORTS</c>,
/// <c>DOTNET_HTTP_PORTS</c>, <c>ASPNETCORE_HTTPS_PORTS</c> and <c>DOTNET_HTTPS_PORTS</c> for hosts that do not map them.
/// The first source with a usable URL wins; in it, the first <c>http</c> URL, else the first <c>https</c> one.
/// </summary>
internal sealed record ListeningAddress(string Scheme, string Host, int Port, string Url, string Source)
{
    public const string SourcesText = "configuration keys Kestrel:Endpoints:*:Url, urls, http_ports, https_ports and environment variables ASPNETCORE_URLS, DOTNET_URLS, ASPNETCORE_HTTP_PORTS, DOTNET_HTTP_PORTS, ASPNETCORE_HTTPS_PORTS, DOTNET_HTTPS_PORTS";

    public bool IsWildcard => Host is "*" or "+" or "0.0.0.0" or "[::]" or "::";

    public static ListeningAddress? Find(IConfiguration? configuration, Func<string, string?> environment)
    {
        if (configuration is not null)
        {
            var kestrel = new List<string>();
            foreach (var endpoint in configuration.GetSection("Kestrel:Endpoints").GetChildren())
            {
                if (endpoint["Url"] is { Length: > 0 } url)
                {
                    kestrel.Add(url);
                }
            }

            var found = Pick(kestrel, "configuration key Kestrel:Endpoints:*:Url")
                ?? Pick(Split(configuration["urls"]), "configuration key urls")
                ?? Pick(Ports(configuration["http_ports"], "http"), "configuration key http_ports")
                ?? Pick(Ports(configuration["https_ports"], "https"), "configuration key https_ports");
            if (found is not null)
            {
                return found;
            }
        }

        foreach (var name in (string[])["ASPNETCORE_URLS", "DOTNET_URLS"])
        {
            if (Pick(Split(environment(name)), $"environment variable {name}") is { } url)
            {
                return url;
            }
        }

        foreach (var (name, scheme) in (ReadOnlySpan<(string, string)>)[("ASPNETCORE_HTTP_PORTS", "http"), ("DOTNET_HTTP_PORTS", "http"), ("ASPNETCORE_HTTPS_PORTS", "https"), ("DOTNET_HTTPS_PORTS", "https")])
        {
            if (Pick(Ports(environment(name), scheme), $"environment variable {name}") is { } url)
            {
                return url;
            }
        }

        return null;
    }

    /// <summary>Parses <c>scheme://host[:port][/path]</c> the way Kestrel reads its URLs (wildcard hosts allowed).</summary>
    public static bool TryParse(string url, string source, out ListeningAddress address)
    {
        address = null!;
        var text = url.Trim();
        var schemeEnd = text.IndexOf("://", StringComparison.Ordinal);
        if (schemeEnd <= 0)
        {
            return false;
        }

        var scheme = text[..schemeEnd].ToLowerInvariant();
        if (scheme is not ("http" or "https"))
        {
            return false;
        }

        var rest = text[(schemeEnd + 3)..];
        var slash = rest.IndexOf('/', StringComparison.Ordinal);
        if (slash >= 0)
        {
            rest = rest[..slash];
        }

        string host;
        string? portText = null;
        if (rest.StartsWith('['))
        {
            var close = rest.IndexOf(']', StringComparison.Ordinal);
            if (close < 0)
            {
                return false;
            }

            host = rest[..(close + 1)];
            if (close + 1 < rest.Length)
            {
                if (rest[close + 1] != ':')
                {
                    return false;
                }

                portText = rest[(close + 2)..];
            }
        }
        else
        {
            var colon = rest.LastIndexOf(':');
            host = colon >= 0 ? rest[..colon] : rest;
            portText = colon >= 0 ? rest[(colon + 1)..] : null;
        }

        var port = scheme == "https" ? 443 : 80;
        if (portText is not null && !int.TryParse(portText, NumberStyles.None, CultureInfo.InvariantCulture, out port))
        {
            return false;
        }

        if (host.Length == 0 || port > 65535)
        {
            return false;
        }

        address = new ListeningAddress(scheme, host, port, text, source);
        return true;
    }

    /// <summary>The first IPv4 address of an active, non-loopback network interface, for wildcard listeners.</summary>
    public static string? FindHostAddress()
    {
        try
        {
            foreach (var nic in NetworkInterface.GetAllNetworkInterfaces())
            {
                if (nic.OperationalStatus != OperationalStatus.Up || nic.NetworkInterfaceType is NetworkInterfaceType.Loopback or NetworkInterfaceType.Tunnel)
                {
                    continue;
                }

                foreach (var unicast in nic.GetIPProperties().UnicastAddresses)
                {
                    var ip = unicast.Address;
                    if (ip.AddressFamily == AddressFamily.InterNetwork && !IPAddress.IsLoopback(ip) && !ip.ToString().StartsWith("169.254.", StringComparison.Ordinal))
                    {
                        return ip.ToString();
                    }
                }
            }
        }
        catch (NetworkInformationException)
        {
        }

        return null;
    }

    private static ListeningAddress? Pick(IEnumerable<string> urls, string source)
    {
        ListeningAddress? https = null;
        foreach (var url in urls)
        {
            if (TryParse(url, source, out var address))
            {
                if (address.Scheme == "http")
                {
                    return address;
                }

                https ??= address;
            }
        }

        return https;
    }

    private static string[] Split(string? value) =>
        string.IsNullOrWhiteSpace(value) ? [] : value.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    private static IEnumerable<string> Ports(string? value, string scheme)
    {
        if (string.IsNullOrWhiteSpace(value))
        {
            yield break;
        }

        foreach (var port in value.Split([';', ','], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            yield return $"{scheme}://*:{port}";
        }
    }
}
