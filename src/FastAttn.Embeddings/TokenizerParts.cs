using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using ICU4N.Text;
using TemplatePiece = FastAttn.Embeddings.TextTokenizer.TemplatePiece;

namespace FastAttn.Embeddings;

/// <summary>
/// The parts of a Hugging Face <c>tokenizer.json</c> pipeline that do not depend on the model — added tokens, normalisers,
/// pre-tokenisers, the post-processor's framing — shared by <see cref="UnigramTokenizer"/> and <see cref="BpeTokenizer"/>.
/// </summary>
internal static class TokenizerParts
{
    /// <summary>Lone surrogates (which the Rust library cannot receive) as U+FFFD, as the UTF-8 conversion does.</summary>
    internal static string WellFormed(string text)
    {
        int i = text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF');
        if (i < 0) return text;
        var sb = new StringBuilder(text.Length);
        foreach (var r in text.EnumerateRunes()) sb.Append(r.ToString());
        return sb.ToString();
    }

    /// <summary>
    /// Checks and parses a tokenizer.json (size, UTF-8, JSON, a <c>model</c> of type <paramref name="modelType"/>) and
    /// builds the tokenizer from its root and model; every problem is an <see cref="InvalidDataException"/> naming the file.
    /// </summary>
    internal static T ReadTokenizerJson<T>(byte[] json, string name, string modelType, Func<JsonElement, JsonElement, Func<string, InvalidDataException>, T> build)
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
            if (Str(model, "type") is var type && type != modelType) throw Bad($"model type '{type}' is not {modelType}");
            return build(root, model, Bad);
        }
        catch (InvalidOperationException e)
        {
            // System.Text.Json refuses to read a string whose escapes leave a lone surrogate
            throw Bad($"a string holds a lone surrogate ({e.Message})");
        }
    }

    /// <summary>A tokenizer.json's model: the ids of one pre-tokenised word.</summary>
    internal interface IWordModel
    {
        void EncodeWord(string word, List<int> ids);
    }

    /// <summary>What a tokenizer.json says around its model.</summary>
    internal sealed record Pipeline(Normalizer? Normalizer, PreTokenizer? PreTokenizer, AddedTokens Raw, AddedTokens Normalized,
        (TemplatePiece[], TemplatePiece[]) Templates, int VocabularySize)
    {
        /// <summary>
        /// The ids of <paramref name="text"/> (lone surrogates as U+FFFD first): added tokens matched in the raw text; the
        /// rest normalised and added tokens matched in it; the rest pre-tokenised into words, each encoded by <paramref name="model"/>.
        /// </summary>
        public List<int> Encode(string text, IWordModel model)
        {
            text = WellFormed(text);
            var ids = new List<int>();
            foreach (var (rawPiece, rawId) in Raw.Split(text))
            {
                if (rawId >= 0) { ids.Add(rawId); continue; }
                string norm = Normalizer == null ? rawPiece : Normalizer.Apply(rawPiece);
                foreach (var (piece, id) in Normalized.Split(norm))
                {
                    if (id >= 0) { ids.Add(id); continue; }
                    if (PreTokenizer == null) { if (piece.Length > 0) model.EncodeWord(piece, ids); continue; }
                    foreach (var w in PreTokenizer.Split(piece)) model.EncodeWord(w, ids);
                }
            }
            return ids;
        }

        /// <summary>The content of added token <paramref name="id"/>, or null.</summary>
        public string? AddedContent(int id)
        {
            foreach (var t in Raw.Tokens) if (t.Id == id) return t.Content;
            foreach (var t in Normalized.Tokens) if (t.Id == id) return t.Content;
            return null;
        }
    }

    /// <summary>
    /// The normaliser, pre-tokeniser, added tokens (the model's id when the model has the content, as the library assigns
    /// them, else the file's) and post-processor of a tokenizer.json whose model knows <paramref name="ids"/> and has
    /// <paramref name="modelSize"/> ids.
    /// </summary>
    internal static Pipeline ReadPipeline(JsonElement root, IReadOnlyDictionary<string, int> ids, int modelSize, Func<string, InvalidDataException> bad,
        SpecialFraming? framing = null)
    {
        var normalizer = Member(root, "normalizer") is { } nj ? Normalizer.Read(nj, bad) : null;
        var pre = Member(root, "pre_tokenizer") is { } pj ? PreTokenizer.Read(pj, bad) : null;
        var raw = new List<AddedToken>();
        var normalized = new List<AddedToken>();
        int size = modelSize;
        if (Member(root, "added_tokens") is { } at)
        {
            if (at.ValueKind != JsonValueKind.Array) throw bad("added_tokens is not an array");
            foreach (var t in at.EnumerateArray())
            {
                string content = Str(t, "content") ?? throw bad("an added token has no content");
                if (content.Length == 0) continue;
                CheckText(content, "an added token", bad);
                int id = ids.TryGetValue(content, out int mid) ? mid
                    : Member(t, "id") is { ValueKind: JsonValueKind.Number } idj && idj.TryGetInt32(out int fid) && fid is >= 0 and < 1 << 24 ? fid
                    : throw bad($"added token '{Shorten(content)}' has no id from 0 to {1 << 24}");
                size = Math.Max(size, id + 1);
                bool norm = Flag(t, "normalized", !Flag(t, "special", false, bad), bad);
                var tok = new AddedToken(norm && normalizer != null ? normalizer.Apply(content) : content, id,
                    Flag(t, "single_word", false, bad), Flag(t, "lstrip", false, bad), Flag(t, "rstrip", false, bad));
                if (tok.Content.Length == 0) continue;
                (norm ? normalized : raw).Add(tok);
            }
        }
        int Special(string content) => ids.TryGetValue(content, out int i) ? i
            : raw.Concat(normalized).FirstOrDefault(a => a.Content == content) is { } a ? a.Id
            : throw bad($"the post-processor's '{Shorten(content)}' is neither in the vocabulary nor an added token");
        int ConfigSpecial(string content) => ids.TryGetValue(content, out int i) ? i
            : raw.Concat(normalized).FirstOrDefault(a => a.Content == content) is { } a ? a.Id
            : throw bad($"tokenizer_config.json's bos/eos token '{Shorten(content)}' is neither in the vocabulary nor an added token");
        var templates = framing is { } f ? f.Templates(ConfigSpecial)
            : Member(root, "post_processor") is { } pp ? ReadTemplates(pp, Special, bad) : ([new(-1, 0)], [new(-1, 0), new(-2, 1)]);
        foreach (var p in templates.Item1.Concat(templates.Item2)) if (p.Id >= 0) size = Math.Max(size, p.Id + 1);
        return new Pipeline(normalizer, pre, new AddedTokens(raw), new AddedTokens(normalized), templates, size);
    }

    /// <summary>
    /// The framing transformers' Llama and Gemma fast tokenizers build for themselves when loaded (their
    /// <c>update_post_processor</c>), from <c>tokenizer_config.json</c>'s <c>add_bos_token</c> (default true) and
    /// <c>add_eos_token</c> (default false) — it replaces whatever template the tokenizer.json carries:
    /// <c>[bos] A [eos]</c>, pairs <c>[bos] A [eos] [bos] B [eos]</c> with type 1 on the second part.
    /// </summary>
    internal sealed record SpecialFraming(bool AddBos, bool AddEos, string Bos, string Eos)
    {
        public (TemplatePiece[], TemplatePiece[]) Templates(Func<string, int> special)
        {
            var single = new List<TemplatePiece>();
            if (AddBos) single.Add(new(special(Bos), 0));
            single.Add(new(-1, 0));
            if (AddEos) single.Add(new(special(Eos), 0));
            var pair = new List<TemplatePiece>(single);
            if (AddBos) pair.Add(new(special(Bos), 1));
            pair.Add(new(-2, 1));
            if (AddEos) pair.Add(new(special(Eos), 1));
            return ([.. single], [.. pair]);
        }

        /// <summary>The tokenizer classes whose fast form rebuilds its framing from these flags.</summary>
        private static readonly HashSet<string> Classes = new(StringComparer.Ordinal)
            { "LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer", "CodeLlamaTokenizerFast", "GemmaTokenizer", "GemmaTokenizerFast" };

        /// <summary>
        /// The framing a <c>tokenizer_config.json</c> beside <paramref name="tokenizerJson"/> asks for, or null when there is
        /// none or its class keeps the tokenizer.json's post-processor.
        /// </summary>
        /// <exception cref="InvalidDataException">The file is not valid JSON or a field is of the wrong kind.</exception>
        public static SpecialFraming? Beside(string tokenizerJson)
        {
            string dir = Path.GetDirectoryName(Path.GetFullPath(tokenizerJson)) ?? ".";
            string path = Path.Combine(dir, "tokenizer_config.json");
            if (!File.Exists(path)) return null;
            return Parse(FastAttn.IO.BoundedFile.ReadAllBytes(path, 16 << 20, "a tokenizer_config.json"), path);
        }

        /// <summary>The framing a <c>tokenizer_config.json</c>'s bytes ask for (see <see cref="Beside"/>).</summary>
        /// <exception cref="InvalidDataException">Not valid UTF-8 JSON, or a field is of the wrong kind.</exception>
        public static SpecialFraming? Parse(byte[] bytes, string path)
        {
            InvalidDataException Bad(string what) => new($"'{path}': {what}.");
            if (!System.Text.Unicode.Utf8.IsValid(bytes)) throw Bad("not valid UTF-8");
            try
            {
                using var doc = JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 64, AllowTrailingCommas = true });
                var r = doc.RootElement;
                if (r.ValueKind != JsonValueKind.Object) throw Bad("not a JSON object");
                if (Str(r, "tokenizer_class") is not { } cls || !Classes.Contains(cls)) return null;
                bool gemma = cls.StartsWith("Gemma", StringComparison.Ordinal);
                string Token(string key, string fallback) => Member(r, key) switch
                {
                    null => fallback,
                    { ValueKind: JsonValueKind.String } v => v.GetString()!,
                    { ValueKind: JsonValueKind.Object } o when Str(o, "content") is { } c => c,
                    _ => throw Bad($"'{key}' is neither a string nor a token with content"),
                };
                return new SpecialFraming(Flag(r, "add_bos_token", true, Bad), Flag(r, "add_eos_token", false, Bad),
                    Token("bos_token", gemma ? "<bos>" : "<s>"), Token("eos_token", gemma ? "<eos>" : "</s>"));
            }
            catch (JsonException e) { throw new InvalidDataException($"'{path}': not valid JSON: {e.Message}", e); }
            // System.Text.Json refuses to read a string whose escapes leave a lone surrogate
            catch (InvalidOperationException e) { throw new InvalidDataException($"'{path}': a string holds a lone surrogate ({e.Message})", e); }
        }
    }

    internal static (TemplatePiece[], TemplatePiece[]) ReadTemplates(JsonElement pp, Func<string, int> special, Func<string, InvalidDataException> bad)
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
                    return TextTokenizer.ClsSepTemplates(Tok("cls"), Tok("sep"), doubleSeparator: Str(pp, "type") == "RobertaProcessing");
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
            case "ByteLevel":
                // GPT-2's: offsets only, no framing
                return ([new(-1, 0)], [new(-1, 0), new(-2, 1)]);
            default:
                throw bad($"post_processor '{Str(pp, "type") ?? pp.ValueKind.ToString()}' is not TemplateProcessing, RobertaProcessing, BertProcessing or ByteLevel");
        }
    }

    internal static JsonElement? Member(JsonElement o, string key) =>
        o.ValueKind == JsonValueKind.Object && o.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    internal static string? Str(JsonElement o, string key) => Member(o, key) is { ValueKind: JsonValueKind.String } v ? v.GetString() : null;

    internal static bool Flag(JsonElement o, string key, bool missing, Func<string, InvalidDataException> bad) => Member(o, key) switch
    {
        null => missing,
        { ValueKind: JsonValueKind.True } => true,
        { ValueKind: JsonValueKind.False } => false,
        _ => throw bad($"'{key}' is not true or false"),
    };

    internal static string Shorten(string s) => s.Length <= 40 ? s : s[..40] + "…";

    /// <summary>Strings from the file must be well-formed UTF-16 (JSON can escape a lone surrogate; the Rust library refuses it).</summary>
    internal static void CheckText(string s, string what, Func<string, InvalidDataException> bad)
    {
        if (s.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') < 0) return;
        for (int i = 0; i < s.Length; i++)
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) i++;
            else if (char.IsSurrogate(s[i])) throw bad($"{what} holds a lone surrogate");
    }

    // ---------------------------------------------------------------- added tokens

    internal sealed record AddedToken(string Content, int Id, bool SingleWord, bool LStrip, bool RStrip);

    /// <summary>Added tokens found leftmost-longest, as the library's Aho-Corasick automaton finds them (a char trie here).</summary>
    internal sealed class AddedTokens
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

        internal static int PrevStart(string text, int i) => i >= 2 && char.IsLowSurrogate(text[i - 1]) && char.IsHighSurrogate(text[i - 2]) ? i - 2 : i - 1;
        internal static bool IsWordBefore(string text, int i) => Rune.TryGetRuneAt(text, PrevStart(text, i), out var r) && IsWord(r);
        internal static bool IsWordAt(string text, int i) => Rune.TryGetRuneAt(text, i, out var r) && IsWord(r);

        /// <summary>Regex <c>\w</c> as the Rust regex crate has it: Alphabetic (which includes letter numbers and symbols such as 🄰), marks, decimal digits, connector punctuation, joiners.</summary>
        internal static bool IsWord(Rune r) => r.Value is 0x200C or 0x200D || ICU4N.UChar.HasBinaryProperty(r.Value, ICU4N.Globalization.UProperty.Alphabetic)
            || Rune.GetUnicodeCategory(r) is UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.EnclosingMark
            or UnicodeCategory.DecimalDigitNumber or UnicodeCategory.ConnectorPunctuation;
    }

    // ---------------------------------------------------------------- normalisers

    internal abstract class Normalizer
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

    internal sealed class Steps(Normalizer[] steps) : Normalizer
    {
        public override string Apply(string s)
        {
            foreach (var n in steps) s = n.Apply(s);
            return s;
        }
    }

    internal sealed class Precompiled(PrecompiledCharsMap map) : Normalizer
    {
        public override string Apply(string s) => map.Normalize(s);
    }

    /// <summary>Every non-overlapping match, left to right, replaced (no pattern: nothing matches).</summary>
    internal sealed class Replace(Regex? pattern, string content) : Normalizer
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
    internal sealed class Icu(Normalizer2 form) : Normalizer
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
        internal static bool Newer(string s, int i, out int len)
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

        internal static readonly Lazy<bool[]> BmpNewer = new(() =>
        {
            var t = new bool[0x10000];
            for (int cp = 0x80; cp < t.Length; cp++) t[cp] = cp is < 0xD800 or > 0xDFFF && ICU4N.UChar.GetAge(cp).Major is 0 or > 9;
            return t;
        });
    }

    /// <summary>Per character, Unicode's full lower-case mapping (İ → i + U+0307; no final-sigma rule), as Rust's <c>char::to_lowercase</c>.</summary>
    internal sealed class Lowercase : Normalizer
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

    internal sealed class StripAccents : Normalizer
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

    internal sealed class Strip(bool left, bool right) : Normalizer
    {
        public override string Apply(string s)
        {
            int a = 0, b = s.Length;
            if (left) while (a < b && Rune.TryGetRuneAt(s, a, out var r) && Rune.IsWhiteSpace(r)) a += r.Utf16SequenceLength;
            if (right) while (b > a && Rune.TryGetRuneAt(s, char.IsLowSurrogate(s[b - 1]) && b - 2 >= a ? b - 2 : b - 1, out var r) && Rune.IsWhiteSpace(r)) b -= r.Utf16SequenceLength;
            return s[a..b];
        }
    }

    internal sealed class Prepend(string prefix) : Normalizer
    {
        public override string Apply(string s) => s.Length == 0 ? s : prefix + s;
    }

    // ---------------------------------------------------------------- pre-tokenisers

    /// <summary>What the byte-level patterns tell apart: \p{L}, \p{N}, \s and the rest.</summary>
    internal enum Kind { Letter, Number, Space, Other }

    /// <summary>The kind of the code point at <paramref name="i"/> and its UTF-16 length.</summary>
    internal static Kind KindAt(string s, int i, out int len)
    {
        Rune.DecodeFromUtf16(s.AsSpan(i), out var r, out len);
        if (Rune.IsWhiteSpace(r)) return Kind.Space;
        if (Rune.IsLetter(r)) return Kind.Letter;
        return Rune.IsNumber(r) ? Kind.Number : Kind.Other;
    }

    internal abstract class PreTokenizer
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
                case "ByteLevel":
                    return new ByteLevel(Flag(p, "add_prefix_space", true, bad), Flag(p, "use_regex", true, bad));
                case "Split" when Member(p, "pattern") is { ValueKind: JsonValueKind.Object } sp && Str(sp, "String") is { } literal:
                    {
                        // a literal delimiter (Gemma's tokenizers split on " "), with any of the library's delimiter behaviours
                        if (literal.Length == 0) throw bad("pre_tokenizer 'Split' has an empty string pattern");
                        CheckText(literal, "pre_tokenizer Split's pattern", bad);
                        if (Flag(p, "invert", false, bad)) throw bad("pre_tokenizer 'Split' is inverted");
                        string behavior = Str(p, "behavior") ?? throw bad("pre_tokenizer 'Split' has no behavior");
                        return behavior switch
                        {
                            "Removed" or "Isolated" or "MergedWithPrevious" or "MergedWithNext" or "Contiguous" => new SplitString(literal, behavior),
                            _ => throw bad($"pre_tokenizer 'Split' with the behavior '{Shorten(behavior)}' is not Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous"),
                        };
                    }
                case "Split":
                    {
                        // the patterns of the byte-level BPE tokenizers of today's decoder models, each written out as a scanner
                        string? pattern = Member(p, "pattern") is { ValueKind: JsonValueKind.Object } pj ? Str(pj, "Regex") : null;
                        int digits = pattern == SplitPattern.Qwen2 ? 1 : pattern == SplitPattern.Llama3 ? 3
                            : throw bad($"pre_tokenizer 'Split' with the pattern '{Shorten(pattern ?? "(not a regex)")}' is not one FastAttn applies (Qwen2's, or Llama 3's and cl100k's)");
                        if (Str(p, "behavior") is { } behavior && !behavior.Equals("Isolated", StringComparison.OrdinalIgnoreCase))
                            throw bad($"pre_tokenizer 'Split' with the behavior '{Shorten(behavior)}' is not Isolated");
                        if (Flag(p, "invert", false, bad)) throw bad("pre_tokenizer 'Split' is inverted");
                        return new SplitPattern(digits);
                    }
                default:
                    throw bad($"pre_tokenizer '{type ?? p.ValueKind.ToString()}' is not one FastAttn applies (ByteLevel, Metaspace, WhitespaceSplit, Split, Sequence)");
            }
        }
    }

    internal sealed class Chain(PreTokenizer[] steps) : PreTokenizer
    {
        public override List<string> Split(string piece)
        {
            List<string> words = [piece];
            foreach (var step in steps) words = [.. words.SelectMany(step.Split)];
            return words;
        }
    }

    internal sealed class WhitespaceSplit : PreTokenizer
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

    /// <summary>
    /// The <c>Split</c> pre-tokeniser (behaviour Isolated) with the pattern of Qwen2/Qwen3's tokenizer,
    /// <c>(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+</c>,
    /// or Llama 3's (cl100k's), the same with <c>\p{N}{1,3}</c>: each match is a word. Written out as a scanner over code
    /// points (linear, no backtracking): at each position the first alternative that matches there, as the regex engine
    /// takes it.
    /// </summary>
    internal sealed class SplitPattern(int digits) : PreTokenizer
    {
        public const string Qwen2 = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        public const string Llama3 = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

        public override List<string> Split(string piece)
        {
            var r = new List<string>();
            for (int i = 0; i < piece.Length;)
            {
                int end = Next(piece, i, digits);
                r.Add(piece[i..end]);
                i = end;
            }
            return r;
        }

        /// <summary>The lower-case letter a character matches case-insensitively in the contractions (ſ, U+017F, folds to s).</summary>
        private static char Fold(char c) => c == '\u017F' ? 's' : c is >= 'A' and <= 'Z' ? (char)(c + 32) : c;

        private static bool IsNewline(char c) => c is '\r' or '\n';

        private static int RunOf(string s, int j, Kind kind)
        {
            while (j < s.Length && KindAt(s, j, out int l) == kind) j += l;
            return j;
        }

        /// <summary>The end of the pattern's match at <paramref name="i"/> (the first alternative that matches there).</summary>
        internal static int Next(string s, int i, int digits)
        {
            int n = s.Length;
            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if (s[i] == '\'' && i + 1 < n)
            {
                char c = Fold(s[i + 1]);
                if (c is 's' or 't' or 'm' or 'd') return i + 2;
                if (i + 2 < n && Fold(s[i + 2]) is var c2 && ((c == 'r' && c2 == 'e') || (c == 'v' && c2 == 'e') || (c == 'l' && c2 == 'l'))) return i + 3;
            }
            var k0 = KindAt(s, i, out int len0);
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if (k0 == Kind.Letter) return RunOf(s, i + len0, Kind.Letter);
            if (k0 != Kind.Number && !IsNewline(s[i]) && i + len0 < n && KindAt(s, i + len0, out int len1) == Kind.Letter) return RunOf(s, i + len0 + len1, Kind.Letter);
            // \p{N} (Qwen2) or \p{N}{1,3} (Llama 3)
            if (k0 == Kind.Number)
            {
                int j = i + len0;
                for (int count = 1; count < digits && j < n && KindAt(s, j, out int l) == Kind.Number; count++) j += l;
                return j;
            }
            // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
            int st = s[i] == ' ' && i + 1 < n ? i + 1 : i;
            if (KindAt(s, st, out int lenSt) == Kind.Other)
            {
                int j = RunOf(s, st + lenSt, Kind.Other);
                while (j < n && IsNewline(s[j])) j++;
                return j;
            }
            // here s[i] is white space: \s*[\r\n]+ takes the run up to its last line break
            int e = i, lastBreak = -1;
            while (e < n && KindAt(s, e, out int l) == Kind.Space) { if (IsNewline(s[e])) lastBreak = e; e += l; }
            if (lastBreak >= 0) return lastBreak + 1;
            // \s+(?!\S): all of a run that ends the piece; else all but its last character (which goes with what follows); \s+ a single one
            if (e == n) return e;
            int lastStart = char.IsLowSurrogate(s[e - 1]) && e - 2 >= i ? e - 2 : e - 1;
            return lastStart > i ? lastStart : e;
        }
    }

    /// <summary>
    /// The <c>Split</c> pre-tokeniser with a literal pattern: the piece cut at each occurrence (left to right, not
    /// overlapping), the delimiters dropped (Removed), kept as words of their own (Isolated), joined to the word before or
    /// after (MergedWithPrevious / MergedWithNext — a delimiter right after another stays alone, as the library folds
    /// them), or runs of them kept as one word (Contiguous); empty words dropped.
    /// </summary>
    internal sealed class SplitString(string delimiter, string behavior) : PreTokenizer
    {
        public override List<string> Split(string piece)
        {
            // the piece as alternating segments: (start, end, is a delimiter)
            var segs = new List<(int Start, int End, bool Match)>();
            int at = 0;
            for (int i = piece.IndexOf(delimiter, StringComparison.Ordinal); i >= 0; i = piece.IndexOf(delimiter, at, StringComparison.Ordinal))
            {
                if (i > at) segs.Add((at, i, false));
                segs.Add((i, i + delimiter.Length, true));
                at = i + delimiter.Length;
            }
            if (at < piece.Length) segs.Add((at, piece.Length, false));
            var words = new List<(int Start, int End)>();
            bool previous = false;
            switch (behavior)
            {
                case "Removed":
                    foreach (var g in segs) if (!g.Match) words.Add((g.Start, g.End));
                    break;
                case "Isolated":
                    foreach (var g in segs) words.Add((g.Start, g.End));
                    break;
                case "MergedWithPrevious":
                    foreach (var g in segs)
                    {
                        if (g.Match && !previous && words.Count > 0) words[^1] = (words[^1].Start, g.End);
                        else words.Add((g.Start, g.End));
                        previous = g.Match;
                    }
                    break;
                case "MergedWithNext":
                    for (int k = segs.Count - 1; k >= 0; k--)
                    {
                        var g = segs[k];
                        if (g.Match && !previous && words.Count > 0) words[^1] = (g.Start, words[^1].End);
                        else words.Add((g.Start, g.End));
                        previous = g.Match;
                    }
                    words.Reverse();
                    break;
                default: // Contiguous
                    for (int k = 0; k < segs.Count; k++)
                    {
                        var g = segs[k];
                        if (k > 0 && g.Match == previous) words[^1] = (words[^1].Start, g.End);
                        else words.Add((g.Start, g.End));
                        previous = g.Match;
                    }
                    break;
            }
            var r = new List<string>(words.Count);
            foreach (var (a, b) in words) if (b > a) r.Add(piece[a..b]);
            return r;
        }
    }

    /// <summary>Spaces become the replacement (▁), prepended to a piece (always / to the text's first piece / never), then split before each replacement.</summary>
    internal sealed class Metaspace(string replacement, string scheme, bool split) : PreTokenizer
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

    /// <summary>
    /// GPT-2's byte-level pre-tokeniser: a space put in front unless the piece starts with one (<c>add_prefix_space</c>),
    /// the piece split as the pattern <c>'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+</c>
    /// splits it (written out here as a scanner: linear, no backtracking), and each word's UTF-8 bytes mapped to printable
    /// characters (bytes 33–126, 161–172 and 174–255 to themselves, the others to U+0100 onwards in order).
    /// </summary>
    internal sealed class ByteLevel(bool addPrefixSpace, bool useRegex) : PreTokenizer
    {
        private static readonly char[] ByteChar = BuildAlphabet();

        private static char[] BuildAlphabet()
        {
            var map = new char[256];
            int n = 0;
            for (int b = 0; b < 256; b++)
                map[b] = b is >= 33 and <= 126 or >= 161 and <= 172 or >= 174 and <= 255 ? (char)b : (char)(256 + n++);
            return map;
        }

        public override List<string> Split(string piece)
        {
            var r = new List<string>();
            if (piece.Length == 0) return r;                                // nothing, not even the prefix space (as the library)
            if (addPrefixSpace && !piece.StartsWith(' ')) piece = " " + piece;
            if (!useRegex) { r.Add(Map(piece)); return r; }
            for (int i = 0; i < piece.Length;)
            {
                int end = Next(piece, i);
                r.Add(Map(piece.AsSpan(i, end - i)));
                i = end;
            }
            return r;
        }


        /// <summary>The end of the pattern's match at <paramref name="i"/> (the first alternative that matches there).</summary>
        private static int Next(string s, int i)
        {
            int n = s.Length;
            // contractions: 's 't 're 've 'm 'll 'd
            if (s[i] == '\'' && i + 1 < n)
            {
                char c = s[i + 1];
                if (c is 's' or 't' or 'm' or 'd') return i + 2;
                if (i + 2 < n && ((c == 'r' && s[i + 2] == 'e') || (c == 'v' && s[i + 2] == 'e') || (c == 'l' && s[i + 2] == 'l'))) return i + 3;
            }
            // ' ?' then a run of letters, of numbers, or of anything else that is not a space
            int start = s[i] == ' ' && i + 1 < n ? i + 1 : i;
            var kind = KindAt(s, start, out int len);
            if (kind != Kind.Space)
            {
                int j = start + len;
                while (j < n && KindAt(s, j, out int l) == kind) j += l;
                return j;
            }
            // spaces: all of them at the end of the piece; else all but the last (which goes with what follows); a single one alone
            int e = i;
            while (e < n && KindAt(s, e, out int l) == Kind.Space) e += l;
            if (e == n) return e;
            int lastStart = char.IsLowSurrogate(s[e - 1]) && e - 2 >= i ? e - 2 : e - 1;
            return lastStart > i ? lastStart : e;
        }

        private static string Map(ReadOnlySpan<char> word)
        {
            int max = Encoding.UTF8.GetMaxByteCount(word.Length);
            Span<byte> bytes = max <= 512 ? stackalloc byte[max] : new byte[max];
            int n = Encoding.UTF8.GetBytes(word, bytes);
            Span<char> chars = n <= 512 ? stackalloc char[n] : new char[n];
            for (int k = 0; k < n; k++) chars[k] = ByteChar[bytes[k]];
            return new string(chars);
        }
    }
}
