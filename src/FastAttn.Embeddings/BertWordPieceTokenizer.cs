using System.Globalization;
using System.Text;
using ICU4N;
using ICU4N.Globalization;
using ICU4N.Text;
using Microsoft.ML.Tokenizers;

namespace FastAttn.Embeddings;

/// <summary>Options of <see cref="BertWordPieceTokenizer"/> (Hugging Face's <c>BertTokenizer</c> settings).</summary>
public sealed record BertTokenizerOptions
{
    /// <summary>Lower-case (an uncased vocabulary); null = decided from the vocabulary (uncased when it holds no upper-case word).</summary>
    public bool? LowerCase { get; init; }
    /// <summary>Strip accents ("café" → "cafe"); null = follow <see cref="LowerCase"/>, as Hugging Face does.</summary>
    public bool? StripAccents { get; init; }
    /// <summary>Put every CJK ideograph in a token of its own (Hugging Face's <c>tokenize_chinese_chars</c>, on by default).</summary>
    public bool TokenizeChineseChars { get; init; } = true;
    /// <summary>Longest output, [CLS] and [SEP] included; longer texts are truncated (their first MaxTokens − 2 word pieces kept).</summary>
    public int MaxTokens { get; init; } = 512;
}

/// <summary>The special tokens' texts: BERT's <c>[CLS] [SEP] [UNK] [PAD] [MASK]</c>, or MPNet's <c>&lt;s&gt; &lt;/s&gt; [UNK] &lt;pad&gt; &lt;mask&gt;</c>.</summary>
internal sealed record SpecialTokenNames(string Cls, string Sep, string Unk, string Pad, string Mask)
{
    public static readonly SpecialTokenNames Bert = new("[CLS]", "[SEP]", "[UNK]", "[PAD]", "[MASK]");

    public IEnumerable<string> All => [Cls, Sep, Unk, Pad, Mask];

    /// <summary>
    /// From the vocabulary alone: BERT's, unless it holds <c>&lt;s&gt;</c> and <c>&lt;/s&gt;</c> (an MPNet vocabulary, which
    /// also keeps BERT's bracketed tokens as ordinary entries): then those frame the text, with MPNet's <c>[UNK]</c>.
    /// </summary>
    public static SpecialTokenNames For(IReadOnlyCollection<string> vocab) =>
        vocab.Contains("<s>") && vocab.Contains("</s>")
            ? new("<s>", "</s>", vocab.Contains("[UNK]") ? "[UNK]" : "<unk>", vocab.Contains("<pad>") ? "<pad>" : "[PAD]", vocab.Contains("<mask>") ? "<mask>" : "[MASK]")
            : Bert;

    /// <summary>
    /// The <c>cls_token</c>, <c>sep_token</c>, … of a Hugging Face <c>tokenizer_config.json</c> or <c>special_tokens_map.json</c>
    /// (a string, or an object with its <c>content</c>), over these.
    /// </summary>
    public SpecialTokenNames With(System.Text.Json.JsonElement r)
    {
        string? Get(string key) => r.ValueKind == System.Text.Json.JsonValueKind.Object && r.TryGetProperty(key, out var v)
            ? v.ValueKind == System.Text.Json.JsonValueKind.String ? v.GetString()
            : v.ValueKind == System.Text.Json.JsonValueKind.Object && v.TryGetProperty("content", out var c) && c.ValueKind == System.Text.Json.JsonValueKind.String ? c.GetString() : null
            : null;
        return new(Get("cls_token") ?? Cls, Get("sep_token") ?? Sep, Get("unk_token") ?? Unk, Get("pad_token") ?? Pad, Get("mask_token") ?? Mask);
    }
}

