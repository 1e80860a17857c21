using System.Text;
using FastAttn.Embeddings;
using FastAttn.TestSupport;
using FastAttn.Tests.IO;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// The SentencePiece Unigram tokenizer's rules on small hand-checked cases (the Rust library's own model examples, the
/// charsmap's cluster rule, framing and truncation), every way a file can be malformed, and an end-to-end embedding
/// with a Unigram tokenizer.json. Parity with the Rust library on large text sets: <c>UnigramParityTests</c>.
/// </summary>
public class UnigramTokenizerTests
{
    // the Rust library's model test: (piece, score)
    private static readonly (string, double)[] LibraryExample =
    [
        ("ab", 0.0), ("cd", -0.1), ("abc", -0.2), ("a", -0.3), ("b", -0.4), ("c", -0.5), ("ABC", -0.5), ("abcdabcd", 20.0), ("q", 20.5), ("r", 20.5), ("qr", -0.5),
    ];

    private static UnigramTokenizer Load(TempDir dir, IReadOnlyList<(string, double)> pieces, UnigramFiles.Settings s, int maxTokens = 512)
    {
        string path = dir.File("tokenizer.json");
        UnigramFiles.TokenizerJson(path, pieces, s);
        return UnigramTokenizer.FromTokenizerJson(path, maxTokens);
    }

    [Theory]
    [InlineData("abc", "abc")]
    [InlineData("AB", "<unk>")]                    // two characters without a piece: one fused unknown
    [InlineData("abcd", "ab cd")]
    [InlineData("abcc", "abc c")]
    [InlineData("xabcabaabcdd", "<unk> abc ab a ab cd <unk>")]
    [InlineData("xyz東京", "<unk>")]
    [InlineData("ABC", "ABC")]
    [InlineData("abABCcd", "ab ABC cd")]
    [InlineData("ababcdabcdcd", "ab abcdabcd cd")]
    [InlineData("abqrcd", "ab q r cd")]
    [InlineData("", "")]
    public void BestPath_IsTheLibrarysOnItsOwnExamples(string text, string pieces)
    {
        using var dir = new TempDir();
        var t = Load(dir, LibraryExample, new UnigramFiles.Settings { Template = false });
        Assert.Equal(pieces, string.Join(' ', t.Tokenize(text)));
    }

    [Fact]
    public void Framing_SingleAndPair_AndTruncation()
    {
        using var dir = new TempDir();
        var t = Load(dir, [("\u2581a", -1), ("\u2581b", -1), ("\u2581", -2), ("a", -3), ("b", -3)],
            new UnigramFiles.Settings { PreTokenizer = UnigramFiles.Metaspace() }, maxTokens: 8);
        Assert.Equal([0, 4, 5, 2], t.Encode("a b"));              // <s> ▁a ▁b </s>
        Assert.Equal(0, t.ClsId);
        Assert.Equal(2, t.SepId);
        var ids = t.EncodePair("a", "b b", out var types);
        Assert.Equal([0, 4, 2, 2, 5, 5, 2], ids);                 // <s> A </s></s> B </s>, all of type 0
        Assert.All(types, x => Assert.Equal(0, x));
        // cut to 8: 6 framing-free places for a single text, 4 for a pair (longest first)
        var one = t.Encode("a a a a a a a a", out bool cut);
        Assert.True(cut);
        Assert.Equal(8, one.Length);
        Assert.Equal(2, one[^1]);
        var pair = t.EncodePair("a a a a a", "b", out _);
        Assert.Equal([0, 4, 4, 4, 2, 2, 5, 2], pair);
        Assert.Throws<ArgumentOutOfRangeException>(() => UnigramTokenizer.FromTokenizerJson(dir.File("tokenizer.json"), 4));
    }

