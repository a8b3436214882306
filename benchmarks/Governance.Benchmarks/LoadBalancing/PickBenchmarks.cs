using BenchmarkDotNet.Attributes;
using Governance.LoadBalancing;

namespace Governance.Benchmarks.LoadBalancing;

/// <summary>
/// One <see cref="IEndpointPicker.Pick"/> on one thread, per policy and endpoint count. Pickers come from the real
/// policies; all endpoints have weight 1, except in <c>LeastRequestWeighted</c> (weights 1 to 4). The harness (reading the next key from a 1,024-entry array) is the same for
/// every policy; keys are <see langword="null"/> except for <c>ConsistentHash</c>.
/// </summary>
[MemoryDiagnoser]
public class PickBenchmarks
{
    private IEndpointPicker _picker = null!;
    private string?[] _keys = null!;
    private int _next;

    [Params(
        LoadBalancingPolicyNames.RoundRobin,
        LoadBalancingPolicyNames.Random,
        LoadBalancingPolicyNames.LeastRequest,
        Pickers.LeastRequestLive,
        Pickers.LeastRequestWeighted,
        Pickers.ConsistentHash,
        Pickers.ConsistentHashNoKey)]
    public string Policy { get; set; } = LoadBalancingPolicyNames.RoundRobin;

    [Params(3, 100, 1000)]
    public int Endpoints { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _picker = Pickers.Create(Policy, Endpoints);
        _keys = Pickers.Keys(Policy);
    }

    [Benchmark]
    public int Pick()
    {
        var key = _keys[_next++ & (Pickers.KeyCount - 1)];
        return _picker.Pick(new PickContext(key));
    }
}
