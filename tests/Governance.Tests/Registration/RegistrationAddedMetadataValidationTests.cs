using Governance.Tests.Discovery;

namespace Governance.Tests.Registration;

/// <summary>The metadata keys registration adds (zone, secure) count against Consul's limits; messages pinned word for word.</summary>
public sealed class RegistrationAddedMetadataValidationTests
{
    private static Dictionary<string, string?> WithMetadata(int keys, string? zone = null, string? scheme = null)
    {
        var settings = new Dictionary<string, string?>
        {
            ["Application:Name"] = "orders",
            ["Application:Zone"] = zone,
            ["Consul:Address"] = "http://127.0.0.1:8500",
            ["Registration:Port"] = "8080",
            ["Registration:Scheme"] = scheme,
        };
        for (var i = 0; i < keys; i++)
        {
            settings[$"Registration:Metadata:key{i}"] = "v";
        }

        return settings;
    }

    [Fact]
    public void Validate_64KeysAndAZone_TheAddedZoneKeyGoesOverTheLimit()
    {
        var ex = ConsulValidationTests.Validate(WithMetadata(64, zone: "eu-west-1a"));

        Assert.Equal(
            "MeshGovernance:Registration:Metadata has 64 keys and registration adds 'zone' (from MeshGovernance:Application:Zone): Consul allows at most 64 in all",
            Assert.Single(ex.Failures));
    }

    [Fact]
    public void Validate_63KeysZoneAndHttps_BothAddedKeysNamed()
    {
        var ex = ConsulValidationTests.Validate(WithMetadata(63, zone: "eu-west-1a", scheme: "https"));

        Assert.Equal(
            "MeshGovernance:Registration:Metadata has 63 keys and registration adds 'zone' (from MeshGovernance:Application:Zone) and 'secure' (for MeshGovernance:Registration:Scheme https): Consul allows at most 64 in all",
            Assert.Single(ex.Failures));
    }

    [Fact]
    public void Validate_ZoneLongerThanAMetadataValue_NamesTheZoneKey()
    {
        var ex = ConsulValidationTests.Validate(WithMetadata(1, zone: new string('z', 513)));

        Assert.Equal(
            "MeshGovernance:Application:Zone is 513 characters long: registration puts it in Consul metadata, which allows at most 512",
            Assert.Single(ex.Failures));
    }

    [Fact]
    public void Bind_63KeysAndAZone_IsAccepted()
    {
        var options = ConsulValidationTests.Bind(WithMetadata(63, zone: "eu-west-1a"));

        Assert.Equal(63, options.Registration!.Metadata.Count);
    }
}
