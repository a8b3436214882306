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
    /// <summary>Governance over <paramref name="settings"/>, read from the configuration section <paramref name="section"/>.</summary>
    public static ServiceProvider Build(Dictionary<string, string?> settings, FakeTimeProvider time, CapturingLoggerProvider? logs = null, string section = "MeshGovernance")
    {
        var configuration = new ConfigurationBuilder()
            .AddInMemoryCollection(settings.Select(s => KeyValuePair.Create(section + ":" + s.Key, s.Value)))
            .Build();
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(configuration);
        services.AddSingleton<TimeProvider>(time);
        if (logs is not null)
        {
            services.AddLogging(b => b.AddProvider(logs).SetMinimumLevel(LogLevel.Debug));
        }

        if (section == "MeshGovernance")
        {
            services.AddMeshGovernance();
        }
        else
        {
            services.AddMeshGovernance(configuration.GetSection(section));
        }

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
    /// Moves fake time on until <paramref name="signal"/> completes, only while the code under test waits on the clock:
    /// each time a delay is pending (<see cref="ObservedTimeProvider.WaitForDelayAsync"/>), the clock jumps to its due
    /// time, and then nothing moves until the code has reacted (it waits on a delay again, or the signal completed).
    /// Fake time never advances while the code is doing real work (an HTTP exchange in flight), so its timeouts cannot
    /// fire early and elapsed fake time measures only what the code waited for. The wall-clock guard turns a hang into
    /// a failure.
    /// </summary>
    public static async Task AdvanceUntilAsync(ObservedTimeProvider time, Task signal)
    {
        var started = Stopwatch.GetTimestamp();
        while (!signal.IsCompleted)
        {
            var left = Guard - Stopwatch.GetElapsedTime(started);
            if (left <= TimeSpan.Zero)
            {
                throw new TimeoutException("The awaited event did not happen while fake time advanced.");
            }

            try
            {
                await Task.WhenAny(signal, time.WaitForDelayAsync()).WaitAsync(left);
            }
            catch (TimeoutException ex)
            {
                throw new TimeoutException("The awaited event did not happen, and the code under test does not wait on the clock.", ex);
            }

            if (!signal.IsCompleted)
            {
                time.AdvanceToNextDelay();
            }
        }

        await signal;
    }
}

/// <summary>Collects the <c>MeshGovernance</c> meter's measurements of one service provider (its <c>IMeterFactory</c> scope).</summary>
internal sealed class MeterCapture : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly object _gate = new();
    private readonly List<(Func<MeterCapture, bool> Condition, TaskCompletionSource Done)> _waiters = [];

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
        {
            lock (_gate)
            {
                Measurements.Enqueue((instrument.Name, value, tags.ToArray().ToDictionary(t => t.Key, t => t.Value)));
                for (var i = _waiters.Count - 1; i >= 0; i--)
                {
                    if (_waiters[i].Condition(this))
                    {
                        _waiters[i].Done.TrySetResult();
                        _waiters.RemoveAt(i);
                    }
                }
            }
        });
        _listener.Start();
    }

    public ConcurrentQueue<(string Instrument, long Value, Dictionary<string, object?> Tags)> Measurements { get; } = new();

    public long Sum(string instrument, string service) =>
        Measurements.Where(m => m.Instrument == instrument && Equals(m.Tags.GetValueOrDefault(GovernanceTelemetry.ServiceTag), service)).Sum(m => m.Value);

    /// <summary>Completes once <paramref name="condition"/> holds, checked now and after every measurement.</summary>
    public Task WaitUntilAsync(Func<MeterCapture, bool> condition)
    {
        lock (_gate)
        {
            if (condition(this))
            {
                return Task.CompletedTask;
            }

            var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Add((condition, done));
            return done.Task;
        }
    }

    public void Dispose() => _listener.Dispose();
}
