using FastAttn.Embeddings;
using FastAttn.Kernels;
using FastAttn.Tests.IO;
using static FastAttn.Tests.Layers.LayerTests;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// DeBERTa-v2/v3 (the DeBERTa-v3 cross-encoders, NLI models and rerankers): BERT's post-norm layers with disentangled
/// attention — scores q·k plus content-to-position q·kr[δ] and position-to-content k·qr[δ] over a bucketed relative
/// distance, divided by √(d·(1 + terms)) — and no absolute positions in v3. A tiny model with random weights against a
/// double-precision DeBERTa written here from Hugging Face's modeling_deberta_v2 (the position-to-content term as it is
/// written there: k_j · qr[clamp(−bucket(j − i) + span)]), in three settings, on every ISA path, packed and alone.
/// </summary>
public class DebertaTests
{
    private const int H = 24, Heads = 3, Layers = 2, Ff = 40, Vocab = 50, MaxPos = 64, Classes = 3;
    private const float Eps = 1e-7f;

    public sealed record Setting(string Name, string Prefix, bool Share, bool C2P, bool P2C, int Buckets, int MaxRel, bool NormRel, bool PosBiased, int Types)
    {
        public int Span => Buckets > 0 ? Buckets : MaxRel;
        public override string ToString() => Name;
    }

    public static readonly Setting V3 = new("v3", "deberta.", Share: true, C2P: true, P2C: true, Buckets: 8, MaxRel: 32, NormRel: true, PosBiased: false, Types: 0);
    public static readonly Setting Unshared = new("unshared-c2p-nobuckets", "", Share: false, C2P: true, P2C: false, Buckets: -1, MaxRel: 12, NormRel: false, PosBiased: true, Types: 2);
    public static readonly Setting P2COnly = new("p2c", "deberta.", Share: false, C2P: false, P2C: true, Buckets: 8, MaxRel: 32, NormRel: true, PosBiased: false, Types: 0);

    public static TheoryData<Setting> Settings => [V3, Unshared, P2COnly];

    private static Dictionary<string, (float[] Data, long[] Shape)> Checkpoint(Setting st, bool classifier = false)
    {
        var t = new Dictionary<string, (float[], long[])>();
        int s = 700;
        string p = st.Prefix;
        void Add(string name, float scale, params long[] shape) => BertModelTests.AddRandom(t, name, scale, s++, shape);
        Add(p + "embeddings.word_embeddings.weight", 0.5f, Vocab, H);
        if (st.PosBiased) Add(p + "embeddings.position_embeddings.weight", 0.5f, MaxPos, H);
        else Add(p + "embeddings.position_embeddings.weight", 9f, MaxPos, H);          // carried but unused: large, so using it shows
        if (st.Types > 0) Add(p + "embeddings.token_type_embeddings.weight", 0.5f, st.Types, H);
        Add(p + "embeddings.LayerNorm.weight", 0.2f, H); Add(p + "embeddings.LayerNorm.bias", 0.1f, H);
        Add(p + "encoder.rel_embeddings.weight", 1.0f, 2 * st.Span, H);
        if (st.NormRel) { Add(p + "encoder.LayerNorm.weight", 0.2f, H); Add(p + "encoder.LayerNorm.bias", 0.1f, H); }
        for (int l = 0; l < Layers; l++)
        {
            string q = $"{p}encoder.layer.{l}.";
            foreach (var m in new[] { "attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj", "attention.output.dense" })
            { Add(q + m + ".weight", 0.4f, H, H); Add(q + m + ".bias", 0.1f, H); }
            if (!st.Share)
            {
                if (st.C2P) { Add(q + "attention.self.pos_key_proj.weight", 0.4f, H, H); Add(q + "attention.self.pos_key_proj.bias", 0.1f, H); }
                if (st.P2C) { Add(q + "attention.self.pos_query_proj.weight", 0.4f, H, H); Add(q + "attention.self.pos_query_proj.bias", 0.1f, H); }
            }
            Add(q + "attention.output.LayerNorm.weight", 0.2f, H); Add(q + "attention.output.LayerNorm.bias", 0.1f, H);
            Add(q + "intermediate.dense.weight", 0.3f, Ff, H); Add(q + "intermediate.dense.bias", 0.1f, Ff);
            Add(q + "output.dense.weight", 0.3f, H, Ff); Add(q + "output.dense.bias", 0.1f, H);
            Add(q + "output.LayerNorm.weight", 0.2f, H); Add(q + "output.LayerNorm.bias", 0.1f, H);
        }
        if (classifier)
        {
            Add("pooler.dense.weight", 0.3f, H, H); Add("pooler.dense.bias", 0.1f, H);
            Add("classifier.weight", 0.3f, Classes, H); Add("classifier.bias", 0.1f, Classes);
        }
        Add("lm_predictions.lm_head.dense.weight", 0.3f, H, H);                               // the masked-LM head: ignored
        return t;
    }

