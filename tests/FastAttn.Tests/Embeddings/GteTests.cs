using FastAttn.Embeddings;
using FastAttn.Kernels;
using FastAttn.Layers;
using FastAttn.Tests.IO;
using static FastAttn.Tests.Layers.LayerTests;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// GTE's "new" architecture (gte-base/large-en-v1.5, gte-multilingual-base and its reranker; Alibaba-NLP/new-impl):
/// post-norm layers with rotary attention (a fixed NTK factor when rope_scaling says so), a packed or split q/k/v, the
/// gated feed-forward down(act(gate) ⊙ up) with the gate the second half of up_gate_proj, token types or none. A tiny
/// model with random weights against a double-precision one written here from its modeling.py's formulas (NewLayer,
/// NewGatedMLP, NTKScalingRotaryEmbedding), in three settings, on every ISA path, packed and alone.
/// </summary>
public class GteTests
{
    private const int H = 24, Heads = 3, Layers = 2, Vocab = 50, Ff = 40, Classes = 3;

    public sealed record Setting(string Name, string Prefix, bool Packed, int Types, double Theta, double Ntk, string Act, bool Head)
    {
        public override string ToString() => Name;
    }

    // gte-base-en-v1.5's form: no token types, packed q/k/v, NTK factor 2 (its base 500,000 scaled down to the tiny width's range)
    public static readonly Setting V15 = new("v1.5", "", Packed: true, Types: 0, Theta: 10000, Ntk: 2, "gelu", Head: false);
    // a reranker's form: "new." names, q/k/v apart, one token type, a pooler and classifier, SiLU
    public static readonly Setting Reranker = new("reranker", "new.", Packed: false, Types: 1, Theta: 500, Ntk: 1, "silu", Head: true);
    // two token types, no scaling, a large NTK factor and base
    public static readonly Setting Wide = new("ntk8", "", Packed: true, Types: 2, Theta: 160000, Ntk: 8, "gelu", Head: false);

    public static TheoryData<Setting> Settings => [V15, Reranker, Wide];

    private static Dictionary<string, (float[] Data, long[] Shape)> Checkpoint(Setting st)
    {
        var t = new Dictionary<string, (float[], long[])>();
        int s = 3100;
        string p = st.Prefix;
        void Add(string name, float scale, params long[] shape) => BertModelTests.AddRandom(t, name, scale, s++, shape);
        Add(p + "embeddings.word_embeddings.weight", 0.5f, Vocab, H);
        if (st.Types > 0) Add(p + "embeddings.token_type_embeddings.weight", 0.5f, st.Types, H);
        Add(p + "embeddings.LayerNorm.weight", 0.2f, H); Add(p + "embeddings.LayerNorm.bias", 0.1f, H);
        for (int l = 0; l < Layers; l++)
        {
            string q = $"{p}encoder.layer.{l}.";
            if (st.Packed) { Add(q + "attention.qkv_proj.weight", 0.4f, 3 * H, H); Add(q + "attention.qkv_proj.bias", 0.1f, 3 * H); }
            else foreach (var m in new[] { "q_proj", "k_proj", "v_proj" }) { Add(q + "attention." + m + ".weight", 0.4f, H, H); Add(q + "attention." + m + ".bias", 0.1f, H); }
            Add(q + "attention.o_proj.weight", 0.3f, H, H); Add(q + "attention.o_proj.bias", 0.1f, H);
            Add(q + "attn_ln.weight", 0.2f, H); Add(q + "attn_ln.bias", 0.1f, H);
            Add(q + "mlp.up_gate_proj.weight", 0.3f, 2 * Ff, H);
            Add(q + "mlp.down_proj.weight", 0.2f, H, Ff); Add(q + "mlp.down_proj.bias", 0.1f, H);
            Add(q + "mlp_ln.weight", 0.2f, H); Add(q + "mlp_ln.bias", 0.1f, H);
        }
        if (st.Head)
        {
            Add(p + "pooler.dense.weight", 0.3f, H, H); Add(p + "pooler.dense.bias", 0.1f, H);
            Add("classifier.weight", 0.3f, Classes, H); Add("classifier.bias", 0.1f, Classes);
        }
        else Add("lm_head.dense.weight", 0.1f, H, H);                               // the masked-LM head: ignored
        return t;
    }

