using Governance.Configuration;
using Governance.Discovery;
using Governance.Discovery.Consul;
using Governance.LoadBalancing;
using Governance.Pipeline;
using Governance.Registration;
using Governance.Telemetry;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Governance.DependencyInjection;

/// <summary>
/// What has been registered in one service collection, kept as a singleton instance so that repeated
/// <c>AddMeshGovernance</c> calls add nothing twice.
/// </summary>
internal sealed class GovernanceRegistration
{
    private readonly List<(IConfiguration? Configuration, string Path)> _sources = [];
    private readonly HashSet<Action<GovernanceOptions>> _codeConfigurations = [];
    private bool _governsAllClients;

    /// <summary>Whether a configuration section was named: the parameterless service-collection overload's default section, or an <see cref="IConfiguration"/> overload's.</summary>
    private bool _hasNamedSource;

    /// <summary>
    /// What <see cref="AddProvisionalDefaultConfiguration"/> registered (the default section, for a client that opted in
    /// before any section was named): withdrawn if an <see cref="IConfiguration"/> overload (on the service collection or
    /// a client builder) later names another section, so that the result does not depend on the order of the calls.
    /// </summary>
    private ServiceDescriptor[]? _provisional;

    public static GovernanceRegistration AddCore(IServiceCollection services)
    {
        foreach (var descriptor in services)
        {
            if (descriptor.ServiceType == typeof(GovernanceRegistration) && descriptor.ImplementationInstance is GovernanceRegistration existing)
            {
                return existing;
            }
        }

        var registration = new GovernanceRegistration();
        services.AddSingleton(registration);
        services.AddOptions();
        services.AddLogging();
        services.AddHttpClient();
        services.TryAddSingleton(TimeProvider.System);
        services.AddMetrics();
        services.TryAddSingleton(sp => new GovernanceInstrumentation(sp.GetService<IMeterFactory>(), sp.GetRequiredService<ILoggerFactory>()));

        // Built-in policies and providers, in the order their names are listed in messages.
        services.TryAddEnumerable(ServiceDescriptor.Singleton<ILoadBalancingPolicy, RoundRobinLoadBalancingPolicy>());
        services.TryAddEnumerable(ServiceDescriptor.Singleton<ILoadBalancingPolicy, RandomLoadBalancingPolicy>());
        services.TryAddEnumerable(ServiceDescriptor.Singleton<ILoadBalancingPolicy, PowerOfTwoChoicesLoadBalancingPolicy>());
        services.TryAddEnumerable(ServiceDescriptor.Singleton<ILoadBalancingPolicy, MaglevLoadBalancingPolicy>());
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IServiceDiscoveryProvider, StaticServiceDiscoveryProvider>());
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IServiceDiscoveryProvider, ConsulServiceDiscoveryProvider>());

        // Consul: one HTTP client of its own for discovery and registration; registration runs with the host and does
        // nothing unless MeshGovernance:Registration is present.
        services.TryAddSingleton<ConsulHttpClient>();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, ConsulRegistrationService>());

        services.TryAddSingleton<LoadBalancingPolicyRegistry>();
        services.TryAddSingleton<ServiceDiscoveryProviderRegistry>();
        services.TryAddSingleton<GovernanceOptionsValidator>();
        services.TryAddSingleton<GovernanceRuntime>();

        // Validation at startup goes through a marker options type: GovernanceOptions itself carries no validator, so an
        // invalid reload never throws inside IOptionsMonitor; GovernanceRuntime logs it and keeps the last good state.
        services.AddOptions<GovernanceStartupValidation>().ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<GovernanceStartupValidation>, GovernanceStartupValidator>());
        return registration;
    }

    public void AddDefaultConfiguration(IServiceCollection services)
    {
        // A provisional default section becomes a named one (it is registered already, so AddSource adds nothing).
        _provisional = null;
        AddSource(services, configuration: null, GovernanceOptions.SectionName);
        _hasNamedSource = true;
    }

    /// <summary>
    /// The default section for a client that opts in (<c>IHttpClientBuilder.AddMeshGovernance()</c>), unless an
    /// <see cref="IConfiguration"/> overload names a section, before or after this call (code configuration adds to it).
    /// </summary>
    public void AddProvisionalDefaultConfiguration(IServiceCollection services)
    {
        if (_hasNamedSource || _provisional is not null)
        {
            return;
        }

        var before = services.Count;
        AddSource(services, configuration: null, GovernanceOptions.SectionName);
        _provisional = new ServiceDescriptor[services.Count - before];
        for (var i = 0; i < _provisional.Length; i++)
        {
            _provisional[i] = services[before + i];
        }
    }

    public void AddConfiguration(IServiceCollection services, IConfiguration configuration)
    {
        WithdrawProvisional(services);
        AddSource(services, configuration, (configuration as IConfigurationSection)?.Path ?? GovernanceOptions.SectionName);
        _hasNamedSource = true;
    }

    public void AddCodeConfiguration(IServiceCollection services, Action<GovernanceOptions> configure)
    {
        // Code adds to whatever sections are bound (it names no source: an opted-in client keeps the default section),
        // after every configuration source, whatever the order of the calls (a source added later would otherwise clear
        // the endpoints this code lists and overwrite its values). The same delegate passed again runs once; different
        // delegates all run, in the order they were given.
        if (_codeConfigurations.Add(configure))
        {
            services.PostConfigure(configure);
        }
    }

    public void GovernAllClients(IServiceCollection services)
    {
        if (!_governsAllClients)
        {
            _governsAllClients = true;
            services.ConfigureHttpClientDefaults(static builder => AddHandler(builder));
        }
    }

    public static void AddHandler(IHttpClientBuilder builder) =>
        builder.ConfigureAdditionalHttpMessageHandlers(static (handlers, services) =>
        {
            foreach (var handler in handlers)
            {
                if (handler is GovernanceHandler)
                {
                    return;
                }
            }

            // Outermost, so that tracing and rate limiting see the logical call before any other handler of the client.
            handlers.Insert(0, new GovernanceHandler(services.GetRequiredService<GovernanceRuntime>()));
        });

    private void WithdrawProvisional(IServiceCollection services)
    {
        if (_provisional is null)
        {
            return;
        }

        foreach (var descriptor in _provisional)
        {
            services.Remove(descriptor);
        }

        _sources.RemoveAll(static s => s.Configuration is null);
        _provisional = null;
    }

    private void AddSource(IServiceCollection services, IConfiguration? configuration, string path)
    {
        foreach (var source in _sources)
        {
            if (ReferenceEquals(source.Configuration, configuration) && string.Equals(source.Path, path, StringComparison.OrdinalIgnoreCase))
            {
                return;
            }
        }

        _sources.Add((configuration, path));
        var resolve = configuration is null
            ? sp => (IConfiguration?)sp.GetService<IConfiguration>()?.GetSection(path)
            : new Func<IServiceProvider, IConfiguration?>(_ => configuration);
        services.AddSingleton<IConfigureOptions<GovernanceOptions>>(sp => new ConfigureFromConfiguration(resolve(sp)));
        services.AddSingleton<IOptionsChangeTokenSource<GovernanceOptions>>(sp =>
            resolve(sp) is { } section
                ? new ConfigurationChangeTokenSource<GovernanceOptions>(section)
                : new ConfigurationChangeTokenSource<GovernanceOptions>(new ConfigurationBuilder().Build()));
    }

    private sealed class ConfigureFromConfiguration(IConfiguration? section) : IConfigureOptions<GovernanceOptions>
    {
        public void Configure(GovernanceOptions options)
        {
            if (section is null)
            {
                // No IConfiguration in the container: the default section cannot exist.
                options.CountSource(found: false);
                return;
            }

            try
            {
                GovernanceConfigurationReader.Read(section, options);
            }
#pragma warning disable CA1031 // A configuration that cannot be read is reported like any invalid one: at startup with the other errors, on reload logged with the last good configuration kept.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                var path = (section as IConfigurationSection)?.Path;
                options.ConfigurationErrors().Add($"{(string.IsNullOrEmpty(path) ? "The configuration" : path)} could not be read: {ex.Message}");
            }
        }
    }
}

/// <summary>Marker options type whose startup validation builds the governance runtime.</summary>
internal sealed class GovernanceStartupValidation;

/// <summary>Builds <see cref="GovernanceRuntime"/> at host start, turning an invalid configuration into a startup failure listing every error.</summary>
internal sealed class GovernanceStartupValidator(IServiceProvider services) : IValidateOptions<GovernanceStartupValidation>
{
    public ValidateOptionsResult Validate(string? name, GovernanceStartupValidation options)
    {
        try
        {
            _ = services.GetRequiredService<GovernanceRuntime>();
            return ValidateOptionsResult.Success;
        }
        catch (OptionsValidationException ex)
        {
            return ValidateOptionsResult.Fail(ex.Failures);
        }
    }
}
