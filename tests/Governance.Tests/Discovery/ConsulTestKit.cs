using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Governance.Configuration;
using Governance.Discovery;
using Governance.Discovery.Consul;
using Governance.Telemetry;
using Governance.Tests.Infrastructure;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;

namespace Governance.Tests.Discovery;

/// <summary>Helpers shared by the tests that run against <see cref="ConsulApiDouble"/>.</summary>
internal static class ConsulTestKit
{
    public static readonly TimeSpan Guard = TimeSpan.FromSeconds(20);

    /// <summary>
    /// A service provider with <c>AddMeshGovernance</c> over the given keys (relative to <c>MeshGovernance</c>),
    /// <see cref="FakeTimeProvider"/> and a capturing logger.
    /// </summary>
    public static ServiceProvider Build(Dictionary<string, string?> settings, FakeTimeProvider time, CapturingLoggerProvider? logs = null)
    {
        var configuration = new ConfigurationBuilder()
            .AddInMemoryCollection(settings.Select(s => KeyValuePair.Create("MeshGovernance:" + s.Key, s.Value)))
            .Build();
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(configuration);
        services.AddSingleton<TimeProvider>(time);
        if (logs is not null)
        {
            services.AddLogging(b => b.AddProvider(logs).SetMinimumLevel(LogLevel.Debug));
        }

        services.AddMeshGovernance();
        return services.BuildServiceProvider(validateScopes: true);
    }

    public static Dictionary<string, string?> Settings(ConsulApiDouble consul, string service = "catalog") => new()
    {
        ["Consul:Address"] = consul.Address.ToString(),
        [$"Services:{service}:Discovery"] = "Consul",
    };

    public static ConsulServiceDiscoveryProvider Provider(IServiceProvider services) =>
        services.GetServices<IServiceDiscoveryProvider>().OfType<ConsulServiceDiscoveryProvider>().Single();

    /// <summary>Starts watching a service the way the runtime does, with the service's configured options.</summary>
    public static IServiceEndpointWatcher Watch(IServiceProvider services, string service = "catalog")
    {
        var options = services.GetRequiredService<Microsoft.Extensions.Options.IOptionsMonitor<GovernanceOptions>>().CurrentValue;
        return Provider(services).Watch(service, options.Services.TryGetValue(service, out var own) ? own : new ServiceOptions { Discovery = "Consul" });
    }

    /// <summary>A task that completes when the watcher's change token fires next (take it before causing the change).</summary>
    public static Task Changed(IServiceEndpointWatcher watcher)
    {
        var fired = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        watcher.GetChangeToken().RegisterChangeCallback(static s => ((TaskCompletionSource)s!).TrySetResult(), fired);
        return fired.Task;
    }

    /// <summary>Waits until the watcher publishes endpoints that satisfy <paramref name="condition"/>.</summary>
    public static async Task<IReadOnlyList<ServiceEndpoint>> EndpointsAsync(IServiceEndpointWatcher watcher, Func<IReadOnlyList<ServiceEndpoint>, bool> condition)
    {
        var started = Stopwatch.GetTimestamp();
        while (true)
        {
            var changed = Changed(watcher);
            if (watcher.Current is { } current && condition(current))
            {
                return current;
            }

            var left = Guard - Stopwatch.GetElapsedTime(started);
            if (left <= TimeSpan.Zero)
            {
                throw new TimeoutException($"The watcher did not publish the expected endpoints; it has: {(watcher.Current is null ? "nothing" : string.Join(", ", watcher.Current))}");
            }

            await changed.WaitAsync(left);
        }
    }

    /// <summary>
    /// Advances fake time by <paramref name="step"/> until <paramref name="signal"/> completes, giving the code under test
    /// a moment of real time between steps (its timers may be created after a step, which then needs another one).
    /// </summary>
    public static async Task AdvanceUntilAsync(FakeTimeProvider time, TimeSpan step, Task signal)
    {
        var started = Stopwatch.GetTimestamp();
        while (!signal.IsCompleted)
        {
            if (Stopwatch.GetElapsedTime(started) > Guard)
            {
                throw new TimeoutException("The awaited event did not happen while fake time advanced.");
            }

            time.Advance(step);
            await Task.WhenAny(signal, Task.Delay(TimeSpan.FromMilliseconds(20)));
        }

        await signal;
    }

    public static Task AdvanceUntilAsync(FakeTimeProvider time, TimeSpan step, Func<bool> condition) =>
        AdvanceUntilAsync(time, step, PollAsync(condition));

    private static async Task PollAsync(Func<bool> condition)
    {
        while (!condition())
        {
            await Task.Delay(TimeSpan.FromMilliseconds(10));
        }
    }
}

/// <summary>Collects the <c>MeshGovernance</c> meter's measurements of one service provider (its <c>IMeterFactory</c> scope).</summary>
internal sealed class MeterCapture : IDisposable
{
    private readonly MeterListener _listener = new();

    public MeterCapture(IServiceProvider services)
    {
        var factory = services.GetRequiredService<IMeterFactory>();
        _ = services.GetRequiredService<GovernanceInstrumentation>();
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == GovernanceTelemetry.Name && ReferenceEquals(instrument.Meter.Scope, factory))
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
            Measurements.Enqueue((instrument.Name, value, tags.ToArray().ToDictionary(t => t.Key, t => t.Value))));
        _listener.Start();
    }

    public ConcurrentQueue<(string Instrument, long Value, Dictionary<string, object?> Tags)> Measurements { get; } = new();

    public long Sum(string instrument, string service) =>
        Measurements.Where(m => m.Instrument == instrument && Equals(m.Tags.GetValueOrDefault(GovernanceTelemetry.ServiceTag), service)).Sum(m => m.Value);

    public void Dispose() => _listener.Dispose();
}