    private static string ConfigJson(Setting st)
    {
        string scaling = st.Ntk != 1 ? $$"""{"factor": {{st.Ntk}}, "type": "ntk"}""" : "null";
        return $$"""
            {"architectures": ["{{(st.Head ? "NewForSequenceClassification" : "NewModel")}}"], "model_type": "new",
             "auto_map": {"AutoConfig": "Alibaba-NLP/new-impl--configuration.NewConfig", "AutoModel": "Alibaba-NLP/new-impl--modeling.NewModel"},
             "hidden_size": {{H}}, "num_attention_heads": {{Heads}}, "num_hidden_layers": {{Layers}}, "intermediate_size": {{Ff}}, "hidden_act": "{{st.Act}}",
             "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.0, "max_position_embeddings": 8192, "type_vocab_size": {{st.Types}},
             "layer_norm_type": "layer_norm", "layer_norm_eps": 1e-12, "position_embedding_type": "rope", "rope_theta": {{st.Theta}}, "rope_scaling": {{scaling}},
             "pack_qkv": {{(st.Packed ? "true" : "false")}}, "unpad_inputs": false, "use_memory_efficient_attention": false, "logn_attention_scale": false,
             "logn_attention_clip1": false, "vocab_size": {{Vocab}}, "pad_token_id": 0}
            """;
    }

