using Governance.Configuration;

namespace Governance.Discovery.Consul;

/// <summary>
/// Where a Consul agent is and the ACL token to present. <see cref="ToString"/> is the address only: the token must never
/// reach a log, an exception message or a query string.
/// </summary>
internal sealed class ConsulConnection : IEquatable<ConsulConnection>
{
    private ConsulConnection(Uri baseAddress, string? token, string tokenKey)
    {
        BaseAddress = baseAddress;
        Token = token;
        TokenKey = tokenKey;
    }

    /// <summary>Gets the agent's address, ending with <c>/</c> so that <c>v1/...</c> is appended to any path prefix.</summary>
    public Uri BaseAddress { get; }

    public string? Token { get; }

    /// <summary>Gets the configuration key of the token (<c>MeshGovernance:Consul:Token</c> under the section read), for messages.</summary>
    public string TokenKey { get; }

    /// <summary>
    /// Reads <c>MeshGovernance:Consul</c> (<paramref name="keyPrefix"/> is the path of the section it was read from,
    /// followed by <c>:</c>); <see langword="null"/> when no address is configured.
    /// </summary>
    public static ConsulConnection? Create(ConsulOptions? options, string keyPrefix)
    {
        if (options is null || string.IsNullOrWhiteSpace(options.Address)
            || !Uri.TryCreate(options.Address.Trim(), UriKind.Absolute, out var address))
        {
            return null;
        }

        var text = address.GetLeftPart(UriPartial.Path);
        if (!text.EndsWith('/'))
        {
            text += "/";
        }

        return new ConsulConnection(new Uri(text), string.IsNullOrWhiteSpace(options.Token) ? null : options.Token.Trim(), keyPrefix + "Consul:Token");
    }

    public Uri Resolve(string relative) => new(BaseAddress, relative);

    public bool Equals(ConsulConnection? other) =>
        other is not null && BaseAddress == other.BaseAddress && string.Equals(Token, other.Token, StringComparison.Ordinal);

    public override bool Equals(object? obj) => Equals(obj as ConsulConnection);

    public override int GetHashCode() => HashCode.Combine(BaseAddress, Token);

    /// <summary>Returns the agent's address (never the token).</summary>
    public override string ToString() => BaseAddress.GetLeftPart(UriPartial.Path).TrimEnd('/');

    /// <summary>Replaces the token wherever it appears in <paramref name="text"/> (an error body that echoes a header, say).</summary>
    public string Redact(string text) =>
        Token is { Length: > 0 } token ? text.Replace(token, "(token)", StringComparison.Ordinal) : text;
}
