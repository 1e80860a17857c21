using FastAttn.Embeddings;
using FastAttn.IO;
using FastAttn.Kernels;
using FastAttn.Layers;
using FastAttn.Tests.IO;
using static FastAttn.Tests.Layers.LayerTests;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// A tiny BERT with random weights, written as a Hugging Face checkpoint (model.safetensors + config.json), loaded by
/// <see cref="BertModel"/> and checked against a double-precision BERT forward written here from the formulas.
/// </summary>
public class BertModelTests(Xunit.Abstractions.ITestOutputHelper output)
{
    internal const int H = 24, Heads = 3, Layers = 2, Ff = 40, Vocab = 50, MaxPos = 16, Types = 2;
    internal const float Eps = 1e-12f;

    /// <summary>HF BertModel tensors: name → (data, shape).</summary>
    internal static Dictionary<string, (float[] Data, long[] Shape)> Checkpoint(int seed = 1, bool pooler = true)
    {
        var t = new Dictionary<string, (float[], long[])>();
        int s = seed * 100;
        void Add(string name, float scale, params long[] shape) => AddRandom(t, name, scale, s++, shape);
        Add("embeddings.word_embeddings.weight", 0.5f, Vocab, H);
        Add("embeddings.position_embeddings.weight", 0.5f, MaxPos, H);
        Add("embeddings.token_type_embeddings.weight", 0.5f, Types, H);
        Add("embeddings.LayerNorm.weight", 0.2f, H);
        Add("embeddings.LayerNorm.bias", 0.1f, H);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"encoder.layer.{l}.";
            foreach (var m in new[] { "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense" })
            { Add(p + m + ".weight", 0.3f, H, H); Add(p + m + ".bias", 0.1f, H); }
            Add(p + "attention.output.LayerNorm.weight", 0.2f, H); Add(p + "attention.output.LayerNorm.bias", 0.1f, H);
            Add(p + "intermediate.dense.weight", 0.3f, Ff, H); Add(p + "intermediate.dense.bias", 0.1f, Ff);
            Add(p + "output.dense.weight", 0.3f, H, Ff); Add(p + "output.dense.bias", 0.1f, H);
            Add(p + "output.LayerNorm.weight", 0.2f, H); Add(p + "output.LayerNorm.bias", 0.1f, H);
        }
        if (pooler) { Add("pooler.dense.weight", 0.3f, H, H); Add("pooler.dense.bias", 0.1f, H); }
        return t;
    }

    /// <summary>A random tensor of <paramref name="shape"/> under <paramref name="name"/> (a LayerNorm weight around 1).</summary>
    internal static void AddRandom(Dictionary<string, (float[] Data, long[] Shape)> t, string name, float scale, int seed, params long[] shape)
    {
        long n = shape.Aggregate(1L, (a, b) => a * b);
        var d = FastAttn.Tests.Reference.Random((int)n, seed, scale);
        if (name.EndsWith("LayerNorm.weight")) for (int i = 0; i < d.Length; i++) d[i] += 1;
        t[name] = (d, shape);
    }

    internal static string ConfigJson(int heads = Heads) =>
        $$"""{"model_type": "bert", "hidden_size": {{H}}, "num_attention_heads": {{heads}}, "num_hidden_layers": {{Layers}}, "intermediate_size": {{Ff}}, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "max_position_embeddings": {{MaxPos}}, "type_vocab_size": {{Types}}, "vocab_size": {{Vocab}}}""";

    internal static string Write(TempDir dir, Dictionary<string, (float[] Data, long[] Shape)> t, bool config = true, string file = "model.safetensors",
        IReadOnlyDictionary<string, string>? extraF32 = null)
    {
        string path = dir.File(file);
        SafeTensorsWriter.Write(path, t.Select(kv => new SafeTensorsWriter.Entry(kv.Key, kv.Value.Data, kv.Value.Shape)));
        if (config) File.WriteAllText(dir.File("config.json"), ConfigJson());
        return path;
    }

    /// <summary>last_hidden_state of one sequence, in double, from the formulas.</summary>
    internal static double[] RefBert(Dictionary<string, (float[] Data, long[] Shape)> w, string prefix, int[] ids, int[]? types = null)
    {
        float[] W(string n) => w[prefix + n].Data;
        int t = ids.Length;
        var x = new double[t * H];
        for (int i = 0; i < t; i++)
            for (int c = 0; c < H; c++)
                x[i * H + c] = (double)W("embeddings.word_embeddings.weight")[ids[i] * H + c] + W("embeddings.position_embeddings.weight")[i * H + c] + W("embeddings.token_type_embeddings.weight")[(types?[i] ?? 0) * H + c];
        x = Ln(x, t, H, W("embeddings.LayerNorm.weight"), W("embeddings.LayerNorm.bias"), Eps);
        return RefLayers(w, prefix, x, t);
    }

    /// <summary>BERT's encoder layers on embedded tokens <paramref name="x"/> ([t, H]).</summary>
    internal static double[] RefLayers(Dictionary<string, (float[] Data, long[] Shape)> w, string prefix, double[] x, int t)
    {
        float[] W(string n) => w[prefix + n].Data;
        for (int l = 0; l < Layers; l++)
        {
            string p = $"encoder.layer.{l}.";
            var q = Lin(x, t, W(p + "attention.self.query.weight"), W(p + "attention.self.query.bias"), H, H);
            var k = Lin(x, t, W(p + "attention.self.key.weight"), W(p + "attention.self.key.bias"), H, H);
            var v = Lin(x, t, W(p + "attention.self.value.weight"), W(p + "attention.self.value.bias"), H, H);
            var qkv = new double[t * 3 * H];
            for (int i = 0; i < t; i++) { Array.Copy(q, i * H, qkv, i * 3 * H, H); Array.Copy(k, i * H, qkv, i * 3 * H + H, H); Array.Copy(v, i * H, qkv, i * 3 * H + 2 * H, H); }
            var ctx = SelfAttn(qkv, t, H, Heads);
            var att = Lin(ctx, t, W(p + "attention.output.dense.weight"), W(p + "attention.output.dense.bias"), H, H);
            var x1 = Ln(x.Zip(att, (a, b) => a + b).ToArray(), t, H, W(p + "attention.output.LayerNorm.weight"), W(p + "attention.output.LayerNorm.bias"), Eps);
            var inter = Lin(x1, t, W(p + "intermediate.dense.weight"), W(p + "intermediate.dense.bias"), Ff, H).Select(z => FastAttn.Tests.Reference.Act(z, Activation.Gelu)).ToArray();
            var o = Lin(inter, t, W(p + "output.dense.weight"), W(p + "output.dense.bias"), H, Ff);
            x = Ln(x1.Zip(o, (a, b) => a + b).ToArray(), t, H, W(p + "output.LayerNorm.weight"), W(p + "output.LayerNorm.bias"), Eps);
        }
        return x;
    }

    /// <summary>
    /// float32 GEMMs of depth ≤ 40 and two LayerNorms per layer: relative errors of a few 10⁻⁷ per layer; 2·10⁻⁵ of the
    /// largest value leaves a wide margin and still catches any wrong weight, transpose or mask.
    /// </summary>
    /// <summary>
    /// Runs <paramref name="sequences"/> through <paramref name="session"/> packed into one call and each alone, and holds
    /// both against <paramref name="expected"/> (each <c>[tokens, width]</c>) with <see cref="AssertClose"/>; returns the
    /// packed call's ids, lengths and output buffer for the caller's further checks.
    /// </summary>
    internal static (int[] Ids, int[] Lengths, float[] Packed) AssertPackedAndAlone(EmbeddingSession session, int[][] sequences, IReadOnlyList<double[]> expected, int width, string what)
    {
        int[] ids = [.. sequences.SelectMany(s => s)], lengths = [.. sequences.Select(s => s.Length)];
        var packed = new float[ids.Length * width];
        session.HiddenStates(ids, lengths, packed);
        for (int k = 0, t0 = 0; k < sequences.Length; t0 += sequences[k].Length, k++)
        {
            var s = sequences[k];
            AssertClose(expected[k], packed.AsSpan(t0 * width, s.Length * width), $"{what} packed, sequence of {s.Length}");
            var alone = new float[s.Length * width];
            session.HiddenStates(s, [s.Length], alone);
            AssertClose(expected[k], alone, $"{what} alone, sequence of {s.Length}");
        }
        return (ids, lengths, packed);
    }

    /// <summary>
    /// A session with <paramref name="options"/> over <paramref name="model"/>: <see cref="AssertPackedAndAlone"/>, then no
    /// allocation in the packed call's steady state.
    /// </summary>
    internal static void AssertStatesWithoutAllocation(BertModel model, SentenceEmbedderOptions options, int[][] sequences, IReadOnlyList<double[]> expected, int width, string what)
    {
        using var session = new EmbeddingSession(model, null, options);
        var (ids, lengths, packed) = AssertPackedAndAlone(session, sequences, expected, width, what);
        Assert.Equal(0, FastAttn.Tests.Reference.SteadyStateAllocations(() => session.HiddenStates(ids, lengths, packed)));
    }

    /// <summary>
    /// Loads the model in <paramref name="dir"/> in FP32 and in <paramref name="precision"/>: the reduced one must store fewer
    /// bytes, differ from FP32 (the plan applied) by less than <paramref name="bound"/> of the largest state (int8's share
    /// for two O(1)-output layers is a few hundredths, bf16's far less), and allocate nothing on 2 threads.
    /// </summary>
    internal static void AssertReducedPrecision(string dir, Precision precision, int[][] sequences, int width, double int8Bound = 0.06)
    {
        using var f32 = BertModel.Load(dir);
        using var low = BertModel.Load(dir, new BertLoadOptions { Precision = new PrecisionPlan(precision) });
        Assert.True(low.WeightBytes < f32.WeightBytes, $"{low.WeightBytes} vs {f32.WeightBytes} bytes");
        int[] ids = [.. sequences.SelectMany(s => s)], lengths = [.. sequences.Select(s => s.Length)];
        using var a = new EmbeddingSession(f32, null, new SentenceEmbedderOptions { MaxBatchTokens = 128 });
        using var b = new EmbeddingSession(low, null, new SentenceEmbedderOptions { MaxBatchTokens = 128, Threads = 2 });
        float[] ya = new float[ids.Length * width], yb = new float[ids.Length * width];
        a.HiddenStates(ids, lengths, ya);
        b.HiddenStates(ids, lengths, yb);
        double worst = 0, scale = ya.Max(Math.Abs);
        for (int i = 0; i < ya.Length; i++) worst = Math.Max(worst, Math.Abs(yb[i] - ya[i]));
        Assert.True(worst / scale < (precision == Precision.Int8 ? int8Bound : 0.01), $"{precision}: max |Δ| / max |y| = {worst / scale}");
        Assert.True(worst > 0, "the reduced-precision model gave the FP32 bits: the plan was not applied");
        Assert.Equal(0, FastAttn.Tests.Reference.SteadyStateAllocations(() => b.HiddenStates(ids, lengths, yb)));
    }

    /// <summary>
    /// Runs <paramref name="sequences"/> packed on 1 and on 2 threads and asserts the same bits, and no allocation in the
    /// 2-thread steady state.
    /// </summary>
    internal static void AssertTwoThreadsSameBits(BertModel model, int[][] sequences, int width, int maxBatchTokens)
    {
        int[] ids = [.. sequences.SelectMany(s => s)], lengths = [.. sequences.Select(s => s.Length)];
        using var one = new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxBatchTokens = maxBatchTokens, Threads = 1 });
        using var two = new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxBatchTokens = maxBatchTokens, Threads = 2 });
        float[] a = new float[ids.Length * width], b = new float[ids.Length * width];
        one.HiddenStates(ids, lengths, a);
        two.HiddenStates(ids, lengths, b);
        Assert.Equal(a, b);
        Assert.Equal(0, FastAttn.Tests.Reference.SteadyStateAllocations(() => two.HiddenStates(ids, lengths, b)));
    }

    /// <summary>Classifies <paramref name="sequences"/> in one packed call and holds each row against <paramref name="reference"/>'s logits.</summary>
    internal static void AssertLogits(EmbeddingSession session, int[][] sequences, int classes, Func<int[], double[]> reference)
    {
        int[] all = [.. sequences.SelectMany(s => s)], lengths = [.. sequences.Select(s => s.Length)];
        var packed = new float[sequences.Length * classes];
        session.ClassifyIds(all, default, lengths, packed);
        for (int k = 0; k < sequences.Length; k++)
            AssertClose(reference(sequences[k]), packed.AsSpan(k * classes, classes), $"logits, sequence of {sequences[k].Length}");
    }

    /// <summary>
    /// A sentence-transformers folder around <paramref name="checkpoint"/>: model.safetensors, <paramref name="configJson"/>,
    /// the first <paramref name="vocab"/> pieces of <see cref="TokenizerRulesTests.Vocab"/> as vocab.txt, modules.json with
    /// Pooling and Normalize, and a Pooling config of CLS or mean; then <paramref name="text"/> through
    /// <see cref="SentenceEmbedder.Load"/> is held against <paramref name="states"/> (the reference's states of the
    /// tokenizer's ids) pooled as the folder says and normalised.
    /// </summary>
    internal static void AssertFolderEmbeds(TempDir dir, Dictionary<string, (float[] Data, long[] Shape)> checkpoint, string configJson, int vocab, bool cls,
        string text, Func<int[], double[]> states, int width)
    {
        Write(dir, checkpoint, config: false);
        File.WriteAllText(dir.File("config.json"), configJson);
        File.WriteAllText(dir.File("vocab.txt"), string.Join('\n', TokenizerRulesTests.Vocab[..vocab]) + "\n");
        File.WriteAllText(dir.File("modules.json"), """
            [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
             {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
             {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
            """);
        Directory.CreateDirectory(dir.File("1_Pooling"));
        File.WriteAllText(Path.Combine(dir.Path, "1_Pooling", "config.json"),
            $$"""{"word_embedding_dimension": {{width}}, "pooling_mode_cls_token": {{(cls ? "true" : "false")}}, "pooling_mode_mean_tokens": {{(cls ? "false" : "true")}}, "pooling_mode_max_tokens": false}""");
        using var embedder = SentenceEmbedder.Load(dir.Path);
        var ids = TokenizerRulesTests.Tokenizer(max: 512).Encode(text);
        Assert.Equal(2, ids[0]);                                    // [CLS] … [SEP], as BERT's tokenizer frames a text
        Assert.Equal(3, ids[^1]);
        var x = states(ids);
        var pooled = new double[width];
        for (int c = 0; c < width; c++)
            pooled[c] = cls ? x[c] : Enumerable.Range(0, ids.Length).Sum(i => x[i * width + c]) / ids.Length;
        double norm = Math.Sqrt(pooled.Sum(v => v * v));
        AssertClose([.. pooled.Select(v => v / norm)], embedder.Encode(text), $"'{text}' through the folder ({(cls ? "CLS" : "mean")})");
    }

    /// <summary>Each edit of <paramref name="json"/> (its text must hold <c>From</c>) makes <see cref="BertConfig.FromJson"/> refuse it with <see cref="InvalidDataException"/>.</summary>
    internal static void AssertEditsRefused(string json, params (string From, string To)[] edits)
    {
        foreach (var (from, to) in edits)
        {
            Assert.Contains(from, json);
            Assert.Throws<InvalidDataException>(() => BertConfig.FromJson(json.Replace(from, to)));
        }
    }

    internal static void AssertClose(double[] expect, ReadOnlySpan<float> got, string what)
    {
        double max = expect.Max(Math.Abs), worst = 0;
        for (int i = 0; i < expect.Length; i++) worst = Math.Max(worst, Math.Abs(got[i] - expect[i]));
        Assert.True(worst <= 2e-5 * max, $"{what}: max|Δ| = {worst:E2} against max|ref| = {max:E2}");
    }

    private static readonly int[][] Sequences = [[2, 7, 11, 3], [2, 3], [2, 45, 1, 9, 9, 30, 12, 13, 14, 3], [2]];

    [Fact]
    public void Safetensors_WithConfig_MatchesTheReference_PackedAndAlone()
    {
        IsaPaths.ForEach(() =>
        {
            using var dir = new TempDir();
            var w = Checkpoint();
            Write(dir, w);
            using var model = BertModel.Load(dir.Path);
            Assert.Equal(Heads, model.Config.NumAttentionHeads);
            Assert.Contains("config.json", model.Source);
            using var session = new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxBatchTokens = 16 });
            int[] ids = [.. Sequences.SelectMany(s => s)], lengths = [.. Sequences.Select(s => s.Length)];
            var packed = new float[ids.Length * H];
            session.HiddenStates(ids, lengths, packed);   // 17 tokens: two passes of up to 16
            int t0 = 0;
            foreach (var s in Sequences)
            {
                AssertClose(RefBert(w, "", s), packed.AsSpan(t0 * H, s.Length * H), $"sequence of {s.Length}");
                var alone = new float[s.Length * H];
                session.HiddenStates(s, [s.Length], alone);
                Assert.Equal(alone, packed.AsSpan(t0 * H, s.Length * H).ToArray());     // packing changes no bit
                t0 += s.Length;
            }
        });
    }

    [Fact]
    public void EncodeIds_InSeveralPasses_EqualsEachSequenceAlone()
    {
        using var dir = new TempDir();
        Write(dir, Checkpoint());
        using var model = BertModel.Load(dir.Path);
        using var session = new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxBatchTokens = 16, Normalize = true });
        int[] ids = [.. Sequences.SelectMany(s => s)], lengths = [.. Sequences.Select(s => s.Length)];
        int d = session.Dimension;
        var packed = new float[Sequences.Length * d];
        session.EncodeIds(ids, lengths, packed);   // 17 tokens: two passes of up to 16
        for (int i = 0; i < Sequences.Length; i++)
        {
            var alone = new float[d];
            session.EncodeIds(Sequences[i], [Sequences[i].Length], alone);
            Assert.Equal(alone, packed.AsSpan(i * d, d).ToArray());
        }
    }

    [Theory]
    [InlineData(Pooling.Mean, false)]
    [InlineData(Pooling.Cls, true)]
    [InlineData(Pooling.Pooler, true)]
    public void Pooling_MatchesTheReference(Pooling pooling, bool normalize)
    {
        using var dir = new TempDir();
        var w = Checkpoint();
        Write(dir, w);
        using var model = BertModel.Load(dir.Path);
        using var session = new EmbeddingSession(model, null, new SentenceEmbedderOptions { Pooling = pooling, Normalize = normalize });
        int[] ids = [.. Sequences.SelectMany(s => s)], lengths = [.. Sequences.Select(s => s.Length)];
        var got = new float[Sequences.Length * H];
        session.EncodeIds(ids, lengths, got);
        for (int s = 0; s < Sequences.Length; s++)
        {
            var hs = RefBert(w, "", Sequences[s]);
            int n = Sequences[s].Length;
            var e = new double[H];
            for (int c = 0; c < H; c++)
                e[c] = pooling == Pooling.Mean ? Enumerable.Range(0, n).Average(i => hs[i * H + c]) : hs[c];
            if (pooling == Pooling.Pooler)
                e = Lin(e, 1, w["pooler.dense.weight"].Data, w["pooler.dense.bias"].Data, H, H).Select(Math.Tanh).ToArray();
            if (normalize) { double norm = Math.Sqrt(e.Sum(z => z * z)); e = e.Select(z => z / norm).ToArray(); }
            AssertClose(e, got.AsSpan(s * H, H), $"{pooling} sequence {s}");
        }
        Assert.Equal(0, FastAttn.Tests.Reference.SteadyStateAllocations(() => session.EncodeIds(ids, lengths, got)));
    }

    [Fact]
    public void TaskCheckpoints_BertPrefix_Heads_Buffers_OldNames()
    {
        using var dir = new TempDir();
        var w = Checkpoint().ToDictionary(kv => "bert." + kv.Key, kv => kv.Value);
        // a sequence-classification head at the root, an integer buffer, a pretraining head, gamma/beta names
        w["classifier.weight"] = (FastAttn.Tests.Reference.Random(3 * H, 9), [3, H]);
        w["classifier.bias"] = (FastAttn.Tests.Reference.Random(3, 10), [3]);
        w["cls.predictions.bias"] = (FastAttn.Tests.Reference.Random(Vocab, 11), [Vocab]);
        var g = w["bert.embeddings.LayerNorm.weight"]; w.Remove("bert.embeddings.LayerNorm.weight"); w["bert.embeddings.LayerNorm.gamma"] = g;
        var b = w["bert.embeddings.LayerNorm.bias"]; w.Remove("bert.embeddings.LayerNorm.bias"); w["bert.embeddings.LayerNorm.beta"] = b;
        string path = dir.File("model.safetensors");
        SafeTensorsWriter.Write(path, w.Select(kv => new SafeTensorsWriter.Entry(kv.Key, kv.Value.Data, kv.Value.Shape)));
        File.WriteAllText(dir.File("config.json"), ConfigJson());
        // position_ids as int64, like Hugging Face writes them (the writer writes floats, so append a raw I64 file instead)
        using var model = BertModel.Load(path);
        Assert.Equal(BertHead.Sequence, model.Head);
        Assert.NotNull(model.Classifier);
        using var session = new EmbeddingSession(model, null);
        var hs = new float[4 * H];
        session.HiddenStates([2, 7, 11, 3], [4], hs);
        var refW = w.Where(kv => kv.Key.StartsWith("bert.")).ToDictionary(kv => kv.Key, kv => kv.Value);
        refW["bert.embeddings.LayerNorm.weight"] = g; refW["bert.embeddings.LayerNorm.bias"] = b;
        AssertClose(RefBert(refW, "bert.", [2, 7, 11, 3]), hs, "bert. prefix");
    }

    [Fact]
    public void Int64PositionIds_AreSkipped_NotAnError()
    {
        using var dir = new TempDir();
        var w = Checkpoint();
        Write(dir, w);
        // rewrite the file with an I64 embeddings.position_ids [1, MaxPos], as Hugging Face checkpoints carry it
        string path = dir.File("model.safetensors");
        var bytes = File.ReadAllBytes(path);
        int hl = (int)BitConverter.ToUInt64(bytes, 0);
        string header = System.Text.Encoding.UTF8.GetString(bytes, 8, hl).TrimEnd();
        long dataLen = bytes.Length - 8 - hl;
        header = header[..^1] + $",\"embeddings.position_ids\":{{\"dtype\":\"I64\",\"shape\":[1,{MaxPos}],\"data_offsets\":[{dataLen},{dataLen + 8 * MaxPos}]}}}}";
        var h = System.Text.Encoding.UTF8.GetBytes(header);
        using (var fs = File.Create(path))
        {
            fs.Write(BitConverter.GetBytes((ulong)h.Length));
            fs.Write(h);
            fs.Write(bytes, 8 + hl, (int)dataLen);
            for (long i = 0; i < MaxPos; i++) fs.Write(BitConverter.GetBytes(i));
        }
        using (var f = SafeTensorsFile.Open(path)) Assert.Equal(Enumerable.Range(0, MaxPos).Select(i => (float)i), f.ReadFloat32("embeddings.position_ids"));
        using var model = BertModel.Load(path);
        Assert.Equal(Layers + 1, model.Encoder.Blocks.Count);
    }

    [Fact]
    public void EveryProblem_IsListedInOneMessage_AndMissingHeadsSayWhatToPass()
    {
        using var dir = new TempDir();
        var w = Checkpoint();
        w.Remove("encoder.layer.1.attention.self.key.bias");
        w["encoder.layer.0.intermediate.dense.weight"] = (new float[(Ff + 1) * H], [Ff + 1, H]);
        w["encoder.layer.0.surprise.weight"] = (new float[4], [4]);
        Write(dir, w);
        var e = Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path));
        output.WriteLine(e.Message);
        Assert.Contains("missing: encoder.layer.1.attention.self.key.bias", e.Message);
        Assert.Contains("mis-shaped: encoder.layer.0.intermediate.dense.weight", e.Message);
        Assert.Contains("unexpected: encoder.layer.0.surprise.weight", e.Message);

        using var dir2 = new TempDir();
        Write(dir2, Checkpoint(), config: false);
        var noHeads = Assert.Throws<InvalidDataException>(() => BertModel.Load(dir2.Path));
        Assert.Contains("config.json", noHeads.Message);
        Assert.Contains("--heads", noHeads.Message);
        using var given = BertModel.Load(dir2.Path, new BertLoadOptions { Heads = Heads });
        Assert.Equal(Heads, given.Config.NumAttentionHeads);
        Assert.Contains("heads as given", given.Source);
        // a contradicting option, and config.json errors
        Write(dir2, Checkpoint());
        Assert.Throws<ArgumentException>(() => BertModel.Load(dir2.Path, new BertLoadOptions { Heads = 4 }));
        File.WriteAllText(dir2.File("config.json"), ConfigJson(heads: 5));
        Assert.Contains("does not divide", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir2.Path)).Message);
        File.WriteAllText(dir2.File("config.json"), "{\"hidden_size\": ");
        Assert.Contains("not valid JSON", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir2.Path)).Message);
        File.WriteAllText(dir2.File("config.json"), ConfigJson().Replace("\"gelu\"", "\"mish\""));
        Assert.Contains("mish", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir2.Path)).Message);
        Assert.Throws<FileNotFoundException>(() => BertModel.Load(dir2.File("nothing.safetensors")));
    }

    [Fact]
    public void SessionChecks_IdsLengthsAndOutput_BeforeRunning()
    {
        using var dir = new TempDir();
        Write(dir, Checkpoint());
        using var model = BertModel.Load(dir.Path);
        using var session = new EmbeddingSession(model, null);
        var o = new float[H];
        Assert.Throws<ArgumentOutOfRangeException>(() => session.EncodeIds([2, Vocab, 3], [3], o));
        Assert.Throws<ArgumentException>(() => session.EncodeIds([2, 3], [3], o));
        Assert.Throws<ArgumentException>(() => session.EncodeIds(new int[MaxPos + 1], [MaxPos + 1], o));   // longer than the positions
        Assert.Throws<ArgumentException>(() => session.EncodeIds([2, 3], [2], new float[H + 1]));
        Assert.ThrowsAny<ArgumentException>(() => new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxTokensPerText = MaxPos + 1 }));
        Assert.Throws<InvalidOperationException>(() => session.Encode("no tokenizer"));
    }

    /// <summary>An int8 word-embedding row holding NaN or ±∞ reads back as NaN (as in FP32, after the norm), not as zeros.</summary>
    [Fact]
    public void Int8WordRowWithNaNOrInfinity_GivesNaN_OthersFinite()
    {
        const int w = 8, vocab = 4;
        float[] word = Reference.Random(vocab * w, 5), pos = Reference.Random(4 * w, 6), type = Reference.Random(2 * w, 7);
        word[1 * w + 3] = float.NaN;
        word[2 * w + 0] = float.PositiveInfinity;
        foreach (var precision in new[] { Precision.F32, Precision.Int8 })
        {
            var emb = new BertEmbeddings(word, pos, type, new FastAttn.Layers.LayerNorm(w), precision);
            using var stack = new FastAttn.Composition.Stack(emb);
            using var session = stack.CreateSession(4);
            float[] ids = [1, 0, 2, 0, 3, 1], y = new float[3 * w];
            session.Run(ids, y);
            for (int c = 0; c < w; c++)
            {
                Assert.True(float.IsNaN(y[c]), $"{precision}: token 0 col {c} = {y[c]}");
                Assert.True(float.IsNaN(y[w + c]), $"{precision}: token 1 col {c} = {y[w + c]}");
                Assert.True(float.IsFinite(y[2 * w + c]), $"{precision}: token 2 col {c} = {y[2 * w + c]}");
            }
        }
    }
}