    private static string ConfigJson(Setting st)
    {
        string types = st.C2P && st.P2C ? "[\"p2c\", \"c2p\"]" : st.C2P ? "[\"c2p\"]" : "\"p2c\"";
        return $$"""
            {"model_type": "deberta-v2", "hidden_size": {{H}}, "num_attention_heads": {{Heads}}, "num_hidden_layers": {{Layers}}, "intermediate_size": {{Ff}},
             "hidden_act": "gelu", "layer_norm_eps": 1e-7, "max_position_embeddings": {{MaxPos}}, "vocab_size": {{Vocab}}, "type_vocab_size": {{st.Types}},
             "relative_attention": true, "pos_att_type": {{types}}, "position_buckets": {{st.Buckets}}, "max_relative_positions": {{(st.Buckets > 0 ? st.MaxRel : st.MaxRel)}},
             "norm_rel_ebd": "{{(st.NormRel ? "layer_norm" : "none")}}", "share_att_key": {{(st.Share ? "true" : "false")}}, "position_biased_input": {{(st.PosBiased ? "true" : "false")}},
             "pooler_hidden_act": "gelu", "pooler_hidden_size": {{H}}, "pad_token_id": 0}
            """;
    }

    /// <summary>make_log_bucket_position, in float32 as PyTorch evaluates it (written here from its definition).</summary>
    internal static int Bucket(int rel, int buckets, int maxPosition)
    {
        if (buckets <= 0) return rel;
        int mid = buckets / 2;
        int abs = rel < mid && rel > -mid ? mid - 1 : Math.Abs(rel);
        if (abs <= mid) return rel;
        float logPos = MathF.Ceiling((float)Math.Log(abs / (float)mid) / (float)Math.Log((maxPosition - 1) / (double)mid) * (mid - 1)) + mid;
        return (int)logPos * Math.Sign(rel);
    }

