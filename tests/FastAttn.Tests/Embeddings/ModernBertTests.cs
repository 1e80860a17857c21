using FastAttn.Embeddings;
using FastAttn.Kernels;
using FastAttn.TestSupport;
using FastAttn.Tests.IO;
using static FastAttn.Tests.Layers.LayerTests;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// ModernBERT (ModernBERT-base/large, modernbert-embed, gte-modernbert and its rerankers): pre-norm layers (none before
/// the first attention), packed q|k|v with rotary positions (a base for the global layers, another for the local ones),
/// local layers attending within a sliding window, a GLU feed-forward (act(input) ⊙ gate), a final norm, no position
/// table and no token types; the classification head pools the first token or the mean, then dense, activation, norm.
/// A tiny model with random weights against a double-precision ModernBERT written here from Hugging Face's
/// modeling_modernbert (exact angles, exact softmax), in two settings, on every ISA path, packed and alone.
/// </summary>
public class ModernBertTests
{
    private const int H = 24, Heads = 3, Ff = 20, Vocab = 50, MaxPos = 80, Classes = 3;

    public sealed record Setting(string Name, string Prefix, bool Bias, int Local, bool[] Global, double GlobalTheta, double LocalTheta, bool Mean, string Act, bool ExplicitTypes)
    {
        public int Layers => Global.Length;
        public override string ToString() => Name;
    }

    // base-like: "model." names, no biases, a global layer every third (0 and 3), local window 8 (±4), cls pooling
    public static readonly Setting Base = new("base", "model.", Bias: false, Local: 8, Global: [true, false, false, true], 160000, 10000, Mean: false, "gelu", ExplicitTypes: false);
    // every bias, explicit layer_types and rope_parameters, window 6 (±3), mean pooling, tanh-GELU
    public static readonly Setting Biased = new("biased", "", Bias: true, Local: 6, Global: [false, true, false], 5000, 300, Mean: true, "gelu_pytorch_tanh", ExplicitTypes: true);

    public static TheoryData<Setting> Settings => [Base, Biased];

    private static Dictionary<string, (float[] Data, long[] Shape)> Checkpoint(Setting st, bool classifier = false)
    {
        var t = new Dictionary<string, (float[], long[])>();
        int s = 900;
        string p = st.Prefix;
        void Add(string name, float scale, params long[] shape) => BertModelTests.AddRandom(t, name, scale, s++, shape);
        void Norm(string name) { Add(name + ".weight", 0.2f, H); if (st.Bias) Add(name + ".bias", 0.1f, H); }
        Add(p + "embeddings.tok_embeddings.weight", 0.5f, Vocab, H);
        Norm(p + "embeddings.norm");
        for (int l = 0; l < st.Layers; l++)
        {
            string q = $"{p}layers.{l}.";
            if (l > 0) Norm(q + "attn_norm");
            Add(q + "attn.Wqkv.weight", 0.4f, 3 * H, H); if (st.Bias) Add(q + "attn.Wqkv.bias", 0.1f, 3 * H);
            Add(q + "attn.Wo.weight", 0.3f, H, H); if (st.Bias) Add(q + "attn.Wo.bias", 0.1f, H);
            Norm(q + "mlp_norm");
            Add(q + "mlp.Wi.weight", 0.3f, 2 * Ff, H); if (st.Bias) Add(q + "mlp.Wi.bias", 0.1f, 2 * Ff);
            Add(q + "mlp.Wo.weight", 0.3f, H, Ff); if (st.Bias) Add(q + "mlp.Wo.bias", 0.1f, H);
        }
        Norm(p + "final_norm");
        if (classifier)
        {
            Add("head.dense.weight", 0.3f, H, H); if (st.Bias) Add("head.dense.bias", 0.1f, H);
            Norm("head.norm");
            Add("classifier.weight", 0.3f, Classes, H); Add("classifier.bias", 0.1f, Classes);
        }
        else if (p.Length > 0)
        {
            // the masked-LM head of ModernBertForMaskedLM: ignored
            Add("head.dense.weight", 0.3f, H, H); Norm("head.norm"); Add("decoder.bias", 0.1f, Vocab);
        }
        return t;
    }

