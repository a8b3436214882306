using System.Reflection;
using Governance.Telemetry;

namespace Governance.Tests.Telemetry;

/// <summary>
/// The telemetry names and log event ids are public contract (dashboards and alerts are built on them): every one is
/// pinned here word for word, and a name or id added without being pinned fails too.
/// </summary>
public sealed class TelemetryNamesTests
{
    [Fact]
    public void GovernanceTelemetry_EveryName_IsPinned()
    {
        var expected = new Dictionary<string, string>
        {
            ["Name"] = "MeshGovernance",
            ["ServiceTag"] = "governance.service",
            ["ReasonTag"] = "governance.reason",
            ["AttemptTag"] = "governance.attempt",
            ["StateTag"] = "governance.state",
            ["DiscoveryProviderTag"] = "governance.discovery.provider",
            ["EjectionDurationTag"] = "governance.ejection.duration",
            ["RetryAfterTag"] = "governance.retry_after",
            ["Instruments.RequestDuration"] = "governance.client.request.duration",
            ["Instruments.Attempts"] = "governance.client.attempts",
            ["Instruments.Retries"] = "governance.client.retries",
            ["Instruments.RateLimitRejections"] = "governance.rate_limit.rejections",
            ["Instruments.OutlierEjections"] = "governance.outlier.ejections",
            ["Instruments.CircuitBreakerTransitions"] = "governance.circuit_breaker.transitions",
            ["Instruments.LoadBalancerEndpoints"] = "governance.lb.endpoints",
            ["Instruments.DiscoveryRefreshes"] = "governance.discovery.refreshes",
            ["Instruments.DiscoveryErrors"] = "governance.discovery.errors",
            ["Events.Retry"] = "governance.retry",
            ["Events.Hedge"] = "governance.hedge",
            ["Events.RateLimitRejected"] = "governance.rate_limit.rejected",
            ["Events.Ejection"] = "governance.outlier.ejection",
            ["Events.CircuitTransition"] = "governance.circuit_breaker.transition",
        };

        Assert.Equal(expected.OrderBy(p => p.Key), Constants<string>(typeof(GovernanceTelemetry)).OrderBy(p => p.Key));
    }

    [Fact]
    public void GovernanceEventIds_EveryId_IsPinned()
    {
        var expected = new Dictionary<string, int>
        {
            ["ConfigurationApplied"] = 1000,
            ["ConfigurationReloadRejected"] = 1001,
            ["ApplicationZoneUnmatched"] = 1002,
            ["ServiceStopFailed"] = 1003,
            ["ConfigurationSectionMissing"] = 1004,
            ["EndpointsChanged"] = 1100,
            ["EndpointSetRebuildFailed"] = 1101,
            ["WatcherDisposeFailed"] = 1102,
            ["DuplicateEndpoint"] = 1103,
            ["ConsulQueryFailed"] = 1110,
            ["ConsulQueryFailedAgain"] = 1111,
            ["ConsulQueryRecovered"] = 1112,
            ["ConsulIndexReset"] = 1113,
            ["ConsulInstanceSkipped"] = 1114,
            ["ConsulEmptyAnswerMayBeAclFiltered"] = 1115,
            ["AttemptCompleted"] = 1201,
            ["EndpointEjected"] = 1300,
            ["EndpointReadmitted"] = 1301,
            ["CircuitOpened"] = 1302,
            ["CircuitClosed"] = 1303,
            ["PanicMode"] = 1304,
            ["HealthCheckFailed"] = 1305,
            ["HealthCheckRecovered"] = 1306,
            ["HealthCheckProbeFailed"] = 1307,
            ["HealthCheckRoundFailed"] = 1308,
            ["HealthCheckAwaited"] = 1309,
            ["HealthCheckFirstPassed"] = 1310,
            ["Registered"] = 1600,
            ["RegistrationFailed"] = 1601,
            ["RegistrationLost"] = 1602,
            ["RegistrationHeartbeatFailed"] = 1603,
            ["Deregistered"] = 1604,
            ["DeregistrationFailed"] = 1605,
            ["DeregistrationNotNeeded"] = 1606,
            ["RegistrationChangeIgnored"] = 1607,
        };

        Assert.Equal(expected.OrderBy(p => p.Key), Constants<int>(typeof(GovernanceEventIds)).OrderBy(p => p.Key));
    }

    /// <summary>The constants of <paramref name="type"/> and its nested types, named <c>Nested.Field</c>.</summary>
    private static Dictionary<string, T> Constants<T>(Type type, string prefix = "")
    {
        var constants = new Dictionary<string, T>();
        foreach (var field in type.GetFields(BindingFlags.Public | BindingFlags.Static))
        {
            if (field.IsLiteral && field.GetRawConstantValue() is T value)
            {
                constants[prefix + field.Name] = value;
            }
        }

        foreach (var nested in type.GetNestedTypes(BindingFlags.Public))
        {
            foreach (var (name, value) in Constants<T>(nested, prefix + nested.Name + "."))
            {
                constants[name] = value;
            }
        }

        return constants;
    }
}
