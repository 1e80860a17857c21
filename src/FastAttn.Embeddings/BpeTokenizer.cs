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
public sealed class BpeTokenizer : TextTokenizer, IWordModel
{
    private readonly Dictionary<string, int> _ids;
    // id → token (for display): a map, not an array sized by the largest id (a tiny file may name id 2^24 − 1)
    private readonly Dictionary<int, string> _tokens = [];
    private readonly Dictionary<long, (int Rank, int NewId)> _merges;
    private readonly int? _unkId;
    private readonly bool _fuseUnk, _byteFallback, _ignoreMerges;
    private readonly string _prefix, _suffix;
    private readonly int[] _byteIds;
    private readonly int[]? _charIds;                                 // BMP character → its one-character token (−1: none); without prefix/suffix
    private readonly Pipeline _pipeline;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private int _cached;

    /// <summary>Words cached at most (each shorter than <see cref="CachedWordLength"/> characters), as the library caches them.</summary>
    private const int CacheCapacity = 10_000, CachedWordLength = 256;

    private BpeTokenizer(Dictionary<string, int> ids, Dictionary<long, (int, int)> merges, int? unkId, bool fuseUnk, bool byteFallback, bool ignoreMerges,
        string prefix, string suffix, Pipeline p, int maxTokens)
        : base(p.Templates.Item1, p.Templates.Item2, unkId ?? -1, p.VocabularySize, maxTokens)
    {
        _ids = ids; _merges = merges; _unkId = unkId; _fuseUnk = fuseUnk; _byteFallback = byteFallback; _ignoreMerges = ignoreMerges;
        _prefix = prefix; _suffix = suffix; _pipeline = p;
        foreach (var (t, id) in ids) _tokens[id] = t;
        foreach (var a in p.Raw.Tokens.Concat(p.Normalized.Tokens)) _tokens.TryAdd(a.Id, a.Content);
        _byteIds = new int[256];
        for (int b = 0; b < 256; b++) _byteIds[b] = ids.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
        if (prefix.Length == 0 && suffix.Length == 0)
        {
            _charIds = new int[0x10000];
            Array.Fill(_charIds, -1);
            foreach (var (t, id) in ids) if (t.Length == 1) _charIds[t[0]] = id;
        }
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
        return FromTokenizerJson(TokenizerJson.ReadFile(path), maxTokens, path, SpecialFraming.Beside(path));
    }

    /// <summary>The token of id <paramref name="id"/> (byte-level tokens as their printable characters, e.g. "Ġthe").</summary>
    /// <exception cref="ArgumentOutOfRangeException">The id is outside the vocabulary.</exception>
    public override string Token(int id)
    {
        if ((uint)id >= (uint)VocabularySize) throw new ArgumentOutOfRangeException(nameof(id), id, $"ids are 0..{VocabularySize - 1}.");
        return _tokens.GetValueOrDefault(id, "");
    }

