namespace Governance.Telemetry;

/// <summary>
/// Every log event id MeshGovernance emits, in one place. Ranges per concern; ids are stable once shipped.
/// 1000-1099 configuration, 1100-1199 discovery, 1200-1299 load balancing, 1300-1399 resilience,
/// 1400-1499 rate limiting, 1500-1599 routing, 1600-1699 registration.
/// </summary>
internal static class GovernanceEventIds
{
    public const int ConfigurationApplied = 1000;
    public const int ConfigurationReloadRejected = 1001;
    public const int ApplicationZoneUnmatched = 1002;
    public const int ServiceStopFailed = 1003;
    public const int ConfigurationSectionMissing = 1004;

    public const int EndpointsChanged = 1100;
    public const int EndpointSetRebuildFailed = 1101;
    public const int WatcherDisposeFailed = 1102;
    public const int DuplicateEndpoint = 1103;

    // Consul discovery (1110-1129).
    public const int ConsulQueryFailed = 1110;
    public const int ConsulQueryFailedAgain = 1111;
    public const int ConsulQueryRecovered = 1112;
    public const int ConsulIndexReset = 1113;
    public const int ConsulInstanceSkipped = 1114;
    public const int ConsulEmptyAnswerMayBeAclFiltered = 1115;

    public const int AttemptCompleted = 1201;

    public const int EndpointEjected = 1300;
    public const int EndpointReadmitted = 1301;
    public const int CircuitOpened = 1302;
    public const int CircuitClosed = 1303;
    public const int PanicMode = 1304;
    public const int HealthCheckFailed = 1305;
    public const int HealthCheckRecovered = 1306;
    public const int HealthCheckProbeFailed = 1307;
    public const int HealthCheckRoundFailed = 1308;
    public const int HealthCheckAwaited = 1309;
    public const int HealthCheckFirstPassed = 1310;

    public const int Registered = 1600;
    public const int RegistrationFailed = 1601;
    public const int RegistrationLost = 1602;
    public const int RegistrationHeartbeatFailed = 1603;
    public const int Deregistered = 1604;
    public const int DeregistrationFailed = 1605;
    public const int DeregistrationNotNeeded = 1606;
    public const int RegistrationChangeIgnored = 1607;
}