    private static string ConfigJson(Setting st, string architecture = "ModernBertForMaskedLM")
    {
        string b = st.Bias ? "true" : "false";
        string layers = st.ExplicitTypes
            ? $"\"layer_types\": [{string.Join(", ", st.Global.Select(g => g ? "\"full_attention\"" : "\"sliding_attention\""))}], " +
              $"\"rope_parameters\": {{\"full_attention\": {{\"rope_type\": \"default\", \"rope_theta\": {st.GlobalTheta}}}, \"sliding_attention\": {{\"rope_type\": \"default\", \"rope_theta\": {st.LocalTheta}}}}}, "
            : $"\"global_attn_every_n_layers\": 3, \"global_rope_theta\": {st.GlobalTheta}, \"local_rope_theta\": {st.LocalTheta}, ";
        return $$"""
            {"architectures": ["{{architecture}}"], "model_type": "modernbert", "hidden_size": {{H}}, "num_attention_heads": {{Heads}}, "num_hidden_layers": {{st.Layers}},
             "intermediate_size": {{Ff}}, "hidden_activation": "{{st.Act}}", "norm_eps": 1e-5, "norm_bias": {{b}}, "attention_bias": {{b}}, "mlp_bias": {{b}},
             "max_position_embeddings": {{MaxPos}}, "vocab_size": {{Vocab}}, "local_attention": {{st.Local}}, {{layers}}
             "classifier_pooling": "{{(st.Mean ? "mean" : "cls")}}", "classifier_activation": "gelu", "classifier_bias": {{b}}, "pad_token_id": 1, "position_embedding_type": "absolute"}
            """;
    }

    private static double[] Norm(Dictionary<string, (float[] Data, long[] Shape)> w, string name, double[] x, int rows, bool bias)
        => Ln(x, rows, H, w[name + ".weight"].Data, bias ? w[name + ".bias"].Data : new float[H], 1e-5);

    private static double[] RefModernBert(Dictionary<string, (float[] Data, long[] Shape)> w, Setting st, int[] ids)
    {
        string p = st.Prefix;
        float[] W(string n) => w[p + n].Data;
        float[] B(string n, int len) => st.Bias ? w[p + n].Data : new float[len];
        int t = ids.Length;
        var act = BertConfig.ParseActivation(st.Act);
        var x = new double[t * H];
        for (int i = 0; i < t; i++)
            for (int c = 0; c < H; c++) x[i * H + c] = W("embeddings.tok_embeddings.weight")[ids[i] * H + c];
        x = Norm(w, p + "embeddings.norm", x, t, st.Bias);
        for (int l = 0; l < st.Layers; l++)
        {
            string q = $"layers.{l}.";
            var a = l == 0 ? x : Norm(w, p + q + "attn_norm", x, t, st.Bias);
            var qkv = Lin(a, t, W(q + "attn.Wqkv.weight"), B(q + "attn.Wqkv.bias", 3 * H), 3 * H, H);
            double theta = st.Global[l] ? st.GlobalTheta : st.LocalTheta;
            RotaryReference.Rotate(qkv, t, H, Heads, theta);
            var ctx = RotaryReference.Attend(qkv, t, H, Heads, st.Global[l] ? int.MaxValue : st.Local / 2);
            var o1 = Lin(ctx, t, W(q + "attn.Wo.weight"), B(q + "attn.Wo.bias", H), H, H);
            var x1 = x.Zip(o1, (u, v) => u + v).ToArray();
            var n = Norm(w, p + q + "mlp_norm", x1, t, st.Bias);
            var wi = Lin(n, t, W(q + "mlp.Wi.weight"), B(q + "mlp.Wi.bias", 2 * Ff), 2 * Ff, H);
            var g = new double[t * Ff];
            for (int i = 0; i < t; i++)
                for (int c = 0; c < Ff; c++) g[i * Ff + c] = FastAttn.Tests.Reference.Act(wi[i * 2 * Ff + c], act) * wi[i * 2 * Ff + Ff + c];
            var f = Lin(g, t, W(q + "mlp.Wo.weight"), B(q + "mlp.Wo.bias", H), H, Ff);
            x = x1.Zip(f, (u, v) => u + v).ToArray();
        }
        return Norm(w, p + "final_norm", x, t, st.Bias);
    }

    private static double[] RefLogits(Dictionary<string, (float[] Data, long[] Shape)> w, Setting st, int[] ids)
    {
        var states = RefModernBert(w, st, ids);
        var pooled = new double[H];
        int rows = st.Mean ? ids.Length : 1;
        for (int i = 0; i < rows; i++)
            for (int c = 0; c < H; c++) pooled[c] += states[i * H + c] / rows;
        var dense = Lin(pooled, 1, w["head.dense.weight"].Data, st.Bias ? w["head.dense.bias"].Data : new float[H], H, H).Select(z => FastAttn.Tests.Reference.Act(z, Activation.Gelu)).ToArray();
        var normed = Norm(w, "head.norm", dense, 1, st.Bias);
        return Lin(normed, 1, w["classifier.weight"].Data, w["classifier.bias"].Data, Classes, H);
    }

    // lengths 1 … 70: inside one window, across several, and past the local window on both sides of every query tile
    private static readonly int[][] Sequences =
        [[1, 7, 11, 2], [1, 2], [1], [1, .. Enumerable.Range(0, 38).Select(i => 3 + (i * 7) % 45), 2], [1, 45, 5, 9, 9, 30, 12, 2], [.. Enumerable.Range(0, 70).Select(i => (i * 11) % Vocab)]];

    private static BertModel LoadModel(TempDir dir, Setting st, bool classifier = false, string architecture = "ModernBertForMaskedLM")
    {
        var w = Checkpoint(st, classifier);
        BertModelTests.Write(dir, w, config: false);
        File.WriteAllText(dir.File("config.json"), ConfigJson(st, architecture));
        return BertModel.Load(dir.Path);
    }

    [Theory]
    [MemberData(nameof(Settings))]
    public void States_MatchTheReference_PackedAndAlone(Setting st)
    {
        var w = Checkpoint(st);
        var expected = Sequences.Select(s => RefModernBert(w, st, s)).ToArray();
        IsaPaths.ForEach(() =>
        {
            using var dir = new TempDir();
            using var model = LoadModel(dir, st);
            Assert.Equal("modernbert", model.Config.ModelType);
            Assert.Equal(MaxPos, model.Embeddings.MaxPositions);
            Assert.Equal(BertHead.None, model.Head);
            using var session = new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxBatchTokens = 160 });
            var (ids, lengths, packed) = BertModelTests.AssertPackedAndAlone(session, Sequences, expected, H, st.ToString());
            Assert.ThrowsAny<ArgumentException>(() => session.HiddenStates(new int[MaxPos + 1], [MaxPos + 1], new float[(MaxPos + 1) * H]));
            Assert.Equal(0, FastAttn.Tests.Reference.SteadyStateAllocations(() => session.HiddenStates(ids, lengths, packed)));
        });
    }

    /// <summary>A long-context model with a smaller pass: texts default to the pass's tokens instead of the session refusing the pass size.</summary>
    [Fact]
    public void OpenTextLength_IsTheModelsPositions_OrThePassWhenFewer()
    {
        using var dir = new TempDir();
        using var model = LoadModel(dir, Base);
        using (var small = new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxBatchTokens = 50 }))
        {
            Assert.Equal(50, small.MaxTokensPerText);
            Assert.ThrowsAny<ArgumentException>(() => small.HiddenStates(new int[51], [51], new float[51 * H]));
        }
        using (var roomy = new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxBatchTokens = 500 }))
            Assert.Equal(MaxPos, roomy.MaxTokensPerText);
        // given explicitly, the pass must hold it (as before)
        Assert.Throws<ArgumentOutOfRangeException>(() => new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxBatchTokens = 50, MaxTokensPerText = 60 }));
    }

    [Fact]
    public void TwoThreads_SameBits_NoAllocations()
    {
        using var dir = new TempDir();
        using var model = LoadModel(dir, Base);
        // 2 threads run the part after the attention row-local (each thread its rows through every product): the same bits
        BertModelTests.AssertTwoThreadsSameBits(model, Sequences, H, 160);
    }

    [Theory]
    [MemberData(nameof(Settings))]
    public void SequenceClassificationHead_PoolsThenDenseActivationNorm(Setting st)
    {
        using var dir = new TempDir();
        var w = Checkpoint(st, classifier: true);
        using var model = LoadModel(dir, st, classifier: true, architecture: "ModernBertForSequenceClassification");
        Assert.Equal(BertHead.Sequence, model.Head);
        using var session = new EmbeddingSession(model, null);
        int[] all = [.. Sequences.SelectMany(s => s)], lengths = [.. Sequences.Select(s => s.Length)];
        var packed = new float[Sequences.Length * Classes];
        session.ClassifyIds(all, default, lengths, packed);
        for (int k = 0; k < Sequences.Length; k++)
        {
            var s = Sequences[k];
            var expect = RefLogits(w, st, s);
            var got = new float[Classes];
            session.ClassifyIds(s, default, [s.Length], got);
            BertModelTests.AssertClose(expect, got, $"{st} logits, sequence of {s.Length}");
            BertModelTests.AssertClose(expect, packed.AsSpan(k * Classes, Classes), $"{st} logits packed, sequence of {s.Length}");
        }
        Assert.Equal(0, FastAttn.Tests.Reference.SteadyStateAllocations(() => session.ClassifyIds(all, default, lengths, packed)));
    }

    [Fact]
    public void TokenClassificationHead_RunsOnEveryToken()
    {
        using var dir = new TempDir();
        var w = Checkpoint(Base, classifier: true);
        using var model = LoadModel(dir, Base, classifier: true, architecture: "ModernBertForTokenClassification");
        Assert.Equal(BertHead.Token, model.Head);
        Assert.Equal(Classes, model.OutputWidth);
        using var session = new EmbeddingSession(model, null);
        var s = Sequences[4];
        var states = RefModernBert(w, Base, s);
        var dense = Lin(states, s.Length, w["head.dense.weight"].Data, new float[H], H, H).Select(z => FastAttn.Tests.Reference.Act(z, Activation.Gelu)).ToArray();
        var expect = Lin(Norm(w, "head.norm", dense, s.Length, false), s.Length, w["classifier.weight"].Data, w["classifier.bias"].Data, Classes, H);
        var got = new float[s.Length * Classes];
        session.HiddenStates(s, [s.Length], got);
        BertModelTests.AssertClose(expect, got, "token logits");
    }

    /// <summary>A gte-modernbert-style folder: config.json, the checkpoint, a byte-level BPE tokenizer.json with a [CLS] A template, modules.json with mean pooling.</summary>
    [Fact]
    public void AFolder_WithABpeTokenizer_EmbedsText_AndPairsIgnoreTokenTypes()
    {
        using var dir = new TempDir();
        var words = new[] { "the", "cat", "sat", "on", "mat" };
        var chars = words.SelectMany(x => BpeFiles.ByteLevel(" " + x)).Distinct().Select(c => c.ToString());
        var m = BpeFiles.Build(chars, words.Select(x => BpeFiles.ByteLevel(" " + x)));
        Assert.True(m.Vocab.Count < Vocab, $"{m.Vocab.Count} tokens");
        BpeFiles.TokenizerJson(dir.File("tokenizer.json"), m, new BpeFiles.Settings { PreTokenizer = BpeFiles.ByteLevelPre(), PostProcessor = "template" });
        var w = Checkpoint(Base, classifier: true);
        BertModelTests.Write(dir, w, config: false);
        File.WriteAllText(dir.File("config.json"), ConfigJson(Base, "ModernBertForSequenceClassification"));
        using (var embedder = SentenceEmbedder.Load(dir.Path))
        {
            var tok = Assert.IsType<BpeTokenizer>(embedder.Tokenizer);
            var ids = tok.Encode(" the cat sat on the mat");
            using var session = embedder.CreateSession();
            var byIds = new float[embedder.Dimension];
            session.EncodeIds(ids, [ids.Length], byIds);
            Assert.Equal(byIds, embedder.Encode(" the cat sat on the mat"));
            // mean pooling of the reference states
            var states = RefModernBert(w, Base, ids);
            var mean = new double[H];
            for (int i = 0; i < ids.Length; i++) for (int c = 0; c < H; c++) mean[c] += states[i * H + c] / ids.Length;
            BertModelTests.AssertClose(mean, byIds, "mean-pooled embedding");
        }
        // a reranker's pair: the template gives the second text type 1; ModernBERT has no token types and ignores them
        using var reranker = CrossEncoder.Load(dir.Path);
        var pairIds = reranker.Tokenizer.EncodePair(" the cat", " on the mat", out var types);
        Assert.Contains(1, types);
        BertModelTests.AssertClose(RefLogits(w, Base, pairIds), reranker.Logits(" the cat", " on the mat"), "pair logits");
    }

    [Fact]
    public void Config_RefusesWhatIsNotRun_AndWantsConfigJson()
    {
        var ok = BertConfig.FromJson(ConfigJson(Base));
        Assert.Equal(("modernbert", 1, 1e-5f, Activation.Gelu), (ok.ModelType, ok.TypeVocabSize, ok.LayerNormEps, ok.HiddenAct));
        // defaults of the config class (ModernBERT-base's): 22 layers, a global one every third, window 128, bases 160,000 / 10,000
        var d = BertConfig.FromJson("""{"model_type": "modernbert"}""");
        Assert.Equal((768, 12, 22, 1152, 8192, 50368), (d.HiddenSize, d.NumAttentionHeads, d.NumHiddenLayers, d.IntermediateSize, d.MaxPositionEmbeddings, d.VocabSize));
        BertModelTests.AssertEditsRefused(ConfigJson(Base),
            ("\"norm_eps\": 1e-5", "\"norm_eps\": 1e-5, \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2}"),
            ("\"classifier_pooling\": \"cls\"", "\"classifier_pooling\": \"max\""),
            ("\"local_attention\": 8", "\"local_attention\": 1"),
            ("\"global_attn_every_n_layers\": 3", "\"global_attn_every_n_layers\": 0"),
            ("\"norm_eps\": 1e-5", "\"norm_eps\": 1e-5, \"layer_types\": [\"full_attention\"]"),
            ("\"norm_eps\": 1e-5", "\"norm_eps\": 1e-5, \"rope_parameters\": {\"full_attention\": {\"rope_type\": \"yarn\", \"rope_theta\": 1}}"),
            ("\"norm_bias\": false", "\"norm_bias\": 3"),
            ("\"hidden_activation\": \"gelu\"", "\"hidden_activation\": \"mish\""),
            ("\"num_attention_heads\": 3", "\"num_attention_heads\": 8"),     // head width 3: odd
            ("\"global_rope_theta\": 160000", "\"global_rope_theta\": 1e-300"), // would give NaN angles
            ("\"local_attention\": 8", "\"local_attention\": \"8\""));
        // the checkpoint without its config.json: the window and the layer types are not in the tensors
        using var dir = new TempDir();
        BertModelTests.Write(dir, Checkpoint(Base), config: false);
        var ex = Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path));
        Assert.Contains("config.json", ex.Message);
        // a config for another family over ModernBERT's tensors
        File.WriteAllText(dir.File("config.json"), BertModelTests.ConfigJson());
        Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path));
        // a missing layer tensor is named
        var w = Checkpoint(Base);
        w.Remove("model.layers.2.mlp.Wi.weight");
        using var dir2 = new TempDir();
        BertModelTests.Write(dir2, w, config: false);
        File.WriteAllText(dir2.File("config.json"), ConfigJson(Base));
        ex = Assert.Throws<InvalidDataException>(() => BertModel.Load(dir2.Path));
        Assert.Contains("model.layers.2.mlp.Wi.weight", ex.Message);
    }
}
