using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Text;
using System.Text.Json;

namespace FastAttn.IO;

/// <summary>Element types a safetensors file may hold that FastAttn reads (all converted to float32).</summary>
public enum SafeTensorsDType
{
    /// <summary>IEEE single precision.</summary>
    F32,
    /// <summary>IEEE half precision.</summary>
    F16,
    /// <summary>bfloat16 (the upper half of a float32).</summary>
    BF16,
    /// <summary>IEEE double precision (narrowed to float32).</summary>
    F64,
}

/// <summary>One tensor's entry in the header: type, shape and byte range within the data section.</summary>
public sealed record SafeTensorInfo(string Name, SafeTensorsDType DType, long[] Shape, long Begin, long End)
{
    /// <summary>Number of elements (product of the shape; 1 for a scalar).</summary>
    public long Elements => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// A safetensors file opened read-only and memory-mapped: an 8-byte little-endian header length N, N bytes of
/// UTF-8 JSON <c>{name: {dtype, shape, data_offsets: [begin, end)}, "__metadata__": {string: string}}</c>, then
/// the data. Everything in the header is validated before any data is trusted: the header length (within the
/// file and at most 100 MB), known dtypes, non-negative shapes whose byte size matches the offsets, offsets inside
/// the data section that tile it without overlap or gaps, no duplicate names. Any violation raises
/// <see cref="InvalidDataException"/> naming the file, the tensor and the problem; no allocation is sized by a
/// field that has not been checked against the file's length.
/// </summary>
public sealed unsafe class SafeTensorsFile : IDisposable
{
    /// <summary>Largest header accepted.</summary>
    public const long MaxHeaderBytes = 100L * 1024 * 1024;

    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _base;
    private readonly long _dataStart, _dataLength;
    private readonly Dictionary<string, SafeTensorInfo> _byName;
    private bool _disposed;

    /// <summary>The file's path.</summary>
    public string Path { get; }
    /// <summary>Tensors in data order.</summary>
    public IReadOnlyList<SafeTensorInfo> Tensors { get; }
    /// <summary>The <c>__metadata__</c> entries (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    private SafeTensorsFile(string path)
    {
        Path = path;
        long fileLength = new FileInfo(path).Length;
        if (fileLength < 8) throw Bad(path, null, $"the file has {fileLength} bytes; a safetensors file starts with an 8-byte header length");
        try
        {
            _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            _view = _map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* p = null;
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            _base = p + _view.PointerOffset;
            ulong n = BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(_base, 8));
            if (n > (ulong)MaxHeaderBytes) throw Bad(path, null, $"the header length {n} exceeds the {MaxHeaderBytes}-byte limit");
            if ((long)n > fileLength - 8) throw Bad(path, null, $"the header length {n} runs past the end of the {fileLength}-byte file");
            _dataStart = 8 + (long)n;
            _dataLength = fileLength - _dataStart;
            (var tensors, var meta) = ParseHeader(path, new ReadOnlySpan<byte>(_base + 8, (int)n), _dataLength);
            Tensors = tensors;
            Metadata = meta;
            _byName = tensors.ToDictionary(t => t.Name);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Opens and validates <paramref name="path"/>.</summary>
    /// <exception cref="InvalidDataException">The file is not a valid safetensors file.</exception>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    public static SafeTensorsFile Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"safetensors file '{path}' not found.", path);
        return new SafeTensorsFile(path);
    }

    private static InvalidDataException Bad(string path, string? tensor, string problem) =>
        new(tensor == null ? $"safetensors file '{path}': {problem}." : $"safetensors file '{path}', tensor '{tensor}': {problem}.");

    private static int DTypeSize(SafeTensorsDType t) => t switch { SafeTensorsDType.F32 => 4, SafeTensorsDType.F64 => 8, _ => 2 };

