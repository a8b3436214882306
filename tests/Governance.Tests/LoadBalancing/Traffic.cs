using Governance.Pipeline;
using Governance.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Governance.Tests.LoadBalancing;

/// <summary>
/// Load-balancing test helpers: loopback server groups, configuration with weights and zones, and drivers that send
/// many requests through a governed client (sequentially or with bounded concurrency) and report who answered.
/// </summary>
internal static class Traffic
{
    public const string Service = "catalog";

    public const string Url = "http://catalog/items";

    public const string HashHeader = "x-user-id";

    /// <summary>Wall-clock guard of one network await.</summary>
    public static readonly TimeSpan Guard = TimeSpan.FromSeconds(30);

    /// <summary>Wall-clock guard of a whole batch of requests.</summary>
    public static readonly TimeSpan BatchGuard = TimeSpan.FromSeconds(90);

    /// <summary>Settings for <see cref="Service"/> with one <c>Address</c>/<c>Weight</c>/<c>Zone</c> object per endpoint.</summary>
    public static Dictionary<string, string?> Settings(string policy, IReadOnlyList<LoopbackServer> servers, int[]? weights = null, string?[]? zones = null)
    {
        var settings = new Dictionary<string, string?> { [$"Services:{Service}:LoadBalancer:Policy"] = policy };
        if (string.Equals(policy, "ConsistentHash", StringComparison.OrdinalIgnoreCase))
        {
            settings[$"Services:{Service}:LoadBalancer:HashHeader"] = HashHeader;
        }

        for (var i = 0; i < servers.Count; i++)
        {
            settings[$"Services:{Service}:Endpoints:{i}:Address"] = servers[i].Address.ToString();
            if (weights is not null)
            {
                settings[$"Services:{Service}:Endpoints:{i}:Weight"] = weights[i].ToString(System.Globalization.CultureInfo.InvariantCulture);
            }

            if (zones?[i] is { } zone)
            {
                settings[$"Services:{Service}:Endpoints:{i}:Zone"] = zone;
            }
        }

        return settings;
    }

