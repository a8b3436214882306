using Governance.Configuration;
using Governance.LoadBalancing;
using Governance.Pipeline;

namespace Governance.Benchmarks.LoadBalancing;

/// <summary>Builds pickers through the real built-in policies, as <c>EndpointSet</c> does on every rebuild.</summary>
internal static class Pickers
{
    /// <summary>Consistent hash with an affinity key on every request (the case the policy exists for).</summary>
    public const string ConsistentHash = "ConsistentHash";

    /// <summary>Consistent hash for a request without the hash header: falls back to weighted random.</summary>
    public const string ConsistentHashNoKey = "ConsistentHashNoKey";

    /// <summary>
    /// Least request over real <see cref="EndpointState"/> in-flight counters (set by <c>OnRequestStarted</c>), read as
    /// the handler's endpoint groups read them, instead of over a plain array: the pick as governed calls make it.
    /// </summary>
    public const string LeastRequestLive = "LeastRequestLive";

    /// <summary>
    /// Least request over endpoints of weights 1 to 4 (cycling): weighted sampling and the comparison of in-flight
    /// counts per unit of weight (session 9), against equal weights' plain comparison.
    /// </summary>
    public const string LeastRequestWeighted = "LeastRequestWeighted";

    /// <summary>Number of pre-generated hash keys; a power of two so that rotating is a mask.</summary>
    public const int KeyCount = 1024;

    public static IEndpointPicker Create(string policy, int endpointCount)
    {
        var endpoints = new ServiceEndpoint[endpointCount];
        for (var i = 0; i < endpointCount; i++)
        {
            endpoints[i] = new ServiceEndpoint(new Uri($"http://10.0.{i / 256}.{i % 256}:8080"), weight: policy == LeastRequestWeighted ? 1 + (i % 4) : 1);
        }

        ILoadBalancingPolicy implementation = policy switch
        {
            LoadBalancingPolicyNames.RoundRobin => new RoundRobinLoadBalancingPolicy(),
            LoadBalancingPolicyNames.Random => new RandomLoadBalancingPolicy(),
            LoadBalancingPolicyNames.LeastRequest or LeastRequestLive or LeastRequestWeighted => new PowerOfTwoChoicesLoadBalancingPolicy(),
            ConsistentHash or ConsistentHashNoKey => new MaglevLoadBalancingPolicy(),
            _ => throw new ArgumentOutOfRangeException(nameof(policy), policy, "unknown policy"),
        };

        var options = new LoadBalancerOptions { Policy = implementation.Name, HashHeader = "x-user" };
        IEndpointLoad load = policy == LeastRequestLive ? new LiveLoad(endpoints) : new Load(endpointCount);
        return implementation.CreatePicker(new EndpointPickerContext("catalog", endpoints, load, options));
    }

    /// <summary>Keys to rotate through: distinct user ids for <see cref="ConsistentHash"/>, all <see langword="null"/> otherwise.</summary>
    public static string?[] Keys(string policy)
    {
        var keys = new string?[KeyCount];
        if (policy == ConsistentHash)
        {
            for (var i = 0; i < keys.Length; i++)
            {
                keys[i] = $"user-{i * 7919:D8}";
            }
        }

        return keys;
    }

    /// <summary>In-flight counts as the handler keeps them; a small spread so least-request has something to compare.</summary>
    private sealed class Load(int count) : IEndpointLoad
    {
        private readonly int[] _active = CreateActive(count);

        public int GetActiveRequests(int index) => Volatile.Read(ref _active[index]);

        private static int[] CreateActive(int count)
        {
            var active = new int[count];
            for (var i = 0; i < count; i++)
            {
                active[i] = i % 4;
            }

            return active;
        }
    }

    /// <summary>The same spread of in-flight counts held in real endpoint states (never ended: the benchmark only reads them).</summary>
    private sealed class LiveLoad : IEndpointLoad
    {
        private readonly EndpointState[] _states;

        public LiveLoad(ServiceEndpoint[] endpoints)
        {
            _states = new EndpointState[endpoints.Length];
            for (var i = 0; i < endpoints.Length; i++)
            {
                _states[i] = new EndpointState(endpoints[i]);
                for (var k = 0; k < i % 4; k++)
                {
                    _states[i].OnRequestStarted();
                }
            }
        }

        public int GetActiveRequests(int index) => _states[index].ActiveRequests;
    }
}
