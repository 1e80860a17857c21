using FastAttn.Embeddings;
using FastAttn.IO;
using FastAttn.Kernels;
using FastAttn.Layers;
using FastAttn.TestSupport;
using FastAttn.Tests.IO;
using static FastAttn.Tests.Layers.LayerTests;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// Qwen3 as Qwen3-Embedding runs it (transformers' Qwen3Model: pre-norm decoder layers with RMS norms, grouped-query causal
/// attention whose queries and keys are RMS-normed per head before the rotation, a head width of its own, SwiGLU; a final
/// norm; the last token's state as the sentence vector). A tiny model with random weights against a double-precision one
/// written here from those formulas, in three settings, on every ISA path, packed and alone; a sentence-transformers folder
/// with a byte-level BPE tokenizer.json that appends the end-of-text token, as Qwen3-Embedding's does.
/// </summary>
public class Qwen3Tests
{
    private const int H = 24, Layers = 2, Ff = 40, Vocab = 50;
    private const double Eps = 1e-6;

    public sealed record Setting(string Name, string Prefix, int Heads, int KvHeads, int HeadDim, bool Bias, double Theta, bool Qwen2 = false)
    {
        public override string ToString() => Name;
    }

    // Qwen3-Embedding's form: a Qwen3ForCausalLM-style "model." prefix, 2 query heads per key/value head, heads·head_dim ≠ hidden
    public static readonly Setting Gqa = new("gqa", "model.", Heads: 4, KvHeads: 2, HeadDim: 8, Bias: false, Theta: 1_000_000);
    // bare Qwen3Model names, one key/value head for all, biases on q/k/v/o, a small base
    public static readonly Setting Mqa = new("mqa-bias", "", Heads: 3, KvHeads: 1, HeadDim: 6, Bias: true, Theta: 500);
    // every head its own keys, head_dim × heads = hidden
    public static readonly Setting Mha = new("mha", "", Heads: 3, KvHeads: 3, HeadDim: 8, Bias: false, Theta: 10000);

    // Qwen2 (model_type qwen2): q/k/v biased, o not, no per-head norms, the head width hidden / heads
    public static readonly Setting Qwen2 = new("qwen2", "model.", Heads: 4, KvHeads: 2, HeadDim: 6, Bias: true, Theta: 1_000_000, Qwen2: true);

    public static TheoryData<Setting> Settings => [Gqa, Mqa, Mha, Qwen2];

    private static Dictionary<string, (float[] Data, long[] Shape)> Checkpoint(Setting st, int vocab = Vocab)
    {
        var t = new Dictionary<string, (float[], long[])>();
        int s = 4100;
        string p = st.Prefix;
        int q = st.Heads * st.HeadDim, kv = st.KvHeads * st.HeadDim;
        void Add(string name, float scale, params long[] shape) => BertModelTests.AddRandom(t, name, scale, s++, shape);
        void Gain(string name, long width) { Add(name, 0.2f, width); var d = t[name].Item1; for (int i = 0; i < d.Length; i++) d[i] += 1; }
        Add(p + "embed_tokens.weight", 0.5f, vocab, H);
        for (int l = 0; l < Layers; l++)
        {
            string a = $"{p}layers.{l}.";
            Gain(a + "input_layernorm.weight", H);
            Add(a + "self_attn.q_proj.weight", 0.4f, q, H); Add(a + "self_attn.k_proj.weight", 0.4f, kv, H); Add(a + "self_attn.v_proj.weight", 0.4f, kv, H);
            Add(a + "self_attn.o_proj.weight", 0.3f, H, q);
            if (st.Bias)
            {
                Add(a + "self_attn.q_proj.bias", 0.1f, q); Add(a + "self_attn.k_proj.bias", 0.1f, kv); Add(a + "self_attn.v_proj.bias", 0.1f, kv);
                if (!st.Qwen2) Add(a + "self_attn.o_proj.bias", 0.1f, H);
            }
            if (!st.Qwen2) { Gain(a + "self_attn.q_norm.weight", st.HeadDim); Gain(a + "self_attn.k_norm.weight", st.HeadDim); }
            Gain(a + "post_attention_layernorm.weight", H);
            Add(a + "mlp.gate_proj.weight", 0.3f, Ff, H); Add(a + "mlp.up_proj.weight", 0.3f, Ff, H); Add(a + "mlp.down_proj.weight", 0.2f, H, Ff);
        }
        Gain(p + "norm.weight", H);
        if (st.Prefix.Length > 0) Add("lm_head.weight", 0.1f, vocab, H);   // a causal-LM checkpoint's head: ignored
        return t;
    }