    [Fact]
    public void AddedTokens_AreFoundInTheRawText_MaskTakesTheSpaceBeforeIt()
    {
        using var dir = new TempDir();
        var t = Load(dir, [("\u2581x", -1), ("\u2581", -2), ("x", -3)], new UnigramFiles.Settings { PreTokenizer = UnigramFiles.Metaspace() });
        int mask = t.VocabularySize - 1;
        Assert.Equal("<mask>", t.Token(mask));
        Assert.Equal([0, 4, mask, 2], t.Encode("x   <mask>"));       // lstrip: the spaces go with <mask>
        Assert.Equal([0, 4, 0, 4, 2], t.Encode("x<s>x"));            // written special tokens stay whole
        Assert.Equal([0, 4, 3, 6, 2], t.Encode("x\u00A0x"));         // no-break space is not Metaspace's space (no normaliser here): ▁x <unk> x
    }

    [Fact]
    public void ByteFallback_SpellsUnknownPiecesAsBytes()
    {
        using var dir = new TempDir();
        var pieces = new List<(string, double)> { ("a", -1) };
        pieces.AddRange(Enumerable.Range(0, 256).Select(b => ($"<0x{b:X2}>", -10.0)));
        var t = Load(dir, pieces, new UnigramFiles.Settings { Template = false, ByteFallback = true });
        Assert.Equal("a <0xC3> <0xA9> a", string.Join(' ', t.Tokenize("aéa")));
        // a lone surrogate reaches the model as U+FFFD (what the UTF-8 conversion makes of it), not an exception
        Assert.Equal("<0xEF> <0xBF> <0xBD>", string.Join(' ', t.Tokenize("\uD800")));
    }

    [Fact]
    public void CharsMap_ClusterRule_AsTheLibraryAppliesIt()
    {
        var map = PrecompiledCharsMap.Parse(UnigramFiles.CharsMap([("ｅ", "e"), ("e\u0301", "é"), ("\t", " "), ("\u0001", ""), ("ab", "X"), ("a", "A")]), "test");
        Assert.Equal("é", map.Normalize("e\u0301"));                 // a two-character key
        Assert.Equal("e", map.Normalize("ｅ\u0301"));                 // a cluster under 6 bytes starting with a key: replaced whole (accent lost)
        Assert.Equal("e\u0301\u0301", map.Normalize("ｅ\u0301\u0301")); // 7 bytes: per character
        Assert.Equal("x\u0301 y", map.Normalize("x\u0301\ty"));       // no key: kept
        Assert.Equal("zz", map.Normalize("z\u0001z"));                // removed
        Assert.Equal("AAb", map.Normalize("aab"));                    // per cluster: "ab" spans two clusters, so the key "ab" is never whole
        Assert.Equal("xyz", map.Normalize("xyz"));
    }

    [Fact]
    public void CharsMap_Malformed_IsInvalidData()
    {
        byte[] good = UnigramFiles.CharsMap([("a", "b")]);
        int units = BitConverter.ToInt32(good, 0) / 4;
        var cases = new List<byte[]>
        {
            Array.Empty<byte>(),
            new byte[] { 1, 0 },
            BitConverter.GetBytes(1000).Concat(new byte[4]).ToArray(),            // a trie longer than the map
            BitConverter.GetBytes(0).Concat(new byte[] { (byte)'b', 0 }).ToArray(), // an empty trie
        };
        var badUtf8 = (byte[])good.Clone();
        badUtf8[4 + 4 * units] = 0xFF;
        cases.Add(badUtf8);
        // a value pointing past the strings, and a root offset / child pointing outside the array are skipped or refused, never read
        for (int u = 0; u < units; u++)
        {
            uint unit = BitConverter.ToUInt32(good, 4 + 4 * u);
            if ((unit & 0x8000_0000u) == 0) continue;
            var pastEnd = (byte[])good.Clone();
            BitConverter.TryWriteBytes(pastEnd.AsSpan(4 + 4 * u), 0x8000_0000u | 1000u);
            cases.Add(pastEnd);
        }
        foreach (var c in cases) Assert.Throws<InvalidDataException>(() => PrecompiledCharsMap.Parse(c, "bad"));
        var rootFar = (byte[])good.Clone();
        BitConverter.TryWriteBytes(rootFar.AsSpan(4), (1u << 21) << 10);   // the root's children far outside: nothing matches
        Assert.Equal("a", PrecompiledCharsMap.Parse(rootFar, "far").Normalize("a"));
    }

