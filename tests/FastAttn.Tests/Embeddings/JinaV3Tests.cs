using FastAttn.Embeddings;
using FastAttn.Kernels;
using FastAttn.Tests.IO;
using static FastAttn.Tests.Layers.LayerTests;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// jina-embeddings-v3 (jinaai/xlm-roberta-flash-implementation): XLM-RoBERTa's post-norm layers under flash-attention's
/// names (mixer.Wqkv, mixer.out_proj, norm1, mlp.fc1/fc2, norm2, emb_ln) with rotary positions instead of a position
/// table, and LoRA adapters on every embedding and linear weight, one merged in at load. A tiny model with random
/// weights and three adapters against a double-precision one written here from its formulas — the adapter merged as
/// W + (alpha/rank)·B·A (an embedding: A·B) in double — with no adapter and with two of them, under roberta. or bare
/// names, on every ISA path, packed and alone.
/// </summary>
public class JinaV3Tests
{
    private const int H = 24, Heads = 3, Layers = 2, Vocab = 50, Ff = 40, Rank = 2, Types = 1;
    private const double Theta = 20000, Alpha = 3;
    private static readonly string[] Tasks = ["retrieval.query", "retrieval.passage", "text-matching"];

    private static Dictionary<string, (float[] Data, long[] Shape)> Checkpoint(string prefix, bool lora = true)
    {
        var t = new Dictionary<string, (float[], long[])>();
        int s = 4100;
        void Add(string name, float scale, params long[] shape) => BertModelTests.AddRandom(t, name, scale, s++, shape);
        void Weight(string name, long rows, long cols, float scale, bool embedding)
        {
            if (!lora) { Add(name + ".weight", scale, rows, cols); return; }
            Add(name + ".parametrizations.weight.original", scale, rows, cols);
            if (embedding) { Add(name + ".parametrizations.weight.0.lora_A", 0.3f, Tasks.Length, rows, Rank); Add(name + ".parametrizations.weight.0.lora_B", 0.3f, Tasks.Length, Rank, cols); }
            else { Add(name + ".parametrizations.weight.0.lora_A", 0.3f, Tasks.Length, Rank, cols); Add(name + ".parametrizations.weight.0.lora_B", 0.3f, Tasks.Length, rows, Rank); }
        }
        Weight(prefix + "embeddings.word_embeddings", Vocab, H, 0.5f, true);
        Weight(prefix + "embeddings.token_type_embeddings", Types, H, 0.5f, true);
        Add(prefix + "emb_ln.weight", 0.2f, H); Add(prefix + "emb_ln.bias", 0.1f, H);
        if (!lora) Add(prefix + "embeddings.position_ids", 1f, 1, 8194);          // a buffer some exports carry: ignored
        for (int l = 0; l < Layers; l++)
        {
            string q = $"{prefix}encoder.layers.{l}.";
            Weight(q + "mixer.Wqkv", 3 * H, H, 0.4f, false); Add(q + "mixer.Wqkv.bias", 0.1f, 3 * H);
            Weight(q + "mixer.out_proj", H, H, 0.3f, false); Add(q + "mixer.out_proj.bias", 0.1f, H);
            Add(q + "norm1.weight", 0.2f, H); Add(q + "norm1.bias", 0.1f, H);
            Weight(q + "mlp.fc1", Ff, H, 0.3f, false); Add(q + "mlp.fc1.bias", 0.1f, Ff);
            Weight(q + "mlp.fc2", H, Ff, 0.2f, false); Add(q + "mlp.fc2.bias", 0.1f, H);
            Add(q + "norm2.weight", 0.2f, H); Add(q + "norm2.bias", 0.1f, H);
        }
        return t;
    }

    private static string ConfigJson(bool lora = true) => $$"""
        {"architectures": ["XLMRobertaModel"], "auto_map": {"AutoModel": "jinaai/xlm-roberta-flash-implementation--modeling_lora.XLMRobertaLoRA"},
         "model_type": "xlm-roberta", "hidden_size": {{H}}, "num_attention_heads": {{Heads}}, "num_hidden_layers": {{Layers}}, "intermediate_size": {{Ff}},
         "hidden_act": "gelu", "layer_norm_eps": 1e-05, "max_position_embeddings": 8194, "type_vocab_size": {{Types}}, "vocab_size": {{Vocab}}, "pad_token_id": 1,
         "position_embedding_type": "rotary", "rotary_emb_base": {{Theta}}, "use_flash_attn": true, "emb_pooler": null,
         "lora_adaptations": {{(lora ? "[\"retrieval.query\", \"retrieval.passage\", \"text-matching\"]" : "[]")}}, "lora_rank": {{Rank}}, "lora_alpha": {{Alpha}},
         "task_instructions": {"retrieval.query": "Represent the query for retrieving evidence documents: ", "retrieval.passage": "Represent the document for retrieval: ", "text-matching": ""},
         "lora_dropout_p": 0.0, "lora_main_params_trainable": false, "load_trained_adapters": true}
        """;

