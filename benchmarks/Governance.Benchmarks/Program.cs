using BenchmarkDotNet.Running;
using Governance.Benchmarks.Infrastructure;
using Governance.Benchmarks.Loopback;

// `loopback-rounds`, `toggle-rounds` and `telemetry-rounds` (alternating rounds, not BenchmarkDotNet) and `async-boxes` (state-machine
// sizes) are custom modes;
// everything else goes to the switcher, so `--filter '*Pick*'`, `--job short`, `--list flat` and the other
// BenchmarkDotNet options work as usual.
if (args.Length > 0 && string.Equals(args[0], LoopbackRounds.Command, StringComparison.OrdinalIgnoreCase))
{
    return await LoopbackRounds.RunAsync(args[1..]);
}

if (args.Length > 0 && string.Equals(args[0], ToggleRounds.Command, StringComparison.OrdinalIgnoreCase))
{
    return await ToggleRounds.RunAsync(args[1..]);
}

if (args.Length > 0 && string.Equals(args[0], Governance.Benchmarks.Telemetry.TelemetryRounds.Command, StringComparison.OrdinalIgnoreCase))
{
    return await Governance.Benchmarks.Telemetry.TelemetryRounds.RunAsync(args[1..]);
}

if (args.Length > 0 && string.Equals(args[0], Governance.Benchmarks.Pipeline.ContentionRounds.Command, StringComparison.OrdinalIgnoreCase))
{
    return Governance.Benchmarks.Pipeline.ContentionRounds.Run(args[1..]);
}

if (args.Length > 0 && string.Equals(args[0], Governance.Benchmarks.Pipeline.HandoffRounds.Command, StringComparison.OrdinalIgnoreCase))
{
    return Governance.Benchmarks.Pipeline.HandoffRounds.Run(args[1..]);
}

if (args.Length > 0 && string.Equals(args[0], AsyncBoxes.Command, StringComparison.OrdinalIgnoreCase))
{
    return AsyncBoxes.Run();
}

BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
return 0;
