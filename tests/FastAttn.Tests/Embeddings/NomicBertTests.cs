using FastAttn.Embeddings;
using FastAttn.Kernels;
using FastAttn.Tests.IO;
using static FastAttn.Tests.Layers.LayerTests;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// NomicBERT (nomic-embed-text-v1/v1.5 and the models on its code): post-norm layers with rotary attention over the
/// whole head (no position table), a gated feed-forward fc2(fc11(x) ⊙ act(fc12(x))) with SiLU (swiglu), GELU (geglu) or
/// the sigmoid (glu), token types, an embedding norm. A tiny model with random weights against a double-precision
/// NomicBERT written here from its remote code's formulas (modeling_hf_nomic_bert: NomicBertBlock with prenorm false,
/// NomciBertGatedMLP, the non-interleaved rotary embedding), in three settings, on every ISA path, packed and alone.
/// </summary>
public class NomicBertTests
{
    private const int H = 24, Heads = 3, Layers = 2, Vocab = 50, Ff = 256;

    public sealed record Setting(string Name, string Prefix, bool Bias, string Act, double Theta, int Types, int VocabMultiple, int Positions, int? Trained, bool Pooler)
    {
        public int VocabRows => (Vocab + VocabMultiple - 1) / VocabMultiple * VocabMultiple;
        public override string ToString() => Name;
    }

    // nomic-embed-text-v1.5's: no biases, SwiGLU, base 1000, two token types, no prefix
    public static readonly Setting V15 = new("v1.5", "", Bias: false, "swiglu", 1000, Types: 2, VocabMultiple: 1, Positions: 8192, Trained: null, Pooler: false);
    // every bias, GEGLU, "bert." names, a padded vocabulary, positions capped at the trained length (NTK scaling set), a pooler
    public static readonly Setting Geglu = new("geglu", "bert.", Bias: true, "geglu", 10000, Types: 2, VocabMultiple: 8, Positions: 2048, Trained: 40, Pooler: true);
    // GLU (the sigmoid), no token types
    public static readonly Setting Glu = new("glu", "", Bias: true, "glu", 500, Types: 0, VocabMultiple: 1, Positions: 100, Trained: null, Pooler: false);

    public static TheoryData<Setting> Settings => [V15, Geglu, Glu];

    private static Dictionary<string, (float[] Data, long[] Shape)> Checkpoint(Setting st)
    {
        var t = new Dictionary<string, (float[], long[])>();
        int s = 1100;
        string p = st.Prefix;
        void Add(string name, float scale, params long[] shape) => BertModelTests.AddRandom(t, name, scale, s++, shape);
        Add(p + "embeddings.word_embeddings.weight", 0.5f, st.VocabRows, H);
        if (st.Types > 0) Add(p + "embeddings.token_type_embeddings.weight", 0.5f, st.Types, H);
        Add(p + "emb_ln.weight", 0.2f, H); Add(p + "emb_ln.bias", 0.1f, H);
        for (int l = 0; l < Layers; l++)
        {
            string q = $"{p}encoder.layers.{l}.";
            Add(q + "attn.Wqkv.weight", 0.4f, 3 * H, H); if (st.Bias) Add(q + "attn.Wqkv.bias", 0.1f, 3 * H);
            Add(q + "attn.out_proj.weight", 0.3f, H, H); if (st.Bias) Add(q + "attn.out_proj.bias", 0.1f, H);
            Add(q + "mlp.fc11.weight", 0.3f, Ff, H); if (st.Bias) Add(q + "mlp.fc11.bias", 0.1f, Ff);
            Add(q + "mlp.fc12.weight", 0.3f, Ff, H); if (st.Bias) Add(q + "mlp.fc12.bias", 0.1f, Ff);
            Add(q + "mlp.fc2.weight", 0.1f, H, Ff); if (st.Bias) Add(q + "mlp.fc2.bias", 0.1f, H);
            Add(q + "norm1.weight", 0.2f, H); Add(q + "norm1.bias", 0.1f, H);
            Add(q + "norm2.weight", 0.2f, H); Add(q + "norm2.bias", 0.1f, H);
        }
        if (st.Pooler) { Add(p + "pooler.dense.weight", 0.3f, H, H); Add(p + "pooler.dense.bias", 0.1f, H); }
        Add("cls.predictions.decoder.bias", 0.1f, st.VocabRows);                   // the pretraining head: ignored
        return t;
    }

