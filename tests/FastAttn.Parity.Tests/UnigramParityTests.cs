using System.Text;
using System.Text.Json;
using FastAttn.Embeddings;
using FastAttn.TestSupport;

namespace FastAttn.Parity.Tests;

/// <summary>
/// FastAttn's SentencePiece Unigram tokenizer against Hugging Face's tokenizers library itself (Rust, through
/// Tokenizers.DotNet): one <c>tokenizer.json</c> read by both, ids compared for equality on the EWT corpus (when present),
/// hand-picked edge cases and random text from every Unicode plane. No pretrained Unigram tokenizer is served here, so
/// the file is built: a vocabulary of ~50,000 pieces with log-probability-like scores from all-MiniLM-L6-v2's word
/// pieces (word-initial ones as <c>▁word</c>), and an NFKC-like <c>precompiled_charsmap</c> written in SentencePiece's
/// double-array layout (so the Rust library's reader checks the layout, and both apply its cluster rules).
/// </summary>
public class UnigramParityTests
{
    // a few cased and multilingual words beside the word pieces, and pieces the normaliser's outputs need
    private static readonly Lazy<List<(string, double)>> Pieces = new(() => UnigramFiles.PiecesFromWordPiece(File.ReadLines(MiniLmPackage.Files.Vocab),
        ["Hello", "World", "İstanbul", "Straße", "München", "naïve", "Ελλάδα", "Москва", "東京", "日本語", "한국어", "...", "1/2"]));

    private static readonly Lazy<byte[]> CharsMap = new(() => UnigramFiles.CharsMap(UnigramFiles.NfkcLikeRules()));

    public enum Setting { XlmRoberta, SplitByteFallback, ModelOnly }

    private static UnigramFiles.Settings For(Setting s) => s switch
    {
        Setting.XlmRoberta => new() { Normalizer = UnigramFiles.XlmrNormalizer(CharsMap.Value), PreTokenizer = UnigramFiles.Metaspace() },
        Setting.SplitByteFallback => new()
        {
            Normalizer = w =>
            {
                w.WriteStartObject(); w.WriteString("type", "Sequence"); w.WriteStartArray("normalizers");
                w.WriteStartObject(); w.WriteString("type", "NFKC"); w.WriteEndObject();
                w.WriteStartObject(); w.WriteString("type", "Replace");
                w.WriteStartObject("pattern"); w.WriteString("String", "``"); w.WriteEndObject(); w.WriteString("content", "\""); w.WriteEndObject();
                w.WriteEndArray(); w.WriteEndObject();
            },
            PreTokenizer = w =>
            {
                w.WriteStartObject(); w.WriteString("type", "Sequence"); w.WriteStartArray("pretokenizers");
                w.WriteStartObject(); w.WriteString("type", "WhitespaceSplit"); w.WriteEndObject();
                UnigramFiles.Metaspace()(w);
                w.WriteEndArray(); w.WriteEndObject();
            },
            ByteFallback = true,
            MaskLStrip = false,
            Extra = [("hello world", true, false, false), ("qqzx", false, true, false), ("bar", false, false, true)],
        },
        _ => new() { Template = false },
    };

    private sealed class Pair : IDisposable
    {
        public readonly Tokenizers.DotNet.Tokenizer Hf;
        public readonly UnigramTokenizer Fa;
        private readonly string _path;
        public Pair(Setting setting)
        {
            _path = Path.Combine(PackagedModel.CacheRoot, "unigram-parity", $"{setting}-{Environment.ProcessId}.json");
            Directory.CreateDirectory(Path.GetDirectoryName(_path)!);
            var pieces = Pieces.Value;
            if (setting == Setting.SplitByteFallback)
                pieces = [.. pieces, .. Enumerable.Range(0, 256).Select(b => ($"<0x{b:X2}>", -20.0))];
            UnigramFiles.TokenizerJson(_path, pieces, For(setting));
            Hf = new Tokenizers.DotNet.Tokenizer(_path);
            Fa = UnigramTokenizer.FromTokenizerJson(_path, 1 << 20);
        }
        public void Dispose() { Hf.Dispose(); File.Delete(_path); }
    }

