using System.Text;
using System.Text.Json;
using FastAttn.Embeddings;
using FastAttn.TestSupport;

namespace FastAttn.Parity.Tests;

/// <summary>
/// FastAttn's BPE tokenizer against Hugging Face's tokenizers library itself (Rust, through Tokenizers.DotNet): one
/// <c>tokenizer.json</c> read by both, ids compared for equality on the EWT corpus (when present), hand-picked edge cases
/// random text from every Unicode plane and long run-together words, in five settings — RoBERTa's (byte-level, no prefix space,
/// RobertaProcessing), GPT-2's (byte-level with the prefix space, [a, b] merges, ignore_merges), SentencePiece BPE
/// (Prepend + Replace normaliser, byte fallback, fused unknowns), an end-of-word suffix with unfused unknowns, and a
/// continuing-subword prefix without an unknown token. No pretrained BPE tokenizer is served here, so the files are built:
/// vocabularies and merge lists from all-MiniLM-L6-v2's word pieces, each word joined by halves (BpeFiles).
/// </summary>
public class BpeParityTests
{
    public enum Setting { Roberta, Gpt2, SentencePiece, SuffixUnk, PrefixNoUnk, Qwen2, Llama3, SplitPrevious, SplitContiguous, SplitNext, SplitIsolated, SplitRemoved, Gemma }

    private static readonly string[] Extra = ["Hello", "World", "İstanbul", "Straße", "München", "naïve", "Ελλάδα", "Москва", "東京", "日本語", "한국어", "don't", "'s", "1/2", "2024"];

    /// <summary>The word list: word pieces of the vocabulary (whole words, and "##" continuations without the marks).</summary>
    private static readonly Lazy<(List<string> Words, List<string> Pieces)> Vocab = new(() =>
    {
        var words = new List<string>();
        var pieces = new List<string>();
        foreach (var line in File.ReadLines(MiniLmPackage.Files.Vocab))
        {
            if (line.Length == 0 || line.StartsWith('[')) continue;
            if (line.StartsWith("##", StringComparison.Ordinal)) pieces.Add(line[2..]); else words.Add(line);
        }
        words.AddRange(Extra);
        return (words, pieces);
    });

    private static Action<Utf8JsonWriter> Obj(params (string Key, object Value)[] fields) => w =>
    {
        w.WriteStartObject();
        foreach (var (k, v) in fields)
            switch (v)
            {
                case string s: w.WriteString(k, s); break;
                case bool b: w.WriteBoolean(k, b); break;
                case Action<Utf8JsonWriter> inner: w.WritePropertyName(k); inner(w); break;
                case Action<Utf8JsonWriter>[] list: w.WriteStartArray(k); foreach (var i in list) i(w); w.WriteEndArray(); break;
            }
        w.WriteEndObject();
    };