    /// <summary>A weight with adapter <paramref name="task"/> merged in double (−1: the original).</summary>
    private static double[] Merged(Dictionary<string, (float[] Data, long[] Shape)> w, string name, int rows, int cols, bool embedding, int task)
    {
        if (w.TryGetValue(name + ".weight", out var plain)) return [.. plain.Data.Select(v => (double)v)];
        var o = w[name + ".parametrizations.weight.original"].Data;
        var r = o.Select(v => (double)v).ToArray();
        if (task < 0) return r;
        var a = w[name + ".parametrizations.weight.0.lora_A"].Data;
        var b = w[name + ".parametrizations.weight.0.lora_B"].Data;
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
                for (int q = 0; q < Rank; q++)
                    r[i * cols + j] += Alpha / Rank * (embedding ? (double)a[(task * rows + i) * Rank + q] * b[(task * Rank + q) * cols + j]
                                                                 : (double)b[(task * rows + i) * Rank + q] * a[(task * Rank + q) * cols + j]);
        return r;
    }

    private static double[] MatMul(double[] x, int t, double[] w, float[] b, int outF, int inF)
    {
        var y = new double[t * outF];
        for (int i = 0; i < t; i++)
            for (int o = 0; o < outF; o++)
            {
                double acc = b[o];
                for (int k = 0; k < inF; k++) acc += x[i * inF + k] * w[o * inF + k];
                y[i * outF + o] = acc;
            }
        return y;
    }

