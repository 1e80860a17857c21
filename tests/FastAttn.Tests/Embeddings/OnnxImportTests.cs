using FastAttn.Embeddings;
using FastAttn.Onnx;
using FastAttn.Onnx.Proto;
using FastAttn.Tests.IO;
using Google.Protobuf;
using static FastAttn.Tests.Embeddings.BertModelTests;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// ONNX weight import: a tiny BERT written as torch.onnx exports one (numbered MatMul weights stored [in, out] with named
/// biases, a Gemm pooler with transB, reshape constants for the heads, LayerNorm as ReduceMean/Pow/Sqrt with ε, Erf for
/// GELU) — and variants (a weight in a Constant node, a weight behind a Transpose node, no reshape but a scale) — loaded
/// by <see cref="BertModel"/> with no config.json and checked against the double reference on the same weights.
/// </summary>
public class OnnxImportTests
{
    private sealed class GraphBuilder
    {
        public readonly OnnxGraph Graph = new();
        private int _n;
        public string Fresh(string hint) => $"{_n++}_{hint}";

        public static OnnxTensor Tensor(string name, float[] data, params long[] dims)
        {
            var t = new OnnxTensor { Name = name, DataType = 1, RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan())) };
            t.Dims.AddRange(dims);
            return t;
        }

        public string Init(string name, float[] data, params long[] dims) { Graph.Initializer.Add(Tensor(name, data, dims)); return name; }

        public string Ints(string name, params long[] values)
        {
            var t = new OnnxTensor { Name = name, DataType = 7, RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan())) };
            t.Dims.Add(values.Length);
            Graph.Initializer.Add(t);
            return name;
        }

        public string Node(string op, string[] inputs, params (string Name, long Value)[] attrs)
        {
            string o = Fresh(op);
            var n = new Onnx.Proto.OnnxNode { OpType = op, Name = $"{op}_{_n}" };
            n.Input.AddRange(inputs);
            n.Output.Add(o);
            foreach (var (name, v) in attrs) n.Attribute.Add(new OnnxAttribute { Name = name, I = v, Type = 2 });
            Graph.Node.Add(n);
            return o;
        }

        public string ConstantNode(float[] data, params long[] dims)
        {
            string o = Fresh("Constant");
            var n = new Onnx.Proto.OnnxNode { OpType = "Constant" };
            n.Output.Add(o);
            n.Attribute.Add(new OnnxAttribute { Name = "value", T = Tensor("", data, dims), Type = 4 });
            Graph.Node.Add(n);
            return o;
        }
    }

    private static float[] Transpose(float[] w, int rows, int cols)
    {
        var r = new float[w.Length];
        for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) r[j * rows + i] = w[i * cols + j];
        return r;
    }

    /// <summary>The tiny BERT as an export would write it; <paramref name="variant"/> changes how some weights are held.</summary>
    private static byte[] Export(Dictionary<string, (float[] Data, long[] Shape)> w, string variant)
    {
        var g = new GraphBuilder();
        foreach (var (name, (data, shape)) in w)
            if (name.StartsWith("embeddings.") || name.EndsWith(".bias") || name.Contains("LayerNorm")) g.Init(name, data, shape);
        g.Ints("embeddings.position_ids", Enumerable.Range(0, MaxPos).Select(i => (long)i).ToArray());
        string ids = "input_ids";
        g.Graph.Input.Add(new OnnxValueInfo { Name = ids });
        string x = g.Node("Gather", ["embeddings.word_embeddings.weight", ids]);
        string LayerNorm(string input, string prefix)
        {
            string mean = g.Node("ReduceMean", [input]);
            string centred = g.Node("Sub", [input, mean]);
            string sq = g.Node("Pow", [centred, g.ConstantNode([2f])]);
            string var = g.Node("ReduceMean", [sq]);
            string plus = g.Node("Add", [var, g.ConstantNode([Eps])]);
            string sd = g.Node("Sqrt", [plus]);
            string norm = g.Node("Div", [centred, sd]);
            return g.Node("Add", [g.Node("Mul", [norm, prefix + ".weight"]), prefix + ".bias"]);
        }
        string Linear(string input, string prefix, long outF, long inF, int layer)
        {
            var (data, _) = w[prefix + ".weight"];
            string weight;
            if (variant == "constant-node" && prefix.EndsWith("intermediate.dense")) weight = g.ConstantNode(Transpose(data, (int)outF, (int)inF), inF, outF);
            else if (variant == "transpose-node" && prefix.EndsWith("attention.self.key"))
                weight = g.Node("Transpose", [g.Init($"onnx::MatMul_{layer}", data, outF, inF)], ("perm", 0));
            else weight = g.Init(g.Fresh("w"), Transpose(data, (int)outF, (int)inF), inF, outF);
            string mm = g.Node("MatMul", [input, weight]);
            return g.Node("Add", [prefix + ".bias", mm]);      // bias first, as torch.onnx writes it
        }
        x = LayerNorm(x, "embeddings.LayerNorm");
        for (int l = 0; l < BertModelTests.Layers; l++)
        {
            string p = $"encoder.layer.{l}.";
            string q = Linear(x, p + "attention.self.query", H, H, l);
            string k = Linear(x, p + "attention.self.key", H, H, l);
            string v = Linear(x, p + "attention.self.value", H, H, l);
            if (variant != "scale-only")
                foreach (var t in new[] { q, k, v })
                    g.Node("Reshape", [t, g.Node("Concat", [g.Ints(g.Fresh("b"), 0), g.Ints(g.Fresh("s"), 0), g.Ints(g.Fresh("h"), Heads), g.Ints(g.Fresh("d"), H / Heads)])]);
            string scores = g.Node("MatMul", [q, k]);
            g.Node("Div", [scores, g.ConstantNode([MathF.Sqrt(H / Heads)])]);
            string att = Linear(v, p + "attention.output.dense", H, H, l);
            x = LayerNorm(g.Node("Add", [att, x]), p + "attention.output.LayerNorm");
            string inter = Linear(x, p + "intermediate.dense", Ff, H, l);
            g.Node("Erf", [inter]);
            string o = Linear(inter, p + "output.dense", H, Ff, l);
            x = LayerNorm(g.Node("Add", [o, x]), p + "output.LayerNorm");
        }
        // pooler: Gemm with the named [out, in] weight and transB = 1
        g.Init("pooler.dense.weight", w["pooler.dense.weight"].Data, H, H);
        string pooled = g.Node("Gemm", [x, "pooler.dense.weight", "pooler.dense.bias"], ("transB", 1));
        g.Graph.Output.Add(new OnnxValueInfo { Name = x });
        g.Graph.Output.Add(new OnnxValueInfo { Name = g.Node("Tanh", [pooled]) });
        var model = new OnnxModel { IrVersion = 7, ProducerName = "tests", Graph = g.Graph };
        model.OpsetImport.Add(new OnnxOpset { Domain = "", Version = 13 });
        return model.ToByteArray();
    }

    /// <summary>
    /// Opened from its path, a model's raw tensor bytes are read from the file at the offsets a wire scan found (not copied
    /// by the parser); parsed from memory they are copied. Both must list the same parameters with the same values.
    /// </summary>
    internal static void AssertOpenEqualsLoad(string path)
    {
        var opened = OnnxModelFile.Open(path);
        var loaded = OnnxModelFile.Load(File.ReadAllBytes(path));
        Assert.Equal(loaded.Unmatched, opened.Unmatched);
        AssertSameParameters(loaded, opened);
    }

    /// <summary><paramref name="actual"/> computes the hidden states of <paramref name="expected"/>, bit for bit, on one short sequence.</summary>
    private static void AssertSameHiddenStates(BertModel expected, BertModel actual)
    {
        using var session = new EmbeddingSession(actual, null);
        using var twinSession = new EmbeddingSession(expected, null);
        int[] ids = [2, 7, 11, 3, 40];
        float[] hs = new float[ids.Length * H], ths = new float[hs.Length];
        session.HiddenStates(ids, [ids.Length], hs);
        twinSession.HiddenStates(ids, [ids.Length], ths);
        Assert.Equal(ths, hs);
    }

    /// <summary><paramref name="actual"/> lists the parameters of <paramref name="expected"/>, each with its shape and values.</summary>
    private static void AssertSameParameters(OnnxModelFile expected, OnnxModelFile actual)
    {
        Assert.Equal(expected.TensorNames.Order(), actual.TensorNames.Order());
        foreach (var name in expected.TensorNames)
        {
            Assert.True(actual.TryGetShape(name, out var a));
            Assert.True(expected.TryGetShape(name, out var b));
            Assert.Equal(b, a);
            float[] x = new float[b.Aggregate(1L, (p, q) => p * q)], y = new float[x.Length];
            actual.ReadFloat32(name, x);
            expected.ReadFloat32(name, y);
            Assert.Equal(y, x);
        }
    }

    [Theory]
    [InlineData("plain")]
    [InlineData("constant-node")]
    [InlineData("transpose-node")]
    [InlineData("scale-only")]
    public void TinyBertExport_LoadsWithoutConfig_AndMatchesTheReference(string variant)
    {
        using var dir = new TempDir();
        var w = Checkpoint(seed: 3);
        string path = dir.File("model.onnx");
        File.WriteAllBytes(path, Export(w, variant));
        AssertOpenEqualsLoad(path);
        var onnx = OnnxModelFile.Open(path);
        Assert.Empty(onnx.Unmatched);
        Assert.True(onnx.TryGetShape("encoder.layer.1.intermediate.dense.weight", out var shape));
        Assert.Equal(new long[] { Ff, H }, shape);                                   // PyTorch layout after the transpose
        Assert.DoesNotContain("embeddings.position_ids", onnx.TensorNames);          // integer plumbing is not a parameter
        using var model = BertModel.Load(path);
        Assert.Equal(Heads, model.Config.NumAttentionHeads);
        Assert.Equal(Eps, model.Config.LayerNormEps);
        Assert.Contains(variant == "scale-only" ? "attention scale" : "reshape constants", model.Source);
        Assert.NotNull(model.Pooler);
        using var session = new EmbeddingSession(model, null);
        int[] ids = [2, 7, 11, 3, 40];
        var hs = new float[ids.Length * H];
        session.HiddenStates(ids, [ids.Length], hs);
        AssertClose(RefBert(w, "", ids), hs, variant);
    }

    /// <summary>
    /// A float16 export (what optimum's <c>--fp16</c> and onnxconverter-common's float16 conversion write, the
    /// <c>model_fp16.onnx</c> files): every float initializer and Constant stored as FLOAT16. The weights are read widened
    /// exactly; ε = 1e-12 is 0 in float16 (the file's own value, used as read). Checked against the double reference on
    /// the weights rounded to float16.
    /// </summary>
    [Fact]
    public void Float16Export_LoadsWithItsWeightsWidened()
    {
        using var dir = new TempDir();
        var w = Checkpoint(seed: 7).ToDictionary(kv => kv.Key, kv => (kv.Value.Data.Select(x => (float)(Half)x).ToArray(), kv.Value.Shape));
        var m = OnnxModel.Parser.ParseFrom(Export(w, "constant-node"));
        void ToHalf(OnnxTensor t)
        {
            if (t.DataType != 1) return;
            var f = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(t.RawData.Span).ToArray();
            var h = f.Select(x => BitConverter.HalfToUInt16Bits((Half)x)).ToArray();
            t.DataType = 10;
            t.RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(h.AsSpan()));
        }
        foreach (var t in m.Graph.Initializer) ToHalf(t);
        foreach (var n in m.Graph.Node) foreach (var a in n.Attribute) if (a.T != null) ToHalf(a.T);
        Assert.DoesNotContain(m.Graph.Initializer, t => t.DataType == 1);
        string path = dir.File("model_fp16.onnx");
        File.WriteAllBytes(path, m.ToByteArray());
        AssertOpenEqualsLoad(path);
        Assert.Empty(OnnxModelFile.Open(path).Unmatched);
        using var model = BertModel.Load(path);
        Assert.Equal(Heads, model.Config.NumAttentionHeads);
        Assert.Equal(0f, model.Config.LayerNormEps);                 // 1e-12 does not survive float16
        using var session = new EmbeddingSession(model, null);
        int[] ids = [2, 7, 11, 3, 40];
        var hs = new float[ids.Length * H];
        session.HiddenStates(ids, [ids.Length], hs);
        AssertClose(RefBert(w, "", ids), hs, "float16 export");
    }

    /// <summary>
    /// The QDQ format (ONNX Runtime's <c>quantize_static</c> default, and other quantisers emitting QuantizeLinear /
    /// DequantizeLinear): every float initializer X replaced by codes <c>X_quantized</c> + <c>X_scale</c> (+ <c>X_zero_point</c>)
    /// and a DequantizeLinear, and a QuantizeLinear → DequantizeLinear pair in front of every activation input of every
    /// MatMul, Add and Mul (which breaks every chain the loader follows). The test dequantises each code itself (scalar
    /// reference, float arithmetic as the operator's) into a twin file holding the float values under the original names and
    /// no pairs: the QDQ file must list the same parameters with the same values, none of its scales or zero points, and
    /// run bit for bit as the twin.
    /// </summary>
    [Theory]
    [InlineData("int8-per-axis")]     // symmetric int8, one scale per column of each 2-D weight (axis 1), per tensor for 1-D
    [InlineData("uint8-per-tensor")]  // asymmetric uint8 with a zero point, one scale per tensor
    [InlineData("int4-blocked")]      // opset 21: INT4 codes two to a byte, blocks of 4 along axis 0; 1-D as int16
    [InlineData("uint4-int32")]       // UINT4 per axis 0 with zero points; 1-D as int32 (how biases are quantised)
    public void QdqExport_ReadsItsWeightsDequantised_AndRunsAsItsFloatTwin(string scheme)
    {
        using var dir = new TempDir();
        var plain = Export(Checkpoint(seed: 9), "plain");
        var m = OnnxModel.Parser.ParseFrom(plain);
        var twin = OnnxModel.Parser.ParseFrom(plain);
        var twinInits = twin.Graph.Initializer.ToDictionary(t => t.Name);
        var rnd = new Random(17);
        var nodes = new List<Onnx.Proto.OnnxNode>();
        Onnx.Proto.OnnxNode Node(string op, string[] inputs, string output, params (string Name, long Value)[] attrs)
        {
            var n = new Onnx.Proto.OnnxNode { OpType = op, Name = output + "_node" };
            n.Input.AddRange(inputs);
            n.Output.Add(output);
            foreach (var (name, v) in attrs) n.Attribute.Add(new OnnxAttribute { Name = name, I = v, Type = 2 });
            return n;
        }
        OnnxTensor Codes(string name, int type, long[] dims, int[] codes)
        {
            byte[] raw = type switch
            {
                2 or 3 => codes.Select(c => unchecked((byte)c)).ToArray(),
                5 => System.Runtime.InteropServices.MemoryMarshal.AsBytes(codes.Select(c => (short)c).ToArray().AsSpan()).ToArray(),
                6 => System.Runtime.InteropServices.MemoryMarshal.AsBytes(codes.AsSpan()).ToArray(),
                _ => Enumerable.Range(0, (codes.Length + 1) / 2).Select(i => (byte)((codes[2 * i] & 0xF) | (2 * i + 1 < codes.Length ? (codes[2 * i + 1] & 0xF) << 4 : 0))).ToArray(),
            };
            var t = new OnnxTensor { Name = name, DataType = type, RawData = ByteString.CopyFrom(raw) };
            t.Dims.AddRange(dims);
            return t;
        }
        var rename = new Dictionary<string, string>();
        foreach (var t in m.Graph.Initializer.Where(t => t.DataType == 1 && t.Dims.Aggregate(1L, (a, b) => a * b) >= 2).ToList())
        {
            var f = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(t.RawData.Span).ToArray();
            long[] dims = [.. t.Dims];
            bool two = dims.Length == 2;
            // the scheme: code type, range, which scale each element uses, the scale tensor's shape, axis and block size
            var (type, lo, hi) = (scheme, two) switch
            {
                ("int8-per-axis", _) => (3, -127, 127),
                ("uint8-per-tensor", _) => (2, 0, 255),
                ("int4-blocked", true) => (22, -7, 7),
                ("int4-blocked", false) => (5, -32767, 32767),
                (_, true) => (21, 0, 15),
                _ => (6, -(1 << 24), 1 << 24),
            };
            long rows = two ? dims[0] : 1, cols = two ? dims[1] : f.Length;
            int axis = scheme switch { "int8-per-axis" => 1, _ => 0 }, block = scheme == "int4-blocked" && two ? 4 : 0;
            bool perTensor = !two || scheme == "uint8-per-tensor";
            Func<long, long> group = perTensor ? _ => 0 : block > 0 ? i => i / cols / block * cols + i % cols : axis == 1 ? i => i % cols : i => i / cols;
            long groups = perTensor ? 1 : block > 0 ? (rows + block - 1) / block * cols : axis == 1 ? cols : rows;
            long[] scaleDims = perTensor ? [] : block > 0 ? [(rows + block - 1) / block, cols] : [groups];
            var scale = new float[groups];
            var zero = new int[groups];
            var min = new float[groups];
            var max = new float[groups];
            for (long i = 0; i < f.Length; i++) { min[group(i)] = Math.Min(min[group(i)], f[i]); max[group(i)] = Math.Max(max[group(i)], f[i]); }
            for (long g = 0; g < groups; g++)
            {
                bool asymmetric = lo == 0;
                scale[g] = asymmetric ? Math.Max(max[g] - min[g], 1e-6f) / hi : Math.Max(Math.Max(-min[g], max[g]), 1e-6f) / hi;
                zero[g] = asymmetric ? Math.Clamp((int)MathF.Round(-min[g] / scale[g]), lo, hi) : 0;
            }
            var codes = f.Select((x, i) => Math.Clamp((int)MathF.Round(x / scale[group(i)]) + zero[group(i)], lo, hi)).ToArray();
            // the reference: (q − zero point)·scale in float, as DequantizeLinear computes it
            var deq = codes.Select((c, i) => (float)(c - zero[group(i)]) * scale[group(i)]).ToArray();
            twinInits[t.Name].RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(deq.AsSpan()));
            m.Graph.Initializer.Remove(t);
            m.Graph.Initializer.Add(Codes(t.Name + "_quantized", type, dims, codes));
            m.Graph.Initializer.Add(GraphBuilder.Tensor(t.Name + "_scale", scale, scaleDims));
            var inputs = new List<string> { t.Name + "_quantized", t.Name + "_scale" };
            if (lo == 0) { m.Graph.Initializer.Add(Codes(t.Name + "_zero_point", type, scaleDims, zero)); inputs.Add(t.Name + "_zero_point"); }
            var attrs = new List<(string, long)> { ("axis", axis) };
            if (block > 0) attrs.Add(("block_size", block));
            nodes.Add(Node("DequantizeLinear", [.. inputs], t.Name + "_DequantizeLinear_Output", [.. attrs]));
            rename[t.Name] = t.Name + "_DequantizeLinear_Output";
        }
        var constant = m.Graph.Initializer.Select(t => t.Name).Concat(m.Graph.Node.Where(n => n.OpType == "Constant").Select(n => n.Output[0])).ToHashSet();
        int pairs = 0;
        foreach (var n in m.Graph.Node)
        {
            for (int i = 0; i < n.Input.Count; i++)
            {
                if (rename.TryGetValue(n.Input[i], out var r)) { n.Input[i] = r; continue; }
                if (n.OpType is not ("MatMul" or "Add" or "Mul") || constant.Contains(n.Input[i])) continue;
                // an activation: quantised to uint8 and back with a scale and zero point of its own
                string a = n.Input[i], id = $"{a}_{pairs++}";
                m.Graph.Initializer.Add(GraphBuilder.Tensor(id + "_scale", [(float)(0.01 + rnd.NextDouble() * 0.05)]));
                m.Graph.Initializer.Add(Codes(id + "_zero_point", 2, [], [128]));
                nodes.Add(Node("QuantizeLinear", [a, id + "_scale", id + "_zero_point"], id + "_QuantizeLinear_Output"));
                nodes.Add(Node("DequantizeLinear", [id + "_QuantizeLinear_Output", id + "_scale", id + "_zero_point"], id + "_DequantizeLinear_Output"));
                n.Input[i] = id + "_DequantizeLinear_Output";
            }
            nodes.Add(n);
        }
        m.Graph.Node.Clear();
        m.Graph.Node.AddRange(nodes);
        if (scheme.Contains("int4")) m.OpsetImport[0].Version = 21;
        string qdqPath = dir.File("model_qdq.onnx"), twinPath = dir.File("twin.onnx");
        File.WriteAllBytes(qdqPath, m.ToByteArray());
        File.WriteAllBytes(twinPath, twin.ToByteArray());
        AssertOpenEqualsLoad(qdqPath);

        var q = OnnxModelFile.Open(qdqPath);
        var t2 = OnnxModelFile.Open(twinPath);
        Assert.Empty(q.Unmatched);
        Assert.DoesNotContain(q.Nodes, n => n.OpType is "QuantizeLinear" or "DequantizeLinear");
        AssertSameParameters(t2, q);                                              // no scale or zero point among them
        using var model = BertModel.Load(qdqPath);
        using var twinModel = BertModel.Load(twinPath);
        Assert.Equal(Heads, model.Config.NumAttentionHeads);
        Assert.Contains("reshape constants", model.Source);
        Assert.Equal(twinModel.Config.LayerNormEps, model.Config.LayerNormEps);
        Assert.Equal(twinModel.Config.HiddenAct, model.Config.HiddenAct);
        AssertSameHiddenStates(twinModel, model);
    }

    /// <summary>
    /// The QOperator form (<c>quantize_static</c> with <c>quant_format=QOperator</c>): each weight product a QLinearMatMul of
    /// the quantised activation and int8 codes, the bias added by a com.microsoft QLinearAdd of its uint8 codes, the query,
    /// key and value reshaped while still 8-bit, and a DequantizeLinear where float operators take over. Read by lowering
    /// each QLinear operator to DequantizeLinear → float operator → QuantizeLinear and folding as QDQ: the same parameters
    /// with the same values as the float twin (the test dequantises the codes itself), and the same hidden states.
    /// </summary>
    [Fact]
    public void QOperatorExport_ReadsItsWeightsDequantised_AndRunsAsItsFloatTwin()
    {
        using var dir = new TempDir();
        var plain = Export(Checkpoint(seed: 10), "plain");
        var m = OnnxModel.Parser.ParseFrom(plain);
        var twin = OnnxModel.Parser.ParseFrom(plain);
        var inits = m.Graph.Initializer.ToDictionary(t => t.Name);
        var twinInits = twin.Graph.Initializer.ToDictionary(t => t.Name);
        Onnx.Proto.OnnxNode Node(string op, string domain, string output, params string[] inputs)
        {
            var n = new Onnx.Proto.OnnxNode { OpType = op, Domain = domain, Name = output + "_node" };
            n.Input.AddRange(inputs);
            n.Output.Add(output);
            return n;
        }
        string Scalar(string name, float v) { m.Graph.Initializer.Add(GraphBuilder.Tensor(name, [v])); return name; }
        string Zero(string name, int type, int v)
        {
            var t = new OnnxTensor { Name = name, DataType = type, RawData = ByteString.CopyFrom([unchecked((byte)v)]) };
            m.Graph.Initializer.Add(t);
            return name;
        }
        // a float initializer as codes — uint8 with a zero point and one scale (biases), or int8 symmetric with one scale per
        // column (the products' B, [K, N]: a per-column b_scale) — the twin holding them dequantised
        (string Q, string S, string Z) Quantise(string name, bool unsigned)
        {
            var t = inits[name];
            var f = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(t.RawData.Span).ToArray();
            int cols = unsigned ? 1 : (int)t.Dims[1];
            var scale = new float[cols];
            int zero = 0;
            if (unsigned)
            {
                float lo = Math.Min(0, f.Min()), hi = Math.Max(0, f.Max());
                scale[0] = Math.Max(hi - lo, 1e-6f) / 255f;
                zero = Math.Clamp((int)MathF.Round(-lo / scale[0]), 0, 255);
            }
            else
                for (int c = 0; c < cols; c++)
                    scale[c] = Math.Max(Enumerable.Range(0, f.Length / cols).Max(r => MathF.Abs(f[r * cols + c])), 1e-6f) / 127f;
            var codes = f.Select((x, i) => Math.Clamp((int)MathF.Round(x / scale[i % cols]) + zero, unsigned ? 0 : -127, unsigned ? 255 : 127)).ToArray();
            twinInits[name].RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(codes.Select((c, i) => (float)(c - zero) * scale[i % cols]).ToArray().AsSpan()));
            var q = new OnnxTensor { Name = name + "_quantized", DataType = unsigned ? 2 : 3, RawData = ByteString.CopyFrom(codes.Select(c => unchecked((byte)c)).ToArray()) };
            q.Dims.AddRange(t.Dims);
            m.Graph.Initializer.Remove(t);
            m.Graph.Initializer.Add(q);
            if (unsigned) return (q.Name, Scalar(name + "_scale", scale[0]), Zero(name + "_zero_point", q.DataType, zero));
            m.Graph.Initializer.Add(GraphBuilder.Tensor(name + "_scale", scale, cols));
            var zp = new OnnxTensor { Name = name + "_zero_point", DataType = 3, RawData = ByteString.CopyFrom(new byte[cols]) };
            zp.Dims.Add(cols);
            m.Graph.Initializer.Add(zp);
            return (q.Name, name + "_scale", name + "_zero_point");
        }
        var nodes = new List<Onnx.Proto.OnnxNode>();
        var eight = new Dictionary<string, string>();      // a product's float output → its 8-bit output
        int k = 0;
        foreach (var n in m.Graph.Node)
        {
            if (n.OpType == "MatMul" && inits.TryGetValue(n.Input[1], out var w) && w.Dims.Count == 2)
            {
                string id = $"p{k++}", x = n.Input[0];
                var (wq, ws, wz) = Quantise(n.Input[1], unsigned: false);
                nodes.Add(Node("QuantizeLinear", "", id + "_x8", x, Scalar(id + "_xs", 0.05f), Zero(id + "_xz", 2, 128)));
                nodes.Add(Node("QLinearMatMul", "", eight[n.Output[0]] = id + "_y8", id + "_x8", id + "_xs", id + "_xz", wq, ws, wz, Scalar(id + "_ys", 0.05f), Zero(id + "_yz", 2, 128)));
                continue;
            }
            if (n.OpType == "Add" && n.Input.FirstOrDefault(i => eight.ContainsKey(i)) is { } mm && n.Input.FirstOrDefault(i => i.EndsWith(".bias")) is { } bias)
            {
                string id = eight[mm].Replace("_y8", "");
                var (bq, bs, bz) = Quantise(bias, unsigned: true);
                nodes.Add(Node("QLinearAdd", "com.microsoft", id + "_z8", bq, bs, bz, eight[mm], id + "_ys", id + "_yz", Scalar(id + "_zs", 0.05f), Zero(id + "_zz", 2, 128)));
                // 8-bit data moved: a Reshape of the query, key or value before it is dequantised (as the QOperator form keeps it)
                var reshape = m.Graph.Node.FirstOrDefault(r => r.OpType == "Reshape" && r.Input[0] == n.Output[0]);
                if (reshape != null)
                {
                    reshape.Input[0] = id + "_z8";
                    string r8 = reshape.Output[0] + "_8";
                    nodes.Add(Node("DequantizeLinear", "", n.Output[0], id + "_z8", id + "_zs", id + "_zz"));
                    reshape.Output[0] = r8;
                    nodes.Add(Node("DequantizeLinear", "", r8.Replace("_8", ""), r8, id + "_zs", id + "_zz"));
                }
                else nodes.Add(Node("DequantizeLinear", "", n.Output[0], id + "_z8", id + "_zs", id + "_zz"));
                continue;
            }
            nodes.Add(n);
        }
        m.Graph.Node.Clear();
        m.Graph.Node.AddRange(nodes);
        m.OpsetImport.Add(new OnnxOpset { Domain = "com.microsoft", Version = 1 });
        Assert.Equal(k, m.Graph.Node.Count(n => n.OpType == "QLinearMatMul"));
        Assert.True(m.Graph.Node.Count(n => n.OpType == "QLinearAdd") >= 12);
        string path = dir.File("model_qop.onnx"), twinPath = dir.File("twin.onnx");
        File.WriteAllBytes(path, m.ToByteArray());
        File.WriteAllBytes(twinPath, twin.ToByteArray());
        AssertOpenEqualsLoad(path);
        var q = OnnxModelFile.Open(path);
        Assert.Empty(q.Unmatched);
        Assert.DoesNotContain(q.Nodes, n => n.OpType is "QuantizeLinear" or "DequantizeLinear" or "QLinearMatMul" or "QLinearAdd");
        Assert.Equal(3 * BertModelTests.Layers, q.Nodes.Count(n => n.OpType == "Reshape" && q.ProducerOf(n.Inputs[0])?.OpType == "Add")); // the 8-bit reshapes read the float sum again
        AssertSameParameters(OnnxModelFile.Open(twinPath), q);
        using var model = BertModel.Load(path);
        using var twinModel = BertModel.Load(twinPath);
        Assert.Equal(Heads, model.Config.NumAttentionHeads);
        AssertSameHiddenStates(twinModel, model);
    }

    /// <summary>
    /// QDQ nodes that do not fit: a scale per axis of the wrong length, a zero point of another type, a block size that
    /// does not cut the axis into the scale's blocks, a pair whose Quantize and Dequantize scales differ. Each is kept as it
    /// is (never a crash, never a silently wrong weight): the weight behind it is then not read, and a BERT load says which
    /// parameters are missing.
    /// </summary>
    [Fact]
    public void QdqNodes_ThatDoNotFit_AreKept_NotMisread()
    {
        using var dir = new TempDir();
        string path = dir.File("bad_qdq.onnx");
        OnnxModelFile Write(Action<GraphBuilder> build)
        {
            var g = new GraphBuilder();
            build(g);
            var model = new OnnxModel { IrVersion = 7, Graph = g.Graph };
            model.OpsetImport.Add(new OnnxOpset { Domain = "", Version = 21 });
            File.WriteAllBytes(path, model.ToByteArray());
            return OnnxModelFile.Open(path);
        }
        string Int8(GraphBuilder g, string name, int type, long[] dims, params int[] codes)
        {
            var t = new OnnxTensor { Name = name, DataType = type, RawData = ByteString.CopyFrom(codes.Select(c => unchecked((byte)c)).ToArray()) };
            t.Dims.AddRange(dims);
            g.Graph.Initializer.Add(t);
            return name;
        }
        // a good one first: per axis 1 of a [2, 3] weight
        var ok = Write(g =>
        {
            string dq = g.Node("DequantizeLinear", [Int8(g, "a.weight_quantized", 3, [2, 3], 1, -2, 3, 4, 5, -6), g.Init("a.weight_scale", [0.5f, 0.25f, 2f], 3)], ("axis", 1));
            g.Node("Add", ["x", dq]);                       // not a product's weight, so read as stored
        });
        Assert.True(ok.TryGetShape("a.weight", out var shape));
        Assert.Equal(new long[] { 2, 3 }, shape);
        var vals = new float[6];
        ok.ReadFloat32("a.weight", vals);
        Assert.Equal(new[] { 0.5f, -0.5f, 6f, 2f, 1.25f, -12f }, vals);
        Assert.DoesNotContain("a.weight_scale", ok.TensorNames);
        // blocks of 2 along axis 1 of a [2, 4] weight: a [2, 2] scale, element (r, c) scaled by scale[r, c / 2]
        var blocked = Write(g =>
        {
            string dq = g.Node("DequantizeLinear", [Int8(g, "c.weight_quantized", 3, [2, 4], 1, 2, 3, 4, 5, 6, 7, 8), g.Init("c.weight_scale", [1f, 10f, 100f, 1000f], 2, 2)], ("axis", 1), ("block_size", 2));
            g.Node("Add", ["x", dq]);
        });
        var bv = new float[8];
        blocked.ReadFloat32("c.weight", bv);
        Assert.Equal(new[] { 1f, 2f, 30f, 40f, 500f, 600f, 7000f, 8000f }, bv);
        // the misfits
        foreach (var (what, build) in new (string, Action<GraphBuilder>)[]
        {
            ("scale per axis of the wrong length", g => g.Node("DequantizeLinear", [Int8(g, "a.weight_quantized", 3, [2, 3], 1, 2, 3, 4, 5, 6), g.Init("a.weight_scale", [0.5f, 0.25f], 2)], ("axis", 1))),
            ("zero point of another type", g => g.Node("DequantizeLinear", [Int8(g, "a.weight_quantized", 3, [2, 3], 1, 2, 3, 4, 5, 6), g.Init("a.weight_scale", [0.5f]), Int8(g, "zp", 2, [], 3)])),
            ("axis out of range", g => g.Node("DequantizeLinear", [Int8(g, "a.weight_quantized", 3, [2, 3], 1, 2, 3, 4, 5, 6), g.Init("a.weight_scale", [0.5f, 0.25f, 2f], 3)], ("axis", 5))),
            ("blocks that do not match the scale", g => g.Node("DequantizeLinear", [Int8(g, "a.weight_quantized", 3, [4, 3], 1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6), g.Init("a.weight_scale", [1f, 1f, 1f], 1, 3)], ("axis", 0), ("block_size", 2))),
        })
        {
            var f = Write(build);
            Assert.False(f.TryGetShape("a.weight", out _), what);
            Assert.Contains(f.Nodes, n => n.OpType == "DequantizeLinear");
        }
        // a pair whose scales differ is not an identity: kept
        var pair = Write(g =>
        {
            string q = g.Node("QuantizeLinear", ["x", g.Init("s1", [0.5f])]);
            g.Node("MatMul", [g.Node("DequantizeLinear", [q, g.Init("s2", [0.25f])]), g.Init("b.weight", [1f, 2f], 1, 2)]);
        });
        Assert.Equal(2, pair.Nodes.Count(n => n.OpType is "QuantizeLinear" or "DequantizeLinear"));
        // and one whose scales are equal under different names is passed through
        var same = Write(g =>
        {
            string q = g.Node("QuantizeLinear", ["x", g.Init("s1", [0.5f])]);
            g.Node("MatMul", [g.Node("DequantizeLinear", [q, g.Init("s2", [0.5f])]), g.Init("b.weight", [1f, 2f], 1, 2)]);
        });
        Assert.DoesNotContain(same.Nodes, n => n.OpType is "QuantizeLinear" or "DequantizeLinear");
        Assert.Equal("x", same.Nodes.Single(n => n.OpType == "MatMul").Inputs[0]);
        // pairs after pairs, each step also read by another node: every reader is led back to x
        var chain = Write(g =>
        {
            string v = "x";
            for (int i = 0; i < 5; i++)
            {
                v = g.Node("DequantizeLinear", [g.Node("QuantizeLinear", [v, "s"]), "s"]);
                g.Node("Relu", [v]);
            }
            g.Init("s", [0.5f]);
        });
        Assert.All(chain.Nodes, n => Assert.Equal("x", n.Inputs[0]));
        Assert.Equal(5, chain.Nodes.Count);
        // one constant dequantised twice alike is one tensor; a third time with another scale stays a node (a constant is
        // expanded once, whatever the file asks)
        var twice = Write(g =>
        {
            string codes = Int8(g, "d.weight_quantized", 3, [2], 4, -4);
            g.Init("d.weight_scale", [0.5f]);
            g.Init("other_scale", [2f]);
            g.Node("Add", ["x", g.Node("DequantizeLinear", [codes, "d.weight_scale"])]);
            g.Node("Add", ["y", g.Node("DequantizeLinear", [codes, "d.weight_scale"])]);
            g.Node("Add", ["z", g.Node("DequantizeLinear", [codes, "other_scale"])]);
        });
        Assert.Equal(new[] { "d.weight", "d.weight" }, twice.Nodes.Where(n => n.OpType == "Add").Take(2).Select(n => n.Inputs[1]));
        Assert.Single(twice.Nodes, n => n.OpType == "DequantizeLinear");
        var dv = new float[2];
        twice.ReadFloat32("d.weight", dv);
        Assert.Equal(new[] { 2f, -2f }, dv);
    }

    [Fact]
    public void DistilBertExport_NamesMapped_TokenTypesZero_HeadsFromTheGraph()
    {
        // the tiny BERT's export with every parameter renamed as a DistilBERT export names it (no token-type table; the
        // pooler as pre_classifier): loaded without config.json, the heads from the graph's reshapes
        var w = Checkpoint(seed: 4);
        var m = OnnxModel.Parser.ParseFrom(Export(w, "plain"));
        static string Distil(string n) => n.StartsWith("pooler.dense.") ? "pre_classifier." + n["pooler.dense.".Length..]
            : "distilbert." + n.Replace("encoder.layer.", "transformer.layer.").Replace("attention.self.query", "attention.q_lin")
                .Replace("attention.self.key", "attention.k_lin").Replace("attention.self.value", "attention.v_lin")
                .Replace("attention.output.dense", "attention.out_lin").Replace("attention.output.LayerNorm", "sa_layer_norm")
                .Replace("intermediate.dense", "ffn.lin1").Replace("output.dense", "ffn.lin2").Replace("output.LayerNorm", "output_layer_norm");
        var names = w.Keys.ToHashSet();
        foreach (var t in m.Graph.Initializer.Where(t => t.Name.Contains("token_type")).ToList()) m.Graph.Initializer.Remove(t);
        foreach (var t in m.Graph.Initializer) if (names.Contains(t.Name)) t.Name = Distil(t.Name);
        foreach (var n in m.Graph.Node)
            for (int i = 0; i < n.Input.Count; i++) if (names.Contains(n.Input[i])) n.Input[i] = Distil(n.Input[i]);
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("model.onnx"), m.ToByteArray());
        using var model = BertModel.Load(dir.File("model.onnx"));
        Assert.Equal("distilbert", model.Config.ModelType);
        Assert.Equal(Heads, model.Config.NumAttentionHeads);
        Assert.Equal(1, model.Embeddings.TokenTypes);
        var refW = w.ToDictionary(kv => kv.Key, kv => kv.Key.Contains("token_type") ? (new float[kv.Value.Data.Length], kv.Value.Shape) : kv.Value);
        using var session = new EmbeddingSession(model, null);
        int[] ids = [2, 7, 11, 3, 40];
        var hs = new float[ids.Length * H];
        session.HiddenStates(ids, [ids.Length], hs);
        AssertClose(RefBert(refW, "", ids), hs, "DistilBERT export");
    }

    [Fact]
    public void HuggingFaceLayout_OnnxSubfolder_WithConfigAndVocabAtTheRoot()
    {
        // model.onnx in onnx/, config.json (which states 3 heads), vocab.txt and a sentence-transformers Pooling module at the root
        using var dir = new TempDir();
        var w = Checkpoint(seed: 3);
        Directory.CreateDirectory(dir.File("onnx"));
        File.WriteAllBytes(Path.Combine(dir.Path, "onnx", "model.onnx"), Export(w, "scale-only"));
        File.WriteAllText(dir.File("config.json"), ConfigJson());
        File.WriteAllText(dir.File("vocab.txt"), string.Join('\n', TokenizerRulesTests.Vocab[..Vocab]) + "\n");
        Directory.CreateDirectory(dir.File("1_Pooling"));
        File.WriteAllText(Path.Combine(dir.Path, "1_Pooling", "config.json"), """{"pooling_mode_cls_token": true}""");
        using (var model = BertModel.Load(dir.Path))
        {
            Assert.Contains("config.json", model.Source);   // the architecture from the root's config.json, not from the graph
            using var session = new EmbeddingSession(model, null);
            int[] ids = [2, 7, 11, 3, 40];
            var hs = new float[ids.Length * H];
            session.HiddenStates(ids, [ids.Length], hs);
            AssertClose(RefBert(w, "", ids), hs, "onnx/model.onnx");
        }
        using var embedder = SentenceEmbedder.Load(dir.Path);
        Assert.Equal((Pooling?)Pooling.Cls, embedder.Options.Pooling);
        var ids2 = embedder.Tokenizer.Encode("the cafe owner");
        var h2 = new float[ids2.Length * H];
        using (var s2 = embedder.CreateSession()) s2.HiddenStates(ids2, [ids2.Length], h2);
        Assert.Equal(h2.AsSpan(0, H).ToArray(), embedder.Encode("the cafe owner"));
    }

    /// <summary>
    /// Moves every initializer of at least <paramref name="threshold"/> bytes out of <paramref name="model"/> into external
    /// data files as ONNX's external-data writer does (data_location EXTERNAL; location, offset, length as strings):
    /// <paramref name="fileOf"/> names each tensor's file (relative to the model's folder).
    /// </summary>
    internal static void ToExternalData(OnnxModel model, string folder, Func<string, string> fileOf, int threshold = 1024)
    {
        var streams = new Dictionary<string, FileStream>();
        try
        {
            foreach (var t in model.Graph.Initializer.Where(t => t.HasRawData && t.RawData.Length >= threshold))
            {
                string location = fileOf(t.Name);
                if (!streams.TryGetValue(location, out var fs))
                {
                    string path = Path.Combine(folder, location);
                    Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                    streams[location] = fs = File.Create(path);
                }
                fs.Position = (fs.Length + 4095) / 4096 * 4096; // page-aligned offsets, as the writer aligns large tensors
                long offset = fs.Position;
                fs.Write(t.RawData.Span);
                t.ClearRawData();
                t.DataLocation = 1;
                t.ExternalData.Add(new OnnxStringEntry { Key = "location", Value = location });
                t.ExternalData.Add(new OnnxStringEntry { Key = "offset", Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                t.ExternalData.Add(new OnnxStringEntry { Key = "length", Value = (fs.Position - offset).ToString(System.Globalization.CultureInfo.InvariantCulture) });
            }
        }
        finally { foreach (var fs in streams.Values) fs.Dispose(); }
    }

    [Theory]
    [InlineData("one file")]
    [InlineData("a file per tensor")]
    [InlineData("in a subfolder")]
    public void ExternalData_LoadsAsTheInlineFile_BitForBit(string layout)
    {
        using var dir = new TempDir();
        var w = Checkpoint(seed: 5);
        var bytes = Export(w, "plain");
        Directory.CreateDirectory(dir.File("inline"));
        File.WriteAllBytes(dir.File("inline/model.onnx"), bytes);
        var m = OnnxModel.Parser.ParseFrom(bytes);
        string folder = dir.File("external");
        Directory.CreateDirectory(folder);
        ToExternalData(m, folder, layout switch
        {
            "one file" => _ => "model.onnx_data",
            "a file per tensor" => name => name.Replace(':', '_'),
            _ => _ => "data/weights.bin",
        });
        Assert.Contains(m.Graph.Initializer, t => t.DataLocation == 1);
        File.WriteAllBytes(Path.Combine(folder, "model.onnx"), m.ToByteArray());
        Assert.True(new FileInfo(Path.Combine(folder, "model.onnx")).Length < bytes.Length / 4);
        using var inline = BertModel.Load(dir.File("inline/model.onnx"));
        using var external = BertModel.Load(Path.Combine(folder, "model.onnx"));
        int[] ids = [2, 7, 11, 3, 40, 9];
        float[] Hidden(BertModel model)
        {
            using var session = new EmbeddingSession(model, null);
            var hs = new float[ids.Length * H];
            session.HiddenStates(ids, [ids.Length], hs);
            return hs;
        }
        var a = Hidden(inline);
        Assert.Equal(a, Hidden(external));
        AssertClose(RefBert(w, "", ids), a, layout);
        // every parameter reads the same values, transposed or not
        var fi = OnnxModelFile.Open(dir.File("inline/model.onnx"));
        var fe = OnnxModelFile.Open(Path.Combine(folder, "model.onnx"));
        Assert.Equal(fi.TensorNames.Order(), fe.TensorNames.Order());
        foreach (var name in fi.TensorNames)
        {
            Assert.True(fi.TryGetShape(name, out var shape));
            int n = (int)shape.Aggregate(1L, (x, y) => x * y);
            float[] x1 = new float[n], x2 = new float[n];
            fi.ReadFloat32(name, x1);
            fe.ReadFloat32(name, x2);
            Assert.Equal(x1, x2);
        }
    }

    [Fact]
    public void ExternalData_Malformed_IsInvalidData_AndNeverReadsOutsideTheFolder()
    {
        using var dir = new TempDir();
        var w = Checkpoint(seed: 5);
        var bytes = Export(w, "plain");
        string folder = dir.File("m");
        Directory.CreateDirectory(folder);
        File.WriteAllBytes(dir.File("outside.bin"), new byte[1 << 20]);
        string Write(Action<OnnxTensor>? change, string file = "model.onnx")
        {
            var m = OnnxModel.Parser.ParseFrom(bytes);
            ToExternalData(m, folder, _ => "model.onnx_data");
            var t = m.Graph.Initializer.First(t => t.DataLocation == 1);
            change?.Invoke(t);
            string path = Path.Combine(folder, file);
            File.WriteAllBytes(path, m.ToByteArray());
            return path;
        }
        void Set(OnnxTensor t, string key, string value)
        {
            if (t.ExternalData.FirstOrDefault(e => e.Key == key) is { } e) e.Value = value;
            else t.ExternalData.Add(new OnnxStringEntry { Key = key, Value = value });
        }
        string Fails(Action<OnnxTensor> change) => Assert.Throws<InvalidDataException>(() => OnnxModelFile.Open(Write(change))).Message;
        Assert.Contains("leaves the model's folder", Fails(t => Set(t, "location", "../outside.bin")));
        Assert.Contains("leaves the model's folder", Fails(t => Set(t, "location", "data/../../outside.bin")));
        Assert.Contains("not a path relative", Fails(t => Set(t, "location", dir.File("outside.bin"))));
        Assert.Contains("does not exist", Fails(t => Set(t, "location", "missing.bin")));
        // symbolic links that lead out of the folder: the data file itself, or a directory on the way
        File.CreateSymbolicLink(Path.Combine(folder, "link.bin"), dir.File("outside.bin"));
        Assert.Contains("leaves the model's folder", Fails(t => Set(t, "location", "link.bin")));
        Directory.CreateDirectory(dir.File("elsewhere"));
        File.WriteAllBytes(dir.File("elsewhere/data.bin"), new byte[1 << 20]);
        Directory.CreateSymbolicLink(Path.Combine(folder, "sub"), dir.File("elsewhere"));
        Assert.Contains("leaves the model's folder", Fails(t => Set(t, "location", "sub/data.bin")));
        // a link that stays inside is followed
        File.CreateSymbolicLink(Path.Combine(folder, "inside.onnx_data"), Path.Combine(folder, "model.onnx_data"));
        OnnxModelFile.Open(Write(t => { foreach (var e in t.ExternalData.Where(e => e.Key == "location")) e.Value = "inside.onnx_data"; }));
        Assert.Contains("has no location", Fails(t => t.ExternalData.Remove(t.ExternalData.First(e => e.Key == "location"))));
        Assert.Contains("but length", Fails(t => Set(t, "length", "4")));
        Assert.Contains("not a byte count", Fails(t => Set(t, "offset", "-8")));
        Assert.Contains("not a byte count", Fails(t => Set(t, "offset", "0x10")));
        Assert.Contains("which has", Fails(t => Set(t, "offset", "999999999999")));
        Assert.Contains("twice", Fails(t => t.ExternalData.Add(new OnnxStringEntry { Key = "offset", Value = "0" })));
        Assert.Contains("not EXTERNAL", Fails(t => t.DataLocation = 0));
        Assert.Contains("also carries data", Fails(t => t.RawData = ByteString.CopyFrom(new byte[4])));
        // parsed from a stream or from memory there is no folder to read the data file from
        string good = Write(null);
        using (var fs = File.OpenRead(good))
            Assert.Contains("open the model from its path", Assert.Throws<InvalidDataException>(() => OnnxModelFile.Load(fs)).Message);
        Assert.Contains("open the model from its path", Assert.Throws<InvalidDataException>(() => OnnxModelFile.Load(File.ReadAllBytes(good))).Message);
        // the data file cut short after the model was opened: the read says so
        var opened = OnnxModelFile.Open(good);
        using (var fs = new FileStream(Path.Combine(folder, "model.onnx_data"), FileMode.Open)) fs.SetLength(0);
        Assert.True(opened.TryGetShape("embeddings.word_embeddings.weight", out var shape));
        Assert.Contains("ended early", Assert.Throws<InvalidDataException>(() => opened.ReadFloat32("embeddings.word_embeddings.weight", new float[shape[0] * shape[1]])).Message);
    }

    /// <summary>
    /// A model opened from its path reads its tensors from the file when asked for: a file rewritten since (to another
    /// length, or the same length with other bytes) is an InvalidDataException on the read, never other weights; a tensor
    /// with raw_data that also says its data is external is refused at open, as before.
    /// </summary>
    [Fact]
    public void InlineTensors_AreReadFromTheFile_AndAChangedFileIsNoticed()
    {
        using var dir = new TempDir();
        string path = dir.File("model.onnx");
        var bytes = Export(Checkpoint(seed: 4), "plain");
        File.WriteAllBytes(path, bytes);
        const string table = "embeddings.word_embeddings.weight";
        var opened = OnnxModelFile.Open(path);
        Assert.True(opened.TryGetShape(table, out var shape));
        var before = new float[shape[0] * shape[1]];
        opened.ReadFloat32(table, before);
        // the same length, other bytes (the table's first floats negated in place), a moment later
        var m = OnnxModel.Parser.ParseFrom(bytes);
        var t = m.Graph.Initializer.First(i => i.Name == table);
        var changed = t.RawData.ToByteArray();
        for (int i = 3; i < 64; i += 4) changed[i] ^= 0x80;
        t.RawData = ByteString.CopyFrom(changed);
        var rewritten = m.ToByteArray();
        Assert.Equal(bytes.Length, rewritten.Length);
        File.WriteAllBytes(path, rewritten);
        File.SetLastWriteTimeUtc(path, File.GetLastWriteTimeUtc(path).AddSeconds(1));
        Assert.Contains("changed after the model was opened", Assert.Throws<InvalidDataException>(() => opened.ReadFloat32(table, new float[before.Length])).Message);
        // opened again it reads the new bytes
        var again = OnnxModelFile.Open(path);
        var after = new float[before.Length];
        again.ReadFloat32(table, after);
        Assert.Equal(before.Skip(16).ToArray(), after.Skip(16).ToArray());
        Assert.Equal(before.Take(16).Select(v => -v).ToArray(), after.Take(16).ToArray());
        // cut short
        File.WriteAllBytes(path, bytes.AsSpan(0, bytes.Length / 2).ToArray());
        Assert.Throws<InvalidDataException>(() => again.ReadFloat32(table, after));
        // raw_data and external at once
        t.RawData = ByteString.CopyFrom(changed);
        t.DataLocation = 1;
        t.ExternalData.Add(new OnnxStringEntry { Key = "location", Value = "data.bin" });
        File.WriteAllBytes(path, m.ToByteArray());
        Assert.Contains("also carries data", Assert.Throws<InvalidDataException>(() => OnnxModelFile.Open(path)).Message);
    }

    [Fact]
    public void Malformed_OrUnmatchable_FilesAreInvalidData()
    {
        using var dir = new TempDir();
        string path = dir.File("bad.onnx");
        File.WriteAllBytes(path, [0x08, 0x07, 0x3A, 0xFF, 0xFF]);                     // a graph field longer than the file
        Assert.Throws<InvalidDataException>(() => OnnxModelFile.Open(path));
        File.WriteAllBytes(path, new OnnxModel { IrVersion = 7 }.ToByteArray());       // no graph
        Assert.Contains("no graph", Assert.Throws<InvalidDataException>(() => OnnxModelFile.Open(path)).Message);
        // a tensor whose data does not match its shape
        var g = new OnnxGraph();
        g.Initializer.Add(GraphBuilder.Tensor("a.weight", new float[5], 2, 3));
        File.WriteAllBytes(path, new OnnxModel { Graph = g }.ToByteArray());
        Assert.Contains("shape", Assert.Throws<InvalidDataException>(() => OnnxModelFile.Open(path)).Message);
        // a parameter-like name on a scalar (0-d) float constant: listed with an empty shape, readable; it used to throw
        // IndexOutOfRangeException from TryGetShape (found by the fuzzer) — and a BERT load names it as unexpected
        var scalar = new OnnxGraph();
        scalar.Initializer.Add(GraphBuilder.Tensor("a.scale", [0.5f]));
        File.WriteAllBytes(path, new OnnxModel { Graph = scalar }.ToByteArray());
        var sf = OnnxModelFile.Open(path);
        Assert.True(sf.TryGetShape("a.scale", out var scalarShape));
        Assert.Empty(scalarShape);
        var one = new float[1];
        sf.ReadFloat32("a.scale", one);
        Assert.Equal(0.5f, one[0]);
        Assert.Throws<InvalidDataException>(() => BertModel.Load(path));
        // external data
        var ext = new OnnxGraph();
        var t = new OnnxTensor { Name = "w", DataType = 1, DataLocation = 1 };
        t.Dims.Add(4);
        ext.Initializer.Add(t);
        File.WriteAllBytes(path, new OnnxModel { Graph = ext }.ToByteArray());
        Assert.Contains("has no location", Assert.Throws<InvalidDataException>(() => OnnxModelFile.Open(path)).Message);
        // a BERT export whose heads cannot be found and that has no config.json
        var w = Checkpoint(seed: 3);
        var bytes = Export(w, "scale-only");
        var m = OnnxModel.Parser.ParseFrom(bytes);
        foreach (var n in m.Graph.Node.Where(n => n.OpType == "Div").ToList()) m.Graph.Node.Remove(n);
        File.WriteAllBytes(dir.File("model.onnx"), m.ToByteArray());
        var e = Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.File("model.onnx")));
        Assert.Contains("--heads", e.Message);
        using var withHeads = BertModel.Load(dir.File("model.onnx"), new BertLoadOptions { Heads = Heads });
        Assert.Equal(Heads, withHeads.Config.NumAttentionHeads);
    }
}