    private static (BpeFiles.Model, BpeFiles.Settings) For(Setting s)
    {
        var (words, pieces) = Vocab.Value;
        switch (s)
        {
            case Setting.Roberta:
            case Setting.Gpt2:
                {
                    // "Ġword" and "word" for whole words, bare continuation pieces — in the byte alphabet
                    var list = words.Take(12_000).SelectMany(w => new[] { BpeFiles.ByteLevel(" " + w), BpeFiles.ByteLevel(w) }).Concat(pieces.Select(BpeFiles.ByteLevel));
                    var m = BpeFiles.Build(BpeFiles.ByteChars.Select(c => c.ToString()), list);
                    return (m, s == Setting.Roberta
                        ? new() { PreTokenizer = BpeFiles.ByteLevelPre(addPrefixSpace: false), PostProcessor = "roberta" }
                        : new() { PreTokenizer = BpeFiles.ByteLevelPre(addPrefixSpace: true), PostProcessor = "bytelevel", TupleMerges = true, IgnoreMerges = true });
                }
            case Setting.Qwen2:
            case Setting.Llama3:
                {
                    // Qwen2/Qwen3's and Llama 3's layout: NFC, Split by the pattern, the byte alphabet, the end-of-text token after the text
                    var list = words.Take(12_000).SelectMany(w => new[] { BpeFiles.ByteLevel(" " + w), BpeFiles.ByteLevel(w) })
                        .Concat(pieces.Select(BpeFiles.ByteLevel)).Concat(new[] { "123", "12", " (", "!!", "'s", " \n", "\n\n", "  ", "Tis", "Sup", "ſup", "Ll" }.Select(BpeFiles.ByteLevel));
                    var m = BpeFiles.Build(BpeFiles.ByteChars.Select(c => c.ToString()), list);
                    return (m, new()
                    {
                        Normalizer = Obj(("type", "NFC")), PreTokenizer = BpeFiles.DecoderPre(s == Setting.Qwen2 ? BpeFiles.Qwen2Regex : BpeFiles.Llama3Regex),
                        PostProcessor = "eos", TupleMerges = true,
                    });
                }
            case Setting.SplitPrevious:
            case Setting.SplitContiguous:
            case Setting.SplitNext:
            case Setting.SplitIsolated:
            case Setting.SplitRemoved:
                {
                    // a literal Split on " " with each delimiter behaviour: words carry their space before or after, or spaces stand alone or go
                    var list = words.Take(6_000).SelectMany(w => new[] { w + " ", " " + w, w }).Concat(pieces).Concat(["  ", "   "]);
                    var chars = list.SelectMany(w => w.EnumerateRunes()).Select(r => r.ToString()).Distinct();
                    var m = BpeFiles.Build(chars, list);
                    return (m, new()
                    {
                        PreTokenizer = BpeFiles.SplitStringPre(" ", s switch
                        {
                            Setting.SplitPrevious => "MergedWithPrevious", Setting.SplitNext => "MergedWithNext", Setting.SplitIsolated => "Isolated",
                            Setting.SplitRemoved => "Removed", _ => "Contiguous",
                        }),
                        PostProcessor = "roberta", UnkToken = "<unk>", FuseUnk = true, TupleMerges = true,       // tokens hold spaces: merges as pairs
                    });
                }
            case Setting.Gemma:
                {
                    // Gemma's layout: spaces replaced by ▁, a Split on " " (nothing left to split), byte fallback, <s> A
                    var list = words.Take(12_000).Select(w => "\u2581" + w).Concat(words.Take(2_000)).Concat(pieces);
                    var chars = list.SelectMany(w => w.EnumerateRunes()).Select(r => r.ToString()).Distinct();
                    var m = BpeFiles.Build(Enumerable.Range(0, 256).Select(b => $"<0x{b:X2}>").Concat(chars), list);
                    return (m, new()
                    {
                        Normalizer = Obj(("type", "Replace"), ("pattern", Obj(("String", " "))), ("content", "\u2581")),
                        PreTokenizer = BpeFiles.SplitStringPre(" ", "MergedWithPrevious"),
                        PostProcessor = "template", UnkToken = "<unk>", FuseUnk = true, ByteFallback = true, TupleMerges = true,
                    });
                }
            case Setting.SentencePiece:
                {
                    var list = words.Take(12_000).Select(w => "\u2581" + w).Concat(pieces);
                    var chars = list.SelectMany(w => w.EnumerateRunes()).Select(r => r.ToString()).Distinct().Where(c => c != " ");
                    var m = BpeFiles.Build(Enumerable.Range(0, 256).Select(b => $"<0x{b:X2}>").Concat(chars), list);
                    return (m, new()
                    {
                        Normalizer = Obj(("type", "Sequence"), ("normalizers", new Action<Utf8JsonWriter>[]
                        {
                            Obj(("type", "Prepend"), ("prepend", "\u2581")),
                            Obj(("type", "Replace"), ("pattern", Obj(("String", " "))), ("content", "\u2581")),
                        })),
                        PostProcessor = "template", UnkToken = "<unk>", FuseUnk = true, ByteFallback = true,
                    });
                }
            case Setting.SuffixUnk:
                {
                    var m = BpeFiles.Build([], words.Take(8_000).Concat(pieces), suffix: "</w>");
                    return (m, new()
                    {
                        Normalizer = Obj(("type", "Sequence"), ("normalizers", new Action<Utf8JsonWriter>[] { Obj(("type", "NFC")), Obj(("type", "Lowercase")) })),
                        PreTokenizer = Obj(("type", "WhitespaceSplit")),
                        PostProcessor = "roberta", UnkToken = "<unk>", FuseUnk = false,
                        Extra = [("hello world", true, false, false), ("qqzx", false, true, false), ("bar", false, false, true)],
                    });
                }
            default:
                {
                    var m = BpeFiles.Build([], words.Take(8_000).Concat(pieces), prefix: "##");
                    return (m, new() { PreTokenizer = Obj(("type", "WhitespaceSplit")), PostProcessor = null });
                }
        }
    }

