using System.Runtime.InteropServices;

namespace Governance.Resilience;

/// <summary>Cache-line sizes for padding shared counters.</summary>
internal static class CacheLine
{
    /// <summary>
    /// 128 B on every architecture. The runtime's own <c>PaddingHelpers.CACHE_LINE_SIZE</c> is 128 on Arm64 but 64 on
    /// x64; 128 is used here on x64 too because Intel cores prefetch the other 64 B line of each 128 B-aligned pair
    /// (crossbeam's <c>CachePadded</c> pads to 128 on x86-64 for the same reason).
    /// </summary>
    public const int Size = 128;
}

/// <summary>A long that fills a whole <see cref="CacheLine.Size"/>: consecutive array elements never share a line pair.</summary>
[StructLayout(LayoutKind.Explicit, Size = CacheLine.Size)]
internal struct PaddedInt64
{
    /// <summary>The value, at the start of its 128 B.</summary>
    [FieldOffset(0)]
    public long Value;
}

/// <summary>
/// An int with <see cref="CacheLine.Size"/> bytes of padding on each side, for a counter written on every call that sits
/// in an object whose other fields are read on every call (so that its writes do not invalidate their line).
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 2 * CacheLine.Size)]
internal struct IsolatedInt32
{
    /// <summary>The value: 128 B of padding before it, 124 B after it.</summary>
    [FieldOffset(CacheLine.Size)]
    public int Value;
}
