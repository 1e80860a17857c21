using System.Globalization;
using System.Text;

namespace FastAttn.Embeddings;

/// <summary>
/// SentencePiece's <c>precompiled_charsmap</c> (the <c>Precompiled</c> normaliser of a Hugging Face <c>tokenizer.json</c>,
/// e.g. XLM-RoBERTa's NFKC-like "nmt_nfkc" rules): a little-endian u32 byte length, a Darts-clone double array of u32
/// units over UTF-8 byte keys, then the replacement strings, each ended by a NUL byte; a key's value is the offset of its
/// replacement. Applied as Hugging Face's tokenizers library applies it: per extended grapheme cluster — a cluster under 6
/// UTF-8 bytes is replaced whole when its bytes start with a key (the shortest such key decides), otherwise each of its
/// characters is replaced the same way, or kept.
/// <para>
/// The whole reachable trie is walked once at load: every unit read is inside the array and every replacement offset
/// inside the strings at a character boundary, so a hostile map is refused up front (the Rust library would panic).
/// </para>
/// </summary>
internal sealed class PrecompiledCharsMap
{
    private readonly uint[] _units;
    private readonly byte[] _strings;
    // every reachable replacement, decoded once at load (a map has a few thousand); read-only afterwards
    private readonly Dictionary<int, string> _replacements = [];

    private PrecompiledCharsMap(uint[] units, byte[] strings)
    {
        _units = units;
        _strings = strings;
    }

    private static bool HasLeaf(uint u) => ((u >> 8) & 1) == 1;
    private static int Value(uint u) => (int)(u & 0x7FFF_FFFFu);
    private static uint Label(uint u) => u & 0x8000_00FFu;
    private static long Offset(uint u) => (long)(u >> 10) << (int)((u & (1u << 9)) >> 6);

    /// <exception cref="InvalidDataException">The map is truncated, its strings are not UTF-8, or its trie points outside itself.</exception>
    public static PrecompiledCharsMap Parse(byte[] map, string name)
    {
        InvalidDataException Bad(string what) => new($"'{name}': precompiled_charsmap {what}.");
        if (map.Length < 4) throw Bad("is shorter than its 4-byte header");
        uint trieBytes = BitConverter.ToUInt32(map, 0);
        if (trieBytes > map.Length - 4) throw Bad($"declares a {trieBytes}-byte trie in {map.Length - 4} bytes");
        int count = (int)(trieBytes / 4);
        if (count == 0) throw Bad("has an empty trie");
        var units = new uint[count];
        for (int i = 0; i < count; i++) units[i] = BitConverter.ToUInt32(map, 4 + 4 * i);
        var strings = map[(4 + 4 * count)..];
        if (!System.Text.Unicode.Utf8.IsValid(strings)) throw Bad("holds replacement strings that are not UTF-8");
        var m = new PrecompiledCharsMap(units, strings);
        m.Check(Bad);
        return m;
    }

    /// <summary>Walks every node reachable from the root (each position once) and checks its children and value.</summary>
    private void Check(Func<string, InvalidDataException> bad)
    {
        var seen = new bool[_units.Length];
        var stack = new Stack<int>();
        stack.Push(0);
        seen[0] = true;
        while (stack.Count > 0)
        {
            int p = stack.Pop();
            uint u = _units[p];
            long b = p ^ Offset(u);
            if (p != 0 && HasLeaf(u))
            {
                if (b >= _units.Length) throw bad($"unit {p} has its value outside the trie");
                int v = Value(_units[b]);
                if (v > _strings.Length || (v < _strings.Length && (_strings[v] & 0xC0) == 0x80))
                    throw bad($"unit {p} points at {v}, not the start of a replacement string");
                if (!_replacements.ContainsKey(v))
                {
                    int end = Array.IndexOf(_strings, (byte)0, v);
                    _replacements[v] = Encoding.UTF8.GetString(_strings, v, (end < 0 ? _strings.Length : end) - v);
                }
            }
            for (int c = 1; c < 256; c++)
            {
                long q = b ^ c;
                if (q >= _units.Length || Label(_units[q]) != c || seen[q]) continue;
                seen[q] = true;
                stack.Push((int)q);
            }
        }
    }

    /// <summary>The replacement of the first (shortest) key that <paramref name="utf8"/> starts with, or null.</summary>
    private string? Transform(ReadOnlySpan<byte> utf8)
    {
        long p = Offset(_units[0]);
        foreach (byte c in utf8)
        {
            if (c == 0) break;
            p ^= c;
            if (p >= _units.Length) return null;
            uint u = _units[p];
            if (Label(u) != c) return null;
            p ^= Offset(u);
            if (HasLeaf(u))
            {
                if (p >= _units.Length) return null;
                return Replacement(Value(_units[p]));
            }
        }
        return null;
    }

    private string Replacement(int offset) => _replacements.TryGetValue(offset, out var s) ? s : "";

    /// <summary>The text with the map applied, cluster by cluster.</summary>
    public string Normalize(string text)
    {
        if (text.Length == 0) return text;
        var sb = new StringBuilder(text.Length);
        Span<byte> buf = stackalloc byte[64];
        bool changed = false;
        int i = 0;
        while (i < text.Length)
        {
            int len = StringInfo.GetNextTextElementLength(text.AsSpan(i));
            if (len <= 0) len = 1;
            var g = text.AsSpan(i, len);
            int bytes = Encoding.UTF8.GetByteCount(g);
            if (bytes < 6)
            {
                int n = Encoding.UTF8.GetBytes(g, buf);
                if (Transform(buf[..n]) is { } whole) { sb.Append(whole); changed = true; i += len; continue; }
            }
            for (int k = 0; k < g.Length;)
            {
                int cl = char.IsHighSurrogate(g[k]) && k + 1 < g.Length && char.IsLowSurrogate(g[k + 1]) ? 2 : 1;
                var ch = g.Slice(k, cl);
                int n = Encoding.UTF8.GetBytes(ch, buf);
                if (Transform(buf[..n]) is { } r) { sb.Append(r); changed = true; }
                else sb.Append(ch);
                k += cl;
            }
            i += len;
        }
        return changed ? sb.ToString() : text;
    }
}
