using System.Text;
using System.Text.Json;

namespace FastAttn.TestSupport;

/// <summary>
/// Test files for BPE tokenizers: a vocabulary and a merge list built from words (each word split in halves recursively,
/// one merge per join, in the order the joins are first needed — so merges compete as a trained list's do), and a
/// Hugging Face <c>tokenizer.json</c> with a BPE model laid out as transformers writes RoBERTa's (or GPT-2's, or a
/// SentencePiece BPE's).
/// </summary>
internal static class BpeFiles
{
    /// <summary>GPT-2's byte alphabet: bytes 33–126, 161–172, 174–255 as themselves, the rest as U+0100 onwards in order (written here from its definition).</summary>
    public static readonly char[] ByteChars = Enumerable.Range(0, 256).Aggregate((Map: new char[256], Next: 0), (acc, b) =>
    {
        acc.Map[b] = b is >= 33 and <= 126 or >= 161 and <= 172 or >= 174 ? (char)b : (char)(256 + acc.Next++);
        return acc;
    }).Map;

    /// <summary>A word in the byte alphabet (its UTF-8 bytes, each as its character).</summary>
    public static string ByteLevel(string word) => new([.. Encoding.UTF8.GetBytes(word).Select(b => ByteChars[b])]);

    public sealed class Model
    {
        public readonly List<string> Vocab = [];                 // id → token
        public readonly HashSet<string> Known = new(StringComparer.Ordinal);
        public readonly List<(string A, string B)> Merges = [];
        public string Prefix = "", Suffix = "";

        public void AddToken(string t) { if (Known.Add(t)) Vocab.Add(t); }

        /// <summary>Adds the merges that build <paramref name="symbols"/> (the word's characters, as tokens) by halves.</summary>
        public string Build(IReadOnlyList<string> symbols, int lo, int hi)
        {
            if (hi - lo == 1) { AddToken(symbols[lo]); return symbols[lo]; }
            int mid = (lo + hi) / 2;
            string l = Build(symbols, lo, mid), r = Build(symbols, mid, hi);
            string merged = l + r[Prefix.Length..];             // the right half never starts the word: it carries the prefix
            if (Known.Add(merged)) { Vocab.Add(merged); Merges.Add((l, r)); }
            return merged;
        }

        /// <summary>A word's characters as tokens: the continuing prefix on all but the first, the suffix on the last.</summary>
        public List<string> Symbols(string word)
        {
            var chars = word.EnumerateRunes().Select(r => r.ToString()).ToList();
            for (int i = 1; i < chars.Count; i++) chars[i] = Prefix + chars[i];
            if (chars.Count > 0) chars[^1] += Suffix;
            return chars;
        }
    }

    /// <summary>
    /// A model whose ids 0–3 are <c>&lt;s&gt; &lt;pad&gt; &lt;/s&gt; &lt;unk&gt;</c>, then <paramref name="baseTokens"/>, then
    /// the words' merges; <c>&lt;mask&gt;</c> is added last by the writer.
    /// </summary>
    public static Model Build(IEnumerable<string> baseTokens, IEnumerable<string> words, string prefix = "", string suffix = "")
    {
        var m = new Model { Prefix = prefix, Suffix = suffix };
        foreach (var s in new[] { "<s>", "<pad>", "</s>", "<unk>" }) m.AddToken(s);
        foreach (var t in baseTokens) m.AddToken(t);
        foreach (var w in words)
        {
            var sy = m.Symbols(w);
            if (sy.Count > 0) m.Build(sy, 0, sy.Count);
        }
        return m;
    }

    public sealed class Settings
    {
        public Action<Utf8JsonWriter>? Normalizer { get; init; }
        public Action<Utf8JsonWriter>? PreTokenizer { get; init; }
        /// <summary>"roberta" (RobertaProcessing), "template" (&lt;s&gt; A), "eos" (A &lt;/s&gt;), "bytelevel", or null.</summary>
        public string? PostProcessor { get; init; } = "roberta";
        public string? UnkToken { get; init; }
        public bool FuseUnk { get; init; }
        public bool ByteFallback { get; init; }
        public bool IgnoreMerges { get; init; }
        /// <summary>Merges as [a, b] pairs (newer files) rather than "a b" strings.</summary>
        public bool TupleMerges { get; init; }
        /// <summary>Added tokens beyond the specials: (content, normalized, single_word, rstrip).</summary>
        public (string Content, bool Normalized, bool SingleWord, bool RStrip)[] Extra { get; init; } = [];
    }

