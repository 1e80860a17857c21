using FastAttn.Embeddings;
using FastAttn.IO;
using FastAttn.Kernels;
using FastAttn.Layers;
using FastAttn.TestSupport;
using FastAttn.Tests.IO;
using static FastAttn.Tests.Layers.LayerTests;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// Gemma 3's text model as EmbeddingGemma runs it (transformers' Gemma3TextModel with use_bidirectional_attention): the
/// word table scaled by √hidden, RMS norms that multiply by 1 + weight, a norm before and after each branch (the
/// "sandwich"), grouped-query attention with per-head q/k norms, RoPE with a local base on the sliding layers and a global
/// one elsewhere, a window of |i − j| &lt; sliding_window / 2 + 1 on the sliding layers when bidirectional (i − j &lt;
/// sliding_window, causal otherwise), scores scaled by 1/√query_pre_attn_scalar and optionally soft-capped, a GELU-tanh
/// gated feed-forward, a final norm. A tiny model with random weights against a double-precision one written here from
/// those formulas, bidirectional and causal, on every ISA path, packed and alone; a sentence-transformers folder with
/// EmbeddingGemma's pipeline (mean pooling, two Dense modules, normalisation, prompts) and a Gemma-style tokenizer.json.
/// </summary>
public class Gemma3Tests
{
    private const int H = 24, Ff = 40, Vocab = 50;
    private const double Eps = 1e-6;

    public sealed record Setting(string Name, string Prefix, int Heads, int KvHeads, int HeadDim, bool Bidirectional, int SlidingWindow, bool[] Sliding,
        double Qpas, double SoftCap, bool ExplicitTypes)
    {
        public int Layers => Sliding.Length;
        public override string ToString() => Name;
    }

    // EmbeddingGemma's form: bidirectional, one key/value head, a head width of its own, a window (radius 4 here) on the sliding layers
    public static readonly Setting Embedding = new("embeddinggemma", "", Heads: 3, KvHeads: 1, HeadDim: 8, Bidirectional: true, SlidingWindow: 8,
        Sliding: [true, false], Qpas: 12, SoftCap: 0, ExplicitTypes: true);
    // a causal Gemma under "model.": the window counted backwards (5 keys behind), the layer pattern from sliding_window_pattern, soft-capped scores
    public static readonly Setting Causal = new("causal-softcap", "model.", Heads: 4, KvHeads: 2, HeadDim: 6, Bidirectional: false, SlidingWindow: 6,
        Sliding: [true, false, true], Qpas: 6, SoftCap: 1.5, ExplicitTypes: false);

    public static TheoryData<Setting> Settings => [Embedding, Causal];

    private static Dictionary<string, (float[] Data, long[] Shape)> Checkpoint(Setting st, int vocab = Vocab)
    {
        var t = new Dictionary<string, (float[], long[])>();
        int s = 5100;
        string p = st.Prefix;
        int q = st.Heads * st.HeadDim, kv = st.KvHeads * st.HeadDim;
        void Add(string name, float scale, params long[] shape) => BertModelTests.AddRandom(t, name, scale, s++, shape);
        Add(p + "embed_tokens.weight", 0.3f, vocab, H);
        for (int l = 0; l < st.Layers; l++)
        {
            string a = $"{p}layers.{l}.";
            // Gemma's norm weights sit around 0 (the gain is 1 + weight)
            Add(a + "input_layernorm.weight", 0.3f, H);
            Add(a + "self_attn.q_proj.weight", 0.4f, q, H); Add(a + "self_attn.k_proj.weight", 0.4f, kv, H); Add(a + "self_attn.v_proj.weight", 0.4f, kv, H);
            Add(a + "self_attn.o_proj.weight", 0.3f, H, q);
            Add(a + "self_attn.q_norm.weight", 0.3f, st.HeadDim); Add(a + "self_attn.k_norm.weight", 0.3f, st.HeadDim);
            Add(a + "post_attention_layernorm.weight", 0.3f, H); Add(a + "pre_feedforward_layernorm.weight", 0.3f, H);
            Add(a + "mlp.gate_proj.weight", 0.3f, Ff, H); Add(a + "mlp.up_proj.weight", 0.3f, Ff, H); Add(a + "mlp.down_proj.weight", 0.2f, H, Ff);
            Add(a + "post_feedforward_layernorm.weight", 0.3f, H);
        }
        Add(p + "norm.weight", 0.3f, H);
        return t;
    }

