using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Governance.Telemetry;
using Governance.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;

namespace Governance.Tests.Telemetry;

/// <summary>
/// <c>url.template</c>, supplied per request with <see cref="GovernanceHttpRequestMessageExtensions.SetUrlTemplate"/>, on
/// the logical span and on <c>governance.client.request.duration</c>, against real Kestrel backends. Runs in the
/// telemetry collection (listeners are process-wide); every assertion filters by trace id or by its own service name.
/// </summary>
[Collection(nameof(TelemetryTests))]
public sealed class UrlTemplateTests : IDisposable
{
    private const string UrlTemplateTag = "url.template";
    private static readonly ActivitySource TestSource = new("Governance.Tests.UrlTemplate");
    private readonly ConcurrentQueue<Activity> _stopped = new();
    private readonly ConcurrentQueue<(string Instrument, Dictionary<string, object?> Tags)> _measurements = new();
    private readonly ActivityListener _activities;
    private readonly MeterListener _meters;

    public UrlTemplateTests()
    {
        _activities = new ActivityListener
        {
            ShouldListenTo = s => s.Name is GovernanceTelemetry.Name or "Governance.Tests.UrlTemplate",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = _stopped.Enqueue,
        };
        ActivitySource.AddActivityListener(_activities);
        _meters = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == GovernanceTelemetry.Name)
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        _meters.SetMeasurementEventCallback<double>(Record);
        _meters.SetMeasurementEventCallback<long>(Record);
        _meters.Start();
    }

    public void Dispose()
    {
        _meters.Dispose();
        _activities.Dispose();
    }

    [Fact]
    public async Task SendAsync_UrlTemplateSet_SpanAndDurationCarryIt()
    {
        await using var server = await LoopbackServer.StartAsync("a");
        await using var governed = Governed.Create(Governed.Service("templated", null, server));
        using var root = TestSource.StartActivity("test")!;
        using var request = new HttpRequestMessage(HttpMethod.Get, "http://templated/items/42?id=42");
        request.SetUrlTemplate("/items/{id}");

        using var response = await governed.Client.SendAsync(request).WaitAsync(TimeSpan.FromSeconds(30));
        response.EnsureSuccessStatusCode();

        var logical = Assert.Single(_stopped, s => s.TraceId == root.TraceId && s.Source.Name == GovernanceTelemetry.Name);
        Assert.Equal("/items/{id}", logical.GetTagItem(UrlTemplateTag));
        var duration = Assert.Single(Measurements("templated", GovernanceTelemetry.Instruments.RequestDuration));
        Assert.Equal("/items/{id}", duration[UrlTemplateTag]);
        Assert.Equal(200, duration["http.response.status_code"]);
        Assert.InRange((double)duration["value"]!, double.Epsilon, 30);
        Assert.Equal(logical.Duration.TotalSeconds, (double)duration["value"]!); // one clock reading for both
        Assert.DoesNotContain(
            logical.TagObjects.Select(t => t.Value).Concat(_measurements.Select(m => m.Tags).Where(t => Equals(t.GetValueOrDefault(GovernanceTelemetry.ServiceTag), "templated")).SelectMany(t => t.Values)),
            v => v is string s && s.Contains("42", StringComparison.Ordinal));
    }

    [Fact]
    public async Task SendAsync_NoUrlTemplate_NoUrlTemplateTagAndNoPathFallback()
    {
        await using var server = await LoopbackServer.StartAsync("a");
        await using var governed = Governed.Create(Governed.Service("untemplated", null, server));
        using var root = TestSource.StartActivity("test")!;

        using var response = await governed.Client.GetAsync("http://untemplated/items/42").WaitAsync(TimeSpan.FromSeconds(30));
        response.EnsureSuccessStatusCode();

        var logical = Assert.Single(_stopped, s => s.TraceId == root.TraceId && s.Source.Name == GovernanceTelemetry.Name);
        Assert.DoesNotContain(logical.TagObjects, t => t.Key == UrlTemplateTag);
        var duration = Assert.Single(Measurements("untemplated", GovernanceTelemetry.Instruments.RequestDuration));
        Assert.False(duration.ContainsKey(UrlTemplateTag));
    }

    [Fact]
    public async Task SendAsync_RateLimitedWithUrlTemplate_RefusedSpanAndDurationCarryIt()
    {
        await using var server = await LoopbackServer.StartAsync("a");
        var settings = Governed.Service("templated-limited", null, server);
        settings["Services:templated-limited:RateLimit:Algorithm"] = "Concurrency";
        settings["Services:templated-limited:RateLimit:Burst"] = "1";
        await using var governed = Governed.Create(settings);
        using (var first = await governed.Client.GetAsync("http://templated-limited/orders/1").WaitAsync(TimeSpan.FromSeconds(30)))
        {
            first.EnsureSuccessStatusCode();
        }

        // The only permit is held here (a real-clock token bucket could refill before the next call on a slow machine):
        // this call is refused before any network work.
        Assert.True(governed.Services.GetRequiredService<Governance.Pipeline.GovernanceRuntime>().TryGetService("templated-limited", out var service));
        using var held = service.Policy.Limiter!.AttemptAcquire();
        Assert.True(held.IsAcquired);
        using var root = TestSource.StartActivity("test")!;
        using var request = new HttpRequestMessage(HttpMethod.Get, "http://templated-limited/orders/7");
        request.SetUrlTemplate("/orders/{id}");
        await Assert.ThrowsAsync<RateLimitRejectedException>(() => governed.Client.SendAsync(request).WaitAsync(TimeSpan.FromSeconds(30)));

        var logical = Assert.Single(_stopped, s => s.TraceId == root.TraceId && s.Source.Name == GovernanceTelemetry.Name);
        Assert.Equal("/orders/{id}", logical.GetTagItem(UrlTemplateTag));
        Assert.Equal(typeof(RateLimitRejectedException).FullName, logical.GetTagItem("error.type"));
        var durations = Measurements("templated-limited", GovernanceTelemetry.Instruments.RequestDuration);
        Assert.Equal(2, durations.Count);
        var refused = Assert.Single(durations, d => d.ContainsKey("error.type"));
        Assert.Equal("/orders/{id}", refused[UrlTemplateTag]);
        Assert.False(Assert.Single(durations, d => !d.ContainsKey("error.type")).ContainsKey(UrlTemplateTag));
    }

    [Fact]
    public void SetUrlTemplate_Set_ReadableThroughPublicKey()
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "http://catalog/items/1");
        Assert.Null(request.GetUrlTemplate());

        request.SetUrlTemplate("/items/{id}");

        Assert.Equal("/items/{id}", request.GetUrlTemplate());
        Assert.True(request.Options.TryGetValue(GovernanceHttpRequestMessageExtensions.UrlTemplateKey, out var template));
        Assert.Equal("/items/{id}", template);
        Assert.Equal("MeshGovernance.UrlTemplate", GovernanceHttpRequestMessageExtensions.UrlTemplateKey.Key);
    }

    [Fact]
    public void SetUrlTemplate_NullOrEmpty_Throws()
    {
        using var request = new HttpRequestMessage();

        Assert.Throws<ArgumentNullException>(() => request.SetUrlTemplate(null!));
        Assert.Throws<ArgumentException>(() => request.SetUrlTemplate(string.Empty));
        Assert.Throws<ArgumentNullException>(() => ((HttpRequestMessage)null!).SetUrlTemplate("/items"));
    }

    [Fact]
    public void PeekUrlTemplate_RequestWithoutOptions_AllocatesNothing()
    {
        using (var warmUp = new HttpRequestMessage())
        {
            Assert.Null(GovernanceHttpRequestMessageExtensions.PeekUrlTemplate(warmUp));
        }

        // HttpRequestMessage.Options creates the options collection on first access; the telemetry path must not.
        using var request = new HttpRequestMessage(HttpMethod.Get, "http://catalog/items/1");
        var before = GC.GetAllocatedBytesForCurrentThread();
        var template = GovernanceHttpRequestMessageExtensions.PeekUrlTemplate(request);
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Null(template);
        Assert.Equal(0, allocated);
    }

    /// <summary>The tags of one instrument's measurements for one service, plus the measured value under <c>value</c>.</summary>
    private List<Dictionary<string, object?>> Measurements(string service, string instrument) =>
        _measurements.Where(m => m.Instrument == instrument && Equals(m.Tags.GetValueOrDefault(GovernanceTelemetry.ServiceTag), service)).Select(m => m.Tags).ToList();

    private void Record<T>(Instrument instrument, T value, ReadOnlySpan<KeyValuePair<string, object?>> tags, object? state)
    {
        var dictionary = new Dictionary<string, object?>();
        foreach (var tag in tags)
        {
            dictionary[tag.Key] = tag.Value;
        }

        dictionary["value"] = Convert.ToDouble(value, System.Globalization.CultureInfo.InvariantCulture);
        _measurements.Enqueue((instrument.Name, dictionary));
    }
}