    private static double[] RefDeberta(Dictionary<string, (float[] Data, long[] Shape)> w, Setting st, int[] ids)
    {
        float[] W(string n) => w[st.Prefix + n].Data;
        int t = ids.Length, dh = H / Heads, span = st.Span;
        var x = new double[t * H];
        for (int i = 0; i < t; i++)
            for (int c = 0; c < H; c++)
                x[i * H + c] = (double)W("embeddings.word_embeddings.weight")[ids[i] * H + c]
                    + (st.PosBiased ? W("embeddings.position_embeddings.weight")[i * H + c] : 0)
                    + (st.Types > 0 ? W("embeddings.token_type_embeddings.weight")[c] : 0);
        x = Ln(x, t, H, W("embeddings.LayerNorm.weight"), W("embeddings.LayerNorm.bias"), Eps);
        var rel = W("encoder.rel_embeddings.weight").Select(v => (double)v).ToArray();
        if (st.NormRel) rel = Ln(rel, 2 * span, H, W("encoder.LayerNorm.weight"), W("encoder.LayerNorm.bias"), Eps);
        int factor = 1 + (st.C2P ? 1 : 0) + (st.P2C ? 1 : 0);
        double scale = Math.Sqrt(dh * factor);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"encoder.layer.{l}.";
            var q = Lin(x, t, W(p + "attention.self.query_proj.weight"), W(p + "attention.self.query_proj.bias"), H, H);
            var k = Lin(x, t, W(p + "attention.self.key_proj.weight"), W(p + "attention.self.key_proj.bias"), H, H);
            var v = Lin(x, t, W(p + "attention.self.value_proj.weight"), W(p + "attention.self.value_proj.bias"), H, H);
            string pk = st.Share ? "attention.self.key_proj" : "attention.self.pos_key_proj", pq = st.Share ? "attention.self.query_proj" : "attention.self.pos_query_proj";
            var posKey = st.C2P ? Lin(rel, 2 * span, W(p + pk + ".weight"), W(p + pk + ".bias"), H, H) : null;
            var posQuery = st.P2C ? Lin(rel, 2 * span, W(p + pq + ".weight"), W(p + pq + ".bias"), H, H) : null;
            var ctx = new double[t * H];
            for (int h = 0; h < Heads; h++)
                for (int i = 0; i < t; i++)
                {
                    var sc = new double[t];
                    for (int j = 0; j < t; j++)
                    {
                        double dot = 0, c2p = 0, p2c = 0;
                        int c2pPos = Math.Clamp(Bucket(i - j, st.Buckets, st.MaxRel) + span, 0, 2 * span - 1);
                        int p2cPos = Math.Clamp(-Bucket(j - i, st.Buckets, st.MaxRel) + span, 0, 2 * span - 1);
                        for (int d = 0; d < dh; d++)
                        {
                            dot += q[i * H + h * dh + d] * k[j * H + h * dh + d];
                            if (posKey != null) c2p += q[i * H + h * dh + d] * posKey[c2pPos * H + h * dh + d];
                            if (posQuery != null) p2c += k[j * H + h * dh + d] * posQuery[p2cPos * H + h * dh + d];
                        }
                        sc[j] = dot / scale + c2p / scale + p2c / scale;
                    }
                    double m = sc.Max(), sum = 0;
                    for (int j = 0; j < t; j++) { sc[j] = Math.Exp(sc[j] - m); sum += sc[j]; }
                    for (int d = 0; d < dh; d++)
                    {
                        double acc = 0;
                        for (int j = 0; j < t; j++) acc += sc[j] / sum * v[j * H + h * dh + d];
                        ctx[i * H + h * dh + d] = acc;
                    }
                }
            var o = Lin(ctx, t, W(p + "attention.output.dense.weight"), W(p + "attention.output.dense.bias"), H, H);
            var x1 = Ln(x.Zip(o, (a, b) => a + b).ToArray(), t, H, W(p + "attention.output.LayerNorm.weight"), W(p + "attention.output.LayerNorm.bias"), Eps);
            var inter = Lin(x1, t, W(p + "intermediate.dense.weight"), W(p + "intermediate.dense.bias"), Ff, H).Select(z => FastAttn.Tests.Reference.Act(z, Activation.Gelu)).ToArray();
            var f = Lin(inter, t, W(p + "output.dense.weight"), W(p + "output.dense.bias"), H, Ff);
            x = Ln(x1.Zip(f, (a, b) => a + b).ToArray(), t, H, W(p + "output.LayerNorm.weight"), W(p + "output.LayerNorm.bias"), Eps);
        }
        return x;
    }

    // lengths 1 … 60: distances inside the exact buckets, in the logarithmic ones, and past the largest (clamped)
    private static readonly int[][] Sequences =
        [[1, 7, 11, 2], [1, 2], [1], [1, .. Enumerable.Range(0, 38).Select(i => 3 + (i * 7) % 45), 2], [1, 45, 5, 9, 9, 30, 12, 2], [.. Enumerable.Range(0, 60).Select(i => (i * 11) % Vocab)]];

    [Theory]
    [MemberData(nameof(Settings))]
    public void States_MatchTheReference_PackedAndAlone(Setting st)
    {
        IsaPaths.ForEach(() =>
        {
            using var dir = new TempDir();
            var w = Checkpoint(st);
            BertModelTests.Write(dir, w, config: false);
            File.WriteAllText(dir.File("config.json"), ConfigJson(st));
            using var model = BertModel.Load(dir.Path);
            Assert.Equal("deberta-v2", model.Config.ModelType);
            Assert.Equal(MaxPos, model.Embeddings.MaxPositions);
            using var session = new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxBatchTokens = 128 });
            var (ids, lengths, packed) = BertModelTests.AssertPackedAndAlone(session, Sequences, [.. Sequences.Select(s => RefDeberta(w, st, s))], H, st.ToString());
            Assert.ThrowsAny<ArgumentException>(() => session.HiddenStates(new int[MaxPos + 1], [MaxPos + 1], new float[(MaxPos + 1) * H]));
            // the steady state allocates nothing (the attention's products and scores live in the session's scratch)
            Assert.Equal(0, FastAttn.Tests.Reference.SteadyStateAllocations(() => session.HiddenStates(ids, lengths, packed)));
        });
    }

    [Fact]
    public void TwoThreads_SameStates_NoAllocations()
    {
        using var dir = new TempDir();
        var w = Checkpoint(V3);
        BertModelTests.Write(dir, w, config: false);
        File.WriteAllText(dir.File("config.json"), ConfigJson(V3));
        using var model = BertModel.Load(dir.Path);
        int[] ids = [.. Sequences.SelectMany(s => s)], lengths = [.. Sequences.Select(s => s.Length)];
        using var one = new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxBatchTokens = 128, Threads = 1 });
        using var two = new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxBatchTokens = 128, Threads = 2 });
        float[] a = new float[ids.Length * H], b = new float[ids.Length * H];
        one.HiddenStates(ids, lengths, a);
        two.HiddenStates(ids, lengths, b);
        BertModelTests.AssertClose([.. a.Select(x => (double)x)], b, "2 threads against 1");
        Assert.Equal(0, FastAttn.Tests.Reference.SteadyStateAllocations(() => two.HiddenStates(ids, lengths, b)));
    }

    [Fact]
    public void SequenceClassificationHead_IsTheGeluContextPooler()
    {
        using var dir = new TempDir();
        var w = Checkpoint(V3, classifier: true);
        BertModelTests.Write(dir, w, config: false);
        File.WriteAllText(dir.File("config.json"), ConfigJson(V3));
        using var model = BertModel.Load(dir.Path);
        Assert.Equal(BertHead.Sequence, model.Head);
        using var session = new EmbeddingSession(model, null);
        foreach (var s in Sequences)
        {
            var cls = RefDeberta(w, V3, s)[..H];
            var pooled = Lin(cls, 1, w["pooler.dense.weight"].Data, w["pooler.dense.bias"].Data, H, H).Select(z => FastAttn.Tests.Reference.Act(z, Activation.Gelu)).ToArray();
            var logits = Lin(pooled, 1, w["classifier.weight"].Data, w["classifier.bias"].Data, Classes, H);
            var got = new float[Classes];
            session.ClassifyIds(s, default, [s.Length], got);
            BertModelTests.AssertClose(logits, got, $"logits, sequence of {s.Length}");
        }
    }

    [Fact]
    public void Buckets_FollowTheFormula()
    {
        // DeBERTa-v3's table: 256 buckets over 512 positions — exact within ±128, logarithmic beyond, odd in δ
        var rel = new DebertaRelative(256, 256, 512, true, true, true, true);
        // hand-checked: log(129/128) / log(511/128) · 127 = 0.71 → 1; log(130/128) / … · 127 = 1.42 → 2; log(200/128) / … · 127 = 40.9 → 41
        (int d, int b)[] cases = [(0, 0), (1, 1), (-1, -1), (127, 127), (128, 128), (-128, -128), (129, 129), (130, 130), (200, 169), (-200, -169)];
        foreach (var (d, b) in cases)
        {
            Assert.Equal(Bucket(d, 256, 512), rel.Bucket(d));
            Assert.Equal(b, rel.Bucket(d));
        }
        for (int d = -700; d <= 700; d++) Assert.Equal(Bucket(d, 256, 512), rel.Bucket(d));
        Assert.Equal(0, rel.Row(-600));            // clamped into the table's 512 rows
        Assert.Equal(511, rel.Row(600));
        // a config whose logarithmic range is tiny (max just past mid + 1) sends far distances far past the table: still
        // its last row, not an overflowed negative bucket
        var steep = new DebertaRelative(65536, 65536, 32770, true, true, true, true);
        Assert.Equal(2 * 65536 - 1, steep.Row(1_000_000));
        Assert.Equal(0, steep.Row(-1_000_000));
    }

    [Fact]
    public void Config_RefusesWhatIsNotRun_AndWantsConfigJson()
    {
        var ok = BertConfig.FromJson(ConfigJson(V3));
        Assert.Equal((Activation.Gelu, 1, 1e-7f), (ok.PoolerActivation, ok.TypeVocabSize, ok.LayerNormEps));
        foreach (var (bad, what) in new[]
        {
            ("\"relative_attention\": true", "\"relative_attention\": false"),
            ("\"pos_att_type\": [\"p2c\", \"c2p\"]", "\"pos_att_type\": [\"p2p\"]"),
            ("\"norm_rel_ebd\": \"layer_norm\"", "\"norm_rel_ebd\": \"batch_norm\""),
            ("\"pooler_hidden_act\": \"gelu\"", "\"pooler_hidden_act\": \"gelu\", \"conv_kernel_size\": 3"),
            ("\"pooler_hidden_act\": \"gelu\"", "\"pooler_hidden_act\": \"gelu\", \"embedding_size\": 12"),
            ("\"pooler_hidden_act\": \"gelu\"", "\"pooler_hidden_act\": \"gelu\", \"attention_head_size\": 4"),
            ("\"max_relative_positions\": 32", "\"max_relative_positions\": 4"),
            ("\"share_att_key\": true", "\"share_att_key\": 1"),
        })
        {
            Assert.Contains(bad, ConfigJson(V3));
            Assert.Throws<InvalidDataException>(() => BertConfig.FromJson(ConfigJson(V3).Replace(bad, what)));
        }
        using var dir = new TempDir();
        BertModelTests.Write(dir, Checkpoint(V3), config: false);
        // no config.json: the attention settings cannot be read from the tensors
        Assert.Contains("config.json", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path, new BertLoadOptions { Heads = Heads })).Message);
        // a BERT config over DeBERTa's tensors: refused
        File.WriteAllText(dir.File("config.json"), BertModelTests.ConfigJson());
        Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path));
    }
}
