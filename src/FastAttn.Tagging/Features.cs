using System.Text.Json;

namespace FastAttn.Tagging;

/// <summary>
/// The per-word features both taggers use (the same code runs at training and at serving time): the word itself
/// (lower-cased, digits mapped to 0) with an unknown-word bucket, its first 1–3 and last 1–4 characters, and its
/// shape (capitalisation, digits, hyphen, punctuation). Each feature is an id into its own embedding table; id 0 of
/// every table is "unknown".
/// </summary>
public sealed class FeatureVocabulary
{
    /// <summary>Feature names, in the order of <see cref="Extract"/>'s output and of the model's embedding tables.</summary>
    public static readonly string[] Names = ["word", "prefix1", "prefix2", "prefix3", "suffix1", "suffix2", "suffix3", "suffix4", "shape"];
    /// <summary>Number of features per word.</summary>
    public const int Count = 9;
    /// <summary>Distinct shape ids (5 case classes × digit × hyphen × punctuation-only).</summary>
    public const int ShapeCount = 40;
    /// <summary>Words longer than this are always unknown (their affixes and shape still count).</summary>
    public const int MaxWordLength = 64;
    /// <summary>The entry at id 0 of every table.</summary>
    public const string Unknown = "<unk>";

    private readonly string[][] _lists;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>>[] _lookups;

    /// <summary>Entries of each table in id order (shape has none: its ids are computed).</summary>
    public IReadOnlyList<IReadOnlyList<string>> Lists => _lists;

    /// <summary>Rows of table <paramref name="feature"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="feature"/> is not in [0, <see cref="Count"/>).</exception>
    public int Size(int feature) => (uint)feature >= Count
        ? throw new ArgumentOutOfRangeException(nameof(feature), feature, $"features are 0..{Count - 1}.")
        : feature == Count - 1 ? ShapeCount : _lists[feature].Length;

    /// <summary>Builds the lookups from entry lists (one per feature except shape, each starting with <see cref="Unknown"/>).</summary>
    /// <exception cref="InvalidDataException">Wrong number of lists, a list not starting with the unknown entry, or a duplicate.</exception>
    public FeatureVocabulary(IReadOnlyList<IReadOnlyList<string>> lists)
    {
        ArgumentNullException.ThrowIfNull(lists);
        if (lists.Count != Count - 1) throw new InvalidDataException($"expected {Count - 1} vocabularies ({string.Join(", ", Names[..^1])}); got {lists.Count}.");
        _lists = new string[lists.Count][];
        _lookups = new Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>>[lists.Count];
        for (int f = 0; f < lists.Count; f++)
        {
            var l = lists[f] ?? throw new InvalidDataException($"vocabulary '{Names[f]}' is missing.");
            if (l.Count == 0 || l[0] != Unknown) throw new InvalidDataException($"vocabulary '{Names[f]}' must start with \"{Unknown}\".");
            var d = new Dictionary<string, int>(l.Count, StringComparer.Ordinal);
            for (int i = 1; i < l.Count; i++)
                if (l[i] is null || !d.TryAdd(l[i], i)) throw new InvalidDataException($"vocabulary '{Names[f]}' has a null or repeated entry at {i}.");
            _lists[f] = [.. l];
            _lookups[f] = d.GetAlternateLookup<ReadOnlySpan<char>>();
        }
        // a known word's affix ids, found once here: Extract then needs one lookup for it instead of eight
        // (an entry that is not its own normalized form — possible only in a hand-made list — is never matched; -1 marks
        // entries without a cached row, which Extract then computes)
        var words = _lists[0];
        _affixes = new int[words.Length * Affixes];
        Span<int> ids = stackalloc int[Count];
        Span<char> norm = stackalloc char[MaxWordLength];
        for (int i = 1; i < words.Length; i++)
        {
            var e = words[i];
            if (e.Length > MaxWordLength || Normalize(e, norm) != e.Length || !norm[..e.Length].SequenceEqual(e)) { _affixes[i * Affixes] = -1; continue; }
            AffixIds(e, e, ids);
            ids.Slice(1, Affixes).CopyTo(_affixes.AsSpan(i * Affixes, Affixes));
        }
    }

    private const int Affixes = Count - 2; // prefixes 1–3, suffixes 1–4
    private readonly int[] _affixes;

