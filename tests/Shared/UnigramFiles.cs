using System.Text;
using System.Text.Json;

namespace FastAttn.TestSupport;

/// <summary>
/// Test files for SentencePiece Unigram tokenizers: a <c>precompiled_charsmap</c> written in SentencePiece's Darts-clone
/// double-array layout (what the Rust tokenizers library and FastAttn read), and a Hugging Face <c>tokenizer.json</c> with a
/// Unigram model laid out as transformers writes XLM-RoBERTa's.
/// </summary>
internal static class UnigramFiles
{
    /// <summary>
    /// A charsmap of <paramref name="rules"/> (UTF-8 key → replacement; keys non-empty without NUL): u32 trie byte length,
    /// the units, the NUL-terminated replacements. Each node gets a unique base b (its children at b ^ label, its value
    /// at b), first fit; the array is a whole number of 256-unit blocks so that b ^ label stays inside it.
    /// </summary>
    public static byte[] CharsMap(IEnumerable<(string Key, string Value)> rules)
    {
        var strings = new MemoryStream();
        var offsets = new Dictionary<string, int>(StringComparer.Ordinal);
        var root = new Node();
        foreach (var (key, value) in rules)
        {
            var bytes = Encoding.UTF8.GetBytes(key);
            if (bytes.Length == 0 || bytes.Contains((byte)0)) throw new ArgumentException("a key must be non-empty and hold no NUL");
            if (!offsets.TryGetValue(value, out int off))
            {
                off = (int)strings.Length;
                offsets[value] = off;
                var v = Encoding.UTF8.GetBytes(value);
                strings.Write(v);
                strings.WriteByte(0);
            }
            var n = root;
            foreach (var b in bytes) n = n.Children.TryGetValue(b, out var c) ? c : n.Children[b] = new Node();
            n.Value = off;
        }
        var units = new List<uint> { 0 };
        var used = new List<bool> { true };
        var bases = new HashSet<int>();
        void Grow(int upTo) { while (units.Count <= upTo) { units.Add(0); used.Add(false); } }
        bool Free(int p) => p >= used.Count || !used[p];
        int firstFree = 1;
        var queue = new Queue<(Node Node, int Pos)>();
        queue.Enqueue((root, 0));
        while (queue.Count > 0)
        {
            var (node, pos) = queue.Dequeue();
            bool leaf = node != root && node.Value >= 0;
            var labels = node.Children.Keys.ToList();
            if (!leaf && labels.Count == 0) continue;
            while (!Free(firstFree)) firstFree++;
            int b = firstFree;
            for (; ; b++)
            {
                if (bases.Contains(b) || (leaf && !Free(b))) continue;
                if (labels.All(c => Free(b ^ c))) break;
            }
            bases.Add(b);
            Grow(b | 255);
            int offset = pos ^ b;
            if (offset >= 1 << 21) throw new InvalidOperationException("charsmap too large for the test builder");
            units[pos] = (units[pos] & 0xFF) | ((uint)offset << 10) | (leaf ? 1u << 8 : 0);
            if (leaf) { units[b] = 0x8000_0000u | (uint)node.Value; used[b] = true; }
            foreach (var c in labels)
            {
                int q = b ^ c;
                units[q] = c;
                used[q] = true;
                queue.Enqueue((node.Children[c], q));
            }
        }
        Grow(((units.Count + 255) & ~255) - 1);
        var r = new MemoryStream();
        r.Write(BitConverter.GetBytes((uint)(units.Count * 4)));
        foreach (var u in units) r.Write(BitConverter.GetBytes(u));
        r.Write(strings.ToArray());
        return r.ToArray();
    }