/// <summary>
/// <see cref="SentenceEmbedderOptions.Dimensions"/> (Matryoshka truncation): the first N values of the full vector, for
/// mean, CLS and pooler pooling and after Dense modules; normalised after the cut when normalisation is on; 0 B steady.
/// </summary>
public class MatryoshkaDimensionsTests
{
    private static readonly int[][] Sequences = [[2, 7, 11, 3], [2, 3], [2, 45, 1, 9, 9, 30, 12, 13, 14, 3], [2]];

    [Theory]
    [InlineData(Pooling.Mean, false, 0)]
    [InlineData(Pooling.Cls, true, 0)]
    [InlineData(Pooling.Pooler, true, 0)]
    [InlineData(Pooling.Mean, true, 1)]
    [InlineData(Pooling.Cls, false, 2)]
    public void FirstValues_OfTheFullVector_NormalisedAfterTheCut(Pooling pooling, bool normalize, int denseModules)
    {
        using var dir = new TempDir();
        BertModelTests.Write(dir, BertModelTests.Checkpoint());
        using var model = BertModel.Load(dir.Path);
        // Dense modules 24 → 20 (tanh) → 16 (identity)
        DenseModule[] dense = [new(FastAttn.Tests.Reference.Random(20 * BertModelTests.H, 7, 0.3f), 20, BertModelTests.H, FastAttn.Tests.Reference.Random(20, 8, 0.1f), Activation.Tanh),
            new(FastAttn.Tests.Reference.Random(16 * 20, 9, 0.3f), 16, 20, default, Activation.None)];
        var options = new SentenceEmbedderOptions { Pooling = pooling, Normalize = false, MaxBatchTokens = 64, Dense = dense[..denseModules] };
        int[] ids = [.. Sequences.SelectMany(s => s)], lengths = [.. Sequences.Select(s => s.Length)];
        using var full = new EmbeddingSession(model, null, options);
        int d = full.Dimension, keep = d - 5;
        var all = new float[Sequences.Length * d];
        full.EncodeIds(ids, lengths, all);
        using var cut = new EmbeddingSession(model, null, options with { Dimensions = keep, Normalize = normalize });
        Assert.Equal(keep, cut.Dimension);
        var got = new float[Sequences.Length * keep];
        cut.EncodeIds(ids, lengths, got);
        for (int s = 0; s < Sequences.Length; s++)
        {
            var expect = all.AsSpan(s * d, keep).ToArray();
            if (normalize) { double n = Math.Sqrt(expect.Sum(v => (double)v * v)); expect = [.. expect.Select(v => (float)(v / n))]; }
            for (int i = 0; i < keep; i++) Assert.True(Math.Abs(expect[i] - got[s * keep + i]) <= 1e-6f, $"sequence {s}, value {i}: {expect[i]} vs {got[s * keep + i]}");
        }
        Assert.Equal(0, FastAttn.Tests.Reference.SteadyStateAllocations(() => cut.EncodeIds(ids, lengths, got)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new EmbeddingSession(model, null, options with { Dimensions = d + 1 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new EmbeddingSession(model, null, options with { Dimensions = -1 }));
    }
}

/// <summary>
/// sentence-transformers' other pooling modes — max, mean_sqrt_len, weightedmean, lasttoken — against the formulas applied
/// in double to the session's own token states, packed sequences of awkward lengths; read from a Pooling config.
/// </summary>
public class PoolingModesTests
{
    private static readonly int[][] Sequences = [[2, 7, 11, 3], [2, 3], [2, 45, 1, 9, 9, 30, 12, 13, 14, 3], [2], [2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 3]];

    [Theory]
    [InlineData(Pooling.Max)]
    [InlineData(Pooling.MeanSqrtLength)]
    [InlineData(Pooling.WeightedMean)]
    [InlineData(Pooling.LastToken)]
    public void Modes_MatchTheFormulaOnTheTokenStates(Pooling pooling)
    {
        using var dir = new TempDir();
        BertModelTests.Write(dir, BertModelTests.Checkpoint());
        using var model = BertModel.Load(dir.Path);
        int h = BertModelTests.H;
        int[] ids = [.. Sequences.SelectMany(s => s)], lengths = [.. Sequences.Select(s => s.Length)];
        using var session = new EmbeddingSession(model, null, new SentenceEmbedderOptions { Pooling = pooling, MaxBatchTokens = 64 });
        var states = new float[ids.Length * h];
        session.HiddenStates(ids, lengths, states);
        var got = new float[Sequences.Length * h];
        session.EncodeIds(ids, lengths, got);
        for (int s = 0, t0 = 0; s < Sequences.Length; t0 += lengths[s], s++)
        {
            int n = lengths[s];
            for (int c = 0; c < h; c++)
            {
                double x(int t) => states[(t0 + t) * h + c];
                double expect = pooling switch
                {
                    Pooling.Max => Enumerable.Range(0, n).Max(x),
                    Pooling.MeanSqrtLength => Enumerable.Range(0, n).Sum(x) / Math.Sqrt(n),
                    Pooling.WeightedMean => Enumerable.Range(0, n).Sum(t => (t + 1) * x(t)) / Enumerable.Range(1, n).Sum(),
                    _ => x(n - 1),
                };
                Assert.True(Math.Abs(expect - got[s * h + c]) <= 1e-5 * Math.Max(1, Math.Abs(expect)), $"{pooling}, sequence {s}, value {c}: {expect} vs {got[s * h + c]}");
            }
        }
        Assert.Equal(0, FastAttn.Tests.Reference.SteadyStateAllocations(() => session.EncodeIds(ids, lengths, got)));
    }

    [Theory]
    [InlineData("max_tokens", Pooling.Max)]
    [InlineData("mean_sqrt_len_tokens", Pooling.MeanSqrtLength)]
    [InlineData("weightedmean_tokens", Pooling.WeightedMean)]
    [InlineData("lasttoken", Pooling.LastToken)]
    public void PoolingConfig_NamesTheMode(string mode, Pooling expected)
    {
        using var dir = new TempDir();
        BertModelTests.Write(dir, BertModelTests.Checkpoint());
        File.WriteAllText(dir.File("modules.json"), """
            [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
             {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
            """);
        Directory.CreateDirectory(dir.File("1_Pooling"));
        File.WriteAllText(Path.Combine(dir.Path, "1_Pooling", "config.json"), $$"""{"word_embedding_dimension": {{BertModelTests.H}}, "pooling_mode_{{mode}}": true}""");
        Assert.Equal(expected, SentenceTransformersConfig.Read(dir.Path)!.Pooling);
    }
}
