using System.Buffers.Binary;
using System.Text;
using System.Text.RegularExpressions;

namespace FastAttn.IO;

/// <summary>
/// NumPy <c>.npy</c> files of little-endian float32 in C order (format versions 1.0 and 2.0). Anything else —
/// another dtype or byte order, Fortran order, a malformed header, a size that does not match the shape —
/// raises <see cref="InvalidDataException"/> naming the file and the problem.
/// </summary>
public static partial class Npy
{
    private static ReadOnlySpan<byte> Magic => [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    /// <summary>Reads an array: its shape and its data (row-major).</summary>
    /// <exception cref="InvalidDataException">Not a little-endian float32 C-order .npy file, or its size does not match its shape.</exception>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="IOException">The path is a directory or cannot be read.</exception>
    public static (long[] Shape, float[] Data) Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Directory.Exists(path)) throw new IOException($"'{path}' is a directory, not a .npy file.");
        // a file that does not start like a .npy file is not read on (a device of zeros would be read to the limit)
        return Read(BoundedFile.ReadAllBytes(path, Array.MaxLength, "a .npy file", prefix => prefix.AsSpan().StartsWith(Magic)), path);
    }

    /// <summary>Reads an array held in memory; <paramref name="name"/> names it in messages.</summary>
    /// <exception cref="InvalidDataException">Not a little-endian float32 C-order .npy file, or its size does not match its shape.</exception>
    public static (long[] Shape, float[] Data) Read(ReadOnlySpan<byte> bytes, string name = "<memory>")
    {
        string path = name;
        InvalidDataException Bad(string problem) => new($"npy file '{path}': {problem}.");
        // the magic string is 0x93 'N' 'U' 'M' 'P' 'Y'
        if (bytes.Length < 10 || !bytes.StartsWith(Magic)) throw Bad("not a .npy file (bad magic)");
        int major = bytes[6];
        long headerLen;
        int start;
        if (major == 1) { headerLen = BinaryPrimitives.ReadUInt16LittleEndian(bytes[8..]); start = 10; }
        else if (major is 2 or 3)
        {
            if (bytes.Length < 12) throw Bad("truncated header");
            headerLen = BinaryPrimitives.ReadUInt32LittleEndian(bytes[8..]); start = 12;
            if (major == 3) throw Bad("format version 3.0 (UTF-8 headers) is not supported; use 1.0 or 2.0");
        }
        else throw Bad($"format version {major}.{bytes[7]} is not supported (1.0 and 2.0 are)");
        if (start + headerLen > bytes.Length) throw Bad($"the header length {headerLen} runs past the end of the file");
        string header = Encoding.Latin1.GetString(bytes.Slice(start, (int)headerLen));
        var descr = DescrRe().Match(header);
        if (!descr.Success) throw Bad("the header has no 'descr'");
        if (descr.Groups[1].Value != "<f4") throw Bad($"dtype '{Clip(descr.Groups[1].Value)}' is not supported; FastAttn reads little-endian float32 ('<f4')");
        var fortran = FortranRe().Match(header);
        if (!fortran.Success) throw Bad("the header has no 'fortran_order'");
        if (fortran.Groups[1].Value != "False") throw Bad("Fortran-order arrays are not supported; save in C order");
        var shapeM = ShapeRe().Match(header);
        if (!shapeM.Success) throw Bad("the header has no 'shape'");
        var dims = shapeM.Groups[1].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (dims.Length > 32) throw Bad($"the shape has {dims.Length} dimensions (at most 32)");
        var shape = new long[dims.Length];
        long dataBytes = bytes.Length - start - headerLen;
        // every honest element count is bounded by the data, so a product past it is an error, never an overflow
        long n = 1, limit = dataBytes / 4;
        bool tooMany = false;
        for (int i = 0; i < dims.Length; i++)
        {
            if (!long.TryParse(dims[i], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out shape[i]))
                throw Bad($"shape entry '{Clip(dims[i])}' is not a non-negative integer");
            if (shape[i] == 0) { n = 0; continue; }
            if (!tooMany && n > limit / shape[i] + 1) tooMany = true; else if (!tooMany) n *= shape[i];
        }
        // n·shape ≤ (limit + 1)·shape cannot overflow; a product above the data is reported, not wrapped
        if (!tooMany && n > limit) tooMany = n > long.MaxValue / 4;
        if (tooMany || n * 4 != dataBytes)
            throw Bad($"shape ({string.Join(", ", shape)}) needs {(tooMany ? "more than the file's" : (n * 4).ToString())} bytes of data; the file has {dataBytes}");
        var data = new float[n];
        var src = bytes[(int)(start + headerLen)..];
        if (BitConverter.IsLittleEndian) System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(src).CopyTo(data);
        else for (long i = 0; i < n; i++) data[i] = BinaryPrimitives.ReadSingleLittleEndian(src.Slice((int)(4 * i), 4));
        return (shape, data);
    }

    /// <summary>
    /// Writes a little-endian float32 C-order array (format 1.0, or 2.0 if the header needs it), through a temporary file
    /// renamed into place, so a failure (a full disk) leaves no partial file.
    /// </summary>
    /// <exception cref="ArgumentException">A dimension is negative, or the shape does not match the data.</exception>
    /// <exception cref="IOException">The file cannot be written.</exception>
    public static void Write(string path, ReadOnlySpan<float> data, params long[] shape)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(shape);
        long n = 1;
        foreach (long d in shape)
        {
            if (d < 0) ThrowHelper.Argument(nameof(shape), $"shape ({string.Join(", ", shape)}) has a negative dimension.");
            n = d != 0 && n > long.MaxValue / d ? -1 : n * d;
            if (n < 0) break;
        }
        if (n != data.Length) ThrowHelper.Argument(nameof(shape), $"shape ({string.Join(", ", shape)}) has {(n < 0 ? "too many" : n.ToString())} elements; the data has {data.Length}.");
        string dims = shape.Length == 1 ? $"{shape[0]}," : string.Join(", ", shape);
        string dict = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}";
        bool v2 = dict.Length + 11 > ushort.MaxValue;
        int pre = v2 ? 12 : 10;
        int total = (pre + dict.Length + 1 + 63) / 64 * 64;
        string header = dict.PadRight(total - pre - 1) + "\n";
        // the data is copied once into a buffer the writer's callback can own (spans cannot be captured)
        var payload = new byte[4L * data.Length];
        if (BitConverter.IsLittleEndian) System.Runtime.InteropServices.MemoryMarshal.AsBytes(data).CopyTo(payload);
        else for (int i = 0; i < data.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(payload.AsSpan(4 * i), data[i]);
        AtomicFile.Write(path, fs =>
        {
            fs.Write(Magic);
            fs.WriteByte(v2 ? (byte)2 : (byte)1);
            fs.WriteByte(0);
            Span<byte> len = stackalloc byte[4];
            if (v2) { BinaryPrimitives.WriteUInt32LittleEndian(len, (uint)header.Length); fs.Write(len); }
            else { BinaryPrimitives.WriteUInt16LittleEndian(len, (ushort)header.Length); fs.Write(len[..2]); }
            fs.Write(Encoding.Latin1.GetBytes(header));
            fs.Write(payload);
        });
    }

    private static string Clip(string s) => s.Length <= 40 ? s : s[..40] + "…";

    [GeneratedRegex(@"'descr'\s*:\s*'([^']*)'")] private static partial Regex DescrRe();
    [GeneratedRegex(@"'fortran_order'\s*:\s*(True|False)")] private static partial Regex FortranRe();
    [GeneratedRegex(@"'shape'\s*:\s*\(([^)]*)\)")] private static partial Regex ShapeRe();
}