    private static string ConfigJson(Setting st)
    {
        string b = st.Bias ? "true" : "false";
        // the geglu setting leaves n_inner out: 8/3 of the width (64), rounded up to 256 as the gated MLP rounds it
        string inner = st.Name == "geglu" ? "" : $"\"n_inner\": {Ff}, ";
        string ntk = st.Trained is int tr ? $"\"rotary_scaling_factor\": 2, \"max_trained_positions\": {tr}, " : "\"rotary_scaling_factor\": null, ";
        return $$"""
            {"architectures": ["NomicBertModel"], "model_type": "nomic_bert", "n_embd": {{H}}, "n_head": {{Heads}}, "n_layer": {{Layers}}, {{inner}}"vocab_size": {{Vocab}},
             "pad_vocab_size_multiple": {{st.VocabMultiple}}, "type_vocab_size": {{st.Types}}, "n_positions": {{st.Positions}}, "layer_norm_epsilon": 1e-12,
             "activation_function": "{{st.Act}}", "rotary_emb_base": {{st.Theta}}, "rotary_emb_fraction": 1.0, "rotary_emb_interleaved": false, "rotary_emb_scale_base": null,
             {{ntk}}"qkv_proj_bias": {{b}}, "mlp_fc1_bias": {{b}}, "mlp_fc2_bias": {{b}}, "prenorm": false, "causal": false, "use_rms_norm": false,
             "parallel_block": false, "fused_bias_fc": true, "use_flash_attn": true, "bos_token_id": null, "eos_token_id": null}
            """;
    }

    private static double[] RefNomic(Dictionary<string, (float[] Data, long[] Shape)> w, Setting st, int[] ids)
    {
        string p = st.Prefix;
        float[] W(string n) => w[p + n].Data;
        float[] B(string n, int len) => st.Bias ? w[p + n].Data : new float[len];
        int t = ids.Length;
        var gate = st.Act switch { "swiglu" => Activation.Silu, "geglu" => Activation.Gelu, _ => Activation.Sigmoid };
        var x = new double[t * H];
        for (int i = 0; i < t; i++)
            for (int c = 0; c < H; c++)
                x[i * H + c] = (double)W("embeddings.word_embeddings.weight")[ids[i] * H + c] + (st.Types > 0 ? W("embeddings.token_type_embeddings.weight")[c] : 0);
        x = Ln(x, t, H, W("emb_ln.weight"), W("emb_ln.bias"), 1e-12);
        for (int l = 0; l < Layers; l++)
        {
            string q = $"encoder.layers.{l}.";
            var qkv = Lin(x, t, W(q + "attn.Wqkv.weight"), B(q + "attn.Wqkv.bias", 3 * H), 3 * H, H);
            RotaryReference.Rotate(qkv, t, H, Heads, st.Theta);
            var ctx = RotaryReference.Attend(qkv, t, H, Heads);
            var o1 = Lin(ctx, t, W(q + "attn.out_proj.weight"), B(q + "attn.out_proj.bias", H), H, H);
            var x1 = Ln(x.Zip(o1, (u, v) => u + v).ToArray(), t, H, W(q + "norm1.weight"), W(q + "norm1.bias"), 1e-12);
            var y = Lin(x1, t, W(q + "mlp.fc11.weight"), B(q + "mlp.fc11.bias", Ff), Ff, H);
            var g = Lin(x1, t, W(q + "mlp.fc12.weight"), B(q + "mlp.fc12.bias", Ff), Ff, H);
            for (int i = 0; i < y.Length; i++) y[i] *= FastAttn.Tests.Reference.Act(g[i], gate);
            var f = Lin(y, t, W(q + "mlp.fc2.weight"), B(q + "mlp.fc2.bias", H), H, Ff);
            x = Ln(x1.Zip(f, (u, v) => u + v).ToArray(), t, H, W(q + "norm2.weight"), W(q + "norm2.bias"), 1e-12);
        }
        return x;
    }

    private static readonly int[][] Sequences =
        [[1, 7, 11, 2], [1, 2], [1], [1, .. Enumerable.Range(0, 36).Select(i => 3 + (i * 7) % 45), 2], [1, 45, 5, 9, 9, 30, 12, 2], [.. Enumerable.Range(0, 40).Select(i => (i * 11) % Vocab)]];

