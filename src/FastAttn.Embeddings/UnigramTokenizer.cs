using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using ICU4N.Text;

namespace FastAttn.Embeddings;

/// <summary>
/// A SentencePiece Unigram tokenizer as Hugging Face's tokenizers library runs it from a <c>tokenizer.json</c> — the
/// tokenizer of XLM-RoBERTa and of the models built on its vocabulary (multilingual-e5, paraphrase-multilingual-MiniLM /
/// -mpnet, bge-m3, …): added tokens (<c>&lt;s&gt;</c>, <c>&lt;mask&gt;</c>, …) found first, each piece between them
/// normalised (<c>Precompiled</c> charsmap, <c>Replace</c>, NFC/NFD/NFKC/NFKD, <c>Lowercase</c>, <c>Strip</c>,
/// <c>StripAccents</c>, <c>Prepend</c>, or a <c>Sequence</c> of them), pre-tokenised (<c>Metaspace</c>,
/// <c>WhitespaceSplit</c>, or a <c>Sequence</c>), split by the Unigram model's best-scoring path (Viterbi over the
/// vocabulary's log-probabilities; characters without a piece are the unknown token, consecutive ones fused into one;
/// optional byte fallback), and framed by the post-processor (<c>TemplateProcessing</c>, <c>RobertaProcessing</c>,
/// <c>BertProcessing</c>). <c>tests/FastAttn.Parity.Tests</c> compares it id for id with the Rust library.
/// <para>
/// Linear in the text's length (the lattice looks at most as far ahead as the longest vocabulary entry; regular
/// expressions run without backtracking). Immutable and safe to use from any number of threads; allocates per call.
/// </para>
/// </summary>
public sealed class UnigramTokenizer : TextTokenizer
{
    private readonly string[] _vocab;
    private readonly double[] _scores;
    private readonly Trie _trie;
    private readonly Dictionary<string, int> _ids;
    private readonly int? _unkId;
    private readonly double _unkScore;
    private readonly bool _byteFallback;
    private readonly int[] _byteIds;
    private readonly Normalizer? _normalizer;
    private readonly PreTokenizer? _preTokenizer;
    private readonly AddedTokens _rawAdded, _normalizedAdded;

    private UnigramTokenizer(Model m, Normalizer? normalizer, PreTokenizer? preTokenizer, AddedTokens raw, AddedTokens normalized,
        (TemplatePiece[], TemplatePiece[]) templates, int vocabularySize, int maxTokens)
        : base(templates.Item1, templates.Item2, m.UnkId ?? -1, vocabularySize, maxTokens)
    {
        _vocab = m.Vocab; _scores = m.Scores; _trie = m.Trie; _ids = m.Ids; _unkId = m.UnkId; _byteFallback = m.ByteFallback;
        _unkScore = m.MinScore - 10.0;
        // the byte-fallback pieces <0x00> … <0xFF> looked up once (−1: absent), not formatted per byte
        _byteIds = new int[256];
        for (int b = 0; b < 256; b++) _byteIds[b] = m.Ids.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
        _normalizer = normalizer; _preTokenizer = preTokenizer; _rawAdded = raw; _normalizedAdded = normalized;
    }

    /// <summary>Loads a <c>tokenizer.json</c> whose model is <c>Unigram</c>.</summary>
    /// <exception cref="InvalidDataException">The file is not valid UTF-8 JSON, not a Unigram model, its vocabulary or
    /// unknown id is malformed, or it uses a normaliser, pre-tokeniser or post-processor FastAttn does not apply.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxTokens"/> leaves no room for a token.</exception>
    public static new UnigramTokenizer FromTokenizerJson(string path, int maxTokens = 512)
    {
        ArgumentNullException.ThrowIfNull(path);
        return FromTokenizerJson(TokenizerJson.ReadFile(path), maxTokens, path);
    }

    /// <summary>The token of id <paramref name="id"/>, for display.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The id is outside the vocabulary.</exception>
    public override string Token(int id)
    {
        if ((uint)id >= (uint)VocabularySize) throw new ArgumentOutOfRangeException(nameof(id), id, $"ids are 0..{VocabularySize - 1}.");
        if (id < _vocab.Length) return _vocab[id];
        foreach (var t in _rawAdded.Tokens.Concat(_normalizedAdded.Tokens)) if (t.Id == id) return t.Content;
        return "";
    }

