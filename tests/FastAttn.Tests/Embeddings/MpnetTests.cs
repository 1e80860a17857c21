using System.Text;
using FastAttn.Embeddings;
using FastAttn.Kernels;
using FastAttn.Tests.IO;
using static FastAttn.Tests.Layers.LayerTests;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// MPNet (all-mpnet-base-v2's architecture): BERT's post-norm layers under other names, no token types, positions numbered
/// from 2, and a relative position bias — one learned value per head and bucket of the distance j − i, shared by every
/// layer — added to the scaled scores. A tiny MPNet with random weights, written as a Hugging Face checkpoint, against a
/// double-precision MPNet written here from Hugging Face's modeling_mpnet formulas; one sequence is long enough (150) to
/// reach the logarithmic buckets and the last one (distances ≥ 128).
/// </summary>
public class MpnetTests
{
    private const int H = 24, Heads = 3, Layers = 2, Ff = 40, Vocab = 60, MaxPos = 202, Buckets = 32, Classes = 2;
    private const float Eps = 1e-5f;

    private static Dictionary<string, (float[] Data, long[] Shape)> Checkpoint(string prefix, bool pooler, bool classifier, int seed = 5)
    {
        var t = new Dictionary<string, (float[], long[])>();
        int s = seed * 100;
        void Add(string name, float scale, params long[] shape) => BertModelTests.AddRandom(t, name, scale, s++, shape);
        Add(prefix + "embeddings.word_embeddings.weight", 0.5f, Vocab, H);
        Add(prefix + "embeddings.position_embeddings.weight", 0.5f, MaxPos, H);
        Add(prefix + "embeddings.LayerNorm.weight", 0.2f, H);
        Add(prefix + "embeddings.LayerNorm.bias", 0.1f, H);
        Add(prefix + "encoder.relative_attention_bias.weight", 1.5f, Buckets, Heads);      // large: a wrong bucket shows
        for (int l = 0; l < Layers; l++)
        {
            string p = $"{prefix}encoder.layer.{l}.";
            foreach (var m in new[] { "attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o" })
            { Add(p + m + ".weight", 0.3f, H, H); Add(p + m + ".bias", 0.1f, H); }
            Add(p + "attention.LayerNorm.weight", 0.2f, H); Add(p + "attention.LayerNorm.bias", 0.1f, H);
            Add(p + "intermediate.dense.weight", 0.3f, Ff, H); Add(p + "intermediate.dense.bias", 0.1f, Ff);
            Add(p + "output.dense.weight", 0.3f, H, Ff); Add(p + "output.dense.bias", 0.1f, H);
            Add(p + "output.LayerNorm.weight", 0.2f, H); Add(p + "output.LayerNorm.bias", 0.1f, H);
        }
        if (pooler) { Add(prefix + "pooler.dense.weight", 0.3f, H, H); Add(prefix + "pooler.dense.bias", 0.1f, H); }
        if (classifier)
        {
            Add("classifier.dense.weight", 0.3f, H, H); Add("classifier.dense.bias", 0.1f, H);
            Add("classifier.out_proj.weight", 0.3f, Classes, H); Add("classifier.out_proj.bias", 0.1f, Classes);
        }
        Add("lm_head.dense.weight", 0.3f, H, H);                                             // the masked-LM head: ignored
        return t;
    }

    private static string ConfigJson() =>
        $$"""{"model_type": "mpnet", "hidden_size": {{H}}, "num_attention_heads": {{Heads}}, "num_hidden_layers": {{Layers}}, "intermediate_size": {{Ff}}, "hidden_act": "gelu", "layer_norm_eps": 1e-05, "max_position_embeddings": {{MaxPos}}, "vocab_size": {{Vocab}}, "relative_attention_num_buckets": {{Buckets}}, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}""";

