using System.Globalization;
using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Governance.Tests.Infrastructure;

#pragma warning disable CA1507 // The strings are field names of Consul's JSON, not member names.

/// <summary>
/// An in-process double of the part of Consul's HTTP API that MeshGovernance uses, on real Kestrel at 127.0.0.1 with an
/// ephemeral port. It follows Consul's documented semantics and answers with the documented JSON shapes (built from the
/// verbatim doc samples in Fixtures/Consul):
/// <list type="bullet">
/// <item><c>GET /v1/health/service/:service</c> with <c>passing</c>, <c>tag</c> (repeatable, all must match) and <c>dc</c>
/// filters, and blocking: with <c>index</c> &gt; 0 the request waits while the index is not above it, until a change or
/// <c>wait</c> (Go duration) elapses; <c>X-Consul-Index</c> and the other headers of blocking reads.</item>
/// <item>ACLs: <see cref="EnableAcl"/> makes unknown tokens answer 403 "ACL not found", reads without permission are
/// filtered (200, empty, <c>X-Consul-Results-Filtered-By-ACLs</c>), writes without permission answer 403 "Permission denied".</item>
/// <item>The agent: <c>PUT /v1/agent/service/register</c> (400 "Missing service name"), <c>PUT
/// /v1/agent/service/deregister/:id</c>, <c>PUT /v1/agent/check/pass/:check_id</c> (TTL checks only; an unknown check
/// answers 500 <c>CheckID "..." does not have associated TTL</c>), <c>GET /v1/agent/service/:id</c> (404 when
/// unknown). Agent registrations show up in the health endpoint on the agent's node. <see cref="RestartAgent"/>
/// forgets them, as an agent restarted without its data directory does.</item>
/// </list>
/// Every request is recorded; <see cref="WaitForAsync"/> waits (with a wall-clock guard) for a condition on them, and
/// <see cref="WaitUntilAsync"/> for a condition on the state they change.
/// </summary>
public sealed class ConsulApiDouble : IAsyncDisposable
{
    public const string AgentNode = "consul-agent-1";
    public const string AgentNodeAddress = "127.0.0.1";
    private static readonly TimeSpan DefaultWait = TimeSpan.FromMinutes(5);
    private static readonly Lazy<JsonObject> HealthTemplate = new(() => (JsonObject)JsonNode.Parse(File.ReadAllText(FixturePath("health-service.json")))!.AsArray()[0]!);
    private static readonly Lazy<JsonObject> AgentServiceTemplate = new(() => (JsonObject)JsonNode.Parse(File.ReadAllText(FixturePath("agent-service.json")))!);

    private readonly object _gate = new();
    private readonly WebApplication _app;
    private readonly CancellationTokenSource _stopping = new();
    private readonly List<ConsulInstance> _catalog = [];
    private readonly Dictionary<string, AgentRegistration> _agent = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _rawAnswers = new(StringComparer.OrdinalIgnoreCase);
    private readonly List<ConsulRequest> _requests = [];
    private readonly List<(Func<IReadOnlyList<ConsulRequest>, bool> Condition, TaskCompletionSource Done)> _waiters = [];
    private readonly List<(Func<ConsulApiDouble, bool> Condition, TaskCompletionSource Done)> _stateWaiters = [];
    private readonly HashSet<string> _fullTokens = new(StringComparer.Ordinal);
    private readonly HashSet<string> _readOnlyTokens = new(StringComparer.Ordinal);
    private readonly HashSet<string> _powerlessTokens = new(StringComparer.Ordinal);
    private ulong _index = 100;
    private TaskCompletionSource _changed = NewSignal();
    private (int Status, string Body)? _failure;
    private TaskCompletionSource? _hang;
    private Func<ConsulRequest, bool>? _hangWhich;
    private bool _aclEnabled;
    private volatile bool _stripIndex;
    private int _elapsed;

    private ConsulApiDouble(WebApplication app)
    {
        _app = app;
    }

    public Uri Address { get; private set; } = null!;

    /// <summary>Gets the agent's datacenter; instances of other datacenters are reached with <c>dc</c>.</summary>
    public string Datacenter => "dc1";

