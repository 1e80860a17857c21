using FastAttn.Embeddings;
using FastAttn.Kernels;
using FastAttn.Tests.IO;
using static FastAttn.Tests.Layers.LayerTests;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// JinaBERT (jina-embeddings-v2, the jina-reranker-v1 models): BERT's post-norm layers with ALiBi — −slope_h·|i − j| added
/// to head h's scaled scores, no position table — and a GLU feed-forward (mlp.gated_layers without bias: act(first half) ⊙
/// second half, mlp.wo, mlp.layernorm of the sum with the residual) or BERT's own. A tiny model with random weights against
/// a double-precision JinaBERT written here from the formulas of its JinaBertLayer/JinaBertGLUMLP, with slopes from the
/// closed form of the ALiBi paper (not from the code under test), in three settings, on every ISA path, packed and alone.
/// </summary>
public class JinaBertTests
{
    private const int H = 24, Layers = 2, Vocab = 50, Ff = 40, Classes = 2;

    public sealed record Setting(string Name, string Prefix, int Heads, string FeedForward, bool Pooler, bool Classifier)
    {
        public override string ToString() => Name;
    }

    // jina-embeddings-v2's form: GEGLU, no prefix, a pooler; 3 heads (not a power of two: slopes 1/16, 1/256, then 1/4)
    public static readonly Setting V2 = new("v2-geglu", "", 3, "geglu", Pooler: true, Classifier: false);
    // a reranker's form: ReGLU, "bert." names, pooler and classifier; 4 heads
    public static readonly Setting Reranker = new("reglu-reranker", "bert.", 4, "reglu", Pooler: true, Classifier: true);
    // BERT's own feed-forward with ALiBi; 6 heads
    public static readonly Setting Original = new("original", "", 6, "original", Pooler: false, Classifier: false);

    public static TheoryData<Setting> Settings => [V2, Reranker, Original];

    private static bool Glu(Setting st) => st.FeedForward != "original";

    private static Dictionary<string, (float[] Data, long[] Shape)> Checkpoint(Setting st)
    {
        var t = new Dictionary<string, (float[], long[])>();
        int s = 2100;
        string p = st.Prefix;
        void Add(string name, float scale, params long[] shape) => BertModelTests.AddRandom(t, name, scale, s++, shape);
        Add(p + "embeddings.word_embeddings.weight", 0.5f, Vocab, H);
        Add(p + "embeddings.token_type_embeddings.weight", 0.5f, 2, H);
        Add(p + "embeddings.LayerNorm.weight", 0.2f, H); Add(p + "embeddings.LayerNorm.bias", 0.1f, H);
        for (int l = 0; l < Layers; l++)
        {
            string q = $"{p}encoder.layer.{l}.";
            foreach (var m in new[] { "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense" })
            { Add(q + m + ".weight", 0.4f, H, H); Add(q + m + ".bias", 0.1f, H); }
            Add(q + "attention.output.LayerNorm.weight", 0.2f, H); Add(q + "attention.output.LayerNorm.bias", 0.1f, H);
            if (Glu(st))
            {
                Add(q + "mlp.gated_layers.weight", 0.3f, 2 * Ff, H);
                Add(q + "mlp.wo.weight", 0.2f, H, Ff); Add(q + "mlp.wo.bias", 0.1f, H);
                Add(q + "mlp.layernorm.weight", 0.2f, H); Add(q + "mlp.layernorm.bias", 0.1f, H);
            }
            else
            {
                Add(q + "intermediate.dense.weight", 0.3f, Ff, H); Add(q + "intermediate.dense.bias", 0.1f, Ff);
                Add(q + "output.dense.weight", 0.3f, H, Ff); Add(q + "output.dense.bias", 0.1f, H);
                Add(q + "output.LayerNorm.weight", 0.2f, H); Add(q + "output.LayerNorm.bias", 0.1f, H);
            }
        }
        if (st.Pooler) { Add(p + "pooler.dense.weight", 0.3f, H, H); Add(p + "pooler.dense.bias", 0.1f, H); }
        if (st.Classifier) { Add("classifier.weight", 0.3f, Classes, H); Add("classifier.bias", 0.1f, Classes); }
        Add("cls.predictions.transform.dense.bias", 0.1f, H);                          // the pretraining head: ignored
        return t;
    }

    private static string ConfigJson(Setting st) => $$"""
        {"architectures": ["{{(st.Classifier ? "JinaBertForSequenceClassification" : "JinaBertForMaskedLM")}}"], "model_type": "bert", "attn_implementation": "torch",
         "auto_map": {"AutoModel": "jinaai/jina-bert-implementation--modeling_bert.JinaBertModel"}, "hidden_size": {{H}}, "num_attention_heads": {{st.Heads}},
         "num_hidden_layers": {{Layers}}, "intermediate_size": {{Ff}}, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "max_position_embeddings": 8192,
         "type_vocab_size": 2, "vocab_size": {{Vocab}}, "position_embedding_type": "alibi", "feed_forward_type": "{{st.FeedForward}}", "emb_pooler": "mean",
         "pad_token_id": 0, "num_labels": {{Classes}}}
        """;

