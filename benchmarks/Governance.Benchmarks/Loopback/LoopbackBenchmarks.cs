using BenchmarkDotNet.Attributes;

namespace Governance.Benchmarks.Loopback;

/// <summary>
/// End to end against a real Kestrel server on 127.0.0.1 in the same process: each operation is one of
/// <see cref="Concurrency"/> GETs sent at once (the batch is awaited as a whole; time and allocations are divided by
/// <see cref="Concurrency"/>). Allocations include the server's, which are the same for every row. See
/// <see cref="LoopbackClients"/> for the rows; <c>loopback-rounds</c> measures the same clients in alternating rounds.
/// </summary>
[MemoryDiagnoser]
public class LoopbackBenchmarks
{
    public const int Concurrency = 32;

    private readonly Task[] _tasks = new Task[Concurrency];
    private LoopbackClients _clients = null!;

    [GlobalSetup]
    public async Task Setup() => _clients = await LoopbackClients.StartAsync();

    [GlobalCleanup]
    public async Task Cleanup() => await _clients.DisposeAsync();

    [Benchmark(Baseline = true, OperationsPerInvoke = Concurrency)]
    public Task Bare() => LoopbackClients.SendConcurrentlyAsync(_clients.Bare, _clients.PhysicalUri, _tasks);

    [Benchmark(OperationsPerInvoke = Concurrency)]
    public Task Factory() => LoopbackClients.SendConcurrentlyAsync(_clients.Factory, _clients.PhysicalUri, _tasks);

    [Benchmark(OperationsPerInvoke = Concurrency)]
    public Task StandardResilience() => LoopbackClients.SendConcurrentlyAsync(_clients.StandardResilience, _clients.PhysicalUri, _tasks);

    [Benchmark(OperationsPerInvoke = Concurrency)]
    public Task Governed() => LoopbackClients.SendConcurrentlyAsync(_clients.Governed, _clients.LogicalUri, _tasks);

    [Benchmark(OperationsPerInvoke = Concurrency)]
    public Task GovernedFullStack() => LoopbackClients.SendConcurrentlyAsync(_clients.GovernedFullStack, _clients.LogicalUri, _tasks);

    [Benchmark(OperationsPerInvoke = Concurrency)]
    public Task GovernedNoFactoryLoggers() => LoopbackClients.SendConcurrentlyAsync(_clients.GovernedNoFactoryLoggers, _clients.LogicalUri, _tasks);

    [Benchmark(OperationsPerInvoke = Concurrency)]
    public Task GovernanceHandlerOnly() => LoopbackClients.SendConcurrentlyAsync(_clients.GovernanceHandlerOnly, _clients.LogicalUri, _tasks);

    [Benchmark(OperationsPerInvoke = Concurrency)]
    public Task ServiceDiscovery() => LoopbackClients.SendConcurrentlyAsync(_clients.ServiceDiscovery, _clients.LogicalUri, _tasks);
}