    private static double[] RefStates(Dictionary<string, (float[] Data, long[] Shape)> w, string prefix, int task, int[] ids)
    {
        float[] F(string n) => w[prefix + n].Data;
        double[] M(string n, int rows, int cols, bool emb = false) => Merged(w, prefix + n, rows, cols, emb, task);
        int t = ids.Length;
        var word = M("embeddings.word_embeddings", Vocab, H, true);
        var type = M("embeddings.token_type_embeddings", Types, H, true);
        var x = new double[t * H];
        for (int i = 0; i < t; i++) for (int c = 0; c < H; c++) x[i * H + c] = word[ids[i] * H + c] + type[c];
        x = Ln(x, t, H, F("emb_ln.weight"), F("emb_ln.bias"), 1e-5);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"encoder.layers.{l}.";
            var qkv = MatMul(x, t, M(p + "mixer.Wqkv", 3 * H, H), F(p + "mixer.Wqkv.bias"), 3 * H, H);
            RotaryReference.Rotate(qkv, t, H, Heads, Theta);
            var ctx = RotaryReference.Attend(qkv, t, H, Heads);
            var o = MatMul(ctx, t, M(p + "mixer.out_proj", H, H), F(p + "mixer.out_proj.bias"), H, H);
            var x1 = Ln(x.Zip(o, (a, b) => a + b).ToArray(), t, H, F(p + "norm1.weight"), F(p + "norm1.bias"), 1e-5);
            var f1 = MatMul(x1, t, M(p + "mlp.fc1", Ff, H), F(p + "mlp.fc1.bias"), Ff, H).Select(z => FastAttn.Tests.Reference.Act(z, Activation.Gelu)).ToArray();
            var f2 = MatMul(f1, t, M(p + "mlp.fc2", H, Ff), F(p + "mlp.fc2.bias"), H, Ff);
            x = Ln(x1.Zip(f2, (a, b) => a + b).ToArray(), t, H, F(p + "norm2.weight"), F(p + "norm2.bias"), 1e-5);
        }
        return x;
    }

    private static readonly int[][] Sequences =
        [[0, 7, 11, 2], [0, 2], [0], [0, .. Enumerable.Range(0, 36).Select(i => 3 + (i * 7) % 45), 2], [0, 45, 5, 9, 9, 30, 12, 2], [.. Enumerable.Range(0, 29).Select(i => (i * 11) % Vocab)]];

    public static TheoryData<string, string?> Cases => new()
    {
        { "", null }, { "", "retrieval.query" }, { "roberta.", "text-matching" }, { "roberta.", "retrieval.passage" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void States_MatchTheReference_WithTheChosenAdapter(string prefix, string? adapter)
    {
        var w = Checkpoint(prefix);
        int task = adapter == null ? -1 : Array.IndexOf(Tasks, adapter);
        var expected = Sequences.Select(s => RefStates(w, prefix, task, s)).ToArray();
        IsaPaths.ForEach(() =>
        {
            using var dir = new TempDir();
            BertModelTests.Write(dir, w, config: false);
            File.WriteAllText(dir.File("config.json"), ConfigJson());
            using var model = BertModel.Load(dir.Path, new BertLoadOptions { Adapter = adapter });
            Assert.Equal(Tasks, model.Config.Adapters);
            Assert.Equal("Represent the query for retrieving evidence documents: ", model.Config.AdapterInstruction("retrieval.query"));
            BertModelTests.AssertStatesWithoutAllocation(model, new SentenceEmbedderOptions { MaxBatchTokens = 128, MaxTokensPerText = 40 }, Sequences, expected, H, $"{prefix}{adapter ?? "no adapter"}");
        });
        // the adapters change the states (the check above has teeth): the same text with another adapter differs
        if (adapter != null)
        {
            var other = RefStates(w, prefix, -1, Sequences[0]);
            Assert.True(expected[0].Zip(other, (a, b) => Math.Abs(a - b)).Max() > 1e-2);
        }
    }

    [Fact]
    public void PlainWeights_TwoThreads_AndAdapterMisuse()
    {
        // a checkpoint saved with the adapters merged (plain .weight names): loads without an adapter; asking for one is refused
        var w = Checkpoint("", lora: false);
        using var dir = new TempDir();
        BertModelTests.Write(dir, w, config: false);
        File.WriteAllText(dir.File("config.json"), ConfigJson());
        using var model = BertModel.Load(dir.Path);
        using var session = new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxBatchTokens = 128, MaxTokensPerText = 40 });
        BertModelTests.AssertPackedAndAlone(session, Sequences, [.. Sequences.Select(s => RefStates(w, "", -1, s))], H, "plain");
        BertModelTests.AssertTwoThreadsSameBits(model, Sequences, H, 128);
        Assert.Contains("plain", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path, new BertLoadOptions { Adapter = "retrieval.query" })).Message);
        Assert.Contains("text-matching", Assert.Throws<ArgumentException>(() => BertModel.Load(dir.Path, new BertLoadOptions { Adapter = "summarization" })).Message);
        // an adapter for a model that has none
        using var bert = new TempDir();
        BertModelTests.Write(bert, BertModelTests.Checkpoint());
        Assert.Throws<ArgumentException>(() => BertModel.Load(bert.Path, new BertLoadOptions { Adapter = "retrieval.query" }));
    }

    [Fact]
    public void EmbedCommand_Adapter_MergesItAndPrefixesTheTaskInstruction()
    {
        using var dir = new TempDir();
        BertModelTests.Write(dir, Checkpoint(""), config: false);
        File.WriteAllText(dir.File("config.json"), ConfigJson());
        File.WriteAllText(dir.File("vocab.txt"), string.Join('\n', TokenizerRulesTests.Vocab[..Vocab]) + "\n");
        const string text = "hello world the cafe";
        (int Code, string Out, string Err) Run(params string[] args)
        {
            var o = new StringWriter();
            var e = new StringWriter();
            int code = FastAttn.Cli.CliApp.Run(args, o, e, () => new MemoryStream());
            return (code, o.ToString(), e.ToString());
        }
        var r = Run("embed", "--model", dir.Path, "--adapter", "retrieval.query", text);
        Assert.True(r.Code == 0, r.Err);
        var got = r.Out.Trim().Split(' ').Select(x => float.Parse(x, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        using (var e = SentenceEmbedder.Load(dir.Path, loadOptions: new BertLoadOptions { Adapter = "retrieval.query" }))
        {
            var expect = e.Encode(e.Model.Config.AdapterInstruction("retrieval.query") + text);
            Assert.Equal(expect.Length, got.Length);
            for (int i = 0; i < got.Length; i++) Assert.True(Math.Abs(expect[i] - got[i]) <= 1e-6 * Math.Max(1, Math.Abs(expect[i])), $"{i}: {expect[i]} vs {got[i]}");
            Assert.NotEqual(expect, e.Encode(text));
        }
        var bad = Run("embed", "--model", dir.Path, "--adapter", "summarization", text);
        Assert.Equal(2, bad.Code);
        Assert.Single(bad.Err.Trim().Split('\n'));
        Assert.Contains("retrieval.query", bad.Err);
    }

    [Fact]
    public void Config_RefusesWhatIsNotRun_AndWantsConfigJson()
    {
        var ok = BertConfig.FromJson(ConfigJson());
        Assert.Equal(("xlm-roberta", 8194, 1e-5f), (ok.ModelType, ok.MaxPositionEmbeddings, ok.LayerNormEps));
        BertModelTests.AssertEditsRefused(ConfigJson(),
            ("\"use_flash_attn\": true", "\"use_flash_attn\": true, \"rotary_emb_interleaved\": true"),
            ("\"use_flash_attn\": true", "\"use_flash_attn\": true, \"rotary_emb_scale_base\": 512"),
            ("\"use_flash_attn\": true", "\"use_flash_attn\": true, \"rotary_emb_dim\": 4"),
            ("\"rotary_emb_base\": 20000", "\"rotary_emb_base\": 0.5"),
            ("\"lora_rank\": 2", "\"lora_rank\": 0"),
            ("\"lora_rank\": 2", "\"lora_rank\": 257"),
            ("\"lora_adaptations\": [\"retrieval.query\"", "\"lora_adaptations\": [\"retrieval.passage\""),
            ("\"model_type\": \"xlm-roberta\"", "\"model_type\": \"bert\""));
        using var dir = new TempDir();
        BertModelTests.Write(dir, Checkpoint(""), config: false);
        Assert.Contains("config.json", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path)).Message);
        File.WriteAllText(dir.File("config.json"), ConfigJson().Replace("\"position_embedding_type\": \"rotary\", ", ""));
        Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path));
    }
}