    /// <summary>The pieces (as strings) of <paramref name="text"/>, without framing: what the ids stand for.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="text"/> is null.</exception>
    public IReadOnlyList<string> Tokenize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return [.. Pieces(text).Select(Token)];
    }

    private protected override IReadOnlyList<int> Pieces(string text)
    {
        text = WellFormed(text);
        var ids = new List<int>();
        var sb = new StringBuilder();
        // 1. added tokens matched in the raw text; 2. the rest normalised, and added tokens matched in it; 3. words; 4. pieces
        foreach (var (rawPiece, rawId) in _rawAdded.Split(text))
        {
            if (rawId >= 0) { ids.Add(rawId); continue; }
            string norm = _normalizer == null ? rawPiece : _normalizer.Apply(rawPiece);
            foreach (var (piece, id) in _normalizedAdded.Split(norm))
            {
                if (id >= 0) { ids.Add(id); continue; }
                var words = _preTokenizer == null ? [piece] : _preTokenizer.Split(piece);
                foreach (var w in words) Encode(w, ids, sb);
            }
        }
        return ids;
    }

    /// <summary>Lone surrogates (which the Rust library cannot receive) as U+FFFD, as the UTF-8 conversion does.</summary>
    private static string WellFormed(string text)
    {
        int i = text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF');
        if (i < 0) return text;
        var sb = new StringBuilder(text.Length);
        foreach (var r in text.EnumerateRunes()) sb.Append(r.ToString());
        return sb.ToString();
    }

    /// <summary>The best-scoring split of one word (SentencePiece's optimised Viterbi pass), appended as ids.</summary>
    private void Encode(string w, List<int> ids, StringBuilder sb)
    {
        int n = w.Length;
        if (n == 0) return;
        var best = new double[n + 1];
        var from = new int[n + 1];
        var id = new int[n + 1];
        Array.Fill(from, -1);
        for (int s = 0; s < n; )
        {
            // only reached positions start pieces (every code point boundary is reached: by a piece or the unknown token)
            int cl = char.IsHighSurrogate(w[s]) && s + 1 < n && char.IsLowSurrogate(w[s + 1]) ? 2 : 1;
            double here = best[s];
            bool single = false;
            int node = 0;
            for (int e = s; e < n; e++)
            {
                node = _trie.Child(node, w[e]);
                if (node < 0) break;
                int v = _trie.Value(node);
                if (v < 0) continue;
                int end = e + 1;
                if (end < n && char.IsLowSurrogate(w[end]) && char.IsHighSurrogate(w[e])) continue;   // not a code point boundary
                double cand = _scores[v] + here;
                if (from[end] < 0 || cand > best[end]) { best[end] = cand; from[end] = s; id[end] = v; }
                if (end - s == cl) single = true;
            }
            if (!single)
            {
                int end = s + cl;
                double cand = _unkScore + here;
                if (from[end] < 0 || cand > best[end])
                {
                    best[end] = cand; from[end] = s;
                    id[end] = _unkId ?? throw new InvalidOperationException("the Unigram model has no unknown token, and a character has no piece.");
                }
            }
            s += cl;
        }
        // back from the end; consecutive unknown pieces fused into one string, looked up again (as the library does)
        var pieces = new List<(int Start, int End, int Id)>();
        for (int e = n; e > 0; e = from[e]) pieces.Add((from[e], e, id[e]));
        pieces.Reverse();
        for (int i = 0; i < pieces.Count; i++)
        {
            var (start, end, pid) = pieces[i];
            if (pid != _unkId) { ids.Add(pid); continue; }
            while (i + 1 < pieces.Count && pieces[i + 1].Id == _unkId) end = pieces[++i].End;
            string s = w[start..end];
            if (_ids.TryGetValue(s, out int known)) { ids.Add(known); continue; }
            if (_byteFallback && ByteFallback(s, ids)) continue;
            ids.Add(_unkId!.Value);
        }
    }

    private bool ByteFallback(string s, List<int> ids)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        var found = new int[bytes.Length];
        for (int i = 0; i < bytes.Length; i++)
            if ((found[i] = _byteIds[bytes[i]]) < 0) return false;
        ids.AddRange(found);
        return true;
    }

    // ---------------------------------------------------------------- loading

    private sealed record Model(string[] Vocab, double[] Scores, Trie Trie, Dictionary<string, int> Ids, int? UnkId, bool ByteFallback, double MinScore);

    internal static UnigramTokenizer FromTokenizerJson(byte[] json, int maxTokens, string name)
    {
        InvalidDataException Bad(string what) => new($"'{name}': {what}.");
        if (json.Length > TokenizerJson.MaxBytes) throw Bad($"{json.Length} bytes; a tokenizer.json is read up to {TokenizerJson.MaxBytes} bytes");
        if (!System.Text.Unicode.Utf8.IsValid(json)) throw Bad("not valid UTF-8");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 64, AllowTrailingCommas = true }); }
        catch (JsonException e) { throw new InvalidDataException($"'{name}': not valid JSON: {e.Message}", e); }
        using (doc)
        try
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw Bad("not a JSON object");
            if (Member(root, "model") is not { ValueKind: JsonValueKind.Object } model) throw Bad("no 'model' object");
            if (Str(model, "type") is var type && type != "Unigram") throw Bad($"model type '{type}' is not Unigram");
            var m = ReadModel(model, Bad);
            var normalizer = Member(root, "normalizer") is { } nj ? Normalizer.Read(nj, Bad) : null;
            var pre = Member(root, "pre_tokenizer") is { } pj ? PreTokenizer.Read(pj, Bad) : null;
            // added tokens: the model's id when the model has the content (as the library assigns them), else the file's
            var raw = new List<AddedToken>();
            var normalized = new List<AddedToken>();
            int size = m.Vocab.Length;
            if (Member(root, "added_tokens") is { } at)
            {
                if (at.ValueKind != JsonValueKind.Array) throw Bad("added_tokens is not an array");
                foreach (var t in at.EnumerateArray())
                {
                    string content = Str(t, "content") ?? throw Bad("an added token has no content");
                    if (content.Length == 0) continue;
                    CheckText(content, "an added token", Bad);
                    int id = m.Ids.TryGetValue(content, out int mid) ? mid
                        : Member(t, "id") is { ValueKind: JsonValueKind.Number } idj && idj.TryGetInt32(out int fid) && fid is >= 0 and < 1 << 24 ? fid
                        : throw Bad($"added token '{Shorten(content)}' has no id from 0 to {1 << 24}");
                    size = Math.Max(size, id + 1);
                    bool norm = Flag(t, "normalized", !Flag(t, "special", false, Bad), Bad);
                    var tok = new AddedToken(norm && normalizer != null ? normalizer.Apply(content) : content, id,
                        Flag(t, "single_word", false, Bad), Flag(t, "lstrip", false, Bad), Flag(t, "rstrip", false, Bad));
                    if (tok.Content.Length == 0) continue;
                    (norm ? normalized : raw).Add(tok);
                }
            }
            int Special(string content) => m.Ids.TryGetValue(content, out int i) ? i
                : raw.Concat(normalized).FirstOrDefault(a => a.Content == content) is { } a ? a.Id
                : throw Bad($"the post-processor's '{Shorten(content)}' is neither in the vocabulary nor an added token");
            var templates = Member(root, "post_processor") is { } pp ? ReadTemplates(pp, Special, Bad) : ([new(-1, 0)], [new(-1, 0), new(-2, 1)]);
            foreach (var p in templates.Item1.Concat(templates.Item2)) if (p.Id >= 0) size = Math.Max(size, p.Id + 1);
            return new UnigramTokenizer(m, normalizer, pre, new AddedTokens(raw), new AddedTokens(normalized), templates, size, maxTokens);
        }
        catch (InvalidOperationException e)
        {
            // System.Text.Json refuses to read a string whose escapes leave a lone surrogate
            throw Bad($"a string holds a lone surrogate ({e.Message})");
        }
    }

    private static Model ReadModel(JsonElement model, Func<string, InvalidDataException> bad)
    {
        if (Member(model, "vocab") is not { ValueKind: JsonValueKind.Array } vj) throw bad("model.vocab is not an array of [piece, score]");
        int count = vj.GetArrayLength();
        if (count == 0) throw bad("the vocabulary is empty");
        var vocab = new string[count];
        var scores = new double[count];
        var ids = new Dictionary<string, int>(count, StringComparer.Ordinal);
        double min = double.PositiveInfinity;
        int i = 0;
        foreach (var e in vj.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Array || e.GetArrayLength() != 2 || e[0].ValueKind != JsonValueKind.String || e[1].ValueKind != JsonValueKind.Number
                || !e[1].TryGetDouble(out double score) || !double.IsFinite(score))
                throw bad($"vocabulary entry {i} is not [piece, finite score]");
            string piece = e[0].GetString()!;
            CheckText(piece, $"vocabulary entry {i}", bad);
            vocab[i] = piece; scores[i] = score;
            ids[piece] = i;                                 // a repeated piece: the last id, as the library's map keeps it
            if (score < min) min = score;
            i++;
        }
        int? unk = null;
        if (Member(model, "unk_id") is { } u)
            unk = u.ValueKind == JsonValueKind.Number && u.TryGetInt32(out int k) && (uint)k < (uint)count ? k : throw bad($"model.unk_id {Shorten(u.GetRawText())} is not an id of the vocabulary");
        bool byteFallback = Member(model, "byte_fallback") is { } bf && (bf.ValueKind == JsonValueKind.True || (bf.ValueKind == JsonValueKind.False ? false : throw bad("model.byte_fallback is not true or false")));
        return new Model(vocab, scores, Trie.Build(vocab), ids, unk, byteFallback, min);
    }

    private static (TemplatePiece[], TemplatePiece[]) ReadTemplates(JsonElement pp, Func<string, int> special, Func<string, InvalidDataException> bad)
    {
        switch (Str(pp, "type"))
        {
            case "TemplateProcessing":
                {
                    // special_tokens: name → { ids: [...] }
                    var named = new Dictionary<string, int[]>(StringComparer.Ordinal);
                    if (Member(pp, "special_tokens") is { ValueKind: JsonValueKind.Object } st)
                        foreach (var e in st.EnumerateObject())
                        {
                            if (Member(e.Value, "ids") is not { ValueKind: JsonValueKind.Array } idsj) throw bad($"special token '{Shorten(e.Name)}' of the template has no ids");
                            named[e.Name] = [.. idsj.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.Number && x.TryGetInt32(out int v) && v is >= 0 and < 1 << 24 ? v
                                : throw bad($"special token '{Shorten(e.Name)}' of the template has an id that is not one from 0 to {1 << 24}"))];
                        }
                    TemplatePiece[] Read(string key)
                    {
                        if (Member(pp, key) is not { ValueKind: JsonValueKind.Array } arr) throw bad($"the template has no '{key}' list");
                        var r = new List<TemplatePiece>();
                        foreach (var item in arr.EnumerateArray())
                        {
                            if (Member(item, "SpecialToken") is { } sp)
                            {
                                string id = Str(sp, "id") ?? throw bad("a template special token has no id");
                                int type = TypeId(sp);
                                foreach (int v in named.TryGetValue(id, out var vs) ? vs : [special(id)]) r.Add(new(v, type));
                            }
                            else if (Member(item, "Sequence") is { } sq)
                                r.Add(new(Str(sq, "id") switch { "A" => -1, "B" => -2, var x => throw bad($"template sequence '{x}' is not A or B") }, TypeId(sq)));
                            else throw bad("a template item is neither SpecialToken nor Sequence");
                        }
                        return [.. r];
                    }
                    int TypeId(JsonElement e) => Member(e, "type_id") is { } t ? t.ValueKind == JsonValueKind.Number && t.TryGetInt32(out int v) && v is >= 0 and < 256 ? v
                        : throw bad("a template type_id is not 0…255") : 0;
                    return (Read("single"), Read("pair"));
                }
            case "RobertaProcessing":
            case "BertProcessing":
                {
                    int Tok(string key) => Member(pp, key) is { ValueKind: JsonValueKind.Array } a && a.GetArrayLength() == 2 && a[1].ValueKind == JsonValueKind.Number
                        && a[1].TryGetInt32(out int v) && v is >= 0 and < 1 << 24 ? v : throw bad($"the post-processor's '{key}' is not [token, id]");
                    return ClsSepTemplates(Tok("cls"), Tok("sep"), doubleSeparator: Str(pp, "type") == "RobertaProcessing");
                }
            case "Sequence":
                {
                    // e.g. [ByteLevel, TemplateProcessing]: the one that frames
                    if (Member(pp, "processors") is not { ValueKind: JsonValueKind.Array } list) throw bad("post_processor Sequence has no processors");
                    (TemplatePiece[], TemplatePiece[])? found = null;
                    foreach (var p in list.EnumerateArray())
                        if (Str(p, "type") is "TemplateProcessing" or "RobertaProcessing" or "BertProcessing")
                            found = found == null ? ReadTemplates(p, special, bad) : throw bad("post_processor Sequence frames twice");
                    return found ?? ([new(-1, 0)], [new(-1, 0), new(-2, 1)]);
                }
            default:
                throw bad($"post_processor '{Str(pp, "type") ?? pp.ValueKind.ToString()}' is not TemplateProcessing, RobertaProcessing or BertProcessing");
        }
    }

    private static JsonElement? Member(JsonElement o, string key) =>
        o.ValueKind == JsonValueKind.Object && o.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    private static string? Str(JsonElement o, string key) => Member(o, key) is { ValueKind: JsonValueKind.String } v ? v.GetString() : null;

    private static bool Flag(JsonElement o, string key, bool missing, Func<string, InvalidDataException> bad) => Member(o, key) switch
    {
        null => missing,
        { ValueKind: JsonValueKind.True } => true,
        { ValueKind: JsonValueKind.False } => false,
        _ => throw bad($"'{key}' is not true or false"),
    };

    private static string Shorten(string s) => s.Length <= 40 ? s : s[..40] + "…";

    /// <summary>Strings from the file must be well-formed UTF-16 (JSON can escape a lone surrogate; the Rust library refuses it).</summary>
    private static void CheckText(string s, string what, Func<string, InvalidDataException> bad)
    {
        if (s.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') < 0) return;
        for (int i = 0; i < s.Length; i++)
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) i++;
            else if (char.IsSurrogate(s[i])) throw bad($"{what} holds a lone surrogate");
    }

    // ---------------------------------------------------------------- the vocabulary's trie

    /// <summary>The vocabulary as a trie over UTF-16 units: each node's children a sorted, contiguous block (binary search).</summary>
    private sealed class Trie
    {
        private char[] _label = [];
        private int[] _first = [], _count = [], _value = [];

        public int Value(int node) => _value[node];

        /// <summary>The child of <paramref name="node"/> along <paramref name="c"/>, or −1.</summary>
        public int Child(int node, char c)
        {
            int lo = _first[node], hi = lo + _count[node] - 1;
            while (lo <= hi)
            {
                int mid = (lo + hi) >>> 1;
                char l = _label[mid];
                if (l == c) return mid;
                if (l < c) lo = mid + 1; else hi = mid - 1;
            }
            return -1;
        }

        public static Trie Build(string[] vocab)
        {
            var order = Enumerable.Range(0, vocab.Length).ToArray();
            Array.Sort(order, (a, b) => string.CompareOrdinal(vocab[a], vocab[b]) is var c && c != 0 ? c : a.CompareTo(b));
            long total = 1;
            foreach (var v in vocab) total += v.Length;
            if (total > int.MaxValue / 2) throw new InvalidDataException("the vocabulary is too large.");
            var t = new Trie { _label = new char[total], _first = new int[total], _count = new int[total], _value = new int[total] };
            Array.Fill(t._value, -1);
            int nodes = 1;
            // breadth first: (node, sorted range of the pieces under it, depth); a node's children are allocated together
            var queue = new Queue<(int Node, int Lo, int Hi, int Depth)>();
            queue.Enqueue((0, 0, order.Length, 0));
            while (queue.Count > 0)
            {
                var (node, lo, hi, depth) = queue.Dequeue();
                // pieces that end here come first in sorted order; the last of equal ones (highest id) is the map's
                while (lo < hi && vocab[order[lo]].Length == depth) t._value[node] = order[lo++];
                int groups = 0;
                for (int i = lo; i < hi; i++) if (i == lo || vocab[order[i]][depth] != vocab[order[i - 1]][depth]) groups++;
                t._first[node] = nodes;
                t._count[node] = groups;
                int child = nodes;
                nodes += groups;
                for (int i = lo; i < hi;)
                {
                    char c = vocab[order[i]][depth];
                    int j = i + 1;
                    while (j < hi && vocab[order[j]][depth] == c) j++;
                    t._label[child] = c;
                    queue.Enqueue((child++, i, j, depth + 1));
                    i = j;
                }
            }
            Array.Resize(ref t._label, nodes); Array.Resize(ref t._first, nodes); Array.Resize(ref t._count, nodes); Array.Resize(ref t._value, nodes);
            return t;
        }
    }

    // ---------------------------------------------------------------- added tokens

    private sealed record AddedToken(string Content, int Id, bool SingleWord, bool LStrip, bool RStrip);

    /// <summary>Added tokens found leftmost-longest, as the library's Aho-Corasick automaton finds them (a char trie here).</summary>
    private sealed class AddedTokens
    {
        public readonly List<AddedToken> Tokens;
        private readonly Dictionary<(int, char), int> _edges = [];
        private readonly List<int> _token = [-1];          // node → index into Tokens, or −1

        public AddedTokens(List<AddedToken> tokens)
        {
            Tokens = tokens;
            for (int k = 0; k < tokens.Count; k++)
            {
                int node = 0;
                foreach (char c in tokens[k].Content)
                {
                    if (!_edges.TryGetValue((node, c), out int next)) { next = _token.Count; _token.Add(-1); _edges[(node, c)] = next; }
                    node = next;
                }
                if (_token[node] < 0) _token[node] = k;     // the first of equal contents
            }
        }

        /// <summary>The text as (piece, −1) and (token's text, id) in order.</summary>
        public IEnumerable<(string Text, int Id)> Split(string text)
        {
            if (Tokens.Count == 0) { yield return (text, -1); yield break; }
            int start = 0;
            for (int i = 0; i < text.Length;)
            {
                int node = 0, matchEnd = -1, match = -1;
                for (int j = i; j < text.Length && _edges.TryGetValue((node, text[j]), out node); j++)
                    if (_token[node] >= 0) { matchEnd = j + 1; match = _token[node]; }
                if (match < 0) { i++; continue; }
                var t = Tokens[match];
                int s = i, e = matchEnd;
                i = matchEnd;
                if (t.SingleWord && ((s > 0 && IsWordBefore(text, s)) || (e < text.Length && IsWordAt(text, e)))) continue;
                if (t.LStrip) { int ns = s; while (ns > start && Rune.TryGetRuneAt(text, PrevStart(text, ns), out var r) && Rune.IsWhiteSpace(r)) ns = PrevStart(text, ns); s = ns; }
                if (t.RStrip) while (e < text.Length && Rune.TryGetRuneAt(text, e, out var r) && Rune.IsWhiteSpace(r)) e += r.Utf16SequenceLength;
                if (start < s) yield return (text[start..s], -1);
                yield return (text[s..e], t.Id);
                start = i = e;
            }
            if (start < text.Length || text.Length == 0) yield return (text[start..], -1);
        }

        private static int PrevStart(string text, int i) => i >= 2 && char.IsLowSurrogate(text[i - 1]) && char.IsHighSurrogate(text[i - 2]) ? i - 2 : i - 1;
        private static bool IsWordBefore(string text, int i) => Rune.TryGetRuneAt(text, PrevStart(text, i), out var r) && IsWord(r);
        private static bool IsWordAt(string text, int i) => Rune.TryGetRuneAt(text, i, out var r) && IsWord(r);

        /// <summary>Regex <c>\w</c> as the Rust regex crate has it: Alphabetic (which includes letter numbers and symbols such as 🄰), marks, decimal digits, connector punctuation, joiners.</summary>
        private static bool IsWord(Rune r) => r.Value is 0x200C or 0x200D || ICU4N.UChar.HasBinaryProperty(r.Value, ICU4N.Globalization.UProperty.Alphabetic)
            || Rune.GetUnicodeCategory(r) is UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.EnclosingMark
            or UnicodeCategory.DecimalDigitNumber or UnicodeCategory.ConnectorPunctuation;
    }

    // ---------------------------------------------------------------- normalisers

    private abstract class Normalizer
    {
        public abstract string Apply(string s);

        public static Normalizer Read(JsonElement n, Func<string, InvalidDataException> bad)
        {
            string? type = Str(n, "type");
            switch (type)
            {
                case "Sequence":
                    if (Member(n, "normalizers") is not { ValueKind: JsonValueKind.Array } list) throw bad("normalizer Sequence has no normalizers");
                    return new Steps([.. list.EnumerateArray().Select(e => Read(e, bad))]);
                case "Precompiled":
                    {
                        string b64 = Str(n, "precompiled_charsmap") ?? throw bad("Precompiled normalizer has no precompiled_charsmap");
                        byte[] map;
                        try { map = Convert.FromBase64String(b64); }
                        catch (FormatException) { throw bad("precompiled_charsmap is not base64"); }
                        return new Precompiled(PrecompiledCharsMap.Parse(map, "tokenizer.json"));
                    }
                case "Replace":
                    {
                        string content = Str(n, "content") ?? throw bad("Replace normalizer has no content");
                        CheckText(content, "a Replace normalizer", bad);
                        if (Member(n, "pattern") is { } p && Str(p, "String") is { } literal)
                        {
                            CheckText(literal, "a Replace normalizer", bad);
                            return new Replace(literal.Length == 0 ? null : new Regex(Regex.Escape(literal), RegexOptions.CultureInvariant), content);
                        }
                        if (Member(n, "pattern") is { } q && Str(q, "Regex") is { } rx)
                        {
                            try { return new Replace(new Regex(rx, RegexOptions.NonBacktracking | RegexOptions.CultureInvariant), content); }
                            catch (Exception e) when (e is ArgumentException or NotSupportedException)
                            {
                                throw bad($"Replace pattern '{Shorten(rx)}' is not a regular expression FastAttn runs in linear time ({e.Message})");
                            }
                        }
                        throw bad("Replace normalizer's pattern is neither String nor Regex");
                    }
                case "NFC": return new Icu(Normalizer2.NFCInstance);
                case "NFD": return new Icu(Normalizer2.NFDInstance);
                case "NFKC": return new Icu(Normalizer2.NFKCInstance);
                case "NFKD": return new Icu(Normalizer2.NFKDInstance);
                case "Lowercase": return new Lowercase();
                case "StripAccents": return new StripAccents();
                case "Strip": return new Strip(Flag(n, "strip_left", true, bad), Flag(n, "strip_right", true, bad));
                case "Prepend":
                    {
                        string p = Str(n, "prepend") ?? throw bad("Prepend normalizer has no prepend");
                        CheckText(p, "a Prepend normalizer", bad);
                        return new Prepend(p);
                    }
                default:
                    throw bad($"normalizer '{type ?? n.ValueKind.ToString()}' is not one FastAttn applies (Sequence, Precompiled, Replace, NFC, NFD, NFKC, NFKD, Lowercase, StripAccents, Strip, Prepend)");
            }
        }
    }

    private sealed class Steps(Normalizer[] steps) : Normalizer
    {
        public override string Apply(string s)
        {
            foreach (var n in steps) s = n.Apply(s);
            return s;
        }
    }

    private sealed class Precompiled(PrecompiledCharsMap map) : Normalizer
    {
        public override string Apply(string s) => map.Normalize(s);
    }

    /// <summary>Every non-overlapping match, left to right, replaced (no pattern: nothing matches).</summary>
    private sealed class Replace(Regex? pattern, string content) : Normalizer
    {
        public override string Apply(string s) => pattern == null || s.Length == 0 ? s : pattern.Replace(s, content.Replace("$", "$$"));
    }

    /// <summary>
    /// NFC / NFD / NFKC / NFKD by ICU4N, as the Rust library's normalisation crate has them: its tables are Unicode 9.0's,
    /// so a character assigned later is a starter that neither decomposes, composes nor reorders — the text is normalised
    /// in runs between such characters, which stay as they are (normalisation of characters already assigned is stable
    /// across Unicode versions). Without this, combining marks of Unicode 10 and later were reordered where the library
    /// leaves them (found by the parity test).
    /// </summary>
    private sealed class Icu(Normalizer2 form) : Normalizer
    {
        public override string Apply(string s)
        {
            if (s.Length == 0) return s;
            int i = 0;
            while (i < s.Length && !Newer(s, i, out _)) i++;
            if (i == s.Length) return form.IsNormalized(s) ? s : form.Normalize(s);
            var sb = new StringBuilder(s.Length);
            int start = 0;
            for (i = 0; i < s.Length;)
            {
                if (!Newer(s, i, out int len)) { i += len; continue; }
                if (i > start) sb.Append(form.Normalize(s[start..i]));
                sb.Append(s, i, len);
                start = i += len;
            }
            if (start < s.Length) sb.Append(form.Normalize(s[start..]));
            return sb.ToString();
        }

        /// <summary>Whether the code point at <paramref name="i"/> was assigned after Unicode 9.0 (or never); its UTF-16 length.</summary>
        private static bool Newer(string s, int i, out int len)
        {
            char c = s[i];
            if (char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                len = 2;
                var age = ICU4N.UChar.GetAge(char.ConvertToUtf32(c, s[i + 1]));
                return age.Major is 0 or > 9;
            }
            len = 1;
            return c >= 0x80 && BmpNewer.Value[c];
        }

        private static readonly Lazy<bool[]> BmpNewer = new(() =>
        {
            var t = new bool[0x10000];
            for (int cp = 0x80; cp < t.Length; cp++) t[cp] = cp is < 0xD800 or > 0xDFFF && ICU4N.UChar.GetAge(cp).Major is 0 or > 9;
            return t;
        });
    }

    /// <summary>Per character, Unicode's full lower-case mapping (İ → i + U+0307; no final-sigma rule), as Rust's <c>char::to_lowercase</c>.</summary>
    private sealed class Lowercase : Normalizer
    {
        public override string Apply(string s)
        {
            var sb = new StringBuilder(s.Length);
            foreach (var r in s.EnumerateRunes())
                if (r.Value == 0x130) sb.Append("i\u0307");
                else sb.Append(Rune.ToLowerInvariant(r).ToString());
            return sb.ToString();
        }
    }

    private sealed class StripAccents : Normalizer
    {
        public override string Apply(string s)
        {
            var sb = new StringBuilder(s.Length);
            foreach (var r in s.EnumerateRunes())
                if (Rune.GetUnicodeCategory(r) is not (UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.EnclosingMark))
                    sb.Append(r.ToString());
            return sb.ToString();
        }
    }

    private sealed class Strip(bool left, bool right) : Normalizer
    {
        public override string Apply(string s)
        {
            int a = 0, b = s.Length;
            if (left) while (a < b && Rune.TryGetRuneAt(s, a, out var r) && Rune.IsWhiteSpace(r)) a += r.Utf16SequenceLength;
            if (right) while (b > a && Rune.TryGetRuneAt(s, char.IsLowSurrogate(s[b - 1]) && b - 2 >= a ? b - 2 : b - 1, out var r) && Rune.IsWhiteSpace(r)) b -= r.Utf16SequenceLength;
            return s[a..b];
        }
    }

    private sealed class Prepend(string prefix) : Normalizer
    {
        public override string Apply(string s) => s.Length == 0 ? s : prefix + s;
    }

    // ---------------------------------------------------------------- pre-tokenisers

    private abstract class PreTokenizer
    {
        /// <summary>The words of a normalised piece.</summary>
        public abstract List<string> Split(string piece);

        public static PreTokenizer Read(JsonElement p, Func<string, InvalidDataException> bad)
        {
            string? type = Str(p, "type");
            switch (type)
            {
                case "Sequence":
                    if (Member(p, "pretokenizers") is not { ValueKind: JsonValueKind.Array } list) throw bad("pre_tokenizer Sequence has no pretokenizers");
                    return new Chain([.. list.EnumerateArray().Select(e => Read(e, bad))]);
                case "WhitespaceSplit":
                    return new WhitespaceSplit();
                case "Metaspace":
                    {
                        string rep = Str(p, "replacement") ?? "\u2581";
                        if (rep.EnumerateRunes().Count() != 1) throw bad("Metaspace replacement is not one character");
                        string scheme = Str(p, "prepend_scheme") ?? "always";
                        bool? addPrefix = Member(p, "add_prefix_space") is { } ap ? Flag(p, "add_prefix_space", true, bad) : null;
                        if (addPrefix == false)
                        {
                            if (Str(p, "prepend_scheme") is { } given && given != "never") throw bad("Metaspace add_prefix_space does not match its prepend_scheme");
                            scheme = "never";
                        }
                        // "first" (Llama's) prepends by where a piece's first character came from in the original text, through every
                        // normaliser's alignment: not followed here, so refused rather than answered differently
                        if (scheme is not ("always" or "never")) throw bad($"Metaspace prepend_scheme '{Shorten(scheme)}' is not always or never (FastAttn does not apply 'first')");
                        return new Metaspace(rep, scheme, Flag(p, "split", true, bad));
                    }
                default:
                    throw bad($"pre_tokenizer '{type ?? p.ValueKind.ToString()}' is not one FastAttn applies (Metaspace, WhitespaceSplit, Sequence)");
            }
        }
    }

    private sealed class Chain(PreTokenizer[] steps) : PreTokenizer
    {
        public override List<string> Split(string piece)
        {
            List<string> words = [piece];
            foreach (var step in steps) words = [.. words.SelectMany(step.Split)];
            return words;
        }
    }

    private sealed class WhitespaceSplit : PreTokenizer
    {
        public override List<string> Split(string piece)
        {
            var r = new List<string>();
            int start = -1;
            for (int i = 0; i < piece.Length;)
            {
                bool ws = Rune.TryGetRuneAt(piece, i, out var rune) ? Rune.IsWhiteSpace(rune) : false;
                int len = rune.Utf16SequenceLength;
                if (ws) { if (start >= 0) { r.Add(piece[start..i]); start = -1; } }
                else if (start < 0) start = i;
                i += Math.Max(len, 1);
            }
            if (start >= 0) r.Add(piece[start..]);
            return r;
        }
    }

    /// <summary>Spaces become the replacement (▁), prepended to a piece (always / to the text's first piece / never), then split before each replacement.</summary>
    private sealed class Metaspace(string replacement, string scheme, bool split) : PreTokenizer
    {
        public override List<string> Split(string piece)
        {
            string s = piece.Replace(" ", replacement);
            if (s.Length > 0 && !s.StartsWith(replacement, StringComparison.Ordinal) && scheme == "always")
                s = replacement + s;
            if (!split) return s.Length == 0 ? [] : [s];
            var r = new List<string>();
            int start = 0;
            for (int i = s.IndexOf(replacement, StringComparison.Ordinal); i >= 0; i = s.IndexOf(replacement, i + replacement.Length, StringComparison.Ordinal))
            {
                // MergedWithNext: each replacement begins a word; a run of them leaves single-replacement words before the last
                if (i > start) r.Add(s[start..i]);
                start = i;
            }
            if (start < s.Length) r.Add(s[start..]);
            return r;
        }
    }
}
