using System.Text;
using System.Text.Json;
using FastAttn.Embeddings;
using FastAttn.TestSupport;

namespace FastAttn.Parity.Tests;

/// <summary>
/// FastAttn's WordPiece tokenizer against Hugging Face's tokenizers library itself (the Rust library behind transformers'
/// and sentence-transformers' default "fast" tokenizer, here through the NuGet package Tokenizers.DotNet 1.4.1): the same
/// <c>tokenizer.json</c> loaded by both, ids compared for equality — on the EWT corpus, on random text drawn from every
/// Unicode plane, and on every code point alone in a word, for uncased, cased, lower-casing-without-accent-stripping and
/// no-CJK-splitting settings.
/// </summary>
public class TokenizerParityTests
{
    // all-MiniLM-L6-v2's (uncased) vocabulary, plus entries that make cased, astral and long-word differences visible
    private static readonly string[] Extra =
    [
        "😀", "##😀", "𠀀", "##𠀀", "𝐚", "##𝐚", "İ", "i\u0307", "##\u0307", "Hello", "World", "İstanbul", "Istanbul", "e\u0301", "##\u0301",
        "café", "Straße", "ΣΊΣΥΦΟΣ", "##ﬁ", "杞", "\U0002F8DB", "##\u0890", "\u0890", "##ς", "##Σ", "x\u2E56y", new string('a', 60), "##" + new string('a', 60),
    ];

    private static readonly Lazy<string[]> Vocab = new(() =>
    {
        var lines = File.ReadAllLines(MiniLmPackage.Files.Vocab).ToList();
        var seen = new HashSet<string>(lines, StringComparer.Ordinal);
        foreach (var e in Extra) if (seen.Add(e)) lines.Add(e);
        return [.. lines];
    });

    public enum Setting { Uncased, Cased, LowerKeepAccents, NoCjkSplit }