    /// <summary>
    /// Counts words, affixes over a training corpus; keeps words seen at least <paramref name="minWordCount"/> times
    /// and affixes seen at least <paramref name="minAffixCount"/> times, most frequent first (ties in ordinal order).
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="words"/> is null.</exception>
    /// <exception cref="ArgumentException">A word is null.</exception>
    public static FeatureVocabulary Build(IEnumerable<string> words, int minWordCount = 2, int minAffixCount = 3)
    {
        ArgumentNullException.ThrowIfNull(words);
        var counts = Enumerable.Range(0, Count - 1).Select(_ => new Dictionary<string, int>(StringComparer.Ordinal)).ToArray();
        Span<char> buf = stackalloc char[MaxWordLength];
        foreach (var w in words)
        {
            if (w is null) throw new ArgumentException("a word is null.", nameof(words));
            int n = Normalize(w, buf);
            var norm = buf[..n];
            var keys = new string?[Count - 1];
            if (w.Length <= MaxWordLength) keys[0] = norm.ToString();
            string tail = NormalizedTail(w, 4);
            for (int k = 1; k <= 3; k++) keys[k] = norm[..Math.Min(k, n)].ToString();
            for (int k = 1; k <= 4; k++) keys[3 + k] = tail[Math.Max(0, tail.Length - k)..];
            for (int f = 0; f < keys.Length; f++)
                if (keys[f] is { } key) counts[f][key] = counts[f].GetValueOrDefault(key) + 1;
        }
        var lists = new List<IReadOnlyList<string>>();
        for (int f = 0; f < Count - 1; f++)
        {
            int min = f == 0 ? minWordCount : minAffixCount;
            var keep = counts[f].Where(kv => kv.Value >= min && kv.Key != Unknown)
                .OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Key);
            lists.Add([Unknown, .. keep]);
        }
        return new FeatureVocabulary(lists);
    }

    /// <summary>Writes the <see cref="Count"/> feature ids of <paramref name="word"/>; allocates nothing.</summary>
    /// <exception cref="ArgumentException"><paramref name="ids"/> has fewer than <see cref="Count"/> elements.</exception>
    public void Extract(ReadOnlySpan<char> word, Span<int> ids)
    {
        if (ids.Length < Count) throw new ArgumentException($"'ids' needs {Count} elements; it has {ids.Length}.", nameof(ids));
        Span<char> buf = stackalloc char[MaxWordLength];
        int n = Normalize(word, buf);
        ReadOnlySpan<char> norm = buf[..n];
        int id = word.Length <= MaxWordLength ? Find(0, norm) : 0;
        ids[0] = id;
        // a known word is its own normalized form (at most MaxWordLength characters), so its affixes are the cached ones
        if (id > 0 && _affixes[id * Affixes] >= 0) _affixes.AsSpan(id * Affixes, Affixes).CopyTo(ids.Slice(1, Affixes));
        else AffixIds(word, norm, ids);
        ids[Count - 1] = Shape(word);
    }

    // prefixes from the normalized (possibly truncated) word, suffixes from the normalized tail of the whole word
    private void AffixIds(ReadOnlySpan<char> word, ReadOnlySpan<char> norm, Span<int> ids)
    {
        int n = norm.Length;
        for (int k = 1; k <= 3; k++) ids[k] = Find(k, norm[..Math.Min(k, n)]);
        Span<char> tail = stackalloc char[4];
        int t = Math.Min(4, word.Length);
        Normalize(word[^t..], tail);
        for (int k = 1; k <= 4; k++) ids[3 + k] = Find(3 + k, tail[Math.Max(0, t - k)..t]);
    }

    private int Find(int feature, ReadOnlySpan<char> key) => _lookups[feature].TryGetValue(key, out int id) ? id : 0;

    private static string NormalizedTail(string w, int k)
    {
        Span<char> tail = stackalloc char[k];
        int t = Math.Min(k, w.Length);
        Normalize(w.AsSpan(w.Length - t), tail);
        return tail[..t].ToString();
    }

    /// <summary>Lower-cases (invariant) and maps every decimal digit to '0'; writes at most <paramref name="destination"/>.Length characters.</summary>
    public static int Normalize(ReadOnlySpan<char> word, Span<char> destination)
    {
        int n = Math.Min(word.Length, destination.Length);
        for (int i = 0; i < n; i++)
        {
            char c = word[i];
            destination[i] = char.IsAsciiDigit(c) ? '0' : char.ToLowerInvariant(c);
        }
        return n;
    }

    /// <summary>Shape id: case class (0 no letters, 1 lower, 2 Title, 3 UPPER, 4 mixed) × 8 + digit × 4 + hyphen × 2 + punctuation-only.</summary>
    public static int Shape(ReadOnlySpan<char> word)
    {
        int letters = 0, upper = 0, digits = 0, punct = 0;
        bool hyphen = false, firstUpper = false;
        for (int i = 0; i < word.Length; i++)
        {
            char c = word[i];
            if (char.IsLetter(c))
            {
                letters++;
                if (char.IsUpper(c)) { upper++; if (letters == 1) firstUpper = true; }
            }
            else if (char.IsDigit(c)) digits++;
            else if (char.IsPunctuation(c) || char.IsSymbol(c)) punct++;
            if (c == '-') hyphen = true;
        }
        int cls = letters == 0 ? 0 : upper == 0 ? 1 : (firstUpper && upper == 1) ? 2 : upper == letters ? 3 : 4;
        bool punctOnly = word.Length > 0 && punct == word.Length;
        return cls * 8 + (digits > 0 ? 4 : 0) + (hyphen ? 2 : 0) + (punctOnly ? 1 : 0);
    }

    /// <summary>The vocabularies as JSON (an object of name → array), for a model file's metadata.</summary>
    public string ToJson() => JsonSerializer.Serialize(Enumerable.Range(0, Count - 1).ToDictionary(f => Names[f], f => _lists[f]));

    /// <summary>Reads <see cref="ToJson"/>'s output.</summary>
    /// <exception cref="InvalidDataException">Malformed JSON or a vocabulary missing.</exception>
    public static FeatureVocabulary FromJson(string json)
    {
        Dictionary<string, string[]>? d;
        try { d = JsonSerializer.Deserialize<Dictionary<string, string[]>>(json); }
        catch (JsonException e) { throw new InvalidDataException($"the vocabularies are not valid JSON: {e.Message}", e); }
        if (d == null) throw new InvalidDataException("the vocabularies are missing.");
        var lists = new List<IReadOnlyList<string>>();
        for (int f = 0; f < Count - 1; f++)
            lists.Add(d.TryGetValue(Names[f], out var l) && l != null ? l : throw new InvalidDataException($"vocabulary '{Names[f]}' is missing."));
        return new FeatureVocabulary(lists);
    }
}

/// <summary>The 17 Universal Dependencies part-of-speech tags (UPOS).</summary>
public static class UPos
{
    /// <summary>The tags in alphabetical order (the models' class order).</summary>
    public static readonly string[] Tags = ["ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X"];
}
