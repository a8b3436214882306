using static Governance.Tests.Discovery.ConsulValidationTests;

namespace Governance.Tests.Registration;

/// <summary>The validation messages of <c>MeshGovernance:Registration</c>, pinned word for word (public contract).</summary>
public sealed class RegistrationValidationTests
{
    [Fact]
    public void Validate_RegistrationWithoutNameOrConsul_NamesBothKeys()
    {
        var ex = Validate(new() { ["Registration:Port"] = "8080" });

        Assert.Equal(
            [
                "MeshGovernance:Consul:Address is required because MeshGovernance:Registration is on: give the HTTP address of a Consul agent, such as http://127.0.0.1:8500",
                "MeshGovernance:Application:Name is required when MeshGovernance:Registration is on: it is the service name registered in Consul",
            ],
            ex.Failures);
    }

    [Fact]
    public void Validate_HttpCheckKeysBesideTtl_HaveNoEffect()
    {
        var ex = Validate(new()
        {
            ["Application:Name"] = "orders",
            ["Consul:Address"] = "http://127.0.0.1:8500",
            ["Registration:Check:Ttl"] = "00:00:30",
            ["Registration:Check:Interval"] = "00:00:05",
            ["Registration:Check:Timeout"] = "00:00:02",
        });

        Assert.Equal(
            "MeshGovernance:Registration:Check:Interval, Timeout have no effect with MeshGovernance:Registration:Check:Ttl: Consul runs an HTTP check at an interval with a timeout, while a TTL check is kept passing by heartbeats every Ttl/3; remove them or Ttl",
            Assert.Single(ex.Failures));
    }

    [Fact]
    public void Validate_BadRegistrationValues_EveryErrorNamesItsKey()
    {
        var ex = Validate(new()
        {
            ["Application:Name"] = "orders api",
            ["Consul:Address"] = "http://127.0.0.1:8500",
            ["Registration:InstanceId"] = "orders/1",
            ["Registration:Address"] = "http://10.0.0.5:8080",
            ["Registration:Port"] = "70000",
            ["Registration:Scheme"] = "ftp",
            ["Registration:Tags:0"] = "",
            ["Registration:Metadata:bad key"] = "x",
            ["Registration:Metadata:consul-version"] = "1",
            ["Registration:Weights:Passing"] = "0",
            ["Registration:Weights:Warning"] = "-1",
            ["Registration:Check:HttpPath"] = "health",
            ["Registration:Check:Ttl"] = "00:00:00.500",
            ["Registration:Check:Interval"] = "00:00:00.500",
            ["Registration:Check:DeregisterCriticalServiceAfter"] = "00:00:30",
        });

        Assert.Equal(
            [
                "MeshGovernance:Application:Name 'orders api' cannot be registered in Consul: other services discover it by name as the host of their request URIs, so it must be a DNS name of letters, digits, '-' and '.'",
                "MeshGovernance:Registration:InstanceId 'orders/1' must not contain '/', '\\', '?', '#', '%', whitespace or control characters: it is part of Consul's URLs",
                "MeshGovernance:Registration:Address 'http://10.0.0.5:8080' is not a host name or IP address: give it without scheme or port, such as 10.0.0.5 (the port goes in MeshGovernance:Registration:Port)",
                "MeshGovernance:Registration:Port '70000' must be between 0 and 65535",
                "MeshGovernance:Registration:Scheme 'ftp' is not a known scheme (http, https)",
                "MeshGovernance:Registration:Tags:0 is empty: a tag must have text",
                "MeshGovernance:Registration:Metadata:bad key is not a Consul metadata key: use 1 to 128 letters, digits, '-' and '_'",
                "MeshGovernance:Registration:Metadata:consul-version uses the prefix 'consul-', which Consul reserves",
                "MeshGovernance:Registration:Weights:Passing '0' must be between 1 and 65535",
                "MeshGovernance:Registration:Weights:Warning '-1' must be between 0 and 65535",
                "MeshGovernance:Registration:Check:HttpPath 'health' must be an absolute path such as /health",
                "MeshGovernance:Registration:Check:HttpPath and MeshGovernance:Registration:Check:Ttl are both set: the check is either an HTTP check (HttpPath) or a TTL check (Ttl), so remove one of them",
                "MeshGovernance:Registration:Check:Interval '00:00:00.5000000' must be between 00:00:01 and 1.00:00:00",
                "MeshGovernance:Registration:Check:Ttl '00:00:00.5000000' must be between 00:00:01 and 1.00:00:00",
                "MeshGovernance:Registration:Check:DeregisterCriticalServiceAfter '00:00:30' must be between 00:01:00 and 1.00:00:00",
            ],
            ex.Failures);
    }

    [Fact]
    public void Validate_CheckTimeoutLongerThanInterval_Rejected()
    {
        var ex = Validate(new()
        {
            ["Application:Name"] = "orders",
            ["Consul:Address"] = "http://127.0.0.1:8500",
            ["Registration:Port"] = "8080",
            ["Registration:Check:Interval"] = "00:00:05",
            ["Registration:Check:Timeout"] = "00:00:06",
        });

        Assert.Equal("MeshGovernance:Registration:Check:Timeout '00:00:06' must not exceed MeshGovernance:Registration:Check:Interval '00:00:05'", Assert.Single(ex.Failures));
    }

    [Fact]
    public void Validate_RegistrationDisabled_NameAndConsulNotRequired()
    {
        var options = Bind(new()
        {
            ["Registration:Enabled"] = "false",
            ["Registration:Port"] = "8080",
            ["Services:catalog:Endpoints:0"] = "http://127.0.0.1:5001",
        });

        Assert.False(options.Registration!.Enabled);
    }

    [Fact]
    public void Validate_UnknownRegistrationKey_ListsTheKnownOnes()
    {
        var ex = Validate(new()
        {
            ["Application:Name"] = "orders",
            ["Consul:Address"] = "http://127.0.0.1:8500",
            ["Registration:Port"] = "8080",
            ["Registration:Check:Http"] = "/health",
        });

        Assert.Equal("MeshGovernance:Registration:Check:Http is not a known setting (Enabled, HttpPath, Interval, Timeout, Ttl, DeregisterCriticalServiceAfter)", Assert.Single(ex.Failures));
    }
}
