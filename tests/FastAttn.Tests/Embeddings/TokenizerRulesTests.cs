using System.Globalization;
using System.Text;
using FastAttn.Embeddings;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// The WordPiece tokenizer against Hugging Face's BertTokenizer rules, written out plainly here (basic tokenization, then a
/// naive greedy longest-match WordPiece over a dictionary — not Microsoft.ML.Tokenizers), on hand-checked examples and
/// on thousands of random strings made of the characters where implementations differ.
/// </summary>
public class TokenizerRulesTests
{
    // a small uncased vocabulary with word pieces, punctuation, symbols and CJK characters
    internal static readonly string[] Vocab =
    [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cafe", "naive", "owner", "paid", "$", "3", ",", "000", ".", "50", "+", "<", ">",
        "b", "for", "中", "文", "books", "!", "hello", "world", "tab", "here", "new", "x", "##y", "xy", "un", "##aff", "##able", "'", "s", "?",
        "~", "`", "^", "|", "a", "##a", "-", "don", "t", "σ", "ς", "i", "¿", "¡", "que", "hola", "##s", "e", "##e", "=", "@", "#", "%", "&", "*",
        "(", ")", "_", "[", "]", "{", "}", "\\", "/", ":", ";", "\"", "z", "##z", "w", "v", "1", "2", "##1", "日", "本",
    ];

    internal static BertWordPieceTokenizer Tokenizer(bool? lower = null, int max = 512) =>
        BertWordPieceTokenizer.FromVocab(new MemoryStream(Encoding.UTF8.GetBytes(string.Join('\n', Vocab) + "\n")), new BertTokenizerOptions { LowerCase = lower, MaxTokens = max });

    // ---- Hugging Face's rules (its tokenizers library, which sentence-transformers runs), plainly ----
    // the library's character tables are Unicode 8.0's: these characters, assigned later or never, are ordinary letters to it
    private static readonly HashSet<int> NewerThanUnicode8 = [0x0378, 0x2E56, 0x0890, 0x1F972, 0x2B820];
    private static bool IsWhitespace(Rune r) => r.Value is '\t' or '\n' or '\r' || Rune.IsWhiteSpace(r);
    private static bool IsControl(Rune r) => r.Value is not ('\t' or '\n' or '\r') && !NewerThanUnicode8.Contains(r.Value) && Rune.GetUnicodeCategory(r)
        is UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.PrivateUse or UnicodeCategory.Surrogate;
    private static bool IsPunct(Rune r) => r.Value is >= 33 and <= 47 or >= 58 and <= 64 or >= 91 and <= 96 or >= 123 and <= 126
        || !NewerThanUnicode8.Contains(r.Value) && CharUnicodeInfo.GetUnicodeCategory(r.Value).ToString().EndsWith("Punctuation");
    private static bool IsCjk(int cp) => cp is >= 0x4E00 and <= 0x9FFF or >= 0x3400 and <= 0x4DBF or >= 0xF900 and <= 0xFAFF or >= 0x20000 and <= 0x2A6DF
        or >= 0x2B920 and <= 0x2CEAF;

    internal static List<string> ReferenceBasic(string text, bool lower)
    {
        var clean = new StringBuilder();
        foreach (var r in text.EnumerateRunes())
        {
            if (r.Value == 0 || r.Value == 0xFFFD || IsControl(r)) continue;
            if (IsWhitespace(r)) clean.Append(' ');
            else if (IsCjk(r.Value)) clean.Append(' ').Append(r.ToString()).Append(' ');
            else clean.Append(r.ToString());
        }
        string t = clean.ToString();
        if (lower)
        {
            // accents first (NFD, non-spacing marks dropped), then lower case, as the library's normaliser orders them
            var nfd = ICU4N.Text.Normalizer2.NFDInstance.Normalize(t);
            t = string.Concat(nfd.EnumerateRunes().Where(r => NewerThanUnicode8.Contains(r.Value) || Rune.GetUnicodeCategory(r) != UnicodeCategory.NonSpacingMark).Select(r => r.ToString()));
            t = t.ToLowerInvariant();
        }
        var output = new List<string>();
        foreach (var tok in t.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            var cur = new StringBuilder();
            foreach (var r in tok.EnumerateRunes())
            {
                if (IsPunct(r)) { if (cur.Length > 0) output.Add(cur.ToString()); cur.Clear(); output.Add(r.ToString()); }
                else cur.Append(r.ToString());
            }
            if (cur.Length > 0) output.Add(cur.ToString());
        }
        return output;
    }

