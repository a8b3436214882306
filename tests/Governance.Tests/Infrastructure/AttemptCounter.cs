using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;

namespace Governance.Tests.Infrastructure;

/// <summary>
/// Counts the attempts that leave the governance handler, per endpoint authority, with a real handler placed after it
/// in every client's pipeline. It sees attempts that never reach a server (connection refused), which a server's own
/// request count cannot.
/// </summary>
public sealed class AttemptCounter
{
    private readonly ConcurrentDictionary<string, int> _byAuthority = new(StringComparer.OrdinalIgnoreCase);
    private int _attempts;

    public int Attempts => Volatile.Read(ref _attempts);

    public IReadOnlyDictionary<string, int> ByAuthority => _byAuthority;

    /// <summary>Adds the counting handler to every client; call it from <c>Governed.Create</c>'s configure callback.</summary>
    public void AddTo(IServiceCollection services) =>
        services.ConfigureHttpClientDefaults(builder => builder.AddHttpMessageHandler(() => new CountingHandler(this)));

    private void Count(Uri? uri)
    {
        Interlocked.Increment(ref _attempts);
        if (uri is not null)
        {
            _byAuthority.AddOrUpdate(uri.GetLeftPart(UriPartial.Authority), 1, static (_, n) => n + 1);
        }
    }

    private sealed class CountingHandler(AttemptCounter counter) : DelegatingHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            counter.Count(request.RequestUri);
            return base.SendAsync(request, cancellationToken);
        }
    }
}
