using System.Runtime.InteropServices;
using FastAttn.Embeddings;
using FastAttn.Onnx;
using FastAttn.Onnx.Proto;
using FastAttn.TestSupport;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using OnnxNode = FastAttn.Onnx.Proto.OnnxNode;

namespace FastAttn.Parity.Tests;

/// <summary>
/// A BERT in the QDQ format, as ONNX Runtime's <c>quantize_static</c> writes it by default: each weight product's weight
/// held as int8 codes (<c>W_quantized</c>, <c>W_scale</c>, <c>W_zero_point</c>) behind a DequantizeLinear, every
/// activation its QDQ quantiser wraps (both inputs of every MatMul — the attention's two products included — and the data
/// input of Reshape, Transpose and Softmax) quantised to uint8 and back by a QuantizeLinear → DequantizeLinear pair with a
/// calibrated scale and zero point (one pair per activation, shared by the nodes that read it), and the word-embedding
/// table quantised in front of its Gather. No such file is served here, so the test writes one from all-MiniLM-L6-v2 (calibrated on ONNX Runtime's FP32
/// run of the first 20 built-in texts) and, beside it, the FP32 graph with the dequantised weights. FastAttn reads the
/// QDQ file's weights dequantised and runs FP32: it must equal ONNX Runtime running that FP32 twin; ONNX Runtime's own
/// int8 execution of the QDQ file (activations quantised too) is reported for comparison.
/// </summary>
public class QdqOnnxParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static OnnxNode Node(string op, string[] inputs, string output, long? axis = null)
    {
        var n = new OnnxNode { OpType = op, Name = output + "_node" };
        n.Input.AddRange(inputs);
        n.Output.Add(output);
        if (axis is long a) n.Attribute.Add(new OnnxAttribute { Name = "axis", I = a, Type = 2 });
        return n;
    }

    private static OnnxTensor Tensor(string name, int type, byte[] raw, params long[] dims)
    {
        var t = new OnnxTensor { Name = name, DataType = type, RawData = ByteString.CopyFrom(raw) };
        t.Dims.AddRange(dims);
        return t;
    }

    private static OnnxTensor Floats(string name, float[] values, params long[] dims) => Tensor(name, 1, MemoryMarshal.AsBytes(values.AsSpan()).ToArray(), dims);

    /// <summary>The range of each of <paramref name="values"/> (activations) over ONNX Runtime's FP32 run of <paramref name="texts"/> (always holding 0).</summary>
    private static Dictionary<string, (float Min, float Max)> Calibrate(byte[] model, string[] values, IEnumerable<string> texts, TextTokenizer tokenizer)
    {
        var m = OnnxModel.Parser.ParseFrom(model);
        foreach (var name in values)
            m.Graph.Output.Add(new OnnxValueInfo { Name = name, Type = new OnnxType { TensorType = new OnnxType.Types.Tensor { ElemType = 1 } } });
        using var ort = new InferenceSession(m.ToByteArray(), new SessionOptions { IntraOpNumThreads = 1 });
        var range = values.ToDictionary(i => i, _ => (Min: 0f, Max: 0f));
        foreach (var s in texts)
        {
            var ids = tokenizer.Encode(s);
            var inputs = new List<NamedOnnxValue>
            {
                NamedOnnxValue.CreateFromTensor("input_ids", new Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<long>(ids.Select(i => (long)i).ToArray(), [1, ids.Length])),
                NamedOnnxValue.CreateFromTensor("attention_mask", new Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<long>(Enumerable.Repeat(1L, ids.Length).ToArray(), [1, ids.Length])),
                NamedOnnxValue.CreateFromTensor("token_type_ids", new Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<long>(new long[ids.Length], [1, ids.Length])),
            };
            using var r = ort.Run(inputs.Where(i => ort.InputMetadata.ContainsKey(i.Name)).ToList());
            foreach (var v in r.Where(v => range.ContainsKey(v.Name)))
            {
                var x = v.AsEnumerable<float>().ToArray();
                range[v.Name] = (Math.Min(range[v.Name].Min, x.Min()), Math.Max(range[v.Name].Max, x.Max()));
            }
        }
        return range;
    }

    /// <summary>Writes the QDQ model (<paramref name="qdq"/>) and the FP32 model with its dequantised weights (<paramref name="twin"/>); returns the weight products quantised and the activation pairs written.</summary>
    private static (int Products, int Pairs) Write(string qdq, string twin, bool perChannel, TextTokenizer tokenizer)
    {
        var (bytes, q, d, inits, dInits) = OnnxRewrite.MiniLmTwins();
        bool IsWeight(string name) => inits.TryGetValue(name, out var w) && w.DataType == 1 && w.Dims.Count == 2;
        var products = q.Graph.Node.Where(n => n.OpType == "MatMul" && n.Input.Count == 2 && IsWeight(n.Input[1])).ToList();
        // the activations quantize_static's QDQ quantiser wraps in a BERT: every MatMul's inputs (the attention's two
        // products have no constant side), and the data input of Reshape, Transpose and Softmax
        bool IsConstant(string v) => inits.ContainsKey(v) || q.Graph.Node.Any(n => n.OpType == "Constant" && n.Output.Contains(v));
        var wrapped = q.Graph.Node
            .SelectMany(n => n.OpType == "MatMul" ? n.Input.AsEnumerable() : n.OpType is "Reshape" or "Transpose" or "Softmax" ? n.Input.Take(1) : [])
            .Where(v => !IsConstant(v)).Distinct().ToArray();
        var range = Calibrate(bytes, wrapped, MiniLmParityTests.BuiltIn.Take(20), tokenizer);
        var pairs = new Dictionary<string, string>();       // activation → its QuantizeLinear → DequantizeLinear output
        var nodes = new List<OnnxNode>();
        // int8 symmetric codes of a float initializer, per tensor or per column (axis 1); the twin gets them dequantised
        string Quantise(OnnxTensor w, bool columns)
        {
            var f = MemoryMarshal.Cast<byte, float>(w.RawData.Span).ToArray();
            int rows = (int)w.Dims[0], cols = (int)w.Dims[1];
            var scales = columns
                ? Enumerable.Range(0, cols).Select(c => Math.Max(Enumerable.Range(0, rows).Max(r => MathF.Abs(f[r * cols + c])), 1e-12f) / 127f).ToArray()
                : [Math.Max(f.Max(MathF.Abs), 1e-12f) / 127f];
            float Scale(int i) => scales[columns ? i % cols : 0];
            var codes = f.Select((x, i) => (int)Math.Clamp(MathF.Round(x / Scale(i)), -127, 127)).ToArray();
            string name = w.Name;
            q.Graph.Initializer.Add(Tensor(name + "_quantized", 3, codes.Select(c => unchecked((byte)c)).ToArray(), w.Dims[0], w.Dims[1]));
            q.Graph.Initializer.Add(columns ? Floats(name + "_scale", scales, cols) : Floats(name + "_scale", scales));
            q.Graph.Initializer.Add(columns ? Tensor(name + "_zero_point", 3, new byte[cols], cols) : Tensor(name + "_zero_point", 3, new byte[1]));
            nodes.Add(Node("DequantizeLinear", [name + "_quantized", name + "_scale", name + "_zero_point"], name + "_DequantizeLinear_Output", columns ? 1 : null));
            var deq = codes.Select((c, i) => (float)c * Scale(i)).ToArray();
            dInits[name].RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(deq.AsSpan()));
            return name + "_DequantizeLinear_Output";
        }
        foreach (var n in q.Graph.Node)
        {
            // the word-embedding table quantised in front of its Gather (QDQ's Gather; the position and type tables stay FP32)
            if (n.OpType == "Gather" && n.Input[0] == "embeddings.word_embeddings.weight") n.Input[0] = Quantise(inits[n.Input[0]], columns: false);
            for (int i = 0; i < n.Input.Count; i++)
            {
                string x = n.Input[i];
                if (!range.ContainsKey(x) || (n.OpType != "MatMul" && i > 0)) continue;
                if (!pairs.TryGetValue(x, out var dq))
                {
                    // uint8 with a zero point from the calibrated range (which always holds 0)
                    var (lo, hi) = range[x];
                    float scale = Math.Max(hi - lo, 1e-6f) / 255f;
                    byte zero = (byte)Math.Clamp((int)MathF.Round(-lo / scale), 0, 255);
                    string id = x.Replace('/', '_');
                    q.Graph.Initializer.Add(Floats(id + "_scale", [scale]));
                    q.Graph.Initializer.Add(Tensor(id + "_zero_point", 2, [zero]));
                    nodes.Add(Node("QuantizeLinear", [x, id + "_scale", id + "_zero_point"], id + "_QuantizeLinear_Output"));
                    nodes.Add(Node("DequantizeLinear", [id + "_QuantizeLinear_Output", id + "_scale", id + "_zero_point"], pairs[x] = dq = id + "_DequantizeLinear_Output"));
                }
                n.Input[i] = dq;
            }
            if (products.Contains(n)) n.Input[1] = Quantise(inits[n.Input[1]], perChannel);
            nodes.Add(n);
        }
        OnnxRewrite.Save(q, nodes, qdq);
        File.WriteAllBytes(twin, d.ToByteArray());
        return (products.Count, pairs.Count);
    }

    /// <summary>
    /// The QOperator form of the same model (<c>quantize_static</c> with <c>quant_format=QOperator</c>, on the weight products):
    /// QuantizeLinear of the activation, QLinearMatMul with the int8 weight (one scale per column), com.microsoft QLinearAdd
    /// of the uint8 bias, then DequantizeLinear where float operators take over; scales calibrated as above. Written to
    /// <paramref name="path"/>, the FP32 twin with the same weights and biases dequantised to <paramref name="twin"/>, and to
    /// <paramref name="simulated"/> that twin with the file's activation quantisation simulated in float: a QuantizeLinear →
    /// DequantizeLinear pair, with the file's scale and zero point, on each product's input, its output and the sum after it.
    /// </summary>
    private static int WriteQOperator(string path, string twin, string simulated, TextTokenizer tokenizer)
    {
        var (bytes, q, d, inits, dInits) = OnnxRewrite.MiniLmTwins();
        var products = q.Graph.Node.Where(n => n.OpType == "MatMul" && n.Input.Count == 2 && inits.TryGetValue(n.Input[1], out var w) && w.DataType == 1 && w.Dims.Count == 2).ToList();
        var adds = products.ToDictionary(p => p, p => q.Graph.Node.Single(a => a.OpType == "Add" && a.Input.Contains(p.Output[0])));
        var range = Calibrate(bytes, [.. products.SelectMany(p => new[] { p.Input[0], p.Output[0] }).Concat(adds.Values.Select(a => a.Output[0])).Distinct()], MiniLmParityTests.BuiltIn.Take(20), tokenizer);
        (string Scale, string Zero) Activation(string x)
        {
            var (lo, hi) = range[x];
            float scale = Math.Max(hi - lo, 1e-6f) / 255f;
            string id = x.Replace('/', '_');
            if (!inits.ContainsKey(id + "_scale"))
            {
                q.Graph.Initializer.Add(inits[id + "_scale"] = Floats(id + "_scale", [scale]));
                q.Graph.Initializer.Add(inits[id + "_zero_point"] = Tensor(id + "_zero_point", 2, [(byte)Math.Clamp((int)MathF.Round(-lo / scale), 0, 255)]));
            }
            return (id + "_scale", id + "_zero_point");
        }
        var nodes = new List<OnnxNode>();
        var quantised = new Dictionary<string, string>();   // an activation → its QuantizeLinear output
        var lowered = new HashSet<OnnxNode>(adds.Values);
        foreach (var n in q.Graph.Node)
        {
            if (lowered.Contains(n)) continue;
            if (!products.Contains(n)) { nodes.Add(n); continue; }
            string x = n.Input[0], wName = n.Input[1], y = n.Output[0];
            var (xs, xz) = Activation(x);
            if (!quantised.TryGetValue(x, out var x8))
                nodes.Add(Node("QuantizeLinear", [x, xs, xz], quantised[x] = x8 = x.Replace('/', '_') + "_quantized8"));
            // the weight: int8, one scale per column of [K, N]
            var w = inits[wName];
            var f = MemoryMarshal.Cast<byte, float>(w.RawData.Span).ToArray();
            int rows = (int)w.Dims[0], cols = (int)w.Dims[1];
            var ws = Enumerable.Range(0, cols).Select(c => Math.Max(Enumerable.Range(0, rows).Max(r => MathF.Abs(f[r * cols + c])), 1e-12f) / 127f).ToArray();
            var wc = f.Select((v, i) => (int)Math.Clamp(MathF.Round(v / ws[i % cols]), -127, 127)).ToArray();
            q.Graph.Initializer.Add(Tensor(wName + "_quantized", 3, wc.Select(c => unchecked((byte)c)).ToArray(), rows, cols));
            q.Graph.Initializer.Add(Floats(wName + "_scale", ws, cols));
            q.Graph.Initializer.Add(Tensor(wName + "_zero_point", 3, new byte[cols], cols));
            dInits[wName].RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(wc.Select((c, i) => (float)c * ws[i % cols]).ToArray().AsSpan()));
            // the product and the sum after it each have their own calibrated scale
            var add = adds[n];
            var (ys, yz) = Activation(y);
            var (zs, zz) = Activation(add.Output[0]);
            var mm = new OnnxNode { OpType = "QLinearMatMul", Name = y + "_qlinear" };
            mm.Input.AddRange([x8, xs, xz, wName + "_quantized", wName + "_scale", wName + "_zero_point", ys, yz]);
            mm.Output.Add(y + "_quantized8");
            nodes.Add(mm);
            // the bias: uint8 with a zero point and one scale
            string b = add.Input[0] == y ? add.Input[1] : add.Input[0];
            var bf = MemoryMarshal.Cast<byte, float>(inits[b].RawData.Span).ToArray();
            float blo = Math.Min(0, bf.Min()), bhi = Math.Max(0, bf.Max()), bs = Math.Max(bhi - blo, 1e-6f) / 255f;
            int bz = Math.Clamp((int)MathF.Round(-blo / bs), 0, 255);
            var bc = bf.Select(v => Math.Clamp((int)MathF.Round(v / bs) + bz, 0, 255)).ToArray();
            q.Graph.Initializer.Add(Tensor(b + "_quantized", 2, bc.Select(c => (byte)c).ToArray(), bf.Length));
            q.Graph.Initializer.Add(Floats(b + "_scale", [bs]));
            q.Graph.Initializer.Add(Tensor(b + "_zero_point", 2, [(byte)bz]));
            dInits[b].RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(bc.Select(c => (float)(c - bz) * bs).ToArray().AsSpan()));
            var qa = new OnnxNode { OpType = "QLinearAdd", Domain = "com.microsoft", Name = add.Output[0] + "_qlinear" };
            qa.Input.AddRange([y + "_quantized8", ys, yz, b + "_quantized", b + "_scale", b + "_zero_point", zs, zz]);
            qa.Output.Add(add.Output[0] + "_quantized8");
            nodes.Add(qa);
            nodes.Add(Node("DequantizeLinear", [add.Output[0] + "_quantized8", zs, zz], add.Output[0]));
        }
        OnnxRewrite.Save(q, nodes, path);
        File.WriteAllBytes(twin, d.ToByteArray());
        // the twin with each quantised activation passed through QuantizeLinear → DequantizeLinear (once per value)
        var sim = OnnxModel.Parser.ParseFrom(d.ToByteArray());
        var simNodes = new List<OnnxNode>();
        var passed = new HashSet<string>();
        string RoundTrip(string v, string scaleOf)
        {
            var (scale, zero) = Activation(scaleOf);
            string o = v.Replace('/', '_') + "_simulated";
            if (passed.Add(o))
            {
                simNodes.Add(Node("QuantizeLinear", [v, scale, zero], o + "8"));
                simNodes.Add(Node("DequantizeLinear", [o + "8", scale, zero], o));
            }
            return o;
        }
        var productOutputs = products.Select(p => p.Output[0]).ToHashSet();
        var sumOutputs = adds.Values.Select(a => a.Output[0]).ToHashSet();
        foreach (var n in sim.Graph.Node)
        {
            bool product = n.OpType == "MatMul" && productOutputs.Contains(n.Output[0]), sum = n.OpType == "Add" && sumOutputs.Contains(n.Output[0]);
            if (!product && !sum) { simNodes.Add(n); continue; }
            var c = n.Clone();
            if (product) c.Input[0] = RoundTrip(n.Input[0], n.Input[0]);
            c.Output[0] = n.Output[0] + "_float";
            simNodes.Add(c);
            simNodes.Add(Node("Identity", [RoundTrip(c.Output[0], n.Output[0])], n.Output[0]));
        }
        // the activations' scales and zero points (Save keeps only the initializers the nodes read)
        var simInits = sim.Graph.Initializer.Select(t => t.Name).ToHashSet();
        foreach (var t in q.Graph.Initializer.Where(t => t.Name.EndsWith("_scale", StringComparison.Ordinal) || t.Name.EndsWith("_zero_point", StringComparison.Ordinal)))
            if (simInits.Add(t.Name)) sim.Graph.Initializer.Add(t.Clone());
        OnnxRewrite.Save(sim, simNodes, simulated);
        return products.Count;
    }

    /// <summary>FastAttn on the QOperator file against ONNX Runtime on its dequantised FP32 twin; ONNX Runtime's own run of the file reported.</summary>
    [Fact]
    public void AQOperatorExport_LoadsWithItsWeightsDequantised()
    {
        string dir = Path.Combine(PackagedModel.CacheRoot, $"all-MiniLM-L6-v2-{MiniLmPackage.Version}-qoperator-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        try
        {
            string path = Path.Combine(dir, "model.onnx"), twin = Path.Combine(dir, "fp32-dequantised.onnx"), simulated = Path.Combine(dir, "fp32-simulated.onnx");
            File.Copy(MiniLmPackage.Files.Vocab, Path.Combine(dir, "vocab.txt"), overwrite: true);
            int products;
            using (var original = SentenceEmbedder.Load(Path.GetDirectoryName(MiniLmPackage.Files.Model)!, options: new SentenceEmbedderOptions { MaxSessions = 1 }))
                products = WriteQOperator(path, twin, simulated, original.Tokenizer);
            Assert.Equal(36, products);
            var file = OnnxModelFile.Open(path);
            Assert.Empty(file.Unmatched);
            using var embedder = SentenceEmbedder.Load(dir, options: new SentenceEmbedderOptions { MaxSessions = 1 });
            using var session = new EmbeddingSession(embedder.Model, embedder.Tokenizer);
            using var ortFp32 = new InferenceSession(twin, new SessionOptions { IntraOpNumThreads = 1 });
            using var ortInt8 = new InferenceSession(path, new SessionOptions { IntraOpNumThreads = 1 });
            using var ortOriginal = new InferenceSession(MiniLmPackage.Files.Model, new SessionOptions { IntraOpNumThreads = 1 });
            var texts = MiniLmParityTests.BuiltIn.Skip(20).Take(20).ToArray();
            var (worst, worstCosInt8, mineToOriginal, int8ToOriginal) = OnnxRewrite.CompareQuantised(embedder, session, ortFp32, ortInt8, ortOriginal, texts);
            // run literally, in float: with graph optimisations ONNX Runtime would fuse the pairs into its int8 operators
            using var ortSimulated = new InferenceSession(simulated, new SessionOptions { IntraOpNumThreads = 1, GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL });
            double simulatedToOriginal = OnnxRewrite.CompareQuantised(embedder, session, ortFp32, ortSimulated, ortOriginal, texts).Int8ToOriginal;
            double int8ToSimulated = OnnxRewrite.CompareQuantised(embedder, session, ortFp32, ortSimulated, ortInt8, texts).Int8ToOriginal;
            output.WriteLine($"{products} QLinearMatMul + QLinearAdd products; FastAttn vs ONNX Runtime on the dequantised FP32 graph: max|Δ|/max|ref| {worst:E2}; "
                + $"mean-pooled cosine with ONNX Runtime's run of the QOperator file ≥ {worstCosInt8:F5}; with the unquantised model: FastAttn ≥ {mineToOriginal:F5}, "
                + $"ONNX Runtime's int8 execution ≥ {int8ToOriginal:F5}, the FP32 twin with the file's activation quantisation simulated ≥ {simulatedToOriginal:F5} "
                + $"(against ONNX Runtime's int8 execution ≥ {int8ToSimulated:F5})");
            Assert.True(worst <= 2e-6, $"FastAttn vs the dequantised FP32 graph: {worst:E2}");
            // the written file is what the operators' schemas say: ONNX Runtime's int8 run of it follows the float simulation
            // of its quantisation (measured ≥ 0.98; integer rounding of the requantised outputs accounts for the rest)
            Assert.True(int8ToSimulated >= 0.95, $"ONNX Runtime's run of the QOperator file against its simulation in float: cosine {int8ToSimulated:F5}");
            // ONNX Runtime's own run of this file (which quantises every product's output and every bias sum too, unlike the
            // QDQ file above) is at cosine 0.840 of the unquantised model, and so is the FP32 twin with the same activation
            // quantisation simulated in float (Q → DQ pairs with the file's scales; 0.840 on the same worst text, ≥ 0.98 with
            // ONNX Runtime's run on every text): the loss is the file's — uint8 per tensor on each product's output and bias
            // sum — not ONNX Runtime's kernels. So it is only reported, and FastAttn (which reads the weights dequantised and
            // runs the activations in FP32) must stay at least as close to the unquantised model
            Assert.True(mineToOriginal >= int8ToOriginal, $"cosine with the unquantised model: FastAttn {mineToOriginal:F5}, ONNX Runtime int8 {int8ToOriginal:F5}");
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Theory]
    [InlineData(false)]   // quantize_static's defaults: one scale per weight
    [InlineData(true)]    // per_channel=True: one scale per output column
    public void AQdqExport_LoadsWithItsWeightsDequantised(bool perChannel)
    {
        string dir = Path.Combine(PackagedModel.CacheRoot, $"all-MiniLM-L6-v2-{MiniLmPackage.Version}-qdq{perChannel}-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        try
        {
            string qdq = Path.Combine(dir, "model.onnx"), twin = Path.Combine(dir, "fp32-dequantised.onnx");
            File.Copy(MiniLmPackage.Files.Vocab, Path.Combine(dir, "vocab.txt"), overwrite: true);
            int products, pairs;
            using (var original = SentenceEmbedder.Load(Path.GetDirectoryName(MiniLmPackage.Files.Model)!, options: new SentenceEmbedderOptions { MaxSessions = 1 }))
                (products, pairs) = Write(qdq, twin, perChannel, original.Tokenizer);
            Assert.Equal(36, products);                                  // 6 layers × (Q, K, V, output, two feed-forward)
            var file = OnnxModelFile.Open(qdq);
            Assert.Empty(file.Unmatched);
            Assert.DoesNotContain(file.TensorNames, t => t.EndsWith("_scale", StringComparison.Ordinal) || t.EndsWith("_zero_point", StringComparison.Ordinal));
            using var embedder = SentenceEmbedder.Load(dir, options: new SentenceEmbedderOptions { MaxSessions = 1 });
            using var session = new EmbeddingSession(embedder.Model, embedder.Tokenizer);
            using var ortFp32 = new InferenceSession(twin, new SessionOptions { IntraOpNumThreads = 1 });
            using var ortInt8 = new InferenceSession(qdq, new SessionOptions { IntraOpNumThreads = 1 });
            using var ortOriginal = new InferenceSession(MiniLmPackage.Files.Model, new SessionOptions { IntraOpNumThreads = 1 });
            var (worst, worstCosInt8, mineToOriginal, int8ToOriginal) = OnnxRewrite.CompareQuantised(embedder, session, ortFp32, ortInt8, ortOriginal, MiniLmParityTests.BuiltIn.Skip(20).Take(20));   // texts the calibration did not see
            output.WriteLine($"{products} QDQ products, {pairs} activation pairs (per channel: {perChannel}); FastAttn vs ONNX Runtime on the dequantised FP32 graph: max|Δ|/max|ref| {worst:E2}; "
                + $"mean-pooled cosine with ONNX Runtime's int8 execution of the QDQ file ≥ {worstCosInt8:F5}; with the unquantised model: FastAttn ≥ {mineToOriginal:F5}, "
                + $"ONNX Runtime's int8 execution ≥ {int8ToOriginal:F5}");
            Assert.True(worst <= 2e-6, $"FastAttn vs the dequantised FP32 graph: {worst:E2}");
            // ONNX Runtime's int8 run also quantises the activations (statically, with the calibrated ranges): FastAttn's FP32
            // run of the int8 weights stays at least as close to the unquantised model as that run does
            Assert.True(mineToOriginal >= int8ToOriginal, $"cosine with the unquantised model: FastAttn {mineToOriginal:F5}, ONNX Runtime int8 {int8ToOriginal:F5}");
            Assert.True(worstCosInt8 >= 0.95, $"cosine with ONNX Runtime's int8 execution {worstCosInt8:F5}");
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