    /// <summary>
    /// modeling_mpnet's relative_position_bucket(j − i): n = i − j; keys after the query (n &lt; 0) take the upper half; below
    /// 8 exact; beyond, 8 + ⌊log(n/8) / log(16) · 8⌋ capped at 15 — evaluated in float32 as PyTorch evaluates it.
    /// </summary>
    internal static int Bucket(int j, int i)
    {
        int n = i - j, r = 0;
        if (n < 0) { r = 16; n = -n; }
        if (n < 8) return r + n;
        float large = MathF.Log(n / 8f) / (float)Math.Log(16.0) * 8f;
        return r + Math.Min(8 + (int)large, 15);
    }

    private static double[] RefMpnet(Dictionary<string, (float[] Data, long[] Shape)> w, string prefix, int[] ids)
    {
        float[] W(string n) => w[prefix + n].Data;
        int t = ids.Length, dh = H / Heads;
        var pos = RobertaTests.PositionIds(ids, 1);            // positions from 2; a <pad> (id 1) takes row 1 and is not counted
        var x = new double[t * H];
        for (int i = 0; i < t; i++)
            for (int c = 0; c < H; c++)
                x[i * H + c] = (double)W("embeddings.word_embeddings.weight")[ids[i] * H + c] + W("embeddings.position_embeddings.weight")[pos[i] * H + c];
        x = Ln(x, t, H, W("embeddings.LayerNorm.weight"), W("embeddings.LayerNorm.bias"), Eps);
        var rel = W("encoder.relative_attention_bias.weight");
        for (int l = 0; l < Layers; l++)
        {
            string p = $"encoder.layer.{l}.";
            var q = Lin(x, t, W(p + "attention.attn.q.weight"), W(p + "attention.attn.q.bias"), H, H);
            var k = Lin(x, t, W(p + "attention.attn.k.weight"), W(p + "attention.attn.k.bias"), H, H);
            var v = Lin(x, t, W(p + "attention.attn.v.weight"), W(p + "attention.attn.v.bias"), H, H);
            var ctx = new double[t * H];
            for (int h = 0; h < Heads; h++)
                for (int i = 0; i < t; i++)
                {
                    var sc = new double[t];
                    double m = double.NegativeInfinity;
                    for (int j = 0; j < t; j++)
                    {
                        double dot = 0;
                        for (int d = 0; d < dh; d++) dot += q[i * H + h * dh + d] * k[j * H + h * dh + d];
                        sc[j] = dot / Math.Sqrt(dh) + rel[Bucket(j, i) * Heads + h];
                        m = Math.Max(m, sc[j]);
                    }
                    double sum = 0;
                    for (int j = 0; j < t; j++) { sc[j] = Math.Exp(sc[j] - m); sum += sc[j]; }
                    for (int d = 0; d < dh; d++)
                    {
                        double acc = 0;
                        for (int j = 0; j < t; j++) acc += sc[j] / sum * v[j * H + h * dh + d];
                        ctx[i * H + h * dh + d] = acc;
                    }
                }
            var o = Lin(ctx, t, W(p + "attention.attn.o.weight"), W(p + "attention.attn.o.bias"), H, H);
            var x1 = Ln(x.Zip(o, (a, b) => a + b).ToArray(), t, H, W(p + "attention.LayerNorm.weight"), W(p + "attention.LayerNorm.bias"), Eps);
            var inter = Lin(x1, t, W(p + "intermediate.dense.weight"), W(p + "intermediate.dense.bias"), Ff, H).Select(z => FastAttn.Tests.Reference.Act(z, Activation.Gelu)).ToArray();
            var f = Lin(inter, t, W(p + "output.dense.weight"), W(p + "output.dense.bias"), H, Ff);
            x = Ln(x1.Zip(f, (a, b) => a + b).ToArray(), t, H, W(p + "output.LayerNorm.weight"), W(p + "output.LayerNorm.bias"), Eps);
        }
        return x;
    }

    private static readonly int[][] Sequences =
        [[0, 7, 11, 2], [0, 2], [0, 45, 5, 9, 9, 30, 12, 13, 14, 2], [0], [0, .. Enumerable.Range(0, 148).Select(i => 4 + (i * 37) % 55), 2], [0, 1, 9, 1, 1, 12, 2]];