    private static (List<SafeTensorInfo>, Dictionary<string, string>) ParseHeader(string path, ReadOnlySpan<byte> header, long dataLength)
    {
        if (!System.Text.Unicode.Utf8.IsValid(header)) throw Bad(path, null, "the header is not valid UTF-8");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(header.ToArray(), new JsonDocumentOptions { MaxDepth = 8 }); }
        catch (JsonException e) { throw Bad(path, null, $"the header is not valid JSON ({e.Message})"); }
        catch (ArgumentException e) { throw Bad(path, null, $"the header is not valid UTF-8 JSON ({e.Message})"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw Bad(path, null, $"the header is a JSON {root.ValueKind}, not an object");
            var list = new List<SafeTensorInfo>();
            var meta = new Dictionary<string, string>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var prop in root.EnumerateObject())
            {
                string name = prop.Name;
                if (!seen.Add(name)) throw Bad(path, name, "the name appears twice in the header");
                if (name == "__metadata__")
                {
                    if (prop.Value.ValueKind != JsonValueKind.Object) throw Bad(path, null, "__metadata__ is not an object");
                    foreach (var m in prop.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String) throw Bad(path, null, $"__metadata__ entry '{m.Name}' is not a string");
                        if (!meta.TryAdd(m.Name, m.Value.GetString()!)) throw Bad(path, null, $"__metadata__ entry '{m.Name}' appears twice");
                    }
                    continue;
                }
                var e = prop.Value;
                if (e.ValueKind != JsonValueKind.Object) throw Bad(path, name, "the entry is not an object");
                if (!e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String) throw Bad(path, name, "missing string 'dtype'");
                SafeTensorsDType type = dt.GetString() switch
                {
                    "F32" => SafeTensorsDType.F32, "F16" => SafeTensorsDType.F16, "BF16" => SafeTensorsDType.BF16, "F64" => SafeTensorsDType.F64,
                    var other => throw Bad(path, name, $"dtype '{other}' is not supported (F32, F16, BF16, F64)"),
                };
                if (!e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array) throw Bad(path, name, "missing array 'shape'");
                if (sh.GetArrayLength() > 16) throw Bad(path, name, $"the shape has {sh.GetArrayLength()} dimensions (at most 16 accepted)");
                var shape = new long[sh.GetArrayLength()];
                long elements = 1;
                int i = 0;
                foreach (var d in sh.EnumerateArray())
                {
                    if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long v) || v < 0) throw Bad(path, name, $"shape entry {d} is not a non-negative integer");
                    shape[i++] = v;
                    // the data section bounds every honest element count, so anything beyond it is an error already
                    if (v != 0 && elements > dataLength / v) elements = long.MaxValue; else elements *= v;
                }
                if (!e.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
                    throw Bad(path, name, "missing 'data_offsets' [begin, end]");
                if (off[0].ValueKind != JsonValueKind.Number || off[1].ValueKind != JsonValueKind.Number
                    || !off[0].TryGetInt64(out long begin) || !off[1].TryGetInt64(out long end)) throw Bad(path, name, "data_offsets are not integers");
                if (begin < 0 || end < begin || end > dataLength)
                    throw Bad(path, name, $"data_offsets [{begin}, {end}) lie outside the {dataLength}-byte data section");
                long size = DTypeSize(type);
                if (elements == long.MaxValue || elements * size != end - begin)
                    throw Bad(path, name, $"shape [{string.Join(", ", shape)}] of {type} needs {(elements == long.MaxValue ? "more than the file" : (elements * size).ToString())} bytes; data_offsets give {end - begin}");
                list.Add(new SafeTensorInfo(name, type, shape, begin, end));
            }
            list.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
            long pos = 0;
            foreach (var t in list)
            {
                if (t.Begin < pos) throw Bad(path, t.Name, $"its bytes [{t.Begin}, {t.End}) overlap the previous tensor's, which end at {pos}");
                if (t.Begin > pos) throw Bad(path, t.Name, $"bytes [{pos}, {t.Begin}) before it belong to no tensor");
                pos = t.End;
            }
            if (pos != dataLength) throw Bad(path, null, $"the tensors cover {pos} bytes of the {dataLength}-byte data section");
            return (list, meta);
        }
    }

    /// <summary>True when the file holds a tensor of that name.</summary>
    public bool Contains(string name) => _byName.ContainsKey(name);

    /// <summary>The entry of tensor <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    public SafeTensorInfo Info(string name) =>
        _byName.TryGetValue(name, out var t) ? t : throw new KeyNotFoundException($"safetensors file '{Path}' has no tensor '{name}'.");

    /// <summary>Reads tensor <paramref name="name"/> converted to float32.</summary>
    public float[] ReadFloat32(string name)
    {
        var t = Info(name);
        var r = new float[t.Elements];
        ReadFloat32(name, r);
        return r;
    }

    /// <summary>Reads tensor <paramref name="name"/> converted to float32 into <paramref name="destination"/>.</summary>
    /// <exception cref="ArgumentException">destination does not have the tensor's element count.</exception>
    public void ReadFloat32(string name, Span<float> destination)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var t = Info(name);
        if (destination.Length != t.Elements)
            ThrowHelper.Argument(nameof(destination), $"'destination' has {destination.Length} elements; tensor '{name}' has {t.Elements}.");
        byte* src = _base + _dataStart + t.Begin;
        long n = t.Elements;
        switch (t.DType)
        {
            case SafeTensorsDType.F32 when BitConverter.IsLittleEndian:
                new ReadOnlySpan<float>(src, (int)n).CopyTo(destination);
                break;
            case SafeTensorsDType.F32:
                for (long i = 0; i < n; i++) destination[(int)i] = BinaryPrimitives.ReadSingleLittleEndian(new ReadOnlySpan<byte>(src + 4 * i, 4));
                break;
            case SafeTensorsDType.F16:
                for (long i = 0; i < n; i++) destination[(int)i] = (float)BinaryPrimitives.ReadHalfLittleEndian(new ReadOnlySpan<byte>(src + 2 * i, 2));
                break;
            case SafeTensorsDType.BF16:
                for (long i = 0; i < n; i++)
                    destination[(int)i] = BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(new ReadOnlySpan<byte>(src + 2 * i, 2)) << 16);
                break;
            default:
                for (long i = 0; i < n; i++) destination[(int)i] = (float)BinaryPrimitives.ReadDoubleLittleEndian(new ReadOnlySpan<byte>(src + 8 * i, 8));
                break;
        }
    }

    /// <summary>Unmaps the file.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_view != null)
        {
            if (_base != null) _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }
        _map?.Dispose();
    }
}