    public static TheoryData<string, string> MalformedFiles => new()
    {
        { "not json", "not valid JSON" },
        { "[1]", "not a JSON object" },
        { """{"model": {"type": "Unigram", "vocab": {}}}""", "model.vocab" },
        { """{"model": {"type": "Unigram", "vocab": []}}""", "empty" },
        { """{"model": {"type": "Unigram", "vocab": [["a"]]}}""", "entry 0" },
        { """{"model": {"type": "Unigram", "vocab": [["a", "x"]]}}""", "entry 0" },
        { """{"model": {"type": "Unigram", "vocab": [["a", 1e999]]}}""", "entry 0" },
        { """{"model": {"type": "Unigram", "vocab": [["\ud800", -1]]}}""", "lone surrogate" },
        { """{"model": {"type": "Unigram", "unk_id": 5, "vocab": [["a", -1]]}}""", "unk_id" },
        { """{"model": {"type": "Unigram", "unk_id": 0, "vocab": [["a", -1]], "byte_fallback": 1}}""", "byte_fallback" },
        { """{"normalizer": {"type": "Nmt"}, "model": {"type": "Unigram", "unk_id": 0, "vocab": [["a", -1]]}}""", "'Nmt'" },
        { """{"normalizer": {"type": "Precompiled", "precompiled_charsmap": "!!"}, "model": {"type": "Unigram", "unk_id": 0, "vocab": [["a", -1]]}}""", "base64" },
        { """{"normalizer": {"type": "Replace", "pattern": {"Regex": "(a)\\1"}, "content": ""}, "model": {"type": "Unigram", "unk_id": 0, "vocab": [["a", -1]]}}""", "linear time" },
        { """{"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Isolated"}, "model": {"type": "Unigram", "unk_id": 0, "vocab": [["a", -1]]}}""", "'Split'" },
        { """{"pre_tokenizer": {"type": "Metaspace", "replacement": "_", "prepend_scheme": "first"}, "model": {"type": "Unigram", "unk_id": 0, "vocab": [["a", -1]]}}""", "first" },
        { """{"pre_tokenizer": {"type": "Metaspace", "replacement": "ab"}, "model": {"type": "Unigram", "unk_id": 0, "vocab": [["a", -1]]}}""", "one character" },
        { """{"post_processor": {"type": "Bogus"}, "model": {"type": "Unigram", "unk_id": 0, "vocab": [["a", -1]]}}""", "post_processor" },
        { """{"post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<zz>"}}, {"Sequence": {"id": "A"}}], "pair": []}, "model": {"type": "Unigram", "unk_id": 0, "vocab": [["a", -1]]}}""", "<zz>" },
        { """{"added_tokens": [{"content": "new"}], "model": {"type": "Unigram", "unk_id": 0, "vocab": [["a", -1]]}}""", "added token 'new'" },
        { """{"model": {"type": "BPE", "vocab": {}}}""", "not Unigram" },
    };

