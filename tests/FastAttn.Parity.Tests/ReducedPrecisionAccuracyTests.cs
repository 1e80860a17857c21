using FastAttn.Embeddings;
using FastAttn.Kernels;
using FastAttn.Layers;
using FastAttn.Tagging;
using FastAttn.TestSupport;

namespace FastAttn.Parity.Tests;

/// <summary>
/// Accuracy of int8 and bf16-weight models against their FP32 selves: all-MiniLM-L6-v2 sentence embeddings (cosine over
/// ≥ 200 sentences) and the POS tagger's UPOS accuracy on the EWT test set.
/// </summary>
public class ReducedPrecisionAccuracyTests(Xunit.Abstractions.ITestOutputHelper output)
{
    /// <summary>EWT test sentences (300) when the treebank is there, else 240 built from templates; plus the parity texts.</summary>
    public static List<string> Sentences()
    {
        var s = new List<string>(MiniLmParityTests.BuiltIn);
        string? ewt = Cli.TagCommands.FindTreebankTestSet();
        if (ewt != null) s.AddRange(ConllU.Read(ewt).Where(x => x.Text != null).Select(x => x.Text!).Take(300));
        else
        {
            string[] who = ["The committee", "My neighbour", "A small startup", "The old professor", "Two engineers", "Our team"];
            string[] did = ["approved", "rejected", "rewrote", "questioned", "explained", "ignored", "funded", "tested"];
            string[] what = ["the new budget", "a strange proposal", "the model's results", "every late request", "the quarterly report"];
            foreach (var a in who) foreach (var b in did) foreach (var c in what) s.Add($"{a} {b} {c} on Monday.");
        }
        return s;
    }