    private static string ConfigJson(Setting st, int vocab = Vocab)
    {
        string types = st.ExplicitTypes ? $"\"layer_types\": [{string.Join(", ", st.Sliding.Select(x => x ? "\"sliding_attention\"" : "\"full_attention\""))}]," : "\"sliding_window_pattern\": 2,";
        return $$"""
            {"architectures": ["Gemma3TextModel"], "attention_bias": false, "attention_dropout": 0.0, "attn_logit_softcapping": {{(st.SoftCap > 0 ? st.SoftCap.ToString(System.Globalization.CultureInfo.InvariantCulture) : "null")}},
             "bos_token_id": 0, "eos_token_id": 2, "final_logit_softcapping": null, "head_dim": {{st.HeadDim}}, "hidden_activation": "gelu_pytorch_tanh",
             "hidden_size": {{H}}, "initializer_range": 0.02, "intermediate_size": {{Ff}}, {{types}} "max_position_embeddings": 2048, "model_type": "gemma3_text",
             "num_attention_heads": {{st.Heads}}, "num_hidden_layers": {{st.Layers}}, "num_key_value_heads": {{st.KvHeads}}, "pad_token_id": 1,
             "query_pre_attn_scalar": {{st.Qpas}}, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000.0, "rope_scaling": null, "rope_theta": 1000000.0,
             "sliding_window": {{st.SlidingWindow}}, "torch_dtype": "float32", "transformers_version": "4.57.0",
             "use_bidirectional_attention": {{(st.Bidirectional ? "true" : "false")}}, "use_cache": true, "vocab_size": {{vocab}}}
            """;
    }

    /// <summary>Gemma's RMS norm over rows of width n: x / √(mean(x²) + ε) · (1 + w).</summary>
    private static double[] Rms(double[] x, int rows, int n, float[] w)
    {
        var y = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            double ss = 0;
            for (int c = 0; c < n; c++) ss += x[r * n + c] * x[r * n + c];
            double inv = 1 / Math.Sqrt(ss / n + Eps);
            for (int c = 0; c < n; c++) y[r * n + c] = x[r * n + c] * inv * (1.0 + w[c]);
        }
        return y;
    }

    private static void Rope(double[] x, int t, int heads, int d, double theta)
    {
        for (int i = 0; i < t; i++)
            for (int h = 0; h < heads; h++)
                for (int k = 0; k < d / 2; k++)
                {
                    double ang = i * Math.Pow(theta, -2.0 * k / d), c = Math.Cos(ang), sn = Math.Sin(ang);
                    int o = i * heads * d + h * d + k;
                    double u = x[o], v = x[o + d / 2];
                    x[o] = u * c - v * sn;
                    x[o + d / 2] = v * c + u * sn;
                }
    }

    private static double GeluTanh(double x) => 0.5 * x * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));

    internal static double[] RefStates(Dictionary<string, (float[] Data, long[] Shape)> w, Setting st, int[] ids)
    {
        float[] W(string n) => w[st.Prefix + n].Data;
        int t = ids.Length, d = st.HeadDim, q = st.Heads * d, kv = st.KvHeads * d, group = st.Heads / st.KvHeads;
        var x = new double[t * H];
        for (int i = 0; i < t; i++) for (int c = 0; c < H; c++) x[i * H + c] = W("embed_tokens.weight")[ids[i] * H + c] * Math.Sqrt(H);
        for (int l = 0; l < st.Layers; l++)
        {
            string p = $"layers.{l}.";
            bool slides = st.Sliding[l];
            var n = Rms(x, t, H, W(p + "input_layernorm.weight"));
            var qs = Rms(Lin(n, t, W(p + "self_attn.q_proj.weight"), new float[q], q, H), t * st.Heads, d, W(p + "self_attn.q_norm.weight"));
            var ks = Rms(Lin(n, t, W(p + "self_attn.k_proj.weight"), new float[kv], kv, H), t * st.KvHeads, d, W(p + "self_attn.k_norm.weight"));
            var vs = Lin(n, t, W(p + "self_attn.v_proj.weight"), new float[kv], kv, H);
            double theta = slides ? 10000 : 1000000;
            Rope(qs, t, st.Heads, d, theta);
            Rope(ks, t, st.KvHeads, d, theta);
            bool Sees(int i, int j) => st.Bidirectional
                ? !slides || Math.Abs(i - j) < st.SlidingWindow / 2 + 1
                : j <= i && (!slides || i - j < st.SlidingWindow);
            var ctx = new double[t * q];
            for (int h = 0; h < st.Heads; h++)
                for (int i = 0; i < t; i++)
                {
                    int g = h / group;
                    var sc = new double[t];
                    for (int j = 0; j < t; j++)
                    {
                        if (!Sees(i, j)) { sc[j] = double.NegativeInfinity; continue; }
                        double dot = 0;
                        for (int k = 0; k < d; k++) dot += qs[i * q + h * d + k] * ks[j * kv + g * d + k];
                        double z = dot / Math.Sqrt(st.Qpas);
                        sc[j] = st.SoftCap > 0 ? st.SoftCap * Math.Tanh(z / st.SoftCap) : z;
                    }
                    double m = sc.Max(), sum = 0;
                    for (int j = 0; j < t; j++) { sc[j] = Math.Exp(sc[j] - m); sum += sc[j]; }
                    for (int k = 0; k < d; k++)
                    {
                        double acc = 0;
                        for (int j = 0; j < t; j++) acc += sc[j] / sum * vs[j * kv + g * d + k];
                        ctx[i * q + h * d + k] = acc;
                    }
                }
            var o = Rms(Lin(ctx, t, W(p + "self_attn.o_proj.weight"), new float[H], H, q), t, H, W(p + "post_attention_layernorm.weight"));
            var x1 = x.Zip(o, (a, b) => a + b).ToArray();
            var n2 = Rms(x1, t, H, W(p + "pre_feedforward_layernorm.weight"));
            var gate = Lin(n2, t, W(p + "mlp.gate_proj.weight"), new float[Ff], Ff, H);
            var up = Lin(n2, t, W(p + "mlp.up_proj.weight"), new float[Ff], Ff, H);
            var f = Rms(Lin(gate.Zip(up, (a, b) => GeluTanh(a) * b).ToArray(), t, W(p + "mlp.down_proj.weight"), new float[H], H, Ff), t, H, W(p + "post_feedforward_layernorm.weight"));
            x = x1.Zip(f, (a, b) => a + b).ToArray();
        }
        return Rms(x, t, H, W("norm.weight"));
    }

    private static readonly int[][] Sequences =
        [[2, 7, 11, 1], [2, 1], [2], [2, .. Enumerable.Range(0, 38).Select(i => 3 + (i * 7) % 45), 1], [45, 5, 9, 9, 30, 12, 1], [.. Enumerable.Range(0, 27).Select(i => (i * 11) % Vocab)]];

    private static BertModel LoadModel(TempDir dir, Setting st, BertLoadOptions? options = null)
    {
        BertModelTests.Write(dir, Checkpoint(st), config: false);
        File.WriteAllText(dir.File("config.json"), ConfigJson(st));
        return BertModel.Load(dir.Path, options);
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
            Assert.Equal("gemma3_text", model.Config.ModelType);
            Assert.Equal(!st.Bidirectional, model.Config.IsDecoder);
            BertModelTests.AssertStatesWithoutAllocation(model, new SentenceEmbedderOptions { MaxBatchTokens = 128, MaxTokensPerText = 40 }, Sequences, expected, H, st.ToString());
        });
    }

    [Fact]
    public void TwoThreads_SameBits_NoAllocations()
    {
        using var dir = new TempDir();
        using var model = LoadModel(dir, Embedding);
        BertModelTests.AssertTwoThreadsSameBits(model, Sequences, H, 128);
    }

    [Theory]
    [InlineData(Precision.Int8)]
    [InlineData(Precision.BF16Weights)]
    public void ReducedPrecision_CloseToFp32_SmallerWeights(Precision precision)
    {
        using var dir = new TempDir();
        LoadModel(dir, Embedding).Dispose();
        BertModelTests.AssertReducedPrecision(dir.Path, precision, Sequences, H);
    }

    [Fact]
    public void SentenceTransformersFolder_EmbeddingGemmasPipeline_EndToEnd()
    {
        // EmbeddingGemma's folder: Transformer → mean Pooling → Dense(768→3072) → Dense(3072→768), both without bias or
        // activation → Normalize; its prompts; a Gemma-style tokenizer.json (spaces as ▁, a Split on " ", byte fallback, <s> A)
        var words = "the cafe owner paid for books hello world here new a query what is capital of china task search result title none text".Split(' ');
        var list = words.Select(x => "\u2581" + x).Concat(words);
        var chars = list.SelectMany(x => x.EnumerateRunes()).Select(r => r.ToString()).Distinct();
        var bpe = BpeFiles.Build(Enumerable.Range(0, 256).Select(b => $"<0x{b:X2}>").Concat(chars), list);
        int vocab = bpe.Vocab.Count + 1;
        using var dir = new TempDir();
        var w = Checkpoint(Embedding, vocab);
        BertModelTests.Write(dir, w, config: false);
        File.WriteAllText(dir.File("config.json"), ConfigJson(Embedding, vocab));
        BpeFiles.TokenizerJson(dir.File("tokenizer.json"), bpe, new BpeFiles.Settings
        {
            Normalizer = wr => { wr.WriteStartObject(); wr.WriteString("type", "Replace"); wr.WriteStartObject("pattern"); wr.WriteString("String", " "); wr.WriteEndObject(); wr.WriteString("content", "\u2581"); wr.WriteEndObject(); },
            PreTokenizer = BpeFiles.SplitStringPre(" ", "MergedWithPrevious"), PostProcessor = "template", UnkToken = "<unk>", FuseUnk = true, ByteFallback = true, TupleMerges = true,
        });
        File.WriteAllText(dir.File("modules.json"), """
            [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
             {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
             {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
             {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"},
             {"idx": 4, "name": "4", "path": "4_Normalize", "type": "sentence_transformers.models.Normalize"}]
            """);
        Directory.CreateDirectory(dir.File("1_Pooling"));
        File.WriteAllText(Path.Combine(dir.Path, "1_Pooling", "config.json"), $$"""
            {"word_embedding_dimension": {{H}}, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false,
             "pooling_mode_mean_sqrt_len_tokens": false, "pooling_mode_weightedmean_tokens": false, "pooling_mode_lasttoken": false, "include_prompt": true}
            """);
        float[] Dense(string sub, int inF, int outF, int seed)
        {
            Directory.CreateDirectory(dir.File(sub));
            File.WriteAllText(Path.Combine(dir.Path, sub, "config.json"), $$"""{"in_features": {{inF}}, "out_features": {{outF}}, "bias": false, "activation_function": "torch.nn.modules.linear.Identity"}""");
            var m = FastAttn.Tests.Reference.Random(inF * outF, seed, 0.3f);
            SafeTensorsWriter.Write(Path.Combine(dir.Path, sub, "model.safetensors"), [new SafeTensorsWriter.Entry("linear.weight", m, [outF, inF])]);
            return m;
        }
        var d1 = Dense("2_Dense", H, 4 * H, 61);
        var d2 = Dense("3_Dense", 4 * H, H, 62);
        File.WriteAllText(dir.File("config_sentence_transformers.json"), """
            {"prompts": {"query": "task: search result | query: ", "document": "title: none | text: "}, "default_prompt_name": null, "similarity_fn_name": "cosine"}
            """);
        using var embedder = SentenceEmbedder.Load(dir.Path);
        Assert.Equal(Pooling.Mean, embedder.Options.Pooling);
        var tokenizer = TextTokenizer.FromTokenizerJson(dir.File("tokenizer.json"));
        foreach (var prompt in new[] { "query", "document" })
        {
            const string text = "what is the capital of china";
            var ids = tokenizer.Encode(embedder.Prompts[prompt] + text);
            Assert.Equal(0, ids[0]);                                            // <s> first
            var x = RefStates(w, Embedding, ids);
            var pooled = new double[H];
            for (int c = 0; c < H; c++) pooled[c] = Enumerable.Range(0, ids.Length).Sum(i => x[i * H + c]) / ids.Length;
            var v = Lin(Lin(pooled, 1, d1, new float[4 * H], 4 * H, H), 1, d2, new float[H], H, 4 * H);
            double norm = Math.Sqrt(v.Sum(z => z * z));
            using var withPrompt = SentenceEmbedder.Load(dir.Path, options: new SentenceEmbedderOptions { Prompt = embedder.Prompts[prompt] });
            BertModelTests.AssertClose([.. v.Select(z => z / norm)], withPrompt.Encode(text), $"{prompt}: '{text}' through the folder");
        }
    }

    [Fact]
    public void Config_ReadsTheWindowAsTransformersDoes_AndRefusesWhatIsNotRun()
    {
        var bi = BertConfig.FromJson(ConfigJson(Embedding));
        Assert.Equal((true, 4), (bi.Gemma3!.Bidirectional, bi.Gemma3.Window));         // |i − j| < 8 / 2 + 1
        Assert.Equal([true, false], bi.Gemma3.SlidingLayers);
        var causal = BertConfig.FromJson(ConfigJson(Causal));
        Assert.Equal((false, 5), (causal.Gemma3!.Bidirectional, causal.Gemma3.Window)); // i − j < 6
        Assert.Equal([true, false, true], causal.Gemma3.SlidingLayers);
        // Gemma3TextConfig's defaults where a field is absent (gemma-3-1b's shape family), every sixth layer global
        var bare = BertConfig.FromJson("""{"model_type": "gemma3_text"}""");
        Assert.Equal((2304, 8, 26, 9216, 262208, 4096 - 1, Activation.GeluTanh), (bare.HiddenSize, bare.NumAttentionHeads, bare.NumHiddenLayers, bare.IntermediateSize, bare.VocabSize, bare.Gemma3!.Window, bare.HiddenAct));
        Assert.Equal(26 - 4, bare.Gemma3.SlidingLayers.Count(x => x));
        // transformers 5's rope_parameters per layer type
        var v5 = BertConfig.FromJson(ConfigJson(Embedding).Replace("\"rope_scaling\": null", "\"rope_parameters\": {\"full_attention\": {\"rope_type\": \"default\", \"rope_theta\": 5000}, \"sliding_attention\": {\"rope_type\": \"default\", \"rope_theta\": 300}}"));
        Assert.Equal((5000.0, 300.0), (v5.Gemma3!.GlobalTheta, v5.Gemma3.LocalTheta));
        BertModelTests.AssertEditsRefused(ConfigJson(Embedding),
            ("\"rope_scaling\": null", "\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 8.0}"),
            ("\"rope_scaling\": null", "\"rope_parameters\": {\"full_attention\": {\"rope_type\": \"linear\", \"factor\": 8.0}}"),
            ("\"sliding_attention\", \"full_attention\"", "\"sliding_attention\", \"chunked_attention\""),
            ("\"sliding_attention\", \"full_attention\"", "\"sliding_attention\""),
            ("\"sliding_window\": 8", "\"sliding_window\": 0"),
            ("\"num_key_value_heads\": 1", "\"num_key_value_heads\": 2"),
            ("\"head_dim\": 8", "\"head_dim\": 7"),
            ("\"query_pre_attn_scalar\": 12", "\"query_pre_attn_scalar\": 0"),
            ("\"hidden_activation\": \"gelu_pytorch_tanh\"", "\"hidden_activation\": \"mish\""));
        using var dir = new TempDir();
        BertModelTests.Write(dir, Checkpoint(Embedding), config: false);
        Assert.Contains("config.json", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path)).Message);
        // Qwen3's config over Gemma's tensors: the missing post-attention norm is not the problem named — the unexpected ones are
        File.WriteAllText(dir.File("config.json"), ConfigJson(Embedding).Replace("\"num_key_value_heads\": 1", "\"num_key_value_heads\": 3"));
        Assert.Contains("k_proj", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path)).Message);
    }
}
