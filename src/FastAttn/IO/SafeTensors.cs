using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace FastAttn.IO;

/// <summary>Element types a safetensors file may hold. Every one can be read as float32 (integers and booleans converted).</summary>
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
    /// <summary>Signed 8-bit integer.</summary>
    I8,
    /// <summary>Signed 16-bit integer.</summary>
    I16,
    /// <summary>Signed 32-bit integer.</summary>
    I32,
    /// <summary>Signed 64-bit integer (e.g. <c>embeddings.position_ids</c> of BERT checkpoints).</summary>
    I64,
    /// <summary>Unsigned 8-bit integer.</summary>
    U8,
    /// <summary>Unsigned 16-bit integer.</summary>
    U16,
    /// <summary>Unsigned 32-bit integer.</summary>
    U32,
    /// <summary>Unsigned 64-bit integer.</summary>
    U64,
    /// <summary>Boolean, one byte (0 false, anything else true; read as 0 or 1).</summary>
    BOOL,
    /// <summary>8-bit float with 4 exponent and 3 mantissa bits (OCP "E4M3FN": no infinities, NaN = S.1111.111).</summary>
    F8_E4M3,
    /// <summary>8-bit float with 5 exponent and 2 mantissa bits (the upper byte of a float16).</summary>
    F8_E5M2,
}

/// <summary>One tensor's entry in the header: type, shape and byte range within the data section.</summary>
public sealed record SafeTensorInfo(string Name, SafeTensorsDType DType, long[] Shape, long Begin, long End)
{
    /// <summary>Number of elements (product of the shape; 1 for a scalar).</summary>
    public long Elements => Shape.Aggregate(1L, (a, b) => a * b);
}

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

/// <summary>
/// A safetensors file, validated when opened: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
/// <c>{name: {dtype, shape, data_offsets: [begin, end)}, "__metadata__": {string: string}}</c>, then the data. Everything in
/// the header is checked before any data is trusted: the header length (within the file and at most 100 MB), valid
/// Unicode, known dtypes, non-negative shapes whose byte size matches the offsets, offsets inside the data section that
/// tile it without overlap or gaps, no duplicate names or fields. Any violation raises <see cref="InvalidDataException"/>
/// naming the file, the tensor and the problem; no allocation is sized by a field that has not been checked against the
/// file's length, and the header is parsed as a stream (no document tree), so the work is linear in its size.
/// <para>
/// <b>Where the bytes live.</b> Files up to <see cref="SafeTensorsOpenOptions.MapAbove"/> bytes (1 GiB by default), streams
/// and byte arrays are copied into memory once, so a file truncated or rewritten after it was opened changes nothing. Larger
/// files are memory-mapped read-only and held open with <see cref="FileShare.Read"/> (other .NET writers are refused);
/// a program that truncates a mapped file anyway (<c>truncate</c>, another language) makes the next read of the lost pages
/// fault the process, as with any mapped file — do not modify model files in place while a service reads them.
/// </para>
/// <para>
/// <b>Threads.</b> Reads may run on any number of threads at once. <see cref="Dispose"/> may race with them: reads in
/// flight finish with the bytes kept alive, later ones throw <see cref="ObjectDisposedException"/>.
/// </para>
/// </summary>
public sealed unsafe class SafeTensorsFile : IDisposable
{
    /// <summary>Largest header accepted (the limit of the reference implementation).</summary>
    public const long MaxHeaderBytes = 100L * 1000 * 1000;

    private readonly byte* _base;
    private readonly long _dataStart, _dataLength;
    private readonly Dictionary<string, SafeTensorInfo> _byName;
    private readonly Action _release;
    private int _refs = 1;      // 1 for the owner, +1 per read in flight; the bytes are released when it reaches 0
    private int _disposed;

    /// <summary>The file's path (or the name given to a stream or byte array).</summary>
    public string Path { get; }
    /// <summary>Tensors in data order.</summary>
    public IReadOnlyList<SafeTensorInfo> Tensors { get; }
    /// <summary>The <c>__metadata__</c> entries (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }
    /// <summary>True when the file is memory-mapped rather than held in memory.</summary>
    public bool IsMapped { get; }