    /// <summary>Gets or sets the datacenters <c>dc</c> may name; others answer 500 "No path to datacenter".</summary>
    public IReadOnlyCollection<string> Datacenters { get; set; } = ["dc1", "dc2"];

    /// <summary>Gets or sets a value indicating whether response header names are sent in lower case (proxies do that; HTTP/2 always does).</summary>
    public bool LowercaseHeaders { get; set; }

    public ulong Index
    {
        get
        {
            lock (_gate)
            {
                return _index;
            }
        }
    }

    /// <summary>Gets the requests received so far, in order.</summary>
    public IReadOnlyList<ConsulRequest> Requests
    {
        get
        {
            lock (_gate)
            {
                return [.. _requests];
            }
        }
    }

    /// <summary>Gets the health queries received so far.</summary>
    public IReadOnlyList<ConsulRequest> HealthQueries => Requests.Where(static r => r.Path.StartsWith("/v1/health/service/", StringComparison.Ordinal)).ToList();

    public static string FixturePath(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", "Consul", name);

    public static async Task<ConsulApiDouble> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(o => o.Listen(IPAddress.Loopback, 0));
        var app = builder.Build();
        var consul = new ConsulApiDouble(app);
        app.Run(consul.HandleAsync);
        await app.StartAsync().WaitAsync(TimeSpan.FromSeconds(30));
        consul.Address = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
        return consul;
    }

    /// <summary>Adds (or replaces, by id) an instance in the catalog, as another node's agent would.</summary>
    public void Register(ConsulInstance instance) => Change(() =>
    {
        _catalog.RemoveAll(i => i.Id == instance.Id);
        _catalog.Add(instance);
    });

    public void Deregister(string id) => Change(() => _catalog.RemoveAll(i => i.Id == id));

    /// <summary>Sets the status of an instance's service check: passing, warning or critical.</summary>
    public void SetStatus(string id, string status) => Change(() =>
    {
        var index = _catalog.FindIndex(i => i.Id == id);
        _catalog[index] = _catalog[index] with { Status = status };
    });

    /// <summary>Sets the index to any value, lower ones included (a snapshot restore does that), and wakes blocked queries.</summary>
    public void SetIndex(ulong index) => Change(() => { }, index);

    /// <summary>Answers health queries without <c>X-Consul-Index</c>, as a proxy in front of the agent that strips it would.</summary>
    public void StripIndexHeader() => _stripIndex = true;

    /// <summary>Answers every health query of <paramref name="service"/> with this raw body (index handling unchanged).</summary>
    public void SetRawAnswer(string service, string json) => Change(() => _rawAnswers[service] = json);

    /// <summary>Makes blocked queries return now with the current index, as when their wait elapses.</summary>
    public void ElapseWaits()
    {
        lock (_gate)
        {
            _elapsed++;
            var changed = _changed;
            _changed = NewSignal();
            changed.TrySetResult();
        }
    }

    /// <summary>
    /// Turns ACLs on with default policy deny: only <paramref name="token"/> may read and write; other tokens are added
    /// with <see cref="AddReadOnlyToken"/> and <see cref="AddTokenWithoutPermissions"/>; any other token is unknown (403).
    /// </summary>
    public void EnableAcl(string token)
    {
        lock (_gate)
        {
            _aclEnabled = true;
            _fullTokens.Add(token);
        }
    }

    public void AddReadOnlyToken(string token)
    {
        lock (_gate)
        {
            _readOnlyTokens.Add(token);
        }
    }

    /// <summary>Adds a known token with no permission: reads are filtered to nothing, writes refused.</summary>
    public void AddTokenWithoutPermissions(string token)
    {
        lock (_gate)
        {
            _powerlessTokens.Add(token);
        }
    }

    /// <summary>Answers every request with this status and plain-text body until <see cref="Recover"/>.</summary>
    public void FailWith(int status, string body)
    {
        lock (_gate)
        {
            _failure = (status, body);
        }
    }