/// <summary>
/// BERT's WordPiece tokenizer as Hugging Face's tokenizers library runs it (<c>BertNormalizer</c>, <c>BertPreTokenizer</c>,
/// <c>WordPiece</c> — the "fast" tokenizer that transformers and sentence-transformers load by default): special tokens
/// written in the text kept whole; the rest cleaned (control and format characters removed, every white space a space), CJK
/// ideographs split out, for an uncased vocabulary accent-stripped (NFD, non-spacing marks removed) and lower-cased, split at
/// white space and punctuation — then WordPiece (greedy longest match, <c>##</c> continuations, a word over 100 characters
/// or with no match is [UNK]) by Microsoft.ML.Tokenizers' <c>BertTokenizer</c>, and [CLS] … [SEP].
/// <para>
/// <b>Why the pre-tokenization is FastAttn's own:</b> Microsoft.ML.Tokenizers 2.0.1's basic tokenization departs from
/// Hugging Face's rules: it drops symbols such as <c>$ + &lt; = &gt; ^ ` | ~</c> and emoji (Hugging Face keeps them as tokens or
/// [UNK]), it removes tab and newline instead of treating them as spaces ("tab\there" becomes one word), it splits at
/// zero-width and control characters that Hugging Face deletes, and with InvariantGlobalization (set by this repository,
/// and common in containers) its accent stripping silently does nothing because <c>string.Normalize</c> is then the
/// identity. So the rules above run here (NFD by ICU4N, a managed ICU that works in invariant mode) and the library does the
/// WordPiece step with its own basic tokenization off.
/// </para>
/// <para>
/// <b>Character tables:</b> the library classifies characters with Unicode 8.0's tables, and FastAttn does the same (ages
/// and categories from ICU4N): a character assigned after Unicode 8.0, or never, is an ordinary letter — kept, so its word
/// becomes [UNK] — rather than deleted, split off or stripped. Its CJK list starts Extension E at U+2B920. Lower-casing is
/// per character (no final-sigma rule; İ → i + U+0307), after accent stripping, and there is no NFC step. Python's slower
/// <c>BertTokenizer</c> differs from the library on exactly these points; FastAttn follows the library, which
/// <c>tests/FastAttn.Parity.Tests</c> checks id for id on the EWT corpus and on random text from every Unicode plane.
/// </para>
/// <para>
/// Immutable and safe to use from any number of threads. Allocates per call (the strings of the pre-tokenization and
/// the library's id list); the network that follows allocates nothing.
/// </para>
/// </summary>
public sealed class BertWordPieceTokenizer : TextTokenizer
{
    private readonly BertTokenizer _wordPiece;
    private readonly HashSet<string> _special;
    private readonly System.Buffers.SearchValues<char> _specialStarts;
    private readonly SpecialTokenNames _names;
    private static readonly Normalizer2 Nfd = Normalizer2.NFDInstance;

    /// <summary>The settings in force (lower-casing and accent stripping resolved).</summary>
    public BertTokenizerOptions Options { get; }

    private BertWordPieceTokenizer(BertTokenizer wordPiece, string[] vocab, BertTokenizerOptions options, int maxWordChars, SpecialTokenNames names)
        : this(wordPiece, vocab, options, maxWordChars, names, Index(vocab)) { }