    private sealed class Pair : IDisposable
    {
        public readonly Tokenizers.DotNet.Tokenizer Hf;
        public readonly BpeTokenizer Fa;
        private readonly string _path;
        public Pair(Setting setting)
        {
            _path = Path.Combine(PackagedModel.CacheRoot, "bpe-parity", $"{setting}-{Environment.ProcessId}.json");
            Directory.CreateDirectory(Path.GetDirectoryName(_path)!);
            var (m, s) = For(setting);
            BpeFiles.TokenizerJson(_path, m, s);
            Hf = new Tokenizers.DotNet.Tokenizer(_path);
            Fa = BpeTokenizer.FromTokenizerJson(_path, 1 << 20);
        }
        public void Dispose() { Hf.Dispose(); File.Delete(_path); }
    }

    private static readonly string[] EdgeCases =
    [
        "don't", "I'm", "we'll", "they're", "you've", "he'd", "it's", "'s", "''s", "!'s", "DON'T", "'S", "x 's", "a  b", "a   b", "a\t b", "a \tb", "a\n\nb",
        "  leading", "trailing  ", " ", "   ", "\n", " \n", "\n ", "a\u00A0b", "a \u00A0b", "a\u3000b", "12,345.67", " 123abc", "abc123", "  !!", " !!x", "x!!", "<s>", "</s>",
        "'Tis so", "'SUP", "'Sup", "'ſup", "WE'Ll", "x'Re", "<mask>", "a <mask> b", "a   <mask>", "<s>hello</s>", "hello<pad>world", "qqzx", "a qqzx b", "aqqzx", "a bar   b", "hello world", "say hello world!",
        "e\u0301", "\u0301\u0301x", "x\u200Dy", "\u200B", "👩\u200D👩\u200D👧", "🇩🇪", "\U0001F600", "\uFFFD", "\u0000", "a\u0001b", "\u007F", "\u0085x",
        "东京 日本語", "한국어", "Ελλάδα", "Москва", "ⅷ ½ ²", "𝐇𝐞𝐥𝐥𝐨", "İstanbul", "ǅ", new string('x', 300), string.Concat(Enumerable.Repeat("ab ", 150)),
    ];

