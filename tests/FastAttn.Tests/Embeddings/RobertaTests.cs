using FastAttn.Embeddings;
using FastAttn.TestSupport;
using FastAttn.Tests.IO;
using static FastAttn.Tests.Layers.LayerTests;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// The RoBERTa family (RoBERTa, XLM-RoBERTa, CamemBERT — multilingual-e5-base, bge-m3, the XLM-R rerankers): BERT's
/// post-norm layers under <c>roberta.</c>, one token type, and positions numbered as Hugging Face's
/// <c>create_position_ids_from_input_ids</c> numbers them: padding index + 1 for the first token, and a token whose id is
/// the padding index takes row <c>padding index</c> without advancing the count. A tiny model with random weights against
/// the double-precision BERT reference fed with those positions, written here from that function's formula (mask = id ≠
/// pad; position = cumsum(mask)·mask + pad).
/// </summary>
public class RobertaTests
{
    private const int H = BertModelTests.H, Classes = 3;
    private const int Positions = BertModelTests.MaxPos;        // positions a sequence can take

    /// <summary>BertModelTests' checkpoint as RoBERTa's: a position table with the padding rows in front, one token type.</summary>
    private static Dictionary<string, (float[] Data, long[] Shape)> Checkpoint(string prefix, int pad, bool pooler = true, bool classifier = false)
    {
        var bert = BertModelTests.Checkpoint(seed: 7, pooler: pooler);
        var t = bert.ToDictionary(kv => prefix + kv.Key, kv => kv.Value);
        BertModelTests.AddRandom(t, prefix + "embeddings.position_embeddings.weight", 0.5f, 901, Positions + pad + 1, H);
        BertModelTests.AddRandom(t, prefix + "embeddings.token_type_embeddings.weight", 0.5f, 902, 1, H);
        if (classifier)
        {
            BertModelTests.AddRandom(t, "classifier.dense.weight", 0.3f, 903, H, H);
            BertModelTests.AddRandom(t, "classifier.dense.bias", 0.1f, 904, H);
            BertModelTests.AddRandom(t, "classifier.out_proj.weight", 0.3f, 905, Classes, H);
            BertModelTests.AddRandom(t, "classifier.out_proj.bias", 0.1f, 906, Classes);
        }
        BertModelTests.AddRandom(t, "lm_head.dense.weight", 0.3f, 907, H, H);                   // the masked-LM head: ignored
        return t;
    }

    private static string ConfigJson(string modelType, int pad) =>
        $$"""{"model_type": "{{modelType}}", "hidden_size": {{H}}, "num_attention_heads": {{BertModelTests.Heads}}, "num_hidden_layers": {{BertModelTests.Layers}}, "intermediate_size": {{BertModelTests.Ff}}, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "max_position_embeddings": {{Positions + pad + 1}}, "type_vocab_size": 1, "vocab_size": {{BertModelTests.Vocab}}, "pad_token_id": {{pad}}, "bos_token_id": 0, "eos_token_id": 2}""";

    /// <summary>Hugging Face's position ids: mask = id ≠ pad; cumsum(mask)·mask + pad.</summary>
    internal static int[] PositionIds(int[] ids, int pad)
    {
        var p = new int[ids.Length];
        int count = 0;
        for (int i = 0; i < ids.Length; i++) p[i] = ids[i] != pad ? pad + ++count : pad;
        return p;
    }

    private static double[] RefRoberta(Dictionary<string, (float[] Data, long[] Shape)> w, string prefix, int[] ids, int pad)
    {
        float[] W(string n) => w[prefix + n].Data;
        int t = ids.Length;
        var pos = PositionIds(ids, pad);
        var x = new double[t * H];
        for (int i = 0; i < t; i++)
            for (int c = 0; c < H; c++)
                x[i * H + c] = (double)W("embeddings.word_embeddings.weight")[ids[i] * H + c] + W("embeddings.position_embeddings.weight")[pos[i] * H + c] + W("embeddings.token_type_embeddings.weight")[c];
        x = Ln(x, t, H, W("embeddings.LayerNorm.weight"), W("embeddings.LayerNorm.bias"), BertModelTests.Eps);
        return BertModelTests.RefLayers(w, prefix, x, t);
    }

    /// <summary>Sequences with the padding id (1 or 4 below) inside, first, last and doubled, and one that fills every position.</summary>
    private static int[][] Sequences(int pad) =>
        [[0, 7, 11, 2], [0, 2], [0, 45, pad, 9, 9, 30, pad, pad, 14, 2], [0], [pad, 5, 6, pad], [0, .. Enumerable.Range(0, Positions - 2).Select(i => 5 + (i * 7) % 40), 2]];