    /// <summary>
    /// Holds every request (or those <paramref name="which"/> selects) without answering until <see cref="Recover"/> (a
    /// stuck agent). A held request is not applied; if its client gives up, it never is.
    /// </summary>
    public void Hang(Func<ConsulRequest, bool>? which = null)
    {
        lock (_gate)
        {
            _hang ??= NewSignal();
            _hangWhich = which;
        }
    }

    public void Recover()
    {
        lock (_gate)
        {
            _failure = null;
            _hang?.TrySetResult();
            _hang = null;
            _hangWhich = null;
        }
    }

    /// <summary>Forgets every agent registration and check, as an agent restarted without its data directory.</summary>
    public void RestartAgent() => Change(() => _agent.Clear());

    /// <summary>Gets what the agent holds for an instance id, or <see langword="null"/>.</summary>
    public AgentRegistration? GetRegistration(string id)
    {
        lock (_gate)
        {
            return _agent.GetValueOrDefault(id);
        }
    }

    /// <summary>Runs every registered HTTP check once, as the agent does every interval: 2xx is passing, anything else critical.</summary>
    public async Task RunHttpChecksAsync()
    {
        List<AgentRegistration> registrations;
        lock (_gate)
        {
            registrations = [.. _agent.Values];
        }

        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        foreach (var registration in registrations)
        {
            if (registration.HttpCheck is not { } url)
            {
                continue;
            }

            string status;
            try
            {
                using var response = await http.GetAsync(url);
                status = response.IsSuccessStatusCode ? "passing" : "critical";
            }
            catch (HttpRequestException)
            {
                status = "critical";
            }

            Change(() => registration.CheckStatus = status);
        }
    }

    /// <summary>Waits until <paramref name="condition"/> holds for the requests received so far (checked on every request).</summary>
    public Task WaitForAsync(Func<IReadOnlyList<ConsulRequest>, bool> condition, TimeSpan? timeout = null)
    {
        var done = NewSignal();
        lock (_gate)
        {
            if (condition(_requests))
            {
                return Task.CompletedTask;
            }

            _waiters.Add((condition, done));
        }

        return done.Task.WaitAsync(timeout ?? TimeSpan.FromSeconds(20));
    }

    /// <summary>
    /// Waits until <paramref name="condition"/> holds for the double's state (its catalog and agent), checked now and
    /// after every change; a request is recorded when it arrives, before it changes anything, so this is what tells that
    /// a write has been applied.
    /// </summary>
    public Task WaitUntilAsync(Func<ConsulApiDouble, bool> condition, TimeSpan? timeout = null)
    {
        var done = NewSignal();
        lock (_gate)
        {
            if (condition(this))
            {
                return Task.CompletedTask;
            }

            _stateWaiters.Add((condition, done));
        }

        return done.Task.WaitAsync(timeout ?? TimeSpan.FromSeconds(20));
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        Recover();
        await _app.StopAsync().WaitAsync(TimeSpan.FromSeconds(30));
        await _app.DisposeAsync();
        _stopping.Dispose();
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private void Change(Action change, ulong? index = null)
    {
        lock (_gate)
        {
            change();
            _index = index ?? _index + 1;
            var changed = _changed;
            _changed = NewSignal();
            changed.TrySetResult();
            for (var i = _stateWaiters.Count - 1; i >= 0; i--)
            {
                if (_stateWaiters[i].Condition(this))
                {
                    _stateWaiters[i].Done.TrySetResult();
                    _stateWaiters.RemoveAt(i);
                }
            }
        }
    }

    private async Task HandleAsync(HttpContext context)
    {
        var request = context.Request;
        var body = await new StreamReader(request.Body).ReadToEndAsync(context.RequestAborted);
        var recorded = new ConsulRequest(
            request.Method,
            request.Path.Value ?? string.Empty,
            request.QueryString.Value ?? string.Empty,
            request.Headers.TryGetValue("X-Consul-Token", out var t) ? t.ToString() : null,
            request.Headers.ToDictionary(h => h.Key, h => h.Value.ToString(), StringComparer.OrdinalIgnoreCase),
            body);
        Task? hang;
        (int Status, string Body)? failure;
        Acl access;
        int elapsed;
        lock (_gate)
        {
            // What a request sees is fixed when it arrives (its ACL, the wait generation), before anyone can observe it.
            access = Access(recorded.Token);
            elapsed = _elapsed;
            _requests.Add(recorded);
            for (var i = _waiters.Count - 1; i >= 0; i--)
            {
                if (_waiters[i].Condition(_requests))
                {
                    _waiters[i].Done.TrySetResult();
                    _waiters.RemoveAt(i);
                }
            }

            hang = _hang is not null && (_hangWhich?.Invoke(recorded) ?? true) ? _hang.Task : null;
            failure = _failure;
        }

        using var aborted = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, _stopping.Token);
        try
        {
            if (hang is not null)
            {
                await hang.WaitAsync(aborted.Token);
                lock (_gate)
                {
                    failure = _failure;
                }
            }

            if (failure is { } f)
            {
                await TextAsync(context, f.Status, f.Body);
                return;
            }

            await RouteAsync(context, recorded, access, elapsed, aborted.Token);
        }
        catch (OperationCanceledException)
        {
            // The client gave up or the double stops.
        }
    }