    [Theory]
    [InlineData(Setting.Roberta)]
    [InlineData(Setting.Gpt2)]
    [InlineData(Setting.SentencePiece)]
    [InlineData(Setting.SuffixUnk)]
    [InlineData(Setting.PrefixNoUnk)]
    [InlineData(Setting.Qwen2)]
    [InlineData(Setting.Llama3)]
    [InlineData(Setting.SplitPrevious)]
    [InlineData(Setting.SplitContiguous)]
    [InlineData(Setting.SplitNext)]
    [InlineData(Setting.SplitIsolated)]
    [InlineData(Setting.SplitRemoved)]
    [InlineData(Setting.Gemma)]
    public void IdsEqualHuggingFaceTokenizers(Setting setting)
    {
        using var p = new Pair(setting);
        var texts = new List<string>(EdgeCases);
        texts.AddRange(UnigramParityTests.EdgeCases);
        texts.AddRange(MiniLmParityTests.BuiltIn);
        texts.AddRange(TokenizerComparison.EwtSentences());
        texts.AddRange(TokenizerParityTests.RandomTexts(20_000, 200 + (int)setting));
        var rng = new Random(9 + (int)setting);
        string[] bits = ["<mask>", " <mask>", "<s>", "'s", "'ll", " ", "  ", "\n", "qqzx", " bar ", "hello world", "123", "!!", "\u00A0"];
        for (int i = 0; i < 3000; i++)
            texts.Add(string.Concat(Enumerable.Range(0, rng.Next(1, 12)).Select(_ => rng.Next(2) == 0 ? bits[rng.Next(bits.Length)] : EdgeCases[rng.Next(EdgeCases.Length)])));
        // long words (vocabulary words run together): past 64 symbols the merge queue is a heap, below it a scanned list
        var vocabWords = Vocab.Value.Words;
        for (int i = 0; i < 1000; i++)
            texts.Add(string.Concat(Enumerable.Range(0, rng.Next(2, 40)).Select(_ => vocabWords[rng.Next(vocabWords.Count)])));
        var all = TokenizerComparison.AssertIdsEqual(texts, p.Hf, p.Fa);
        Assert.True(all.Count > 500, $"only {all.Count} distinct ids");
        // not vacuous: what each setting is about is reached
        switch (setting)
        {
            case Setting.SentencePiece:
                Assert.Contains(p.Fa.Encode("\U0001F600"), i => p.Fa.Token(i) == "<0xF0>");
                break;
            case Setting.SuffixUnk:
                Assert.Contains(p.Fa.UnknownId, all);
                Assert.Contains(p.Fa.Encode("a qqzx b"), i => p.Fa.Token(i) == "qqzx");
                break;
            case Setting.Qwen2:
            case Setting.Llama3:
                {
                    // the pattern's words: digits one at a time (Qwen2) or by threes (Llama 3), a punctuation mark with the word after it,
                    // case-insensitive contractions, a line break's run; the end-of-text token last
                    var q = p.Fa.Encode("12345 (hello DON'T\n\n  x");
                    Assert.Equal(2, q[^1]);
                    var words = q[..^1].Select(p.Fa.Token).ToList();
                    if (setting == Setting.Qwen2) Assert.Equal(["1", "2", "3", "4", "5"], words.Take(5));
                    else Assert.Equal(["12", "3", "45"], words.Take(3));                // "123" and "45" are words, their pieces from the merges
                    Assert.Contains("Ġ(", words);
                    Assert.Contains("ĊĊ", words);
                    break;
                }
            case Setting.SplitPrevious:
            case Setting.SplitContiguous:
                {
                    // the words the ids came from: a space after a space stays alone (MergedWithPrevious); a run is one word (Contiguous)
                    var split = new TokenizerParts.SplitString(" ", setting == Setting.SplitPrevious ? "MergedWithPrevious" : "Contiguous").Split(" the cat   dog ");
                    Assert.Equal(setting == Setting.SplitPrevious ? [" ", "the ", "cat ", " ", " ", "dog "] : [" ", "the", " ", "cat", "   ", "dog", " "], split);
                    foreach (var (behavior, expect) in new[] { ("Removed", new[] { "the", "cat", "dog" }), ("Isolated", [" ", "the", " ", "cat", " ", " ", " ", "dog", " "]),
                        ("MergedWithNext", [" the", " cat", " ", " ", " dog", " "]) })
                        Assert.Equal(expect, new TokenizerParts.SplitString(" ", behavior).Split(" the cat   dog "));
                    break;
                }
            case Setting.Roberta:
                var ids = p.Fa.Encode(" the cat's   dog");
                Assert.Equal((0, 2), (ids[0], ids[^1]));
                Assert.Equal("ĠtheĠcat'sĠĠĠdog", string.Concat(ids[1..^1].Select(p.Fa.Token)));      // the byte alphabet: Ġ is the space
                break;
        }
    }
}
