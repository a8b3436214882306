using System.Globalization;
using Governance.Telemetry;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace MeshGovernance.Demo;

/// <summary>
/// Optional export of MeshGovernance's traces and metrics through the OpenTelemetry SDK. Nothing in the library
/// depends on OpenTelemetry: it publishes an <c>ActivitySource</c> and a <c>Meter</c> named <c>MeshGovernance</c>,
/// which any OpenTelemetry exporter picks up as here.
/// <list type="bullet">
///   <item><description><c>--Telemetry:Console true</c>: print sampled traces (1 in <c>Telemetry:SampleEvery</c>, default 500) and the metrics at exit.</description></item>
///   <item><description><c>--Telemetry:Otlp http://localhost:4317</c> (or the standard <c>OTEL_EXPORTER_OTLP_ENDPOINT</c>): send every trace and the metrics over OTLP, e.g. to Jaeger or SkyWalking's OTLP receiver.</description></item>
/// </list>
/// </summary>
internal static class DemoTelemetry
{
    public static void Add(HostApplicationBuilder builder)
    {
        var configuration = builder.Configuration;
        var console = configuration.GetValue("Telemetry:Console", false);
        var otlp = configuration["Telemetry:Otlp"] ?? Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_ENDPOINT");
        if (!console && string.IsNullOrEmpty(otlp))
        {
            return;
        }

        var sampleEvery = configuration.GetValue("Telemetry:SampleEvery", 500);
        builder.Services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService(configuration["MeshGovernance:Application:Name"] ?? "meshgovernance-demo"))
            .WithTracing(tracing =>
            {
                tracing.AddSource(GovernanceTelemetry.Name, "System.Net.Http");
                if (console)
                {
                    tracing.SetSampler(new TraceIdRatioBasedSampler(1.0 / Math.Max(1, sampleEvery))).AddConsoleExporter();
                }

                if (!string.IsNullOrEmpty(otlp))
                {
                    tracing.AddOtlpExporter(o => o.Endpoint = new Uri(otlp));
                }
            })
            .WithMetrics(metrics =>
            {
                metrics.AddMeter(GovernanceTelemetry.Name);
                if (console)
                {
                    metrics.AddConsoleExporter((_, reader) => reader.PeriodicExportingMetricReaderOptions.ExportIntervalMilliseconds = 60_000);
                }

                if (!string.IsNullOrEmpty(otlp))
                {
                    metrics.AddOtlpExporter(o => o.Endpoint = new Uri(otlp));
                }
            });
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Telemetry: {(console ? $"console (1 trace in {sampleEvery}, metrics at exit)" : string.Empty)}{(console && !string.IsNullOrEmpty(otlp) ? " and " : string.Empty)}{(string.IsNullOrEmpty(otlp) ? string.Empty : $"OTLP to {otlp}")}"));
    }
}