    private static double Cosine(float[] a, float[] b)
    {
        double d = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++) { d += (double)a[i] * b[i]; na += (double)a[i] * a[i]; nb += (double)b[i] * b[i]; }
        return na == 0 && nb == 0 ? 1 : d / Math.Sqrt(na * nb);
    }

    [Theory]
    [InlineData(Precision.Int8)]
    [InlineData(Precision.BF16Weights)]
    public void MiniLm_Embeddings_CosineToFp32(Precision precision)
    {
        var texts = Sentences();
        Assert.True(texts.Count >= 200);
        var options = new SentenceEmbedderOptions { Threads = 1, MaxSessions = 1 };
        using var f32 = SentenceEmbedder.Load(MiniLmPackage.Folder, null, options);
        using var low = SentenceEmbedder.Load(MiniLmPackage.Folder, null, options, new BertLoadOptions { Precision = precision });
        var a = f32.Encode(texts);
        var b = low.Encode(texts);
        var cos = texts.Select((_, i) => Cosine(a[i], b[i])).ToArray();
        double mean = cos.Average(), min = cos.Min();
        // The bounds hold for 8-bit activations (VNNI, 16-bit vpmaddwd and scalar kernels: 256 levels a row; measured
        // 0.998 / 0.991). Where the int8 kernel is a pmaddubsw one (AVX2 without AVX-VNNI, or FASTATTN_INT8=maddubs),
        // activations get 128 levels so its int16 pair sums cannot saturate: the step doubles, the activations' rounding
        // error doubles, and 1 − cosine, quadratic in a small error, grows at most 4× (the weights' share not at all) —
        // so there 1 − 4·(1 − bound). Measured on Zen 4 (353 texts): pmaddubsw mean 0.994084, min 0.970819; the
        // 16-bit and scalar kernels (8 bits) 0.998135 / 0.991125 — 3.2× and 3.3× less far from 1.
        int levels = precision == Precision.Int8 ? Int8Gemm.ActivationMax(Int8Gemm.Current(Isa.Active)) : 255;
        double growth = levels >= 255 ? 1 : 4;
        output.WriteLine($"{precision}: {texts.Count} texts, cosine to FP32 mean {mean:F6}, min {min:F6} ('{texts[Array.IndexOf(cos, min)]}'); activation levels {levels + 1}");
        Assert.True(mean >= 1 - growth * 0.005, $"mean cosine {mean}");
        Assert.True(min >= 1 - growth * 0.01, $"min cosine {min}");
    }

    /// <summary>The span path of an int8 / bf16 MiniLM allocates nothing per call (32 texts, one packed pass).</summary>
    [Theory]
    [InlineData(Precision.Int8)]
    [InlineData(Precision.BF16Weights)]
    public void MiniLm_ReducedPrecision_SpanPath_AllocatesNothing(Precision precision)
    {
        using var model = BertModel.Load(MiniLmPackage.Folder, new BertLoadOptions { Precision = precision });
        var tok = BertWordPieceTokenizer.FromVocabFile(MiniLmPackage.Files.Vocab);
        var encoded = Sentences().Where(t => t.Length is > 0 and < 300).Take(32).Select(t => tok.Encode(t)).ToArray();
        int[] ids = [.. encoded.SelectMany(e => e)], lengths = [.. encoded.Select(e => e.Length)];
        using var session = new EmbeddingSession(model, tok, new SentenceEmbedderOptions { Threads = 2 });
        var output = new float[lengths.Length * 384];
        long before = 0, best = long.MaxValue;
        for (int i = 0; i < 3; i++) session.EncodeIds(ids, lengths, output);
        for (int w = 0; w < 3 && best != 0; w++)
        {
            before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 5; i++) session.EncodeIds(ids, lengths, output);
            best = Math.Min(best, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        Assert.Equal(0, best);
    }

    /// <summary>Each encoder layer in int8 alone (the rest FP32): how much that one layer moves the last hidden state.</summary>
    [Fact]
    public void MiniLm_PerLayerInt8_ErrorIsSmallAndReported()
    {
        var texts = Sentences().Where(t => t.Length is > 0 and < 400).Take(40).ToList();
        using var f32 = BertModel.Load(MiniLmPackage.Folder);
        var tok = BertWordPieceTokenizer.FromVocabFile(MiniLmPackage.Files.Vocab);
        var ids = texts.Select(t => tok.Encode(t).ToArray()).ToList();
        float[][] Hidden(BertModel m)
        {
            using var s = new EmbeddingSession(m, null, new SentenceEmbedderOptions { Threads = 1 });
            return ids.Select(x => { var h = new float[x.Length * m.Config.HiddenSize]; s.HiddenStates(x, [x.Length], h); return h; }).ToArray();
        }
        var reference = Hidden(f32);
        for (int layer = -1; layer < f32.Config.NumHiddenLayers; layer++)
        {
            var plan = layer < 0 ? new PrecisionPlan(Precision.Int8) : PrecisionPlan.F32.With($"encoder.layer.{layer}", Precision.Int8);
            using var q = BertModel.Load(MiniLmPackage.Folder, new BertLoadOptions { Precision = plan });
            var got = Hidden(q);
            double worst = 0;
            for (int i = 0; i < got.Length; i++)
            {
                double scale = reference[i].Max(Math.Abs), err = 0;
                for (int j = 0; j < got[i].Length; j++) err = Math.Max(err, Math.Abs(got[i][j] - reference[i][j]));
                worst = Math.Max(worst, err / scale);
            }
            output.WriteLine($"{(layer < 0 ? "every layer" : $"encoder.layer.{layer}")} int8: last_hidden_state max |Δ| / max |ref| = {worst:E2}");
            Assert.True(worst < (layer < 0 ? 0.15 : 0.08), $"layer {layer}: {worst}");
        }
    }

    [Theory]
    [InlineData(Precision.Int8)]
    [InlineData(Precision.BF16Weights)]
    public void Tagger_EwtAccuracy_WithinPointThreeOfFp32(Precision precision)
    {
        string? ewt = Cli.TagCommands.FindTreebankTestSet();
        var data = ewt != null ? ConllU.Read(ewt) : [];
        foreach (var kind in PosTagModel.BundledKinds)
        {
            using var f32 = PosTagModel.LoadBundled(kind);
            using var low = PosTagModel.LoadBundled(kind, precision);
            using var t32 = f32.CreateTagger();
            using var tlow = low.CreateTagger();
            if (ewt != null)
            {
                var (a32, words) = Cli.TagCommands.Evaluate(t32, data);
                var (alow, _) = Cli.TagCommands.Evaluate(tlow, data);
                output.WriteLine($"{kind} {precision}: UPOS {alow * 100:F2} % vs FP32 {a32 * 100:F2} % on {words} words");
                Assert.True(Math.Abs(alow - a32) <= 0.003, $"{kind}: {alow} vs {a32}");
            }
            else
            {
                int same = 0, all = 0;
                foreach (var s in Cli.TagCommands.DemoSentences)
                {
                    var x = t32.Tag(s); var y = tlow.Tag(s);
                    for (int i = 0; i < x.Length; i++, all++) if (x[i].Tag == y[i].Tag) same++;
                }
                output.WriteLine($"{kind} {precision}: {same}/{all} tags equal to FP32 (no treebank here)");
                Assert.True(same >= all * 0.97);
            }
        }
    }
}