    private SafeTensorsFile(string path, byte* bytes, long length, Action release, bool mapped)
    {
        Path = path;
        _base = bytes;
        _release = release;
        IsMapped = mapped;
        try
        {
            if (length < 8) throw Bad(path, null, $"the file has {length} bytes; a safetensors file starts with an 8-byte header length");
            ulong n = BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(bytes, 8));
            if (n > (ulong)MaxHeaderBytes) throw Bad(path, null, $"the header length {n} exceeds the {MaxHeaderBytes}-byte limit");
            if ((long)n > length - 8) throw Bad(path, null, $"the header length {n} runs past the end of the {length}-byte file");
            _dataStart = 8 + (long)n;
            _dataLength = length - _dataStart;
            (var tensors, var meta, _byName) = SafeTensorsHeader.Parse(path, new ReadOnlySpan<byte>(bytes + 8, (int)n), _dataLength);
            Tensors = tensors;
            Metadata = meta;
        }
        catch
        {
            release();
            throw;
        }
    }

    /// <summary>Opens and validates the file at <paramref name="path"/>.</summary>
    /// <exception cref="InvalidDataException">The file is not a valid safetensors file, or it changed while being read.</exception>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="IOException">The file cannot be read (a directory, no permission, a device error).</exception>
    /// <exception cref="UnauthorizedAccessException">No permission to read the file.</exception>
    public static SafeTensorsFile Open(string path, SafeTensorsOpenOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        options ??= new SafeTensorsOpenOptions();
        if (Directory.Exists(path)) throw new IOException($"'{path}' is a directory, not a safetensors file.");
        if (!File.Exists(path)) throw new FileNotFoundException($"safetensors file '{path}' not found.", path);
        var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.RandomAccess);
        try
        {
            long length = fs.Length;
            if (length <= options.MapAbove)
            {
                byte* p = ReadAll(fs, length, path);
                fs.Dispose();
                return new SafeTensorsFile(path, p, length, () => NativeMemory.Free(p), mapped: false);
            }
            var map = MemoryMappedFile.CreateFromFile(fs, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: true);
            var view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            byte* b = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref b);
            return new SafeTensorsFile(path, b + view.PointerOffset, length, () =>
            {
                view.SafeMemoryMappedViewHandle.ReleasePointer();
                view.Dispose();
                map.Dispose();
                fs.Dispose();
            }, mapped: true);
        }
        catch
        {
            fs.Dispose();
            throw;
        }
    }

    /// <summary>Reads a safetensors file from <paramref name="stream"/> (to its end) into memory and validates it.</summary>
    /// <param name="stream">The bytes; read from its current position to the end, not disposed.</param>
    /// <param name="name">How messages name the source.</param>
    /// <exception cref="InvalidDataException">The bytes are not a valid safetensors file.</exception>
    public static SafeTensorsFile Load(Stream stream, string name = "<stream>")
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(name);
        if (stream.CanSeek)
        {
            long length = stream.Length - stream.Position;
            byte* p = ReadAll(stream, length, name);
            return new SafeTensorsFile(name, p, length, () => NativeMemory.Free(p), mapped: false);
        }
        var ms = new MemoryStream();
        stream.CopyTo(ms);
        return Load(new ReadOnlySpan<byte>(ms.GetBuffer(), 0, (int)ms.Length), name);
    }

    /// <summary>Copies a safetensors file held in memory and validates it; later changes to <paramref name="bytes"/> change nothing.</summary>
    /// <exception cref="InvalidDataException">The bytes are not a valid safetensors file.</exception>
    public static SafeTensorsFile Load(ReadOnlySpan<byte> bytes, string name = "<memory>")
    {
        ArgumentNullException.ThrowIfNull(name);
        byte* p = (byte*)NativeMemory.Alloc((nuint)Math.Max(bytes.Length, 1));
        bytes.CopyTo(new Span<byte>(p, bytes.Length));
        return new SafeTensorsFile(name, p, bytes.Length, () => NativeMemory.Free(p), mapped: false);
    }

    private static byte* ReadAll(Stream s, long length, string path)
    {
        byte* p = (byte*)NativeMemory.Alloc((nuint)Math.Max(length, 1));
        try
        {
            long done = 0;
            while (done < length)
            {
                int want = (int)Math.Min(length - done, 1 << 30);
                int got = s.Read(new Span<byte>(p + done, want));
                if (got == 0) throw Bad(path, null, $"the file ended after {done} of its {length} bytes while being read (it changed)");
                done += got;
            }
            return p;
        }
        catch
        {
            NativeMemory.Free(p);
            throw;
        }
    }

    internal static InvalidDataException Bad(string path, string? tensor, string problem) =>
        new(tensor == null ? $"safetensors file '{path}': {problem}." : $"safetensors file '{path}', tensor '{tensor}': {problem}.");

    /// <summary>Bytes per element of a dtype.</summary>
    public static int ElementSize(SafeTensorsDType t) => t switch
    {
        SafeTensorsDType.F64 or SafeTensorsDType.I64 or SafeTensorsDType.U64 => 8,
        SafeTensorsDType.F32 or SafeTensorsDType.I32 or SafeTensorsDType.U32 => 4,
        SafeTensorsDType.F16 or SafeTensorsDType.BF16 or SafeTensorsDType.I16 or SafeTensorsDType.U16 => 2,
        _ => 1,
    };

    /// <summary>True when the file holds a tensor of that name.</summary>
    public bool Contains(string name) => _byName.ContainsKey(name);

    /// <summary>The entry of tensor <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    public SafeTensorInfo Info(string name) =>
        _byName.TryGetValue(name, out var t) ? t : throw new KeyNotFoundException($"safetensors file '{Path}' has no tensor '{name}'.");

    /// <summary>Reads tensor <paramref name="name"/> converted to float32.</summary>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    /// <exception cref="InvalidDataException">The tensor has more elements than one array can hold.</exception>
    /// <exception cref="ObjectDisposedException">The file was disposed.</exception>
    public float[] ReadFloat32(string name)
    {
        var t = Info(name);
        if (t.Elements > Array.MaxLength)
            throw Bad(Path, name, $"{t.Elements} elements are more than one array can hold ({Array.MaxLength})");
        var r = new float[t.Elements];
        ReadFloat32(name, r);
        return r;
    }

    /// <summary>Reads tensor <paramref name="name"/> converted to float32 into <paramref name="destination"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    /// <exception cref="ArgumentException">destination does not have the tensor's element count.</exception>
    /// <exception cref="ObjectDisposedException">The file was disposed.</exception>
    public void ReadFloat32(string name, Span<float> destination)
    {
        var t = Info(name);
        if (destination.Length != t.Elements)
            ThrowHelper.Argument(nameof(destination), $"'destination' has {destination.Length} elements; tensor '{name}' has {t.Elements}.");
        Acquire();
        try
        {
            Convert(_base + _dataStart + t.Begin, t.DType, destination);
        }
        finally
        {
            Release();
        }
    }

    private static void Convert(byte* src, SafeTensorsDType type, Span<float> dst)
    {
        int n = dst.Length;
        if (!BitConverter.IsLittleEndian && type != SafeTensorsDType.F32)
        {
            for (int i = 0; i < n; i++) dst[i] = ConvertOne(src, type, i);
            return;
        }
        switch (type)
        {
            case SafeTensorsDType.F32:
                if (BitConverter.IsLittleEndian) new ReadOnlySpan<float>(src, n).CopyTo(dst);
                else for (int i = 0; i < n; i++) dst[i] = BinaryPrimitives.ReadSingleLittleEndian(new ReadOnlySpan<byte>(src + 4L * i, 4));
                break;
            case SafeTensorsDType.F16:
                TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(src, n), dst);
                break;
            case SafeTensorsDType.BF16:
            {
                ushort* s = (ushort*)src;
                for (int i = 0; i < n; i++) dst[i] = BitConverter.Int32BitsToSingle(s[i] << 16);
                break;
            }
            case SafeTensorsDType.F64:
            {
                double* s = (double*)src;
                for (int i = 0; i < n; i++) dst[i] = (float)s[i];
                break;
            }
            default:
                for (int i = 0; i < n; i++) dst[i] = ConvertOne(src, type, i);
                break;
        }
    }

    private static float ConvertOne(byte* src, SafeTensorsDType type, long i) => type switch
    {
        SafeTensorsDType.F32 => BinaryPrimitives.ReadSingleLittleEndian(new ReadOnlySpan<byte>(src + 4 * i, 4)),
        SafeTensorsDType.F16 => (float)BinaryPrimitives.ReadHalfLittleEndian(new ReadOnlySpan<byte>(src + 2 * i, 2)),
        SafeTensorsDType.BF16 => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(new ReadOnlySpan<byte>(src + 2 * i, 2)) << 16),
        SafeTensorsDType.F64 => (float)BinaryPrimitives.ReadDoubleLittleEndian(new ReadOnlySpan<byte>(src + 8 * i, 8)),
        SafeTensorsDType.I8 => (sbyte)src[i],
        SafeTensorsDType.U8 => src[i],
        SafeTensorsDType.BOOL => src[i] != 0 ? 1f : 0f,
        SafeTensorsDType.I16 => BinaryPrimitives.ReadInt16LittleEndian(new ReadOnlySpan<byte>(src + 2 * i, 2)),
        SafeTensorsDType.U16 => BinaryPrimitives.ReadUInt16LittleEndian(new ReadOnlySpan<byte>(src + 2 * i, 2)),
        SafeTensorsDType.I32 => BinaryPrimitives.ReadInt32LittleEndian(new ReadOnlySpan<byte>(src + 4 * i, 4)),
        SafeTensorsDType.U32 => BinaryPrimitives.ReadUInt32LittleEndian(new ReadOnlySpan<byte>(src + 4 * i, 4)),
        SafeTensorsDType.I64 => BinaryPrimitives.ReadInt64LittleEndian(new ReadOnlySpan<byte>(src + 8 * i, 8)),
        SafeTensorsDType.U64 => BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(src + 8 * i, 8)),
        SafeTensorsDType.F8_E5M2 => (float)BitConverter.UInt16BitsToHalf((ushort)(src[i] << 8)),
        SafeTensorsDType.F8_E4M3 => E4M3(src[i]),
        _ => throw new InvalidOperationException($"unknown dtype {type}"),
    };

    /// <summary>OCP FP8 E4M3FN: bias 7, subnormals, no infinities, S.1111.111 is NaN.</summary>
    internal static float E4M3(byte b)
    {
        int sign = b >> 7, exp = (b >> 3) & 15, man = b & 7;
        float v;
        if (exp == 15 && man == 7) v = float.NaN;
        else if (exp == 0) v = man / 8f * (1f / 64);                     // subnormal: man/8 · 2^(1−7)
        else v = (1f + man / 8f) * MathF.Pow(2, exp - 7);
        return sign == 1 ? -v : v;
    }

    /// <summary>Takes a reference for a read; throws if the file is disposed.</summary>
    private void Acquire()
    {
        while (true)
        {
            int r = Volatile.Read(ref _refs);
            if (r == 0) ThrowHelper.Disposed(nameof(SafeTensorsFile));
            if (Interlocked.CompareExchange(ref _refs, r + 1, r) == r) return;
        }
    }

    private void Release()
    {
        if (Interlocked.Decrement(ref _refs) == 0) _release();
    }

    /// <summary>
    /// Releases the bytes (memory or mapping). Safe while reads run on other threads: they finish first, later reads throw
    /// <see cref="ObjectDisposedException"/>.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0) Release();
    }
}

