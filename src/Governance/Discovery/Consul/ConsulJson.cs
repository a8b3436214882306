using System.Text.Json.Serialization;

namespace Governance.Discovery.Consul;

// The Consul HTTP API shapes this library reads and writes, after the samples of Consul's documentation
// (tests/Governance.Tests/Fixtures/Consul). Only the fields used are declared: unknown fields are ignored, every field
// may be missing or null, and names match case-insensitively (Consul's Go decoder does, and its docs spell some
// fields in lower case).

/// <summary>One element of <c>GET /v1/health/service/:service</c>.</summary>
internal sealed class ConsulHealthEntry
{
    public ConsulNode? Node { get; set; }

    public ConsulService? Service { get; set; }

    public List<ConsulCheck?>? Checks { get; set; }
}

internal sealed class ConsulNode
{
    [JsonPropertyName("Node")]
    public string? Name { get; set; }

    public string? Address { get; set; }

    public string? Datacenter { get; set; }
}

internal sealed class ConsulService
{
    [JsonPropertyName("ID")]
    public string? Id { get; set; }

    [JsonPropertyName("Service")]
    public string? Name { get; set; }

    public List<string?>? Tags { get; set; }

    public string? Address { get; set; }

    public int Port { get; set; }

    public Dictionary<string, string?>? Meta { get; set; }

    public ConsulWeights? Weights { get; set; }
}

internal sealed class ConsulWeights
{
    public int? Passing { get; set; }

    public int? Warning { get; set; }
}

internal sealed class ConsulCheck
{
    [JsonPropertyName("CheckID")]
    public string? CheckId { get; set; }

    public string? Status { get; set; }
}

/// <summary>Body of <c>PUT /v1/agent/service/register</c>.</summary>
internal sealed class ConsulServiceRegistration
{
    [JsonPropertyName("ID")]
    public string? Id { get; set; }

    public string? Name { get; set; }

    public List<string>? Tags { get; set; }

    public string? Address { get; set; }

    public int Port { get; set; }

    public Dictionary<string, string>? Meta { get; set; }

    public ConsulWeights? Weights { get; set; }

    public ConsulCheckDefinition? Check { get; set; }
}

/// <summary>The <c>Check</c> of a service registration; durations are Go duration strings such as <c>10s</c>.</summary>
internal sealed class ConsulCheckDefinition
{
    [JsonPropertyName("CheckID")]
    public string? CheckId { get; set; }

    public string? Name { get; set; }

    [JsonPropertyName("HTTP")]
    public string? Http { get; set; }

    public string? Method { get; set; }

    public string? Interval { get; set; }

    public string? Timeout { get; set; }

    [JsonPropertyName("TTL")]
    public string? Ttl { get; set; }

    public string? Status { get; set; }

    public string? DeregisterCriticalServiceAfter { get; set; }
}

[JsonSourceGenerationOptions(
    PropertyNameCaseInsensitive = true,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    NumberHandling = JsonNumberHandling.AllowReadingFromString)]
[JsonSerializable(typeof(List<ConsulHealthEntry?>))]
[JsonSerializable(typeof(ConsulServiceRegistration))]
internal sealed partial class ConsulJsonContext : JsonSerializerContext;
