using System.Net;
using Governance.Pipeline;
using Governance.Tests.Infrastructure;
using Governance.Tests.Resilience;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace Governance.Tests.Pipeline;

/// <summary>
/// Redirects followed by the primary handler (the factory's default handler follows them), below governance: what the
/// caller sees and what governance counts.
/// </summary>
public sealed class RedirectTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("http://catalog/a", "/b?x=1", "http://catalog/b?x=1")]
    [InlineData("http://catalog/a?q=1#part", "/b", "http://catalog/b#part")] // the caller's fragment is kept (RFC 9110, 10.2.2)
    [InlineData("http://catalog:8080/a", "/b#other", "http://catalog:8080/b#other")] // the Location's own fragment wins
    public async Task SendAsync_EndpointRedirectsOnItself_CallerSeesTheFinalUriInLogicalForm(string url, string location, string expected)
    {
        await using var server = await StartRedirectingAsync("a", _ => location);
        await using var governed = Governed.Create(Governed.Service("catalog", null, server));
        using var request = new HttpRequestMessage(HttpMethod.Get, url);

        using var response = await governed.Client.SendAsync(request).WaitAsync(Faults.Guard);

        var body = await response.Content.ReadAsStringAsync();
        output.WriteLine($"{url} -> {location}: {(int)response.StatusCode} '{body}', final URI {request.RequestUri}");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("at /b" + (location.Contains('?', StringComparison.Ordinal) ? "?x=1" : string.Empty), body);
        Assert.Equal(expected, request.RequestUri!.OriginalString);
        Assert.Same(request, response.RequestMessage);
        Assert.Equal(2, server.RequestCount);
    }

    [Fact]
    public async Task SendAsync_EndpointRedirectsToAnotherHost_CallerSeesThatHostsUri()
    {
        await using var elsewhere = await LoopbackServer.StartAsync("elsewhere");
        var target = new Uri(elsewhere.Address, "/moved?y=2");
        await using var server = await StartRedirectingAsync("a", _ => target.ToString());
        await using var governed = Governed.Create(Governed.Service("catalog", null, server));
        using var request = new HttpRequestMessage(HttpMethod.Get, "http://catalog/a");

        using var response = await governed.Client.SendAsync(request).WaitAsync(Faults.Guard);

        Assert.Equal("elsewhere", Assert.Single(response.Headers.GetValues("x-server")));
        Assert.Equal(target, request.RequestUri);
        Assert.Equal(1, elsewhere.RequestCount);
    }

    [Fact]
    public async Task SendAsync_RedirectTargetFails_FailsOnceNamingTheRedirectWithoutRetryOrEjection()
    {
        // Every endpoint redirects to a port that refuses connections: a failure of the target, not of the endpoints.
        using var refusing = new RefusingEndpoint();
        var target = new UriBuilder(new Uri(refusing.Address, "/b?token=s3cr3t")) { UserName = "user", Password = "s3cr3t-password" }.Uri;
        await using var e1 = await StartRedirectingAsync("e1", _ => target.ToString());
        await using var e2 = await StartRedirectingAsync("e2", _ => target.ToString());
        await using var governed = Faults.Create(CountingEveryFailure(e1, e2), new ObservedTimeProvider());

        for (var i = 1; i <= 4; i++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, $"http://{Faults.Service}/a");
            var ex = await Assert.ThrowsAsync<HttpRequestException>(() => governed.Client.SendAsync(request).WaitAsync(Faults.Guard));
            output.WriteLine($"call {i}: {ex.Message}");

            Assert.Equal(HttpRequestError.ConnectionError, ex.HttpRequestError);
            Assert.StartsWith($"Service '{Faults.Service}': 1 attempt failed; last error: ", ex.Message, StringComparison.Ordinal);
            Assert.Contains($"followed a redirect from endpoint ", ex.Message, StringComparison.Ordinal);
            // Named without its query (a Location may carry tokens; the message reaches logs and the span's status).
            Assert.Contains($"to '{new Uri(refusing.Address, "/b")}'", ex.Message, StringComparison.Ordinal);
            Assert.DoesNotContain("s3cr3t", ex.Message, StringComparison.Ordinal);
            Assert.Contains("AllowAutoRedirect = false", ex.Message, StringComparison.Ordinal);
            Assert.Equal(target, request.RequestUri);
            Assert.Equal(i, e1.RequestCount + e2.RequestCount);
        }

        // Neither ejected nor broken: every endpoint is still a candidate.
        Assert.All(Faults.Runtime(governed).Endpoints.All, s => Assert.Equal(EndpointConditions.None, s.Conditions));
        Assert.Equal(2, Faults.Runtime(governed).Endpoints.Candidates.Length);
    }

    [Fact]
    public async Task SendAsync_RedirectedThenServerError_NotRetriedWithTheRequestTheRedirectChanged()
    {
        // The redirect follower drops Authorization on every redirect: a retry would send the caller's GET without it.
        var authorized = new System.Collections.Concurrent.ConcurrentQueue<string>();
        Func<HttpContext, Task> Handler(string name) => context =>
        {
            authorized.Enqueue($"{name} {context.Request.Path} {context.Request.Headers.Authorization}");
            if (context.Request.Path == "/a")
            {
                context.Response.StatusCode = StatusCodes.Status302Found;
                context.Response.Headers.Location = "/b";
                return Task.CompletedTask;
            }

            context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
            return Task.CompletedTask;
        };
        await using var e1 = await LoopbackServer.StartAsync("e1", Handler("e1"));
        await using var e2 = await LoopbackServer.StartAsync("e2", Handler("e2"));
        await using var governed = Faults.Create(Faults.Settings(e1, e2), new ObservedTimeProvider());
        using var request = new HttpRequestMessage(HttpMethod.Get, $"http://{Faults.Service}/a");
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", "t");

        using var response = await governed.Client.SendAsync(request).WaitAsync(Faults.Guard);

        output.WriteLine($"{(int)response.StatusCode}; requests: {string.Join(", ", authorized)}");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal(2, authorized.Count);
        Assert.EndsWith("/a Bearer t", authorized.First(), StringComparison.Ordinal);
        Assert.Equal($"http://{Faults.Service}/b", request.RequestUri!.OriginalString);
    }

    [Fact]
    public async Task SendAsync_HandlerBelowGovernanceRewritesEachAttemptsQuery_NotTakenForARedirectAndRetried()
    {
        // A handler of the client's own (inside governance, as every AddHttpMessageHandler is) gives each attempt a new URI
        // with an api-version: no redirect was followed, so a failed attempt is retried on the other endpoint, and the
        // retry is rewritten the same way. Taking it for a redirect turned every retry off.
        var received = new System.Collections.Concurrent.ConcurrentQueue<string>();
        Func<HttpContext, Task> Handler(string name, int status) => context =>
        {
            received.Enqueue($"{name} {context.Request.Path}{context.Request.QueryString}");
            context.Response.StatusCode = status;
            return context.Response.WriteAsync(name);
        };
        await using var down = await LoopbackServer.StartAsync("down", Handler("down", StatusCodes.Status503ServiceUnavailable));
        await using var up = await LoopbackServer.StartAsync("up", Handler("up", StatusCodes.Status200OK));
        await using var governed = Governed.Create(
            Faults.Settings(down, up).With("OutlierDetection:Enabled", false).With("CircuitBreaker:Enabled", false),
            services =>
            {
                services.AddSingleton<TimeProvider>(new ObservedTimeProvider());
                services.ConfigureHttpClientDefaults(b => b.AddHttpMessageHandler(() => new ApiVersionAppender()));
            });

        for (var i = 0; i < 6; i++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, $"http://{Faults.Service}/items?id={i}");
            using var response = await governed.Client.SendAsync(request).WaitAsync(Faults.Guard);

            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal($"http://{Faults.Service}/items?id={i}&api-version=2", request.RequestUri!.OriginalString);
        }

        output.WriteLine($"requests: {string.Join(", ", received)}");
        Assert.InRange(received.Count(r => r.StartsWith("down ", StringComparison.Ordinal)), 1, 6);
        Assert.Equal(6, received.Count(r => r.StartsWith("up ", StringComparison.Ordinal)));
        Assert.All(received, r => Assert.EndsWith("&api-version=2", r, StringComparison.Ordinal));
    }

    /// <summary>Gives every request a new URI with <c>api-version=2</c> appended to its query.</summary>
    private sealed class ApiVersionAppender : DelegatingHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            request.RequestUri = new Uri(request.RequestUri + "&api-version=2");
            return base.SendAsync(request, cancellationToken);
        }
    }

    [Theory]
    [InlineData("/orders/7")]

    // To the same URI: only the method tells that the request changed.
    [InlineData("/orders")]
    public async Task PostAsync_RedirectedBy303ThenServerError_NotRetriedAsTheGetTheRedirectMadeOfIt(string location)
    {
        var received = new System.Collections.Concurrent.ConcurrentQueue<string>();
        Func<HttpContext, Task> Handler(string name) => context =>
        {
            received.Enqueue($"{name} {context.Request.Method} {context.Request.Path}");
            if (HttpMethods.IsPost(context.Request.Method))
            {
                context.Response.StatusCode = StatusCodes.Status303SeeOther;
                context.Response.Headers.Location = location;
                return Task.CompletedTask;
            }

            context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
            return Task.CompletedTask;
        };
        await using var e1 = await LoopbackServer.StartAsync("e1", Handler("e1"));
        await using var e2 = await LoopbackServer.StartAsync("e2", Handler("e2"));

        // Even with non-idempotent retries allowed: the POST became a GET on its way.
        await using var governed = Faults.Create(Faults.Settings(e1, e2).With("Retry:RetryNonIdempotent", true), new ObservedTimeProvider());

        using var response = await governed.Client.PostAsync($"http://{Faults.Service}/orders", new StringContent("order")).WaitAsync(Faults.Guard);

        output.WriteLine($"{(int)response.StatusCode}; requests: {string.Join(", ", received)}");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal(2, received.Count);
        Assert.Single(received, r => r.EndsWith(" POST /orders", StringComparison.Ordinal));
        Assert.Single(received, r => r.EndsWith($" GET {location}", StringComparison.Ordinal));
    }

    [Fact]
    public async Task SendAsync_RedirectedToAnotherHostAnsweringServerError_NeitherRetriedNorCountedAgainstTheEndpoint()
    {
        await using var sso = await Faults.StartStatusAsync("sso", 503);
        var target = new Uri(sso.Address, "/login");
        await using var e1 = await StartRedirectingAsync("e1", _ => target.ToString());
        await using var e2 = await StartRedirectingAsync("e2", _ => target.ToString());
        await using var governed = Faults.Create(CountingEveryFailure(e1, e2), new ObservedTimeProvider());

        for (var i = 1; i <= 4; i++)
        {
            using var response = await governed.Client.GetAsync($"http://{Faults.Service}/a").WaitAsync(Faults.Guard);
            Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
            Assert.Equal(i, e1.RequestCount + e2.RequestCount);
            Assert.Equal(i, sso.RequestCount);
        }

        Assert.All(Faults.Runtime(governed).Endpoints.All, s => Assert.Equal(EndpointConditions.None, s.Conditions));
    }

    [Fact]
    public async Task SendAsync_RedirectTargetHangsUntilTheAttemptTimesOut_NotCountedAgainstTheEndpoint()
    {
        var held = new Governance.Tests.Resilience.HeldRequests();
        await using var slow = await LoopbackServer.StartAsync("slow", held.Handle);
        var target = new Uri(slow.Address, "/slow");
        await using var e1 = await StartRedirectingAsync("e1", _ => target.ToString());
        await using var e2 = await StartRedirectingAsync("e2", _ => target.ToString());
        var time = new ObservedTimeProvider();
        var perAttempt = TimeSpan.FromSeconds(1);
        await using var governed = Faults.Create(CountingEveryFailure(e1, e2).With("Timeout:PerAttempt", perAttempt), time);
        try
        {
            var call = governed.Client.GetAsync($"http://{Faults.Service}/a");
            await held.WaitForArrivalAsync();
            time.Advance(perAttempt);

            // The attempt timed out at the redirect target: the caller gets the timeout, not retried (the request was
            // redirected), and neither endpoint's breaker nor outlier detection counts it.
            var ex = await Assert.ThrowsAsync<CallTimeoutException>(() => call.WaitAsync(Faults.Guard));
            output.WriteLine(ex.Message);
            Assert.Equal(1, held.Count);
            Assert.All(Faults.Runtime(governed).Endpoints.All, s => Assert.Equal(EndpointConditions.None, s.Conditions));
        }
        finally
        {
            held.Release();
        }
    }

    [Fact]
    public async Task SendAsync_HedgedCallRedirectedOnItself_CallerSeesTheFinalUriInLogicalForm()
    {
        await using var server = await StartRedirectingAsync("a", _ => "/b");
        var settings = Governed.Service("catalog", null, server);
        settings["Services:catalog:Hedging:Enabled"] = "true";
        await using var governed = Governed.Create(settings);
        using var request = new HttpRequestMessage(HttpMethod.Get, "http://catalog/a");

        using var response = await governed.Client.SendAsync(request).WaitAsync(Faults.Guard);

        Assert.Equal("at /b", await response.Content.ReadAsStringAsync());
        Assert.Equal("http://catalog/b", request.RequestUri!.OriginalString);
        Assert.Same(request, response.RequestMessage);
    }

    /// <summary>Settings under which one counted failure would eject an endpoint or open its circuit.</summary>
    private static Dictionary<string, string?> CountingEveryFailure(params LoopbackServer[] endpoints) =>
        Faults.Settings(endpoints)
            .With("OutlierDetection:Consecutive5xx", 1)
            .With("OutlierDetection:ConsecutiveGatewayFailure", 1)
            .With("OutlierDetection:MaxEjectionPercent", 100)
            .With("CircuitBreaker:MinimumThroughput", 2)
            .With("CircuitBreaker:FailureRatio", 0.1);

    /// <summary>A server that answers <c>/a</c> with a 302 to the given location and anything else with its path and query.</summary>
    private static Task<LoopbackServer> StartRedirectingAsync(string name, Func<HttpContext, string> location) =>
        LoopbackServer.StartAsync(name, context =>
        {
            if (context.Request.Path == "/a")
            {
                context.Response.StatusCode = StatusCodes.Status302Found;
                context.Response.Headers.Location = location(context);
                return Task.CompletedTask;
            }

            return context.Response.WriteAsync("at " + context.Request.Path + context.Request.QueryString, context.RequestAborted);
        });
}
