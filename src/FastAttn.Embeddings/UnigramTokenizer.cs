using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

using static FastAttn.Embeddings.TokenizerParts;

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
public sealed class UnigramTokenizer : TextTokenizer, IWordModel
{
    private readonly string[] _vocab;
    private readonly double[] _scores;
    private readonly Trie _trie;
    private readonly Dictionary<string, int> _ids;
    private readonly int? _unkId;
    private readonly double _unkScore;
    private readonly bool _byteFallback;
    private readonly int[] _byteIds;
    private readonly Pipeline _pipeline;

    private UnigramTokenizer(Model m, Pipeline p, int maxTokens)
        : base(p.Templates.Item1, p.Templates.Item2, m.UnkId ?? -1, p.VocabularySize, maxTokens)
    {
        _vocab = m.Vocab; _scores = m.Scores; _trie = m.Trie; _ids = m.Ids; _unkId = m.UnkId; _byteFallback = m.ByteFallback;
        _unkScore = m.MinScore - 10.0;
        // the byte-fallback pieces <0x00> … <0xFF> looked up once (−1: absent), not formatted per byte
        _byteIds = new int[256];
        for (int b = 0; b < 256; b++) _byteIds[b] = m.Ids.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
        _pipeline = p;
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
        return _pipeline.AddedContent(id) ?? "";
    }

    /// <summary>The pieces (as strings) of <paramref name="text"/>, without framing: what the ids stand for.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="text"/> is null.</exception>
    public IReadOnlyList<string> Tokenize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return [.. Pieces(text).Select(Token)];
    }

    private protected override IReadOnlyList<int> Pieces(string text) => _pipeline.Encode(text, this);

    void IWordModel.EncodeWord(string word, List<int> ids) => Encode(word, ids);

    /// <summary>The best-scoring split of one word (SentencePiece's optimised Viterbi pass), appended as ids.</summary>
    private void Encode(string w, List<int> ids)
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

    internal static UnigramTokenizer FromTokenizerJson(byte[] json, int maxTokens, string name) =>
        ReadTokenizerJson(json, name, "Unigram", (root, model, bad) =>
        {
            var m = ReadModel(model, bad);
            var p = ReadPipeline(root, m.Ids, m.Vocab.Length, bad);
            return new UnigramTokenizer(m, p, maxTokens);
        });

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

}
