namespace Governance.Tests.Discovery;

public sealed class ServiceEndpointTests
{
    [Fact]
    public void Ctor_CallerChangesMetadataAfterwards_EndpointKeepsWhatItWasGiven()
    {
        var metadata = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase) { ["version"] = "v1" };
        var endpoint = new ServiceEndpoint(new Uri("http://10.0.0.5:8080"), metadata: metadata);
        var equal = new ServiceEndpoint(new Uri("http://10.0.0.5:8080"), metadata: new Dictionary<string, string> { ["version"] = "v1" });

        metadata["version"] = "v2";
        metadata["canary"] = "true";

        Assert.Equal("v1", endpoint.Metadata["VERSION"]);
        Assert.Single(endpoint.Metadata);
        Assert.Equal(equal, endpoint);
    }

    [Fact]
    public void Ctor_ZoneWithBlanks_IsTrimmedAndBlankZoneIsUnknown()
    {
        Assert.Equal("eu-west-1a", new ServiceEndpoint(new Uri("http://10.0.0.5:8080"), zone: " eu-west-1a ").Zone);
        Assert.Null(new ServiceEndpoint(new Uri("http://10.0.0.5:8080"), zone: "  ").Zone);
    }

    [Fact]
    public void Equals_MetadataWithDifferentKeyComparers_SameAnswerBothWays()
    {
        var insensitive = new ServiceEndpoint(new Uri("http://10.0.0.5:8080"), metadata: new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase) { ["Version"] = "v1" });
        var ordinal = new ServiceEndpoint(new Uri("http://10.0.0.5:8080"), metadata: new Dictionary<string, string>(StringComparer.Ordinal) { ["version"] = "v1" });

        Assert.Equal(insensitive.Equals(ordinal), ordinal.Equals(insensitive));
        Assert.False(ordinal.Equals(insensitive));
    }

    [Fact]
    public void Ctor_AddressWithUserInformation_RejectedWithoutEchoingIt()
    {
        var ex = Assert.Throws<ArgumentException>(() => new ServiceEndpoint(new Uri("http://admin:s3cret@10.0.0.5:8080")));

        Assert.Equal("address", ex.ParamName);
        Assert.DoesNotContain("s3cret", ex.Message, StringComparison.Ordinal);
    }
}