    private async Task RouteAsync(HttpContext context, ConsulRequest request, Acl access, int elapsed, CancellationToken cancellationToken)
    {
        var path = request.Path;
        if (access == Acl.Unknown)
        {
            await TextAsync(context, 403, "ACL not found");
            return;
        }

        if (request.Method == "GET" && path.StartsWith("/v1/health/service/", StringComparison.Ordinal))
        {
            await HealthServiceAsync(context, Uri.UnescapeDataString(path["/v1/health/service/".Length..]), access, elapsed, cancellationToken);
            return;
        }

        if (request.Method == "GET" && path.StartsWith("/v1/agent/service/", StringComparison.Ordinal))
        {
            await AgentServiceAsync(context, path["/v1/agent/service/".Length..], access);
            return;
        }

        if (request.Method != "PUT" || !path.StartsWith("/v1/agent/", StringComparison.Ordinal))
        {
            await TextAsync(context, 404, "404 page not found");
            return;
        }

        if (access != Acl.Write)
        {
            await TextAsync(context, 403, "Permission denied");
            return;
        }

        if (path == "/v1/agent/service/register")
        {
            await RegisterAsync(context, request.Body);
        }
        else if (path.StartsWith("/v1/agent/service/deregister/", StringComparison.Ordinal))
        {
            var id = path["/v1/agent/service/deregister/".Length..];
            var removed = false;
            Change(() => removed = _agent.Remove(id));
            await TextAsync(context, removed ? 200 : 404, removed ? string.Empty : $"Unknown service ID \"{id}\". Ensure that the service ID is passed, not the service name.");
        }
        else if (path.StartsWith("/v1/agent/check/pass/", StringComparison.Ordinal))
        {
            var checkId = path["/v1/agent/check/pass/".Length..];
            AgentRegistration? registration;
            lock (_gate)
            {
                registration = _agent.Values.FirstOrDefault(r => r.CheckId == checkId && r.Ttl is not null);
            }

            if (registration is null)
            {
                await TextAsync(context, 500, $"CheckID \"{checkId}\" does not have associated TTL");
                return;
            }

            Change(() =>
            {
                registration.CheckStatus = "passing";
                registration.Heartbeats++;
            });
            await TextAsync(context, 200, string.Empty);
        }
        else
        {
            await TextAsync(context, 404, "404 page not found");
        }
    }