/// <summary>The header parser: a forward-only pass over the JSON with <see cref="Utf8JsonReader"/>.</summary>
internal static class SafeTensorsHeader
{
    private static InvalidDataException Bad(string path, string? tensor, string problem) => SafeTensorsFile.Bad(path, tensor, problem);

    /// <summary>
    /// The tensors in data order, the metadata and the tensors by name. Work and memory are linear in the header's size:
    /// one pass, no document tree, containers sized once from the header length (an entry takes at least 48 bytes of JSON).
    /// </summary>
    public static (List<SafeTensorInfo>, Dictionary<string, string>, Dictionary<string, SafeTensorInfo>) Parse(string path, ReadOnlySpan<byte> header, long dataLength)
    {
        if (!System.Text.Unicode.Utf8.IsValid(header)) throw Bad(path, null, "the header is not valid UTF-8");
        int estimate = header.Length / 48 + 1;
        var list = new List<SafeTensorInfo>(estimate);
        var meta = new Dictionary<string, string>(StringComparer.Ordinal);
        var byName = new Dictionary<string, SafeTensorInfo>(estimate, StringComparer.Ordinal);
        bool sawMetadata = false;
        var r = new Utf8JsonReader(header, new JsonReaderOptions { MaxDepth = 8 });
        string? current = null;
        try
        {
            if (!r.Read()) throw Bad(path, null, "the header is empty");
            if (r.TokenType != JsonTokenType.StartObject) throw Bad(path, null, $"the header is a JSON {Kind(r.TokenType)}, not an object");
            while (true)
            {
                Next(ref r, path);
                if (r.TokenType == JsonTokenType.EndObject) break;
                string name = Text(ref r, path, null, "a name");
                current = name;
                if (name == "__metadata__" ? sawMetadata : byName.ContainsKey(name)) throw Bad(path, name, "the name appears twice in the header");
                Next(ref r, path);
                if (name == "__metadata__")
                {
                    sawMetadata = true;
                    if (r.TokenType != JsonTokenType.StartObject) throw Bad(path, null, "__metadata__ is not an object");
                    while (true)
                    {
                        Next(ref r, path);
                        if (r.TokenType == JsonTokenType.EndObject) break;
                        string key = Text(ref r, path, null, "a __metadata__ key");
                        Next(ref r, path);
                        if (r.TokenType != JsonTokenType.String) throw Bad(path, null, $"__metadata__ entry '{key}' is not a string");
                        string value = Text(ref r, path, null, $"__metadata__ entry '{key}'");
                        if (!meta.TryAdd(key, value)) throw Bad(path, null, $"__metadata__ entry '{key}' appears twice");
                    }
                    current = null;
                    continue;
                }
                var info = Entry(ref r, path, name, dataLength);
                list.Add(info);
                byName.Add(name, info);
                current = null;
            }
            if (r.Read()) throw Bad(path, null, "the header has content after its JSON object");
        }
        catch (JsonException e) { throw Bad(path, current, $"the header is not valid JSON ({e.Message})"); }
        // the reader's text comparisons throw this for an unpaired surrogate escape (\uD800)
        catch (InvalidOperationException) { throw Bad(path, current, "the header holds text that is not valid Unicode (an unpaired surrogate escape)"); }
        list.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
        long pos = 0;
        foreach (var t in list)
        {
            if (t.Begin < pos) throw Bad(path, t.Name, $"its bytes [{t.Begin}, {t.End}) overlap the previous tensor's, which end at {pos}");
            if (t.Begin > pos) throw Bad(path, t.Name, $"bytes [{pos}, {t.Begin}) before it belong to no tensor");
            pos = t.End;
        }
        if (pos != dataLength) throw Bad(path, null, $"the tensors cover {pos} bytes of the {dataLength}-byte data section");
        return (list, meta, byName);
    }

