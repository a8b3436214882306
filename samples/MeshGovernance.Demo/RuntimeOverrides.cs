using Microsoft.Extensions.Configuration;

namespace MeshGovernance.Demo;

/// <summary>
/// In-memory configuration layered over appsettings.json. <see cref="Apply"/> raises the configuration's reload token,
/// exactly as an edited appsettings.json (reloadOnChange) or a remote configuration source would, so MeshGovernance
/// picks the change up live: same host, same <see cref="HttpClient"/>, no restart.
/// </summary>
internal sealed class RuntimeOverrides : ConfigurationProvider, IConfigurationSource
{
    public RuntimeOverrides(IEnumerable<KeyValuePair<string, string?>> initial)
    {
        foreach (var (key, value) in initial)
        {
            Data[key] = value;
        }
    }

    public IConfigurationProvider Build(IConfigurationBuilder builder) => this;

    /// <summary>Sets the given keys (full paths such as <c>MeshGovernance:Services:catalog:LoadBalancer:Policy</c>) and reloads.</summary>
    public void Apply(params ReadOnlySpan<KeyValuePair<string, string?>> settings)
    {
        foreach (var (key, value) in settings)
        {
            Data[key] = value;
        }

        OnReload();
    }
}