    private async Task HealthServiceAsync(HttpContext context, string service, Acl access, int elapsed, CancellationToken cancellationToken)
    {
        var query = context.Request.Query;
        var datacenter = query.TryGetValue("dc", out var dc) ? dc.ToString() : Datacenter;
        if (!Datacenters.Contains(datacenter))
        {
            await TextAsync(context, 500, "No path to datacenter");
            return;
        }

        var index = query.TryGetValue("index", out var i) ? ulong.Parse(i.ToString(), CultureInfo.InvariantCulture) : 0UL;
        var wait = query.TryGetValue("wait", out var w) ? ParseGoDuration(w.ToString()) : DefaultWait;
        var passing = query.TryGetValue("passing", out var p) && p.ToString() is not ("0" or "false");
        string[] tags = query.TryGetValue("tag", out var tagValues) ? [.. tagValues.OfType<string>()] : [];

        if (index > 0)
        {
            // Block while the index is not above the client's, until a change lifts it or the wait elapses.
            using var waitOver = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            waitOver.CancelAfter(wait);
            while (true)
            {
                Task changed;
                lock (_gate)
                {
                    if (_index > index || _elapsed != elapsed)
                    {
                        break;
                    }

                    changed = _changed.Task;
                }

                try
                {
                    await changed.WaitAsync(waitOver.Token);
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    break; // The wait elapsed: answer with what there is.
                }
            }
        }

        string json;
        ulong answerIndex;
        var filtered = false;
        lock (_gate)
        {
            answerIndex = _index;
            if (_rawAnswers.TryGetValue(service, out var raw))
            {
                json = raw;
            }
            else
            {
                var entries = new JsonArray();
                foreach (var instance in Instances())
                {
                    if (!string.Equals(instance.Service, service, StringComparison.OrdinalIgnoreCase)
                        || instance.Datacenter != datacenter
                        || (passing && instance.Status != "passing")
                        || !tags.All(tag => instance.Tags.Contains(tag)))
                    {
                        continue;
                    }

                    if (access == Acl.None)
                    {
                        filtered = true;
                        continue;
                    }

                    entries.Add(ToHealthEntry(instance));
                }

                json = entries.ToJsonString();
            }
        }

        var headers = context.Response.Headers;
        if (!_stripIndex)
        {
            headers[Name("X-Consul-Index")] = answerIndex.ToString(CultureInfo.InvariantCulture);
        }

        headers[Name("X-Consul-KnownLeader")] = "true";
        headers[Name("X-Consul-LastContact")] = "0";
        headers[Name("X-Consul-Effective-Consistency")] = "leader";
        headers[Name("X-Consul-Default-Acl-Policy")] = _aclEnabled ? "deny" : "allow";
        if (filtered && context.Request.Headers.ContainsKey("X-Consul-Token"))
        {
            headers[Name("X-Consul-Results-Filtered-By-Acls")] = "true";
        }

        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(json, cancellationToken);
    }

    private async Task AgentServiceAsync(HttpContext context, string id, Acl access)
    {
        AgentRegistration? registration;
        lock (_gate)
        {
            registration = _agent.GetValueOrDefault(id);
        }

        if (registration is null || access == Acl.None)
        {
            await TextAsync(context, 404, $"unknown service ID: {id}");
            return;
        }

        var node = (JsonObject)AgentServiceTemplate.Value.DeepClone();
        node.Remove("Proxy");
        node["Kind"] = null;
        node["ID"] = registration.Id;
        node["Service"] = registration.Name;
        node["Address"] = registration.Address;
        node["Port"] = registration.Port;
        node["Tags"] = new JsonArray([.. registration.Tags.Select(t => (JsonNode)t!)]);
        node["ContentHash"] = registration.GetHashCode().ToString("x8", CultureInfo.InvariantCulture);
        context.Response.ContentType = "application/json";
        context.Response.Headers[Name("X-Consul-ContentHash")] = node["ContentHash"]!.GetValue<string>();
        await context.Response.WriteAsync(node.ToJsonString());
    }

