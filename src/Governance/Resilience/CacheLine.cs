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
/// A counter written on every call, with <see cref="CacheLine.Size"/> bytes of padding on each side, for an object whose
/// other fields are read on every call (so that its writes do not invalidate their line), and a flag on the counter's own
/// line for whoever reads or writes the counter (so that reading it costs them no other line).
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 2 * CacheLine.Size)]
internal struct IsolatedCounter
{
    /// <summary>The count: 128 B of padding before it.</summary>
    [FieldOffset(CacheLine.Size)]
    public int Value;

    /// <summary>A flag read with the count, on its line; 120 B of padding after it.</summary>
    [FieldOffset(CacheLine.Size + sizeof(int))]
    public bool Flag;
}

/// <summary><see cref="CacheLine.Size"/> bytes of nothing: a field of this type keeps the next object's fields off the lines of the fields before it.</summary>
[StructLayout(LayoutKind.Explicit, Size = CacheLine.Size)]
internal struct CacheLinePadding
{
}