    public static Action<Utf8JsonWriter> ByteLevelPre(bool addPrefixSpace = false, bool useRegex = true) => w =>
    {
        w.WriteStartObject();
        w.WriteString("type", "ByteLevel"); w.WriteBoolean("add_prefix_space", addPrefixSpace); w.WriteBoolean("trim_offsets", true); w.WriteBoolean("use_regex", useRegex);
        w.WriteEndObject();
    };

    /// <summary>A <c>Split</c> pre-tokeniser with a regex pattern, behaviour Isolated (as Qwen2's and Llama 3's files have it).</summary>
    public static Action<Utf8JsonWriter> SplitPre(string regex) => w =>
    {
        w.WriteStartObject();
        w.WriteString("type", "Split");
        w.WriteStartObject("pattern"); w.WriteString("Regex", regex); w.WriteEndObject();
        w.WriteString("behavior", "Isolated"); w.WriteBoolean("invert", false);
        w.WriteEndObject();
    };

    /// <summary>A <c>Split</c> pre-tokeniser with a literal pattern and a delimiter behaviour.</summary>
    public static Action<Utf8JsonWriter> SplitStringPre(string literal, string behavior) => w =>
    {
        w.WriteStartObject();
        w.WriteString("type", "Split");
        w.WriteStartObject("pattern"); w.WriteString("String", literal); w.WriteEndObject();
        w.WriteString("behavior", behavior); w.WriteBoolean("invert", false);
        w.WriteEndObject();
    };

    /// <summary>Qwen2's (Qwen3's) and Llama 3's pre-tokeniser regexes, as their tokenizer.json files carry them.</summary>
    public const string Qwen2Regex = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    public const string Llama3Regex = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>Qwen2/Qwen3's pre-tokeniser: Split by the pattern, then the byte alphabet without the prefix space or GPT-2's regex.</summary>
    public static Action<Utf8JsonWriter> DecoderPre(string regex) => w =>
    {
        w.WriteStartObject();
        w.WriteString("type", "Sequence");
        w.WriteStartArray("pretokenizers");
        SplitPre(regex)(w);
        ByteLevelPre(addPrefixSpace: false, useRegex: false)(w);
        w.WriteEndArray();
        w.WriteEndObject();
    };

