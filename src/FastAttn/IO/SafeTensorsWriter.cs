using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace FastAttn.IO;

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