    /// <summary>
    /// A Unigram vocabulary from a WordPiece one (all-MiniLM-L6-v2's): word-initial pieces as <c>▁word</c> and bare,
    /// continuations without <c>##</c>, scores log-probability-like by rank (rounded, so that some tie), plus
    /// <paramref name="extraWords"/>.
    /// </summary>
    public static List<(string, double)> PiecesFromWordPiece(IEnumerable<string> vocabLines, IEnumerable<string> extraWords)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal) { "<s>", "<pad>", "</s>", "<unk>", "<mask>" };
        var r = new List<(string, double)>();
        int rank = 0;
        void Add(string p)
        {
            if (p.Length == 0 || !seen.Add(p)) return;
            r.Add((p, -Math.Round(Math.Log(2 + rank++) + 0.05 * p.Length, 2)));
        }
        Add("\u2581");
        foreach (var line in vocabLines)
        {
            if (line.StartsWith('[') && line.EndsWith(']')) continue;
            if (line.StartsWith("##", StringComparison.Ordinal)) { Add(line[2..]); continue; }
            Add("\u2581" + line);
            Add(line);
        }
        foreach (var w in extraWords) { Add("\u2581" + w); Add(w); }
        return r;
    }

    private sealed class Node
    {
        public readonly SortedDictionary<byte, Node> Children = [];
        public int Value = -1;
    }

    /// <summary>
    /// NFKC-like rules in the spirit of SentencePiece's nmt_nfkc: every code point of the BMP and of the mathematical and
    /// enclosed alphanumerics whose NFKC form differs maps to it; C0/C1 controls are removed, tab / line breaks / ideographic
    /// space become a space; and base letter + combining accent pairs map to their composed letter (keys of two characters,
    /// which exercise the whole-cluster rule).
    /// </summary>
    public static List<(string, string)> NfkcLikeRules()
    {
        var nfkc = ICU4N.Text.Normalizer2.NFKCInstance;
        var rules = new List<(string, string)>();
        foreach (var range in new[] { (0x80, 0xFFFF), (0x1D400, 0x1D7FF), (0x1F100, 0x1F1FF) })
            for (int cp = range.Item1; cp <= range.Item2; cp++)
            {
                if (cp is >= 0xD800 and <= 0xDFFF) continue;
                string s = char.ConvertFromUtf32(cp), n = nfkc.Normalize(s);
                if (n != s) rules.Add((s, n));
            }
        for (int cp = 1; cp < 0xA0; cp++)
            if (cp is < 0x20 or (>= 0x7F and < 0xA0)) rules.Add((((char)cp).ToString(), cp is '\t' or '\n' or '\r' ? " " : ""));
        rules.Add(("\u3000", " "));
        foreach (char b in "aeiouAEIOUncyz")
            foreach (char m in "\u0300\u0301\u0302\u0303\u0308\u0327")
            {
                string k = $"{b}{m}", c = k.Normalize(NormalizationForm.FormC);
                if (c.Length == 1) rules.Add((k, c));
            }
        return rules;
    }

    /// <summary>Settings of <see cref="TokenizerJson"/>.</summary>
    public sealed record Settings
    {
        /// <summary>The normalizer object, written by the caller (null: none).</summary>
        public Action<Utf8JsonWriter>? Normalizer { get; init; }
        /// <summary>The pre_tokenizer object (null: none).</summary>
        public Action<Utf8JsonWriter>? PreTokenizer { get; init; }
        /// <summary>XLM-RoBERTa's <c>&lt;s&gt; A &lt;/s&gt;</c> template (false: no post-processor).</summary>
        public bool Template { get; init; } = true;
        public bool ByteFallback { get; init; }
        public bool MaskLStrip { get; init; } = true;
        /// <summary>Added tokens beyond the specials: (content, normalized, single_word, rstrip).</summary>
        public (string Content, bool Normalized, bool SingleWord, bool RStrip)[] Extra { get; init; } = [];
    }

    /// <summary>XLM-RoBERTa's normaliser: the charsmap, then runs of spaces as one.</summary>
    public static Action<Utf8JsonWriter> XlmrNormalizer(byte[] charsMap) => w =>
    {
        w.WriteStartObject();
        w.WriteString("type", "Sequence");
        w.WriteStartArray("normalizers");
        w.WriteStartObject(); w.WriteString("type", "Precompiled"); w.WriteString("precompiled_charsmap", Convert.ToBase64String(charsMap)); w.WriteEndObject();
        w.WriteStartObject(); w.WriteString("type", "Replace");
        w.WriteStartObject("pattern"); w.WriteString("Regex", " {2,}"); w.WriteEndObject();
        w.WriteString("content", " "); w.WriteEndObject();
        w.WriteEndArray();
        w.WriteEndObject();
    };

    public static Action<Utf8JsonWriter> Metaspace(string scheme = "always", bool split = true) => w =>
    {
        w.WriteStartObject();
        w.WriteString("type", "Metaspace"); w.WriteString("replacement", "\u2581"); w.WriteString("prepend_scheme", scheme); w.WriteBoolean("split", split);
        w.WriteEndObject();
    };

    /// <summary>
    /// Writes a tokenizer.json: <c>&lt;s&gt; &lt;pad&gt; &lt;/s&gt; &lt;unk&gt;</c> as ids 0–3 (score 0), then
    /// <paramref name="pieces"/>, then <c>&lt;mask&gt;</c>; unk_id 3.
    /// </summary>
    public static void TokenizerJson(string path, IReadOnlyList<(string Piece, double Score)> pieces, Settings s)
    {
        var vocab = new List<(string, double)> { ("<s>", 0), ("<pad>", 0), ("</s>", 0), ("<unk>", 0) };
        vocab.AddRange(pieces);
        vocab.Add(("<mask>", 0));
        using var f = File.Create(path);
        using var w = new Utf8JsonWriter(f);
        w.WriteStartObject();
        w.WriteString("version", "1.0");
        w.WriteNull("truncation");
        w.WriteNull("padding");
        w.WriteStartArray("added_tokens");
        void Added(int id, string content, bool lstrip, bool normalized, bool singleWord, bool rstrip, bool special)
        {
            w.WriteStartObject();
            w.WriteNumber("id", id); w.WriteString("content", content);
            w.WriteBoolean("single_word", singleWord); w.WriteBoolean("lstrip", lstrip); w.WriteBoolean("rstrip", rstrip);
            w.WriteBoolean("normalized", normalized); w.WriteBoolean("special", special);
            w.WriteEndObject();
        }
        Added(0, "<s>", false, false, false, false, true);
        Added(1, "<pad>", false, false, false, false, true);
        Added(2, "</s>", false, false, false, false, true);
        Added(3, "<unk>", false, false, false, false, true);
        Added(vocab.Count - 1, "<mask>", s.MaskLStrip, false, false, false, true);
        int next = vocab.Count;
        foreach (var (content, normalized, singleWord, rstrip) in s.Extra) Added(next++, content, false, normalized, singleWord, rstrip, false);
        w.WriteEndArray();
        if (s.Normalizer != null) { w.WritePropertyName("normalizer"); s.Normalizer(w); } else w.WriteNull("normalizer");
        if (s.PreTokenizer != null) { w.WritePropertyName("pre_tokenizer"); s.PreTokenizer(w); } else w.WriteNull("pre_tokenizer");
        if (s.Template)
        {
            w.WriteStartObject("post_processor");
            w.WriteString("type", "TemplateProcessing");
            void Piece(string kind, string id)
            {
                w.WriteStartObject(); w.WriteStartObject(kind); w.WriteString("id", id); w.WriteNumber("type_id", 0); w.WriteEndObject(); w.WriteEndObject();
            }
            w.WriteStartArray("single"); Piece("SpecialToken", "<s>"); Piece("Sequence", "A"); Piece("SpecialToken", "</s>"); w.WriteEndArray();
            w.WriteStartArray("pair");
            Piece("SpecialToken", "<s>"); Piece("Sequence", "A"); Piece("SpecialToken", "</s>"); Piece("SpecialToken", "</s>"); Piece("Sequence", "B"); Piece("SpecialToken", "</s>");
            w.WriteEndArray();
            w.WriteStartObject("special_tokens");
            foreach (var (name, id) in new[] { ("<s>", 0), ("</s>", 2) })
            {
                w.WriteStartObject(name);
                w.WriteString("id", name);
                w.WriteStartArray("ids"); w.WriteNumberValue(id); w.WriteEndArray();
                w.WriteStartArray("tokens"); w.WriteStringValue(name); w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
            w.WriteEndObject();
        }
        else w.WriteNull("post_processor");
        w.WriteNull("decoder");
        w.WriteStartObject("model");
        w.WriteString("type", "Unigram");
        w.WriteNumber("unk_id", 3);
        w.WriteStartArray("vocab");
        foreach (var (p, sc) in vocab) { w.WriteStartArray(); w.WriteStringValue(p); w.WriteNumberValue(sc); w.WriteEndArray(); }
        w.WriteEndArray();
        w.WriteBoolean("byte_fallback", s.ByteFallback);
        w.WriteEndObject();
        w.WriteEndObject();
    }
}