    private static Dictionary<string, int> Index(string[] vocab)
    {
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < vocab.Length; i++) index.TryAdd(vocab[i], i);
        return index;
    }

    private static int Id(Dictionary<string, int> index, string t) => index.TryGetValue(t, out int i) ? i : throw new InvalidDataException($"the vocabulary has no {t} token.");

    private static (TemplatePiece[], TemplatePiece[]) Templates(Dictionary<string, int> index, SpecialTokenNames names) =>
        // MPNet (and RoBERTa) join a pair as <s> A </s></s> B </s>, all of token type 0
        ClsSepTemplates(Id(index, names.Cls), Id(index, names.Sep), doubleSeparator: names.Cls == "<s>");

    private BertWordPieceTokenizer(BertTokenizer wordPiece, string[] vocab, BertTokenizerOptions options, int maxWordChars, SpecialTokenNames names, Dictionary<string, int> index)
        : base(Templates(index, names).Item1, Templates(index, names).Item2, Id(index, names.Unk), vocab.Length, options.MaxTokens)
    {
        _wordPiece = wordPiece;
        _maxWordChars = maxWordChars;
        _names = names;
        _special = new HashSet<string>(names.All, StringComparer.Ordinal);
        _specialStarts = System.Buffers.SearchValues.Create(string.Concat(_special.Select(t => t[0]).Distinct()));
        // an uncased vocabulary has no entry that lower-casing would change (upper-case letters without a lower case, like ℝ, may remain)
        var bracketed = new HashSet<string>(SpecialTokenNames.Bert.All, StringComparer.Ordinal);
        bool lower = options.LowerCase ?? !vocab.Any(v => !_special.Contains(v) && !bracketed.Contains(v) && !v.StartsWith("[unused", StringComparison.Ordinal) && v.ToLowerInvariant() != v);
        Options = options with { LowerCase = lower, StripAccents = options.StripAccents ?? lower };
    }

    /// <summary>Loads a vocabulary file (<c>vocab.txt</c>: one token per line, ids in line order).</summary>
    /// <exception cref="InvalidDataException">The file is empty, not UTF-8, or lacks [CLS], [SEP], [UNK], [PAD] or [MASK].</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    /// <exception cref="ArgumentOutOfRangeException">MaxTokens is below 3.</exception>
    public static BertWordPieceTokenizer FromVocabFile(string path, BertTokenizerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Directory.Exists(path)) throw new IOException($"'{path}' is a directory, not a vocabulary file.");
        options ??= new BertTokenizerOptions();
        // Hugging Face's tokenizer_config.json beside the vocabulary states the casing and the special tokens (as does
        // special_tokens_map.json); options given here win
        string dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        string cfg = Path.Combine(dir, "tokenizer_config.json");
        List<System.Text.Json.JsonElement> specialSources = [];
        foreach (var file in new[] { Path.Combine(dir, "special_tokens_map.json"), cfg })
        {
            if (!File.Exists(file)) continue;
            try
            {
                using var doc = System.Text.Json.JsonDocument.Parse(FastAttn.IO.BoundedFile.ReadAllText(file, BertConfig.MaxJsonBytes, "a tokenizer configuration file"), new System.Text.Json.JsonDocumentOptions { MaxDepth = 16 });
                specialSources.Add(doc.RootElement.Clone());
            }
            catch (System.Text.Json.JsonException e) { throw new InvalidDataException($"'{file}' is not valid JSON: {e.Message}", e); }
        }
        if (File.Exists(cfg))
        {
            try
            {
                using var doc = System.Text.Json.JsonDocument.Parse(FastAttn.IO.BoundedFile.ReadAllText(cfg, BertConfig.MaxJsonBytes, "a tokenizer_config.json"));
                var r = doc.RootElement;
                bool? Flag(string name) => r.ValueKind == System.Text.Json.JsonValueKind.Object && r.TryGetProperty(name, out var v)
                    && v.ValueKind is System.Text.Json.JsonValueKind.True or System.Text.Json.JsonValueKind.False ? v.GetBoolean() : null;
                options = options with
                {
                    LowerCase = options.LowerCase ?? Flag("do_lower_case"),
                    StripAccents = options.StripAccents ?? Flag("strip_accents"),
                    TokenizeChineseChars = Flag("tokenize_chinese_chars") ?? options.TokenizeChineseChars,
                };
            }
            catch (System.Text.Json.JsonException e) { throw new InvalidDataException($"'{cfg}' is not valid JSON: {e.Message}", e); }
        }
        using var fs = File.OpenRead(path);
        try { return FromVocab(fs, options, path, specialSources); }
        catch (InvalidOperationException e) { throw new InvalidDataException($"'{dir}': a tokenizer configuration string holds a lone surrogate ({e.Message})", e); }
    }

    /// <summary>Longest word WordPiece splits, in code points (Hugging Face's <c>max_input_chars_per_word</c>, 100 unless a tokenizer.json says otherwise); longer ones are [UNK].</summary>
    private readonly int _maxWordChars;

    /// <summary>
    /// Loads Hugging Face's <c>tokenizer.json</c> of a BERT (a WordPiece model): the vocabulary from <c>model.vocab</c> and
    /// the casing, accent and CJK settings from its <c>BertNormalizer</c> (options given here win for casing and accents).
    /// For folders that carry no <c>vocab.txt</c>.
    /// </summary>
    /// <exception cref="InvalidDataException">The file is not valid UTF-8 JSON, not a WordPiece tokenizer with the
    /// <c>##</c> prefix, its ids are not 0…n−1 each once, a token holds a line break, its normalizer is not BERT's, or it
    /// lacks [CLS], [SEP], [UNK], [PAD] or [MASK].</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    /// <exception cref="ArgumentOutOfRangeException">MaxTokens is below 3.</exception>
    public static BertWordPieceTokenizer FromTokenizerJson(string path, BertTokenizerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        return FromTokenizerJson(TokenizerJson.ReadFile(path), options, path);
    }

    /// <summary>As <see cref="FromTokenizerJson(string, BertTokenizerOptions?)"/>, from the file's bytes.</summary>
    internal static BertWordPieceTokenizer FromTokenizerJson(byte[] json, BertTokenizerOptions? options, string name)
    {
        options ??= new BertTokenizerOptions();
        InvalidDataException Bad(string what) => new($"'{name}': {what}.");
        if (json.Length > TokenizerJson.MaxBytes) throw Bad($"{json.Length} bytes; a tokenizer.json is read up to {TokenizerJson.MaxBytes} bytes");
        if (!System.Text.Unicode.Utf8.IsValid(json)) throw Bad("not valid UTF-8");
        System.Text.Json.JsonDocument doc;
        try { doc = System.Text.Json.JsonDocument.Parse(json, new System.Text.Json.JsonDocumentOptions { MaxDepth = 64, AllowTrailingCommas = true }); }
        catch (System.Text.Json.JsonException e) { throw new InvalidDataException($"'{name}': not valid JSON: {e.Message}", e); }
        string[] vocab;
        int maxWordChars = 100;
        SpecialTokenNames names;
        using (doc)
        try
        {
            var root = doc.RootElement;
            if (root.ValueKind != System.Text.Json.JsonValueKind.Object) throw Bad("not a JSON object");
            static System.Text.Json.JsonElement? Member(System.Text.Json.JsonElement o, string key) =>
                o.ValueKind == System.Text.Json.JsonValueKind.Object && o.TryGetProperty(key, out var v) && v.ValueKind != System.Text.Json.JsonValueKind.Null ? v : null;
            static string? Str(System.Text.Json.JsonElement o, string key) =>
                Member(o, key) is { ValueKind: System.Text.Json.JsonValueKind.String } v ? v.GetString() : null;
            if (Member(root, "model") is not { ValueKind: System.Text.Json.JsonValueKind.Object } model) throw Bad("no 'model' object");
            if (Str(model, "type") is { } type && type != "WordPiece") throw Bad($"model type '{type}' is not WordPiece (BERT's)");
            if (Str(model, "continuing_subword_prefix") is { } prefix && prefix != "##") throw Bad($"continuing_subword_prefix '{prefix}' is not ##");
            if (Member(model, "vocab") is not { ValueKind: System.Text.Json.JsonValueKind.Object } map) throw Bad("model.vocab is not an object of token → id");
            if (Member(model, "max_input_chars_per_word") is { } mx)
                maxWordChars = mx.ValueKind == System.Text.Json.JsonValueKind.Number && mx.TryGetInt32(out int m) && m is >= 1 and <= 1 << 20 ? m
                    : throw Bad($"model.max_input_chars_per_word {Shorten(mx.GetRawText())} is not a count from 1 to {1 << 20}");
            int count = 0;
            foreach (var _ in map.EnumerateObject()) count++;
            if (count == 0) throw Bad("the vocabulary is empty");
            vocab = new string[count];
            foreach (var e in map.EnumerateObject())
            {
                if (e.Value.ValueKind != System.Text.Json.JsonValueKind.Number || !e.Value.TryGetInt32(out int id) || (uint)id >= (uint)count)
                    throw Bad($"token '{Shorten(e.Name)}' has id {Shorten(e.Value.GetRawText())}, not one of 0…{count - 1}");
                if (vocab[id] != null) throw Bad($"id {id} is given to '{Shorten(vocab[id])}' and '{Shorten(e.Name)}'");
                if (e.Name.Length == 0 || e.Name.AsSpan().IndexOfAny('\n', '\r') >= 0) throw Bad($"token {id} is empty or holds a line break");
                vocab[id] = e.Name;
            }
            // the special tokens: the model's unk_token, and what the post-processor frames a text with
            names = SpecialTokenNames.For(vocab);
            if (Str(model, "unk_token") is { Length: > 0 } unk) names = names with { Unk = unk };
            if (Member(root, "post_processor") is { ValueKind: System.Text.Json.JsonValueKind.Object } post)
            {
                // BertProcessing / RobertaProcessing: "cls": [token, id], "sep": [token, id]
                static string? Pair(System.Text.Json.JsonElement o, string key) => Member(o, key) is { ValueKind: System.Text.Json.JsonValueKind.Array } a
                    && a.GetArrayLength() >= 1 && a[0].ValueKind == System.Text.Json.JsonValueKind.String ? a[0].GetString() : null;
                // TemplateProcessing: the first and last SpecialToken of "single"
                var template = Member(post, "single") is { ValueKind: System.Text.Json.JsonValueKind.Array } single
                    ? single.EnumerateArray().Select(e => Member(e, "SpecialToken") is { } st ? Str(st, "id") : null).Where(t => t != null).ToList() : [];
                string? cls = Pair(post, "cls") ?? (template.Count >= 2 ? template[0] : null), sep = Pair(post, "sep") ?? (template.Count >= 2 ? template[^1] : null);
                if (cls is { Length: > 0 }) names = names with { Cls = cls };
                if (sep is { Length: > 0 }) names = names with { Sep = sep };
            }
            if (Member(root, "normalizer") is { } norm)
            {
                if (Str(norm, "type") != "BertNormalizer") throw Bad($"normalizer '{Str(norm, "type") ?? norm.ValueKind.ToString()}' is not BertNormalizer (FastAttn applies BERT's rules)");
                bool? Flag(string key) => Member(norm, key) is { } v ? v.ValueKind switch
                {
                    System.Text.Json.JsonValueKind.True => true,
                    System.Text.Json.JsonValueKind.False => false,
                    _ => throw Bad($"normalizer.{key} is not true, false or null"),
                } : null;
                options = options with
                {
                    LowerCase = options.LowerCase ?? Flag("lowercase"),
                    StripAccents = options.StripAccents ?? Flag("strip_accents"),
                    TokenizeChineseChars = Flag("handle_chinese_chars") ?? options.TokenizeChineseChars,
                };
            }
        }
        catch (InvalidOperationException e)
        {
            // System.Text.Json throws this when a string read escapes half a surrogate pair ("\ud800")
            throw new InvalidDataException($"'{name}': a string holds a lone surrogate ({e.Message})", e);
        }
        if (options.MaxTokens < 3) throw new ArgumentOutOfRangeException(nameof(options), options.MaxTokens, "MaxTokens must be at least 3 ([CLS], one piece, [SEP]).");
        return FromLines([.. vocab], options, name, maxWordChars, names);
    }

    private static string Shorten(string s) => s.Length <= 40 ? s : s[..40] + "…";

    /// <summary>Loads a vocabulary from a stream (read to its end, at most 64 MiB).</summary>
    /// <exception cref="InvalidDataException">The vocabulary is empty, longer than 64 MiB, not UTF-8, or lacks [CLS], [SEP], [UNK], [PAD] or [MASK].</exception>
    /// <exception cref="ArgumentOutOfRangeException">MaxTokens is below 3.</exception>
    public static BertWordPieceTokenizer FromVocab(Stream vocab, BertTokenizerOptions? options = null, string name = "<stream>")
        => FromVocab(vocab, options, name, []);

    private static BertWordPieceTokenizer FromVocab(Stream vocab, BertTokenizerOptions? options, string name, List<System.Text.Json.JsonElement> specialSources)
    {
        ArgumentNullException.ThrowIfNull(vocab);
        options ??= new BertTokenizerOptions();
        if (options.MaxTokens < 3) throw new ArgumentOutOfRangeException(nameof(options), options.MaxTokens, "MaxTokens must be at least 3 ([CLS], one piece, [SEP]).");
        // a stream or file that never ends (a device, a pipe) stops at the limit
        var bytes = FastAttn.IO.BoundedFile.ReadAllBytes(vocab, name, TokenizerJson.MaxBytes, "a vocabulary");
        string text;
        try { text = new UTF8Encoding(false, true).GetString(bytes); }
        catch (DecoderFallbackException) { throw new InvalidDataException($"vocabulary '{name}' is not valid UTF-8."); }
        if (text.StartsWith('\uFEFF')) text = text[1..];                      // a byte-order mark some editors write
        var lines = text.Split('\n').Select(l => l.TrimEnd('\r')).ToList();
        if (lines.Count > 0 && lines[^1].Length == 0) lines.RemoveAt(lines.Count - 1);
        var names = SpecialTokenNames.For(lines);
        foreach (var src in specialSources) names = names.With(src);
        return FromLines(lines, options, name, names: names);
    }

    /// <summary>A tokenizer over the vocabulary <paramref name="lines"/> (id = index), checked; MaxTokens checked by the caller.</summary>
    private static BertWordPieceTokenizer FromLines(List<string> lines, BertTokenizerOptions options, string name, int maxWordChars = 100, SpecialTokenNames? names = null)
    {
        names ??= SpecialTokenNames.For(lines);
        if (lines.Count == 0) throw new InvalidDataException($"vocabulary '{name}' is empty.");
        // a carriage return inside a line would be a line break to the WordPiece library: its ids would no longer be the line numbers
        int cr = lines.FindIndex(l => l.Contains('\r'));
        if (cr >= 0) throw new InvalidDataException($"vocabulary '{name}': line {cr + 1} holds a carriage return inside it.");
        // Microsoft.ML.Tokenizers' BertTokenizer needs the padding and mask tokens as well (every BERT vocabulary has all five)
        foreach (var required in names.All)
            if (string.IsNullOrEmpty(required) || !lines.Contains(required)) throw new InvalidDataException($"vocabulary '{name}' has no {required} token.");
        BertTokenizer wp;
        try
        {
            wp = BertTokenizer.Create(new MemoryStream(Encoding.UTF8.GetBytes(string.Join('\n', lines) + "\n")), new BertOptions
        {
            LowerCaseBeforeTokenization = false, ApplyBasicTokenization = false, SplitOnSpecialTokens = false,
            IndividuallyTokenizeCjk = false, RemoveNonSpacingMarks = false, MaxInputCharsPerWord = 2 * maxWordChars,
            ClassificationToken = names.Cls, SeparatorToken = names.Sep, UnknownToken = names.Unk, PaddingToken = names.Pad, MaskingToken = names.Mask,
        });
        }
        catch (Exception e) when (e is ArgumentException or KeyNotFoundException or InvalidOperationException)
        {
            throw new InvalidDataException($"vocabulary '{name}' is not a WordPiece vocabulary: {e.Message}", e);
        }
        return new BertWordPieceTokenizer(wp, [.. lines], options, maxWordChars, names);
    }

    /// <summary>The word-piece ids of a text, without [CLS] and [SEP] and not truncated.</summary>
    private protected override IReadOnlyList<int> Pieces(string text)
    {
        var words = Words(text);
        // a word over max_input_chars_per_word characters is [UNK]; Hugging Face counts code points, the library UTF-16 units (it is given
        // twice the limit, which a word within the limit never reaches, and the longer words are replaced by [UNK] here)
        for (int i = 0; i < words.Count; i++)
            if (words[i].Length > _maxWordChars && words[i].EnumerateRunes().Count() > _maxWordChars) words[i] = _names.Unk;
        return words.Count == 0 ? [] : _wordPiece.EncodeToIds(string.Join(' ', words), addSpecialTokens: false, considerPreTokenization: true, considerNormalization: false);
    }

    /// <summary>The token (word piece) of id <paramref name="id"/>, for display.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The id is outside the vocabulary.</exception>
    public override string Token(int id)
    {
        if ((uint)id >= (uint)VocabularySize) throw new ArgumentOutOfRangeException(nameof(id), id, $"ids are 0..{VocabularySize - 1}.");
        return _wordPiece.Decode([id]) ?? "";
    }

    /// <summary>Hugging Face's basic tokenization of <paramref name="text"/>: the words WordPiece then splits.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="text"/> is null.</exception>
    public IReadOnlyList<string> PreTokenize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return Words(text);
    }

    private List<string> Words(string text)
    {
        var words = new List<string>();
        var sb = new StringBuilder();
        // special tokens written in the text stay whole; like Hugging Face's added tokens they are found in the raw text,
        // before any cleaning (so "[C\u200BLS]" is not [CLS]), and the text between them is normalised on its own
        int start = 0;
        for (int i = text.AsSpan().IndexOfAny(_specialStarts); i >= 0; i = NextSpecialStart(text, i + 1))
        {
            string? special = null;
            foreach (var sp in _special)
                if (string.CompareOrdinal(text, i, sp, 0, sp.Length) == 0) { special = sp; break; }
            if (special == null) continue;
            Basic(text.AsSpan(start, i - start), sb, words);
            words.Add(special);
            start = i + special.Length;
            i = start - 1;
        }
        Basic(text.AsSpan(start), sb, words);
        return words;
    }

    private int NextSpecialStart(string text, int from)
    {
        if (from >= text.Length) return -1;
        int k = text.AsSpan(from).IndexOfAny(_specialStarts);
        return k < 0 ? -1 : from + k;
    }

    /// <summary>
    /// Hugging Face's <c>BertNormalizer</c> and <c>BertPreTokenizer</c> on a text without special tokens, in their order: clean
    /// (drop NUL, U+FFFD and control, format, private-use characters; every white space a space), space out CJK ideographs,
    /// strip accents (NFD, then drop non-spacing marks), lower-case, split at white space and punctuation.
    /// </summary>
    private void Basic(ReadOnlySpan<char> text, StringBuilder sb, List<string> words)
    {
        if (text.IsEmpty) return;
        sb.Clear();
        bool ascii = true;
        foreach (var r in text.EnumerateRunes())
        {
            int cp = r.Value;
            if (cp == 0 || cp == 0xFFFD) continue;
            if (cp is '\t' or '\n' or '\r') { sb.Append(' '); continue; }
            if (IsOther(cp)) continue;
            if (Rune.IsWhiteSpace(r)) { sb.Append(' '); continue; }
            if (cp > 127) ascii = false;
            if (Options.TokenizeChineseChars && IsCjk(cp)) { sb.Append(' '); Append(sb, r); sb.Append(' '); }
            else if (cp < 128) sb.Append((char)cp);
            else Append(sb, r);
        }
        string clean = sb.ToString();
        if (!ascii && Options.StripAccents == true)
        {
            sb.Clear();
            foreach (var r in Nfd.Normalize(clean).EnumerateRunes())
                if (Category(r.Value) != UUnicodeCategory.NonSpacingMark) Append(sb, r);
            clean = sb.ToString();
        }
        if (Options.LowerCase == true)
        {
            if (ascii) clean = clean.ToLowerInvariant();
            else
            {
                // per character, with the full mapping of U+0130 (İ → i + combining dot above) that .NET's invariant casing leaves out
                sb.Clear();
                foreach (var r in clean.EnumerateRunes())
                    if (r.Value == 0x130) sb.Append("i\u0307");
                    else Append(sb, Rune.ToLowerInvariant(r));
                clean = sb.ToString();
            }
        }
        foreach (var w in clean.Split(' ', StringSplitOptions.RemoveEmptyEntries)) SplitPunctuation(w, words);
    }

    /// <summary>Appends a character without making a string of it.</summary>
    private static void Append(StringBuilder sb, Rune r)
    {
        if (r.IsBmp) { sb.Append((char)r.Value); return; }
        Span<char> two = stackalloc char[2];
        sb.Append(two[..r.EncodeToUtf16(two)]);
    }

    private static void SplitPunctuation(string w, List<string> into)
    {
        int start = 0;
        for (int i = 0; i < w.Length;)
        {
            var r = Rune.GetRuneAt(w, i);
            int len = r.Utf16SequenceLength;
            if (IsPunctuation(r))
            {
                if (i > start) into.Add(w[start..i]);
                into.Add(w.Substring(i, len));
                start = i + len;
            }
            i += len;
        }
        if (start < w.Length) into.Add(w[start..]);
    }

    /// <summary>
    /// A character's general category as Hugging Face's tokenizers library sees it. Its tables are Unicode 8.0's: a character
    /// assigned later is unassigned to it — not deleted as a control character, not punctuation, not an accent, so a word
    /// holding one becomes [UNK] — and two Mongolian letters were made marks only in Unicode 9.0. Null = unassigned.
    /// </summary>
    internal static UUnicodeCategory? Category(int cp) =>
        cp < 0x10000 ? (BmpCategories[cp] is var b && b == Unassigned ? null : (UUnicodeCategory)b) : ComputeCategory(cp);

    private const byte Unassigned = byte.MaxValue;

    /// <summary><see cref="Category"/> of every BMP code point, computed once (64 KB): the per-character path reads a table, not ICU's tries.</summary>
    private static readonly byte[] BmpCategories = BuildBmpCategories();

    private static byte[] BuildBmpCategories()
    {
        var t = new byte[0x10000];
        for (int cp = 0; cp < t.Length; cp++) t[cp] = ComputeCategory(cp) is { } c ? (byte)c : Unassigned;
        return t;
    }

    private static UUnicodeCategory? ComputeCategory(int cp)
    {
        if (cp < 128) return UChar.GetUnicodeCategory(cp);
        var age = UChar.GetAge(cp);
        if (age.Major is 0 or > 8) return null;
        if (cp is 0x1885 or 0x1886) return UUnicodeCategory.OtherLetter;
        return UChar.GetUnicodeCategory(cp);
    }

    /// <summary>Hugging Face's punctuation: every ASCII non-alphanumeric printable character, and the P* categories (of Unicode 8.0).</summary>
    internal static bool IsPunctuation(Rune r)
    {
        int cp = r.Value;
        if (cp < 128) return cp is >= 33 and <= 47 or >= 58 and <= 64 or >= 91 and <= 96 or >= 123 and <= 126;
        return Category(cp) is UUnicodeCategory.ConnectorPunctuation or UUnicodeCategory.DashPunctuation or UUnicodeCategory.OpenPunctuation
            or UUnicodeCategory.ClosePunctuation or UUnicodeCategory.InitialQuotePunctuation or UUnicodeCategory.FinalPunctuation or UUnicodeCategory.OtherPunctuation;
    }

    /// <summary>Characters the cleaning deletes: control, format, surrogate and private-use (of Unicode 8.0); unassigned ones are kept.</summary>
    private static bool IsOther(int cp)
    {
        if (cp < 128) return cp < 32 || cp == 127;
        return Category(cp) is UUnicodeCategory.Control or UUnicodeCategory.Format or UUnicodeCategory.Surrogate or UUnicodeCategory.PrivateUse;
    }

    /// <summary>
    /// The CJK ideograph ranges Hugging Face's tokenizers library splits out (not Hangul, Hiragana or Katakana). Its list starts
    /// the Extension E range at U+2B920 (Python's BertTokenizer: U+2B820); the library is what sentence-transformers runs.
    /// </summary>
    internal static bool IsCjk(int cp) => cp is >= 0x4E00 and <= 0x9FFF or >= 0x3400 and <= 0x4DBF or >= 0x20000 and <= 0x2A6DF
        or >= 0x2A700 and <= 0x2B73F or >= 0x2B740 and <= 0x2B81F or >= 0x2B920 and <= 0x2CEAF or >= 0xF900 and <= 0xFAFF or >= 0x2F800 and <= 0x2FA1F;
}