    internal static List<string> ReferenceWordPiece(IEnumerable<string> words, string[] vocab)
    {
        var set = new HashSet<string>(vocab, StringComparer.Ordinal);
        var r = new List<string>();
        foreach (var w in words)
        {
            if (w.EnumerateRunes().Count() > 100) { r.Add("[UNK]"); continue; }
            var pieces = new List<string>();
            int start = 0;
            bool bad = false;
            while (start < w.Length)
            {
                int end = w.Length;
                string? cur = null;
                while (start < end)
                {
                    string sub = (start > 0 ? "##" : "") + w[start..end];
                    if (set.Contains(sub)) { cur = sub; break; }
                    end--;
                    if (end > start && char.IsLowSurrogate(w[end])) end--;   // never split a surrogate pair
                }
                if (cur == null) { bad = true; break; }
                pieces.Add(cur);
                start = end;
            }
            if (bad) r.Add("[UNK]"); else r.AddRange(pieces);
        }
        return r;
    }

    private static string Pieces(BertWordPieceTokenizer t, string text) => string.Join(" ", t.Encode(text).Select(i => Vocab[i]));

    [Theory]
    [InlineData("Hello, world!", "[CLS] hello , world ! [SEP]")]
    [InlineData("The café's naïve owner", "[CLS] the cafe ' s naive owner [SEP]")]             // accents stripped (also with InvariantGlobalization)
    [InlineData("paid $3,000.50 + <b>", "[CLS] paid $ 3 , 000 . 50 + < b > [SEP]")]            // ASCII symbols are punctuation tokens, not dropped
    [InlineData("tab\there\nnew", "[CLS] tab here new [SEP]")]                                  // tab and newline are spaces
    [InlineData("x\u200By\u0000z", "[CLS] xy ##z [SEP]")]                                       // format and control characters are deleted, not split at
    [InlineData("中文books", "[CLS] 中 文 books [SEP]")]                                          // CJK ideographs stand alone
    [InlineData("unaffable", "[CLS] un ##aff ##able [SEP]")]
    [InlineData("😀 x", "[CLS] [UNK] x [SEP]")]                                                 // an emoji is [UNK], not dropped
    [InlineData("~`^|", "[CLS] ~ ` ^ | [SEP]")]
    [InlineData("hello[SEP]world [MASK]", "[CLS] hello [SEP] world [MASK] [SEP]")]              // special tokens written in the text stay whole
    [InlineData("", "[CLS] [SEP]")]
    [InlineData("  \t\n ", "[CLS] [SEP]")]
    [InlineData("¿Qué? ¡Hola!", "[CLS] ¿ que ? ¡ hola ! [SEP]")]
    [InlineData("e\u0301", "[CLS] e [SEP]")]                                                    // decomposed accent: stripped
    [InlineData("İ x", "[CLS] i x [SEP]")]                                                      // accent stripped before lower-casing: İ → I → i
    [InlineData("x\u0378y x", "[CLS] [UNK] x [SEP]")]                                           // an unassigned character is kept (its word is [UNK]), not deleted
    [InlineData("x\u2E56y x", "[CLS] [UNK] x [SEP]")]                                           // punctuation of Unicode 14 is a letter to Unicode 8.0's tables
    [InlineData("x\u0890y x", "[CLS] [UNK] x [SEP]")]                                           // so is a format character of Unicode 14 (not deleted)
    [InlineData("\U0002B820 x", "[CLS] [UNK] x [SEP]")]                                         // the library's CJK list skips U+2B820–U+2B91F: not split out …
    [InlineData("x\U0002B820", "[CLS] [UNK] [SEP]")]                                            // … so it joins the word
    [InlineData("x\U0002B920", "[CLS] x [UNK] [SEP]")]                                          // U+2B920 is split out
    [InlineData("[C\u200BLS] x", "[CLS] [ [UNK] ] x [SEP]")]                                    // special tokens are found before cleaning: this is not [CLS]
    public void MatchesHuggingFaceOnHandCheckedExamples(string text, string expected)
        => Assert.Equal(expected, Pieces(Tokenizer(), text));

