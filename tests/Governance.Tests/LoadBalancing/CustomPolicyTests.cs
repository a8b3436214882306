using Governance.LoadBalancing;
using Governance.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Governance.Tests.LoadBalancing;

public sealed class CustomPolicyTests
{
    [Fact]
    public async Task Pick_CustomPolicySelectedByNameInAnyCase_DecidesTheEndpoint()
    {
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        var settings = Governed.Service("catalog", "last-endpoint", a, b);
        await using var governed = Governed.Create(settings, services => services.AddSingleton<ILoadBalancingPolicy, LastEndpointPolicy>());

        for (var i = 0; i < 5; i++)
        {
            Assert.Equal("b", await governed.GetServerAsync("http://catalog/"));
        }

        Assert.Equal(0, a.RequestCount);
    }

    [Fact]
    public async Task Pick_CustomPolicyWithBuiltInName_ReplacesBuiltIn()
    {
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        await using var governed = Governed.Create(
            Governed.Service("catalog", "RoundRobin", a, b),
            services => services.AddSingleton<ILoadBalancingPolicy>(new LastEndpointPolicy("RoundRobin")));

        for (var i = 0; i < 4; i++)
        {
            Assert.Equal("b", await governed.GetServerAsync("http://catalog/"));
        }
    }

    [Fact]
    public void Validate_UnknownPolicy_ListsCustomPoliciesToo()
    {
        var settings = new Dictionary<string, string?>
        {
            ["Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
            ["Services:catalog:LoadBalancer:Policy"] = "first-endpoint",
        };

        var ex = Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(() =>
            Governed.Create(settings, services => services.AddSingleton<ILoadBalancingPolicy, LastEndpointPolicy>()));

        Assert.Equal("MeshGovernance:Services:catalog:LoadBalancer:Policy 'first-endpoint' is not a known policy (RoundRobin, Random, LeastRequest, ConsistentHash, Last-Endpoint)", Assert.Single(ex.Failures));
    }

    [Fact]
    public async Task Pick_CustomPickerThrows_CallFailsWithItsExceptionAndGivesItsPermitBack()
    {
        // A picker's bug must reach the caller as the call's failure and end the call as any failure does: with one
        // concurrency permit, the second call is admitted only if the first gave its permit back.
        await using var a = await LoopbackServer.StartAsync("a");
        var settings = Governed.Service("catalog", "throwing", a);
        settings["Services:catalog:RateLimit:Algorithm"] = "Concurrency";
        settings["Services:catalog:RateLimit:Burst"] = "1";
        await using var governed = Governed.Create(settings, services => services.AddSingleton<ILoadBalancingPolicy, ThrowingPolicy>());
        var logical = new Uri("http://catalog/items");

        for (var i = 0; i < 2; i++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, logical);
            var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => governed.Client.SendAsync(request));
            Assert.Equal("picker bug", ex.Message);
            Assert.Same(logical, request.RequestUri);
        }

