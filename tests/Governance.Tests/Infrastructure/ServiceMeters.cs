using System.Diagnostics.Metrics;
using Governance.Telemetry;

namespace Governance.Tests.Infrastructure;

/// <summary>Listens to one of governance's instruments, for the measurements of one service.</summary>
public static class ServiceMeters
{
    /// <summary>
    /// Starts a listener that passes <paramref name="onMeasurement"/> every measurement of governance's
    /// <paramref name="instrumentName"/> tagged with <paramref name="service"/>, on the thread (and in the context) that records it.
    /// </summary>
    public static MeterListener Listen<T>(string instrumentName, string service, Action<T> onMeasurement)
        where T : struct
    {
        var meters = new MeterListener
        {
            InstrumentPublished = (instrument, listener) =>
            {
                if (instrument.Meter.Name == GovernanceTelemetry.Name && instrument.Name == instrumentName)
                {
                    listener.EnableMeasurementEvents(instrument);
                }
            },
        };
        meters.SetMeasurementEventCallback<T>((_, value, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == GovernanceTelemetry.ServiceTag && Equals(tag.Value, service))
                {
                    onMeasurement(value);
                }
            }
        });
        meters.Start();
        return meters;
    }
}
