using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace FastAttn.IO;

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
public sealed unsafe class SafeTensorsFile : ITensorSource, IDisposable
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
    /// <param name="stream">
    /// The bytes; read from its current position to the end, not disposed. A stream without a length (a pipe, a network
    /// stream) is read as far as its header says the file goes, at most <see cref="MaxStreamBytes"/>, and must end there.
    /// </param>
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
        return LoadUnsized(stream, name);
    }

    /// <summary>
    /// The most bytes <see cref="Load(Stream, string)"/> reads from a stream without a length (2 GiB − 1, what it could hold
    /// before): larger files are opened from their path (<see cref="Open"/>, memory-mapped).
    /// </summary>
    public const long MaxStreamBytes = int.MaxValue;

    /// <summary>
    /// A stream that cannot tell its length: its header first (length, JSON), which gives the file's size; then exactly that
    /// many bytes. It was copied to its end before, so an endless one (a device, a pipe that never closes) was read until
    /// "Stream was too long" after 2 GB — and a header's size is checked before the data is asked for.
    /// </summary>
    private static SafeTensorsFile LoadUnsized(Stream stream, string name)
    {
        Span<byte> head = stackalloc byte[8];
        int got = stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        if (got < 8) throw Bad(name, null, $"the file has {got} bytes; a safetensors file starts with an 8-byte header length");
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(head);
        if (n > (ulong)MaxHeaderBytes) throw Bad(name, null, $"the header length {n} exceeds the {MaxHeaderBytes}-byte limit");
        var header = new byte[8 + n];
        head.CopyTo(header);
        if ((got = stream.ReadAtLeast(header.AsSpan(8), (int)n, throwOnEndOfStream: false)) < (int)n)
            throw Bad(name, null, $"the file ended {got} bytes into its {n}-byte header");
        long total = header.Length + SafeTensorsHeader.DataBytes(name, header.AsSpan(8));
        if (total > MaxStreamBytes)
            throw Bad(name, null, $"its header gives it {total} bytes, more than the {MaxStreamBytes} read from a stream without a length; open it from its path");
        byte* p = ReadAll(stream, total, name, header);
        try
        {
            Span<byte> one = stackalloc byte[1];
            if (stream.Read(one) != 0) throw Bad(name, null, $"the stream goes on past the {total} bytes its header gives the file");
        }
        catch
        {
            NativeMemory.Free(p);
            throw;
        }
        return new SafeTensorsFile(name, p, total, () => NativeMemory.Free(p), mapped: false);
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

    /// <summary>
    /// <paramref name="length"/> bytes in native memory: <paramref name="prefix"/> (already read from the stream), then the
    /// rest read from <paramref name="s"/>; an early end is <see cref="InvalidDataException"/>.
    /// </summary>
    private static byte* ReadAll(Stream s, long length, string path, ReadOnlySpan<byte> prefix = default)
    {
        byte* p = (byte*)NativeMemory.Alloc((nuint)Math.Max(length, 1));
        try
        {
            prefix.CopyTo(new Span<byte>(p, prefix.Length));
            long done = prefix.Length;
            while (done < length)
            {
                int want = (int)Math.Min(length - done, 1 << 30);
                int got = s.Read(new Span<byte>(p + done, want));
                if (got == 0) throw Bad(path, null, prefix.IsEmpty
                    ? $"the file ended after {done} of its {length} bytes while being read (it changed)"
                    : $"the file ended after {done} of the {length} bytes its header gives it");
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

    string ITensorSource.Name => Path;
    IEnumerable<string> ITensorSource.TensorNames => Tensors.Select(t => t.Name);
    bool ITensorSource.TryGetShape(string name, out long[] shape)
    {
        bool ok = _byName.TryGetValue(name, out var t);
        shape = ok ? t!.Shape : [];
        return ok;
    }

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