    [Theory]
    [InlineData("roberta.", "xlm-roberta", 1)]
    [InlineData("", "roberta", 1)]
    [InlineData("roberta.", "camembert", 4)]
    [InlineData("roberta.", null, 1)]                       // no config.json: the prefix says RoBERTa, the padding index is its usual 1
    public void States_MatchTheReference_PackedAndAlone(string prefix, string? modelType, int pad)
    {
        IsaPaths.ForEach(() =>
        {
            using var dir = new TempDir();
            var w = Checkpoint(prefix, pad);
            BertModelTests.Write(dir, w, config: false);
            if (modelType != null) File.WriteAllText(dir.File("config.json"), ConfigJson(modelType, pad));
            using var model = BertModel.Load(dir.Path, new BertLoadOptions { Heads = modelType == null ? BertModelTests.Heads : null });
            Assert.Equal(modelType ?? "roberta", model.Config.ModelType);
            Assert.Equal(pad, model.Config.PaddingIdx);
            Assert.Equal(Positions, model.Embeddings.MaxPositions);
            Assert.Equal(pad + 1, model.Embeddings.PositionOffset);
            Assert.Equal(pad, model.Embeddings.PaddingId);
            var seqs = Sequences(pad);
            using var session = new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxBatchTokens = 64 });
            int[] ids = [.. seqs.SelectMany(s => s)], lengths = [.. seqs.Select(s => s.Length)];
            var packed = new float[ids.Length * H];
            session.HiddenStates(ids, lengths, packed);
            int t0 = 0;
            foreach (var s in seqs)
            {
                var expect = RefRoberta(w, prefix, s, pad);
                BertModelTests.AssertClose(expect, packed.AsSpan(t0 * H, s.Length * H), $"{prefix}/{modelType} packed, [{string.Join(' ', s)}]");
                var alone = new float[s.Length * H];
                session.HiddenStates(s, [s.Length], alone);
                BertModelTests.AssertClose(expect, alone, $"{prefix}/{modelType} alone, [{string.Join(' ', s)}]");
                t0 += s.Length;
            }
            // the pooler: tanh(dense(state of <s>))
            var pooled = new float[H];
            using var ps = new EmbeddingSession(model, null, new SentenceEmbedderOptions { Pooling = Pooling.Pooler });
            ps.EncodeIds(seqs[2], [seqs[2].Length], pooled);
            var pe = Lin(RefRoberta(w, prefix, seqs[2], pad)[..H], 1, w[prefix + "pooler.dense.weight"].Data, w[prefix + "pooler.dense.bias"].Data, H, H).Select(Math.Tanh).ToArray();
            BertModelTests.AssertClose(pe, pooled, "pooler");
            // longer than the positions: refused, not read past the tables
            Assert.ThrowsAny<ArgumentException>(() => session.HiddenStates(new int[Positions + 1], [Positions + 1], new float[(Positions + 1) * H]));
        });
    }

    [Fact]
    public void SequenceClassificationHead_IsDenseTanhOutProj()
    {
        // XLMRobertaForSequenceClassification (e.g. the bge rerankers): no pooler, classifier.dense + tanh + out_proj on <s>
        using var dir = new TempDir();
        var w = Checkpoint("roberta.", 1, pooler: false, classifier: true);
        BertModelTests.Write(dir, w, config: false);
        File.WriteAllText(dir.File("config.json"), ConfigJson("xlm-roberta", 1));
        using var model = BertModel.Load(dir.Path);
        Assert.Equal(BertHead.Sequence, model.Head);
        using var session = new EmbeddingSession(model, null);
        foreach (var s in Sequences(1))
        {
            var cls = RefRoberta(w, "roberta.", s, 1)[..H];
            var hidden = Lin(cls, 1, w["classifier.dense.weight"].Data, w["classifier.dense.bias"].Data, H, H).Select(Math.Tanh).ToArray();
            var logits = Lin(hidden, 1, w["classifier.out_proj.weight"].Data, w["classifier.out_proj.bias"].Data, Classes, H);
            var got = new float[Classes];
            session.ClassifyIds(s, default, [s.Length], got);
            BertModelTests.AssertClose(logits, got, $"logits, [{string.Join(' ', s)}]");
        }
        // one token type: type 1 is refused
        Assert.ThrowsAny<ArgumentException>(() => session.ClassifyIds([0, 5, 2], [0, 1, 0], [3], new float[Classes]));
    }

    /// <summary>
    /// An XLM-RoBERTa folder (multilingual-e5-base's layout): config.json, the checkpoint, a SentencePiece Unigram
    /// tokenizer.json with <c>&lt;s&gt; &lt;pad&gt; &lt;/s&gt; &lt;unk&gt;</c> first; "&lt;pad&gt;" written in the text is
    /// the padding id, and the positions skip it as Hugging Face's model does.
    /// </summary>
    [Fact]
    public void AnXlmRobertaFolder_TextToStates_PaddingWrittenInTheTextIsSkipped()
    {
        using var dir = new TempDir();
        var w = Checkpoint("", 1);
        BertModelTests.Write(dir, w, config: false);
        File.WriteAllText(dir.File("config.json"), ConfigJson("xlm-roberta", 1));
        var pieces = new List<(string, double)> { ("\u2581", -2) };
        foreach (var word in new[] { "the", "cat", "sat", "on", "mat" }) { pieces.Add(("\u2581" + word, -3)); pieces.Add((word, -5)); }
        foreach (char c in "abcdefghijklmnopqrstuvwxyz") pieces.Add((c.ToString(), -8));
        pieces = pieces.DistinctBy(p => p.Item1).Take(BertModelTests.Vocab - 5).ToList();
        UnigramFiles.TokenizerJson(dir.File("tokenizer.json"), pieces, new UnigramFiles.Settings { PreTokenizer = UnigramFiles.Metaspace() });
        using var embedder = SentenceEmbedder.Load(dir.Path);
        var tok = embedder.Tokenizer;
        var ids = tok.Encode("the cat<pad> sat on<pad><pad>the mat");
        Assert.Equal("<s> ▁the ▁cat <pad> ▁sat ▁on <pad> <pad> ▁the ▁mat </s>", string.Join(' ', ids.Select(tok.Token)));
        using var session = embedder.CreateSession();
        var states = new float[ids.Length * H];
        session.HiddenStates(ids, [ids.Length], states);
        BertModelTests.AssertClose(RefRoberta(w, "", ids, 1), states, "states of the text");
    }

    [Fact]
    public void Config_FieldsChecked_AndTensorsMustAgree()
    {
        var c = BertConfig.FromJson(ConfigJson("xlm-roberta", 1));
        Assert.Equal(("xlm-roberta", 1, 1, Positions + 2), (c.ModelType, c.TypeVocabSize, c.PaddingIdx, c.MaxPositionEmbeddings));
        // pad_token_id absent: RoBERTa's 1
        Assert.Equal(1, BertConfig.FromJson(ConfigJson("roberta", 1).Replace("\"pad_token_id\": 1, ", "")).PaddingIdx);
        foreach (var bad in new[] { "\"pad_token_id\": -2", $"\"pad_token_id\": {BertModelTests.Vocab}", "\"pad_token_id\": 1.5" })
            Assert.Throws<InvalidDataException>(() => BertConfig.FromJson(ConfigJson("roberta", 1).Replace("\"pad_token_id\": 1", bad)));
        // a table with no row after the padding rows
        Assert.Throws<InvalidDataException>(() => BertConfig.FromJson(ConfigJson("roberta", 1).Replace($"\"max_position_embeddings\": {Positions + 2}", "\"max_position_embeddings\": 2")));
        // the pre-norm XL variants are another architecture
        Assert.Contains("xlm-roberta-xl", Assert.Throws<InvalidDataException>(() => BertConfig.FromJson(ConfigJson("xlm-roberta-xl", 1))).Message);
        // a padding index on BERT is refused (BERT numbers every token)
        Assert.Throws<InvalidDataException>(() => new BertConfig { HiddenSize = 8, NumAttentionHeads = 2, NumHiddenLayers = 1, IntermediateSize = 8, VocabSize = 10, PaddingIdx = 1 }.Validate("test"));
        // the direct constructor checks the padding id too
        var norm = new FastAttn.Layers.LayerNorm(H, new float[H], new float[H], 1e-5f);
        Assert.Throws<ArgumentException>(() => new BertEmbeddings(new float[10 * H], new float[3 * H], new float[H], norm, FastAttn.Kernels.Precision.F32, 2));    // no row after it
        Assert.Throws<ArgumentException>(() => new BertEmbeddings(new float[10 * H], new float[30 * H], new float[H], norm, FastAttn.Kernels.Precision.F32, 10));  // not an id
        // RoBERTa's tensors under a BERT config: refused, not run with BERT's positions
        using var dir = new TempDir();
        BertModelTests.Write(dir, Checkpoint("roberta.", 1), config: false);
        File.WriteAllText(dir.File("config.json"), ConfigJson("bert", 1));
        Assert.Contains("RoBERTa", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path)).Message);
    }
}