    [Theory]
    [InlineData("mpnet.", true)]
    [InlineData("", true)]
    [InlineData("", false)]
    public void States_MatchTheReference_PackedAndAlone(string prefix, bool config)
    {
        IsaPaths.ForEach(() =>
        {
            using var dir = new TempDir();
            var w = Checkpoint(prefix, pooler: true, classifier: false);
            BertModelTests.Write(dir, w, config: false);
            if (config) File.WriteAllText(dir.File("config.json"), ConfigJson());
            using var model = BertModel.Load(dir.Path);
            Assert.Equal("mpnet", model.Config.ModelType);
            Assert.Equal(Heads, model.Config.NumAttentionHeads);          // without config.json: from the bias table's columns
            Assert.Equal(Eps, model.Config.LayerNormEps);
            Assert.Equal(MaxPos - 2, model.Embeddings.MaxPositions);
            using var session = new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxBatchTokens = 200 });
            int[] ids = [.. Sequences.SelectMany(s => s)], lengths = [.. Sequences.Select(s => s.Length)];
            var packed = new float[ids.Length * H];
            session.HiddenStates(ids, lengths, packed);
            int t0 = 0;
            foreach (var s in Sequences)
            {
                var expect = RefMpnet(w, prefix, s);
                BertModelTests.AssertClose(expect, packed.AsSpan(t0 * H, s.Length * H), $"{prefix}/{config} packed, sequence of {s.Length}");
                var alone = new float[s.Length * H];
                session.HiddenStates(s, [s.Length], alone);
                BertModelTests.AssertClose(expect, alone, $"{prefix}/{config} alone, sequence of {s.Length}");
                t0 += s.Length;
            }
            // the pooler: tanh(dense(state of <s>))
            var pooled = new float[H];
            using var ps = new EmbeddingSession(model, null, new SentenceEmbedderOptions { Pooling = Pooling.Pooler });
            ps.EncodeIds(Sequences[2], [Sequences[2].Length], pooled);
            var pe = Lin(RefMpnet(w, prefix, Sequences[2])[..H], 1, w[prefix + "pooler.dense.weight"].Data, w[prefix + "pooler.dense.bias"].Data, H, H).Select(Math.Tanh).ToArray();
            BertModelTests.AssertClose(pe, pooled, "pooler");
            // longer than the 200 positions: refused, not read past the tables
            Assert.ThrowsAny<ArgumentException>(() => session.HiddenStates(new int[201], [201], new float[201 * H]));
        });
    }

    [Fact]
    public void SequenceClassificationHead_IsDenseTanhOutProj()
    {
        using var dir = new TempDir();
        var w = Checkpoint("mpnet.", pooler: false, classifier: true);
        BertModelTests.Write(dir, w, config: false);
        File.WriteAllText(dir.File("config.json"), ConfigJson());
        using var model = BertModel.Load(dir.Path);
        Assert.Equal(BertHead.Sequence, model.Head);
        using var session = new EmbeddingSession(model, null);
        foreach (var s in Sequences)
        {
            var cls = RefMpnet(w, "mpnet.", s)[..H];
            var hidden = Lin(cls, 1, w["classifier.dense.weight"].Data, w["classifier.dense.bias"].Data, H, H).Select(Math.Tanh).ToArray();
            var logits = Lin(hidden, 1, w["classifier.out_proj.weight"].Data, w["classifier.out_proj.bias"].Data, Classes, H);
            var got = new float[Classes];
            session.ClassifyIds(s, default, [s.Length], got);
            BertModelTests.AssertClose(logits, got, $"logits, sequence of {s.Length}");
        }
    }

    [Fact]
    public void Buckets_FollowTheFormula()
    {
        // hand-checked values of relative_position_bucket: exact below 8, then logarithmic, the last bucket from 128 on;
        // keys after the query in the upper half
        (int d, int b)[] cases = [(0, 0), (-1, 1), (-7, 7), (-8, 8), (-11, 8), (-12, 9), (-16, 10), (-32, 12), (-64, 14), (-127, 15), (-128, 15), (-500, 15),
            (1, 17), (7, 23), (8, 24), (16, 26), (64, 30), (128, 31), (511, 31)];
        foreach (var (d, b) in cases)
        {
            Assert.Equal(b, BertModel.MpnetBucket(d));
            Assert.Equal(b, Bucket(d, 0));
        }
    }

    [Fact]
    public void Tokenizer_FramesWithSAndSlashS_FromTheVocabularyOrTheFolder()
    {
        // MPNet's vocabulary: <s> <pad> </s> <unk>, BERT's entries (its bracketed tokens among them), <mask> last
        string[] vocab = ["<s>", "<pad>", "</s>", "<unk>", "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "!", "<mask>"];
        var tok = BertWordPieceTokenizer.FromVocab(new MemoryStream(Encoding.UTF8.GetBytes(string.Join('\n', vocab) + "\n")));
        Assert.Equal(0, tok.ClsId);
        Assert.Equal(2, tok.SepId);
        Assert.Equal(5, tok.UnknownId);                                        // MPNet's unk_token is [UNK]
        Assert.Equal([0, 9, 10, 11, 5, 2], tok.Encode("Hello world! ok"));
        Assert.Equal([0, 9, 2, 10, 2], tok.Encode("hello</s>world"));          // its special tokens written in the text stay whole
        // a pair: <s> A </s></s> B </s>, every token type 0
        Assert.Equal([0, 9, 2, 2, 10, 2], tok.EncodePair("hello", "world", out var types));
        Assert.All(types, t => Assert.Equal(0, t));
        // a folder's tokenizer_config.json names them (here: back to BERT's)
        using var dir = new TempDir();
        File.WriteAllText(dir.File("vocab.txt"), string.Join('\n', vocab) + "\n");
        File.WriteAllText(dir.File("tokenizer_config.json"), """{"cls_token": "[CLS]", "sep_token": {"content": "[SEP]", "lstrip": false}, "unk_token": "[UNK]", "pad_token": "[PAD]", "mask_token": "[MASK]"}""");
        var bert = BertWordPieceTokenizer.FromVocabFile(dir.File("vocab.txt"));
        Assert.Equal([6, 9, 7], bert.Encode("hello"));
        Assert.Equal([6, 9, 7, 10, 7], bert.EncodePair("hello", "world", out types));
        Assert.Equal([0, 0, 0, 1, 1], types);
        // a tokenizer.json with RobertaProcessing frames with its cls and sep
        const string roberta = """ "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0]} """;
        string json = TokenizerJsonTests.Json(vocab).Replace("\"post_processor\": null", roberta.Trim());
        var fromJson = BertWordPieceTokenizer.FromTokenizerJson(Encoding.UTF8.GetBytes(json), null, "tokenizer.json");
        Assert.Equal([0, 9, 2], fromJson.Encode("hello"));
    }

    [Fact]
    public void ASentenceTransformersFolder_EmbedsTextAsTheReference()
    {
        // all-mpnet-base-v2's layout: config.json, model.safetensors, vocab.txt (MPNet's specials around BERT's entries),
        // tokenizer_config.json, modules.json with mean pooling and normalisation
        using var dir = new TempDir();
        var w = Checkpoint("", pooler: true, classifier: false);
        BertModelTests.Write(dir, w, config: false);
        File.WriteAllText(dir.File("config.json"), ConfigJson());
        string[] words = ["the", "cat", "sat", "on", "mat", "a", "dog", ".", "##s", "run"];
        var vocab = new List<string> { "<s>", "<pad>", "</s>", "<unk>", "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" };
        vocab.AddRange(words);
        while (vocab.Count < Vocab - 1) vocab.Add($"[unused{vocab.Count}]");
        vocab.Add("<mask>");
        File.WriteAllText(dir.File("vocab.txt"), string.Join('\n', vocab) + "\n");
        File.WriteAllText(dir.File("tokenizer_config.json"), """{"do_lower_case": true, "bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>", "sep_token": "</s>", "unk_token": "[UNK]", "pad_token": "<pad>", "mask_token": "<mask>", "tokenizer_class": "MPNetTokenizer"}""");
        File.WriteAllText(dir.File("modules.json"), """
            [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
             {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
             {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
            """);
        Directory.CreateDirectory(dir.File("1_Pooling"));
        File.WriteAllText(dir.File(Path.Combine("1_Pooling", "config.json")), $$"""{"word_embedding_dimension": {{H}}, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false, "pooling_mode_mean_sqrt_len_tokens": false}""");
        using var embedder = SentenceEmbedder.Load(dir.Path);
        foreach (var text in new[] { "The cats sat on a mat.", "A dog runs", "" })
        {
            var ids = embedder.Tokenizer.Encode(text);
            Assert.Equal(0, ids[0]);
            Assert.Equal(2, ids[^1]);
            var states = RefMpnet(w, "", ids);
            var mean = new double[H];
            for (int t = 0; t < ids.Length; t++) for (int c = 0; c < H; c++) mean[c] += states[t * H + c] / ids.Length;
            double norm = Math.Sqrt(mean.Sum(x => x * x));
            BertModelTests.AssertClose(mean.Select(x => x / norm).ToArray(), embedder.Encode(text), $"'{text}'");
        }
        Assert.Equal([0, 9, 10, 17, 11, 12, 14, 13, 16, 2], embedder.Tokenizer.Encode("The cats sat on a mat."));   // <s> the cat ##s sat on a mat . </s>
    }

    [Theory]
    [InlineData("""{"cls_token": "<cls>"}""", "no <cls> token")]                               // named but not in the vocabulary
    [InlineData("""{"sep_token": ""}""", "has no  token")]                                     // empty
    [InlineData("""{"unk_token": {"content": "[NOPE]"}}""", "no [NOPE] token")]
    [InlineData("""{"mask_token": 5}""", null)]                                                // not a string: ignored, the vocabulary's own
    [InlineData("""{"cls_token": [""", "not valid JSON")]
    public void SpecialTokensFromTheFolder_AreCheckedAgainstTheVocabulary(string config, string? error)
    {
        using var dir = new TempDir();
        string[] vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello"];
        File.WriteAllText(dir.File("vocab.txt"), string.Join('\n', vocab) + "\n");
        File.WriteAllText(dir.File("tokenizer_config.json"), config);
        if (error == null) { Assert.Equal([2, 5, 3], BertWordPieceTokenizer.FromVocabFile(dir.File("vocab.txt")).Encode("hello")); return; }
        Assert.Contains(error, Assert.Throws<InvalidDataException>(() => BertWordPieceTokenizer.FromVocabFile(dir.File("vocab.txt"))).Message);
    }

    [Fact]
    public void Config_FieldsChecked()
    {
        var c = BertConfig.FromJson(ConfigJson());
        Assert.Equal(("mpnet", 1, Buckets, MaxPos), (c.ModelType, c.TypeVocabSize, c.RelativeAttentionNumBuckets, c.MaxPositionEmbeddings));
        Assert.Throws<InvalidDataException>(() => BertConfig.FromJson(ConfigJson().Replace($"\"relative_attention_num_buckets\": {Buckets}", "\"relative_attention_num_buckets\": 16")));
        Assert.Throws<InvalidDataException>(() => BertConfig.FromJson(ConfigJson().Replace($"\"max_position_embeddings\": {MaxPos}", "\"max_position_embeddings\": 2")));
        // an MPNet config with BERT's tensors (or the reverse) is refused, not half-loaded
        using var dir = new TempDir();
        var bert = BertModelTests.Checkpoint();
        BertModelTests.Write(dir, bert, config: false);
        File.WriteAllText(dir.File("config.json"), ConfigJson());
        Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path));
    }
}
