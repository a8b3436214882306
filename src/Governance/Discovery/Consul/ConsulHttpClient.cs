using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace Governance.Discovery.Consul;

/// <summary>
/// The few Consul HTTP API calls MeshGovernance makes, over its own <see cref="SocketsHttpHandler"/>. Not a client from
/// <see cref="IHttpClientFactory"/>: <c>AddMeshGovernance</c> adds the governance handler to every factory client, and
/// building that handler needs the governance runtime, which is what creates the discovery watchers that use this client
/// (a cycle); the registry's own traffic must never be governed (a service named like the agent's host would loop); and
/// blocking queries need their own timeout (longer than <c>wait + wait/16</c>) and no handler rotation or per-request
/// logging. Timeouts run on the <see cref="TimeProvider"/>.
/// </summary>
internal sealed class ConsulHttpClient : IDisposable
{
    private const string FilteredHeader = "X-Consul-Results-Filtered-By-ACLs";
    private const string DefaultAclPolicyHeader = "X-Consul-Default-ACL-Policy";
    private static readonly MediaTypeHeaderValue Json = new("application/json") { CharSet = "utf-8" };
    private readonly HttpClient _http;
    private readonly TimeProvider _time;

    public ConsulHttpClient(TimeProvider time)
    {
        _time = time;
        var handler = new SocketsHttpHandler
        {
            // Long polls keep a connection busy for minutes; re-resolve the agent's name now and then.
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
            ConnectTimeout = ConsulConstants.RequestTimeout,
            AutomaticDecompression = DecompressionMethods.All,
            AllowAutoRedirect = false,

            // The environment's proxy (HTTP_PROXY, NO_PROXY), except for a loopback agent, as Consul's Go client does:
            // a proxy in front of the local agent would only add a place where long polls get cut.
            Proxy = new LoopbackBypassProxy(HttpClient.DefaultProxy),
        };
        _http = new HttpClient(handler, disposeHandler: true) { Timeout = Timeout.InfiniteTimeSpan };
    }

    /// <summary>
    /// <c>GET /v1/health/service/:service</c>. With <paramref name="index"/> 0 the query answers at once; otherwise it
    /// blocks until the index passes <paramref name="index"/> or the query's wait time elapses.
    /// </summary>
    public async Task<ConsulHealthAnswer> GetServiceHealthAsync(ConsulConnection connection, ConsulHealthQuery query, ulong index, CancellationToken cancellationToken)
    {
        var path = new StringBuilder("v1/health/service/").Append(Uri.EscapeDataString(query.Service));
        var separator = '?';
        void Add(string name, string value)
        {
            path.Append(separator).Append(name).Append('=').Append(Uri.EscapeDataString(value));
            separator = '&';
        }

        if (query.OnlyPassing)
        {
            Add("passing", "1");
        }

        if (query.Datacenter is { } datacenter)
        {
            Add("dc", datacenter);
        }

        foreach (var tag in query.Tags)
        {
            Add("tag", tag);
        }

        var timeout = ConsulConstants.RequestTimeout;
        if (index > 0)
        {
            Add("index", index.ToString(CultureInfo.InvariantCulture));
            Add("wait", ConsulConstants.GoDuration(query.Wait));
            timeout = query.Wait + (query.Wait / 16) + ConsulConstants.BlockingTimeoutMargin;
        }

        using var request = new HttpRequestMessage(HttpMethod.Get, connection.Resolve(path.ToString()));
        var operation = $"the query of service '{query.Service}'";
        using var timeoutSource = new CancellationTokenSource(timeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeoutSource.Token);
        try
        {
            using var response = await SendAsync(connection, request, operation, timeout, timeoutSource, linked.Token, cancellationToken).ConfigureAwait(false);
            await EnsureSuccessAsync(connection, response, operation, $"service:read on '{query.Service}' and node:read", linked.Token).ConfigureAwait(false);
            var answerIndex = ReadIndex(response);
            if (index > 0 && answerIndex == index)
            {
                // The wait elapsed (or an idempotent write woke the query): nothing changed, no need to read the body.
                return new ConsulHealthAnswer(answerIndex, null);
            }

            List<ConsulHealthEntry?>? entries;
            try
            {
                var stream = await response.Content.ReadAsStreamAsync(linked.Token).ConfigureAwait(false);
                await using (stream.ConfigureAwait(false))
                {
                    entries = await JsonSerializer.DeserializeAsync(stream, ConsulJsonContext.Default.ListConsulHealthEntry, linked.Token).ConfigureAwait(false);
                }
            }
            catch (JsonException ex)
            {
                throw new ConsulApiException($"Consul at {connection} answered {operation} with JSON that is not a list of service instances: {ex.Message}", (int)response.StatusCode, ex);
            }

            entries ??= [];
            if (entries.Count == 0 && HeaderSays(response, FilteredHeader, "true"))
            {
                // Not "no instance": the token may not see them. Treat it as an error, so the last known endpoints stay.
                throw new ConsulApiException($"Consul at {connection} hid every instance of service '{query.Service}' from the ACL token ({FilteredHeader}: true). Check the ACL token in {connection.TokenKey} (its value is not shown): it needs service:read on '{query.Service}' and node:read", (int)response.StatusCode);
            }

            // Consul hides the filtered-by-ACLs header from requests without a token: with a default policy of deny, an
            // empty answer to one may be the agent's default token lacking read rights as well as no instance (none
            // registered, none passing). It cannot be told apart, so it is applied, with a warning that says what to set.
            var mayBeFiltered = entries.Count == 0 && connection.Token is null && HeaderSays(response, DefaultAclPolicyHeader, "deny");
            return new ConsulHealthAnswer(answerIndex, entries, mayBeFiltered);
        }
        catch (OperationCanceledException ex) when (!cancellationToken.IsCancellationRequested && timeoutSource.IsCancellationRequested)
        {
            throw TimedOut(connection, operation, timeout, ex);
        }
    }

