namespace FastAttn.Composition;

/// <summary>
/// A buffer of floats that starts on a 64-byte line and stays there: an array on the pinned object heap (never moved), used
/// from its first line. The layers cut a session's buffers into regions of tokens × width floats, so with the usual widths
/// (multiples of 16) every region starts on a line too, and the products' rows are whole lines.
/// </summary>
internal readonly struct LineAligned
{
    private readonly float[] _array;
    private readonly int _offset;

    public LineAligned(long floats)
    {
        Length = checked((int)floats);
        if (floats + 15 > Array.MaxLength) { _array = new float[floats]; return; } // no room for the slack: as allocated
        _array = GC.AllocateArray<float>((int)floats + 15, pinned: true);
        unsafe
        {
            fixed (float* p = _array) _offset = (int)((64 - (nint)p % 64) % 64 / sizeof(float));
        }
    }

    /// <summary>Floats in the buffer (the alignment's slack not counted).</summary>
    public int Length { get; }

    public Span<float> Span => _array.AsSpan(_offset, Length);
}