    private async Task RegisterAsync(HttpContext context, string body)
    {
        JsonObject definition;
        try
        {
            definition = JsonNode.Parse(body) as JsonObject ?? throw new JsonException("not an object");
        }
        catch (JsonException ex)
        {
            await TextAsync(context, 400, "Request decode failed: " + ex.Message);
            return;
        }

        var name = Text(definition, "Name");
        if (string.IsNullOrEmpty(name))
        {
            await TextAsync(context, 400, "Missing service name");
            return;
        }

        var id = Text(definition, "ID") is { Length: > 0 } given ? given : name;
        var check = Get(definition, "Check") as JsonObject;
        var ttl = check is null ? null : Text(check, "TTL");
        var registration = new AgentRegistration(id, name, body, definition)
        {
            Address = Text(definition, "Address") ?? string.Empty,
            Port = Get(definition, "Port")?.GetValue<int>() ?? 0,
            Tags = (Get(definition, "Tags") as JsonArray)?.Select(t => t!.GetValue<string>()).ToArray() ?? [],
            Meta = (Get(definition, "Meta") as JsonObject)?.ToDictionary(m => m.Key, m => m.Value!.GetValue<string>()) ?? [],
            PassingWeight = Get(Get(definition, "Weights") as JsonObject, "Passing")?.GetValue<int>() ?? 1,
            WarningWeight = Get(Get(definition, "Weights") as JsonObject, "Warning")?.GetValue<int>() ?? 1,
            CheckId = check is null ? null : Text(check, "CheckID") ?? "service:" + id,
            Ttl = ttl,
            HttpCheck = check is null ? null : Text(check, "HTTP"),
            CheckStatus = check is null ? "passing" : Text(check, "Status") is { Length: > 0 } s ? s : "critical",
        };
        Change(() => _agent[id] = registration);
        await TextAsync(context, 200, string.Empty);
    }

    private IEnumerable<ConsulInstance> Instances()
    {
        foreach (var instance in _catalog)
        {
            yield return instance;
        }

        foreach (var registration in _agent.Values)
        {
            yield return new ConsulInstance(registration.Id, registration.Name, registration.Address, registration.Port)
            {
                NodeName = AgentNode,
                NodeAddress = AgentNodeAddress,
                Tags = registration.Tags,
                Meta = registration.Meta,
                PassingWeight = registration.PassingWeight,
                WarningWeight = registration.WarningWeight,
                Status = registration.CheckStatus,
            };
        }
    }

    /// <summary>One element of <c>/v1/health/service</c>, in the shape of the documented sample.</summary>
    private static JsonObject ToHealthEntry(ConsulInstance instance)
    {
        var entry = (JsonObject)HealthTemplate.Value.DeepClone();
        var node = (JsonObject)entry["Node"]!;
        node["Node"] = instance.NodeName;
        node["Address"] = instance.NodeAddress;
        node["Datacenter"] = instance.Datacenter;
        node["TaggedAddresses"] = new JsonObject { ["lan"] = instance.NodeAddress, ["wan"] = instance.NodeAddress };
        var service = (JsonObject)entry["Service"]!;
        service["ID"] = instance.Id;
        service["Service"] = instance.Service;
        service["Tags"] = new JsonArray([.. instance.Tags.Select(t => (JsonNode)t!)]);
        service["Address"] = instance.Address;
        service["Port"] = instance.Port;
        service["Meta"] = instance.Meta is null ? null : new JsonObject(instance.Meta.Select(m => KeyValuePair.Create(m.Key, (JsonNode?)m.Value)));
        service["Weights"] = new JsonObject { ["Passing"] = instance.PassingWeight, ["Warning"] = instance.WarningWeight };
        var tagged = (JsonObject)service["TaggedAddresses"]!;
        tagged["lan"]!["address"] = string.IsNullOrEmpty(instance.Address) ? instance.NodeAddress : instance.Address;
        tagged["lan"]!["port"] = instance.Port;
        var checks = (JsonArray)entry["Checks"]!;
        var serviceCheck = (JsonObject)checks[0]!;
        serviceCheck["Node"] = instance.NodeName;
        serviceCheck["CheckID"] = "service:" + instance.Id;
        serviceCheck["Name"] = $"Service '{instance.Service}' check";
        serviceCheck["Status"] = instance.Status;
        serviceCheck["ServiceID"] = instance.Id;
        serviceCheck["ServiceName"] = instance.Service;
        serviceCheck["ServiceTags"] = new JsonArray([.. instance.Tags.Select(t => (JsonNode)t!)]);
        checks[1]!["Node"] = instance.NodeName;
        return entry;
    }

    private Acl Access(string? token)
    {
        lock (_gate)
        {
            if (!_aclEnabled)
            {
                return Acl.Write;
            }

            if (string.IsNullOrEmpty(token))
            {
                return Acl.None; // The anonymous token: nothing allowed, reads filtered.
            }

            return _fullTokens.Contains(token) ? Acl.Write
                : _readOnlyTokens.Contains(token) ? Acl.Read
                : _powerlessTokens.Contains(token) ? Acl.None
                : Acl.Unknown;
        }
    }

