using System.Buffers.Binary;
using FastAttn.IO;
using FastAttn.Onnx.Proto;
using Google.Protobuf;

namespace FastAttn.Onnx;

/// <summary>One node of an ONNX graph: its operator, inputs, outputs and attributes (read-only view).</summary>
public sealed class OnnxNode
{
    internal OnnxNode(Proto.OnnxNode n)
    {
        OpType = n.OpType ?? "";
        Name = n.Name ?? "";
        Domain = n.Domain ?? "";
        Inputs = [.. n.Input];
        Outputs = [.. n.Output];
        Proto = n;
    }

    internal Proto.OnnxNode Proto { get; }
    /// <summary>Operator type, e.g. "MatMul".</summary>
    public string OpType { get; }
    /// <summary>The node's name (may be empty).</summary>
    public string Name { get; }
    /// <summary>The operator's domain ("" for the default ONNX domain).</summary>
    public string Domain { get; }
    /// <summary>Input value names ("" for an omitted optional input).</summary>
    public IReadOnlyList<string> Inputs { get; }
    /// <summary>Output value names.</summary>
    public IReadOnlyList<string> Outputs { get; }

    /// <summary>An integer attribute, or null.</summary>
    public long? IntAttribute(string name) => Proto.Attribute.FirstOrDefault(a => a.Name == name) is { HasI: true } a ? a.I : null;
    /// <summary>A float attribute, or null.</summary>
    public float? FloatAttribute(string name) => Proto.Attribute.FirstOrDefault(a => a.Name == name) is { HasF: true } a ? a.F : null;
    /// <summary>A string attribute (UTF-8), or null.</summary>
    public string? StringAttribute(string name) => Proto.Attribute.FirstOrDefault(a => a.Name == name) is { HasS: true } a ? a.S.ToStringUtf8() : null;
    /// <summary>An integer-list attribute, or null.</summary>
    public IReadOnlyList<long>? IntsAttribute(string name) => Proto.Attribute.FirstOrDefault(a => a.Name == name) is { } a && a.Ints.Count > 0 ? [.. a.Ints] : null;
}

/// <summary>
/// An ONNX model file read for its weights — no ONNX execution. Parses the protobuf (Google.Protobuf, with a schema of
/// the fields FastAttn needs), keeps the graph's nodes for inspection, and exposes the float initializers under
/// <i>parameter names</i> as an <see cref="ITensorSource"/>:
/// <list type="bullet">
/// <item>an initializer already named like a parameter (<c>embeddings.word_embeddings.weight</c>) keeps its name;</item>
/// <item>a weight exported under a number or <c>onnx::MatMul_…</c> is named after the layer it feeds: a <c>MatMul</c> (possibly through a
/// <c>Transpose</c>) whose result is added to a named bias <c>X.bias</c> becomes <c>X.weight</c>, transposed from ONNX's
/// <c>[in, out]</c> to PyTorch's <c>[out, in]</c>; a <c>Gemm</c> with a named bias likewise (honouring <c>transB</c>);</item>
/// <item>weights held by <c>Constant</c> nodes instead of initializers are treated the same way;</item>
/// <item>ONNX Runtime's fused nodes (Attention, QAttention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu,
/// FusedGemm, FusedMatMul) give their weights the names of the layers they replace;</item>
/// <item>quantised weights are listed dequantised under the float weight's name: <c>MatMulInteger</c> products
/// (<c>quantize_dynamic</c>), its quantised embedding tables (Gather + DequantizeLinear), QAttention's weight,
/// QEmbedLayerNormalization's tables, gamma and beta, and the
/// block-quantised <c>MatMulNBits</c> (2/4/8 bits) and <c>MatMulBnb4</c> (FP4/NF4) products; their scales and zero points
/// are not listed;</item>
/// <item>the QDQ format (<c>quantize_static</c>'s default): a DequantizeLinear of a constant is read as the constant
/// dequantised (4-, 8-, 16- or 32-bit codes, per tensor, per axis or per block) under the float's name, and
/// QuantizeLinear → DequantizeLinear pairs on activations are passed through (FastAttn runs FP32); the QOperator format
/// (QLinearMatMul, QLinearAdd, QLinearMul, QLinearSoftmax) is lowered to QDQ first;</item>
/// <item>integer tensors (shape constants, <c>position_ids</c>) are graph plumbing and not listed; float weights that could
/// not be matched to a layer are listed in <see cref="Unmatched"/>.</item>
/// </list>
/// Malformed files raise <see cref="InvalidDataException"/>. Weights stored as ONNX external data (what exporters write for
/// models over protobuf's 2 GB, e.g. <c>model.onnx</c> + <c>model.onnx_data</c>) are read from their files beside the model
/// when it is opened from its path: each location must stay inside the model's folder and each tensor's bytes inside its
/// file (checked when the model is opened); a tensor is read straight from its file when asked for, so no copy of the
/// whole data file is held. Opened from its path, a model's own tensors are read the same way: the parser skips their
/// bytes and each is read from the model file at its offset when asked for (opening MiniLM's 90 MB file went from
/// 0.32–0.39 s to 0.04–0.06 s). A file changed after it was opened (another length or write time) is an
/// <see cref="InvalidDataException"/> on the read, never other weights.
/// </summary>
public sealed class OnnxModelFile : ITensorSource
{
    private readonly Dictionary<string, OnnxTensor> _values = new(StringComparer.Ordinal);       // initializers and Constant outputs
    // a parameter: its tensor, whether it is read transposed, the initializer's name, and which of Parts equal pieces of the
    // tensor's last axis it is (1 piece: the whole; 3: the query, key or value third of a fused projection)
    private readonly Dictionary<string, (OnnxTensor Tensor, bool Transpose, string Source, int Part, int Parts)> _params = new(StringComparer.Ordinal);
    private readonly Dictionary<string, OnnxNode> _producer = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<OnnxNode>> _consumers = new(StringComparer.Ordinal);
    // tensors whose bytes are in an external data file: where (full path), from which offset, how many bytes
    private readonly Dictionary<OnnxTensor, (string Path, long Offset, long Length)> _external = new(ReferenceEqualityComparer.Instance);
    // each file tensors are read from (external data files, or the model file itself): its length and last write when opened
    private readonly Dictionary<string, (long Length, DateTime Written)> _stamps = new(StringComparer.Ordinal);
    // scales and zero points of the QuantizeLinear/DequantizeLinear nodes folded away: quantisation plumbing, never parameters
    private readonly HashSet<string> _qdqPlumbing = new(StringComparer.Ordinal);
    // the folder external data is looked up in (the model file's), null when the model was parsed from a stream or memory
    private readonly string? _directory;

    /// <summary>How messages name the file.</summary>
    public string Name { get; }
    /// <summary>The graph's nodes in file order.</summary>
    public IReadOnlyList<OnnxNode> Nodes { get; }
    /// <summary>The graph's input names (without initializers).</summary>
    public IReadOnlyList<string> GraphInputs { get; }
    /// <summary>The graph's output names.</summary>
    public IReadOnlyList<string> GraphOutputs { get; }
    /// <summary>"producer version, opset N" from the file.</summary>
    public string Producer { get; }
    /// <summary>The default-domain opset the model was exported for.</summary>
    public long Opset { get; }
    /// <summary>Float weights (2-D or more) that could not be given a parameter name.</summary>
    public IReadOnlyList<string> Unmatched { get; }

    private OnnxModelFile(string name, OnnxModel model, string? directory = null,
        (string Path, List<(long Offset, long Length)?> Raw, long Length, DateTime Written)? inline = null)
    {
        Name = name;
        _directory = directory;
        var dataFiles = new Dictionary<string, long>(StringComparer.Ordinal);
        if (inline is { } self)
        {
            if (model.Graph is { } g0 && self.Raw.Count != g0.Initializer.Count)
                throw Bad(name, "the file's initializers could not be located"); // the scan and the parser disagree: never expected
            _stamps[self.Path] = (self.Length, self.Written);
        }
        var g = model.Graph ?? throw Bad(name, "the file has no graph");
        Producer = $"{model.ProducerName} {model.ProducerVersion}".Trim();
        Opset = model.OpsetImport.Where(o => string.IsNullOrEmpty(o.Domain) || o.Domain == "ai.onnx").Select(o => o.Version).DefaultIfEmpty(0).Max();
        for (int i = 0; i < g.Initializer.Count; i++)
        {
            var t = g.Initializer[i];
            if (string.IsNullOrEmpty(t.Name)) throw Bad(name, "an initializer has no name");
            if (inline is { } file && file.Raw[i] is { } raw)
            {
                // raw_data inside the model file (opened from its path): read from the file at its offset when asked for; a
                // tensor of a type FastAttn never reads is not looked at, whatever it holds (as when parsed from memory)
                bool external = t.DataLocation == 1 || t.ExternalData.Count > 0;
                if (external && ElementSize(t.DataType) != 0) throw Bad(name, $"tensor '{t.Name}' (external data) also carries data inside the file");
                if (!external) _external[t] = (file.Path, raw.Offset, raw.Length);
            }
            Check(t, dataFiles);
            if (!_values.TryAdd(t.Name, t)) throw Bad(name, $"initializer '{t.Name}' appears twice");
        }
        foreach (var p in g.Node)
            if (p.OpType == "Constant" && p.Output.Count == 1 && p.Output[0].Length > 0 && p.Attribute.FirstOrDefault(a => a.Name == "value")?.T is { } ct)
            {
                Check(ct, dataFiles);
                _values.TryAdd(p.Output[0], ct);
            }
        var graphOutputs = g.Output.Select(v => v.Name).ToHashSet(StringComparer.Ordinal);
        var nodes = new List<OnnxNode>(g.Node.Count);
        foreach (var p in WithoutQdq(g.Node, graphOutputs))
        {
            var n = new OnnxNode(p);
            nodes.Add(n);
            foreach (var o in n.Outputs)
                if (o.Length > 0 && !_producer.TryAdd(o, n)) throw Bad(name, $"value '{o}' is produced twice");
            foreach (var i in n.Inputs)
            {
                if (i.Length == 0) continue;
                if (!_consumers.TryGetValue(i, out var list)) _consumers[i] = list = [];
                list.Add(n);
            }
        }
        Nodes = nodes;
        var inits = new HashSet<string>(g.Initializer.Select(t => t.Name), StringComparer.Ordinal);
        GraphInputs = g.Input.Select(v => v.Name).Where(v => !inits.Contains(v)).ToArray();
        GraphOutputs = g.Output.Select(v => v.Name).ToArray();
        Unmatched = MapParameters();
    }