    private static string ConfigJson(Setting st, int vocab = Vocab) => st.Qwen2 ? $$"""
        {"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 2, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": {{H}},
         "initializer_range": 0.02, "intermediate_size": {{Ff}}, "max_position_embeddings": 32768, "max_window_layers": 21, "model_type": "qwen2",
         "num_attention_heads": {{st.Heads}}, "num_hidden_layers": {{Layers}}, "num_key_value_heads": {{st.KvHeads}}, "rms_norm_eps": 1e-06,
         "rope_theta": {{st.Theta}}, "sliding_window": 131072, "tie_word_embeddings": false, "torch_dtype": "float32", "use_cache": true,
         "use_sliding_window": false, "vocab_size": {{vocab}}}
        """ : $$"""
        {"architectures": ["Qwen3ForCausalLM"], "attention_bias": {{(st.Bias ? "true" : "false")}}, "attention_dropout": 0.0, "bos_token_id": 2, "eos_token_id": 2,
         "head_dim": {{st.HeadDim}}, "hidden_act": "silu", "hidden_size": {{H}}, "initializer_range": 0.02, "intermediate_size": {{Ff}},
         "max_position_embeddings": 32768, "max_window_layers": 28, "model_type": "qwen3", "num_attention_heads": {{st.Heads}},
         "num_hidden_layers": {{Layers}}, "num_key_value_heads": {{st.KvHeads}}, "rms_norm_eps": 1e-06, "rope_scaling": null,
         "rope_theta": {{st.Theta}}, "sliding_window": null, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
         "transformers_version": "4.51.3", "use_cache": true, "use_sliding_window": false, "vocab_size": {{vocab}}}
        """;

    private static double[] Rms(double[] x, int rows, int n, float[] g, int offset = 0, int stride = -1)
    {
        stride = stride < 0 ? n : stride;
        var y = (double[])x.Clone();
        for (int r = 0; r < rows; r++)
        {
            double ss = 0;
            for (int c = 0; c < n; c++) ss += x[offset + r * stride + c] * x[offset + r * stride + c];
            double inv = 1 / Math.Sqrt(ss / n + Eps);
            for (int c = 0; c < n; c++) y[offset + r * stride + c] = x[offset + r * stride + c] * inv * g[c];
        }
        return y;
    }

    /// <summary>Rotate-half RoPE on <paramref name="heads"/> heads of width d, exact angles, position = row index.</summary>
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

    internal static double[] RefStates(Dictionary<string, (float[] Data, long[] Shape)> w, Setting st, int[] ids)
    {
        float[] W(string n) => w[st.Prefix + n].Data;
        float[] B(string n, int rows) => st.Bias && !(st.Qwen2 && n.Contains("o_proj")) ? W(n) : new float[rows];
        int t = ids.Length, d = st.HeadDim, q = st.Heads * d, kv = st.KvHeads * d, group = st.Heads / st.KvHeads;
        var x = new double[t * H];
        for (int i = 0; i < t; i++) for (int c = 0; c < H; c++) x[i * H + c] = W("embed_tokens.weight")[ids[i] * H + c];
        for (int l = 0; l < Layers; l++)
        {
            string p = $"layers.{l}.";
            var n = Rms(x, t, H, W(p + "input_layernorm.weight"));
            var qs = Lin(n, t, W(p + "self_attn.q_proj.weight"), B(p + "self_attn.q_proj.bias", q), q, H);
            var ks = Lin(n, t, W(p + "self_attn.k_proj.weight"), B(p + "self_attn.k_proj.bias", kv), kv, H);
            var vs = Lin(n, t, W(p + "self_attn.v_proj.weight"), B(p + "self_attn.v_proj.bias", kv), kv, H);
            if (!st.Qwen2)
            {
                qs = Rms(qs, t * st.Heads, d, W(p + "self_attn.q_norm.weight"));
                ks = Rms(ks, t * st.KvHeads, d, W(p + "self_attn.k_norm.weight"));
            }
            Rope(qs, t, st.Heads, d, st.Theta);
            Rope(ks, t, st.KvHeads, d, st.Theta);
            var ctx = new double[t * q];
            for (int h = 0; h < st.Heads; h++)
                for (int i = 0; i < t; i++)
                {
                    int g = h / group;
                    var sc = new double[i + 1];                                  // causal: keys 0..i
                    for (int j = 0; j <= i; j++)
                    {
                        double dot = 0;
                        for (int k = 0; k < d; k++) dot += qs[i * q + h * d + k] * ks[j * kv + g * d + k];
                        sc[j] = dot / Math.Sqrt(d);
                    }
                    double m = sc.Max(), sum = 0;
                    for (int j = 0; j <= i; j++) { sc[j] = Math.Exp(sc[j] - m); sum += sc[j]; }
                    for (int k = 0; k < d; k++)
                    {
                        double acc = 0;
                        for (int j = 0; j <= i; j++) acc += sc[j] / sum * vs[j * kv + g * d + k];
                        ctx[i * q + h * d + k] = acc;
                    }
                }
            var o = Lin(ctx, t, W(p + "self_attn.o_proj.weight"), B(p + "self_attn.o_proj.bias", H), H, q);
            var x1 = x.Zip(o, (a, b) => a + b).ToArray();
            var n2 = Rms(x1, t, H, W(p + "post_attention_layernorm.weight"));
            var gate = Lin(n2, t, W(p + "mlp.gate_proj.weight"), new float[Ff], Ff, H);
            var up = Lin(n2, t, W(p + "mlp.up_proj.weight"), new float[Ff], Ff, H);
            var y = gate.Zip(up, (a, b) => a / (1 + Math.Exp(-a)) * b).ToArray();
            var f = Lin(y, t, W(p + "mlp.down_proj.weight"), new float[H], H, Ff);
            x = x1.Zip(f, (a, b) => a + b).ToArray();
        }
        return Rms(x, t, H, W("norm.weight"));
    }

