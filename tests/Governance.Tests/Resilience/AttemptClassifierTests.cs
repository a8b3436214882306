using System.Net;
using Governance.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Governance.Tests.Resilience;

/// <summary>Replayability of request bodies, end to end: a body that can be read only once is never sent twice.</summary>
public sealed class AttemptClassifierTests(ITestOutputHelper output)
{
    [Fact]
    public async Task IsReplayable_PutWithNonSeekableStreamBody_NotRetried()
    {
        await using var s1 = await Faults.StartStatusAsync("s1", 503, record: true);
        await using var s2 = await Faults.StartStatusAsync("s2", 503, record: true);
        await using var governed = Faults.Create(Faults.Settings(s1, s2), new ObservedTimeProvider());

        using var content = new StreamContent(new ReadOnceStream("row-1"u8.ToArray()));
        using var response = await governed.Client.PutAsync(Faults.Url, content).WaitAsync(Faults.Guard);
        output.WriteLine($"PUT with a read-once stream -> {(int)response.StatusCode}; server requests {s1.RequestCount + s2.RequestCount}");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal(1, s1.RequestCount + s2.RequestCount);
        Assert.Equal("row-1", s1.Received.Concat(s2.Received).Single().Body);
    }

    [Fact]
    public async Task IsReplayable_PutWithByteArrayBody_RetriedUpToMaxRetries()
    {
        // The control of the test above: the same PUT with an in-memory body is retried.
        await using var s1 = await Faults.StartStatusAsync("s1", 503, record: true);
        await using var s2 = await Faults.StartStatusAsync("s2", 503, record: true);
        await using var governed = Faults.Create(Faults.Settings(s1, s2).With("Retry:MaxRetries", 2), new ObservedTimeProvider());

        using var response = await governed.Client.PutAsync(Faults.Url, new ByteArrayContent("row-1"u8.ToArray())).WaitAsync(Faults.Guard);
        output.WriteLine($"PUT with a byte-array body -> {(int)response.StatusCode}; server requests {s1.RequestCount + s2.RequestCount}");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal(3, s1.RequestCount + s2.RequestCount);
        Assert.All(s1.Received.Concat(s2.Received), r => Assert.Equal("row-1", r.Body));
    }

    /// <summary>A body that can be read once, front to back, like a network or pipe stream.</summary>
    private sealed class ReadOnceStream(byte[] data) : Stream
    {
        private int _position;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position
        {
            get => throw new NotSupportedException();
            set => throw new NotSupportedException();
        }

        public override int Read(byte[] buffer, int offset, int count)
        {
            var n = Math.Min(count, data.Length - _position);
            Array.Copy(data, _position, buffer, offset, n);
            _position += n;
            return n;
        }

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
