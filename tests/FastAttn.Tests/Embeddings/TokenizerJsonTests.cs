using System.Text;
using System.Text.Json;
using FastAttn.Embeddings;
using FastAttn.Tests.IO;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// Hugging Face's tokenizer.json of a BERT read as the vocabulary and settings: the same ids as vocab.txt with the
/// same settings, the normaliser's flags taken, and every malformed or non-BERT file an <see cref="InvalidDataException"/>.
/// </summary>
public class TokenizerJsonTests
{
    private static readonly string[] Texts =
    [
        "the cafe naive owner paid $ 3,000.50 for books!", "Hello WORLD here", "Café naïve", "中文 日本", "xy unaffable", "σς ¿que? ¡hola!", "", "  tab\there  ",
    ];

    /// <summary>A tokenizer.json as Hugging Face writes it for BERT (the parts FastAttn reads, and some it does not).</summary>
    internal static string Json(string[] vocab, string normalizer = """{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true}""",
        string modelType = "WordPiece", Func<int, int>? id = null)
    {
        var sb = new StringBuilder();
        sb.Append("""{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": """).Append(normalizer);
        sb.Append(""", "pre_tokenizer": {"type": "BertPreTokenizer"}, "post_processor": null, "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true}, """);
        sb.Append($$"""
            "model": {"type": "{{modelType}}", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": {
            """);
        for (int i = 0; i < vocab.Length; i++) sb.Append(i == 0 ? "" : ", ").Append(JsonSerializer.Serialize(vocab[i])).Append(": ").Append(id?.Invoke(i) ?? i);
        sb.Append("}}}");
        return sb.ToString();
    }

    private static BertWordPieceTokenizer FromJson(string json, BertTokenizerOptions? o = null) =>
        BertWordPieceTokenizer.FromTokenizerJson(Encoding.UTF8.GetBytes(json), o, "tokenizer.json");

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void SameIdsAsVocabTxt_WithTheNormalizersSettings(bool lower)
    {
        var fromJson = FromJson(Json(TokenizerRulesTests.Vocab, $$"""{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": {{(lower ? "true" : "false")}}}"""));
        var fromTxt = TokenizerRulesTests.Tokenizer(lower);
        Assert.Equal(lower, fromJson.Options.LowerCase);
        Assert.Equal(fromTxt.VocabularySize, fromJson.VocabularySize);
        foreach (var t in Texts) Assert.Equal(fromTxt.Encode(t), fromJson.Encode(t));
        // options given win over the file for casing
        Assert.Equal(!lower, FromJson(Json(TokenizerRulesTests.Vocab), new BertTokenizerOptions { LowerCase = !lower, StripAccents = !lower }).Options.LowerCase);
    }

    [Fact]
    public void IdsInAnyOrder_AndNoNormalizer_GiveTheVocabularyById()
    {
        // the ids listed backwards: order in the object does not matter, the ids do
        var v = TokenizerRulesTests.Vocab;
        var backwards = v.Reverse().ToArray();
        var t = FromJson(Json(backwards, normalizer: "null", id: i => v.Length - 1 - i));
        foreach (var s in Texts) Assert.Equal(TokenizerRulesTests.Tokenizer().Encode(s), t.Encode(s));
    }

    public static TheoryData<string, string> Bad() => new()
    {
        { "{", "not valid JSON" },
        { "[1]", "not a JSON object" },
        { """{"model": null}""", "no 'model'" },
        { Json(TokenizerRulesTests.Vocab, modelType: "BPE"), "not WordPiece" },
        { Json(TokenizerRulesTests.Vocab).Replace("\"continuing_subword_prefix\": \"##\"", "\"continuing_subword_prefix\": \"@@\""), "not ##" },
        { Json(TokenizerRulesTests.Vocab, id: i => i == 5 ? 6 : i), "is given to" },
        { Json(TokenizerRulesTests.Vocab, id: i => i == 5 ? 500 : i), "not one of" },
        { Json(TokenizerRulesTests.Vocab, id: i => i == 5 ? -1 : i), "not one of" },
        { Json(TokenizerRulesTests.Vocab).Replace("\"the\": 5", "\"the\": \"5\""), "not one of" },
        { Json(TokenizerRulesTests.Vocab).Replace("\"the\": 5", "\"th\\ne\": 5"), "line break" },
        { Json(TokenizerRulesTests.Vocab, normalizer: """{"type": "Sequence", "normalizers": []}"""), "not BertNormalizer" },
        { Json(TokenizerRulesTests.Vocab, normalizer: """{"type": "BertNormalizer", "lowercase": "yes"}"""), "not true, false or null" },
        { Json(TokenizerRulesTests.Vocab[5..]), "no [CLS]" },
        { Json(TokenizerRulesTests.Vocab).Replace("\"max_input_chars_per_word\": 100", "\"max_input_chars_per_word\": 0"), "max_input_chars_per_word" },
        { Json(TokenizerRulesTests.Vocab).Replace("\"max_input_chars_per_word\": 100", "\"max_input_chars_per_word\": \"100\""), "max_input_chars_per_word" },
        { Json([]), "empty" },
    };