    private static readonly int[][] Sequences =
        [[1, 7, 11, 2], [1, 2], [2], [.. Enumerable.Range(0, 39).Select(i => 3 + (i * 7) % 45), 2], [45, 5, 9, 9, 30, 12, 2], [.. Enumerable.Range(0, 27).Select(i => (i * 11) % Vocab)]];

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
            Assert.Equal(st.Qwen2 ? "qwen2" : "qwen3", model.Config.ModelType);
            Assert.Equal(32768, model.Embeddings.MaxPositions);
            Assert.Null(model.Embeddings.Norm);
            BertModelTests.AssertStatesWithoutAllocation(model, new SentenceEmbedderOptions { MaxBatchTokens = 128, MaxTokensPerText = 40 }, Sequences, expected, H, st.ToString());
        });
    }

    [Fact]
    public void OpenPooling_IsTheLastTokensState()
    {
        var w = Checkpoint(Gqa);
        using var dir = new TempDir();
        using var model = LoadModel(dir, Gqa);
        using var session = new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxBatchTokens = 128 });
        Assert.Equal(Pooling.LastToken, session.Options.Pooling);
        int[] ids = [.. Sequences.SelectMany(s => s)], lengths = [.. Sequences.Select(s => s.Length)];
        var vectors = new float[Sequences.Length * H];
        session.EncodeIds(ids, lengths, vectors);
        for (int s = 0; s < Sequences.Length; s++)
        {
            var x = RefStates(w, Gqa, Sequences[s]);
            BertModelTests.AssertClose(x[^H..], vectors.AsSpan(s * H, H), $"sequence {s}'s last token");
        }
        Assert.Equal(0, FastAttn.Tests.Reference.SteadyStateAllocations(() => session.EncodeIds(ids, lengths, vectors)));
    }

    [Fact]
    public void TwoThreads_SameBits_NoAllocations()
    {
        using var dir = new TempDir();
        using var model = LoadModel(dir, Gqa);
        BertModelTests.AssertTwoThreadsSameBits(model, Sequences, H, 128);
    }

    [Fact]
    public void Bf16Checkpoint_LoadsExactly()
    {
        // Qwen3-Embedding's weights are stored as bfloat16: widened to float32 exactly (the reference takes the same rounded values)
        var w = Checkpoint(Gqa);
        foreach (var key in w.Keys.ToList())
        {
            var d = w[key].Data;
            for (int i = 0; i < d.Length; i++) d[i] = PackedWeight.FromBf16(PackedWeight.ToBf16(d[i]));
        }
        using var dir = new TempDir();
        SafeTensorsWriter.Write(dir.File("model.safetensors"), w.Select(kv => new SafeTensorsWriter.Entry(kv.Key, kv.Value.Data, kv.Value.Shape, SafeTensorsDType.BF16)));
        File.WriteAllText(dir.File("config.json"), ConfigJson(Gqa));
        using var model = BertModel.Load(dir.Path);
        BertModelTests.AssertStatesWithoutAllocation(model, new SentenceEmbedderOptions { MaxBatchTokens = 128 }, Sequences, [.. Sequences.Select(s => RefStates(w, Gqa, s))], H, "bf16 file");
    }

    [Theory]
    [InlineData(Precision.Int8)]
    [InlineData(Precision.BF16Weights)]
    public void ReducedPrecision_CloseToFp32_SmallerWeights_NoAllocations(Precision precision)
    {
        // two pre-norm layers and a final RMS norm: O(1) outputs
        IsaPaths.ForEach(() =>
        {
            using var dir = new TempDir();
            LoadModel(dir, Gqa).Dispose();
            BertModelTests.AssertReducedPrecision(dir.Path, precision, Sequences, H);
        });
    }

    /// <summary>
    /// A Qwen3-Embedding-style sentence-transformers folder: a byte-level BPE tokenizer.json laid out as its is (NFC, Split by
    /// Qwen2's pattern, the byte alphabet, the end-of-text token appended by the template), last-token pooling,
    /// normalisation, its two prompts. Returns the checkpoint written.
    /// </summary>
    private static Dictionary<string, (float[] Data, long[] Shape)> WriteFolder(TempDir dir)
    {
        var words = "the cafe owner paid for books hello world here new a query what is capital of china Instruct Given web search retrieve passages".Split(' ');
        var bpe = BpeFiles.Build(BpeFiles.ByteChars.Select(c => c.ToString()), words.SelectMany(x => new[] { BpeFiles.ByteLevel(" " + x), BpeFiles.ByteLevel(x) }));
        int vocab = bpe.Vocab.Count + 1;                                        // + <mask>, added by the writer
        var w = Checkpoint(Gqa, vocab);
        BertModelTests.Write(dir, w, config: false);
        File.WriteAllText(dir.File("config.json"), ConfigJson(Gqa, vocab));
        BpeFiles.TokenizerJson(dir.File("tokenizer.json"), bpe, new BpeFiles.Settings
        {
            Normalizer = wr => { wr.WriteStartObject(); wr.WriteString("type", "NFC"); wr.WriteEndObject(); },
            PreTokenizer = BpeFiles.DecoderPre(BpeFiles.Qwen2Regex), PostProcessor = "eos", TupleMerges = true,
        });
        File.WriteAllText(dir.File("modules.json"), """
            [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
             {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
             {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
            """);
        Directory.CreateDirectory(dir.File("1_Pooling"));
        File.WriteAllText(Path.Combine(dir.Path, "1_Pooling", "config.json"), $$"""
            {"word_embedding_dimension": {{H}}, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": false, "pooling_mode_max_tokens": false,
             "pooling_mode_mean_sqrt_len_tokens": false, "pooling_mode_weightedmean_tokens": false, "pooling_mode_lasttoken": true, "include_prompt": true}
            """);
        File.WriteAllText(dir.File("config_sentence_transformers.json"), """
            {"prompts": {"query": "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:", "document": ""},
             "default_prompt_name": null, "similarity_fn_name": "cosine"}
            """);
        return w;
    }

    [Fact]
    public void SentenceTransformersFolder_EmbedsTextEndToEnd_WithTheEndOfTextTokenAndPrompts()
    {
        using var dir = new TempDir();
        var w = WriteFolder(dir);
        using var embedder = SentenceEmbedder.Load(dir.Path);
        var tokenizer = TextTokenizer.FromTokenizerJson(dir.File("tokenizer.json"));
        foreach (var (text, prompt) in new[] { ("what is the capital of china", (string?)null), ("what is the capital of china", "query"), ("hello world here", "document") })
        {
            string full = (prompt == null ? "" : embedder.Prompts[prompt]) + text;
            var ids = tokenizer.Encode(full);
            Assert.Equal(2, ids[^1]);                                           // the end-of-text token closes the text
            Assert.NotEqual(2, ids[0]);                                         // and nothing opens it
            var x = RefStates(w, Gqa, ids);
            var last = x[^H..];
            double norm = Math.Sqrt(last.Sum(v => v * v));
            using var withPrompt = prompt == null ? null : SentenceEmbedder.Load(dir.Path, options: new SentenceEmbedderOptions { Prompt = embedder.Prompts[prompt] });
            var got = (withPrompt ?? embedder).Encode(text);
            BertModelTests.AssertClose([.. last.Select(v => v / norm)], got, $"'{full}' through the folder");
        }
        using var query = SentenceEmbedder.Load(dir.Path, options: new SentenceEmbedderOptions { Prompt = embedder.Prompts["query"] });
        Assert.NotEqual(embedder.Encode("what is the capital of china"), query.Encode("what is the capital of china"));
    }

    [Fact]
    public void EmbedCommand_TakesTheFoldersQueryPrompt()
    {
        using var dir = new TempDir();
        WriteFolder(dir);
        const string text = "what is the capital of china";
        (int Code, string Out, string Err) Run(params string[] args)
        {
            var o = new StringWriter();
            var e = new StringWriter();
            int code = FastAttn.Cli.CliApp.Run(args, o, e, () => new MemoryStream());
            return (code, o.ToString(), e.ToString());
        }
        float[] Parse(string s) => [.. s.Trim().Split(' ').Select(x => float.Parse(x, System.Globalization.CultureInfo.InvariantCulture))];
        using var embedder = SentenceEmbedder.Load(dir.Path);
        foreach (var prompt in new[] { "query", "document" })
        {
            var r = Run("embed", "--model", dir.Path, "--prompt", prompt, text);
            Assert.True(r.Code == 0, r.Err);
            var got = Parse(r.Out);
            var expect = embedder.Encode(embedder.Prompts[prompt] + text);
            Assert.Equal(H, got.Length);
            for (int i = 0; i < got.Length; i++) Assert.True(Math.Abs(expect[i] - got[i]) <= 1e-6 * Math.Max(1, Math.Abs(expect[i])), $"{prompt} {i}: {expect[i]} vs {got[i]}");
        }
        var bad = Run("embed", "--model", dir.Path, "--prompt", "passage", text);
        Assert.Equal(2, bad.Code);
        Assert.Single(bad.Err.Trim().Split('\n'));
    }

    [Fact]
    public void Config_RefusesWhatIsNotRun_AndTensorsMustAgree()
    {
        var ok = BertConfig.FromJson(ConfigJson(Gqa));
        Assert.Equal(("qwen3", 4, 1e-6f, Activation.Silu), (ok.ModelType, ok.NumAttentionHeads, ok.LayerNormEps, ok.HiddenAct));
        // Qwen3Config's defaults where a field is absent (Qwen3-8B's shape)
        var bare = BertConfig.FromJson("""{"model_type": "qwen3"}""");
        Assert.Equal((4096, 32, 32, 22016, 151936, 32768), (bare.HiddenSize, bare.NumAttentionHeads, bare.NumHiddenLayers, bare.IntermediateSize, bare.VocabSize, bare.MaxPositionEmbeddings));
        // transformers 5's rope_parameters of the default type are read; the base inside wins
        var v5 = BertConfig.FromJson(ConfigJson(Gqa).Replace("\"rope_scaling\": null", "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 5000}"));
        Assert.Equal("qwen3", v5.ModelType);
        BertModelTests.AssertEditsRefused(ConfigJson(Gqa),
            ("\"rope_scaling\": null", "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}"),
            ("\"rope_scaling\": null", "\"rope_parameters\": {\"rope_type\": \"linear\", \"factor\": 2.0}"),
            ("\"use_sliding_window\": false", "\"use_sliding_window\": true"),
            ("\"use_sliding_window\": false", "\"use_sliding_window\": false, \"is_causal\": false"),
            ("\"rope_scaling\": null", "\"layer_types\": [\"full_attention\", \"sliding_attention\"]"),
            ("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"),
            ("\"head_dim\": 8", "\"head_dim\": 7"),
            ("\"rope_theta\": 1000000", "\"rope_theta\": 0.5"),
            ("\"hidden_act\": \"silu\"", "\"hidden_act\": \"mish\""));
        using var dir = new TempDir();
        BertModelTests.Write(dir, Checkpoint(Gqa), config: false);
        Assert.Contains("config.json", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path)).Message);
        File.WriteAllText(dir.File("config.json"), BertModelTests.ConfigJson());
        Assert.Contains("q_proj", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path)).Message);
        // Qwen2's config over Qwen3's tensors (and back): the per-head norms and the biases are named
        File.WriteAllText(dir.File("config.json"), ConfigJson(Qwen2 with { Heads = Gqa.Heads, KvHeads = Gqa.KvHeads }).Replace("\"num_attention_heads\": 4,", "\"num_attention_heads\": 4, \"head_dim\": 8,"));
        var qwen2Over3 = Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path)).Message;
        Assert.Contains("q_proj.bias", qwen2Over3);
        Assert.Contains("q_norm", qwen2Over3);
        // the config's key/value heads disagree with the tensors: the mis-shaped k_proj named
        File.WriteAllText(dir.File("config.json"), ConfigJson(Gqa).Replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 4"));
        Assert.Contains("k_proj", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path)).Message);
        // attention_bias true over a checkpoint without biases: the missing bias named
        File.WriteAllText(dir.File("config.json"), ConfigJson(Gqa).Replace("\"attention_bias\": false", "\"attention_bias\": true"));
        Assert.Contains("q_proj.bias", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path)).Message);
    }
}
