using BenchmarkDotNet.Attributes;
using Governance.Benchmarks.Infrastructure;
using Governance.LoadBalancing;

namespace Governance.Benchmarks.LoadBalancing;

/// <summary>
/// Two threads pick from the same picker at the same time, <see cref="PicksPerThread"/> picks each. The reported time
/// per operation is the wall time of one invocation divided by the picks of ONE thread, that is the latency of a pick
/// while another thread is picking too; compare it with <see cref="PickBenchmarks"/> directly (equal means no
/// contention cost). Allocations are counted on both threads and divided the same way.
/// </summary>
[MemoryDiagnoser]
public class ContendedPickBenchmarks
{
    public const int PicksPerThread = 1 << 16;

    private IEndpointPicker _picker = null!;
    private string?[] _keys = null!;
    private TwoThreads _threads = null!;
    private long _first;
    private long _second;

    [Params(
        LoadBalancingPolicyNames.RoundRobin,
        LoadBalancingPolicyNames.Random,
        LoadBalancingPolicyNames.LeastRequest,
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
        _threads = new TwoThreads(
            () => _first = PickMany(_picker, _keys, 0),
            () => _second = PickMany(_picker, _keys, Pickers.KeyCount / 2));
    }

    [GlobalCleanup]
    public void Cleanup() => _threads.Dispose();

    [Benchmark(OperationsPerInvoke = PicksPerThread)]
    public long PickOnTwoThreads()
    {
        _threads.Run();
        return _first + _second;
    }

    private static long PickMany(IEndpointPicker picker, string?[] keys, int offset)
    {
        long sum = 0;
        for (var i = 0; i < PicksPerThread; i++)
        {
            sum += picker.Pick(new PickContext(keys[(i + offset) & (Pickers.KeyCount - 1)]));
        }

        return sum;
    }
}