    /// <summary><c>PUT /v1/agent/service/register?replace-existing-checks=true</c>.</summary>
    public Task RegisterAsync(ConsulConnection connection, ConsulServiceRegistration registration, CancellationToken cancellationToken)
    {
        var content = JsonSerializer.SerializeToUtf8Bytes(registration, ConsulJsonContext.Default.ConsulServiceRegistration);
        return PutAsync(
            connection,
            "v1/agent/service/register?replace-existing-checks=true",
            new ByteArrayContent(content) { Headers = { ContentType = Json } },
            $"the registration of instance '{registration.Id}' of service '{registration.Name}'",
            $"service:write on '{registration.Name}'",
            cancellationToken);
    }

    /// <summary><c>PUT /v1/agent/service/deregister/:service_id</c>.</summary>
    public Task DeregisterAsync(ConsulConnection connection, string serviceId, string serviceName, CancellationToken cancellationToken) =>
        PutAsync(connection, "v1/agent/service/deregister/" + Uri.EscapeDataString(serviceId), content: null, $"the deregistration of instance '{serviceId}'", $"service:write on '{serviceName}'", cancellationToken);

    /// <summary><c>PUT /v1/agent/check/pass/:check_id</c>: a TTL heartbeat.</summary>
    public Task PassCheckAsync(ConsulConnection connection, string checkId, string serviceName, CancellationToken cancellationToken) =>
        PutAsync(connection, "v1/agent/check/pass/" + Uri.EscapeDataString(checkId), content: null, $"the TTL heartbeat of check '{checkId}'", $"service:write on '{serviceName}'", cancellationToken);

