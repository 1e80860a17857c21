namespace FastAttn.Embeddings;

/// <summary>
/// A text → token-id tokenizer of a Hugging Face model: BERT's WordPiece (<see cref="BertWordPieceTokenizer"/>) or a
/// SentencePiece Unigram model (<see cref="UnigramTokenizer"/>: XLM-RoBERTa, multilingual-e5, the paraphrase-multilingual
/// models). Both frame a text by the post-processor's template (<c>[CLS] A [SEP]</c>, <c>&lt;s&gt; A &lt;/s&gt;</c>, …) and cut
/// it to <see cref="MaxTokens"/> as Hugging Face's fast tokenizers do. Immutable and safe to use from any number of threads.
/// </summary>
public abstract class TextTokenizer
{
    /// <summary>One element of a framing template: a special token's id, or (<see cref="Id"/> −1 / −2) the first / second text.</summary>
    internal readonly record struct TemplatePiece(int Id, int TypeId)
    {
        public bool IsText => Id < 0;
    }

    private readonly TemplatePiece[] _single;
    private readonly TemplatePiece[] _pair;
    private readonly int _singleSpecials, _pairSpecials;

    /// <summary>Id of the token a text starts with (BERT's [CLS], <c>&lt;s&gt;</c>); the first special token of the framing.</summary>
    public int ClsId { get; }
    /// <summary>Id of the token a text ends with (BERT's [SEP], <c>&lt;/s&gt;</c>); the last special token of the framing.</summary>
    public int SepId { get; }
    /// <summary>Id of the unknown token.</summary>
    public int UnknownId { get; }
    /// <summary>Entries in the vocabulary (the largest id + 1).</summary>
    public int VocabularySize { get; }
    /// <summary>Longest output, framing tokens included; longer texts are cut.</summary>
    public int MaxTokens { get; }

    /// <summary>BERT's framing (<c>[CLS] A [SEP]</c>, pairs <c>[CLS] A [SEP] B [SEP]</c> with token type 1 on B), or with
    /// <paramref name="doubleSeparator"/> RoBERTa's and MPNet's (<c>&lt;s&gt; A &lt;/s&gt;&lt;/s&gt; B &lt;/s&gt;</c>, all type 0).</summary>
    internal static (TemplatePiece[] Single, TemplatePiece[] Pair) ClsSepTemplates(int cls, int sep, bool doubleSeparator) =>
        ([new(cls, 0), new(-1, 0), new(sep, 0)],
         doubleSeparator ? [new(cls, 0), new(-1, 0), new(sep, 0), new(sep, 0), new(-2, 0), new(sep, 0)]
                         : [new(cls, 0), new(-1, 0), new(sep, 0), new(-2, 1), new(sep, 1)]);

    private protected TextTokenizer(TemplatePiece[] single, TemplatePiece[] pair, int unknownId, int vocabularySize, int maxTokens)
    {
        _single = single;
        _pair = pair;
        _singleSpecials = single.Count(p => !p.IsText);
        _pairSpecials = pair.Count(p => !p.IsText);
        if (single.Count(p => p.Id == -1) != 1 || single.Any(p => p.Id == -2) || pair.Count(p => p.Id == -1) != 1 || pair.Count(p => p.Id == -2) != 1)
            throw new InvalidDataException("the framing template must hold the text once (a pair's: each text once).");
        var specials = single.Where(p => !p.IsText).ToList();
        ClsId = specials.Count > 0 ? specials[0].Id : -1;
        SepId = specials.Count > 0 ? specials[^1].Id : -1;
        UnknownId = unknownId;
        VocabularySize = vocabularySize;
        if (maxTokens < _singleSpecials + 1 || maxTokens < _pairSpecials + 1)
            throw new ArgumentOutOfRangeException(nameof(maxTokens), maxTokens, $"MaxTokens must leave room for the framing tokens ({Math.Max(_singleSpecials, _pairSpecials)}) and one more.");
        MaxTokens = maxTokens;
    }

    /// <summary>The ids of a text, without framing and not cut.</summary>
    private protected abstract IReadOnlyList<int> Pieces(string text);

    /// <summary>The token of id <paramref name="id"/>, for display.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The id is outside the vocabulary.</exception>
    public abstract string Token(int id);

    /// <summary>The ids of <paramref name="text"/>, framed (e.g. [CLS] … [SEP]) and cut to <see cref="MaxTokens"/>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="text"/> is null.</exception>
    public int[] Encode(string text) => Encode(text, out _);