    private string Name(string header) => LowercaseHeaders ? header.ToLowerInvariant() : header;

    private static async Task TextAsync(HttpContext context, int status, string body)
    {
        context.Response.StatusCode = status;
        if (body.Length > 0)
        {
            // Consul's errors are plain text; successful writes have no body and no Content-Type.
            context.Response.ContentType = "text/plain; charset=utf-8";
            await context.Response.WriteAsync(body);
        }
    }

    private static JsonNode? Get(JsonObject? node, string name) =>
        node?.FirstOrDefault(p => string.Equals(p.Key, name, StringComparison.OrdinalIgnoreCase)).Value;

    private static string? Text(JsonObject node, string name) => Get(node, name)?.GetValue<string>();

    private static TimeSpan ParseGoDuration(string text)
    {
        var total = TimeSpan.Zero;
        foreach (Match m in Regex.Matches(text, @"(\d+(?:\.\d+)?)(ms|s|m|h)"))
        {
            var value = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
            total += m.Groups[2].Value switch
            {
                "ms" => TimeSpan.FromMilliseconds(value),
                "s" => TimeSpan.FromSeconds(value),
                "m" => TimeSpan.FromMinutes(value),
                _ => TimeSpan.FromHours(value),
            };
        }

        return total == TimeSpan.Zero ? DefaultWait : total;
    }

    private enum Acl
    {
        None,
        Read,
        Write,
        Unknown,
    }
}

/// <summary>An instance in the double's catalog.</summary>
public sealed record ConsulInstance(string Id, string Service, string? Address, int Port)
{
    public string NodeName { get; init; } = "node-" + Id;

    public string NodeAddress { get; init; } = "10.0.0.1";

    public string Datacenter { get; init; } = "dc1";

    public IReadOnlyList<string> Tags { get; init; } = [];

    public IReadOnlyDictionary<string, string>? Meta { get; init; } = new Dictionary<string, string>();

    public int PassingWeight { get; init; } = 1;

    public int WarningWeight { get; init; } = 1;

    /// <summary>Gets the status of the instance's service check: passing, warning or critical.</summary>
    public string Status { get; init; } = "passing";

    /// <summary>An instance listening on a loopback server.</summary>
    public static ConsulInstance For(string service, LoopbackServer server) =>
        new(server.Name, service, server.Address.Host, server.Port);
}

/// <summary>A service registered through the agent API, as the double holds it.</summary>
public sealed class AgentRegistration(string id, string name, string body, JsonObject definition)
{
    public string Id { get; } = id;

    public string Name { get; } = name;

    /// <summary>Gets the registration request's body as sent.</summary>
    public string Body { get; } = body;

    public JsonObject Definition { get; } = definition;

    public string Address { get; init; } = string.Empty;

    public int Port { get; init; }

    public IReadOnlyList<string> Tags { get; init; } = [];

    public IReadOnlyDictionary<string, string> Meta { get; init; } = new Dictionary<string, string>();

    public int PassingWeight { get; init; } = 1;

    public int WarningWeight { get; init; } = 1;

    public string? CheckId { get; init; }

    public string? Ttl { get; init; }

    public string? HttpCheck { get; init; }

    public string CheckStatus { get; set; } = "critical";

    public int Heartbeats { get; set; }
}

/// <summary>A request as the double received it; <see cref="Token"/> is the <c>X-Consul-Token</c> header.</summary>
public sealed record ConsulRequest(string Method, string Path, string Query, string? Token, IReadOnlyDictionary<string, string> Headers, string Body)
{
    public string PathAndQuery => Path + Query;

    /// <summary>Gets the value of a query parameter (the first), or <see langword="null"/>.</summary>
    public string? Param(string name) => Params(name) is [var first, ..] ? first : null;

    public IReadOnlyList<string> Params(string name) =>
        Microsoft.AspNetCore.WebUtilities.QueryHelpers.ParseQuery(Query).TryGetValue(name, out var values) ? [.. values.OfType<string>()] : [];
}
