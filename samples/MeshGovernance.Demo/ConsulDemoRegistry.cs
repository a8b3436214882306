using System.Globalization;
using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace MeshGovernance.Demo;

/// <summary>
/// The optional Consul path of the demo: registers the three local backends as instances of <c>catalog</c> in a real
/// Consul agent (with an HTTP check the agent runs every second), changes a weight the way an operator would, and
/// deregisters them at the end. The governed client discovers them through MeshGovernance's Consul provider.
/// </summary>
internal sealed class ConsulDemoRegistry : IAsyncDisposable
{
    private readonly HttpClient _http;
    private readonly List<string> _registered = [];

    public ConsulDemoRegistry(Uri address, string? token)
    {
        _http = new HttpClient { BaseAddress = address, Timeout = TimeSpan.FromSeconds(10) };
        if (!string.IsNullOrWhiteSpace(token))
        {
            _http.DefaultRequestHeaders.Add("X-Consul-Token", token);
        }
    }

    /// <summary>Registers (or re-registers, with a new weight) one backend; the id is stable so this replaces it.</summary>
    public async Task RegisterAsync(string service, Backend backend, int weight, string? zone, CancellationToken cancellationToken)
    {
        var id = $"{service}-{backend.Name}";
        var meta = new JsonObject { ["version"] = "v2" };
        if (zone is not null)
        {
            meta["zone"] = zone;
        }

        var registration = new JsonObject
        {
            ["ID"] = id,
            ["Name"] = service,
            ["Address"] = backend.Address.Host,
            ["Port"] = backend.Address.Port,
            ["Meta"] = meta,
            ["Weights"] = new JsonObject { ["Passing"] = weight, ["Warning"] = 1 },
            ["Check"] = new JsonObject
            {
                ["HTTP"] = backend.Address.GetLeftPart(UriPartial.Authority) + "/health",
                ["Interval"] = "1s",
                ["Timeout"] = "1s",
                ["DeregisterCriticalServiceAfter"] = "1m",
            },
        };
        using var response = await _http.PutAsync("v1/agent/service/register", JsonContent.Create(registration), cancellationToken);
        if (!response.IsSuccessStatusCode)
        {
            var body = await response.Content.ReadAsStringAsync(cancellationToken);
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"Consul at {_http.BaseAddress} refused to register {id}: {(int)response.StatusCode} {body}"));
        }

        if (!_registered.Contains(id))
        {
            _registered.Add(id);
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var id in _registered)
        {
            try
            {
                using var response = await _http.PutAsync($"v1/agent/service/deregister/{Uri.EscapeDataString(id)}", content: null);
            }
            catch (HttpRequestException)
            {
                // The agent went away; its DeregisterCriticalServiceAfter removes the instances.
            }
        }

        _http.Dispose();
    }
}