    /// <summary>ALiBi's slopes in closed form: 2^(−8k/p) for k = 1…p (p the largest power of two ≤ n), then 2^(−4(2i+1)/p) for i &lt; n − p.</summary>
    internal static double[] Slopes(int n)
    {
        int p = 1;
        while (p * 2 <= n) p *= 2;
        return [.. Enumerable.Range(1, p).Select(k => Math.Pow(2, -8.0 * k / p)), .. Enumerable.Range(0, n - p).Select(i => Math.Pow(2, -4.0 * (2 * i + 1) / p))];
    }

    private static double[] RefStates(Dictionary<string, (float[] Data, long[] Shape)> w, Setting st, int[] ids)
    {
        string pre = st.Prefix;
        float[] W(string n) => w[pre + n].Data;
        int t = ids.Length, heads = st.Heads, d = H / heads;
        var slopes = Slopes(heads);
        var x = new double[t * H];
        for (int i = 0; i < t; i++)
            for (int c = 0; c < H; c++)
                x[i * H + c] = (double)W("embeddings.word_embeddings.weight")[ids[i] * H + c] + W("embeddings.token_type_embeddings.weight")[c];
        x = Ln(x, t, H, W("embeddings.LayerNorm.weight"), W("embeddings.LayerNorm.bias"), 1e-12);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"encoder.layer.{l}.";
            var q = Lin(x, t, W(p + "attention.self.query.weight"), W(p + "attention.self.query.bias"), H, H);
            var k = Lin(x, t, W(p + "attention.self.key.weight"), W(p + "attention.self.key.bias"), H, H);
            var v = Lin(x, t, W(p + "attention.self.value.weight"), W(p + "attention.self.value.bias"), H, H);
            var ctx = new double[t * H];
            for (int hh = 0; hh < heads; hh++)
                for (int i = 0; i < t; i++)
                {
                    var sc = new double[t];
                    for (int j = 0; j < t; j++)
                    {
                        double dot = 0;
                        for (int c = 0; c < d; c++) dot += q[i * H + hh * d + c] * k[j * H + hh * d + c];
                        sc[j] = dot / Math.Sqrt(d) - slopes[hh] * Math.Abs(i - j);
                    }
                    double m = sc.Max(), sum = 0;
                    for (int j = 0; j < t; j++) { sc[j] = Math.Exp(sc[j] - m); sum += sc[j]; }
                    for (int c = 0; c < d; c++)
                    {
                        double acc = 0;
                        for (int j = 0; j < t; j++) acc += sc[j] / sum * v[j * H + hh * d + c];
                        ctx[i * H + hh * d + c] = acc;
                    }
                }
            var att = Lin(ctx, t, W(p + "attention.output.dense.weight"), W(p + "attention.output.dense.bias"), H, H);
            var x1 = Ln(x.Zip(att, (a, b) => a + b).ToArray(), t, H, W(p + "attention.output.LayerNorm.weight"), W(p + "attention.output.LayerNorm.bias"), 1e-12);
            if (Glu(st))
            {
                var act = st.FeedForward == "geglu" ? Activation.Gelu : Activation.Relu;
                var g = Lin(x1, t, W(p + "mlp.gated_layers.weight"), new float[2 * Ff], 2 * Ff, H);
                var y = new double[t * Ff];
                for (int i = 0; i < t; i++)
                    for (int c = 0; c < Ff; c++) y[i * Ff + c] = FastAttn.Tests.Reference.Act(g[i * 2 * Ff + c], act) * g[i * 2 * Ff + Ff + c];
                var o = Lin(y, t, W(p + "mlp.wo.weight"), W(p + "mlp.wo.bias"), H, Ff);
                x = Ln(x1.Zip(o, (a, b) => a + b).ToArray(), t, H, W(p + "mlp.layernorm.weight"), W(p + "mlp.layernorm.bias"), 1e-12);
            }
            else
            {
                var inter = Lin(x1, t, W(p + "intermediate.dense.weight"), W(p + "intermediate.dense.bias"), Ff, H).Select(z => FastAttn.Tests.Reference.Act(z, Activation.Gelu)).ToArray();
                var o = Lin(inter, t, W(p + "output.dense.weight"), W(p + "output.dense.bias"), H, Ff);
                x = Ln(x1.Zip(o, (a, b) => a + b).ToArray(), t, H, W(p + "output.LayerNorm.weight"), W(p + "output.LayerNorm.bias"), 1e-12);
            }
        }
        return x;
    }

    private static double[] RefLogits(Dictionary<string, (float[] Data, long[] Shape)> w, Setting st, int[] ids)
    {
        var x = RefStates(w, st, ids);
        var pooled = Lin(x[..H], 1, w[st.Prefix + "pooler.dense.weight"].Data, w[st.Prefix + "pooler.dense.bias"].Data, H, H).Select(Math.Tanh).ToArray();
        return Lin(pooled, 1, w["classifier.weight"].Data, w["classifier.bias"].Data, Classes, H);
    }

    // up to 60 tokens: at 3 heads the gentlest slope (1/256) still moves a far key's score by 0.23, the steepest (1/4) by 15
    private static readonly int[][] Sequences =
        [[1, 7, 11, 2], [1, 2], [1], [1, .. Enumerable.Range(0, 58).Select(i => 3 + (i * 7) % 45), 2], [1, 45, 5, 9, 9, 30, 12, 2], [.. Enumerable.Range(0, 33).Select(i => (i * 11) % Vocab)]];

    private static BertModel LoadModel(TempDir dir, Setting st)
    {
        BertModelTests.Write(dir, Checkpoint(st), config: false);
        File.WriteAllText(dir.File("config.json"), ConfigJson(st));
        return BertModel.Load(dir.Path);
    }

    [Fact]
    public void AlibiSlopes_AreThePapersClosedForm()
    {
        foreach (int n in new[] { 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 40 })
        {
            var expect = Slopes(n);
            var got = JinaSettings.AlibiSlopes(n);
            Assert.Equal(n, got.Length);
            for (int i = 0; i < n; i++) Assert.Equal((float)expect[i], got[i]);
        }
        Assert.Equal([1f / 16, 1f / 256, 1f / 4], JinaSettings.AlibiSlopes(3));
        Assert.Throws<ArgumentOutOfRangeException>(() => JinaSettings.AlibiSlopes(0));
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
            Assert.Equal("bert", model.Config.ModelType);
            Assert.Equal(8192, model.Embeddings.MaxPositions);
            Assert.Equal(st.Pooler, model.Pooler != null);
            BertModelTests.AssertStatesWithoutAllocation(model, new SentenceEmbedderOptions { MaxBatchTokens = 160, MaxTokensPerText = 60 }, Sequences, expected, H, st.ToString());
        });
    }

    [Fact]
    public void Reranker_ClassifiesThePooledFirstToken()
    {
        var w = Checkpoint(Reranker);
        using var dir = new TempDir();
        using var model = LoadModel(dir, Reranker);
        Assert.Equal(BertHead.Sequence, model.Head);
        using var session = new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxBatchTokens = 160 });
        BertModelTests.AssertLogits(session, Sequences, Classes, s => RefLogits(w, Reranker, s));
    }

    [Fact]
    public void TwoThreads_SameBits_NoAllocations()
    {
        using var dir = new TempDir();
        using var model = LoadModel(dir, V2);
        BertModelTests.AssertTwoThreadsSameBits(model, Sequences, H, 160);
    }

    [Fact]
    public void SentenceTransformersFolder_EmbedsTextEndToEnd()
    {
        // the tokenizer's framing, the folder's pooling and normalisation around this architecture
        using var dir = new TempDir();
        var w = Checkpoint(V2);
        BertModelTests.AssertFolderEmbeds(dir, w, ConfigJson(V2), Vocab, cls: false, "the cafe owner paid for books hello world here new xy a don t", ids => RefStates(w, V2, ids), H);
    }

    [Fact]
    public void Config_RefusesWhatIsNotRun_AndTensorsMustAgree()
    {
        var ok = BertConfig.FromJson(ConfigJson(V2));
        Assert.Equal(("bert", 8192, Activation.Gelu), (ok.ModelType, ok.MaxPositionEmbeddings, ok.HiddenAct));
        BertModelTests.AssertEditsRefused(ConfigJson(V2),
            ("\"feed_forward_type\": \"geglu\"", "\"feed_forward_type\": \"swiglu\""),
            ("\"feed_forward_type\": \"geglu\"", "\"feed_forward_type\": 3"),
            ("\"position_embedding_type\": \"alibi\"", "\"position_embedding_type\": \"relative_key\""),
            ("\"model_type\": \"bert\"", "\"model_type\": \"roberta\""));
        // no config.json: the ALiBi is not in the tensors
        using var dir = new TempDir();
        BertModelTests.Write(dir, Checkpoint(V2), config: false);
        Assert.Contains("config.json", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path)).Message);
        // a plain BERT config, or JinaBERT's with BERT's feed-forward, over GLU tensors: refused, not run without ALiBi or the GLU
        File.WriteAllText(dir.File("config.json"), BertModelTests.ConfigJson());
        Assert.Contains("gated_layers", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path)).Message);
        File.WriteAllText(dir.File("config.json"), ConfigJson(V2).Replace("\"geglu\"", "\"original\""));
        Assert.Contains("gated_layers", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path)).Message);
        // GLU config over BERT's feed-forward tensors: the missing gated_layers named
        using var dir2 = new TempDir();
        BertModelTests.Write(dir2, Checkpoint(Original), config: false);
        File.WriteAllText(dir2.File("config.json"), ConfigJson(Original).Replace("\"original\"", "\"geglu\""));
        Assert.Contains("mlp.gated_layers.weight", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir2.Path)).Message);
    }
}
