using FastAttn.Embeddings;
using FastAttn.IO;
using FastAttn.Kernels;
using FastAttn.Tests.IO;
using static FastAttn.Tests.Embeddings.BertModelTests;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// DistilBERT: its layers are BERT's post-norm layers under other names, without token types, with a ReLU
/// <c>pre_classifier</c> where BERT has its tanh pooler. The tiny BERT's weights written under DistilBERT's names (and
/// the token-type table zero in the reference) must give the reference BERT's states and the ReLU-pooled logits.
/// </summary>
public class DistilBertTests
{
    private const int Classes = 3;

    private static string ConfigJson() =>
        $$"""{"model_type": "distilbert", "dim": {{H}}, "n_heads": {{Heads}}, "n_layers": {{BertModelTests.Layers}}, "hidden_dim": {{Ff}}, "activation": "gelu", "max_position_embeddings": {{MaxPos}}, "vocab_size": {{Vocab}}, "sinusoidal_pos_embds": false, "dropout": 0.1, "seq_classif_dropout": 0.2}""";

    /// <summary>BERT's tensors (no token types, no pooler) renamed as DistilBERT names them, with a classification head and a masked-LM head.</summary>
    private static Dictionary<string, (float[] Data, long[] Shape)> Distil(Dictionary<string, (float[] Data, long[] Shape)> bert, string prefix)
    {
        var d = new Dictionary<string, (float[] Data, long[] Shape)>();
        foreach (var (n, t) in bert)
        {
            if (n.Contains("token_type") || n.StartsWith("pooler.")) continue;
            string r = n.Replace("encoder.layer.", "transformer.layer.").Replace("attention.self.query", "attention.q_lin").Replace("attention.self.key", "attention.k_lin")
                .Replace("attention.self.value", "attention.v_lin").Replace("attention.output.dense", "attention.out_lin").Replace("attention.output.LayerNorm", "sa_layer_norm")
                .Replace("intermediate.dense", "ffn.lin1").Replace("output.dense", "ffn.lin2").Replace("output.LayerNorm", "output_layer_norm");
            d[prefix + r] = t;
        }
        d["pre_classifier.weight"] = bert["pooler.dense.weight"];
        d["pre_classifier.bias"] = bert["pooler.dense.bias"];
        d["classifier.weight"] = (FastAttn.Tests.Reference.Random(Classes * H, 91, 0.3f), [Classes, H]);
        d["classifier.bias"] = (FastAttn.Tests.Reference.Random(Classes, 92, 0.1f), [Classes]);
        d["vocab_transform.weight"] = (FastAttn.Tests.Reference.Random(H * H, 93), [H, H]);
        d["vocab_projector.bias"] = (FastAttn.Tests.Reference.Random(Vocab, 94), [Vocab]);
        return d;
    }

    [Theory]
    [InlineData("distilbert.", true)]
    [InlineData("distilbert.", false)]
    [InlineData("", true)]
    public void States_AndReluPooledLogits_MatchTheReference(string prefix, bool config)
    {
        using var dir = new TempDir();
        var bert = Checkpoint(seed: 7);
        var d = Distil(bert, prefix);
        SafeTensorsWriter.Write(dir.File("model.safetensors"), d.Select(kv => new SafeTensorsWriter.Entry(kv.Key, kv.Value.Data, kv.Value.Shape)));
        if (config) File.WriteAllText(dir.File("config.json"), ConfigJson());
        using var model = BertModel.Load(dir.Path, config ? null : new BertLoadOptions { Heads = Heads });
        Assert.Equal("distilbert", model.Config.ModelType);
        Assert.Equal(Activation.Relu, model.Config.PoolerActivation);
        Assert.Equal(1, model.Embeddings.TokenTypes);
        Assert.Equal(BertHead.Sequence, model.Head);
        // the reference: BERT with a zero token-type table
        var refW = bert.ToDictionary(kv => kv.Key, kv => kv.Key.Contains("token_type") ? (new float[kv.Value.Data.Length], kv.Value.Shape) : kv.Value);
        using var session = new EmbeddingSession(model, null);
        foreach (int[] ids in new[] { new[] { 2, 7, 11, 3 }, [2, 45, 1, 9, 9, 30, 12, 13, 14, 3], [2] })
        {
            var hs = new float[ids.Length * H];
            session.HiddenStates(ids, [ids.Length], hs);
            var expect = RefBert(refW, "", ids);
            AssertClose(expect, hs, $"{prefix} states");
            var pooled = Layers.LayerTests.Lin(expect[..H], 1, bert["pooler.dense.weight"].Data, bert["pooler.dense.bias"].Data, H, H).Select(x => Math.Max(x, 0)).ToArray();
            var logits = Layers.LayerTests.Lin(pooled, 1, d["classifier.weight"].Data, d["classifier.bias"].Data, Classes, H);
            var got = new float[Classes];
            session.ClassifyIds(ids, default, [ids.Length], got);
            AssertClose(logits, got, $"{prefix} logits");
        }
        // DistilBERT has one token type: a pair's type 1 is refused, not read past the table
        Assert.Throws<ArgumentOutOfRangeException>(() => session.ClassifyIds([2, 7, 3], [0, 0, 1], [3], new float[Classes]));
    }

    [Fact]
    public void DistilBertConfig_FieldsChecked()
    {
        var c = BertConfig.FromJson(ConfigJson());
        Assert.Equal((H, Heads, BertModelTests.Layers, Ff, 1, "distilbert"), (c.HiddenSize, c.NumAttentionHeads, c.NumHiddenLayers, c.IntermediateSize, c.TypeVocabSize, c.ModelType));
        Assert.Throws<InvalidDataException>(() => BertConfig.FromJson(ConfigJson().Replace("\"n_heads\": 3", "\"n_heads\": 5")));       // 5 does not divide 24
        Assert.Throws<InvalidDataException>(() => BertConfig.FromJson(ConfigJson().Replace("\"activation\": \"gelu\"", "\"activation\": \"mish\"")));
        Assert.Throws<InvalidDataException>(() => BertConfig.FromJson(ConfigJson().Replace("\"dim\"", "\"d_model\"")));
        Assert.Equal("distilbert", BertConfig.FromJson(ConfigJson().Replace("\"model_type\": \"distilbert\", ", "")).ModelType);   // an older config without model_type
        // BERT configs asking for what FastAttn does not compute are refused, not run without it
        string bert = BertModelTests.ConfigJson();
        Assert.Contains("relative_key", Assert.Throws<InvalidDataException>(() => BertConfig.FromJson(bert.Replace("{", "{\"position_embedding_type\": \"relative_key\", "))).Message);
        Assert.Contains("is_decoder", Assert.Throws<InvalidDataException>(() => BertConfig.FromJson(bert.Replace("{", "{\"is_decoder\": true, "))).Message);
        Assert.Equal(BertModelTests.H, BertConfig.FromJson(bert.Replace("{", "{\"position_embedding_type\": \"absolute\", \"is_decoder\": false, ")).HiddenSize);
        Assert.Contains("'deberta'", Assert.Throws<InvalidDataException>(() => BertConfig.FromJson("""{"model_type": "deberta"}""")).Message);   // DeBERTa v1: another attention
    }
}
