using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;
using static FastAttn.Embeddings.TokenizerParts;

namespace FastAttn.Embeddings;

/// <summary>
/// A byte-pair-encoding tokenizer as Hugging Face's tokenizers library runs it from a <c>tokenizer.json</c> whose model is
/// <c>BPE</c> — RoBERTa's and GPT-2's byte-level BPE (all-distilroberta-v1, the RoBERTa cross-encoders and NLI models),
/// and SentencePiece-style BPE with byte fallback: added tokens found first, each piece between them normalised and
/// pre-tokenised (<c>ByteLevel</c>: GPT-2's split into contractions, letter runs, digit runs, other runs and spaces, each
/// byte of a word mapped to a printable character; or the Unigram tokenizer's <c>Metaspace</c>, <c>WhitespaceSplit</c>),
/// each word split into its characters and merged pair by pair, the pair of lowest merge rank first (leftmost among
/// equal ranks) until no pair of the merge list is left; characters without a token become byte tokens
/// (<c>byte_fallback</c>), the unknown token (consecutive ones fused when <c>fuse_unk</c>), or — with neither, as in the
/// library — nothing; then framed by the post-processor (<c>RobertaProcessing</c>, <c>TemplateProcessing</c>, …).
/// <c>tests/FastAttn.Parity.Tests</c> compares it id for id with the Rust library.
/// <para>
/// Linear in the text's length up to a log factor (a word of n characters takes O(n log n) merges with a heap; words are
/// cached). Immutable apart from its thread-safe word cache, and safe to use from any number of threads; allocates per call.
/// </para>
/// </summary>
public sealed class BpeTokenizer : TextTokenizer
{
    private readonly Dictionary<string, int> _ids;
    private readonly string[] _tokens;                               // id → token (for display); "" where no token has the id
    private readonly Dictionary<long, (int Rank, int NewId)> _merges;
    private readonly int? _unkId;
    private readonly bool _fuseUnk, _byteFallback, _ignoreMerges;
    private readonly string _prefix, _suffix;
    private readonly int[] _byteIds;
    private readonly Pipeline _pipeline;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);

    /// <summary>Words cached at most (each shorter than <see cref="CachedWordLength"/> characters), as the library caches them.</summary>
    private const int CacheCapacity = 10_000, CachedWordLength = 256;

    private BpeTokenizer(Dictionary<string, int> ids, Dictionary<long, (int, int)> merges, int? unkId, bool fuseUnk, bool byteFallback, bool ignoreMerges,
        string prefix, string suffix, Pipeline p, int maxTokens)
        : base(p.Templates.Item1, p.Templates.Item2, unkId ?? -1, p.VocabularySize, maxTokens)
    {
        _ids = ids; _merges = merges; _unkId = unkId; _fuseUnk = fuseUnk; _byteFallback = byteFallback; _ignoreMerges = ignoreMerges;
        _prefix = prefix; _suffix = suffix; _pipeline = p;
        _tokens = new string[p.VocabularySize];
        Array.Fill(_tokens, "");
        foreach (var (t, id) in ids) _tokens[id] = t;
        foreach (var a in p.Raw.Tokens.Concat(p.Normalized.Tokens)) if (_tokens[a.Id].Length == 0) _tokens[a.Id] = a.Content;
        _byteIds = new int[256];
        for (int b = 0; b < 256; b++) _byteIds[b] = ids.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
    }

    /// <summary>Loads a <c>tokenizer.json</c> whose model is <c>BPE</c>.</summary>
    /// <exception cref="InvalidDataException">The file is not valid UTF-8 JSON, not a BPE model, its vocabulary or merges are
    /// malformed (a merge of tokens outside the vocabulary, or whose result is not in it), it asks for dropout, or it uses a
    /// normaliser, pre-tokeniser or post-processor FastAttn does not apply.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxTokens"/> leaves no room for a token.</exception>
    public static new BpeTokenizer FromTokenizerJson(string path, int maxTokens = 512)
    {
        ArgumentNullException.ThrowIfNull(path);
        return FromTokenizerJson(TokenizerJson.ReadFile(path), maxTokens, path);
    }

    /// <summary>The token of id <paramref name="id"/> (byte-level tokens as their printable characters, e.g. "Ġthe").</summary>
    /// <exception cref="ArgumentOutOfRangeException">The id is outside the vocabulary.</exception>
    public override string Token(int id)
    {
        if ((uint)id >= (uint)VocabularySize) throw new ArgumentOutOfRangeException(nameof(id), id, $"ids are 0..{VocabularySize - 1}.");
        return _tokens[id];
    }

    /// <summary>The tokens (as strings) of <paramref name="text"/>, without framing: what the ids stand for.</summary>
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
        foreach (var (rawPiece, rawId) in _pipeline.Raw.Split(text))
        {
            if (rawId >= 0) { ids.Add(rawId); continue; }
            string norm = _pipeline.Normalizer == null ? rawPiece : _pipeline.Normalizer.Apply(rawPiece);
            foreach (var (piece, id) in _pipeline.Normalized.Split(norm))
            {
                if (id >= 0) { ids.Add(id); continue; }
                var words = _pipeline.PreTokenizer == null ? (piece.Length == 0 ? [] : [piece]) : _pipeline.PreTokenizer.Split(piece);
                foreach (var w in words) ids.AddRange(Word(w));
            }
        }
        return ids;
    }

    /// <summary>One word's ids: cached, or merged.</summary>
    private int[] Word(string w)
    {
        if (w.Length == 0) return [];
        if (_ignoreMerges && _ids.TryGetValue(w, out int whole)) return [whole];
        if (_cache.TryGetValue(w, out var hit)) return hit;
        var r = Merge(w);
        if (w.Length < CachedWordLength && _cache.Count < CacheCapacity) _cache.TryAdd(w, r);
        return r;
    }

    private struct Symbol { public int Id, Prev, Next; public bool Gone; }

    /// <summary>The library's merge: the word's characters as tokens, then the lowest-ranked mergeable pair merged (leftmost first) until none is left.</summary>
    private int[] Merge(string w)
    {
        var sym = new List<Symbol>(w.Length);
        void Add(int id) => sym.Add(new Symbol { Id = id, Prev = sym.Count - 1, Next = -1 });
        int? pendingUnk = null;
        for (int i = 0; i < w.Length;)
        {
            int len = char.IsHighSurrogate(w[i]) && i + 1 < w.Length && char.IsLowSurrogate(w[i + 1]) ? 2 : 1;
            bool first = i == 0, last = i + len == w.Length;
            string s = w.Substring(i, len);
            if (!first && _prefix.Length > 0) s = _prefix + s;
            if (last && _suffix.Length > 0) s += _suffix;
            i += len;
            if (_ids.TryGetValue(s, out int id))
            {
                if (pendingUnk is int u) { Add(u); pendingUnk = null; }
                Add(id);
                continue;
            }
            if (_byteFallback && ByteTokens(s) is { } bytes)
            {
                // as the library: a byte run does not flush a pending unknown token
                foreach (int b in bytes) Add(b);
                continue;
            }
            if (_unkId is int unk)
            {
                if (pendingUnk is int p && !_fuseUnk) Add(p);
                pendingUnk = unk;
            }
            // neither byte fallback nor an unknown token: the character is dropped, as in the library
        }
        if (pendingUnk is int pu) Add(pu);
        var symbols = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(sym);
        for (int k = 0; k + 1 < symbols.Length; k++) symbols[k].Next = k + 1;
        if (symbols.Length < 2) return [.. sym.Select(x => x.Id)];

        // (rank, position) smallest first; an entry whose pair has changed since it was queued is skipped
        var queue = new PriorityQueue<(int Pos, int NewId), long>(symbols.Length);
        void Push(int pos, Span<Symbol> ss)
        {
            int next = ss[pos].Next;
            if (next >= 0 && _merges.TryGetValue(Key(ss[pos].Id, ss[next].Id), out var m)) queue.Enqueue((pos, m.NewId), ((long)m.Rank << 32) | (uint)pos);
        }
        for (int k = 0; k + 1 < symbols.Length; k++) Push(k, symbols);
        while (queue.TryDequeue(out var top, out _))
        {
            ref var cur = ref symbols[top.Pos];
            if (cur.Gone || cur.Next < 0) continue;
            int next = cur.Next;
            if (!_merges.TryGetValue(Key(cur.Id, symbols[next].Id), out var m) || m.NewId != top.NewId) continue;
            cur.Id = m.NewId;
            symbols[next].Gone = true;
            cur.Next = symbols[next].Next;
            if (cur.Next >= 0) symbols[cur.Next].Prev = top.Pos;
            if (cur.Prev >= 0) Push(cur.Prev, symbols);
            Push(top.Pos, symbols);
        }
        var ids = new List<int>(symbols.Length);
        for (int k = 0; k >= 0; k = symbols[k].Next) ids.Add(symbols[k].Id);
        return [.. ids];
    }

    private static long Key(int a, int b) => ((long)a << 32) | (uint)b;

    private int[]? ByteTokens(string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        var r = new int[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) if ((r[i] = _byteIds[bytes[i]]) < 0) return null;
        return r;
    }

    // ---------------------------------------------------------------- loading

    internal static BpeTokenizer FromTokenizerJson(byte[] json, int maxTokens, string name) =>
        ReadTokenizerJson(json, name, "BPE", (root, model, bad) =>
        {
            if (Member(model, "dropout") is { } d && !(d.ValueKind == JsonValueKind.Number && d.TryGetDouble(out double p) && p == 0))
                throw bad("model.dropout is set: BPE dropout samples merges at random (a training device); FastAttn tokenizes deterministically");
            if (Member(model, "vocab") is not { ValueKind: JsonValueKind.Object } vj) throw bad("model.vocab is not an object of token: id");
            var ids = new Dictionary<string, int>(StringComparer.Ordinal);
            int size = 0;
            foreach (var e in vj.EnumerateObject())
            {
                CheckText(e.Name, "a vocabulary token", bad);
                if (e.Value.ValueKind != JsonValueKind.Number || !e.Value.TryGetInt32(out int id) || id is < 0 or >= 1 << 24)
                    throw bad($"vocabulary token '{Shorten(e.Name)}' has no id from 0 to {1 << 24}");
                ids[e.Name] = id;                           // a repeated token: the last id, as the library's map keeps it
                size = Math.Max(size, id + 1);
            }
            if (ids.Count == 0) throw bad("the vocabulary is empty");
            string prefix = Str(model, "continuing_subword_prefix") ?? "", suffix = Str(model, "end_of_word_suffix") ?? "";
            CheckText(prefix, "continuing_subword_prefix", bad);
            CheckText(suffix, "end_of_word_suffix", bad);
            var merges = ReadMerges(model, ids, prefix, bad);
            int? unk = null;
            if (Str(model, "unk_token") is { } ut)
                unk = ids.TryGetValue(ut, out int u) ? u : throw bad($"model.unk_token '{Shorten(ut)}' is not in the vocabulary");
            bool Bool(string key) => Flag(model, key, false, bad);
            var pipeline = ReadPipeline(root, ids, size, bad);
            return new BpeTokenizer(ids, merges, unk, Bool("fuse_unk"), Bool("byte_fallback"), Bool("ignore_merges"), prefix, suffix, pipeline, maxTokens);
        });

    /// <summary>
    /// The merge list ("a b" strings, or [a, b] pairs): rank = position (a repeated pair keeps its last rank, as the
    /// library's map does); a, b and their merge (b without the continuing-subword prefix) must be in the vocabulary.
    /// </summary>
    private static Dictionary<long, (int, int)> ReadMerges(JsonElement model, Dictionary<string, int> ids, string prefix, Func<string, InvalidDataException> bad)
    {
        if (Member(model, "merges") is not { ValueKind: JsonValueKind.Array } mj) throw bad("model.merges is not an array");
        var merges = new Dictionary<long, (int, int)>(mj.GetArrayLength());
        int rank = 0;
        foreach (var e in mj.EnumerateArray())
        {
            string a, b;
            if (e.ValueKind == JsonValueKind.String)
            {
                string line = e.GetString()!;
                if (line.StartsWith("#version", StringComparison.Ordinal)) continue;
                var parts = line.Split(' ');
                if (parts.Length != 2) throw bad($"merge {rank + 1} ('{Shorten(line)}') is not two tokens separated by one space");
                (a, b) = (parts[0], parts[1]);
            }
            else if (e.ValueKind == JsonValueKind.Array && e.GetArrayLength() == 2 && e[0].ValueKind == JsonValueKind.String && e[1].ValueKind == JsonValueKind.String)
                (a, b) = (e[0].GetString()!, e[1].GetString()!);
            else throw bad($"merge {rank + 1} is neither \"a b\" nor [a, b]");
            if (!ids.TryGetValue(a, out int ia)) throw bad($"merge {rank + 1}: '{Shorten(a)}' is not in the vocabulary");
            if (!ids.TryGetValue(b, out int ib)) throw bad($"merge {rank + 1}: '{Shorten(b)}' is not in the vocabulary");
            if (prefix.Length > 0 && !b.StartsWith(prefix, StringComparison.Ordinal))
                throw bad($"merge {rank + 1}: '{Shorten(b)}' does not start with the continuing-subword prefix");
            string merged = a + b[prefix.Length..];
            if (!ids.TryGetValue(merged, out int im)) throw bad($"merge {rank + 1}: '{Shorten(merged)}' is not in the vocabulary");
            merges[Key(ia, ib)] = (rank, im);
            rank++;
        }
        return merges;
    }
}
