using System.Text;
using FastAttn.Embeddings;

namespace FastAttn.Parity.Tests;

/// <summary>What the tokenizer parity tests share: the EWT sentences (when the corpus is present) and the id-for-id comparison.</summary>
internal static class TokenizerComparison
{
    /// <summary>The EWT treebank's sentences (<c># text =</c> lines), or none in a clone without the corpus.</summary>
    public static IEnumerable<string> EwtSentences()
    {
        if (TaggerFidelityTests.TreebankFolder() is not { } ewt) yield break;
        foreach (var f in Directory.GetFiles(ewt, "*.conllu"))
            foreach (var line in File.ReadLines(f))
                if (line.StartsWith("# text = ", StringComparison.Ordinal)) yield return line[9..];
    }

    /// <summary>Code points outside printable ASCII as \u{X}.</summary>
    public static string Escape(string s)
    {
        var sb = new StringBuilder();
        foreach (var r in s.EnumerateRunes()) sb.Append(r.Value is >= 32 and < 127 ? ((char)r.Value).ToString() : $"\\u{{{r.Value:X}}}");
        return sb.ToString();
    }

    /// <summary>
    /// Encodes every text with the Rust library and with FastAttn; fails listing the first five texts whose ids differ.
    /// Returns the distinct ids FastAttn produced (for the tests' "not vacuous" checks).
    /// </summary>
    public static HashSet<int> AssertIdsEqual(IReadOnlyCollection<string> texts, Tokenizers.DotNet.Tokenizer hf, TextTokenizer fa)
    {
        int n = 0;
        var shown = new List<string>();
        var all = new HashSet<int>();
        foreach (var t in texts)
        {
            var h = hf.Encode(t);
            var f = fa.Encode(t);
            all.UnionWith(f);
            if (h.Length == f.Length && h.Select(x => (int)x).SequenceEqual(f)) continue;
            if (++n <= 5)
                shown.Add($"'{Escape(t)}':\n  HF [{string.Join(' ', h.Select(i => Escape(fa.Token((int)i))))}]\n  FA [{string.Join(' ', f.Select(i => Escape(fa.Token(i))))}]");
        }
        Assert.True(n == 0, $"{n} of {texts.Count} texts tokenize differently, e.g.\n{string.Join('\n', shown)}");
        return all;
    }
}