    public static void TokenizerJson(string path, Model m, Settings s)
    {
        var vocab = new List<string>(m.Vocab) { "<mask>" };
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
        Added(vocab.Count - 1, "<mask>", true, false, false, false, true);
        int next = vocab.Count;
        foreach (var (content, normalized, singleWord, rstrip) in s.Extra) Added(next++, content, false, normalized, singleWord, rstrip, false);
        w.WriteEndArray();
        if (s.Normalizer != null) { w.WritePropertyName("normalizer"); s.Normalizer(w); } else w.WriteNull("normalizer");
        if (s.PreTokenizer != null) { w.WritePropertyName("pre_tokenizer"); s.PreTokenizer(w); } else w.WriteNull("pre_tokenizer");
        switch (s.PostProcessor)
        {
            case "roberta":
                w.WriteStartObject("post_processor");
                w.WriteString("type", "RobertaProcessing");
                w.WriteStartArray("sep"); w.WriteStringValue("</s>"); w.WriteNumberValue(2); w.WriteEndArray();
                w.WriteStartArray("cls"); w.WriteStringValue("<s>"); w.WriteNumberValue(0); w.WriteEndArray();
                w.WriteBoolean("trim_offsets", true); w.WriteBoolean("add_prefix_space", false);
                w.WriteEndObject();
                break;
            case "template":
                w.WriteStartObject("post_processor");
                w.WriteString("type", "TemplateProcessing");
                w.WriteStartArray("single");
                w.WriteStartObject(); w.WriteStartObject("SpecialToken"); w.WriteString("id", "<s>"); w.WriteNumber("type_id", 0); w.WriteEndObject(); w.WriteEndObject();
                w.WriteStartObject(); w.WriteStartObject("Sequence"); w.WriteString("id", "A"); w.WriteNumber("type_id", 0); w.WriteEndObject(); w.WriteEndObject();
                w.WriteEndArray();
                w.WriteStartArray("pair");
                w.WriteStartObject(); w.WriteStartObject("SpecialToken"); w.WriteString("id", "<s>"); w.WriteNumber("type_id", 0); w.WriteEndObject(); w.WriteEndObject();
                w.WriteStartObject(); w.WriteStartObject("Sequence"); w.WriteString("id", "A"); w.WriteNumber("type_id", 0); w.WriteEndObject(); w.WriteEndObject();
                w.WriteStartObject(); w.WriteStartObject("Sequence"); w.WriteString("id", "B"); w.WriteNumber("type_id", 1); w.WriteEndObject(); w.WriteEndObject();
                w.WriteEndArray();
                w.WriteStartObject("special_tokens");
                w.WriteStartObject("<s>"); w.WriteString("id", "<s>"); w.WriteStartArray("ids"); w.WriteNumberValue(0); w.WriteEndArray();
                w.WriteStartArray("tokens"); w.WriteStringValue("<s>"); w.WriteEndArray(); w.WriteEndObject();
                w.WriteEndObject();
                w.WriteEndObject();
                break;
            case "eos":
                // Qwen3-Embedding's: the end-of-text token after each text ("</s>" stands for <|endoftext|>)
                w.WriteStartObject("post_processor");
                w.WriteString("type", "TemplateProcessing");
                w.WriteStartArray("single");
                w.WriteStartObject(); w.WriteStartObject("Sequence"); w.WriteString("id", "A"); w.WriteNumber("type_id", 0); w.WriteEndObject(); w.WriteEndObject();
                w.WriteStartObject(); w.WriteStartObject("SpecialToken"); w.WriteString("id", "</s>"); w.WriteNumber("type_id", 0); w.WriteEndObject(); w.WriteEndObject();
                w.WriteEndArray();
                w.WriteStartArray("pair");
                w.WriteStartObject(); w.WriteStartObject("Sequence"); w.WriteString("id", "A"); w.WriteNumber("type_id", 0); w.WriteEndObject(); w.WriteEndObject();
                w.WriteStartObject(); w.WriteStartObject("SpecialToken"); w.WriteString("id", "</s>"); w.WriteNumber("type_id", 0); w.WriteEndObject(); w.WriteEndObject();
                w.WriteStartObject(); w.WriteStartObject("Sequence"); w.WriteString("id", "B"); w.WriteNumber("type_id", 1); w.WriteEndObject(); w.WriteEndObject();
                w.WriteStartObject(); w.WriteStartObject("SpecialToken"); w.WriteString("id", "</s>"); w.WriteNumber("type_id", 1); w.WriteEndObject(); w.WriteEndObject();
                w.WriteEndArray();
                w.WriteStartObject("special_tokens");
                w.WriteStartObject("</s>"); w.WriteString("id", "</s>"); w.WriteStartArray("ids"); w.WriteNumberValue(2); w.WriteEndArray();
                w.WriteStartArray("tokens"); w.WriteStringValue("</s>"); w.WriteEndArray(); w.WriteEndObject();
                w.WriteEndObject();
                w.WriteEndObject();
                break;
            case "bytelevel":
                w.WriteStartObject("post_processor");
                w.WriteString("type", "ByteLevel"); w.WriteBoolean("add_prefix_space", true); w.WriteBoolean("trim_offsets", false); w.WriteBoolean("use_regex", true);
                w.WriteEndObject();
                break;
            default:
                w.WriteNull("post_processor");
                break;
        }
        w.WriteNull("decoder");
        w.WriteStartObject("model");
        w.WriteString("type", "BPE");
        w.WriteNull("dropout");
        if (s.UnkToken != null) w.WriteString("unk_token", s.UnkToken); else w.WriteNull("unk_token");
        if (m.Prefix.Length > 0) w.WriteString("continuing_subword_prefix", m.Prefix); else w.WriteNull("continuing_subword_prefix");
        if (m.Suffix.Length > 0) w.WriteString("end_of_word_suffix", m.Suffix); else w.WriteNull("end_of_word_suffix");
        w.WriteBoolean("fuse_unk", s.FuseUnk);
        w.WriteBoolean("byte_fallback", s.ByteFallback);
        w.WriteBoolean("ignore_merges", s.IgnoreMerges);
        w.WriteStartObject("vocab");
        for (int i = 0; i < vocab.Count; i++) w.WriteNumber(vocab[i], i);
        w.WriteEndObject();
        w.WriteStartArray("merges");
        foreach (var (a, b) in m.Merges)
            if (s.TupleMerges) { w.WriteStartArray(); w.WriteStringValue(a); w.WriteStringValue(b); w.WriteEndArray(); }
            else w.WriteStringValue(a + " " + b);
        w.WriteEndArray();
        w.WriteEndObject();
        w.WriteEndObject();
    }
}