    private static SafeTensorInfo Entry(ref Utf8JsonReader r, string path, string name, long dataLength)
    {
        if (r.TokenType != JsonTokenType.StartObject) throw Bad(path, name, "the entry is not an object");
        SafeTensorsDType? type = null;
        long[]? shape = null;
        long begin = -1, end = -1;
        bool offsets = false;
        long elements = 1;
        while (true)
        {
            Next(ref r, path);
            if (r.TokenType == JsonTokenType.EndObject) break;
            // field names and dtypes are compared in place (no string per entry: the header's cost stays a few bytes per byte)
            int field = r.ValueTextEquals("dtype"u8) ? 0 : r.ValueTextEquals("shape"u8) ? 1 : r.ValueTextEquals("data_offsets"u8) ? 2 : 3;
            if (field == 3) Text(ref r, path, name, "a field name"); // rejects an invalid escape in an unknown field's name
            Next(ref r, path);
            switch (field)
            {
                case 0:
                    if (type != null) throw Bad(path, name, "'dtype' appears twice");
                    if (r.TokenType != JsonTokenType.String) throw Bad(path, name, "missing string 'dtype'");
                    type = DType(ref r);
                    if (type == null)
                        throw Bad(path, name, $"dtype '{Clip(Text(ref r, path, name, "the dtype"))}' is not supported (F32, F16, BF16, F64, I8–I64, U8–U64, BOOL, F8_E4M3, F8_E5M2)");
                    break;
                case 1:
                {
                    if (shape != null) throw Bad(path, name, "'shape' appears twice");
                    if (r.TokenType != JsonTokenType.StartArray) throw Bad(path, name, "missing array 'shape'");
                    Span<long> dims = stackalloc long[16];
                    int rank = 0;
                    while (true)
                    {
                        Next(ref r, path);
                        if (r.TokenType == JsonTokenType.EndArray) break;
                        if (rank == 16) throw Bad(path, name, "the shape has more than 16 dimensions");
                        if (r.TokenType != JsonTokenType.Number || !r.TryGetInt64(out long v) || v < 0)
                            throw Bad(path, name, $"shape entry {Clip(Raw(ref r))} is not a non-negative integer");
                        dims[rank++] = v;
                        // the data section bounds every honest element count, so anything beyond it is an error already
                        if (v != 0 && elements > dataLength / v) elements = long.MaxValue; else elements *= v;
                    }
                    shape = rank == 0 ? [] : dims[..rank].ToArray();
                    break;
                }
                case 2:
                {
                    if (offsets) throw Bad(path, name, "'data_offsets' appears twice");
                    offsets = true;
                    if (r.TokenType != JsonTokenType.StartArray) throw Bad(path, name, "missing 'data_offsets' [begin, end]");
                    Next(ref r, path);
                    if (r.TokenType != JsonTokenType.Number || !r.TryGetInt64(out begin)) throw Bad(path, name, "data_offsets are not integers");
                    Next(ref r, path);
                    if (r.TokenType != JsonTokenType.Number || !r.TryGetInt64(out end)) throw Bad(path, name, "data_offsets are not integers");
                    Next(ref r, path);
                    if (r.TokenType != JsonTokenType.EndArray) throw Bad(path, name, "missing 'data_offsets' [begin, end]");
                    break;
                }
                default:
                    r.Skip(); // unknown fields are ignored, as the reference implementation does
                    break;
            }
        }
        if (type == null) throw Bad(path, name, "missing string 'dtype'");
        if (shape == null) throw Bad(path, name, "missing array 'shape'");
        if (!offsets) throw Bad(path, name, "missing 'data_offsets' [begin, end]");
        if (begin < 0 || end < begin || end > dataLength)
            throw Bad(path, name, $"data_offsets [{begin}, {end}) lie outside the {dataLength}-byte data section");
        long size = SafeTensorsFile.ElementSize(type.Value);
        if (elements == long.MaxValue || elements > long.MaxValue / size || elements * size != end - begin)
            throw Bad(path, name, $"shape [{string.Join(", ", shape)}] of {type} needs {(elements == long.MaxValue || elements > long.MaxValue / size ? "more than the file" : (elements * size).ToString())} bytes; data_offsets give {end - begin}");
        return new SafeTensorInfo(name, type.Value, shape, begin, end);
    }