    /// <summary>The tokens (as strings) of <paramref name="text"/>, without framing: what the ids stand for.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="text"/> is null.</exception>
    public IReadOnlyList<string> Tokenize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return [.. Pieces(text).Select(Token)];
    }

    private protected override IReadOnlyList<int> Pieces(string text) => _pipeline.Encode(text, this);

    void IWordModel.EncodeWord(string word, List<int> ids) => ids.AddRange(Word(word));

    /// <summary>One word's ids: cached, or merged.</summary>
    private int[] Word(string w)
    {
        if (w.Length == 0) return [];
        if (_ignoreMerges && _ids.TryGetValue(w, out int whole)) return [whole];
        if (_cache.TryGetValue(w, out var hit)) return hit;
        var r = Merge(w);
        // (ConcurrentDictionary.Count takes every lock: a counter of our own instead)
        if (w.Length < CachedWordLength && Volatile.Read(ref _cached) < CacheCapacity && _cache.TryAdd(w, r)) Interlocked.Increment(ref _cached);
        return r;
    }

    private struct Symbol { public int Id, Prev, Next; public bool Gone; }

    // per-thread working buffers (the tokenizer is shared by threads): kept for words up to this many symbols, so a
    // hostile megabyte-long word does not pin its buffers to the thread
    private const int KeptSymbols = 4096, SmallWord = 64;
    [ThreadStatic] private static Symbol[]? t_symbols;
    [ThreadStatic] private static (long Order, int NewId)[]? t_entries;
    [ThreadStatic] private static PriorityQueue<(int Pos, int NewId), long>? t_queue;

    /// <summary>The library's merge: the word's characters as tokens, then the lowest-ranked mergeable pair merged (leftmost first) until none is left.</summary>
    private int[] Merge(string w)
    {
        // one token per character and a pending unknown, grown when byte fallback spells a character in up to 4 bytes (sizing
        // for 4 per character up front zeroed 64 MB for a megabyte-long word); a word's array is written before it is read
        int cap = w.Length + 1;
        var syms = cap <= KeptSymbols ? (t_symbols ??= new Symbol[KeptSymbols]) : GC.AllocateUninitializedArray<Symbol>(cap);
        int n = 0;
        int pendingUnk = -1;
        for (int i = 0; i < w.Length;)
        {
            int len = char.IsHighSurrogate(w[i]) && i + 1 < w.Length && char.IsLowSurrogate(w[i + 1]) ? 2 : 1;
            bool first = i == 0, last = i + len == w.Length;
            int id = -1;
            string? s = null;
            if (len == 1 && _charIds != null) id = _charIds[w[i]];
            else
            {
                s = w.Substring(i, len);
                if (!first && _prefix.Length > 0) s = _prefix + s;
                if (last && _suffix.Length > 0) s += _suffix;
                if (!_ids.TryGetValue(s, out id)) id = -1;
            }
            if (id >= 0)
            {
                if (pendingUnk >= 0) { Add(ref syms, ref n, pendingUnk); pendingUnk = -1; }
                Add(ref syms, ref n, id);
            }
            else if (_byteFallback && ByteTokens(s ?? w.Substring(i, len), ref syms, ref n)) { }   // as the library: a byte run does not flush a pending unknown token
            else if (_unkId is int unk)
            {
                if (pendingUnk >= 0 && !_fuseUnk) Add(ref syms, ref n, pendingUnk);
                pendingUnk = unk;
            }
            // neither byte fallback nor an unknown token: the character is dropped, as in the library
            i += len;
        }
        if (pendingUnk >= 0) Add(ref syms, ref n, pendingUnk);
        var symbols = syms.AsSpan(0, n);
        if (n >= 2)
        {
            if (n <= SmallWord) MergeSmall(symbols);
            else MergeLarge(symbols);
        }
        int count = 0;
        for (int k = 0; k >= 0 && n > 0; k = symbols[k].Next) count++;
        var ids = new int[count];
        for (int k = 0, j = 0; j < count; k = symbols[k].Next) ids[j++] = symbols[k].Id;
        return ids;
    }

    private static void Add(ref Symbol[] syms, ref int n, int id)
    {
        if (n == syms.Length) Array.Resize(ref syms, 2 * n); // a copy: the thread's kept array stays as it is
        if (n > 0) syms[n - 1].Next = n;
        syms[n] = new Symbol { Id = id, Prev = n - 1, Next = -1 };
        n++;
    }

    /// <summary>The merge queue of a short word as an unsorted list (smallest (rank, position) taken by a scan): the heap's order, no allocation.</summary>
    private void MergeSmall(Span<Symbol> symbols)
    {
        var entries = t_entries ??= new (long, int)[4 * SmallWord];
        int count = 0;
        for (int k = 0; k + 1 < symbols.Length; k++) Push(symbols, k, entries, ref count);
        while (count > 0)
        {
            int best = 0;
            for (int e = 1; e < count; e++) if (entries[e].Order < entries[best].Order) best = e;
            var (order, newId) = entries[best];
            entries[best] = entries[--count];
            Apply(symbols, (int)(uint)order, newId, entries, ref count);
        }
    }

    private void Push(Span<Symbol> symbols, int pos, (long Order, int NewId)[] entries, ref int count)
    {
        int next = symbols[pos].Next;
        if (next >= 0 && _merges.TryGetValue(Key(symbols[pos].Id, symbols[next].Id), out var m)) entries[count++] = (((long)m.Rank << 32) | (uint)pos, m.NewId);
    }

    private void Apply(Span<Symbol> symbols, int pos, int newId, (long Order, int NewId)[] entries, ref int count)
    {
        ref var cur = ref symbols[pos];
        if (cur.Gone || cur.Next < 0) return;
        int next = cur.Next;
        // an entry whose pair has changed since it was queued is skipped (the library compares the merged token only)
        if (!_merges.TryGetValue(Key(cur.Id, symbols[next].Id), out var m) || m.NewId != newId) return;
        cur.Id = newId;
        symbols[next].Gone = true;
        cur.Next = symbols[next].Next;
        if (cur.Next >= 0) symbols[cur.Next].Prev = pos;
        if (cur.Prev >= 0) Push(symbols, cur.Prev, entries, ref count);
        Push(symbols, pos, entries, ref count);
    }

    /// <summary>A long word: the same order with a heap (O(n log n)).</summary>
    private void MergeLarge(Span<Symbol> symbols)
    {
        var queue = symbols.Length <= KeptSymbols ? (t_queue ??= new PriorityQueue<(int, int), long>()) : new PriorityQueue<(int, int), long>(symbols.Length);
        queue.Clear();
        void Enqueue(Span<Symbol> ss, int pos)
        {
            int next = ss[pos].Next;
            if (next >= 0 && _merges.TryGetValue(Key(ss[pos].Id, ss[next].Id), out var m)) queue.Enqueue((pos, m.NewId), ((long)m.Rank << 32) | (uint)pos);
        }
        for (int k = 0; k + 1 < symbols.Length; k++) Enqueue(symbols, k);
        while (queue.TryDequeue(out var top, out _))
        {
            ref var cur = ref symbols[top.Item1];
            if (cur.Gone || cur.Next < 0) continue;
            int next = cur.Next;
            if (!_merges.TryGetValue(Key(cur.Id, symbols[next].Id), out var m) || m.NewId != top.Item2) continue;
            cur.Id = m.NewId;
            symbols[next].Gone = true;
            cur.Next = symbols[next].Next;
            if (cur.Next >= 0) symbols[cur.Next].Prev = top.Item1;
            if (cur.Prev >= 0) Enqueue(symbols, cur.Prev);
            Enqueue(symbols, top.Item1);
        }
        if (queue.Count == 0 && symbols.Length <= KeptSymbols) queue.TrimExcess();
    }

    /// <summary>
    /// The merge table's key of the pair (a, b): a in the high half, b mixed with a multiple of a in the low half (still one
    /// key per pair). A long's hash is its halves XORed, and with (a, b) as the halves every pair with the same a ^ b —
    /// thousands in a 50,000-token vocabulary — fell into one bucket chain: 75 % of a megabyte of digits' 4.4 s went to
    /// those lookups. The multiplier is drawn per process, so no tokenizer file can line its merges up on one hash.
    /// </summary>
    private static long Key(int a, int b) => ((long)a << 32) | (uint)(b ^ (int)((uint)a * s_keyMix));

    private static readonly uint s_keyMix = (uint)Random.Shared.Next() << 1 | 0x8000_0001u;

    /// <summary>The byte tokens of <paramref name="s"/>'s UTF-8 bytes appended, if every one is in the vocabulary.</summary>
    private bool ByteTokens(string s, ref Symbol[] syms, ref int n)
    {
        Span<byte> bytes = stackalloc byte[Encoding.UTF8.GetMaxByteCount(s.Length)];
        int count = Encoding.UTF8.GetBytes(s, bytes);
        for (int i = 0; i < count; i++) if (_byteIds[bytes[i]] < 0) return false;
        for (int i = 0; i < count; i++) Add(ref syms, ref n, _byteIds[bytes[i]]);
        return true;
    }

    // ---------------------------------------------------------------- loading

    internal static BpeTokenizer FromTokenizerJson(byte[] json, int maxTokens, string name, SpecialFraming? framing = null) =>
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
            var pipeline = ReadPipeline(root, ids, size, bad, framing);
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
