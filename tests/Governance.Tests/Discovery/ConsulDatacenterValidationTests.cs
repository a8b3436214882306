namespace Governance.Tests.Discovery;

/// <summary>The validation of <c>Consul:Datacenter</c>, pinned word for word.</summary>
public sealed class ConsulDatacenterValidationTests
{
    [Fact]
    public void Validate_UpperCaseDatacenter_SaysConsulNamesAreLowerCase()
    {
        var ex = ConsulValidationTests.Validate(new()
        {
            ["Consul:Address"] = "http://127.0.0.1:8500",
            ["Consul:Datacenter"] = "EU-West",
            ["Services:catalog:Discovery"] = "Consul",
        });

        Assert.Equal(
            "MeshGovernance:Consul:Datacenter 'EU-West' has upper-case letters: Consul's datacenter names are lower case, so queries for it would never be answered (use 'eu-west')",
            Assert.Single(ex.Failures));
    }

    [Fact]
    public void Validate_LowerCaseDatacenter_Accepted()
    {
        var options = ConsulValidationTests.Bind(new()
        {
            ["Consul:Address"] = "http://127.0.0.1:8500",
            ["Consul:Datacenter"] = "eu-west_2",
            ["Services:catalog:Discovery"] = "Consul",
        });

        Assert.Equal("eu-west_2", options.Consul.Datacenter);
    }
}
