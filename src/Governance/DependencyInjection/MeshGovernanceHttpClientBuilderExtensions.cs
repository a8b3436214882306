using Governance.DependencyInjection;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Opts a single <see cref="System.Net.Http.IHttpClientFactory"/> client into MeshGovernance.</summary>
public static class MeshGovernanceHttpClientBuilderExtensions
{
    /// <summary>
    /// Governs this client only (other clients stay ungoverned unless
    /// <see cref="MeshGovernanceServiceCollectionExtensions.AddMeshGovernance(IServiceCollection)"/> is also called).
    /// Configuration comes from the <c>MeshGovernance</c> section of the application's configuration unless an
    /// <c>AddMeshGovernance</c> overload on the service collection names a source, before or after this call. The governance handler is
    /// the outermost handler of the client and is added once however often this is called.
    /// </summary>
    /// <param name="builder">The client builder.</param>
    /// <returns><paramref name="builder"/>, for chaining.</returns>
    public static IHttpClientBuilder AddMeshGovernance(this IHttpClientBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        GovernanceRegistration.AddCore(builder.Services).AddProvisionalDefaultConfiguration(builder.Services);

        GovernanceRegistration.AddHandler(builder);
        return builder;
    }
}