/// <summary>Writes safetensors files (the format <see cref="SafeTensorsFile"/> reads).</summary>
public static class SafeTensorsWriter
{
    /// <summary>One tensor to write: float32 data, its shape, and the dtype to store it as.</summary>
    public readonly record struct Entry(string Name, float[] Data, long[] Shape, SafeTensorsDType DType = SafeTensorsDType.F32);

    /// <summary>Writes the tensors (in the order given) and optional metadata to <paramref name="path"/>.</summary>
    /// <exception cref="ArgumentException">A name repeats, or a shape does not match its data.</exception>
    public static void Write(string path, IEnumerable<Entry> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        var names = new HashSet<string>(StringComparer.Ordinal) { "__metadata__" };
        foreach (var t in list)
        {
            if (!names.Add(t.Name)) ThrowHelper.Argument(nameof(tensors), $"tensor name '{t.Name}' is repeated or reserved.");
            long n = t.Shape.Aggregate(1L, (a, b) => a * b);
            if (n != t.Data.Length) ThrowHelper.Argument(nameof(tensors), $"tensor '{t.Name}': shape [{string.Join(", ", t.Shape)}] has {n} elements; the data has {t.Data.Length}.");
        }
        var headerStream = new MemoryStream();
        long offset = 0;
        using (var w = new Utf8JsonWriter(headerStream))
        {
            w.WriteStartObject();
            if (metadata != null && metadata.Count > 0)
            {
                w.WriteStartObject("__metadata__");
                foreach (var kv in metadata) w.WriteString(kv.Key, kv.Value);
                w.WriteEndObject();
            }
            foreach (var t in list)
            {
                long bytes = t.Data.LongLength * (t.DType switch { SafeTensorsDType.F32 => 4, SafeTensorsDType.F64 => 8, _ => 2 });
                w.WriteStartObject(t.Name);
                w.WriteString("dtype", t.DType.ToString());
                w.WriteStartArray("shape");
                foreach (long d in t.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + bytes);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += bytes;
            }
            w.WriteEndObject();
        }
        // pad the header with spaces to a multiple of 8 bytes so the data starts aligned
        var header = headerStream.ToArray().ToList();
        while ((header.Count + 8) % 8 != 0) header.Add((byte)' ');
        using var fs = new FileStream(path, FileMode.Create, FileAccess.Write);
        Span<byte> len = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Count);
        fs.Write(len);
        fs.Write(header.ToArray());
        var buf = new byte[8];
        foreach (var t in list)
        {
            if (t.DType == SafeTensorsDType.F32 && BitConverter.IsLittleEndian)
            {
                fs.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(t.Data.AsSpan()));
                continue;
            }
            foreach (float v in t.Data)
            {
                switch (t.DType)
                {
                    case SafeTensorsDType.F32: BinaryPrimitives.WriteSingleLittleEndian(buf, v); fs.Write(buf, 0, 4); break;
                    case SafeTensorsDType.F16: BinaryPrimitives.WriteHalfLittleEndian(buf, (Half)v); fs.Write(buf, 0, 2); break;
                    case SafeTensorsDType.BF16:
                        // round to nearest even on the dropped half
                        uint bits = BitConverter.SingleToUInt32Bits(v);
                        uint rounded = float.IsNaN(v) ? bits | 0x400000 : bits + 0x7FFF + ((bits >> 16) & 1);
                        BinaryPrimitives.WriteUInt16LittleEndian(buf, (ushort)(rounded >> 16)); fs.Write(buf, 0, 2); break;
                    default: BinaryPrimitives.WriteDoubleLittleEndian(buf, v); fs.Write(buf, 0, 8); break;
                }
            }
        }
    }
}