    /// <summary>As <see cref="Encode(string)"/>; <paramref name="truncated"/> tells whether tokens were dropped.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="text"/> is null.</exception>
    public int[] Encode(string text, out bool truncated)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = Pieces(text);
        int room = MaxTokens - _singleSpecials;
        truncated = ids.Count > room;
        int n = Math.Min(ids.Count, room);
        var r = new int[n + _singleSpecials];
        int k = 0;
        foreach (var p in _single)
            if (p.IsText) for (int i = 0; i < n; i++) r[k++] = ids[i];
            else r[k++] = p.Id;
        return r;
    }

    /// <summary>
    /// A text pair (a cross-encoder's query and passage): framed by the pair template (BERT: <c>[CLS] first [SEP] second
    /// [SEP]</c> with <paramref name="typeIds"/> 0 up to the first [SEP] and 1 after it). A pair longer than
    /// <see cref="MaxTokens"/> is cut as Hugging Face's fast tokenizers cut it by default (<c>longest_first</c>): the shorter
    /// text is kept whole if it fits in half of the room, else both get half (the second the odd piece); each keeps its
    /// first pieces.
    /// </summary>
    /// <exception cref="ArgumentNullException">A text is null.</exception>
    public int[] EncodePair(string first, string second, out int[] typeIds) => EncodePair(first, second, MaxTokens, out typeIds);

    /// <summary>As <see cref="EncodePair(string, string, out int[])"/>, cut to <paramref name="maxTokens"/>.</summary>
    internal int[] EncodePair(string first, string second, int maxTokens, out int[] typeIds)
    {
        ArgumentNullException.ThrowIfNull(first);
        ArgumentNullException.ThrowIfNull(second);
        var a = Pieces(first);
        var b = Pieces(second);
        int room = maxTokens - _pairSpecials, na = a.Count, nb = b.Count;
        if (na + nb > room)
        {
            room = Math.Max(room, 0);
            int small = Math.Min(na, nb), large = Math.Max(na, nb);
            large = small > room ? small : Math.Max(small, room - small);
            if (small + large > room) { small = room / 2; large = small + room % 2; }
            // the longer text gets the larger share; on a tie, the first gets the smaller (as the fast tokenizer does)
            (na, nb) = a.Count > b.Count ? (large, small) : (small, large);
            na = Math.Min(na, a.Count);
            nb = Math.Min(nb, b.Count);
        }
        var ids = new int[na + nb + _pairSpecials];
        typeIds = new int[ids.Length];
        int k = 0;
        foreach (var p in _pair)
        {
            if (!p.IsText) { typeIds[k] = p.TypeId; ids[k++] = p.Id; continue; }
            var src = p.Id == -1 ? a : b;
            int n = p.Id == -1 ? na : nb;
            for (int i = 0; i < n; i++) { typeIds[k] = p.TypeId; ids[k++] = src[i]; }
        }
        return ids;
    }

    /// <summary>
    /// Loads Hugging Face's <c>tokenizer.json</c>, whichever model it holds: <c>WordPiece</c> (BERT's; see
    /// <see cref="BertWordPieceTokenizer.FromTokenizerJson(string, BertTokenizerOptions?)"/>), <c>Unigram</c>
    /// (SentencePiece's; see <see cref="UnigramTokenizer.FromTokenizerJson(string, int)"/>) or <c>BPE</c> (RoBERTa's and
    /// GPT-2's byte-level BPE, SentencePiece BPE; see <see cref="BpeTokenizer.FromTokenizerJson(string, int)"/>).
    /// </summary>
    /// <exception cref="InvalidDataException">The file is not such a tokenizer (see the three loaders).</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxTokens"/> leaves no room for a token.</exception>
    public static TextTokenizer FromTokenizerJson(string path, int maxTokens = 512)
    {
        ArgumentNullException.ThrowIfNull(path);
        var json = TokenizerJson.ReadFile(path);
        return TokenizerJson.ModelType(json, path) switch
        {
            "Unigram" => UnigramTokenizer.FromTokenizerJson(json, maxTokens, path),
            // Llama's and Gemma's tokenizers frame by their tokenizer_config.json's add_bos_token/add_eos_token, as transformers loads them
            "BPE" => BpeTokenizer.FromTokenizerJson(json, maxTokens, path, TokenizerParts.SpecialFraming.Beside(path)),
            _ => BertWordPieceTokenizer.FromTokenizerJson(json, new BertTokenizerOptions { MaxTokens = maxTokens }, path),
        };
    }
}

/// <summary>Reading a <c>tokenizer.json</c>'s bytes, shared by the loaders.</summary>
internal static class TokenizerJson
{
    /// <summary>Largest <c>tokenizer.json</c> read (a BERT vocabulary's is about 0.7 MB, XLM-RoBERTa's 17 MB).</summary>
    public const int MaxBytes = 64 << 20;

    public static byte[] ReadFile(string path)
    {
        if (Directory.Exists(path)) throw new IOException($"'{path}' is a directory, not a tokenizer.json.");
        return FastAttn.IO.BoundedFile.ReadAllBytes(path, MaxBytes, "a tokenizer.json");
    }

    /// <summary>The <c>model.type</c> of a tokenizer.json (null when absent or unreadable: the loader then says why).</summary>
    public static string? ModelType(byte[] json, string name)
    {
        try
        {
            var reader = new System.Text.Json.Utf8JsonReader(json, new System.Text.Json.JsonReaderOptions { MaxDepth = 64, AllowTrailingCommas = true });
            using var doc = System.Text.Json.JsonDocument.ParseValue(ref reader);
            return doc.RootElement.ValueKind == System.Text.Json.JsonValueKind.Object && doc.RootElement.TryGetProperty("model", out var m)
                && m.ValueKind == System.Text.Json.JsonValueKind.Object && m.TryGetProperty("type", out var t) && t.ValueKind == System.Text.Json.JsonValueKind.String
                ? t.GetString() : null;
        }
        catch (System.Text.Json.JsonException) { return null; }
    }
}