    /// <summary>A BERT <c>tokenizer.json</c> (the layout transformers writes) over <see cref="Vocab"/>, with the normaliser's flags of <paramref name="setting"/>.</summary>
    private static string TokenizerJson(Setting setting)
    {
        string path = Path.Combine(PackagedModel.CacheRoot, "tokenizer-parity", $"{setting}-{Environment.ProcessId}.json");
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var vocab = Vocab.Value;
        int Id(string t) => Array.IndexOf(vocab, t);
        using (var f = File.Create(path))
        using (var w = new Utf8JsonWriter(f))
        {
            w.WriteStartObject();
            w.WriteString("version", "1.0");
            w.WriteNull("truncation");
            w.WriteNull("padding");
            w.WriteStartArray("added_tokens");
            foreach (var s in new[] { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" })
            {
                w.WriteStartObject();
                w.WriteNumber("id", Id(s)); w.WriteString("content", s);
                w.WriteBoolean("single_word", false); w.WriteBoolean("lstrip", false); w.WriteBoolean("rstrip", false);
                w.WriteBoolean("normalized", false); w.WriteBoolean("special", true);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartObject("normalizer");
            w.WriteString("type", "BertNormalizer");
            w.WriteBoolean("clean_text", true);
            w.WriteBoolean("handle_chinese_chars", setting != Setting.NoCjkSplit);
            if (setting == Setting.LowerKeepAccents || setting == Setting.Cased) w.WriteBoolean("strip_accents", false); else w.WriteNull("strip_accents");
            w.WriteBoolean("lowercase", setting != Setting.Cased);
            w.WriteEndObject();
            w.WriteStartObject("pre_tokenizer"); w.WriteString("type", "BertPreTokenizer"); w.WriteEndObject();
            w.WriteStartObject("post_processor");
            w.WriteString("type", "TemplateProcessing");
            void Piece(string kind, string id, int type)
            {
                w.WriteStartObject(); w.WriteStartObject(kind); w.WriteString("id", id); w.WriteNumber("type_id", type); w.WriteEndObject(); w.WriteEndObject();
            }
            w.WriteStartArray("single"); Piece("SpecialToken", "[CLS]", 0); Piece("Sequence", "A", 0); Piece("SpecialToken", "[SEP]", 0); w.WriteEndArray();
            w.WriteStartArray("pair");
            Piece("SpecialToken", "[CLS]", 0); Piece("Sequence", "A", 0); Piece("SpecialToken", "[SEP]", 0); Piece("Sequence", "B", 1); Piece("SpecialToken", "[SEP]", 1);
            w.WriteEndArray();
            w.WriteStartObject("special_tokens");
            foreach (var s in new[] { "[CLS]", "[SEP]" })
            {
                w.WriteStartObject(s);
                w.WriteString("id", s);
                w.WriteStartArray("ids"); w.WriteNumberValue(Id(s)); w.WriteEndArray();
                w.WriteStartArray("tokens"); w.WriteStringValue(s); w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
            w.WriteEndObject();
            w.WriteStartObject("decoder"); w.WriteString("type", "WordPiece"); w.WriteString("prefix", "##"); w.WriteBoolean("cleanup", true); w.WriteEndObject();
            w.WriteStartObject("model");
            w.WriteString("type", "WordPiece"); w.WriteString("unk_token", "[UNK]"); w.WriteString("continuing_subword_prefix", "##");
            w.WriteNumber("max_input_chars_per_word", 100);
            w.WriteStartObject("vocab");
            for (int i = 0; i < vocab.Length; i++) w.WriteNumber(vocab[i], i);
            w.WriteEndObject();
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return path;
    }

    private sealed class Pair : IDisposable
    {
        public readonly Tokenizers.DotNet.Tokenizer Hf;
        public readonly BertWordPieceTokenizer Fa;
        private readonly string _path;
        public Pair(Setting setting)
        {
            _path = TokenizerJson(setting);
            Hf = new Tokenizers.DotNet.Tokenizer(_path);
            // the same file read by FastAttn: its flags come from the normaliser, as a Hugging Face folder gives them
            Fa = BertWordPieceTokenizer.FromTokenizerJson(_path, new BertTokenizerOptions { MaxTokens = 1 << 20 });
        }
        public void Dispose() { Hf.Dispose(); File.Delete(_path); }
    }

    private static string Escape(string s)
    {
        var sb = new StringBuilder();
        foreach (var r in s.EnumerateRunes()) sb.Append(r.Value is >= 32 and < 127 ? ((char)r.Value).ToString() : $"\\u{{{r.Value:X}}}");
        return sb.ToString();
    }

    /// <summary>Texts on which the ids differ (at most <paramref name="keep"/> shown), out of <paramref name="texts"/>.</summary>
    private static (int Count, List<string> Shown) Differences(Pair p, IEnumerable<string> texts, int keep = 5)
    {
        int n = 0;
        var shown = new List<string>();
        foreach (var t in texts)
        {
            var hf = p.Hf.Encode(t);
            var fa = p.Fa.Encode(t);
            bool same = hf.Length == fa.Length;
            for (int i = 0; same && i < fa.Length; i++) same = hf[i] == (uint)fa[i];
            if (same) continue;
            if (++n <= keep)
                shown.Add($"'{Escape(t)}': HF [{string.Join(' ', hf.Select(i => p.Fa.Token((int)i)))}] FastAttn [{string.Join(' ', fa.Select(p.Fa.Token))}]");
        }
        return (n, shown);
    }

    /// <summary>Random strings of words, ASCII, spaces of every kind, special tokens, and code points from every plane (assigned or not).</summary>
    internal static IEnumerable<string> RandomTexts(int count, int seed)
    {
        var rng = new Random(seed);
        int[][] ranges =
        [
            [0x20, 0x7E], [0x00, 0x1F], [0x7F, 0xFF], [0x100, 0x24F], [0x300, 0x36F], [0x370, 0x3FF], [0x400, 0x4FF], [0x590, 0x6FF], [0x780, 0x8FF],
            [0x900, 0x97F], [0xE00, 0xE7F], [0x1100, 0x11FF], [0x1680, 0x18AF], [0x1AB0, 0x1AFF], [0x1DC0, 0x1DFF], [0x1E00, 0x1FFF], [0x2000, 0x206F],
            [0x2070, 0x218F], [0x2190, 0x2BFF], [0x2E00, 0x2E7F], [0x3000, 0x303F], [0x3040, 0x30FF], [0x3400, 0x4DBF], [0x4E00, 0x9FFF],
            [0xA640, 0xA8FF], [0xAC00, 0xD7A3], [0xE000, 0xE0FF], [0xF900, 0xFAFF], [0xFB00, 0xFB4F], [0xFE00, 0xFE6F], [0xFF00, 0xFFFF],
            [0x10000, 0x1007F], [0x10D00, 0x10EFF], [0x11000, 0x1137F], [0x13430, 0x1345F], [0x1D400, 0x1D7FF], [0x1F300, 0x1FAFF],
            [0x20000, 0x200FF], [0x2A6D0, 0x2A720], [0x2B730, 0x2B750], [0x2B810, 0x2B830], [0x2B910, 0x2B930], [0x2CEA0, 0x2CEC0], [0x2F800, 0x2FA1F],
            [0x30000, 0x3134F], [0xE0000, 0xE01EF], [0xF0000, 0xF00FF], [0x10FFF0, 0x10FFFF],
        ];
        string[] words =
        [
            "[CLS]", "[SEP]", "[UNK]", "[MASK]", "[PAD]", "[cls]", "[C\u200BLS]", " ", "  ", "\t", "\n", "\r\n", "\u00A0", "\u3000", "\u2028", "\u0085", "\u000B",
            "hello", "world", "Hello", "World", "İstanbul", "Σίσυφος", "ΣΊΣΥΦΟΣ", "straße", "Straße", "ﬁne", "ＡＢＣ", "naïve", "café", "cafe\u0301", "e\u0301",
            "a\u0308\u0301", "😀", "👍🏽", "👨\u200D👩\u200D👧", "🏳️\u200D🌈", "𠀀", "𝐚", "\U0002F8DB", "杞", "中文", "한국어", "日本語", new string('a', 60),
        ];
        for (int i = 0; i < count; i++)
        {
            var sb = new StringBuilder();
            for (int k = rng.Next(1, 40); k > 0; k--)
            {
                int m = rng.Next(12);
                int cp;
                if (m < 2) { sb.Append(words[rng.Next(words.Length)]); continue; }
                if (m < 4) cp = rng.Next(0x20, 0x7F);
                else if (m == 4) cp = ' ';
                else if (m == 5) cp = rng.Next(0, 0x110000);
                else { var r = ranges[rng.Next(ranges.Length)]; cp = rng.Next(r[0], r[1] + 1); }
                if (cp is >= 0xD800 and <= 0xDFFF) cp = 'A';
                sb.Append(char.ConvertFromUtf32(cp));
            }
            if (rng.Next(20) == 0) sb.Append(rng.Next(2) == 0 ? new string('x', rng.Next(95, 130)) : string.Concat(Enumerable.Repeat("😀", rng.Next(48, 104))));
            yield return sb.ToString();
        }
    }

    [Theory]
    [InlineData(Setting.Uncased)]
    [InlineData(Setting.Cased)]
    [InlineData(Setting.LowerKeepAccents)]
    [InlineData(Setting.NoCjkSplit)]
    public void IdsEqualHuggingFaceTokenizers_OnTheCorpusAndRandomText(Setting setting)
    {
        using var p = new Pair(setting);
        // the hand-picked edge cases of the MiniLM test, the EWT corpus (when it is there: it is not in the repository), random text
        var texts = new List<string>(MiniLmParityTests.BuiltIn);
        bool corpus = TaggerFidelityTests.TreebankFolder() is not null;
        if (TaggerFidelityTests.TreebankFolder() is { } ewt)
            foreach (var f in Directory.GetFiles(ewt, "*.conllu"))
                foreach (var line in File.ReadLines(f))
                    if (line.StartsWith("# text = ", StringComparison.Ordinal)) texts.Add(line[9..]);
        texts.AddRange(RandomTexts(20_000, 1 + (int)setting));
        var (n, shown) = Differences(p, texts);
        Assert.True(n == 0, $"{n} of {texts.Count} texts tokenize differently, e.g.\n{string.Join('\n', shown)}");
        // the comparison is not vacuous: the texts reach [UNK], continuation pieces and thousands of distinct ids
        var all = texts.SelectMany(p.Fa.Encode).ToHashSet();
        Assert.Contains(p.Fa.UnknownId, all);
        Assert.Contains(all, id => p.Fa.Token(id).Length > 0 && Vocab.Value[id].StartsWith("##", StringComparison.Ordinal));
        Assert.True(all.Count > (corpus ? 5_000 : 1_000), $"{all.Count} distinct ids");
    }

    [Theory]
    [InlineData(Setting.Uncased)]
    [InlineData(Setting.Cased)]
    public void IdsEqualHuggingFaceTokenizers_ForEveryCodePointInAWord(Setting setting)
    {
        using var p = new Pair(setting);
        static IEnumerable<string> Each()
        {
            for (int cp = 1; cp < 0x110000; cp++)
                if (cp is < 0xD800 or > 0xDFFF) yield return "x" + char.ConvertFromUtf32(cp) + "y";
        }
        var (n, shown) = Differences(p, Each());
        Assert.True(n == 0, $"{n} code points tokenize differently, e.g.\n{string.Join('\n', shown)}");
    }
}
