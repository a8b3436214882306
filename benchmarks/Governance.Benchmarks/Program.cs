using BenchmarkDotNet.Running;
using Governance.Benchmarks.Loopback;

// `loopback-rounds` is a custom mode (alternating rounds, not BenchmarkDotNet); everything else goes to the switcher,
// so `--filter '*Pick*'`, `--job short`, `--list flat` and the other BenchmarkDotNet options work as usual.
if (args.Length > 0 && string.Equals(args[0], LoopbackRounds.Command, StringComparison.OrdinalIgnoreCase))
{
    return await LoopbackRounds.RunAsync(args[1..]);
}

BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
return 0;
