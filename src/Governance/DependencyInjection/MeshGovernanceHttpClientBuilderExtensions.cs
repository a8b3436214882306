using Governance.DependencyInjection;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Opts a single <see cref="System.Net.Http.IHttpClientFactory"/> client into MeshGovernance.</summary>
public static class MeshGovernanceHttpClientBuilderExtensions
{
    /// <summary>
    /// Governs this client only (other clients stay ungoverned unless
    /// <see cref="MeshGovernanceServiceCollectionExtensions.AddMeshGovernance(IServiceCollection)"/> is also called).
    /// Configuration comes from the <c>MeshGovernance</c> section of the application's configuration unless an
    /// <c>AddMeshGovernance(IConfiguration)</c> overload (on the service collection or a client builder) names another
    /// section, before or after this call; code configuration (the <c>Action</c> overloads) adds to it. The governance
    /// handler is the outermost handler of the client and is added once however often this is called.
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

    /// <summary>
    /// Governs this client only, configured from <paramref name="configuration"/> (the section that holds
    /// <c>Application</c>, <c>Defaults</c> and <c>Services</c>, reloading when it changes), without governing any other
    /// client. Governance is one per service provider: every governed client shares its services and settings, so a
    /// second client opting in with another section adds that section's settings to the same governance (a client that
    /// opted in without naming a section then no longer binds the default one). The handler is
    /// the outermost handler of the client and is added once however often this is called.
    /// </summary>
    /// <param name="builder">The client builder.</param>
    /// <param name="configuration">The configuration section, for example <c>builder.Configuration.GetSection("Mesh")</c>.</param>
    /// <returns><paramref name="builder"/>, for chaining.</returns>
    public static IHttpClientBuilder AddMeshGovernance(this IHttpClientBuilder builder, Microsoft.Extensions.Configuration.IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configuration);
        GovernanceRegistration.AddCore(builder.Services).AddConfiguration(builder.Services, configuration);
        GovernanceRegistration.AddHandler(builder);
        return builder;
    }

    /// <summary>
    /// Governs this client only, configured in code (the delegate runs after every configuration source and adds to what
    /// they bind, the default section of a client opted in with the parameterless overload included), without governing
    /// any other client. Governance is one per service provider: every governed client shares its services
    /// and settings. The handler is the outermost handler of the client and is added once however often this is called.
    /// </summary>
    /// <param name="builder">The client builder.</param>
    /// <param name="configure">Sets up the options.</param>
    /// <returns><paramref name="builder"/>, for chaining.</returns>
    public static IHttpClientBuilder AddMeshGovernance(this IHttpClientBuilder builder, Action<Governance.Configuration.GovernanceOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configure);
        GovernanceRegistration.AddCore(builder.Services).AddCodeConfiguration(builder.Services, configure);
        GovernanceRegistration.AddHandler(builder);
        return builder;
    }
}
