namespace Governance.Telemetry;

/// <summary>Names under which MeshGovernance publishes traces and metrics. These names are public contract.</summary>
public static class GovernanceTelemetry
{
    /// <summary>Name of the <c>ActivitySource</c> and of the <c>Meter</c>: <c>MeshGovernance</c>.</summary>
    public const string Name = "MeshGovernance";

    /// <summary>Tag holding the logical service name of a governed call: <c>governance.service</c>.</summary>
    public const string ServiceTag = "governance.service";
}