    [Fact]
    public void MaxInputCharsPerWord_IsTakenFromTheFile_CountingCodePoints()
    {
        var vocab = TokenizerRulesTests.Vocab.Append("😀").Append("##😀").ToArray();
        string Pieces(BertWordPieceTokenizer t, string s) => string.Join(" ", t.Encode(s).Select(i => vocab[i]));
        var five = FromJson(Json(vocab).Replace("\"max_input_chars_per_word\": 100", "\"max_input_chars_per_word\": 5"));
        Assert.Equal("[CLS] hello [SEP]", Pieces(five, "hello"));
        Assert.Equal("[CLS] [UNK] [SEP]", Pieces(five, "helloo"));
        // characters are code points, as Hugging Face counts them: five emoji (ten UTF-16 units) are within the limit
        Assert.Equal("[CLS] 😀 ##😀 ##😀 ##😀 ##😀 [SEP]", Pieces(five, "😀😀😀😀😀"));
        Assert.Equal("[CLS] [UNK] [SEP]", Pieces(five, "😀😀😀😀😀😀"));
        var hundred = FromJson(Json(vocab));
        Assert.Equal(102, hundred.Encode(string.Concat(Enumerable.Repeat("😀", 100))).Length);
        Assert.Equal(3, hundred.Encode(string.Concat(Enumerable.Repeat("😀", 101))).Length);
    }

    [Theory]
    [MemberData(nameof(Bad))]
    public void MalformedOrNotBert_IsInvalidData(string json, string message)
    {
        var e = Assert.Throws<InvalidDataException>(() => FromJson(json));
        Assert.Contains(message, e.Message);
    }

    [Theory]
    [InlineData("[PAD]")]
    [InlineData("[MASK]")]
    [InlineData("[UNK]")]
    public void AVocabularyWithoutASpecialToken_IsInvalidData(string missing)
    {
        // found by fuzzing: the WordPiece library needs [PAD] and [MASK] too, and threw KeyNotFoundException without them
        var vocab = TokenizerRulesTests.Vocab.Where(t => t != missing).ToArray();
        Assert.Contains($"no {missing}", Assert.Throws<InvalidDataException>(() => FromJson(Json(vocab))).Message);
        var txt = new MemoryStream(Encoding.UTF8.GetBytes(string.Join('\n', vocab) + "\n"));
        Assert.Contains($"no {missing}", Assert.Throws<InvalidDataException>(() => BertWordPieceTokenizer.FromVocab(txt)).Message);
    }

    [Fact]
    public void VocabTxt_CarriageReturnInsideALine_IsInvalidData_AndAByteOrderMarkIsSkipped()
    {
        // found by fuzzing: the WordPiece library splits lines at a lone \r as well, so its ids ran past the vocabulary
        var v = TokenizerRulesTests.Vocab;
        var cr = new MemoryStream(Encoding.UTF8.GetBytes(string.Join('\n', v[..6]) + "\nx\ry\n" + string.Join('\n', v[6..]) + "\n"));
        Assert.Contains("line 7 holds a carriage return", Assert.Throws<InvalidDataException>(() => BertWordPieceTokenizer.FromVocab(cr)).Message);
        var crlf = new MemoryStream(Encoding.UTF8.GetBytes("\uFEFF" + string.Join("\r\n", v) + "\r\n"));
        var t = BertWordPieceTokenizer.FromVocab(crlf);
        foreach (var s in Texts) Assert.Equal(TokenizerRulesTests.Tokenizer().Encode(s), t.Encode(s));
    }

    [Fact]
    public void InvalidUtf8_IsInvalidData()
    {
        var bytes = Encoding.UTF8.GetBytes(Json(TokenizerRulesTests.Vocab));
        bytes[Array.IndexOf(bytes, (byte)'c', 300)] = 0xC3;   // a lead byte without its continuation, inside a token
        Assert.Contains("UTF-8", Assert.Throws<InvalidDataException>(() => BertWordPieceTokenizer.FromTokenizerJson(bytes, null, "t")).Message);
    }

    [Fact]
    public void AFolderWithTokenizerJsonAndNoVocabTxt_Loads()
    {
        using var dir = new TempDir();
        BertModelTests.Write(dir, BertModelTests.Checkpoint());
        File.WriteAllText(dir.File("tokenizer.json"), Json(TokenizerRulesTests.Vocab[..BertModelTests.Vocab]));
        using var e = SentenceEmbedder.Load(dir.Path);
        File.WriteAllText(dir.File("vocab.txt"), string.Join('\n', TokenizerRulesTests.Vocab[..BertModelTests.Vocab]) + "\n");
        using var withTxt = SentenceEmbedder.Load(dir.Path, dir.File("vocab.txt"));
        foreach (var t in Texts) Assert.Equal(withTxt.Encode(t), e.Encode(t));
        // neither file: the message names what is missing
        File.Delete(dir.File("vocab.txt"));
        File.Delete(dir.File("tokenizer.json"));
        Assert.Contains("tokenizer.json", Assert.Throws<FileNotFoundException>(() => SentenceEmbedder.Load(dir.Path)).Message);
    }
}