    [Fact]
    public void AgreesWithThePlainRules_OnRandomTroublesomeText()
    {
        var tok = Tokenizer();
        var set = Vocab.Select((v, i) => (v, i)).ToDictionary(p => p.v, p => p.i);
        // characters where tokenizers tend to differ: symbols, punctuation, spaces of every kind, controls, accents, CJK, emoji
        string[] atoms = ["a", "b", "x", "y", "z", "e", "E", "é", "e\u0301", "Ä", "ß", "Σ", "σ", " ", "\t", "\n", "\u00A0", "\u2003", "\u3000", "\u2028",
            "\u200B", "\u00AD", "\u0007", "\u0000", "\uFFFD", "\uE000", "$", "+", "<", ">", "~", "^", "|", "`", ",", ".", "!", "?", "'", "\"", "-", "—", "…",
            "«", "»", "¿", "中", "文", "日", "本", "한", "😀", "1", "2", "[", "]", "[SEP]", "[cls]", "hello", "the", "un", "aff", "able", "İ", "\u0378", "\u2E56",
            "\u0890", "\U0001F972", "\U0002B820", "\u0085", "\u000B"];
        var rnd = new Random(11);
        for (int n = 0; n < 3000; n++)
        {
            var sb = new StringBuilder();
            for (int k = rnd.Next(0, 12); k > 0; k--) sb.Append(atoms[rnd.Next(atoms.Length)]);
            string text = sb.ToString();
            // the special-token rule applies first: compare on text without specials, where the plain rules are complete
            if (text.Contains("[SEP]")) continue;
            var expected = ReferenceWordPiece(ReferenceBasic(text, lower: true), Vocab).Select(p => set.GetValueOrDefault(p, 1)).ToList();
            var got = tok.Encode(text);
            Assert.True(got.Skip(1).SkipLast(1).SequenceEqual(expected),
                $"'{string.Concat(text.Select(c => c < 32 || c > 126 ? $"\\u{(int)c:X4}" : c.ToString()))}': {string.Join(" ", got.Select(i => Vocab[i]))} vs [CLS] {string.Join(" ", expected.Select(i => Vocab[i]))} [SEP]");
        }
    }

    [Fact]
    public void TruncatesToMaxTokens_KeepingClsAndSep()
    {
        var tok = Tokenizer(max: 5);
        var ids = tok.Encode("hello world the cafe books", out bool truncated);
        Assert.True(truncated);
        Assert.Equal("[CLS] hello world the [SEP]", string.Join(" ", ids.Select(i => Vocab[i])));
        tok.Encode("hello", out truncated);
        Assert.False(truncated);
    }

    [Fact]
    public void CasingIsReadFromTheVocabulary_AndCanBeForced()
    {
        Assert.True(Tokenizer().Options.LowerCase);           // no entry changes when lower-cased (σ/ς included)
        Assert.Equal("[CLS] [UNK] [SEP]", Pieces(Tokenizer(lower: false), "Hello"));
        var cased = BertWordPieceTokenizer.FromVocab(new MemoryStream(Encoding.UTF8.GetBytes("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nHello\nhello\n")));
        Assert.False(cased.Options.LowerCase);
        Assert.Equal(5, cased.Encode("Hello")[1]);
        Assert.Throws<InvalidDataException>(() => BertWordPieceTokenizer.FromVocab(new MemoryStream(Encoding.UTF8.GetBytes("a\nb\n"))));   // no [CLS]
        Assert.Throws<InvalidDataException>(() => BertWordPieceTokenizer.FromVocab(new MemoryStream([0xC3, 0x28])));                    // not UTF-8
    }
}
