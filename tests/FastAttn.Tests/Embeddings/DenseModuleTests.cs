using System.Text;
using FastAttn.Embeddings;
using FastAttn.IO;
using FastAttn.Kernels;
using FastAttn.Tests.IO;
using static FastAttn.Tests.Layers.LayerTests;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// sentence-transformers' Dense module (LaBSE, distiluse-base-multilingual-cased: Transformer → Pooling → Dense(tanh) →
/// Normalize): read from its folder (config.json + model.safetensors), applied to the pooled vector before normalisation,
/// chained, chunked over many sequences, allocation-free on the id path; every malformed module refused.
/// </summary>
public class DenseModuleTests
{
    private const int H = BertModelTests.H;

    private static string Modules(params (string Path, string Type)[] extra) =>
        "[" + string.Join(", ", new[] { ("", "Transformer"), ("1_Pooling", "Pooling") }.Concat(extra)
            .Select((m, i) => $$"""{"idx": {{i}}, "name": "{{i}}", "path": "{{m.Item1}}", "type": "sentence_transformers.models.{{m.Item2}}"}""")) + "]";

    private static (float[] W, float[] B) WriteDense(TempDir dir, string sub, int inF, int outF, string activation, int seed, bool bias = true, string? configOverride = null, Action<List<SafeTensorsWriter.Entry>>? edit = null)
    {
        Directory.CreateDirectory(dir.File(sub));
        var w = FastAttn.Tests.Reference.Random(outF * inF, seed, 0.5f);
        var b = FastAttn.Tests.Reference.Random(outF, seed + 1, 0.2f);
        File.WriteAllText(dir.File(Path.Combine(sub, "config.json")), configOverride ??
            $$"""{"in_features": {{inF}}, "out_features": {{outF}}, "bias": {{(bias ? "true" : "false")}}, "activation_function": "{{activation}}"}""");
        var entries = new List<SafeTensorsWriter.Entry> { new("linear.weight", w, [outF, inF]) };
        if (bias) entries.Add(new("linear.bias", b, [outF]));
        edit?.Invoke(entries);
        SafeTensorsWriter.Write(dir.File(Path.Combine(sub, "model.safetensors")), entries);
        return (w, bias ? b : new float[outF]);
    }

    private static void WriteModel(TempDir dir, string modules, bool cls = false)
    {
        BertModelTests.Write(dir, BertModelTests.Checkpoint());
        File.WriteAllText(dir.File("vocab.txt"), string.Join('\n', TokenizerRulesTests.Vocab[..BertModelTests.Vocab]) + "\n");
        File.WriteAllText(dir.File("modules.json"), modules);
        Directory.CreateDirectory(dir.File("1_Pooling"));
        File.WriteAllText(dir.File(Path.Combine("1_Pooling", "config.json")),
            $$"""{"word_embedding_dimension": {{H}}, "pooling_mode_cls_token": {{(cls ? "true" : "false")}}, "pooling_mode_mean_tokens": {{(cls ? "false" : "true")}}}""");
    }