    private static SafeTensorsDType? DType(ref Utf8JsonReader r)
    {
        for (int i = 0; i < DTypeNames.Length; i++)
            if (r.ValueTextEquals(DTypeNames[i])) return (SafeTensorsDType)i;
        return null;
    }

    /// <summary>The dtype names in <see cref="SafeTensorsDType"/> order.</summary>
    private static readonly byte[][] DTypeNames = Enum.GetNames<SafeTensorsDType>().Select(Encoding.UTF8.GetBytes).ToArray();

    private static void Next(ref Utf8JsonReader r, string path)
    {
        if (!r.Read()) throw Bad(path, null, "the header ends inside its JSON");
    }

    /// <summary>The current string token; a lone surrogate escape (<c>\uD800</c>) is invalid data, not a crash.</summary>
    private static string Text(ref Utf8JsonReader r, string path, string? tensor, string what)
    {
        try { return r.GetString()!; }
        catch (InvalidOperationException) { throw Bad(path, tensor, $"{what} is not valid Unicode (an unpaired surrogate escape)"); }
    }

    private static string Raw(ref Utf8JsonReader r) => Encoding.UTF8.GetString(r.ValueSpan);

    private static string Clip(string s) => s.Length <= 40 ? s : s[..40] + "…";

    private static string Kind(JsonTokenType t) => t switch
    {
        JsonTokenType.StartArray => "Array", JsonTokenType.String => "String", JsonTokenType.Number => "Number",
        JsonTokenType.True or JsonTokenType.False => "Boolean", JsonTokenType.Null => "Null", _ => t.ToString(),
    };
}

