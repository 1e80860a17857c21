namespace FastAttn.IO;

/// <summary>How <see cref="SafeTensorsFile.Open(string, SafeTensorsOpenOptions?)"/> holds a file's bytes.</summary>
public sealed record SafeTensorsOpenOptions
{
    /// <summary>
    /// Files up to this many bytes (default 1 GiB) are read into memory when opened, so nothing that happens to the file
    /// afterwards (truncated, rewritten in place) can affect the reads. Larger files are memory-mapped; see
    /// <see cref="SafeTensorsFile"/> for what that means.
    /// </summary>
    public long MapAbove { get; init; } = 1L << 30;
}