    private static double[] Reference(int[] ids, bool cls, IEnumerable<(float[] W, float[] B, int In, int Out, Activation Act)> dense, bool normalize)
    {
        var states = BertModelTests.RefBert(BertModelTests.Checkpoint(), "", ids);
        var v = new double[H];
        if (cls) Array.Copy(states, v, H);
        else for (int t = 0; t < ids.Length; t++) for (int c = 0; c < H; c++) v[c] += states[t * H + c] / ids.Length;
        foreach (var (w, b, inF, outF, act) in dense)
            v = Lin(v, 1, w, b, outF, inF).Select(x => FastAttn.Tests.Reference.Act(x, act)).ToArray();
        if (normalize) { double n = Math.Sqrt(v.Sum(x => x * x)); v = v.Select(x => x / n).ToArray(); }
        return v;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TwoDenseModulesThenNormalize_AsTheReference(bool cls)
    {
        using var dir = new TempDir();
        WriteModel(dir, Modules(("2_Dense", "Dense"), ("3_Dense", "Dense"), ("4_Normalize", "Normalize")), cls);
        var (w1, b1) = WriteDense(dir, "2_Dense", H, 10, "torch.nn.modules.linear.Identity", 40);
        var (w2, b2) = WriteDense(dir, "3_Dense", 10, 6, "torch.nn.modules.activation.Tanh", 50);
        var st = SentenceTransformersConfig.Read(dir.Path)!;
        Assert.Equal([10, 6], st.Dense.Select(m => m.OutFeatures));
        using var embedder = SentenceEmbedder.Load(dir.Path);
        Assert.Equal(6, embedder.Dimension);
        foreach (var text in new[] { "the cafe owner paid", "hello", "" })
        {
            var ids = embedder.Tokenizer.Encode(text);
            var expect = Reference(ids, cls, [(w1, b1, H, 10, Activation.None), (w2, b2, 10, 6, Activation.Tanh)], normalize: true);
            BertModelTests.AssertClose(expect, embedder.Encode(text), $"'{text}'");
        }
        // more sequences than one chunk of the Dense pass (64), packed: each equals its own encoding
        var texts = Enumerable.Range(0, 150).Select(i => string.Join(' ', TokenizerRulesTests.Vocab[5..BertModelTests.Vocab].Where((_, k) => (k * 7 + i) % 5 == 0).Take(1 + i % 9))).ToArray();
        var all = embedder.Encode(texts);
        for (int i = 0; i < texts.Length; i += 13) Assert.Equal(embedder.Encode(texts[i]), all[i]);
        // the id path allocates nothing
        using var session = embedder.CreateSession();
        var idsAll = texts.Select(embedder.Tokenizer.Encode).ToArray();
        int[] flat = [.. idsAll.SelectMany(x => x)], lengths = [.. idsAll.Select(x => x.Length)];
        var output = new float[texts.Length * 6];
        Assert.Equal(0, FastAttn.Tests.Reference.SteadyStateAllocations(() => session.EncodeIds(flat, lengths, output)));
        Assert.Equal(all[100], output.AsSpan(100 * 6, 6).ToArray());
    }

    [Fact]
    public void Options_Override_TheFolder_AndTheChainIsChecked()
    {
        using var dir = new TempDir();
        WriteModel(dir, Modules(("2_Dense", "Dense")));
        WriteDense(dir, "2_Dense", H, 8, "torch.nn.modules.activation.Tanh", 60);
        using var none = SentenceEmbedder.Load(dir.Path, options: new SentenceEmbedderOptions { Dense = [] });
        Assert.Equal(H, none.Dimension);
        using var model = BertModel.Load(dir.Path);
        var tok = BertWordPieceTokenizer.FromVocabFile(dir.File("vocab.txt"));
        var wrong = new DenseModule(new float[8 * 5], 8, 5, default, Activation.Tanh);
        Assert.Throws<ArgumentException>(() => new EmbeddingSession(model, tok, new SentenceEmbedderOptions { Dense = [wrong] }));
        Assert.Throws<ArgumentException>(() => new DenseModule(new float[4], 2, 2, default, Activation.Sigmoid));
    }

    public static TheoryData<string, string> Malformed => new()
    {
        { "no-weights", "weights are missing" },
        { "pickle-only", "pytorch_model.bin" },
        { "shape", "'linear.weight' is [" },
        { "in-features", "in_features" },
        { "activation", "activation_function" },
        { "extra-tensor", "unexpected tensor" },
        { "bias-false-but-present", "unexpected tensor" },
        { "no-config", "config.json is missing" },
        { "after-normalize", "is not supported here" },
    };

    [Theory]
    [MemberData(nameof(Malformed))]
    public void MalformedDenseModules_AreInvalidData(string kind, string message)
    {
        using var dir = new TempDir();
        WriteModel(dir, kind == "after-normalize" ? Modules(("2_Normalize", "Normalize"), ("3_Dense", "Dense")) : Modules(("2_Dense", "Dense")));
        string sub = kind == "after-normalize" ? "3_Dense" : "2_Dense";
        switch (kind)
        {
            case "no-weights": WriteDense(dir, sub, H, 8, "torch.nn.modules.activation.Tanh", 1); File.Delete(dir.File(Path.Combine(sub, "model.safetensors"))); break;
            case "pickle-only":
                WriteDense(dir, sub, H, 8, "torch.nn.modules.activation.Tanh", 1);
                File.Move(dir.File(Path.Combine(sub, "model.safetensors")), dir.File(Path.Combine(sub, "pytorch_model.bin")));
                break;
            case "shape": WriteDense(dir, sub, H, 8, "torch.nn.modules.activation.Tanh", 1, edit: e => e[0] = new("linear.weight", new float[8 * 3], [8, 3])); break;
            case "in-features": WriteDense(dir, sub, H + 1, 8, "torch.nn.modules.activation.Tanh", 1); break;
            case "activation": WriteDense(dir, sub, H, 8, "torch.nn.modules.activation.Softsign", 1); break;
            case "extra-tensor": WriteDense(dir, sub, H, 8, "torch.nn.modules.activation.Tanh", 1, edit: e => e.Add(new("other", new float[1], [1]))); break;
            case "bias-false-but-present": WriteDense(dir, sub, H, 8, "torch.nn.modules.activation.Tanh", 1, bias: false, edit: e => e.Add(new("linear.bias", new float[8], [8]))); break;
            case "no-config": WriteDense(dir, sub, H, 8, "torch.nn.modules.activation.Tanh", 1); File.Delete(dir.File(Path.Combine(sub, "config.json"))); break;
            default: WriteDense(dir, sub, H, 8, "torch.nn.modules.activation.Tanh", 1); break;
        }
        var e = Assert.Throws<InvalidDataException>(() => SentenceEmbedder.Load(dir.Path));
        Assert.Contains(message, e.Message);
    }
}
