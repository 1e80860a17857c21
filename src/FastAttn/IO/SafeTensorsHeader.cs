using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace FastAttn.IO;

/// <summary>The header parser: a forward-only pass over the JSON with <see cref="Utf8JsonReader"/>.</summary>
internal static class SafeTensorsHeader
{
    private static InvalidDataException Bad(string path, string? tensor, string problem) => SafeTensorsFile.Bad(path, tensor, problem);

    /// <summary>
    /// The tensors in data order, the metadata and the tensors by name. Work and memory are linear in the header's size:
    /// one pass, no document tree, containers sized once from the header length (an entry takes at least 48 bytes of JSON).
    /// </summary>
    public static (List<SafeTensorInfo>, Dictionary<string, string>, Dictionary<string, SafeTensorInfo>) Parse(string path, ReadOnlySpan<byte> header, long dataLength)
        => Parse(path, header, dataLength, out _);

    /// <summary>
    /// The bytes of the data section <paramref name="header"/> describes (its tensors side by side from 0), the header checked
    /// as <see cref="Parse(string, ReadOnlySpan{byte}, long)"/> checks it except against a data length, which is not known yet.
    /// </summary>
    public static long DataBytes(string path, ReadOnlySpan<byte> header)
    {
        Parse(path, header, -1, out long covered);
        return covered;
    }

    /// <param name="path">How messages name the file.</param>
    /// <param name="header">The header's JSON.</param>
    /// <param name="dataLength">The data section's length, or −1 when not known (nothing is checked against it).</param>
    /// <param name="covered">The bytes the tensors cover.</param>
    private static (List<SafeTensorInfo>, Dictionary<string, string>, Dictionary<string, SafeTensorInfo>) Parse(string path, ReadOnlySpan<byte> header, long dataLength, out long covered)
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
                var info = Entry(ref r, path, name, dataLength < 0 ? long.MaxValue : dataLength);
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
        if (dataLength >= 0 && pos != dataLength) throw Bad(path, null, $"the tensors cover {pos} bytes of the {dataLength}-byte data section");
        covered = pos;
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