    [Theory]
    [MemberData(nameof(MalformedFiles))]
    public void MalformedTokenizerJson_IsInvalidData(string json, string message)
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("tokenizer.json"), json);
        var e = Assert.Throws<InvalidDataException>(() => UnigramTokenizer.FromTokenizerJson(dir.File("tokenizer.json")));
        Assert.Contains(message, e.Message);
        File.WriteAllBytes(dir.File("bad-utf8.json"), [(byte)'{', 0xFF, (byte)'}']);
        Assert.Throws<InvalidDataException>(() => UnigramTokenizer.FromTokenizerJson(dir.File("bad-utf8.json")));
    }

    [Fact]
    public void ModelWithoutUnknownToken_NamesTheProblemAtEncode()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("tokenizer.json"), """{"model": {"type": "Unigram", "vocab": [["a", -1]]}}""");
        var t = UnigramTokenizer.FromTokenizerJson(dir.File("tokenizer.json"));
        Assert.Equal(new[] { 0, 0 }, t.Encode("aa"));
        Assert.Throws<InvalidOperationException>(() => t.Encode("b"));
    }

    [Fact]
    public void FromTokenizerJson_ReadsEitherModel()
    {
        using var dir = new TempDir();
        UnigramFiles.TokenizerJson(dir.File("u.json"), LibraryExample, new UnigramFiles.Settings());
        Assert.IsType<UnigramTokenizer>(TextTokenizer.FromTokenizerJson(dir.File("u.json")));
        var vocab = new[] { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a" };
        string entries = string.Join(',', vocab.Select((v, i) => $"\"{v}\": {i}"));
        File.WriteAllText(dir.File("w.json"), "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {" + entries + "}}}");
        var w = Assert.IsType<BertWordPieceTokenizer>(TextTokenizer.FromTokenizerJson(dir.File("w.json")));
        Assert.Equal([2, 5, 3], w.Encode("a"));
        // a lone surrogate escaped in either kind of file is a data error, not System.Text.Json's InvalidOperationException
        File.WriteAllText(dir.File("s.json"), "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {" + entries + ", \"\\ud800\": 6}}}");
        Assert.Throws<InvalidDataException>(() => TextTokenizer.FromTokenizerJson(dir.File("s.json")));
    }

    /// <summary>A folder with a BERT checkpoint and a Unigram tokenizer.json (as multilingual-e5's): loaded by path alone; the text path equals the id path.</summary>
    [Fact]
    public void SentenceEmbedder_LoadsAFolderWithAUnigramTokenizer()
    {
        using var dir = new TempDir();
        BertModelTests.Write(dir, BertModelTests.Checkpoint());
        // 4 specials + pieces + <mask> within the tiny model's 50 entries
        var pieces = new List<(string, double)> { ("\u2581", -2) };
        foreach (var w in new[] { "hello", "world", "the", "cat", "sat", "on", "mat", "é" }) { pieces.Add(("\u2581" + w, -3)); pieces.Add((w, -5)); }
        foreach (char c in "abcdefghijklmnopqrstuvwxyz") pieces.Add((c.ToString(), -8));
        pieces = pieces.DistinctBy(p => p.Item1).Take(BertModelTests.Vocab - 5).ToList();
        UnigramFiles.TokenizerJson(dir.File("tokenizer.json"), pieces,
            new UnigramFiles.Settings { Normalizer = UnigramFiles.XlmrNormalizer(UnigramFiles.CharsMap([("Ｈ", "H"), ("\t", " ")])), PreTokenizer = UnigramFiles.Metaspace() });
        using var embedder = SentenceEmbedder.Load(dir.Path);
        var tok = Assert.IsType<UnigramTokenizer>(embedder.Tokenizer);
        Assert.Equal(BertModelTests.MaxPos, tok.MaxTokens);
        var ids = tok.Encode("the cat\tsat  on the mat");
        Assert.Equal("<s> ▁the ▁cat ▁sat ▁on ▁the ▁mat </s>", string.Join(' ', ids.Select(tok.Token)));
        using var session = embedder.CreateSession();
        var byText = embedder.Encode("the cat\tsat  on the mat");
        var byIds = new float[embedder.Dimension];
        session.EncodeIds(ids, [ids.Length], byIds);
        Assert.Equal(byIds, byText);
        Assert.Equal(embedder.Dimension, embedder.Encode(new string('x', 10_000)).Length);   // cut to the model's 16 positions
    }
}