    internal static readonly string[] EdgeCases =
    [
        "", " ", "  ", "   a  b   ", "a", "Hello World", "hello world", "Hello  World  ", "<s>", "</s>", "<unk>", "a<mask>b", "x <mask> y", "x   <mask>",
        "<mask>", "<s>hello</s>", "hello<pad>world", "Ｈｅｌｌｏ ｗｏｒｌｄ", "ｅ\u0301", "e\u0301", "e\u0301\u0302", "A\u0308ffin", "\t\n\r", "tab\there",
        "①②③", "ﬁne ﬂow", "İstanbul", "ΣΊΣΥΦΟΣ", "Straße", "naïve café", "👩\u200D👩\u200D👧", "🇩🇪🇫🇷", "\u1100\u1161\u11A8", "क्षि",
        "東京 日本語 한국어", "x\u3000y", "a\u0085b", "\u200Bzero\u200Bwidth", "1/2 ½ ¼", "x²", "ℌello", "𝐇𝐞𝐥𝐥𝐨", "🄰🄱", "``quoted''",
        "qqzx", "qqzxbar", "a qqzx b", "a bar   b", "hello world!", "Hello World", "say hello world", new string('x', 300), string.Concat(Enumerable.Repeat("ab", 200)),
        "\U0001F600\U0001F600", "\uFFFD", "\u0000a\u0001b", "q\u0301\u0301\u0301\u0301\u0301\u0301", "ⅰⅱⅲ", "ﾊﾝｶｸ", "ｶﾞ",
    ];

    [Theory]
    [InlineData(Setting.XlmRoberta)]
    [InlineData(Setting.SplitByteFallback)]
    [InlineData(Setting.ModelOnly)]
    public void IdsEqualHuggingFaceTokenizers(Setting setting)
    {
        using var p = new Pair(setting);
        var texts = new List<string>(EdgeCases);
        texts.AddRange(MiniLmParityTests.BuiltIn);
        texts.AddRange(TokenizerComparison.EwtSentences());
        texts.AddRange(TokenizerParityTests.RandomTexts(20_000, 100 + (int)setting));
        // texts with the added tokens and the normaliser's two-character keys strewn in
        var rng = new Random(7 + (int)setting);
        string[] bits = ["<mask>", " <mask>", "<s>", "</s>", "qqzx", " bar ", "hello world", "ｅ\u0301", "a\u0301", "  ", "``", "Ａ"];
        for (int i = 0; i < 3000; i++)
            texts.Add(string.Concat(Enumerable.Range(0, rng.Next(1, 12)).Select(_ => rng.Next(2) == 0 ? bits[rng.Next(bits.Length)] : EdgeCases[rng.Next(EdgeCases.Length)])));
        var all = TokenizerComparison.AssertIdsEqual(texts, p.Hf, p.Fa);
        // not vacuous: unknown pieces, thousands of distinct ids, and (where set) the byte fallback and added tokens are reached
        Assert.Contains(p.Fa.UnknownId, all);
        // (without the EWT corpus, as in a clone outside this workspace, the texts reach about 1,000 distinct ids; with it, over 10,000)
        Assert.True(all.Count > 500, $"only {all.Count} distinct ids");
        if (setting == Setting.SplitByteFallback)
        {
            Assert.Contains(p.Fa.Encode("\U0001F600"), i => p.Fa.Token(i) == "<0xF0>");
            Assert.Contains(p.Fa.Encode("a qqzx b"), i => p.Fa.Token(i) == "qqzx");
            Assert.DoesNotContain(p.Fa.Encode("aqqzx b"), i => p.Fa.Token(i) == "qqzx");
        }
    }
}