    /// <summary>Reads and parses an ONNX file.</summary>
    /// <exception cref="InvalidDataException">Not a valid ONNX model, or weights stored outside the file.</exception>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public static OnnxModelFile Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Directory.Exists(path)) throw new IOException($"'{path}' is a directory, not an ONNX file.");
        using var fs = File.OpenRead(path);
        string full = Path.GetFullPath(path), real = RealPath(full);
        (long Length, DateTime Written) stamp = (fs.Length, File.GetLastWriteTimeUtc(real));
        try
        {
            // the weights' raw bytes are not copied here (the parser skips them); each tensor is read from the file at
            // the offset the scan finds it at, when it is asked for (as external data is)
            var lite = OnnxModelLite.Parser.WithDiscardUnknownFields(true).ParseFrom(fs);
            fs.Position = 0;
            var raw = InlineRawData(fs, path);
            return new OnnxModelFile(path, FromLite(lite), Path.GetDirectoryName(full), (real, raw, stamp.Length, stamp.Written));
        }
        catch (InvalidProtocolBufferException e) { throw Bad(path, $"not a valid ONNX (protobuf) file: {e.Message}"); }
    }

    /// <summary>
    /// Where each initializer's raw_data lies in the file (offset, length), in the graph's order of initializers (null for
    /// one without): a scan of the protobuf wire format through the model (field 7, the graph), the graph's initializers
    /// (field 5) and their raw_data (field 9; the last one counts, as for the parser), skipping everything else.
    /// </summary>
    private static List<(long Offset, long Length)?> InlineRawData(Stream s, string name)
    {
        var r = new WireScanner(new BufferedStream(s, 1 << 16), s.Length, name);
        var found = new List<(long Offset, long Length)?>();
        while (r.Position < r.End)
        {
            var (field, wire) = r.Tag();
            if (field != 7 || wire != 2) { r.Skip(wire); continue; }
            long graphEnd = r.Delimited();
            while (r.Position < graphEnd)
            {
                var (f, w) = r.Tag();
                if (f != 5 || w != 2) { r.Skip(w); continue; }
                long tensorEnd = r.Delimited();
                (long, long)? raw = null;
                while (r.Position < tensorEnd)
                {
                    var (tf, tw) = r.Tag();
                    if (tf == 9 && tw == 2)
                    {
                        long end = r.Delimited();
                        raw = (r.Position, end - r.Position);
                        r.SkipTo(end);
                    }
                    else r.Skip(tw);
                }
                r.Expect(tensorEnd);
                found.Add(raw);
            }
            r.Expect(graphEnd);
        }
        return found;
    }

    /// <summary>A forward reader of protobuf's wire format over a stream: tags, varints, and skips by seeking.</summary>
    private sealed class WireScanner(BufferedStream s, long end, string name)
    {
        public long Position { get; private set; }
        public long End => end;

        private InvalidDataException Malformed() => Bad(name, "not a valid ONNX (protobuf) file: malformed field");

        private int Byte()
        {
            int b = s.ReadByte();
            if (b < 0) throw Malformed();
            Position++;
            return b;
        }

        public ulong Varint()
        {
            ulong v = 0;
            for (int shift = 0; shift < 64; shift += 7)
            {
                int b = Byte();
                v |= (ulong)(b & 0x7F) << shift;
                if ((b & 0x80) == 0) return v;
            }
            throw Malformed();
        }

        public (ulong Field, int Wire) Tag()
        {
            ulong t = Varint();
            return (t >> 3, (int)(t & 7));
        }

        /// <summary>Reads a length and returns where the delimited field ends (inside the stream).</summary>
        public long Delimited()
        {
            ulong len = Varint();
            if (len > (ulong)(End - Position)) throw Malformed();
            return Position + (long)len;
        }

        public void SkipTo(long to)
        {
            if (to < Position || to > End) throw Malformed();
            s.Seek(to - Position, SeekOrigin.Current);
            Position = to;
        }

        public void Skip(int wire)
        {
            switch (wire)
            {
                case 0: Varint(); break;
                case 1: SkipTo(Position + 8); break;
                case 2: SkipTo(Delimited()); break;
                case 5: SkipTo(Position + 4); break;
                case 3: SkipGroup(); break; // not in ONNX's schema, but the parser skips an unknown group, so the scan must too
                default: throw Malformed();
            }
        }

        /// <summary>Skips a group's fields up to its end-group tag (groups nested inside are skipped whole).</summary>
        private void SkipGroup()
        {
            for (int depth = 1; depth > 0;)
            {
                var (_, wire) = Tag();
                if (wire == 3) depth++;
                else if (wire == 4) depth--;
                else Skip(wire);
            }
        }

        public void Expect(long at)
        {
            if (Position != at) throw Malformed();
        }
    }

    /// <summary>The model as the full schema holds it, its initializers without raw_data (read from the file instead).</summary>
    private static OnnxModel FromLite(OnnxModelLite lite)
    {
        var m = new OnnxModel();
        if (lite.HasIrVersion) m.IrVersion = lite.IrVersion;
        if (lite.HasProducerName) m.ProducerName = lite.ProducerName;
        if (lite.HasProducerVersion) m.ProducerVersion = lite.ProducerVersion;
        m.OpsetImport.AddRange(lite.OpsetImport);
        m.MetadataProps.AddRange(lite.MetadataProps);
        if (lite.Graph is not { } lg) return m;
        var g = new OnnxGraph();
        if (lg.HasName) g.Name = lg.Name;
        g.Node.AddRange(lg.Node);
        g.Input.AddRange(lg.Input);
        g.Output.AddRange(lg.Output);
        foreach (var lt in lg.Initializer)
        {
            var t = new OnnxTensor();
            t.Dims.AddRange(lt.Dims);
            if (lt.HasDataType) t.DataType = lt.DataType;
            if (lt.HasName) t.Name = lt.Name;
            if (lt.HasDataLocation) t.DataLocation = lt.DataLocation;
            t.FloatData.AddRange(lt.FloatData);
            t.Int32Data.AddRange(lt.Int32Data);
            t.Int64Data.AddRange(lt.Int64Data);
            t.DoubleData.AddRange(lt.DoubleData);
            t.ExternalData.AddRange(lt.ExternalData);
            g.Initializer.Add(t);
        }
        m.Graph = g;
        return m;
    }

    /// <summary>Parses an ONNX model from a stream (read to its end).</summary>
    /// <exception cref="InvalidDataException">Not a valid ONNX model.</exception>
    public static OnnxModelFile Load(Stream stream, string name = "<stream>") => Load(stream, name, null);

    private static OnnxModelFile Load(Stream stream, string name, string? directory)
    {
        ArgumentNullException.ThrowIfNull(stream);
        try
        {
            var input = new CodedInputStream(stream);
            return new OnnxModelFile(name, OnnxModel.Parser.ParseFrom(input), directory);
        }
        catch (InvalidProtocolBufferException e) { throw Bad(name, $"not a valid ONNX (protobuf) file: {e.Message}"); }
        catch (InvalidDataException) { throw; }
    }

    /// <summary>Parses an ONNX model held in memory.</summary>
    /// <exception cref="InvalidDataException">Not a valid ONNX model.</exception>
    public static OnnxModelFile Load(ReadOnlySpan<byte> bytes, string name = "<memory>")
    {
        try { return new OnnxModelFile(name, OnnxModel.Parser.ParseFrom(bytes)); }
        catch (InvalidProtocolBufferException e) { throw Bad(name, $"not a valid ONNX (protobuf) file: {e.Message}"); }
    }

    internal static InvalidDataException Bad(string name, string problem) => new($"ONNX file '{name}': {problem}.");

    /// <summary>Bytes per element of the ONNX data types FastAttn reads (0: not readable).</summary>
    private static int ElementSize(int dataType) => dataType switch
    {
        1 => 4,   // FLOAT
        6 => 4,   // INT32
        7 => 8,   // INT64
        10 => 2,  // FLOAT16
        11 => 8,  // DOUBLE
        16 => 2,  // BFLOAT16
        2 or 3 or 9 => 1, // UINT8, INT8, BOOL
        4 or 5 => 2,      // UINT16, INT16 (QDQ's 16-bit codes)
        21 or 22 => 1,    // UINT4, INT4: two codes a byte (see ByteCount)
        _ => 0,
    };

    /// <summary>Bytes of <paramref name="n"/> elements of a readable type: 4-bit codes go two to a byte, the first in the low half.</summary>
    private static long ByteCount(int dataType, long n) => dataType is 21 or 22 ? (n + 1) / 2 : n * ElementSize(dataType);

    private static bool IsFloat(int dataType) => dataType is 1 or 10 or 11 or 16;

    /// <summary>Validates a tensor's shape against its data before anything trusts it.</summary>
    private void Check(OnnxTensor t, Dictionary<string, long> dataFiles)
    {
        long n = 1;
        foreach (long d in t.Dims)
        {
            if (d < 0) throw Bad(Name, $"tensor '{t.Name}' has a negative dimension");
            if (d != 0 && n > int.MaxValue / d) throw Bad(Name, $"tensor '{t.Name}' has more elements than FastAttn reads");
            n *= d;
        }
        int size = ElementSize(t.DataType);
        if (t.DataLocation == 1 || t.ExternalData.Count > 0)
        {
            if (size != 0) CheckExternal(t, ByteCount(t.DataType, n), dataFiles); // other types are never read
            return;
        }
        if (size == 0) return; // other types are never read
        if (_external.TryGetValue(t, out var inFile))
        {
            if (inFile.Length != ByteCount(t.DataType, n))
                throw Bad(Name, $"tensor '{t.Name}' has shape [{string.Join(", ", t.Dims)}] but {inFile.Length} bytes of data");
            return;
        }
        if (t.DataType is 21 or 22)
        {
            // 4-bit codes are read from raw bytes only
            if (t.HasRawData && t.RawData.Length != ByteCount(t.DataType, n))
                throw Bad(Name, $"tensor '{t.Name}' has shape [{string.Join(", ", t.Dims)}] but {t.RawData.Length} bytes of data");
            return;
        }
        long have = t.HasRawData ? t.RawData.Length / size : t.DataType switch
        {
            1 => t.FloatData.Count,
            11 => t.DoubleData.Count,
            7 => t.Int64Data.Count,
            _ => t.Int32Data.Count, // INT32, FLOAT16 and BFLOAT16 (bits), (U)INT8, (U)INT16, BOOL are carried in int32_data
        };
        if ((t.HasRawData && t.RawData.Length != n * size) || (!t.HasRawData && have != n))
            throw Bad(Name, $"tensor '{t.Name}' has shape [{string.Join(", ", t.Dims)}] but {(t.HasRawData ? $"{t.RawData.Length} bytes" : $"{have} values")} of data");
    }

    /// <summary>
    /// An external tensor (ONNX's <c>data_location</c> EXTERNAL with <c>location</c>, <c>offset</c>, <c>length</c> entries):
    /// its file must lie inside the model's folder and hold the tensor's <paramref name="bytes"/> from the offset.
    /// <paramref name="dataFiles"/> caches each file's length.
    /// </summary>
    private void CheckExternal(OnnxTensor t, long bytes, Dictionary<string, long> dataFiles)
    {
        string what = $"tensor '{t.Name}' (external data)";
        if (_directory == null)
            throw Bad(Name, $"{what} is stored in a file beside the model; open the model from its path (OnnxModelFile.Open) so that file can be read");
        if (t.DataLocation != 1) throw Bad(Name, $"{what} has external_data entries but data_location {t.DataLocation}, not EXTERNAL (1)");
        if (t.HasRawData || t.FloatData.Count + t.Int32Data.Count + t.Int64Data.Count + t.DoubleData.Count > 0)
            throw Bad(Name, $"{what} also carries data inside the file");
        string? location = null;
        long offset = 0, length = -1;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var e in t.ExternalData)
        {
            string key = e.Key ?? "", value = e.Value ?? "";
            if (!seen.Add(key)) throw Bad(Name, $"{what} names '{key}' twice");
            switch (key)
            {
                case "location": location = value; break;
                case "offset": offset = Number(value, key); break;
                case "length": length = Number(value, key); break;
                // "checksum" (a SHA-1 of the bytes) and any other key are not needed to read the tensor
            }
        }
        long Number(string value, string key) =>
            long.TryParse(value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long v)
                ? v : throw Bad(Name, $"{what} has {key} '{Shorten(value)}', not a byte count");
        if (string.IsNullOrEmpty(location)) throw Bad(Name, $"{what} has no location");
        if (location.Contains('\0') || Path.IsPathRooted(location)) throw Bad(Name, $"{what} has location '{Shorten(location)}', not a path relative to the model's folder");
        string folder = Path.TrimEndingDirectorySeparator(Path.GetFullPath(_directory)) + Path.DirectorySeparatorChar;
        string file = Path.GetFullPath(Path.Combine(folder, location));
        if (!file.StartsWith(folder, StringComparison.Ordinal) || LeavesThroughALink(folder, file))
            throw Bad(Name, $"{what} has location '{Shorten(location)}', which leaves the model's folder");
        if (length >= 0 && length != bytes)
            throw Bad(Name, $"{what} has shape [{string.Join(", ", t.Dims)}] ({bytes} bytes) but length {length}");
        if (!dataFiles.TryGetValue(file, out long fileLength))
        {
            var info = new FileInfo(file);
            if (info.LinkTarget != null && info.ResolveLinkTarget(returnFinalTarget: true) is FileInfo target) info = target; // a link's own length is not its file's
            if (!info.Exists) throw Bad(Name, $"{what} is in '{Shorten(location)}', which does not exist beside the model");
            dataFiles[file] = fileLength = info.Length;
            _stamps.TryAdd(RealPath(file), (info.Length, info.LastWriteTimeUtc));
        }
        if (offset > fileLength || bytes > fileLength - offset)
            throw Bad(Name, $"{what} needs bytes {offset}..{offset + bytes} of '{Shorten(location)}', which has {fileLength}");
        _external[t] = (RealPath(file), offset, bytes); // read through the links as they were checked, not as they may be later
    }

    /// <summary>
    /// True when a symbolic link on the way from <paramref name="folder"/> to <paramref name="file"/> (a directory under the
    /// folder, or the file itself) points outside the folder — the lexical check alone would let such a link be read.
    /// </summary>
    private static bool LeavesThroughALink(string folder, string file)
    {
        string real = RealPath(folder.TrimEnd(Path.DirectorySeparatorChar)) + Path.DirectorySeparatorChar;
        for (string? p = file; p != null && p.Length >= folder.Length; p = Path.GetDirectoryName(p))
        {
            FileSystemInfo info = Directory.Exists(p) ? new DirectoryInfo(p) : new FileInfo(p);
            if (info.LinkTarget == null) continue;
            string? target = info.ResolveLinkTarget(returnFinalTarget: true)?.FullName;
            if (target == null || !RealPath(target).StartsWith(real, StringComparison.Ordinal)) return true;
        }
        return false;
    }

    /// <summary>A path with every symbolic link among its directories resolved (the folder itself may sit under one, e.g. /tmp).</summary>
    private static string RealPath(string path)
    {
        string full = Path.GetFullPath(path), root = Path.GetPathRoot(full) ?? "";
        string resolved = root;
        foreach (var part in full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries))
        {
            string next = Path.Combine(resolved, part);
            FileSystemInfo info = Directory.Exists(next) ? new DirectoryInfo(next) : new FileInfo(next);
            resolved = info.LinkTarget != null && info.ResolveLinkTarget(returnFinalTarget: true) is { } t ? Path.GetFullPath(t.FullName) : next;
        }
        return resolved;
    }

    private static string Shorten(string s) => s.Length <= 80 ? s : s[..80] + "…";

    /// <summary>True when the tensor's bytes are raw (in the file's raw_data, or in an external data file).</summary>
    private bool HasRaw(OnnxTensor t) => t.HasRawData || _external.ContainsKey(t);

    /// <summary>The tensor's raw bytes (read from its external data file when it has one; small tensors only).</summary>
    private ReadOnlySpan<byte> Raw(OnnxTensor t)
    {
        if (!_external.TryGetValue(t, out var e)) return t.HasRawData ? t.RawData.Span : default;
        var bytes = new byte[e.Length];
        ReadExternal(t, bytes);
        return bytes;
    }

    /// <summary>Reads an external tensor's bytes into <paramref name="into"/> (its byte count), one positioned read at a time.</summary>
    private void ReadExternal(OnnxTensor t, Span<byte> into)
    {
        var (path, offset, _) = _external[t];
        // a file rewritten since (even to the same length) would give other bytes at the offsets checked at open
        var info = new FileInfo(path);
        if (_stamps.TryGetValue(path, out var stamp) && (!info.Exists || info.Length != stamp.Length || info.LastWriteTimeUtc != stamp.Written))
            throw Bad(Name, $"tensor '{t.Name}': '{path}' changed after the model was opened (it ended early or was rewritten)");
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        while (!into.IsEmpty)
        {
            int got = RandomAccess.Read(handle, into, offset);
            if (got == 0) throw Bad(Name, $"tensor '{t.Name}': its external data file '{path}' ended early (it changed after the model was opened)");
            into = into[got..];
            offset += got;
        }
    }

    /// <summary>A constant's values as integers (initializer or Constant node), or null.</summary>
    public long[]? Int64Constant(string name)
    {
        if (!_values.TryGetValue(name, out var t)) return null;
        if (t.DataType is 7 or 6)
        {
            long n = t.Dims.Aggregate(1L, (a, b) => a * b);
            if (n > 1 << 20) return null;
            var r = new long[n];
            bool hasRaw = HasRaw(t);
            var raw = hasRaw ? Raw(t) : default;
            for (int i = 0; i < n; i++)
                r[i] = hasRaw
                    ? (t.DataType == 7 ? BinaryPrimitives.ReadInt64LittleEndian(raw[(8 * i)..]) : BinaryPrimitives.ReadInt32LittleEndian(raw[(4 * i)..]))
                    : (t.DataType == 7 ? t.Int64Data[i] : t.Int32Data[i]);
            return r;
        }
        return null;
    }

    /// <summary>A scalar float constant (initializer or Constant node), or null.</summary>
    public float? FloatScalar(string name)
    {
        if (!_values.TryGetValue(name, out var t) || !IsFloat(t.DataType) || t.Dims.Aggregate(1L, (a, b) => a * b) != 1) return null;
        var one = new float[1];
        Read(t, false, one);
        return one[0];
    }

    /// <summary>The node that produces <paramref name="value"/>, or null (a graph input or initializer).</summary>
    public OnnxNode? ProducerOf(string value) => _producer.GetValueOrDefault(value);
    /// <summary>The nodes that read <paramref name="value"/>.</summary>
    public IReadOnlyList<OnnxNode> ConsumersOf(string value) => _consumers.TryGetValue(value, out var l) ? l : [];
    /// <summary>True when <paramref name="name"/> is an initializer or a Constant node's output.</summary>
    public bool IsConstant(string name) => _values.ContainsKey(name);

    /// <summary>
    /// The graph's nodes with the QDQ format's quantisation taken out (what ONNX Runtime's <c>quantize_static</c> writes by
    /// default, and other quantisers that emit QuantizeLinear/DequantizeLinear): a <c>DequantizeLinear</c> of a constant
    /// becomes that constant dequantised — (q − zero point)·scale, per tensor, per axis, or per block (opset 21's
    /// <c>block_size</c>), from 4-, 8- or 16-bit codes or int32 — named like the float it replaces (<c>X</c> for an
    /// initializer <c>X_quantized</c>, the node's output otherwise), and a <c>QuantizeLinear</c> → <c>DequantizeLinear</c>
    /// pair on an activation (with the same scale and zero point) is passed through, so the graph reads like the float model
    /// it was made from and every weight is named as in one. FastAttn runs in FP32 with those weights: the activations are
    /// not quantised, unlike ONNX Runtime's int8 execution of such a file. A node it cannot fold (another type, a scale that
    /// does not fit the codes) is kept as it is.
    /// </summary>
    private IEnumerable<Proto.OnnxNode> WithoutQdq(IList<Proto.OnnxNode> nodes, HashSet<string> graphOutputs)
    {
        nodes = Lowered(nodes);
        if (!nodes.Any(n => n.OpType == "DequantizeLinear")) return nodes;
        var producer = new Dictionary<string, Proto.OnnxNode>(StringComparer.Ordinal);
        foreach (var n in nodes)
            foreach (var o in n.Output)
                if (o.Length > 0) producer.TryAdd(o, n);
        var rename = new Dictionary<string, string>(StringComparer.Ordinal);
        // where a value leads through the renamings so far (each path shortened as it is walked; no cycle is ever added)
        string Resolve(string v)
        {
            string start = v;
            while (rename.TryGetValue(v, out var to)) v = to;
            while (start != v && rename.TryGetValue(start, out var next)) { rename[start] = v; start = next; }
            return v;
        }
        // each constant is dequantised once: a second DequantizeLinear of it with the same scale, zero point and
        // attributes reads the first one's result; with others it is kept (so no file makes the loader expand one
        // constant over and over)
        var folded = new Dictionary<string, (string Key, string Name)>(StringComparer.Ordinal);
        var movedFrom = new Dictionary<string, Proto.OnnxNode?>(StringComparer.Ordinal);
        var dropped = new HashSet<Proto.OnnxNode>(ReferenceEqualityComparer.Instance);
        foreach (var dq in nodes)
        {
            if (dq.OpType != "DequantizeLinear" || dq.Domain is not ("" or "ai.onnx" or "com.microsoft") || dq.Input.Count < 2
                || dq.Output.Count != 1 || dq.Output[0].Length == 0 || graphOutputs.Contains(dq.Output[0]) || _values.ContainsKey(dq.Output[0])) continue;
            string x = dq.Input[0];
            if (_values.TryGetValue(x, out var q))
            {
                string key = string.Join('\0', dq.Input.Skip(1).Concat(dq.Attribute.Where(a => a.Name is "axis" or "block_size").Select(a => $"{a.Name}={a.I}")));
                if (folded.TryGetValue(x, out var done))
                {
                    if (done.Key != key) continue;
                    rename[dq.Output[0]] = done.Name;
                    dropped.Add(dq);
                    continue;
                }
                const string suffix = "_quantized";
                string stem = x.EndsWith(suffix, StringComparison.Ordinal) ? x[..^suffix.Length] : "";
                string name = stem.Length > 0 && !_values.ContainsKey(stem) && !producer.ContainsKey(stem) ? stem : dq.Output[0];
                if (DequantizedConstant(dq, q, name) is not { } f) continue;
                folded[x] = (key, name);
                _values[name] = f;
                if (name != dq.Output[0]) rename[dq.Output[0]] = name;
                else producer.Remove(name);
                dropped.Add(dq);
            }
            else if (producer.GetValueOrDefault(x) is { OpType: "QuantizeLinear", Input.Count: >= 2 } ql && ql.Domain == dq.Domain && SameQuantisation(ql, dq)
                && Resolve(ql.Input[0]) != dq.Output[0])
            {
                rename[dq.Output[0]] = ql.Input[0];
                dropped.Add(dq);
            }
            else if (QuantizedThroughDataMovement(x, producer, movedFrom) is { } qm && SameQuantisation(qm, dq)
                && Resolve(qm.Input[0]) != qm.Output[0] && Resolve(x) != dq.Output[0])
            {
                // Q → Reshape/Transpose/… → DQ (the QOperator form keeps moving 8-bit data between its operators): the data
                // movement now carries the float the Q read
                rename[qm.Output[0]] = qm.Input[0];
                rename[dq.Output[0]] = x;
                dropped.Add(dq);
            }
            else continue;
            for (int i = 1; i < dq.Input.Count; i++) if (dq.Input[i].Length > 0) _qdqPlumbing.Add(dq.Input[i]);
        }
        if (dropped.Count == 0) return nodes;
        // a QuantizeLinear nothing reads any more goes too
        var read = nodes.Where(n => !dropped.Contains(n)).SelectMany(n => n.Input).Select(Resolve).ToHashSet(StringComparer.Ordinal);
        foreach (var ql in nodes)
            if (ql.OpType == "QuantizeLinear" && ql.Output.All(o => o.Length == 0 || (!read.Contains(o) && !graphOutputs.Contains(o))))
            {
                dropped.Add(ql);
                for (int i = 1; i < ql.Input.Count; i++) if (ql.Input[i].Length > 0) _qdqPlumbing.Add(ql.Input[i]);
            }
        var kept = new List<Proto.OnnxNode>(nodes.Count - dropped.Count);
        foreach (var n in nodes)
        {
            if (dropped.Contains(n)) continue;
            var c = n.Clone();
            for (int i = 0; i < c.Input.Count; i++) c.Input[i] = Resolve(c.Input[i]); // through chains (a pair after a pair)
            kept.Add(c);
        }
        // a scale or zero point a kept node still reads (not only quantisation's) is not plumbing
        foreach (var v in kept.SelectMany(n => n.OpType is "QuantizeLinear" or "DequantizeLinear" ? n.Input.Take(1) : n.Input)) _qdqPlumbing.Remove(v);
        return kept;
    }

    /// <summary>Operators that only move data: an 8-bit tensor goes through them with its scale and zero point unchanged.</summary>
    private static bool MovesData(Proto.OnnxNode n) => n.OpType is "Reshape" or "Transpose" or "Squeeze" or "Unsqueeze" or "Flatten" && n.Domain is "" or "ai.onnx";

    /// <summary>
    /// The QuantizeLinear that <paramref name="value"/> comes from through data movement only (at least one step), or null.
    /// Each value's answer is kept in <paramref name="memo"/>, so a file of long data-movement chains read at every step
    /// costs linear time.
    /// </summary>
    private static Proto.OnnxNode? QuantizedThroughDataMovement(string value, Dictionary<string, Proto.OnnxNode> producer, Dictionary<string, Proto.OnnxNode?> memo)
    {
        var path = new List<string>();
        Proto.OnnxNode? found = null;
        for (string v = value; ;)
        {
            if (memo.TryGetValue(v, out found)) break;
            var p = producer.GetValueOrDefault(v);
            if (p == null || !MovesData(p) || p.Input.Count == 0 || path.Count > producer.Count)
            {
                found = null;
                break;
            }
            path.Add(v);
            var source = producer.GetValueOrDefault(p.Input[0]);
            if (source is { OpType: "QuantizeLinear", Input.Count: >= 2 } q && q.Output.Count == 1) { found = q; break; }
            v = p.Input[0];
        }
        foreach (var v in path) memo[v] = found;
        return path.Count > 0 || memo.ContainsKey(value) ? found : null;
    }

    /// <summary>
    /// ONNX Runtime's QOperator form (<c>quantize_static</c> with <c>quant_format=QOperator</c>) written as QDQ: each
    /// QLinearMatMul, and com.microsoft QLinearAdd, QLinearMul and QLinearSoftmax, becomes a DequantizeLinear of each 8-bit
    /// input (with its scale and zero point), the float operator, and a QuantizeLinear of the result with the output's
    /// scale and zero point — which the QDQ folding then reads like any QDQ file.
    /// </summary>
    private static IList<Proto.OnnxNode> Lowered(IList<Proto.OnnxNode> nodes)
    {
        if (!nodes.Any(n => n.OpType is "QLinearMatMul" or "QLinearAdd" or "QLinearMul" or "QLinearSoftmax")) return nodes;
        var result = new List<Proto.OnnxNode>(nodes.Count * 2);
        foreach (var n in nodes)
        {
            bool matMul = n.OpType == "QLinearMatMul" && n.Domain is "" or "ai.onnx" && n.Input.Count == 8;
            bool binary = n.OpType is "QLinearAdd" or "QLinearMul" && n.Domain == "com.microsoft" && n.Input.Count is 7 or 8;
            bool softmax = n.OpType == "QLinearSoftmax" && n.Domain == "com.microsoft" && n.Input.Count is 4 or 5;
            if ((!matMul && !binary && !softmax) || n.Output.Count != 1 || n.Output[0].Length == 0) { result.Add(n); continue; }
            string y = n.Output[0], stem = y + "/lowered";
            Proto.OnnxNode Make(string op, string output, params string[] inputs)
            {
                var m = new Proto.OnnxNode { OpType = op, Name = output };
                m.Input.AddRange(inputs);
                m.Output.Add(output);
                return m;
            }
            string Dq(int at, string name)
            {
                // DequantizeLinear's default axis (1) is what a product's per-column b_scale means for B [K, N]
                result.Add(Make("DequantizeLinear", name, n.Input[at], n.Input[at + 1], n.Input[at + 2]));
                return name;
            }
            string f;
            if (softmax)
            {
                var sm = Make("Softmax", stem + "_y", Dq(0, stem + "_x"));
                sm.Attribute.AddRange(n.Attribute.Where(a => a.Name == "axis").Select(a => a.Clone()));
                result.Add(sm);
                f = stem + "_y";
                result.Add(Make("QuantizeLinear", y, f, n.Input[3], n.Input.Count > 4 ? n.Input[4] : ""));
                continue;
            }
            string a = Dq(0, stem + "_a"), b = Dq(3, stem + "_b");
            result.Add(Make(matMul ? "MatMul" : n.OpType == "QLinearAdd" ? "Add" : "Mul", f = stem + "_y", a, b));
            result.Add(Make("QuantizeLinear", y, f, n.Input[6], n.Input.Count > 7 ? n.Input[7] : ""));
        }
        return result;
    }

    /// <summary>True when a QuantizeLinear and the DequantizeLinear after it use the same scale, zero point, axis and block size.</summary>
    private bool SameQuantisation(Proto.OnnxNode ql, Proto.OnnxNode dq)
    {
        static long? Int(Proto.OnnxNode n, string a) => n.Attribute.FirstOrDefault(x => x.Name == a) is { HasI: true } x ? x.I : null;
        if ((Int(ql, "axis") ?? 1) != (Int(dq, "axis") ?? 1) || (Int(ql, "block_size") ?? 0) != (Int(dq, "block_size") ?? 0)) return false;
        for (int i = 1; i < 3; i++)
        {
            string a = i < ql.Input.Count ? ql.Input[i] : "", b = i < dq.Input.Count ? dq.Input[i] : "";
            if (a == b) continue;
            if (a.Length == 0 || b.Length == 0 || !_values.TryGetValue(a, out var ta) || !_values.TryGetValue(b, out var tb) || ta.DataType != tb.DataType) return false;
            // equal values under different names (a quantiser that writes each node's own copy); small ones only, so that
            // no file can make the loader compare big tensors pair after pair
            const int small = 4096;
            if (i == 1 ? FloatValues(a, small) is not { } fa || FloatValues(b, small) is not { } fb || !fa.AsSpan().SequenceEqual(fb)
                       : Codes(ta, small) is not { } ca || Codes(tb, small) is not { } cb || !ca.AsSpan().SequenceEqual(cb)) return false;
        }
        return true;
    }

    /// <summary>
    /// A DequantizeLinear's constant input dequantised as a float tensor named <paramref name="name"/> of its shape, or null
    /// when the node's scale and zero point do not fit it (per tensor: one value; per axis: one per index along <c>axis</c>;
    /// per block: the shape with <c>axis</c> cut into blocks of <c>block_size</c>).
    /// </summary>
    private OnnxTensor? DequantizedConstant(Proto.OnnxNode dq, OnnxTensor q, string name)
    {
        if (q.DataType is not (2 or 3 or 4 or 5 or 6 or 21 or 22) || !_values.TryGetValue(dq.Input[1], out var st)) return null;
        var dims = q.Dims.ToArray();
        long count = dims.Aggregate(1L, (a, b) => a * b);
        if (count < 1 || count > int.MaxValue || Codes(q, count) is not { } codes) return null;
        float[]? scale = FloatValues(dq.Input[1], count);
        string zName = dq.Input.Count >= 3 ? dq.Input[2] : "";
        int[]? zero = zName.Length == 0 ? [0] : _values.TryGetValue(zName, out var zt) && zt.DataType == q.DataType ? Codes(zt, count) : null;
        if (scale == null || zero == null || (zero.Length != 1 && zero.Length != scale.Length)) return null;
        long axis = dq.Attribute.FirstOrDefault(a => a.Name == "axis") is { HasI: true } ax ? ax.I : 1;
        long block = dq.Attribute.FirstOrDefault(a => a.Name == "block_size") is { HasI: true } bs ? bs.I : 0;
        int rank = dims.Length;
        if (axis < 0) axis += rank;
        // element i = (outer o, index j along the axis, inner r) → its scale's index
        long len = 1, inner = 1;
        bool perTensor = scale.Length == 1 && block == 0 && st.Dims.Aggregate(1L, (a, b) => a * b) == 1;
        if (!perTensor)
        {
            if (axis < 0 || axis >= rank || block < 0) return null;
            len = dims[axis];
            for (long d = axis + 1; d < rank; d++) inner *= dims[d];
            if (block == 0 && (st.Dims.Count != 1 || st.Dims[0] != len)) return null;
            if (block > 0)
            {
                if (st.Dims.Count != rank) return null;
                for (int d = 0; d < rank; d++)
                    if (st.Dims[d] != (d == axis ? (dims[d] + block - 1) / block : dims[d])) return null;
            }
        }
        long blocks = block > 0 ? (len + block - 1) / block : 0;
        var w = new float[count];
        for (long i = 0; i < count; i++)
        {
            long k = 0;
            if (!perTensor)
            {
                long j = i / inner % len;
                k = block == 0 ? j : (i / inner / len * blocks + j / block) * inner + i % inner;
            }
            w[i] = (float)((long)codes[i] - zero[zero.Length == 1 ? 0 : k]) * scale[k]; // as the operator computes it, in float
        }
        return FloatTensor(name, w, dims);
    }

    /// <summary>An integer constant's codes (4-, 8-, 16- or 32-bit; at most <paramref name="limit"/>), or null.</summary>
    private int[]? Codes(OnnxTensor t, long limit)
    {
        long n = t.Dims.Aggregate(1L, (a, b) => a * b);
        if (n < 1 || n > limit || t.DataType is not (2 or 3 or 4 or 5 or 6 or 21 or 22)) return null;
        bool hasRaw = HasRaw(t);
        if (!hasRaw && (t.DataType is 21 or 22 || t.Int32Data.Count != n)) return null;
        var raw = hasRaw ? Raw(t) : default;
        var v = new int[n];
        for (int i = 0; i < n; i++)
            v[i] = !hasRaw ? (t.DataType switch { 2 => (byte)t.Int32Data[i], 3 => (sbyte)t.Int32Data[i], 4 => (ushort)t.Int32Data[i], 5 => (short)t.Int32Data[i], _ => t.Int32Data[i] })
                : t.DataType switch
                {
                    2 => raw[i],
                    3 => (sbyte)raw[i],
                    4 => BinaryPrimitives.ReadUInt16LittleEndian(raw[(2 * i)..]),
                    5 => BinaryPrimitives.ReadInt16LittleEndian(raw[(2 * i)..]),
                    6 => BinaryPrimitives.ReadInt32LittleEndian(raw[(4 * i)..]),
                    21 => (raw[i / 2] >> (4 * (i % 2))) & 0xF,
                    _ => ((sbyte)(raw[i / 2] << (4 * (1 - i % 2)))) >> 4, // INT4: the half sign-extended
                };
        return v;
    }

    private static bool LooksLikeParameter(string name) => name.Contains('.') && !name.StartsWith("onnx::", StringComparison.Ordinal) && !name.All(c => char.IsDigit(c));

    /// <summary>Names every float weight; returns those that could not be named.</summary>
    private List<string> MapParameters()
    {
        var named = new HashSet<string>(_qdqPlumbing, StringComparer.Ordinal);
        foreach (var (name, t) in _values)
            if (IsFloat(t.DataType) && LooksLikeParameter(name) && _producer.GetValueOrDefault(name)?.OpType != "Constant" && !_qdqPlumbing.Contains(name))
            {
                _params[name] = (t, false, name, 0, 1);
                named.Add(name);
            }
        foreach (var n in Nodes)
        {
            // Gemm, and ONNX Runtime's FusedGemm (a Gemm with its activation; what its optimiser makes of a pooler's Gemm + Tanh)
            bool gemm = (n.OpType == "Gemm" || n.OpType == "FusedGemm" && n.Domain == "com.microsoft") && n.Inputs.Count >= 2
                && (n.IntAttribute("transA") ?? 0) == 0 && (n.FloatAttribute("alpha") ?? 1f) == 1f;
            // ONNX Runtime's FusedMatMul is a MatMul with transposes and a scale: a weight product when it only transposes B
            bool fusedMatMul = n.OpType == "FusedMatMul" && n.Domain == "com.microsoft" && n.Inputs.Count == 2
                && (n.IntAttribute("transA") ?? 0) == 0 && (n.FloatAttribute("alpha") ?? 1f) == 1f;
            if (!(n.OpType == "MatMul" && n.Inputs.Count == 2) && !gemm && !fusedMatMul) continue;
            var (w, throughTranspose) = WeightBehind(n.Inputs[1]);
            if (w == null) continue;
            // the product uses B as [in, out]; a PyTorch Linear weight is [out, in]. W is stored [out, in] when exactly one
            // of a Transpose node in front and Gemm's transB turns it around
            bool transB = (gemm || fusedMatMul) && (n.IntAttribute("transB") ?? 0) != 0;
            bool storedOutIn = throughTranspose ^ transB;
            string? name = LooksLikeParameter(w) ? w : BiasName(n, gemm);
            if (name == null) continue;
            _params[name] = (_values[w], !storedOutIn, w, 0, 1);
            if (name != w) _params.Remove(w);
            named.Add(w);
        }
        MapFusedNodes(named);
        MapQuantizedProducts(named);
        MapBlockQuantizedProducts(named);
        MapQuantizedTables(named);
        MapBnb4Products(named);
        return _values.Where(kv => IsFloat(kv.Value.DataType) && kv.Value.Dims.Count >= 2 && !named.Contains(kv.Key)).Select(kv => kv.Key).ToList();
    }

    /// <summary>
    /// ONNX Runtime's dynamically quantised products (its <c>quantize_dynamic</c>, e.g. the <c>model_qint8_*.onnx</c> files of
    /// Hugging Face repositories): <c>MatMulInteger(DynamicQuantizeLinear(x), Wq, x_zero, W_zero)</c> → <c>Cast</c> → <c>Mul</c>
    /// by <c>x_scale·W_scale</c> → <c>Add</c> of a named bias. The int8/uint8 weight is read dequantised — (q − zero point)·scale,
    /// per tensor or per output column — and named after the bias like a MatMul's weight. FastAttn then runs the layer in
    /// FP32 with those weights (the activations are not quantised, unlike ONNX Runtime's int8 execution).
    /// </summary>
    private void MapQuantizedProducts(HashSet<string> named)
    {
        foreach (var n in Nodes)
        {
            if (n.OpType != "MatMulInteger" || n.Inputs.Count < 2 || n.Outputs.Count == 0 || n.Outputs[0].Length == 0) continue;
            if (!_values.TryGetValue(n.Inputs[1], out var q) || q.DataType is not (2 or 3) || q.Dims.Count != 2 || q.Dims[0] < 1 || q.Dims[1] < 1) continue;
            int rows = (int)q.Dims[0], cols = (int)q.Dims[1];
            int[]? zero = n.Inputs.Count >= 4 && n.Inputs[3].Length > 0 ? IntValues(n.Inputs[3], q.DataType) : [0];
            if (zero == null || (zero.Length != 1 && zero.Length != cols)) continue;
            // MatMulInteger → Cast → Mul: the Mul's other factor is the weight's scale, or a Mul of it with the input's scale
            var cast = ConsumersOf(n.Outputs[0]).FirstOrDefault(c => c.OpType == "Cast" && c.Outputs.Count > 0);
            var mul = cast == null ? null : ConsumersOf(cast.Outputs[0]).FirstOrDefault(c => c.OpType == "Mul" && c.Inputs.Count == 2 && c.Outputs.Count > 0);
            if (mul == null) continue;
            string factor = mul.Inputs[0] == cast!.Outputs[0] ? mul.Inputs[1] : mul.Inputs[0];
            float[]? scale = FloatValues(factor)
                ?? (ProducerOf(factor) is { OpType: "Mul", Inputs.Count: 2 } sm ? sm.Inputs.Select(i => FloatValues(i)).FirstOrDefault(v => v != null) : null);
            if (scale == null || (scale.Length != 1 && scale.Length != cols)) continue;
            string? bias = ConsumersOf(mul.Outputs[0]).FirstOrDefault(c => c.OpType == "Add" && c.Inputs.Count == 2) is { } add
                ? (add.Inputs[0] == mul.Outputs[0] ? add.Inputs[1] : add.Inputs[0]) : null;
            if (bias == null || !bias.EndsWith(".bias", StringComparison.Ordinal) || !_values.ContainsKey(bias)) continue;
            if (Dequantized8(q, n.Inputs[1], rows, cols, scale, zero, perRow: false) is not { } t) continue;
            _params[bias[..^".bias".Length] + ".weight"] = (t, true, n.Inputs[1], 0, 1);
            named.Add(n.Inputs[1]);
            // the weight's scale (and a product of it with the input's) is quantisation plumbing, whatever it is named
            foreach (string plumbing in ProducerOf(factor) is { OpType: "Mul" } fm ? fm.Inputs.Append(factor) : [factor]) { _params.Remove(plumbing); named.Add(plumbing); }
        }
    }

    /// <summary>
    /// ONNX Runtime's block-quantised products (com.microsoft <c>MatMulNBits</c>: what its 4-bit weight quantiser writes, e.g.
    /// the <c>model_q4.onnx</c> files of Hugging Face repositories made for transformers.js): B is [N, blocks, block bytes] of
    /// <c>bits</c>-bit codes packed low bits first along K, one scale per (column, block) and an optional zero point per
    /// (column, block) — packed codes of the same width, or values of the scales' type; 2^(bits−1) when absent. Each
    /// weight is read dequantised, (code − zero point)·scale, already in PyTorch's [out, in] layout, and named after the
    /// node's bias input or the bias added after it, like a MatMul's weight. FastAttn then runs the layer with those weights.
    /// </summary>
    private void MapBlockQuantizedProducts(HashSet<string> named)
    {
        foreach (var n in Nodes)
        {
            if (n.OpType != "MatMulNBits" || n.Domain != "com.microsoft" || n.Inputs.Count < 3 || n.Outputs.Count == 0 || n.Outputs[0].Length == 0) continue;
            long k = n.IntAttribute("K") ?? 0, cols = n.IntAttribute("N") ?? 0, bits = n.IntAttribute("bits") ?? 4, block = n.IntAttribute("block_size") ?? 0;
            // a block of 16 to 2^16 codes (a power of two, as the schema asks); K and N of int range, K·N too
            if (k < 1 || cols < 1 || k > int.MaxValue || cols > int.MaxValue || k * cols > int.MaxValue
                || bits is not (2 or 4 or 8) || block < 16 || block > 1 << 16 || (block & (block - 1)) != 0) continue;
            int blocks = (int)((k + block - 1) / block), blobBytes = (int)(block * bits / 8);
            if (!_values.TryGetValue(n.Inputs[1], out var q) || q.DataType != 2 || q.Dims.Count != 3 || q.Dims[0] != cols || q.Dims[1] != blocks || q.Dims[2] != blobBytes) continue;
            float[]? scale = FloatValues(n.Inputs[2], 1L << 26);
            if (scale == null || scale.Length != cols * blocks) continue;
            // zero points: packed codes (uint8) or values of the scales' type, per (column, block)
            float[]? zeroValues = null;
            byte[]? zeroCodes = null;
            int zeroBytesPerColumn = (int)((blocks * bits + 7) / 8);
            if (n.Inputs.Count >= 4 && n.Inputs[3].Length > 0)
            {
                if (!_values.TryGetValue(n.Inputs[3], out var z)) continue;
                if (z.DataType == 2)
                {
                    long count = z.Dims.Aggregate(1L, (a, b) => a * b);
                    if (count != cols * zeroBytesPerColumn) continue;
                    zeroCodes = Raw(z).ToArray();
                    if (zeroCodes.Length != count) continue;
                }
                else if ((zeroValues = FloatValues(n.Inputs[3], 1L << 26)) == null || zeroValues.Length != cols * blocks) continue;
            }
            if (n.Inputs.Count >= 5 && n.Inputs[4].Length > 0) continue; // g_idx (a column order of its own): not read
            // the name: the node's own bias input (sixth), else the Add after it
            string? bias = n.Inputs.Count >= 6 && n.Inputs[5].Length > 0 ? n.Inputs[5] : null;
            string? name = bias != null
                ? (bias.EndsWith(".bias", StringComparison.Ordinal) && _values.ContainsKey(bias) ? bias[..^".bias".Length] + ".weight" : null)
                : BiasName(n, gemm: false);
            if (name == null) continue;
            var codes = Raw(q);
            if (codes.Length != cols * blocks * blobBytes) continue;
            int mask = (1 << (int)bits) - 1, perByte = 8 / (int)bits;
            float defaultZero = 1 << (int)(bits - 1);
            var w = new float[cols * k];
            for (int c = 0; c < cols; c++)
                for (int b = 0; b < blocks; b++)
                {
                    int cb = c * blocks + b;
                    float zero = zeroValues != null ? zeroValues[cb]
                        : zeroCodes != null ? (zeroCodes[c * zeroBytesPerColumn + b / perByte] >> (int)(b % perByte * bits)) & mask
                        : defaultZero;
                    float s = scale[cb];
                    var blob = codes.Slice(cb * blobBytes, blobBytes);
                    for (int j = 0, kk = b * (int)block; j < block && kk < k; j++, kk++)
                        w[c * k + kk] = (((blob[j / perByte] >> (j % perByte * (int)bits)) & mask) - zero) * s;
                }
            _params[name] = (FloatTensor(n.Inputs[1], w, cols, k), false, n.Inputs[1], 0, 1);
            named.Add(n.Inputs[1]);
            // the scales and zero points are quantisation plumbing, whatever they are named
            foreach (string plumbing in n.Inputs.Skip(2).Take(2).Where(i => i.Length > 0)) { _params.Remove(plumbing); named.Add(plumbing); }
        }
    }

    /// <summary>The 16 values of bitsandbytes' 4-bit codes: FP4 (quant_type 0) and NormalFloat4 (quant_type 1), as ONNX Runtime's MatMulBnb4 reads them.</summary>
    private static readonly float[][] Bnb4Values =
    [
        [0f, 5.208333333e-03f, 0.66666667f, 1f, 0.33333333f, 0.5f, 0.16666667f, 0.25f,
         -0f, -5.208333333e-03f, -0.66666667f, -1f, -0.33333333f, -0.5f, -0.16666667f, -0.25f],
        [-1f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f, -0.18477343022823334f,
         -0.09105003625154495f, 0f, 0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
         0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1f],
    ];

    /// <summary>
    /// bitsandbytes-style 4-bit products (com.microsoft <c>MatMulBnb4</c>, the <c>model_bnb4.onnx</c> files of repositories made
    /// for transformers.js): B holds N·K codes two per byte, the first in the high half, in blocks of block_size along the
    /// flattened weight, each block scaled by its absmax; a code stands for one of 16 FP4 or NF4 values. The weight is
    /// [N, K] (transB, the default) or [K, N], read dequantised and named like a MatMul's weight.
    /// </summary>
    private void MapBnb4Products(HashSet<string> named)
    {
        foreach (var n in Nodes)
        {
            if (n.OpType != "MatMulBnb4" || n.Domain != "com.microsoft" || n.Inputs.Count < 3 || n.Outputs.Count == 0 || n.Outputs[0].Length == 0) continue;
            long k = n.IntAttribute("K") ?? 0, cols = n.IntAttribute("N") ?? 0, block = n.IntAttribute("block_size") ?? 0, type = n.IntAttribute("quant_type") ?? -1;
            bool transB = (n.IntAttribute("transB") ?? 1) != 0;
            if (k < 1 || cols < 1 || k > int.MaxValue || cols > int.MaxValue || k * cols > int.MaxValue
                || block < 16 || block > 1 << 16 || (block & (block - 1)) != 0 || type is not (0 or 1)) continue;
            long count = k * cols, blocks = (count + block - 1) / block;
            if (!_values.TryGetValue(n.Inputs[1], out var q) || q.DataType != 2 || q.Dims.Aggregate(1L, (a, b) => a * b) != (count + 1) / 2) continue;
            float[]? absMax = FloatValues(n.Inputs[2], 1L << 26);
            if (absMax == null || absMax.Length != blocks) continue;
            string? name = BiasName(n, gemm: false);
            if (name == null) continue;
            var codes = Raw(q);
            if (codes.Length != (count + 1) / 2) continue;
            var values = Bnb4Values[type];
            var w = new float[count];
            for (int i = 0; i < count; i++)
                w[i] = values[(codes[i / 2] >> (i % 2 == 0 ? 4 : 0)) & 0xF] * absMax[i / block];
            _params[name] = (FloatTensor(n.Inputs[1], w, transB ? cols : k, transB ? k : cols), !transB, n.Inputs[1], 0, 1);
            named.Add(n.Inputs[1]);
            _params.Remove(n.Inputs[2]);
            named.Add(n.Inputs[2]);
        }
    }

    /// <summary>
    /// Embedding tables quantised the way ONNX Runtime's <c>quantize_dynamic</c> quantises a Gather's data (Gather is among
    /// the operators it quantises by default): the table is an int8/uint8 initializer named <c>X_quantized</c>, the Gather
    /// picks its rows, and a <c>DequantizeLinear</c> with the table's scale and zero point (per tensor, or per row along
    /// axis 0) turns them back into floats. The table is read dequantised, (q − zero point)·scale, under the name X.
    /// </summary>
    private void MapQuantizedTables(HashSet<string> named)
    {
        const string suffix = "_quantized";
        foreach (var dq in Nodes)
        {
            if (dq.OpType != "DequantizeLinear" || dq.Inputs.Count < 2 || ProducerOf(dq.Inputs[0]) is not { OpType: "Gather", Inputs.Count: 2 } gather) continue;
            string table = gather.Inputs[0];
            if ((gather.IntAttribute("axis") ?? 0) != 0 || !table.EndsWith(suffix, StringComparison.Ordinal)) continue;
            string name = table[..^suffix.Length];
            if (!LooksLikeParameter(name) || _params.ContainsKey(name)) continue;
            if (!_values.TryGetValue(table, out var q) || q.DataType is not (2 or 3) || q.Dims.Count != 2 || q.Dims[0] < 1 || q.Dims[1] < 1) continue;
            int rows = (int)q.Dims[0], cols = (int)q.Dims[1];
            float[]? scale = FloatValues(dq.Inputs[1], 1L << 26);
            int[]? zero = dq.Inputs.Count >= 3 && dq.Inputs[2].Length > 0 ? IntValues(dq.Inputs[2], q.DataType, 1L << 26) : [0];
            long axis = dq.IntAttribute("axis") ?? 1;
            bool perRow = scale is { Length: > 1 };
            if (scale == null || zero == null || (perRow && (scale.Length != rows || axis != 0)) || (zero.Length != 1 && zero.Length != scale.Length)) continue;
            if (Dequantized8(q, table, rows, cols, scale, zero, perRow: true) is not { } t) continue;
            _params[name] = (t, false, table, 0, 1);
            named.Add(table);
            // its scale (X_scale) is quantisation plumbing, not a parameter of the model
            _params.Remove(dq.Inputs[1]);
            named.Add(dq.Inputs[1]);
        }
    }

    /// <summary>A float constant's values (at most 2²⁰), or null.</summary>
    private float[]? FloatValues(string name, long limit = 1 << 20)
    {
        if (!_values.TryGetValue(name, out var t) || !IsFloat(t.DataType)) return null;
        long n = t.Dims.Aggregate(1L, (a, b) => a * b);
        if (n < 1 || n > limit) return null;
        var v = new float[n];
        Read(t, false, v);
        return v;
    }

    /// <summary>An int8/uint8 constant's values of type <paramref name="dataType"/> (at most 2²⁰), or null.</summary>
    private int[]? IntValues(string name, int dataType, long limit = 1 << 20) =>
        _values.TryGetValue(name, out var t) && t.DataType == dataType ? Codes(t, limit) : null;

    /// <summary>
    /// The weights inside ONNX Runtime's fused transformer nodes (what its Python optimiser, and Hugging Face Optimum's O2–O4
    /// exports, write): com.microsoft <c>Attention</c> holds the query, key and value projections as one [in, 3·out] weight
    /// and one bias — split into <c>P.encoder.layer.N.attention.self.{query,key,value}</c>, N the node's place among the
    /// Attention nodes; <c>EmbedLayerNormalization</c> holds the embedding tables and their LayerNorm — given BERT's names
    /// when their initializers carry none. P is the prefix the other parameters use (<c>bert.</c> or none).
    /// </summary>
    private void MapFusedNodes(HashSet<string> named)
    {
        // Attention, or QAttention (the same node with an int8/uint8 weight, from quantising an optimised graph), in graph order
        var attention = Nodes.Where(n => n.OpType is "Attention" or "QAttention" && n.Domain == "com.microsoft").ToList();
        // EmbedLayerNormalization, or QEmbedLayerNormalization (its tables, gamma and beta as uint8 codes with a scale and a
        // zero point each, inputs 8–12 and 13–17: what quantize_dynamic makes of it)
        var embed = Nodes.FirstOrDefault(n => n.OpType is "EmbedLayerNormalization" or "QEmbedLayerNormalization" && n.Domain == "com.microsoft");
        if (attention.Count == 0 && embed == null) return;
        string prefix = _params.Keys.Select(k => k.IndexOf("encoder.layer.", StringComparison.Ordinal) is int i and >= 0 ? k[..i]
            : k.IndexOf("embeddings.", StringComparison.Ordinal) is int j and >= 0 ? k[..j] : null).FirstOrDefault(k => k != null) ?? "";
        for (int layer = 0; layer < attention.Count; layer++)
        {
            var n = attention[layer];
            if (n.Inputs.Count < 3 || (n.IntAttribute("unidirectional") ?? 0) != 0 || n.IntsAttribute("qkv_hidden_sizes") is { } sizes && sizes.Distinct().Count() > 1) continue;
            if (!_values.TryGetValue(n.Inputs[1], out var w) || w.Dims.Count != 2 || w.Dims[0] < 1 || w.Dims[1] < 3 || w.Dims[1] % 3 != 0) continue;
            if (n.OpType == "QAttention" && (w = DequantizedQAttentionWeight(n, w)!) == null) continue;
            if (!IsFloat(w.DataType)) continue;
            if (!_values.TryGetValue(n.Inputs[2], out var b) || !IsFloat(b.DataType) || b.Dims.Count != 1 || b.Dims[0] != w.Dims[1]) continue;
            string[] parts = ["query", "key", "value"];
            for (int k = 0; k < 3; k++)
            {
                string at = $"{prefix}encoder.layer.{layer}.attention.self.{parts[k]}.";
                _params[at + "weight"] = (w, true, n.Inputs[1], k, 3);
                _params[at + "bias"] = (b, false, n.Inputs[2], k, 3);
            }
            named.Add(n.Inputs[1]);
        }
        if (embed != null)
        {
            string[] names = ["", "", "word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias"];
            for (int k = 2; k < Math.Min(embed.Inputs.Count, names.Length); k++)
            {
                string input = embed.Inputs[k], name = prefix + "embeddings." + names[k];
                if (input.Length == 0 || _params.ContainsKey(name) || !_values.TryGetValue(input, out var t)) continue;
                if (embed.OpType == "QEmbedLayerNormalization")
                {
                    if (embed.Inputs.Count <= k + 11 || DequantizedPerTensor(t, input, embed.Inputs[k + 6], embed.Inputs[k + 11]) is not { } d) continue;
                    t = d;
                    foreach (string plumbing in new[] { embed.Inputs[k + 6], embed.Inputs[k + 11] }) { _params.Remove(plumbing); named.Add(plumbing); }
                }
                if (!IsFloat(t.DataType)) continue;
                _params[name] = (t, false, input, 0, 1);
                named.Add(input);
            }
        }
    }

    /// <summary>
    /// A QAttention node's [in, 3·out] weight dequantised: (q − weight_zero_point)·weight_scale (its fifth and eighth
    /// inputs; per tensor or per column), or null when they are not readable constants. Its scale and zero point are
    /// quantisation plumbing, never parameters.
    /// </summary>
    private OnnxTensor? DequantizedQAttentionWeight(OnnxNode n, OnnxTensor q)
    {
        if (q.DataType is not (2 or 3) || n.Inputs.Count < 5) return null;
        int rows = (int)q.Dims[0], cols = (int)q.Dims[1];
        float[]? scale = FloatValues(n.Inputs[4], 1L << 26);
        int[]? zero = n.Inputs.Count >= 8 && n.Inputs[7].Length > 0 ? IntValues(n.Inputs[7], q.DataType, 1L << 26) : [0];
        if (scale == null || zero == null || (scale.Length != 1 && scale.Length != cols) || (zero.Length != 1 && zero.Length != cols)) return null;
        if (Dequantized8(q, n.Inputs[1], rows, cols, scale, zero, perRow: false) is not { } t) return null;
        foreach (string plumbing in new[] { n.Inputs[4], n.Inputs.Count >= 8 ? n.Inputs[7] : "" }.Where(i => i.Length > 0)) _params.Remove(plumbing);
        return t;
    }

    /// <summary>
    /// An int8/uint8 constant dequantised with one scale and one zero point (<paramref name="zeroPoint"/> may be empty: 0), as a
    /// float tensor of its shape named <paramref name="name"/>; null when they do not fit.
    /// </summary>
    private OnnxTensor? DequantizedPerTensor(OnnxTensor q, string name, string scale, string zeroPoint)
    {
        if (q.DataType is not (2 or 3) || scale.Length == 0 || FloatValues(scale) is not [_]) return null;
        var node = new Proto.OnnxNode();
        node.Input.Add(name);
        node.Input.Add(scale);
        if (zeroPoint.Length > 0) node.Input.Add(zeroPoint);
        return DequantizedConstant(node, q, name);
    }

    /// <summary>
    /// An int8/uint8 [rows, cols] constant dequantised, (q − zero point)·scale, as a float tensor named <paramref name="name"/>:
    /// scale and zero point hold one value, or one per column (or per row when <paramref name="perRow"/>). Null when the
    /// constant does not hold rows·cols codes.
    /// </summary>
    private OnnxTensor? Dequantized8(OnnxTensor q, string name, int rows, int cols, float[] scale, int[] zero, bool perRow)
    {
        bool hasRaw = HasRaw(q);
        var raw = hasRaw ? Raw(q) : default;
        if ((hasRaw ? raw.Length : q.Int32Data.Count) != (long)rows * cols) return null;
        var w = new float[rows * cols];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
            {
                int i = r * cols + c, k = perRow ? r : c;
                int v = hasRaw ? (q.DataType == 3 ? (sbyte)raw[i] : raw[i]) : q.Int32Data[i];
                w[i] = (v - zero[zero.Length == 1 ? 0 : k]) * scale[scale.Length == 1 ? 0 : k];
            }
        return FloatTensor(name, w, rows, cols);
    }

    /// <summary>A float tensor of shape <paramref name="dims"/> holding <paramref name="data"/> (a weight read dequantised).</summary>
    private static OnnxTensor FloatTensor(string name, float[] data, params long[] dims)
    {
        var t = new OnnxTensor { Name = name, DataType = 1, RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan())) };
        t.Dims.AddRange(dims);
        return t;
    }

    /// <summary>
    /// "X.weight" when the product's bias is a constant named "X.bias": Gemm's third input, or the node after a MatMul that
    /// adds it — an Add, or one of ONNX Runtime's fused nodes: BiasGelu and FastGelu (bias second), SkipLayerNormalization
    /// (bias fifth).
    /// </summary>
    private string? BiasName(OnnxNode n, bool gemm)
    {
        string? BiasOf(OnnxNode c)
        {
            string y = n.Outputs[0];
            if (c.OpType == "Add" && c.Inputs.Count == 2) return c.Inputs[0] == y ? c.Inputs[1] : c.Inputs[0];
            if (c.Domain != "com.microsoft") return null;
            if (c.OpType is "BiasGelu" or "FastGelu" && c.Inputs.Count >= 2 && c.Inputs[0] == y) return c.Inputs[1];
            if (c.OpType == "SkipLayerNormalization" && c.Inputs.Count >= 5 && (c.Inputs[0] == y || c.Inputs[1] == y)) return c.Inputs[4];
            return null;
        }
        string? bias = gemm
            ? (n.Inputs.Count >= 3 ? n.Inputs[2] : null)
            : n.Outputs.Count == 0 ? null
            : ConsumersOf(n.Outputs[0]).Select(BiasOf).FirstOrDefault(b => b != null);
        if (bias == null || !bias.EndsWith(".bias", StringComparison.Ordinal) || !_values.ContainsKey(bias)) return null;
        return bias[..^".bias".Length] + ".weight";
    }

    /// <summary>The constant behind a MatMul/Gemm input, looking through one Transpose node; null when it is not constant.</summary>
    private (string? Name, bool Transposed) WeightBehind(string input)
    {
        if (_values.TryGetValue(input, out var t) && IsFloat(t.DataType) && t.Dims.Count == 2) return (input, false);
        var p = ProducerOf(input);
        if (p?.OpType == "Transpose" && p.Inputs.Count == 1 && _values.TryGetValue(p.Inputs[0], out var u) && IsFloat(u.DataType) && u.Dims.Count == 2
            && (p.IntsAttribute("perm") is null or [1, 0]))
            return (p.Inputs[0], true);
        return (null, false);
    }

    /// <summary>The parameter names (PyTorch layout), each once.</summary>
    public IEnumerable<string> TensorNames => _params.Keys;

    /// <inheritdoc/>
    public bool TryGetShape(string name, out long[] shape)
    {
        if (!_params.TryGetValue(name, out var p)) { shape = []; return false; }
        shape = [.. p.Tensor.Dims];
        if (shape.Length > 0) shape[^1] /= p.Parts;     // a scalar (a parameter-like name on a 0-d constant) has no last axis
        if (p.Transpose && shape.Length == 2) shape = [shape[1], shape[0]];
        return true;
    }

    /// <summary>Where parameter <paramref name="name"/> came from: the initializer's own name, and whether it was transposed.</summary>
    public (string Initializer, bool Transposed)? Origin(string name) => _params.TryGetValue(name, out var p) ? (p.Source, p.Transpose) : null;

    /// <inheritdoc/>
    /// <exception cref="KeyNotFoundException">No such parameter.</exception>
    /// <exception cref="ArgumentException">destination does not have the tensor's element count.</exception>
    public void ReadFloat32(string name, Span<float> destination)
    {
        if (!_params.TryGetValue(name, out var p)) throw new KeyNotFoundException($"ONNX file '{Name}' has no parameter '{name}'.");
        long n = p.Tensor.Dims.Aggregate(1L, (a, b) => a * b) / p.Parts;
        if (destination.Length != n) throw new ArgumentException($"'destination' has {destination.Length} elements; parameter '{name}' has {n}.", nameof(destination));
        if (p.Parts == 1) { Read(p.Tensor, p.Transpose, destination); return; }
        // one piece of the last axis: read the whole tensor, keep columns [Part·c, (Part+1)·c) of each row, then transpose
        var whole = new float[n * p.Parts];
        Read(p.Tensor, false, whole);
        int cols = (int)p.Tensor.Dims[^1], c = cols / p.Parts, rows = whole.Length / cols;
        var piece = p.Transpose ? new float[n] : null;
        Span<float> into = piece ?? destination;
        for (int r = 0; r < rows; r++) whole.AsSpan(r * cols + p.Part * c, c).CopyTo(into.Slice(r * c, c));
        if (piece != null)
            for (int r = 0; r < rows; r++)
                for (int k = 0; k < c; k++) destination[k * rows + r] = piece[r * c + k];
    }

    private void Read(OnnxTensor t, bool transpose, Span<float> dst)
    {
        int n = dst.Length;
        Span<float> flat = transpose ? new float[n] : dst;
        if (t.DataType == 1 && HasRaw(t))
        {
            // FP32 bytes as they are (little-endian): straight from the external file, or one copy from raw_data
            var bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(flat);
            if (_external.ContainsKey(t)) ReadExternal(t, bytes);
            else t.RawData.Span.CopyTo(bytes);
            if (!BitConverter.IsLittleEndian)
            {
                var words = System.Runtime.InteropServices.MemoryMarshal.Cast<float, int>(flat);
                BinaryPrimitives.ReverseEndianness(words, words);
            }
        }
        else
        {
            bool hasRaw = HasRaw(t);
            var raw = hasRaw ? Raw(t) : default;
            switch (t.DataType)
            {
                case 1:
                    for (int i = 0; i < n; i++) flat[i] = t.FloatData[i];
                    break;
                case 10:
                    for (int i = 0; i < n; i++) flat[i] = (float)BitConverter.UInt16BitsToHalf(hasRaw ? BinaryPrimitives.ReadUInt16LittleEndian(raw[(2 * i)..]) : (ushort)t.Int32Data[i]);
                    break;
                case 16:
                    for (int i = 0; i < n; i++) flat[i] = BitConverter.Int32BitsToSingle((hasRaw ? BinaryPrimitives.ReadUInt16LittleEndian(raw[(2 * i)..]) : (ushort)t.Int32Data[i]) << 16);
                    break;
                case 11:
                    for (int i = 0; i < n; i++) flat[i] = (float)(hasRaw ? BinaryPrimitives.ReadDoubleLittleEndian(raw[(8 * i)..]) : t.DoubleData[i]);
                    break;
                default:
                    throw new InvalidDataException($"tensor '{t.Name}' has data type {t.DataType}, not a float type.");
            }
        }
        if (!transpose) return;
        int rows = (int)t.Dims[0], cols = (int)t.Dims[1];
        // in 32 × 32 blocks, so that neither side strides through memory a row at a time
        const int B = 32;
        for (int r0 = 0; r0 < rows; r0 += B)
            for (int c0 = 0; c0 < cols; c0 += B)
            {
                int r1 = Math.Min(r0 + B, rows), c1 = Math.Min(c0 + B, cols);
                for (int c = c0; c < c1; c++)
                    for (int r = r0; r < r1; r++) dst[c * rows + r] = flat[r * cols + c];
            }
    }
}
