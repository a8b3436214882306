using System.Runtime.CompilerServices;

namespace Governance.Telemetry;

/// <summary>
/// Per-request telemetry settings of a governed call, carried in <see cref="HttpRequestMessage.Options"/>.
/// </summary>
/// <remarks>
/// <see cref="HttpClient"/> requests carry no route template, so the caller states it:
/// <code>
/// using var request = new HttpRequestMessage(HttpMethod.Get, $"http://catalog/items/{id}");
/// request.SetUrlTemplate("/items/{id}");
/// </code>
/// The template is recorded as the OpenTelemetry attribute <c>url.template</c> on the logical call's span and on
/// <c>governance.client.request.duration</c>. A request without a template gets no <c>url.template</c> at all: the
/// request's path is never used in its place.
/// </remarks>
public static class GovernanceHttpRequestMessageExtensions
{
    private static readonly bool CanPeekOptions = ProbeOptionsField();

    /// <summary>
    /// Gets the key of the URL template in <see cref="HttpRequestMessage.Options"/>: <c>MeshGovernance.UrlTemplate</c>.
    /// Not set by default. <see cref="SetUrlTemplate"/> writes it; another handler may read it with this key.
    /// </summary>
    public static HttpRequestOptionsKey<string> UrlTemplateKey { get; } = new("MeshGovernance.UrlTemplate");

    /// <summary>
    /// Sets the low-cardinality template of the request's URL (for example <c>/items/{id}</c>), which MeshGovernance
    /// records as <c>url.template</c> on the logical call's span and on its duration metric. By default a request has
    /// none, and no <c>url.template</c> is recorded.
    /// </summary>
    /// <param name="request">The request to annotate.</param>
    /// <param name="urlTemplate">
    /// The template, with variable parts as placeholders (<c>/users/{id}</c>, not <c>/users/42</c>): it is a metric
    /// tag, so every distinct value creates a new time series, and it must not contain identifiers or secrets.
    /// </param>
    /// <exception cref="ArgumentNullException"><paramref name="request"/> or <paramref name="urlTemplate"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException"><paramref name="urlTemplate"/> is empty.</exception>
    public static void SetUrlTemplate(this HttpRequestMessage request, string urlTemplate)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentException.ThrowIfNullOrEmpty(urlTemplate);
        request.Options.Set(UrlTemplateKey, urlTemplate);
    }

    /// <summary>
    /// Returns the template set by <see cref="SetUrlTemplate"/>, or <see langword="null"/> when the request has none
    /// (the default).
    /// </summary>
    /// <param name="request">The request.</param>
    /// <returns>The URL template, or <see langword="null"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="request"/> is <see langword="null"/>.</exception>
    public static string? GetUrlTemplate(this HttpRequestMessage request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return PeekUrlTemplate(request);
    }

    /// <summary>
    /// Reads the template without creating the request's options collection: <see cref="HttpRequestMessage.Options"/>
    /// allocates it (about 100 B) on first access, which a request that never set an option would otherwise pay on every
    /// observed call. Falls back to the public property if a future runtime renames the field.
    /// </summary>
    internal static string? PeekUrlTemplate(HttpRequestMessage request)
    {
        var options = CanPeekOptions ? OptionsField(request) : request.Options;
        return options is not null && options.TryGetValue(UrlTemplateKey, out var template) ? template : null;
    }

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_options")]
    private static extern ref HttpRequestOptions? OptionsField(HttpRequestMessage request);

    private static bool ProbeOptionsField()
    {
        try
        {
            using var probe = new HttpRequestMessage();
            _ = OptionsField(probe);
            return true;
        }
        catch (MissingFieldException)
        {
            return false;
        }
    }
}
