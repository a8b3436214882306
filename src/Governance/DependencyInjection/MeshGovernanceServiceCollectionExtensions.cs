using Governance.Configuration;
using Governance.DependencyInjection;
using Microsoft.Extensions.Configuration;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers MeshGovernance in an <see cref="IServiceCollection"/>.</summary>
public static class MeshGovernanceServiceCollectionExtensions
{
    /// <summary>
    /// Adds MeshGovernance configured from the <c>MeshGovernance</c> section of the application's
    /// <see cref="IConfiguration"/>, and governs every <see cref="System.Net.Http.IHttpClientFactory"/> client: requests
    /// whose host is a service listed under <c>MeshGovernance:Services</c> are governed, all others pass through untouched.
    /// Calling it more than once is harmless.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <returns><paramref name="services"/>, for chaining.</returns>
    public static IServiceCollection AddMeshGovernance(this IServiceCollection services)
    {
        ArgumentNullException.ThrowIfNull(services);
        var registration = GovernanceRegistration.AddCore(services);
        registration.AddDefaultConfiguration(services);
        registration.GovernAllClients(services);
        return services;
    }

    /// <summary>
    /// Adds MeshGovernance configured from <paramref name="configuration"/> (the section that holds <c>Application</c>,
    /// <c>Defaults</c> and <c>Services</c>), reloading when it changes, and governs every
    /// <see cref="System.Net.Http.IHttpClientFactory"/> client. Calling it again with the same section is harmless.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configuration">
    /// The configuration section, for example <c>builder.Configuration.GetSection("MeshGovernance")</c>. A whole
    /// configuration is read from its <c>MeshGovernance</c> section when it has one, otherwise as the section itself (a
    /// configuration built for governance alone, whose top-level keys are <c>Services</c>, <c>Defaults</c>, …).
    /// </param>
    /// <returns><paramref name="services"/>, for chaining.</returns>
    public static IServiceCollection AddMeshGovernance(this IServiceCollection services, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configuration);
        var registration = GovernanceRegistration.AddCore(services);
        registration.AddConfiguration(services, configuration);
        registration.GovernAllClients(services);
        return services;
    }

    /// <summary>
    /// Adds MeshGovernance configured in code, and governs every <see cref="System.Net.Http.IHttpClientFactory"/> client.
    /// The delegate runs after any configuration binding, so it can also adjust bound settings.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configure">Sets up the options.</param>
    /// <returns><paramref name="services"/>, for chaining.</returns>
    public static IServiceCollection AddMeshGovernance(this IServiceCollection services, Action<GovernanceOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configure);
        var registration = GovernanceRegistration.AddCore(services);
        registration.AddCodeConfiguration(services, configure);
        registration.GovernAllClients(services);
        return services;
    }
}