        Assert.Equal(0, a.RequestCount);
    }

    [Fact]
    public async Task Pick_CustomPickerReturnsIndexOutOfRange_CallFailsNamingPolicyAndIndex()
    {
        // Not "no endpoint available" while both endpoints are healthy: the message says what the policy did.
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        await using var governed = Governed.Create(
            Governed.Service("catalog", "off-by-one", a, b),
            services => services.AddSingleton<ILoadBalancingPolicy>(new LastEndpointPolicy("off-by-one", offset: 1)));

        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => governed.Client.GetAsync("http://catalog/items"));

        Assert.Equal("Service 'catalog': load-balancing policy 'off-by-one' picked index 2, but its picker was built over 2 endpoints (0 to 1, or -1 for none)", ex.Message);
        Assert.Equal(0, a.RequestCount + b.RequestCount);
    }

    [Fact]
    public async Task Pick_CustomPickerPicksNone_CallFailsNamingThePolicyNotUnavailableEndpoints()
    {
        // -1 ("none can be picked") while both endpoints are available: the policy's choice, not an outage.
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        await using var governed = Governed.Create(
            Governed.Service("catalog", "refusing", a, b),
            services => services.AddSingleton<ILoadBalancingPolicy>(new LastEndpointPolicy("refusing", offset: -2)));

        var ex = await Assert.ThrowsAsync<NoAvailableEndpointException>(() => governed.Client.GetAsync("http://catalog/items"));

        Assert.Contains("load-balancing policy 'refusing' picked none of the 2 available endpoints", ex.Message, StringComparison.Ordinal);
        Assert.Equal(0, a.RequestCount + b.RequestCount);
    }

    [Fact]
    public void Create_CustomPolicyReturnsNoPicker_FailsWhenTheSetIsBuiltNamingThePolicy()
    {
        // Caught where the set is built (startup here; a reload would be rejected), not as a NullReferenceException on
        // every call.
        var ex = Assert.Throws<InvalidOperationException>(() => Governed.Create(
            new Dictionary<string, string?> { ["Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001", ["Services:catalog:LoadBalancer:Policy"] = "null-picker" },
            services => services.AddSingleton<ILoadBalancingPolicy, NullPickerPolicy>()));

        Assert.Equal("Service 'catalog': load-balancing policy 'null-picker' returned no picker from CreatePicker", ex.Message);
    }

    [Fact]
    public async Task Reload_CreatePickerThrows_RejectedWithoutForgettingTheEndpointsInService()
    {
        // The policy refuses any list with c. A reload from [a, b] to [a, c] is rejected; the next rebuild (here a
        // refresh, as a health change or an ejection makes) must find b as it was (same state: breaker, ejection, health),
        // not take it for a newcomer because the failed rebuild had forgotten it.
        await using var a = await LoopbackServer.StartAsync("a");
        await using var b = await LoopbackServer.StartAsync("b");
        await using var c = await LoopbackServer.StartAsync("c");
        var refused = c.Address.GetLeftPart(UriPartial.Authority);
        await using var governed = Governed.Create(
            Governed.Service("catalog", "refuses-c", a, b),
            services => services.AddSingleton<ILoadBalancingPolicy>(new RefusingPolicy("refuses-c", refused)));
        var service = Traffic.Runtime(governed);
        var before = Traffic.State(governed, b);

        governed.Configuration["MeshGovernance:Services:catalog:Endpoints:1"] = c.Address.ToString();
        governed.Configuration.Reload();
        Assert.Same(before, Traffic.State(governed, b));
        service.Refresh();

        Assert.Same(before, Traffic.State(governed, b));
        Assert.Equal(2, service.Endpoints.Candidates.Length);
    }

    [Fact]
    public async Task Retry_PickerAskedAgainWithTheAttempt_ItsAnswerForTheAttemptIsTaken()
    {
        // The picker names "down" on a first pick and "up2" when asked again (Attempt 1 on): every retry after down's 503
        // goes to up2. Without the attempt the picker keeps naming down and the fallback takes up1 or up2 at random.
        var seen = new System.Collections.Concurrent.ConcurrentQueue<int>();
        await using var down = await LoopbackServer.StartAsync("down", c => { c.Response.StatusCode = 503; return Task.CompletedTask; });
        await using var up1 = await LoopbackServer.StartAsync("up1");
        await using var up2 = await LoopbackServer.StartAsync("up2");
        var settings = Governed.Service("catalog", "by-attempt", down, up1, up2);
        settings["Services:catalog:OutlierDetection:Enabled"] = "false";
        settings["Services:catalog:CircuitBreaker:Enabled"] = "false";
        settings["Services:catalog:Retry:BaseDelay"] = "00:00:00";
        await using var governed = Governed.Create(settings, services => services.AddSingleton<ILoadBalancingPolicy>(new ByAttemptPolicy(seen)));

        for (var i = 0; i < 10; i++)
        {
            Assert.Equal("up2", await governed.GetServerAsync("http://catalog/"));
        }

        Assert.Equal(10, down.RequestCount);
        Assert.Equal(0, up1.RequestCount);
        Assert.Contains(1, seen);
    }

    [Fact]
    public async Task TryPick_PickerKeepsNamingTriedEndpoint_KeyedFallbackSameInEveryListOrderAndByWeight()
    {
        // A policy that ignores the attempt (it always names the first endpoint, "down"): every retry pick of a keyed call
        // ends in the fallback, which must give a key the same alternate whatever order discovery lists the endpoints in,
        // and spread keys by weight (a 3, b 1, c 1: 60/20/20 %).
        string[] order1 = ["down", "a", "b", "c"];
        string[] order2 = ["down", "c", "a", "b"];
        var weights = new Dictionary<string, int> { ["down"] = 5, ["a"] = 3, ["b"] = 1, ["c"] = 1 };
        var port = new Dictionary<string, int> { ["down"] = 5000, ["a"] = 5001, ["b"] = 5002, ["c"] = 5003 };
        Dictionary<string, string?> Settings(string[] order)
        {
            var settings = new Dictionary<string, string?>
            {
                ["Services:catalog:LoadBalancer:Policy"] = "first",
                ["Services:catalog:LoadBalancer:HashHeader"] = "x-key",
            };
            for (var i = 0; i < order.Length; i++)
            {
                settings[$"Services:catalog:Endpoints:{i}:Address"] = $"http://127.0.0.1:{port[order[i]]}";
                settings[$"Services:catalog:Endpoints:{i}:Weight"] = weights[order[i]].ToString(System.Globalization.CultureInfo.InvariantCulture);
            }

            return settings;
        }

        var counts = new Dictionary<int, int>();
        await using var first = Governed.Create(Settings(order1), s => s.AddSingleton<ILoadBalancingPolicy>(new LastEndpointPolicy("first", offset: -3)));
        await using var second = Governed.Create(Settings(order2), s => s.AddSingleton<ILoadBalancingPolicy>(new LastEndpointPolicy("first", offset: -3)));
        var service1 = Traffic.Runtime(first);
        var service2 = Traffic.Runtime(second);
        var down1 = service1.Endpoints.All.Single(e => e.Endpoint.Address.Port == port["down"]);
        var down2 = service2.Endpoints.All.Single(e => e.Endpoint.Address.Port == port["down"]);
        for (var k = 0; k < 5000; k++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "http://catalog/");
            request.Headers.TryAddWithoutValidation("x-key", $"user-{k}");
            var alternate = service1.TryPick(request, [down1])!.Endpoint.Address.Port;
            Assert.Equal(alternate, service1.TryPick(request, [down1])!.Endpoint.Address.Port);
            Assert.Equal(alternate, service2.TryPick(request, [down2])!.Endpoint.Address.Port);
            counts[alternate] = counts.GetValueOrDefault(alternate) + 1;
        }

        // Binomial over 5,000 keys: sigma at most 0.7 points; ±3.5 points is 5 sigma. Ignoring the weights gives 33 %.
        Assert.InRange(counts[port["a"]] / 5000.0, 0.565, 0.635);
        Assert.InRange(counts[port["b"]] / 5000.0, 0.165, 0.235);
        Assert.InRange(counts[port["c"]] / 5000.0, 0.165, 0.235);
    }

    [Fact]
    public async Task HealthCheck_RebuildAfterAProbeThrows_LoggedAsAFailedRebuildAndTheChecksGoOn()
    {
        // The policy refuses any list with c: the rebuild that c's first passing probe asks for fails. That is the set's
        // failure (1101, the set in force stays), not the round's: the checker applies the other results and goes on.
        // c's /health answers once the test saw a admitted (so that a's set builds first).
        var admitted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var a = await LoopbackServer.StartAsync("a");
        await using var c = await LoopbackServer.StartAsync("c", async context =>
        {
            if (context.Request.Path == "/health")
            {
                await admitted.Task;
            }

            await context.Response.WriteAsync("c");
        });
        var logs = new CapturingLoggerProvider();
        var settings = Governed.Service("catalog", "refuses-c", a, c);
        settings["Services:catalog:HealthCheck:Path"] = "/health";
        await using var governed = Governed.Create(settings, services =>
        {
            services.AddSingleton<ILoadBalancingPolicy>(new RefusingPolicy("refuses-c", c.Address.GetLeftPart(UriPartial.Authority)));
            services.AddLogging(l => l.AddProvider(logs).SetMinimumLevel(Microsoft.Extensions.Logging.LogLevel.Debug));
        });

        try
        {
            await logs.WaitForAsync(e => e.EventId.Id == Governance.Telemetry.GovernanceEventIds.HealthCheckFirstPassed).WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal("a", await governed.GetServerAsync("http://catalog/"));
        }
        finally
        {
            admitted.TrySetResult();
        }

        await logs.WaitForAsync(e => e.EventId.Id == Governance.Telemetry.GovernanceEventIds.EndpointSetRebuildFailed).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(0, logs.Entries.Count(e => e.EventId.Id == Governance.Telemetry.GovernanceEventIds.HealthCheckRoundFailed));
        Assert.Equal("a", await governed.GetServerAsync("http://catalog/"));
    }

    [Theory]
    [InlineData(null)]
    [InlineData(" ")]
    public void Create_CustomPolicyWithoutName_FailsAtStartupNamingItsType(string? name)
    {
        var ex = Assert.Throws<InvalidOperationException>(() =>
            Governed.Create(new Dictionary<string, string?> { ["Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001" }, services => services.AddSingleton<ILoadBalancingPolicy>(new LastEndpointPolicy(name!))));

        Assert.StartsWith($"{typeof(LastEndpointPolicy).FullName} has no Name", ex.Message, StringComparison.Ordinal);
    }

    private sealed class RefusingPolicy(string name, string refused) : ILoadBalancingPolicy
    {
        public string Name => name;

        public IEndpointPicker CreatePicker(EndpointPickerContext context) =>
            context.Endpoints.Any(e => e.Authority == refused) ? throw new InvalidOperationException($"{refused} refused") : new LastEndpointPolicy(name).CreatePicker(context);
    }

    private sealed class ByAttemptPolicy(System.Collections.Concurrent.ConcurrentQueue<int> seen) : ILoadBalancingPolicy
    {
        public string Name => "by-attempt";

        public IEndpointPicker CreatePicker(EndpointPickerContext context) => new Picker(seen);

        private sealed class Picker(System.Collections.Concurrent.ConcurrentQueue<int> seen) : IEndpointPicker
        {
            public int Pick(in PickContext context)
            {
                seen.Enqueue(context.Attempt);
                return context.Attempt == 0 ? 0 : 2;
            }
        }
    }

    private sealed class NullPickerPolicy : ILoadBalancingPolicy
    {
        public string Name => "null-picker";

        public IEndpointPicker CreatePicker(EndpointPickerContext context) => null!;
    }

    private sealed class ThrowingPolicy : ILoadBalancingPolicy
    {
        public string Name => "throwing";

        public IEndpointPicker CreatePicker(EndpointPickerContext context) => new Picker();

        private sealed class Picker : IEndpointPicker
        {
            public int Pick(in PickContext context) => throw new InvalidOperationException("picker bug");
        }
    }

    private sealed class LastEndpointPolicy(string name, int offset = 0) : ILoadBalancingPolicy
    {
        public LastEndpointPolicy()
            : this("Last-Endpoint")
        {
        }

        public string Name => name;

        public IEndpointPicker CreatePicker(EndpointPickerContext context) => new Picker(context.Endpoints.Count - 1 + offset);

        private sealed class Picker(int index) : IEndpointPicker
        {
            public int Pick(in PickContext context) => index;
        }
    }
}
