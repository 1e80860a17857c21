using FastAttn.IO;
using FastAttn.Tagging;
using PosTagTraining;
using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Parity.Tests;

/// <summary>
/// The bundled taggers run by FastAttn and by libtorch (the training code's own TaggerNet, weights from the same file):
/// logits agree to 1e-5 relative and predicted tags are identical, sentence by sentence, over the whole EWT test set.
/// </summary>
public class TaggerFidelityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    static TaggerFidelityTests() { torch.set_num_threads(1); torch.set_grad_enabled(false); }

    public static string ModelPath(string kind)
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
        {
            string p = Path.Combine(d.FullName, "models", "pos", kind + ".safetensors");
            if (File.Exists(p)) return p;
        }
        throw new FileNotFoundException($"models/pos/{kind}.safetensors not found above {AppContext.BaseDirectory}");
    }

    /// <summary>The EWT folder: $FASTATTN_EWT, or shared/data/ud-english-ewt in a parent folder of the tests.</summary>
    public static string? TreebankFolder()
    {
        var env = Environment.GetEnvironmentVariable("FASTATTN_EWT");
        if (!string.IsNullOrEmpty(env) && File.Exists(Path.Combine(env, "en_ewt-ud-test.conllu"))) return env;
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
        {
            string p = Path.Combine(d.FullName, "shared", "data", "ud-english-ewt");
            if (File.Exists(Path.Combine(p, "en_ewt-ud-test.conllu"))) return p;
        }
        return null;
    }

    [Theory]
    [InlineData("attention")]
    [InlineData("fc")]
    public void LogitsEqualLibtorchOnTheWholeTestSet(string kind)
    {
        string path = ModelPath(kind);
        using var model = PosTagModel.Load(path);
        using var tagger = model.CreateTagger(512);
        using var net = TaggerNet.Load(path, model);
        string? ewt = TreebankFolder();
        List<string[]> sentences = ewt != null
            ? ConllU.Read(Path.Combine(ewt, "en_ewt-ud-test.conllu")).Select(s => s.Words).ToList()
            // without the treebank (it is not in the repository) the check runs on the demo and tokenizer sentences
            : [.. Cli.TagCommands.DemoSentences.Select(EnglishTokenizer.Tokenize), EnglishTokenizer.Tokenize("The committee said on Monday that it wouldn't approve the new budget until the mayor explains the cuts.")];
        int classes = model.Tags.Count, F = FeatureVocabulary.Count, words = 0, tagDiffs = 0;
        double worst = 0, sumRel = 0;
        string worstAt = "";
        foreach (var s in sentences)
        {
            var got = new float[s.Length * classes];
            tagger.Logits(s, got);
            var ids = new long[s.Length * F];
            var row = new int[F];
            for (int i = 0; i < s.Length; i++)
            {
                model.Vocabulary.Extract(s[i], row);
                for (int f = 0; f < F; f++) ids[i * F + f] = row[f];
            }
            using var scope = NewDisposeScope();
            var expect = net.call(tensor(ids, [s.Length, 1, F]), null).contiguous().data<float>().ToArray();
            double maxRef = 0, maxDiff = 0;
            for (int i = 0; i < got.Length; i++) { maxRef = Math.Max(maxRef, Math.Abs(expect[i])); maxDiff = Math.Max(maxDiff, Math.Abs(got[i] - expect[i])); }
            if (maxDiff / maxRef > worst) { worst = maxDiff / maxRef; worstAt = $"sentence {sentences.IndexOf(s)}: max|Δ| {maxDiff:E2}, max|ref| {maxRef:F3}"; }
            sumRel += maxDiff / maxRef;
            for (int i = 0; i < s.Length; i++)
            {
                int a = 0, b = 0;
                for (int c = 1; c < classes; c++) { if (got[i * classes + c] > got[i * classes + a]) a = c; if (expect[i * classes + c] > expect[i * classes + b]) b = c; }
                if (a != b) tagDiffs++;
            }
            words += s.Length;
        }
        output.WriteLine($"{kind}: {sentences.Count} sentences ({(ewt != null ? "EWT test set" : "treebank not found: built-in sentences")}), {words} words; " +
                         $"worst max|Δ|/max|ref| = {worst:E2} ({worstAt}), mean {sumRel / sentences.Count:E2}; predicted tags differing: {tagDiffs}");
        Assert.True(worst <= 1e-5, $"relative error {worst:E2} > 1e-5");
        Assert.Equal(0, tagDiffs);
    }
}
