using Governance.Configuration;
using Governance.LoadBalancing;

namespace Governance.Benchmarks.LoadBalancing;

/// <summary>Builds pickers through the real built-in policies, as <c>EndpointSet</c> does on every rebuild.</summary>
internal static class Pickers
{
    /// <summary>Consistent hash with an affinity key on every request (the case the policy exists for).</summary>
    public const string ConsistentHash = "ConsistentHash";

    /// <summary>Consistent hash for a request without the hash header: falls back to weighted random.</summary>
    public const string ConsistentHashNoKey = "ConsistentHashNoKey";

    /// <summary>Number of pre-generated hash keys; a power of two so that rotating is a mask.</summary>
    public const int KeyCount = 1024;

    public static IEndpointPicker Create(string policy, int endpointCount)
    {
        var endpoints = new ServiceEndpoint[endpointCount];
        for (var i = 0; i < endpointCount; i++)
        {
            endpoints[i] = new ServiceEndpoint(new Uri($"http://10.0.{i / 256}.{i % 256}:8080"));
        }

        ILoadBalancingPolicy implementation = policy switch
        {
            LoadBalancingPolicyNames.RoundRobin => new RoundRobinLoadBalancingPolicy(),
            LoadBalancingPolicyNames.Random => new RandomLoadBalancingPolicy(),
            LoadBalancingPolicyNames.LeastRequest => new PowerOfTwoChoicesLoadBalancingPolicy(),
            ConsistentHash or ConsistentHashNoKey => new MaglevLoadBalancingPolicy(),
            _ => throw new ArgumentOutOfRangeException(nameof(policy), policy, "unknown policy"),
        };

        var options = new LoadBalancerOptions { Policy = implementation.Name, HashHeader = "x-user" };
        return implementation.CreatePicker(new EndpointPickerContext("catalog", endpoints, new Load(endpointCount), options));
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
}