/// <summary>Writes safetensors files (the format <see cref="SafeTensorsFile"/> reads).</summary>
public static class SafeTensorsWriter
{
    /// <summary>One tensor to write: float32 data, its shape, and the dtype to store it as (F32, F16, BF16 or F64).</summary>
    public readonly record struct Entry(string Name, float[] Data, long[] Shape, SafeTensorsDType DType = SafeTensorsDType.F32);

    private static readonly UTF8Encoding StrictUtf8 = new(false, true);

    /// <summary>
    /// Writes the tensors (in the order given) and optional metadata to <paramref name="path"/>: to a temporary file beside
    /// it first, renamed over <paramref name="path"/> only when complete, so a failure leaves no partial file.
    /// </summary>
    /// <exception cref="ArgumentException">
    /// A name is repeated, reserved, empty or not valid Unicode; a shape is negative, overflows or does not match its data;
    /// the dtype is not a float type; a metadata key or value is null or not valid Unicode; a finite value would overflow
    /// the dtype's range (F16 beyond ±65504, BF16 beyond ±3.39·10³⁸).
    /// </exception>
    /// <exception cref="IOException">The file cannot be written.</exception>
    public static void Write(string path, IEnumerable<Entry> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        var list = tensors.ToList();
        Validate(list, metadata);
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
                long bytes = t.Data.LongLength * SafeTensorsFile.ElementSize(t.DType);
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
        int hlen = (int)headerStream.Length;
        int padded = (hlen + 7) / 8 * 8;
        AtomicFile.Write(path, fs =>
        {
            Span<byte> len = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)padded);
            fs.Write(len);
            fs.Write(headerStream.GetBuffer(), 0, hlen);
            for (int i = hlen; i < padded; i++) fs.WriteByte((byte)' ');
            var buf = new byte[8];
            foreach (var t in list)
            {
                if (t.DType == SafeTensorsDType.F32 && BitConverter.IsLittleEndian)
                {
                    fs.Write(MemoryMarshal.AsBytes(t.Data.AsSpan()));
                    continue;
                }
                foreach (float v in t.Data)
                {
                    switch (t.DType)
                    {
                        case SafeTensorsDType.F32: BinaryPrimitives.WriteSingleLittleEndian(buf, v); fs.Write(buf, 0, 4); break;
                        case SafeTensorsDType.F16: BinaryPrimitives.WriteHalfLittleEndian(buf, (Half)v); fs.Write(buf, 0, 2); break;
                        case SafeTensorsDType.BF16: BinaryPrimitives.WriteUInt16LittleEndian(buf, ToBf16(v)); fs.Write(buf, 0, 2); break;
                        default: BinaryPrimitives.WriteDoubleLittleEndian(buf, v); fs.Write(buf, 0, 8); break;
                    }
                }
            }
        });
    }

    /// <summary>float → bfloat16 bits, rounding to nearest even (NaN stays NaN).</summary>
    internal static ushort ToBf16(float v)
    {
        uint bits = BitConverter.SingleToUInt32Bits(v);
        uint rounded = float.IsNaN(v) ? bits | 0x400000 : bits + 0x7FFF + ((bits >> 16) & 1);
        return (ushort)(rounded >> 16);
    }

    private static void Validate(List<Entry> list, IReadOnlyDictionary<string, string>? metadata)
    {
        var names = new HashSet<string>(StringComparer.Ordinal) { "__metadata__" };
        foreach (var t in list)
        {
            if (string.IsNullOrEmpty(t.Name)) ThrowHelper.Argument("tensors", "a tensor name is null or empty.");
            if (!IsValidUnicode(t.Name)) ThrowHelper.Argument("tensors", $"tensor name '{t.Name}' is not valid Unicode (an unpaired surrogate).");
            if (!names.Add(t.Name)) ThrowHelper.Argument("tensors", $"tensor name '{t.Name}' is repeated or reserved.");
            if (t.Data is null || t.Shape is null) ThrowHelper.Argument("tensors", $"tensor '{t.Name}' has no data or no shape.");
            if (t.DType is not (SafeTensorsDType.F32 or SafeTensorsDType.F16 or SafeTensorsDType.BF16 or SafeTensorsDType.F64))
                ThrowHelper.Argument("tensors", $"tensor '{t.Name}': dtype {t.DType} cannot be written from float data (F32, F16, BF16, F64).");
            long n = 1;
            foreach (long d in t.Shape)
            {
                if (d < 0) ThrowHelper.Argument("tensors", $"tensor '{t.Name}': shape [{string.Join(", ", t.Shape)}] has a negative dimension.");
                if (d != 0 && n > long.MaxValue / d) { n = -1; break; }
                n *= d;
            }
            if (n != t.Data.LongLength)
                ThrowHelper.Argument("tensors", $"tensor '{t.Name}': shape [{string.Join(", ", t.Shape)}] has {(n < 0 ? "too many" : n.ToString())} elements; the data has {t.Data.Length}.");
            float max = t.DType switch { SafeTensorsDType.F16 => (float)Half.MaxValue, SafeTensorsDType.BF16 => 3.3895314e38f, _ => float.MaxValue };
            if (t.DType is SafeTensorsDType.F16 or SafeTensorsDType.BF16)
                for (int i = 0; i < t.Data.Length; i++)
                {
                    float v = t.Data[i];
                    if (float.IsFinite(v) && float.IsInfinity(t.DType == SafeTensorsDType.F16 ? (float)(Half)v : BitConverter.Int32BitsToSingle(ToBf16(v) << 16)))
                        ThrowHelper.Argument("tensors", $"tensor '{t.Name}': element {i} = {v} overflows {t.DType} (largest {max}).");
                }
        }
        if (metadata == null) return;
        foreach (var kv in metadata)
        {
            if (kv.Key is null || kv.Value is null) ThrowHelper.Argument("metadata", $"metadata entry '{kv.Key}' has a null value.");
            if (!IsValidUnicode(kv.Key) || !IsValidUnicode(kv.Value)) ThrowHelper.Argument("metadata", $"metadata entry '{kv.Key}' is not valid Unicode (an unpaired surrogate).");
        }
    }

    internal static bool IsValidUnicode(string s)
    {
        try { StrictUtf8.GetByteCount(s); return true; }
        catch (EncoderFallbackException) { return false; }
    }
}

/// <summary>Writes a file through a temporary file beside it and a rename, so a failure never leaves a partial file.</summary>
internal static class AtomicFile
{
    public static void Write(string path, Action<FileStream> body)
    {
        string full = System.IO.Path.GetFullPath(path);
        if (Directory.Exists(full)) throw new IOException($"'{path}' is a directory.");
        string dir = System.IO.Path.GetDirectoryName(full) ?? ".";
        string tmp = System.IO.Path.Combine(dir, $".{System.IO.Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                body(fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }
}