    /// <summary><c>GET /v1/agent/service/:service_id</c>: whether the local agent still knows the instance.</summary>
    public async Task<bool> IsRegisteredAsync(ConsulConnection connection, string serviceId, string serviceName, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, connection.Resolve("v1/agent/service/" + Uri.EscapeDataString(serviceId)));
        var operation = $"the lookup of instance '{serviceId}'";
        var timeout = ConsulConstants.RequestTimeout;
        using var timeoutSource = new CancellationTokenSource(timeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeoutSource.Token);
        try
        {
            using var response = await SendAsync(connection, request, operation, timeout, timeoutSource, linked.Token, cancellationToken).ConfigureAwait(false);
            if (response.StatusCode == HttpStatusCode.NotFound)
            {
                return false;
            }

            await EnsureSuccessAsync(connection, response, operation, $"service:read on '{serviceName}'", linked.Token).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException ex) when (!cancellationToken.IsCancellationRequested && timeoutSource.IsCancellationRequested)
        {
            throw TimedOut(connection, operation, timeout, ex);
        }
    }

    public void Dispose() => _http.Dispose();

    private async Task PutAsync(ConsulConnection connection, string path, HttpContent? content, string operation, string permission, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Put, connection.Resolve(path)) { Content = content };
        var timeout = ConsulConstants.RequestTimeout;
        using var timeoutSource = new CancellationTokenSource(timeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeoutSource.Token);
        try
        {
            using var response = await SendAsync(connection, request, operation, timeout, timeoutSource, linked.Token, cancellationToken).ConfigureAwait(false);
            await EnsureSuccessAsync(connection, response, operation, permission, linked.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException ex) when (!cancellationToken.IsCancellationRequested && timeoutSource.IsCancellationRequested)
        {
            throw TimedOut(connection, operation, timeout, ex);
        }
    }

    private async Task<HttpResponseMessage> SendAsync(
        ConsulConnection connection,
        HttpRequestMessage request,
        string operation,
        TimeSpan timeout,
        CancellationTokenSource timeoutSource,
        CancellationToken token,
        CancellationToken callerToken)
    {
        if (connection.Token is { } acl)
        {
            request.Headers.TryAddWithoutValidation(ConsulConstants.TokenHeader, acl);
        }

        try
        {
            return await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, token).ConfigureAwait(false);
        }
        catch (HttpRequestException ex)
        {
            throw new ConsulApiException($"Consul at {connection} could not be reached for {operation}: {connection.Redact(ex.Message)}", null, ex);
        }
        catch (OperationCanceledException ex) when (!callerToken.IsCancellationRequested && timeoutSource.IsCancellationRequested)
        {
            throw TimedOut(connection, operation, timeout, ex);
        }
    }

    private static async Task EnsureSuccessAsync(ConsulConnection connection, HttpResponseMessage response, string operation, string permission, CancellationToken cancellationToken)
    {
        if (response.IsSuccessStatusCode)
        {
            return;
        }

        string body;
        try
        {
            body = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (HttpRequestException)
        {
            body = string.Empty;
        }

        body = connection.Redact(body.Trim().ReplaceLineEndings(" "));
        if (body.Length > 300)
        {
            body = string.Concat(body.AsSpan(0, 300), "...");
        }

        var status = (int)response.StatusCode;
        var said = body.Length == 0 ? string.Empty : $": \"{body}\"";
        var message = response.StatusCode == HttpStatusCode.Forbidden
            ? $"Consul at {connection} refused {operation} with 403 Forbidden{said}. Check the ACL token in {connection.TokenKey} ({(connection.Token is null ? "not set, so the agent's default token was used" : "set; its value is not shown")}): it needs {permission}"
            : $"Consul at {connection} answered {operation} with {status.ToString(CultureInfo.InvariantCulture)} {response.ReasonPhrase}{said}";
        throw new ConsulApiException(message, status);
    }

    /// <summary>Whether the response has header <paramref name="name"/> with <paramref name="value"/> (without case, as Consul's values vary).</summary>
    private static bool HeaderSays(HttpResponseMessage response, string name, string value) =>
        response.Headers.TryGetValues(name, out var values) && values.Any(v => string.Equals(v, value, StringComparison.OrdinalIgnoreCase));

    private static ulong ReadIndex(HttpResponseMessage response)
    {
        // HttpHeaders match names case-insensitively, whatever spelling the agent or a proxy used.
        if (response.Headers.TryGetValues(ConsulConstants.IndexHeader, out var values))
        {
            foreach (var value in values)
            {
                if (ulong.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var index))
                {
                    return index;
                }
            }
        }

        return 0;
    }

    private static ConsulApiException TimedOut(ConsulConnection connection, string operation, TimeSpan timeout, Exception inner) =>
        new($"Consul at {connection} did not answer {operation} within {timeout}", null, inner);
}

/// <summary>Uses an inner proxy except for loopback hosts (Go's <c>http.ProxyFromEnvironment</c> rule).</summary>
internal sealed class LoopbackBypassProxy(IWebProxy inner) : IWebProxy
{
    public ICredentials? Credentials
    {
        get => inner.Credentials;
        set => inner.Credentials = value;
    }

    public Uri? GetProxy(Uri destination) => inner.GetProxy(destination);

    public bool IsBypassed(Uri host) =>
        host.IsLoopback || string.Equals(host.Host, "localhost", StringComparison.OrdinalIgnoreCase) || inner.IsBypassed(host);
}

/// <summary>What one health query asks: the service and its filters. Blocking parameters come with each request.</summary>
internal sealed class ConsulHealthQuery(string service, IReadOnlyList<string> tags, bool onlyPassing, string? datacenter, TimeSpan wait)
{
    public string Service { get; } = service;

    public IReadOnlyList<string> Tags { get; } = tags;

    public bool OnlyPassing { get; } = onlyPassing;

    public string? Datacenter { get; } = datacenter;

    public TimeSpan Wait { get; } = wait;
}

/// <summary>
/// An answer of <c>/v1/health/service</c>: its index, its entries (<see langword="null"/> when the index did not move), and
/// whether an empty list may be hidden by ACLs (no token sent, default policy deny).
/// </summary>
internal sealed record ConsulHealthAnswer(ulong Index, List<ConsulHealthEntry?>? Entries, bool MayBeFilteredByAcl = false);
