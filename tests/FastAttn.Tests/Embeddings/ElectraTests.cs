using FastAttn.Embeddings;
using FastAttn.Kernels;
using FastAttn.Tests.IO;
using static FastAttn.Tests.Layers.LayerTests;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// ELECTRA's discriminator (the ms-marco ELECTRA cross-encoders' architecture): BERT's layers and names under
/// <c>electra.</c>, embeddings that may be narrower than the hidden states and projected up (<c>embeddings_project</c>),
/// and a classification head of dense, GELU, out_proj on the first token. A tiny ELECTRA with random weights against the
/// reference BERT of <see cref="BertModelTests"/> with the projection inserted, written here from Hugging Face's
/// modeling_electra formulas.
/// </summary>
public class ElectraTests
{
    private const int H = BertModelTests.H, E = 16, Classes = 3;

    /// <summary>The tiny BERT's layers with narrower embeddings (E), a projection to H, a GELU head, and the discriminator head.</summary>
    private static Dictionary<string, (float[] Data, long[] Shape)> Checkpoint(bool project, string prefix = "electra.")
    {
        int e = project ? E : H;
        var bert = BertModelTests.Checkpoint(seed: 9, pooler: false);
        var t = new Dictionary<string, (float[], long[])>();
        int s = 900;
        (float[], long[]) R(float scale, params long[] shape) => (FastAttn.Tests.Reference.Random((int)shape.Aggregate(1L, (a, b) => a * b), s++, scale), shape);
        foreach (var (n, v) in bert)
        {
            if (n.StartsWith("embeddings.", StringComparison.Ordinal))
            {
                // the embedding tables and their LayerNorm at width e
                long rows = v.Shape.Length == 2 ? v.Shape[0] : 0;
                var table = rows > 0 ? R(0.5f, rows, e) : R(0.1f, e);
                if (n.EndsWith("LayerNorm.weight")) for (int i = 0; i < table.Item1.Length; i++) table.Item1[i] += 1;
                t[prefix + n] = table;
            }
            else t[prefix + n] = v;
        }
        if (project) { t[prefix + "embeddings_project.weight"] = R(0.3f, H, E); t[prefix + "embeddings_project.bias"] = R(0.1f, H); }
        t["classifier.dense.weight"] = R(0.3f, H, H); t["classifier.dense.bias"] = R(0.1f, H);
        t["classifier.out_proj.weight"] = R(0.3f, Classes, H); t["classifier.out_proj.bias"] = R(0.1f, Classes);
        t["discriminator_predictions.dense.weight"] = R(0.3f, H, H);                          // the pretraining head: ignored
        return t;
    }

    private static string ConfigJson(bool project) =>
        BertModelTests.ConfigJson().Replace("\"model_type\": \"bert\"", $"\"model_type\": \"electra\", \"embedding_size\": {(project ? E : H)}");

    /// <summary>The reference BERT on the projected embeddings: LN(word + position + type) at width E, then W·x + b to H, then BERT's layers.</summary>
    private static double[] RefElectra(Dictionary<string, (float[] Data, long[] Shape)> w, bool project, int[] ids, int[]? types = null)
    {
        int e = project ? E : H, t = ids.Length;
        float[] W(string n) => w["electra." + n].Data;
        var x = new double[t * e];
        for (int i = 0; i < t; i++)
            for (int c = 0; c < e; c++)
                x[i * e + c] = (double)W("embeddings.word_embeddings.weight")[ids[i] * e + c] + W("embeddings.position_embeddings.weight")[i * e + c] + W("embeddings.token_type_embeddings.weight")[(types?[i] ?? 0) * e + c];
        x = Ln(x, t, e, W("embeddings.LayerNorm.weight"), W("embeddings.LayerNorm.bias"), BertModelTests.Eps);
        if (project) x = Lin(x, t, W("embeddings_project.weight"), W("embeddings_project.bias"), H, E);
        // BertModelTests.RefBert starts from ids; give it an identity embedding instead: run its layers on x
        return BertModelTests.RefLayers(w, "electra.", x, t);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void States_AndGeluHeadLogits_MatchTheReference(bool project)
    {
        IsaPaths.ForEach(() =>
        {
            foreach (bool config in new[] { true, false })
            {
                using var dir = new TempDir();
                var w = Checkpoint(project);
                BertModelTests.Write(dir, w, config: false);
                if (config) File.WriteAllText(dir.File("config.json"), ConfigJson(project));
                using var model = BertModel.Load(dir.Path, config ? null : new BertLoadOptions { Heads = BertModelTests.Heads });
                Assert.Equal("electra", model.Config.ModelType);
                Assert.Equal(project ? E : H, model.Config.EmbeddingWidth);
                Assert.Equal(Activation.Gelu, model.Config.PoolerActivation);
                Assert.Equal(BertHead.Sequence, model.Head);
                using var session = new EmbeddingSession(model, null);
                foreach (var (ids, types) in new[] { (new[] { 2, 7, 11, 3 }, new[] { 0, 0, 1, 1 }), ([2, 45, 1, 9, 9, 30, 12, 13, 14, 3], null), ([2], null) })
                {
                    var hs = new float[ids.Length * H];
                    session.HiddenStates(ids, [ids.Length], hs);
                    BertModelTests.AssertClose(RefElectra(w, project, ids), hs, $"project={project} config={config} states");
                    var expect = RefElectra(w, project, ids, types);
                    var hidden = Lin(expect[..H], 1, w["classifier.dense.weight"].Data, w["classifier.dense.bias"].Data, H, H).Select(z => FastAttn.Tests.Reference.Act(z, Activation.Gelu)).ToArray();
                    var logits = Lin(hidden, 1, w["classifier.out_proj.weight"].Data, w["classifier.out_proj.bias"].Data, Classes, H);
                    var got = new float[Classes];
                    session.ClassifyIds(ids, types ?? default, [ids.Length], got);
                    BertModelTests.AssertClose(logits, got, $"project={project} config={config} logits");
                }
            }
        });
    }

    [Fact]
    public void Config_FieldsChecked()
    {
        var c = BertConfig.FromJson(ConfigJson(project: true));
        Assert.Equal(("electra", E, H, Activation.Gelu), (c.ModelType, c.EmbeddingSize, c.HiddenSize, c.PoolerActivation));
        Assert.Equal(H, BertConfig.FromJson(ConfigJson(project: true).Replace($", \"embedding_size\": {E}", "")).EmbeddingWidth);   // absent: the hidden size
        // a projected embedding width is ELECTRA's only
        Assert.Throws<InvalidDataException>(() => new BertConfig { HiddenSize = H, NumAttentionHeads = 3, NumHiddenLayers = 1, IntermediateSize = 8, VocabSize = 10, EmbeddingSize = E }.Validate("test"));
        // an ELECTRA config over BERT's tensors is refused, not loaded without its head or projection
        using var dir = new TempDir();
        var bert = BertModelTests.Checkpoint();
        BertModelTests.Write(dir, bert, config: false);
        File.WriteAllText(dir.File("config.json"), ConfigJson(project: true));
        Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path));
    }
}