    private static double[] RefStates(Dictionary<string, (float[] Data, long[] Shape)> w, Setting st, int[] ids)
    {
        string pre = st.Prefix;
        float[] W(string n) => w[pre + n].Data;
        int t = ids.Length;
        var act = BertConfig.ParseActivation(st.Act);
        var x = new double[t * H];
        for (int i = 0; i < t; i++)
            for (int c = 0; c < H; c++)
                x[i * H + c] = (double)W("embeddings.word_embeddings.weight")[ids[i] * H + c] + (st.Types > 0 ? W("embeddings.token_type_embeddings.weight")[c] : 0);
        x = Ln(x, t, H, W("embeddings.LayerNorm.weight"), W("embeddings.LayerNorm.bias"), 1e-12);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"encoder.layer.{l}.";
            double[] qkv;
            if (st.Packed) qkv = Lin(x, t, W(p + "attention.qkv_proj.weight"), W(p + "attention.qkv_proj.bias"), 3 * H, H);
            else
            {
                var parts = new[] { "q_proj", "k_proj", "v_proj" }.Select(m => Lin(x, t, W(p + "attention." + m + ".weight"), W(p + "attention." + m + ".bias"), H, H)).ToArray();
                qkv = new double[t * 3 * H];
                for (int i = 0; i < t; i++) for (int k = 0; k < 3; k++) Array.Copy(parts[k], i * H, qkv, i * 3 * H + k * H, H);
            }
            RotaryReference.Rotate(qkv, t, H, Heads, st.Theta, st.Ntk);
            var ctx = RotaryReference.Attend(qkv, t, H, Heads);
            var o = Lin(ctx, t, W(p + "attention.o_proj.weight"), W(p + "attention.o_proj.bias"), H, H);
            var x1 = Ln(x.Zip(o, (a, b) => a + b).ToArray(), t, H, W(p + "attn_ln.weight"), W(p + "attn_ln.bias"), 1e-12);
            var ug = Lin(x1, t, W(p + "mlp.up_gate_proj.weight"), new float[2 * Ff], 2 * Ff, H);
            var y = new double[t * Ff];
            for (int i = 0; i < t; i++)
                for (int c = 0; c < Ff; c++) y[i * Ff + c] = ug[i * 2 * Ff + c] * FastAttn.Tests.Reference.Act(ug[i * 2 * Ff + Ff + c], act);
            var f = Lin(y, t, W(p + "mlp.down_proj.weight"), W(p + "mlp.down_proj.bias"), H, Ff);
            x = Ln(x1.Zip(f, (a, b) => a + b).ToArray(), t, H, W(p + "mlp_ln.weight"), W(p + "mlp_ln.bias"), 1e-12);
        }
        return x;
    }

    private static double[] RefLogits(Dictionary<string, (float[] Data, long[] Shape)> w, Setting st, int[] ids)
    {
        var x = RefStates(w, st, ids);
        var pooled = Lin(x[..H], 1, w[st.Prefix + "pooler.dense.weight"].Data, w[st.Prefix + "pooler.dense.bias"].Data, H, H).Select(Math.Tanh).ToArray();
        return Lin(pooled, 1, w["classifier.weight"].Data, w["classifier.bias"].Data, Classes, H);
    }

    private static readonly int[][] Sequences =
        [[1, 7, 11, 2], [1, 2], [1], [1, .. Enumerable.Range(0, 38).Select(i => 3 + (i * 7) % 45), 2], [1, 45, 5, 9, 9, 30, 12, 2], [.. Enumerable.Range(0, 27).Select(i => (i * 11) % Vocab)]];

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
        var expected = Sequences.Select(s => RefStates(w, st, s)).ToArray();
        IsaPaths.ForEach(() =>
        {
            using var dir = new TempDir();
            using var model = LoadModel(dir, st);
            Assert.Equal("new", model.Config.ModelType);
            Assert.Equal(8192, model.Embeddings.MaxPositions);
            Assert.Equal(st.Head, model.Pooler != null);
            BertModelTests.AssertStatesWithoutAllocation(model, new SentenceEmbedderOptions { MaxBatchTokens = 128, MaxTokensPerText = 40 }, Sequences, expected, H, st.ToString());
        });
    }

    [Fact]
    public void Reranker_ClassifiesThePooledFirstToken()
    {
        var w = Checkpoint(Reranker);
        using var dir = new TempDir();
        using var model = LoadModel(dir, Reranker);
        Assert.Equal(BertHead.Sequence, model.Head);
        using var session = new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxBatchTokens = 128 });
        BertModelTests.AssertLogits(session, Sequences, Classes, s => RefLogits(w, Reranker, s));
    }

    [Fact]
    public void TwoThreads_SameBits_NoAllocations()
    {
        using var dir = new TempDir();
        using var model = LoadModel(dir, V15);
        BertModelTests.AssertTwoThreadsSameBits(model, Sequences, H, 128);
    }

    [Theory]
    [InlineData(Precision.Int8)]
    [InlineData(Precision.BF16Weights)]
    public void ReducedPrecision_CloseToFp32_SmallerWeights_NoAllocations(Precision precision)
    {
        // the GLU layer's three products, the attention's two and the word table in int8 or bf16, the norms and RoPE in FP32;
        // two post-norm layers with O(1) outputs (as the encoder's precision test)
        IsaPaths.ForEach(() =>
        {
            using var dir = new TempDir();
            BertModelTests.Write(dir, Checkpoint(V15), config: false);
            File.WriteAllText(dir.File("config.json"), ConfigJson(V15));
            BertModelTests.AssertReducedPrecision(dir.Path, precision, Sequences, H);
        });
    }

    [Fact]
    public void ModelTypeGte_IsTheSameModel_WithEveryFieldRequired()
    {
        // snowflake-arctic-embed-m-v2.0's config names the architecture "gte" (its copy of the code); the same fields
        string json = ConfigJson(V15).Replace("\"model_type\": \"new\"", "\"model_type\": \"gte\"");
        using var dir = new TempDir();
        BertModelTests.Write(dir, Checkpoint(V15), config: false);
        File.WriteAllText(dir.File("config.json"), ConfigJson(V15));
        using var asNew = BertModel.Load(dir.Path);
        File.WriteAllText(dir.File("config.json"), json);
        using var asGte = BertModel.Load(dir.Path);
        Assert.Equal("gte", asGte.Config.ModelType);
        int[] ids = [.. Sequences.SelectMany(s => s)], lengths = [.. Sequences.Select(s => s.Length)];
        using var a = new EmbeddingSession(asNew, null, new SentenceEmbedderOptions { MaxBatchTokens = 128 });
        using var b = new EmbeddingSession(asGte, null, new SentenceEmbedderOptions { MaxBatchTokens = 128 });
        float[] ya = new float[ids.Length * H], yb = new float[ids.Length * H];
        a.HiddenStates(ids, lengths, ya);
        b.HiddenStates(ids, lengths, yb);
        Assert.Equal(ya, yb);
        // "new" falls back to NewConfig's defaults; "gte" assumes none
        foreach (var field in new[] { "\"rope_theta\": 10000, ", "\"type_vocab_size\": 0,", "\"hidden_act\": \"gelu\",", "\"layer_norm_eps\": 1e-12, ", "\"max_position_embeddings\": 8192," })
        {
            Assert.Contains(field, json);
            Assert.Throws<InvalidDataException>(() => BertConfig.FromJson(json.Replace(field, "")));
            BertConfig.FromJson(ConfigJson(V15).Replace(field, ""));
        }
        Assert.Throws<InvalidDataException>(() => BertConfig.FromJson(json.Replace("\"hidden_size\": 24,", "\"hidden_size\": 24, \"rotary_emb_dim\": 4,")));
    }

    [Fact]
    public void SentenceTransformersFolder_EmbedsTextEndToEnd()
    {
        // the tokenizer's framing, the folder's pooling and normalisation around this architecture
        using var dir = new TempDir();
        var w = Checkpoint(V15);
        BertModelTests.AssertFolderEmbeds(dir, w, ConfigJson(V15), Vocab, cls: true, "the cafe owner paid for books hello world here new xy a don t", ids => RefStates(w, V15, ids), H);
    }

    [Fact]
    public void Config_RefusesWhatIsNotRun_AndTensorsMustAgree()
    {
        var ok = BertConfig.FromJson(ConfigJson(V15));
        Assert.Equal(("new", 1, 8192, Activation.Gelu), (ok.ModelType, ok.TypeVocabSize, ok.MaxPositionEmbeddings, ok.HiddenAct));
        // NewConfig's defaults where a field is absent
        var bare = BertConfig.FromJson("""{"model_type": "new"}""");
        Assert.Equal((768, 12, 12, 3072, 30528, 2048, 1e-12f), (bare.HiddenSize, bare.NumAttentionHeads, bare.NumHiddenLayers, bare.IntermediateSize, bare.VocabSize, bare.MaxPositionEmbeddings, bare.LayerNormEps));
        BertModelTests.AssertEditsRefused(ConfigJson(V15),
            ("\"position_embedding_type\": \"rope\"", "\"position_embedding_type\": \"absolute\""),
            ("\"layer_norm_type\": \"layer_norm\"", "\"layer_norm_type\": \"rms_norm\""),
            ("\"logn_attention_scale\": false", "\"logn_attention_scale\": true"),
            ("\"type\": \"ntk\"", "\"type\": \"linear\""),
            ("\"type\": \"ntk\"", "\"type\": \"ntk\", \"mixed_b\": 0.5"),
            ("\"factor\": 2", "\"factor\": 0.5"),
            ("\"rope_theta\": 10000", "\"rope_theta\": 0.5"),
            ("\"hidden_act\": \"gelu\"", "\"hidden_act\": \"mish\""));
        using var dir = new TempDir();
        BertModelTests.Write(dir, Checkpoint(V15), config: false);
        Assert.Contains("config.json", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path)).Message);
        File.WriteAllText(dir.File("config.json"), BertModelTests.ConfigJson());
        Assert.Contains("up_gate_proj", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path)).Message);
        // pack_qkv false over packed tensors: the missing q_proj named
        File.WriteAllText(dir.File("config.json"), ConfigJson(V15).Replace("\"pack_qkv\": true", "\"pack_qkv\": false"));
        Assert.Contains("q_proj", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path)).Message);
    }
}