    /// <summary>Sends one GET to <see cref="Url"/> (with the hash header when <paramref name="key"/> is set) and returns the <c>x-server</c> that answered.</summary>
    public static async Task<string> SendAsync(Governed governed, string? key = null, CancellationToken cancellationToken = default)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, Url);
        if (key is not null)
        {
            request.Headers.TryAddWithoutValidation(HashHeader, key);
        }

        using var response = await governed.Client.SendAsync(request, cancellationToken).WaitAsync(Guard, cancellationToken);
        response.EnsureSuccessStatusCode();
        return response.Headers.GetValues("x-server").Single();
    }

    /// <summary>Sends <paramref name="count"/> requests one after another; returns who answered each, in order.</summary>
    public static async Task<string[]> SendSequentialAsync(Governed governed, int count, Func<int, string?>? key = null)
    {
        var answeredBy = new string[count];
        var batch = Task.Run(async () =>
        {
            for (var i = 0; i < count; i++)
            {
                answeredBy[i] = await SendAsync(governed, key?.Invoke(i));
            }
        });
        await batch.WaitAsync(BatchGuard);
        return answeredBy;
    }

    /// <summary>Sends <paramref name="count"/> requests with at most <paramref name="concurrency"/> in flight; returns who answered request i at index i.</summary>
    public static async Task<string[]> SendParallelAsync(Governed governed, int count, int concurrency, Func<int, string?>? key = null)
    {
        var answeredBy = new string[count];
        var options = new ParallelOptions { MaxDegreeOfParallelism = concurrency };
        await Parallel.ForEachAsync(Enumerable.Range(0, count), options, async (i, ct) =>
        {
            answeredBy[i] = await SendAsync(governed, key?.Invoke(i), ct);
        }).WaitAsync(BatchGuard);
        return answeredBy;
    }

    /// <summary>Counts answers per server name, with a zero entry for every server of <paramref name="servers"/>.</summary>
    public static Dictionary<string, int> Count(IEnumerable<string> answeredBy, IEnumerable<LoopbackServer> servers)
    {
        var counts = servers.ToDictionary(s => s.Name, _ => 0, StringComparer.Ordinal);
        foreach (var name in answeredBy)
        {
            counts[name] = counts.GetValueOrDefault(name) + 1;
        }

        return counts;
    }

    public static string Describe(Dictionary<string, int> counts)
    {
        var total = counts.Values.Sum();
        return string.Join(", ", counts.OrderBy(c => c.Key, StringComparer.Ordinal).Select(c => $"{c.Key}={c.Value} ({(double)c.Value / total:P2})"));
    }

    /// <summary>
    /// Runs <paramref name="total"/> requests against three equal endpoints, "held", "a" and "b", where "held" keeps
    /// every request open until the test ends. At most <paramref name="concurrency"/> requests are outstanding to the
    /// fast endpoints; a request that reaches "held" gives its slot back (the held server signals it), so held requests
    /// pile up there instead of stalling the driver. Returns who answered each request, after "held" released them all.
    /// Timeouts are off (<c>Timeout:Enabled false</c>): with the real-clock defaults a held attempt that outlasted
    /// <c>PerAttempt</c> on a slow machine would be retried on "a" or "b", taking requests away from "held".
    /// </summary>
    public static async Task<(string[] AnsweredBy, int HeldInFlightAtEnd)> SendWithOneEndpointHoldingAsync(string policy, int total, int concurrency)
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var slots = new SemaphoreSlim(concurrency);
        await using var held = await LoopbackServer.StartAsync("held", async context =>
        {
            slots.Release();
            await release.Task.WaitAsync(context.RequestAborted);
            await context.Response.WriteAsync("held", context.RequestAborted);
        });
        await using var fast = await ServerGroup.StartAsync("a", "b");
        var settings = Settings(policy, [held, fast[0], fast[1]]);
        settings[$"Services:{Service}:Timeout:Enabled"] = "false";
        await using var governed = Governed.Create(settings);
        var heldState = State(governed, held);
        var requests = new List<Task<string>>(total);
        int heldInFlight;
        try
        {
            for (var i = 0; i < total; i++)
            {
                Assert.True(await slots.WaitAsync(Guard), $"no request slot freed within {Guard} after {i} requests");
                requests.Add(SendFreeingSlotAsync());
            }

            heldInFlight = heldState.ActiveRequests;
        }
        finally
        {
            // Whatever happened, let the held requests finish so that nothing hangs.
            release.TrySetResult();
        }

        var answeredBy = await Task.WhenAll(requests).WaitAsync(BatchGuard);
        Assert.Equal(0, heldState.ActiveRequests);
        return (answeredBy, heldInFlight);

        async Task<string> SendFreeingSlotAsync()
        {
            var freedByServer = false;
            try
            {
                var name = await SendAsync(governed);
                freedByServer = name == "held";
                return name;
            }
            finally
            {
                if (!freedByServer)
                {
                    slots.Release();
                }
            }
        }
    }

    /// <summary>The live runtime of <see cref="Service"/> inside <paramref name="governed"/>.</summary>
    public static ServiceRuntime Runtime(Governed governed)
    {
        var runtime = governed.Services.GetRequiredService<GovernanceRuntime>();
        Assert.True(runtime.TryGetService(Service, out var service));
        return service;
    }

    /// <summary>The endpoint state that routes to <paramref name="server"/>.</summary>
    public static EndpointState State(Governed governed, LoopbackServer server) =>
        Runtime(governed).Endpoints.All.Single(s => s.Endpoint.Address.Port == server.Port);
}

/// <summary>A few loopback servers started in parallel and stopped together.</summary>
internal sealed class ServerGroup : IAsyncDisposable
{
    private ServerGroup(LoopbackServer[] servers)
    {
        Servers = servers;
    }

    public LoopbackServer[] Servers { get; }

    public LoopbackServer this[int index] => Servers[index];

    public static async Task<ServerGroup> StartAsync(params string[] names) =>
        new(await Task.WhenAll(names.Select(n => LoopbackServer.StartAsync(n))).WaitAsync(Traffic.Guard));

    public async ValueTask DisposeAsync()
    {
        foreach (var server in Servers)
        {
            await server.DisposeAsync();
        }
    }
}
