using System.Text;
using FastAttn.Embeddings;
using FastAttn.TestSupport;
using FastAttn.Tests.IO;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// The BPE tokenizer's rules on small hand-checked cases — the merge order, GPT-2's byte-level split, unknown characters
/// (fused, unfused, dropped, byte fallback), prefix and suffix, framing — every way a file can be malformed, thread
/// safety of its word cache, and a RoBERTa folder (all-distilroberta-v1's layout) end to end. Parity with the Rust
/// library on large text sets: <c>BpeParityTests</c>.
/// </summary>
public class BpeTokenizerTests
{
    private static string Json(string vocab, string merges, string model = "", string rest = "") =>
        "{" + rest + " \"model\": {\"type\": \"BPE\", \"dropout\": null, " + model + " \"vocab\": {" + vocab + "}, \"merges\": [" + merges + "]}}";

    private static BpeTokenizer FromJson(TempDir dir, string json)
    {
        File.WriteAllText(dir.File("tokenizer.json"), json);
        return BpeTokenizer.FromTokenizerJson(dir.File("tokenizer.json"));
    }

    /// <summary>
    /// Llama's and Gemma's fast tokenizers frame by tokenizer_config.json's add_bos_token / add_eos_token (transformers
    /// rebuilds their post-processor on load), whatever template tokenizer.json carries; other classes keep the file's.
    /// </summary>
    [Theory]
    [InlineData("GemmaTokenizer", "\"add_bos_token\": true, \"add_eos_token\": true,", "0 5 6 2", "0 5 6 2 0 7 2", "0 0 0 0 1 1 1")]
    [InlineData("GemmaTokenizerFast", "\"add_eos_token\": true, \"add_bos_token\": false,", "5 6 2", "5 6 2 7 2", "0 0 0 1 1")]
    [InlineData("LlamaTokenizerFast", "", "0 5 6", "0 5 6 0 7", "0 0 0 1 1")]
    [InlineData("PreTrainedTokenizerFast", "\"add_eos_token\": true,", "3 5 6", "3 5 6 7", "0 0 0 1")]
    public void LlamaAndGemmaClasses_FrameByTheirConfigFlags(string cls, string flags, string single, string pair, string types)
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("tokenizer.json"), Json(""" "<s>": 0, "<pad>": 1, "</s>": 2, "<x>": 3, "▁": 4, "a": 5, "b": 6, "c": 7 """, "",
            rest: """
                "added_tokens": [{"id": 0, "content": "<s>", "special": true}, {"id": 2, "content": "</s>", "special": true}, {"id": 3, "content": "<x>", "special": true}],
                "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<x>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                  "pair": [{"SpecialToken": {"id": "<x>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                  "special_tokens": {"<x>": {"id": "<x>", "ids": [3], "tokens": ["<x>"]}}},
                """));
        File.WriteAllText(dir.File("tokenizer_config.json"), $$$"""{"tokenizer_class": "{{{cls}}}", {{{flags}}} "bos_token": "<s>", "eos_token": {"content": "</s>", "special": true}}""");
        foreach (var t in new TextTokenizer[] { BpeTokenizer.FromTokenizerJson(dir.File("tokenizer.json")), TextTokenizer.FromTokenizerJson(dir.File("tokenizer.json")) })
        {
            Assert.Equal(single, string.Join(' ', t.Encode("ab")));
            Assert.Equal(pair, string.Join(' ', t.EncodePair("ab", "c", out var typeIds)));
            Assert.Equal(types, string.Join(' ', typeIds));
        }
        // a bos or eos the vocabulary lacks is refused by name
        File.WriteAllText(dir.File("tokenizer_config.json"), """{"tokenizer_class": "GemmaTokenizer", "add_eos_token": true, "bos_token": "<s>", "eos_token": "<eos>"}""");
        Assert.Contains("<eos>", Assert.Throws<InvalidDataException>(() => BpeTokenizer.FromTokenizerJson(dir.File("tokenizer.json"))).Message);
        // a config that is not what it claims: a wrong kind, a lone surrogate, not JSON, not UTF-8 — InvalidDataException each
        foreach (var bad in new[] { """{"tokenizer_class": "GemmaTokenizer", "add_eos_token": "yes"}""", """{"tokenizer_class": "\ud800"}""",
            """{"tokenizer_class": "GemmaTokenizer", "bos_token": "\udc00"}""", """{"tokenizer_class": """, """{"tokenizer_class": "GemmaTokenizer", "eos_token": 5}""" })
        {
            File.WriteAllText(dir.File("tokenizer_config.json"), bad);
            Assert.Throws<InvalidDataException>(() => BpeTokenizer.FromTokenizerJson(dir.File("tokenizer.json")));
        }
        File.WriteAllBytes(dir.File("tokenizer_config.json"), [0x7B, 0xFF, 0x7D]);
        Assert.Throws<InvalidDataException>(() => TextTokenizer.FromTokenizerJson(dir.File("tokenizer.json")));
    }

    /// <summary>The Rust library's own model example: "unrelated" merged all the way, whatever order the pairs come in.</summary>
    [Fact]
    public void Merges_LowestRankFirst_TheLibrarysExample()
    {
        using var dir = new TempDir();
        var t = FromJson(dir, Json(
            """ "u": 0, "n": 1, "r": 2, "e": 3, "l": 4, "a": 5, "t": 6, "d": 7, "re": 8, "at": 9, "ed": 10, "un": 11, "ated": 12, "rel": 13, "related": 14, "unrelated": 15 """,
            """ "r e", "a t", "e d", "u n", "at ed", "re l", "rel ated", "un related" """));
        Assert.Equal([15], t.Encode("unrelated"));
        Assert.Equal([14], t.Encode("related"));
        Assert.Equal("un rel", string.Join(' ', t.Tokenize("unrel")));      // (r e) first, then (u n), then (re l)
        Assert.Equal("ated", string.Join(' ', t.Tokenize("ated")));
        Assert.Equal("un d", string.Join(' ', t.Tokenize("und")));
    }

    [Theory]
    [InlineData("abc", "a bc")]          // (b c) ranks before (a b): the leftmost pair is not the first merged
    [InlineData("abab", "ab ab")]        // equal ranks: left to right
    [InlineData("aaa", "aa a")]          // overlapping occurrences of one pair: the leftmost wins
    [InlineData("aaaa", "aaaa")]         // (a a) twice, then (aa aa)
    [InlineData("bca", "bc a")]
    public void Merges_RankThenPosition(string word, string pieces)
    {
        using var dir = new TempDir();
        var t = FromJson(dir, Json(""" "a": 0, "b": 1, "c": 2, "bc": 3, "ab": 4, "aa": 5, "aaaa": 6 """, """ "b c", "a b", "a a", "aa aa" """));
        Assert.Equal(pieces, string.Join(' ', t.Tokenize(word)));
    }

    [Theory]
    [InlineData("Hello  world's 123!!\n\nend ", "Hello|Ġ|Ġworld|'s|Ġ123|!!|Ċ|Ċ|end|Ġ")]
    [InlineData("I'm we'll they're 'S", "I|'m|Ġwe|'ll|Ġthey|'re|Ġ'|S")]      // contractions are lower case only
    [InlineData("a\tb \tc", "a|ĉ|b|Ġ|ĉ|c")]                               // a tab is not the optional space
    [InlineData("x  ", "x|ĠĠ")]                                              // trailing spaces stay together
    [InlineData("  x", "Ġ|Ġx")]
    [InlineData("ab12cd!?é", "ab|12|cd|!?|Ã©")]                              // é's two UTF-8 bytes as two characters
    [InlineData("", "")]
    public void ByteLevel_SplitsAsGpt2sPattern(string text, string pieces)
    {
        using var dir = new TempDir();
        // the 256 byte characters and nothing else: every word comes out as its characters, so the pre-tokenised words show
        var vocab = string.Join(", ", BpeFiles.ByteChars.Select((c, i) => $"\"{(c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c.ToString())}\": {i}"));
        var t = FromJson(dir, Json(vocab, "", rest: """ "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}, """));
        Assert.Equal(pieces.Replace("|", ""), string.Concat(t.Tokenize(text)));
        // each expected word merged into one token shows the boundaries: a model whose merges join exactly those words
        var m = BpeFiles.Build(BpeFiles.ByteChars.Select(c => c.ToString()), pieces.Split('|', StringSplitOptions.RemoveEmptyEntries));
        BpeFiles.TokenizerJson(dir.File("words.json"), m, new BpeFiles.Settings { PreTokenizer = BpeFiles.ByteLevelPre(), PostProcessor = null });
        var byWords = BpeTokenizer.FromTokenizerJson(dir.File("words.json"));
        Assert.Equal(pieces, string.Join('|', byWords.Tokenize(text)));
    }

    [Fact]
    public void ByteLevel_AddPrefixSpace_PerPieceBetweenAddedTokens_NotOnEmptyText()
    {
        using var dir = new TempDir();
        var m = BpeFiles.Build(BpeFiles.ByteChars.Select(c => c.ToString()), [BpeFiles.ByteLevel(" hello"), BpeFiles.ByteLevel(" world")]);
        BpeFiles.TokenizerJson(dir.File("t.json"), m, new BpeFiles.Settings { PreTokenizer = BpeFiles.ByteLevelPre(addPrefixSpace: true), PostProcessor = "roberta" });
        var t = BpeTokenizer.FromTokenizerJson(dir.File("t.json"));
        Assert.Equal("<s> Ġhello Ġworld </s>", string.Join(' ', t.Encode("hello world").Select(t.Token)));
        Assert.Equal("<s> Ġhello </s> Ġworld </s>", string.Join(' ', t.Encode("hello</s>world").Select(t.Token)));
        Assert.Equal("<s> </s>", string.Join(' ', t.Encode("").Select(t.Token)));
        // <mask> takes the spaces before it (lstrip)
        Assert.Equal("<s> Ġhello <mask> </s>", string.Join(' ', t.Encode("hello   <mask>").Select(t.Token)));
        // pairs as RoBERTa: <s> A </s></s> B </s>, all of type 0
        Assert.Equal("<s> Ġhello </s> </s> Ġworld </s>", string.Join(' ', t.EncodePair("hello", "world", out var types).Select(t.Token)));
        Assert.All(types, x => Assert.Equal(0, x));
    }

    [Theory]
    [InlineData(true, false, "a <unk> b")]          // consecutive unknowns fused
    [InlineData(false, false, "a <unk> <unk> b")]
    [InlineData(false, true, "a <0xC3> <0xA9> <0xC3> <0xA9> b")]
    public void UnknownCharacters_FusedOrNot_OrBytes(bool fuse, bool byteFallback, string pieces)
    {
        using var dir = new TempDir();
        string bytes = byteFallback ? ", \"<0xC3>\": 4, \"<0xA9>\": 5" : "";
        var t = FromJson(dir, Json($""" "a": 0, "b": 1, "<unk>": 2, "x": 3{bytes} """, "", $""" "unk_token": "<unk>", "fuse_unk": {(fuse ? "true" : "false")}, "byte_fallback": {(byteFallback ? "true" : "false")}, """));
        Assert.Equal(pieces, string.Join(' ', t.Tokenize("aééb")));
        Assert.Equal(2, t.UnknownId);
    }

    /// <summary>
    /// A word starts with room for one token per character and grows when byte fallback spells a character in two or more:
    /// words around the thread's kept buffer (4,096 tokens) and past it, with merges across the grown part.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2047)]
    [InlineData(2048)]
    [InlineData(4095)]
    [InlineData(5000)]
    public void LongWords_SpelledInBytes_KeepEveryToken(int accents)
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("tokenizer.json"), Json(""" "a": 0, "b": 1, "<unk>": 2, "<0xC3>": 3, "<0xA9>": 4, "ab": 5 """, """ "a b" """,
            """ "unk_token": "<unk>", "byte_fallback": true, """, """ "pre_tokenizer": {"type": "WhitespaceSplit"}, """));
        var t = BpeTokenizer.FromTokenizerJson(dir.File("tokenizer.json"), maxTokens: int.MaxValue);
        string word = "ab" + new string('é', accents) + "ab" + new string('x', 3) + "a";
        // "ab" merged on both sides of the bytes, each x an unknown of its own (not fused)
        int[] expected = [5, .. Enumerable.Range(0, accents).SelectMany(_ => new[] { 3, 4 }), 5, 2, 2, 2, 0];
        Assert.Equal(expected, t.Encode(word));
    }

    [Fact]
    public void UnknownCharacters_WithoutAnUnknownToken_AreDropped_AsTheLibraryDoes()
    {
        using var dir = new TempDir();
        var t = FromJson(dir, Json(""" "a": 0, "b": 1 """, ""));
        Assert.Equal([0, 1], t.Encode("aéb"));
        Assert.Empty(t.Encode("ééé"));
        Assert.Equal(-1, t.UnknownId);
    }

    [Fact]
    public void PrefixAndSuffix_MarkWordInnerAndWordFinalCharacters()
    {
        using var dir = new TempDir();
        var t = FromJson(dir, Json(""" "a": 0, "##b": 1, "##c</w>": 2, "ab": 3, "abc</w>": 4, "c</w>": 5, "##b</w>": 6 """, """ "a ##b", "ab ##c</w>" """,
            """ "continuing_subword_prefix": "##", "end_of_word_suffix": "</w>", """, """ "pre_tokenizer": {"type": "WhitespaceSplit"}, """));
        Assert.Equal("abc</w> c</w> ab ##b</w>", string.Join(' ', t.Tokenize("abc c abb")));
    }

    [Fact]
    public void IgnoreMerges_TakesAWholeWordFromTheVocabulary()
    {
        using var dir = new TempDir();
        string vocab = """ "a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4, "bc": 5 """;
        Assert.Equal("ab c", string.Join(' ', FromJson(dir, Json(vocab, """ "a b" """)).Tokenize("abc")));
        Assert.Equal("abc", string.Join(' ', FromJson(dir, Json(vocab, """ "a b" """, """ "ignore_merges": true, """)).Tokenize("abc")));
    }

    [Fact]
    public void MergesAsPairs_AndVersionLine_ReadAsStrings()
    {
        using var dir = new TempDir();
        string vocab = """ "a": 0, "b": 1, "ab": 2 """;
        Assert.Equal([2], FromJson(dir, Json(vocab, """ "#version: 0.2", "a b" """)).Encode("ab"));
        Assert.Equal([2], FromJson(dir, Json(vocab, """ ["a", "b"] """)).Encode("ab"));
    }

    public static TheoryData<string, string> MalformedFiles => new()
    {
        { Json(""" "a": 0 """, """ "a b" """), "'b' is not in the vocabulary" },
        { Json(""" "a": 0, "b": 1 """, """ "a b" """), "'ab' is not in the vocabulary" },
        { Json(""" "a": 0, "b": 1, "ab": 2 """, """ "a b c" """), "two tokens" },
        { Json(""" "a": 0, "b": 1, "ab": 2 """, """ 5 """), "neither" },
        { Json(""" "a": -1 """, ""), "no id" },
        { Json(""" "a": 16777216 """, ""), "no id" },
        { Json(""" "a": "0" """, ""), "no id" },
        { Json("", ""), "empty" },
        { Json(""" "\ud800": 0 """, ""), "lone surrogate" },
        { Json(""" "a": 0 """, "", """ "unk_token": "<unk>", """), "unk_token" },
        { Json(""" "a": 0 """, "", """ "fuse_unk": 1, """), "fuse_unk" },
        { Json(""" "a": 0, "b": 1, "ab": 2 """, """ "a b" """, """ "continuing_subword_prefix": "##", """), "prefix" },
        { """{"model": {"type": "BPE", "dropout": 0.1, "vocab": {"a": 0}, "merges": []}}""", "dropout" },
        { """{"model": {"type": "BPE", "vocab": [["a", 0]], "merges": []}}""", "model.vocab" },
        { """{"model": {"type": "BPE", "vocab": {"a": 0}}}""", "model.merges" },
        { Json(""" "a": 0 """, "", rest: """ "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": "yes"}, """), "add_prefix_space" },
        { Json(""" "a": 0 """, "", rest: """ "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\s+"}}, """), "'Split'" },
        { """{"model": {"type": "Unigram", "vocab": []}}""", "not BPE" },
    };

    [Theory]
    [MemberData(nameof(MalformedFiles))]
    public void MalformedTokenizerJson_IsInvalidData(string json, string message)
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("tokenizer.json"), json);
        var e = Assert.Throws<InvalidDataException>(() => BpeTokenizer.FromTokenizerJson(dir.File("tokenizer.json")));
        Assert.Contains(message, e.Message);
        File.WriteAllBytes(dir.File("bad-utf8.json"), [(byte)'{', 0xFF, (byte)'}']);
        Assert.Throws<InvalidDataException>(() => BpeTokenizer.FromTokenizerJson(dir.File("bad-utf8.json")));
    }

    [Fact]
    public async Task ManyThreads_SameIds_AsOneThread()
    {
        // the word cache is shared: concurrent first encodings of the same words must agree with a fresh tokenizer's
        using var dir = new TempDir();
        var words = TokenizerRulesTests.Vocab.Where(v => !v.StartsWith('[') && !v.StartsWith("##")).ToArray();
        var m = BpeFiles.Build(BpeFiles.ByteChars.Select(c => c.ToString()), words.Select(w => BpeFiles.ByteLevel(" " + w)));
        BpeFiles.TokenizerJson(dir.File("t.json"), m, new BpeFiles.Settings { PreTokenizer = BpeFiles.ByteLevelPre() });
        var rnd = new Random(4);
        var texts = Enumerable.Range(0, 400).Select(_ => string.Join(' ', Enumerable.Range(0, rnd.Next(1, 30)).Select(_ => words[rnd.Next(words.Length)] + (rnd.Next(5) == 0 ? "s" : "")))).ToArray();
        var want = texts.Select(BpeTokenizer.FromTokenizerJson(dir.File("t.json")).Encode).ToArray();
        var shared = BpeTokenizer.FromTokenizerJson(dir.File("t.json"));
        var got = await Task.WhenAll(texts.Select(x => Task.Run(() => shared.Encode(x))));
        Assert.Equal(want, got);
    }

    /// <summary>all-distilroberta-v1's layout: config.json (roberta), the checkpoint, a byte-level BPE tokenizer.json, modules.json.</summary>
    [Fact]
    public void ARobertaFolder_WithABpeTokenizer_EmbedsText_TextPathEqualsIdPath()
    {
        using var dir = new TempDir();
        var words = new[] { "the", "cat", "sat", "on", "mat", "a", "dog" };
        // ids 0–3 specials, then the 256 byte characters would exceed the tiny model's 50 ids: a vocabulary of just what the text needs
        var chars = words.SelectMany(w => BpeFiles.ByteLevel(" " + w)).Distinct().Select(c => c.ToString()).Append(BpeFiles.ByteLevel("."));
        var m = BpeFiles.Build(chars, words.Select(w => BpeFiles.ByteLevel(" " + w)));
        Assert.True(m.Vocab.Count < BertModelTests.Vocab, $"{m.Vocab.Count} tokens");
        BpeFiles.TokenizerJson(dir.File("tokenizer.json"), m, new BpeFiles.Settings { PreTokenizer = BpeFiles.ByteLevelPre() });
        var w = BertModelTests.Checkpoint(seed: 3);
        w["embeddings.position_embeddings.weight"] = (FastAttn.Tests.Reference.Random((BertModelTests.MaxPos + 2) * BertModelTests.H, 31, 0.5f), [BertModelTests.MaxPos + 2, BertModelTests.H]);
        w["embeddings.token_type_embeddings.weight"] = (FastAttn.Tests.Reference.Random(BertModelTests.H, 32, 0.5f), [1, BertModelTests.H]);
        BertModelTests.Write(dir, w, config: false);
        File.WriteAllText(dir.File("config.json"), BertModelTests.ConfigJson().Replace("\"bert\"", "\"roberta\"").Replace($"\"max_position_embeddings\": {BertModelTests.MaxPos}", $"\"max_position_embeddings\": {BertModelTests.MaxPos + 2}").Replace("\"type_vocab_size\": 2", "\"type_vocab_size\": 1"));
        using var embedder = SentenceEmbedder.Load(dir.Path);
        var tok = Assert.IsType<BpeTokenizer>(embedder.Tokenizer);
        var ids = tok.Encode(" the cat sat on the mat");
        Assert.Equal("<s> Ġthe Ġcat Ġsat Ġon Ġthe Ġmat </s>", string.Join(' ', ids.Select(tok.Token)));
        using var session = embedder.CreateSession();
        var byIds = new float[embedder.Dimension];
        session.EncodeIds(ids, [ids.Length], byIds);
        Assert.Equal(byIds, embedder.Encode(" the cat sat on the mat"));
        Assert.Equal(embedder.Dimension, embedder.Encode(string.Concat(Enumerable.Repeat(" the cat", 1000))).Length);   // cut to the model's positions
    }
}