    private static BertModel LoadModel(TempDir dir, Setting st)
    {
        BertModelTests.Write(dir, Checkpoint(st), config: false);
        File.WriteAllText(dir.File("config.json"), ConfigJson(st));
        return BertModel.Load(dir.Path);
    }

    [Theory]
    [MemberData(nameof(Settings))]
    public void States_MatchTheReference_PackedAndAlone(Setting st)
    {
        var w = Checkpoint(st);
        var expected = Sequences.Select(s => RefNomic(w, st, s)).ToArray();
        IsaPaths.ForEach(() =>
        {
            using var dir = new TempDir();
            using var model = LoadModel(dir, st);
            Assert.Equal("nomic_bert", model.Config.ModelType);
            Assert.Equal(st.Trained ?? st.Positions, model.Embeddings.MaxPositions);
            Assert.Equal(st.Pooler, model.Pooler != null);
            BertModelTests.AssertStatesWithoutAllocation(model, new SentenceEmbedderOptions { MaxBatchTokens = 128, MaxTokensPerText = 40 }, Sequences, expected, H, st.ToString());
        });
    }

    [Fact]
    public void TwoThreads_SameBits_AndPositionsCappedAtTheTrainedLength()
    {
        using var dir = new TempDir();
        using var model = LoadModel(dir, Geglu);
        int[] ids = [.. Sequences.SelectMany(s => s)], lengths = [.. Sequences.Select(s => s.Length)];
        using var one = new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxBatchTokens = 128, Threads = 1 });
        using var two = new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxBatchTokens = 128, Threads = 2 });
        float[] a = new float[ids.Length * H], b = new float[ids.Length * H];
        one.HiddenStates(ids, lengths, a);
        two.HiddenStates(ids, lengths, b);
        Assert.Equal(a, b);
        // rotary_scaling_factor set: beyond max_trained_positions (40) the model would rescale its base per batch; refused
        Assert.Equal(40, one.MaxTokensPerText);
        Assert.ThrowsAny<ArgumentException>(() => one.HiddenStates(new int[41], [41], new float[41 * H]));
    }

    [Fact]
    public void Config_RefusesWhatIsNotRun_AndWantsConfigJson()
    {
        var ok = BertConfig.FromJson(ConfigJson(V15));
        Assert.Equal(("nomic_bert", 256, 2, 1e-12f, Activation.Silu), (ok.ModelType, ok.IntermediateSize, ok.TypeVocabSize, ok.LayerNormEps, ok.HiddenAct));
        var padded = BertConfig.FromJson(ConfigJson(Geglu));
        Assert.Equal((56, 256, 40), (padded.VocabSize, padded.IntermediateSize, padded.MaxPositionEmbeddings));
        BertModelTests.AssertEditsRefused(ConfigJson(V15),
            ("\"prenorm\": false", "\"prenorm\": true"),
            ("\"causal\": false", "\"causal\": true"),
            ("\"use_rms_norm\": false", "\"use_rms_norm\": true"),
            ("\"parallel_block\": false", "\"parallel_block\": true"),
            ("\"rotary_emb_interleaved\": false", "\"rotary_emb_interleaved\": true"),
            ("\"rotary_emb_scale_base\": null", "\"rotary_emb_scale_base\": 512"),
            ("\"rotary_emb_fraction\": 1.0", "\"rotary_emb_fraction\": 0.5"),
            ("\"rotary_emb_fraction\": 1.0", "\"rotary_emb_fraction\": 0"),
            ("\"activation_function\": \"swiglu\"", "\"activation_function\": \"mish\""),
            ("\"rotary_emb_base\": 1000", "\"rotary_emb_base\": 0.001"),
            ("\"n_head\": 3", "\"n_head\": 8"));
        using var dir = new TempDir();
        BertModelTests.Write(dir, Checkpoint(V15), config: false);
        var ex = Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path));
        Assert.Contains("config.json", ex.Message);
        File.WriteAllText(dir.File("config.json"), BertModelTests.ConfigJson());
        Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path));
        // the checkpoint of another setting (biases present that the config does not have): named as unexpected
        using var dir2 = new TempDir();
        BertModelTests.Write(dir2, Checkpoint(V15 with { Bias = true }), config: false);
        File.WriteAllText(dir2.File("config.json"), ConfigJson(V15));
        Assert.Contains("encoder.layers.0.mlp.fc11.bias", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir2.Path)).Message);
    }
}
