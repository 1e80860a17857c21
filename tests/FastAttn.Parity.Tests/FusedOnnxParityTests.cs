using System.Runtime.InteropServices;
using FastAttn.Embeddings;
using FastAttn.Onnx;
using FastAttn.Onnx.Proto;
using OnnxNode = FastAttn.Onnx.Proto.OnnxNode;
using FastAttn.TestSupport;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;

namespace FastAttn.Parity.Tests;

/// <summary>
/// A BERT in the form ONNX Runtime's Python transformer optimiser writes (and Hugging Face Optimum's O2–O4 exports carry):
/// every layer one com.microsoft <c>Attention</c> node (query, key and value as one [in, 3·out] weight), two
/// <c>SkipLayerNormalization</c> nodes (the residual add, LayerNorm and the output projection's bias), a MatMul +
/// <c>BiasGelu</c> feed-forward, and <c>EmbedLayerNormalization</c> for the embeddings. No such file is served here, so the
/// test writes one from all-MiniLM-L6-v2 (the contrib operators' published schemas), has ONNX Runtime run it to show it
/// computes the original model, and then checks that FastAttn reads its weights and matches.
/// </summary>
public class FusedOnnxParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static OnnxTensor Tensor(string name, float[] data, params long[] dims)
    {
        var t = new OnnxTensor { Name = name, DataType = 1, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(data.AsSpan())) };
        t.Dims.AddRange(dims);
        return t;
    }

    private static OnnxNode Node(string op, string domain, string[] inputs, string[] outputs, params (string Name, object Value)[] attributes)
    {
        var n = new OnnxNode { OpType = op, Name = $"{op}_{outputs[0]}" };
        if (domain.Length > 0) n.Domain = domain;
        n.Input.AddRange(inputs);
        n.Output.AddRange(outputs);
        foreach (var (name, value) in attributes)
            n.Attribute.Add(value switch
            {
                long i => new OnnxAttribute { Name = name, I = i, Type = 2 },
                float f => new OnnxAttribute { Name = name, F = f, Type = 1 },
                _ => throw new ArgumentException(name),
            });
        return n;
    }

    /// <summary>[out, in] (PyTorch) → [in, out] (what MatMul and Attention take).</summary>
    private static float[] InOut(OnnxModelFile src, string name, int rows, int cols)
    {
        var w = new float[rows * cols];
        src.ReadFloat32(name, w);
        var t = new float[w.Length];
        for (int r = 0; r < rows; r++) for (int c = 0; c < cols; c++) t[c * rows + r] = w[r * cols + c];
        return t;
    }

    private static float[] Read(OnnxModelFile src, string name, int n)
    {
        var v = new float[n];
        src.ReadFloat32(name, v);
        return v;
    }

    /// <summary>all-MiniLM-L6-v2 rewritten with fused nodes, into <paramref name="dir"/> (with its vocab.txt).</summary>
    internal static void WriteFused(string dir, QkvForm form = QkvForm.Float, bool quantisedEmbeddings = false)
    {
        var (modelPath, vocab) = MiniLmPackage.Files;
        var src = OnnxModelFile.Open(modelPath);
        var model = OnnxModel.Parser.ParseFrom(File.ReadAllBytes(modelPath));
        var g = model.Graph;
        const int H = 384, Ff = 1536, Layers = 6, Heads = 12;
        const float Eps = 1e-12f;
        var nodes = new List<OnnxNode>();
        var inits = new List<OnnxTensor>();
        void Init(OnnxTensor t) => inits.Add(t);

        nodes.Add(Node("Cast", "", ["input_ids"], ["ids32"], ("to", 6L)));
        nodes.Add(Node("Cast", "", ["token_type_ids"], ["types32"], ("to", 6L)));
        nodes.Add(Node("Cast", "", ["attention_mask"], ["mask32"], ("to", 6L)));
        // the embedding tables and LayerNorm keep their names (as the optimiser leaves them)
        string[] embedInputs = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight", "embeddings.token_type_embeddings.weight",
             "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"];
        var overrides = new Dictionary<string, OnnxTensor>();
        if (quantisedEmbeddings)
        {
            // as quantize_dynamic quantises EmbedLayerNormalization: each of the five as uint8 with its own scale and zero
            // point (from its range, which holds 0); the twin holds the same values dequantised under the original names
            var codes = new List<string>();
            var scales = new List<string>();
            var zeros = new List<string>();
            foreach (var name in embedInputs)
            {
                var t = g.Initializer.Single(i => i.Name == name);
                var f = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(t.RawData.Span).ToArray();
                float lo = Math.Min(0, f.Min()), hi = Math.Max(0, f.Max()), scale = (hi - lo) / 255f;
                int zero = Math.Clamp((int)MathF.Round(-lo / scale), 0, 255);
                var q = f.Select(v => (byte)Math.Clamp((int)MathF.Round(v / scale) + zero, 0, 255)).ToArray();
                if (form == QkvForm.Quantized)
                {
                    var tq = new OnnxTensor { Name = name + "_quantized", DataType = 2, RawData = ByteString.CopyFrom(q) };
                    tq.Dims.AddRange(t.Dims);
                    Init(tq);
                    Init(Tensor(name + "_scale", [scale]));
                    Init(new OnnxTensor { Name = name + "_zero_point", DataType = 2, RawData = ByteString.CopyFrom([(byte)zero]) });
                    codes.Add(name + "_quantized"); scales.Add(name + "_scale"); zeros.Add(name + "_zero_point");
                }
                else overrides[name] = Tensor(name, q.Select(c => (c - zero) * scale).ToArray(), [.. t.Dims]);
            }
            if (form == QkvForm.Quantized)
                nodes.Add(Node("QEmbedLayerNormalization", "com.microsoft", ["ids32", "types32", .. codes, "mask32", .. scales, .. zeros], ["emb", "mask_index"], ("epsilon", Eps)));
        }
        if (!quantisedEmbeddings || form != QkvForm.Quantized)
            nodes.Add(Node("EmbedLayerNormalization", "com.microsoft", ["ids32", "types32", .. embedInputs, "mask32"], ["emb", "mask_index"], ("epsilon", Eps)));
        string x = "emb";
        for (int l = 0; l < Layers; l++)
        {
            string p = $"encoder.layer.{l}.";
            // Q, K, V side by side in one weight and one bias, under names that say nothing (as the optimiser writes them)
            var wq = InOut(src, p + "attention.self.query.weight", H, H);
            var wk = InOut(src, p + "attention.self.key.weight", H, H);
            var wv = InOut(src, p + "attention.self.value.weight", H, H);
            var qkv = new float[H * 3 * H];
            for (int r = 0; r < H; r++)
            {
                wq.AsSpan(r * H, H).CopyTo(qkv.AsSpan(r * 3 * H, H));
                wk.AsSpan(r * H, H).CopyTo(qkv.AsSpan(r * 3 * H + H, H));
                wv.AsSpan(r * H, H).CopyTo(qkv.AsSpan(r * 3 * H + 2 * H, H));
            }
            Init(Tensor($"Attention_{l}_qkv_bias", [.. Read(src, p + "attention.self.query.bias", H), .. Read(src, p + "attention.self.key.bias", H), .. Read(src, p + "attention.self.value.bias", H)], 3 * H));
            // quantised as quantize_dynamic quantises an optimised graph's Attention: int8, one scale, zero point 0
            float qs = qkv.Max(MathF.Abs) / 127f;
            var q8 = qkv.Select(v => (sbyte)Math.Clamp((int)MathF.Round(v / qs), -127, 127)).ToArray();
            if (form == QkvForm.Quantized)
            {
                string wq8 = $"Attention_{l}_qkv_weight_quantized";
                var tq = new OnnxTensor { Name = wq8, DataType = 3, RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(q8.AsSpan())) };
                tq.Dims.AddRange([H, 3 * H]);
                Init(tq);
                Init(Tensor(wq8 + "_scale", [qs]));
                Init(new OnnxTensor { Name = wq8 + "_zero_point", DataType = 3, RawData = ByteString.CopyFrom([0]) });
                nodes.Add(Node("DynamicQuantizeLinear", "", [x], [$"xq{l}", $"xs{l}", $"xz{l}"]));
                nodes.Add(Node("QAttention", "com.microsoft", [$"xq{l}", wq8, $"Attention_{l}_qkv_bias", $"xs{l}", wq8 + "_scale", "mask32", $"xz{l}", wq8 + "_zero_point"],
                    [$"att{l}"], ("num_heads", (long)Heads)));
            }
            else
            {
                Init(Tensor($"Attention_{l}_qkv_weight", form == QkvForm.Dequantized ? q8.Select(v => v * qs).ToArray() : qkv, H, 3 * H));
                nodes.Add(Node("Attention", "com.microsoft", [x, $"Attention_{l}_qkv_weight", $"Attention_{l}_qkv_bias", "mask32"], [$"att{l}"], ("num_heads", (long)Heads)));
            }
            Init(Tensor($"onnx::MatMul_{1000 + 3 * l}", InOut(src, p + "attention.output.dense.weight", H, H), H, H));
            nodes.Add(Node("MatMul", "", [$"att{l}", $"onnx::MatMul_{1000 + 3 * l}"], [$"ao{l}"]));
            nodes.Add(Node("SkipLayerNormalization", "com.microsoft",
                [$"ao{l}", x, p + "attention.output.LayerNorm.weight", p + "attention.output.LayerNorm.bias", p + "attention.output.dense.bias"], [$"x1_{l}"], ("epsilon", Eps)));
            Init(Tensor($"onnx::MatMul_{1001 + 3 * l}", InOut(src, p + "intermediate.dense.weight", Ff, H), H, Ff));
            nodes.Add(Node("MatMul", "", [$"x1_{l}", $"onnx::MatMul_{1001 + 3 * l}"], [$"hi{l}"]));
            nodes.Add(Node("BiasGelu", "com.microsoft", [$"hi{l}", p + "intermediate.dense.bias"], [$"gi{l}"]));
            Init(Tensor($"onnx::MatMul_{1002 + 3 * l}", InOut(src, p + "output.dense.weight", H, Ff), Ff, H));
            nodes.Add(Node("MatMul", "", [$"gi{l}", $"onnx::MatMul_{1002 + 3 * l}"], [$"fo{l}"]));
            string y = l == Layers - 1 ? "last_hidden_state" : $"x2_{l}";
            nodes.Add(Node("SkipLayerNormalization", "com.microsoft",
                [$"fo{l}", $"x1_{l}", p + "output.LayerNorm.weight", p + "output.LayerNorm.bias", p + "output.dense.bias"], [y], ("epsilon", Eps)));
            x = y;
        }
        // the pooler: the original nodes that read last_hidden_state, and what they feed
        var live = new HashSet<string> { "last_hidden_state" };
        var pooler = new List<OnnxNode>();
        foreach (var n in g.Node)
            if (n.Input.Any(live.Contains)) { pooler.Add(n); live.UnionWith(n.Output); }
        // with the constants (Constant nodes) they read
        var available = nodes.SelectMany(n => n.Output).Concat(g.Input.Select(i => i.Name)).Concat(g.Initializer.Select(t => t.Name)).Concat(inits.Select(t => t.Name)).ToHashSet();
        var producer = g.Node.SelectMany(n => n.Output.Select(o => (o, n))).ToDictionary(p => p.o, p => p.n);
        var keep = new HashSet<OnnxNode>(pooler);
        var todo = new Stack<string>(pooler.SelectMany(n => n.Input));
        while (todo.Count > 0)
        {
            string v = todo.Pop();
            if (v.Length == 0 || available.Contains(v) || live.Contains(v) || !producer.TryGetValue(v, out var pn) || !keep.Add(pn)) continue;
            foreach (var i in pn.Input) todo.Push(i);
        }
        nodes.AddRange(g.Node.Where(keep.Contains));
        var used = nodes.SelectMany(n => n.Input).ToHashSet();
        var graph = new OnnxGraph { Name = g.Name };
        graph.Node.AddRange(nodes);
        graph.Initializer.AddRange(g.Initializer.Where(t => used.Contains(t.Name)).Select(t => overrides.GetValueOrDefault(t.Name, t)));
        graph.Initializer.AddRange(inits);
        graph.Input.AddRange(g.Input);
        graph.Output.AddRange(g.Output);
        model.Graph = graph;
        model.OpsetImport.Add(new OnnxOpset { Domain = "com.microsoft", Version = 1 });
        Directory.CreateDirectory(dir);
        File.WriteAllBytes(Path.Combine(dir, "model.onnx"), model.ToByteArray());
        File.Copy(vocab, Path.Combine(dir, "vocab.txt"), overwrite: true);
    }

    /// <summary>How <see cref="WriteFused"/> holds each layer's query/key/value weight.</summary>
    internal enum QkvForm { Float, Quantized, Dequantized }

    /// <summary>
    /// The fused graph with its Attention nodes quantised as ONNX Runtime's quantize_dynamic quantises an optimised graph —
    /// DynamicQuantizeLinear → com.microsoft QAttention with an int8 weight — read with the weight dequantised (the
    /// activations stay FP32): FastAttn against ONNX Runtime on the same graph with the dequantised weight in float
    /// Attention nodes; ONNX Runtime's own int8 run of the QAttention file is held against that twin too, so the file is
    /// what the operator's schema says.
    /// </summary>
    /// <remarks>
    /// With <paramref name="embeddings"/> the embeddings are quantised too, as quantize_dynamic quantises the optimised
    /// graph's EmbedLayerNormalization: com.microsoft QEmbedLayerNormalization with uint8 tables, gamma and beta, each with
    /// its scale and zero point — so the file is the whole of what quantize_dynamic writes for an optimised BERT.
    /// </remarks>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AQuantisedFusedExport_ReadsQAttentionWeights(bool embeddings)
    {
        string dirQ = Path.Combine(PackagedModel.CacheRoot, $"all-MiniLM-L6-v2-{MiniLmPackage.Version}-qattention{embeddings}-{Environment.ProcessId}");
        string dirT = dirQ + "-twin";
        try
        {
            WriteFused(dirQ, QkvForm.Quantized, embeddings);
            WriteFused(dirT, QkvForm.Dequantized, embeddings);
            var onnx = OnnxModelFile.Open(Path.Combine(dirQ, "model.onnx"));
            Assert.Equal(6, onnx.Nodes.Count(n => n.OpType == "QAttention"));
            Assert.Equal(embeddings ? 1 : 0, onnx.Nodes.Count(n => n.OpType == "QEmbedLayerNormalization"));
            if (embeddings)
            {
                // the tables, gamma and beta as read equal the twin's (the LayerNorm after them would hide a constant shift)
                var twinFile = OnnxModelFile.Open(Path.Combine(dirT, "model.onnx"));
                foreach (var name in new[] { "word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias" }.Select(n => "embeddings." + n))
                {
                    Assert.True(onnx.TryGetShape(name, out var shape), name);
                    var n = (int)shape.Aggregate(1L, (a, b) => a * b);
                    Assert.Equal(Read(twinFile, name, n), Read(onnx, name, n));
                }
            }
            Assert.DoesNotContain(onnx.TensorNames, n => n.EndsWith("_scale", StringComparison.Ordinal));
            using var embedder = SentenceEmbedder.Load(dirQ, options: new SentenceEmbedderOptions { MaxSessions = 1 });
            using var session = new EmbeddingSession(embedder.Model, embedder.Tokenizer);
            using var ortQ = new InferenceSession(Path.Combine(dirQ, "model.onnx"), new SessionOptions { IntraOpNumThreads = 1 });
            using var ortT = new InferenceSession(Path.Combine(dirT, "model.onnx"), new SessionOptions { IntraOpNumThreads = 1 });
            int h = embedder.Model.Config.HiddenSize;
            double worst = 0, ortCos = 1;
            foreach (var s in MiniLmParityTests.BuiltIn.Take(20))
            {
                var ids = embedder.Tokenizer.Encode(s);
                var twin = MiniLmParityTests.Ort(ortT, ids);
                var mine = new float[ids.Length * h];
                session.HiddenStates(ids, [ids.Length], mine);
                double mr = twin.Max(MathF.Abs), md = 0;
                for (int i = 0; i < mine.Length; i++) md = Math.Max(md, Math.Abs(mine[i] - twin[i]));
                worst = Math.Max(worst, md / mr);
                var int8 = MiniLmParityTests.Ort(ortQ, ids);
                ortCos = Math.Min(ortCos, Vectors.Cosine(OnnxRewrite.Mean(int8, ids.Length, h), OnnxRewrite.Mean(twin, ids.Length, h)));
            }
            output.WriteLine($"QAttention{(embeddings ? " + QEmbedLayerNormalization" : "")}: FastAttn vs ONNX Runtime on the dequantised twin max|Δ|/max|ref| {worst:E2}; ONNX Runtime's int8 run vs the twin: mean-pooled cosine ≥ {ortCos:F5}");
            Assert.True(worst <= 2e-6, $"FastAttn on the QAttention file vs the twin: {worst:E2}");
            Assert.True(ortCos >= 0.99, $"ONNX Runtime's run of the written QAttention file is far from its twin ({ortCos:F5}): the file is not what it claims");
        }
        finally
        {
            foreach (var d in new[] { dirQ, dirT }) if (Directory.Exists(d)) Directory.Delete(d, recursive: true);
        }
    }

    [Fact]
    public void AFusedExport_LoadsAndMatchesOnnxRuntime()
    {
        string dir = Path.Combine(PackagedModel.CacheRoot, $"all-MiniLM-L6-v2-{MiniLmPackage.Version}-fused-{Environment.ProcessId}");
        try
        {
            WriteFused(dir);
            string fusedPath = Path.Combine(dir, "model.onnx");
            var onnx = OnnxModelFile.Open(fusedPath);
            Assert.DoesNotContain(onnx.Nodes, n => n.OpType is "LayerNormalization" or "Softmax" or "Erf");   // nothing unfused left
            Assert.Contains("Attention_0_qkv_weight", onnx.Origin("encoder.layer.0.attention.self.key.weight")!.Value.Initializer);

            using var ortOriginal = new InferenceSession(MiniLmPackage.Files.Model, new SessionOptions { IntraOpNumThreads = 1 });
            using var ortFused = new InferenceSession(fusedPath, new SessionOptions { IntraOpNumThreads = 1 });
            using var embedder = SentenceEmbedder.Load(dir, options: new SentenceEmbedderOptions { MaxSessions = 1 });
            output.WriteLine(embedder.Model.Source);
            Assert.Equal(12, embedder.Model.Config.NumAttentionHeads);
            Assert.Equal(1e-12f, embedder.Model.Config.LayerNormEps);
            Assert.Equal(Kernels.Activation.Gelu, embedder.Model.Config.HiddenAct);
            using var session = new EmbeddingSession(embedder.Model, embedder.Tokenizer);
            int h = embedder.Model.Config.HiddenSize;
            double worstOrt = 0, worstMine = 0;
            foreach (var s in MiniLmParityTests.BuiltIn.Take(20))
            {
                var ids = embedder.Tokenizer.Encode(s);
                var reference = MiniLmParityTests.Ort(ortOriginal, ids);
                var fused = MiniLmParityTests.Ort(ortFused, ids);
                var mine = new float[ids.Length * h];
                session.HiddenStates(ids, [ids.Length], mine);
                double mr = reference.Max(MathF.Abs), dOrt = 0, dMine = 0;
                for (int i = 0; i < mine.Length; i++) { dOrt = Math.Max(dOrt, Math.Abs(fused[i] - reference[i])); dMine = Math.Max(dMine, Math.Abs(mine[i] - reference[i])); }
                worstOrt = Math.Max(worstOrt, dOrt / mr);
                worstMine = Math.Max(worstMine, dMine / mr);
            }
            output.WriteLine($"max|Δ|/max|ref| against ONNX Runtime on the original: ONNX Runtime on the fused file {worstOrt:E2}, FastAttn on the fused file {worstMine:E2}");
            Assert.True(worstOrt <= 1e-5, $"the written fused graph does not compute the model: {worstOrt:E2}");   // the file is what it claims
            Assert.True(worstMine <= 2e-6, $"FastAttn on the fused file: {worstMine:E2}");

            // Hugging Face's repository layout: the variant under onnx/ (here model_O2.onnx), config.json and the vocabulary
            // above it — the file alone loads with its companions from the folder above
            File.WriteAllText(Path.Combine(dir, "config.json"), """
                {"model_type": "bert", "hidden_size": 384, "num_attention_heads": 12, "num_hidden_layers": 6, "intermediate_size": 1536,
                 "hidden_act": "gelu", "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "type_vocab_size": 2, "vocab_size": 30522}
                """);
            Directory.CreateDirectory(Path.Combine(dir, "onnx"));
            string variant = Path.Combine(dir, "onnx", "model_O2.onnx");
            File.Move(fusedPath, variant);
            using var fromVariant = SentenceEmbedder.Load(variant);
            Assert.Contains("config.json", fromVariant.Model.Source);
            Assert.Equal(embedder.Encode("The quick brown fox."), fromVariant.Encode("The quick brown fox."));
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
    }
}
