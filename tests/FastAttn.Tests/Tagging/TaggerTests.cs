using FastAttn.IO;
using FastAttn.Tagging;
using static FastAttn.Tests.Layers.LayerTests;

namespace FastAttn.Tests.Tagging;

/// <summary>The bundled models (models/pos) loaded and run by FastAttn.</summary>
public class TaggerTests
{
    public static string ModelPath(string kind)
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
        {
            string p = Path.Combine(d.FullName, "models", "pos", kind + ".safetensors");
            if (File.Exists(p)) return p;
        }
        throw new FileNotFoundException($"models/pos/{kind}.safetensors not found above {AppContext.BaseDirectory}");
    }

    [Fact]
    public void AttentionModelTagsTheTutorialSentence()
    {
        using var m = PosTagModel.Load(ModelPath("attention"));
        using var t = m.CreateTagger();
        var r = t.Tag("I saw a saw.");
        Assert.Equal(["I", "saw", "a", "saw", "."], r.Select(x => x.Word));
        Assert.Equal(["PRON", "VERB", "DET", "NOUN", "PUNCT"], r.Select(x => x.Tag));
    }

    [Fact]
    public void FcModelMustGiveBothSawTheSameTag()
    {
        // the tutorial's point: a per-word model cannot tell the two "saw" apart
        using var m = PosTagModel.Load(ModelPath("fc"));
        using var t = m.CreateTagger();
        var r = t.Tag("I saw a saw.");
        Assert.Equal(r[1].Tag, r[3].Tag);
    }

    [Theory]
    [InlineData("fc")]
    [InlineData("attention")]
    public void SpanOverloadAllocatesNothing(string kind)
    {
        using var m = PosTagModel.Load(ModelPath(kind));
        using var t = m.CreateTagger();
        var tokens = new Range[64];
        var tags = new int[64];
        const string text = "The committee said on Monday that it wouldn't approve the new budget until the mayor explains the cuts.";
        Assert.Equal(0, Reference.SteadyStateAllocations(() => t.Tag(text, tokens, tags)));
        string[] words = ["I", "saw", "a", "saw", "."];
        Assert.Equal(0, Reference.SteadyStateAllocations(() => t.TagWords(words, tags)));
    }

    [Fact]
    public void TagStringAllocatesOnlyItsResult()
    {
        using var m = PosTagModel.Load(ModelPath("attention"));
        using var t = m.CreateTagger();
        const string text = "The committee said on Monday that it wouldn't approve the new budget until the mayor explains the cuts.";
        var expected = t.Tag(text);
        // what the result itself costs: the array and one string per token
        long resultBytes = Reference.SteadyStateAllocations(() =>
        {
            var r = new TaggedToken[expected.Length];
            for (int i = 0; i < r.Length; i++) r[i] = new TaggedToken(text[expected[i].Span], expected[i].Tag, expected[i].Span);
        });
        Assert.True(resultBytes > 0);
        Assert.Equal(resultBytes, Reference.SteadyStateAllocations(() => t.Tag(text)));
    }

    [Fact]
    public void FcWindowsDoNotChangeTags()
    {
        // the FC model looks at one word at a time, so tagging in windows of 7 must equal one pass
        using var m = PosTagModel.Load(ModelPath("fc"));
        using var big = m.CreateTagger(256);
        using var small = m.CreateTagger(7);
        string text = string.Join(' ', Enumerable.Repeat("Can you can a can as a canner can can a can?", 6));
        Assert.Equal(big.Tag(text).Select(x => x.Tag), small.Tag(text).Select(x => x.Tag));
    }

    [Fact]
    public void TextLongerThanTheWindowIsTaggedInWindows()
    {
        using var m = PosTagModel.Load(ModelPath("attention"));
        using var t = m.CreateTagger(16);
        string text = string.Join(' ', Enumerable.Repeat("I saw a saw.", 20));
        var r = t.Tag(text);
        Assert.Equal(100, r.Length);
        Assert.All(r, x => Assert.Contains(x.Tag, m.Tags));
    }

    /// <summary>A text with more tokens than the tagger's own buffer (64) goes through the span overload too: same tokens
    /// and tags as Tag(string), nothing allocated.</summary>
    [Fact]
    public void SpanOverloadTagsLongTextsWithoutAllocating()
    {
        using var m = PosTagModel.Load(ModelPath("attention"));
        using var t = m.CreateTagger();
        using var reference = m.CreateTagger();
        string text = string.Join(' ', Enumerable.Repeat("I saw a saw.", 20));
        var tokens = new Range[128];
        var tags = new int[128];
        int n = t.Tag(text, tokens, tags);
        var expected = reference.Tag(text);
        Assert.Equal(expected.Length, n);
        for (int i = 0; i < n; i++)
        {
            Assert.Equal(expected[i].Span, tokens[i]);
            Assert.Equal(expected[i].Tag, m.Tags[tags[i]]);
        }
        Assert.Equal(0, Reference.SteadyStateAllocations(() => t.Tag(text, tokens, tags)));
    }

    [Fact]
    public void TooSmallSpansThrowAndWriteNothing()
    {
        using var m = PosTagModel.Load(ModelPath("attention"));
        using var t = m.CreateTagger();
        var tokens = new Range[3];
        var tags = new int[10];
        Array.Fill(tags, -1);
        Assert.Throws<ArgumentException>(() => t.Tag("I saw a saw.", tokens, tags));
        Assert.All(tags, x => Assert.Equal(-1, x));
        Assert.All(tokens, x => Assert.Equal(default, x));
        Assert.Throws<ArgumentException>(() => t.Tag("I saw a saw.", new Range[10], new int[2]));
        Assert.Equal(0, t.Tag("   ", tokens, tags));
    }

    // Plain double-precision reference of the whole attention tagger, from the file's tensors.
    [Fact]
    public void AttentionLogitsMatchTheScalarReference()
    {
        string path = ModelPath("attention");
        using var m = PosTagModel.Load(path);
        using var file = SafeTensorsFile.Open(path);
        using var t = m.CreateTagger();
        var c = m.Config;
        string[] words = ["Please", "book", "a", "room", "in", "Zürich", "for", "3", "nights", "--", "ASAP", "!"];
        int n = words.Length, d = c.DModel, classes = m.Tags.Count;
        var x = new double[n * d];
        var ids = new int[FeatureVocabulary.Count];
        var pos = file.ReadFloat32("positions");
        for (int i = 0; i < n; i++)
        {
            m.Vocabulary.Extract(words[i], ids);
            for (int f = 0; f < FeatureVocabulary.Count; f++)
            {
                var table = file.ReadFloat32($"emb.{f}.weight");
                for (int j = 0; j < d; j++) x[i * d + j] += table[ids[f] * d + j];
            }
            for (int j = 0; j < d; j++) x[i * d + j] += pos[i * d + j];
        }
        for (int l = 0; l < c.Layers; l++) x = RefLayer(file, $"encoder.layers.{l}.", x, n, d, c.Heads, c.FfDim, c.Eps, c.DistanceSlopes);
        var expect = Lin(x, n, file.ReadFloat32("classifier.weight"), file.ReadFloat32("classifier.bias"), classes, d);
        var got = new float[n * classes];
        t.Logits(words, got);
        double scale = expect.Max(Math.Abs);
        for (int i = 0; i < got.Length; i++) Assert.True(Math.Abs(got[i] - expect[i]) <= 2e-5 * scale, $"logit {i}: {got[i]} vs {expect[i]}");
    }

    // post-norm nn.TransformerEncoderLayer with ReLU, plus the per-head distance bias −slope·|i − j| when the model has one
    private static double[] RefLayer(SafeTensorsFile f, string p, double[] x, int n, int d, int heads, int ff, double eps, float[]? slopes)
    {
        var qkv = Lin(x, n, f.ReadFloat32(p + "self_attn.in_proj_weight"), f.ReadFloat32(p + "self_attn.in_proj_bias"), 3 * d, d);
        var att = FastAttn.Tests.Layers.LayerTests.SelfAttn(qkv, n, d, heads, slopes);
        var a = Lin(att, n, f.ReadFloat32(p + "self_attn.out_proj.weight"), f.ReadFloat32(p + "self_attn.out_proj.bias"), d, d);
        for (int i = 0; i < a.Length; i++) a[i] += x[i];
        var h1 = FastAttn.Tests.Layers.LayerTests.Ln(a, n, d, f.ReadFloat32(p + "norm1.weight"), f.ReadFloat32(p + "norm1.bias"), eps);
        var f1 = Lin(h1, n, f.ReadFloat32(p + "linear1.weight"), f.ReadFloat32(p + "linear1.bias"), ff, d);
        for (int i = 0; i < f1.Length; i++) f1[i] = Math.Max(0, f1[i]);
        var f2 = Lin(f1, n, f.ReadFloat32(p + "linear2.weight"), f.ReadFloat32(p + "linear2.bias"), d, ff);
        for (int i = 0; i < f2.Length; i++) f2[i] += h1[i];
        return FastAttn.Tests.Layers.LayerTests.Ln(f2, n, d, f.ReadFloat32(p + "norm2.weight"), f.ReadFloat32(p + "norm2.bias"), eps);
    }

    [Fact]
    public void MalformedTaggerFilesRaiseInvalidData()
    {
        string src = ModelPath("fc");
        string dir = Path.Combine(Path.GetTempPath(), "fastattn-tagger-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            using var good = SafeTensorsFile.Open(src);
            var tensors = good.Tensors.Select(t => new SafeTensorsWriter.Entry(t.Name, good.ReadFloat32(t.Name), t.Shape)).ToList();
            var meta = good.Metadata.ToDictionary();
            void Expect(string name, IEnumerable<SafeTensorsWriter.Entry> ts, Dictionary<string, string> md)
            {
                string p = Path.Combine(dir, name + ".safetensors");
                SafeTensorsWriter.Write(p, ts, md);
                Assert.Throws<InvalidDataException>(() => PosTagModel.Load(p));
            }
            Expect("no-config", tensors, meta.Where(kv => kv.Key != "fastattn.tagger").ToDictionary());
            Expect("bad-json", tensors, new(meta) { ["fastattn.tagger"] = "{\"Kind\":" });
            Expect("bad-kind", tensors, new(meta) { ["fastattn.tagger"] = meta["fastattn.tagger"].Replace("\"fc\"", "\"rnn\"") });
            Expect("no-vocab", tensors, meta.Where(kv => kv.Key != "fastattn.vocab").ToDictionary());
            Expect("no-classifier", tensors.Where(t => !t.Name.StartsWith("classifier")), meta);
            Expect("short-embedding", tensors.Select(t => t.Name == "emb.0.weight" ? t with { Data = t.Data[..^(int)t.Shape[1]], Shape = [t.Shape[0] - 1, t.Shape[1]] } : t), meta);
            File.WriteAllBytes(Path.Combine(dir, "truncated.safetensors"), File.ReadAllBytes(src)[..1000]);
            Assert.Throws<InvalidDataException>(() => PosTagModel.Load(Path.Combine(dir, "truncated.safetensors")));
        }
        finally { Directory.Delete(dir, true); }
    }
}

public class BundledTaggerTests
{
    [Theory]
    [InlineData("attention")]
    [InlineData("fc")]
    public void BundledModel_IsTheCommittedFile(string kind)
    {
        using var bundled = PosTagModel.LoadBundled(kind);
        using var file = PosTagModel.Load(TaggerTests.ModelPath(kind));
        Assert.Equal(file.Config, bundled.Config with { DistanceSlopes = file.Config.DistanceSlopes });
        using var a = bundled.CreateTagger();
        using var b = file.CreateTagger();
        const string text = "They refuse to permit us to obtain the refuse permit.";
        Assert.Equal(b.Tag(text), a.Tag(text));
        Assert.Throws<ArgumentException>(() => PosTagModel.LoadBundled("nope"));
    }
}
