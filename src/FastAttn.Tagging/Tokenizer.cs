namespace FastAttn.Tagging;

/// <summary>
/// Splits raw English text into tokens the way Universal Dependencies English treebanks do, closely enough for
/// tagging: punctuation split off words (runs such as "..." or "?!" kept whole), clitics as their own tokens
/// ("do n't", "ca n't", "John 's", "we 're", "can not", "gon na"), hyphens and slashes split inside words but not
/// inside numbers, dates or phone numbers, abbreviations and initials keep their period ("Mr.", "U.S.", "J."),
/// URLs and e-mail addresses kept whole. Tokens are ranges of the input; nothing is allocated.
/// </summary>
public static class EnglishTokenizer
{
    /// <summary>Number of tokens <paramref name="text"/> splits into.</summary>
    public static int Count(ReadOnlySpan<char> text)
    {
        var sink = new Sink(default);
        Run(text, ref sink);
        return sink.Count;
    }

    /// <summary>Writes the tokens of <paramref name="text"/> as ranges into <paramref name="tokens"/> and returns how many.</summary>
    /// <exception cref="ArgumentException"><paramref name="tokens"/> is too small (checked before anything is written).</exception>
    public static int Tokenize(ReadOnlySpan<char> text, Span<Range> tokens)
    {
        int n = Count(text);
        if (n > tokens.Length) throw new ArgumentException($"the text has {n} tokens; 'tokens' has room for {tokens.Length}.", nameof(tokens));
        return Fill(text, tokens);
    }

    /// <summary>Writes the tokens; the caller has checked that they fit.</summary>
    internal static int Fill(ReadOnlySpan<char> text, Span<Range> tokens)
    {
        var sink = new Sink(tokens);
        Run(text, ref sink);
        return sink.Count;
    }

    /// <summary>The tokens of <paramref name="text"/> as strings (allocates; for convenience).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="text"/> is null.</exception>
    public static string[] Tokenize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ranges = new Range[Count(text)];
        int n = Tokenize(text, ranges);
        var result = new string[n];
        for (int i = 0; i < n; i++) result[i] = text[ranges[i]];
        return result;
    }

    private ref struct Sink(Span<Range> dst)
    {
        private readonly Span<Range> _dst = dst;
        public int Count;
        public void Add(int start, int end)
        {
            if (end <= start) return;
            if (Count < _dst.Length) _dst[Count] = new Range(start, end);
            Count++;
        }
    }

    private static void Run(ReadOnlySpan<char> text, ref Sink sink)
    {
        int i = 0;
        while (i < text.Length)
        {
            while (i < text.Length && char.IsWhiteSpace(text[i])) i++;
            int s = i;
            while (i < text.Length && !char.IsWhiteSpace(text[i])) i++;
            if (i > s) Chunk(text, s, i, ref sink);
        }
    }

    private const string Opening = "([{\"“‘«`'’$£€#<";
    private const string Closing = ",;:)]}\"”’»'%>…`";

    private static bool IsApostrophe(char c) => c is '\'' or '’';

    private static readonly string[] Emoticons = [":)", ":-)", ":(", ":-(", ";)", ";-)", ":D", ":-D", ":P", ":p", ":/", "=)", ":'(", "<3", "^_^"];
    private const int MaxEmoticon = 3; // the longest of Emoticons

    // One whitespace-delimited chunk [s, e).
    private static void Chunk(ReadOnlySpan<char> text, int s, int e, ref Sink sink)
    {
        if (e - s <= MaxEmoticon)
            foreach (var emo in Emoticons)
                if (text[s..e].Equals(emo, StringComparison.Ordinal)) { sink.Add(s, e); return; }
        // leading punctuation (but an apostrophe that starts a clitic such as "'s" stays). What the checks below need
        // of the rest of the chunk is found once here, so a chunk of many leading marks stays linear.
        int closedEnd = TrimClosing(text, s, e);
        var url = new UrlScan(text, s, e);
        while (s < e && Opening.Contains(text[s]))
        {
            if (IsApostrophe(text[s]) && IsClitic(text[(s + 1)..Math.Max(s + 1, closedEnd)])) break;
            if (text[s] == '<' && url.From(s)) break;
            // a run of the same mark ("``", "<<", "$$$") is one token
            int run = s + 1;
            while (run < e && text[run] == text[s]) run++;
            if (run == e && run - s > 1) break; // the whole chunk is the run: handled as a word below
            sink.Add(s, run);
            s = run;
        }
        if (s >= e) return;
        // trailing punctuation, collected right to left
        Span<Range> trail = stackalloc Range[16];
        int nt = 0;
        bool isUrl = url.From(s);
        while (e > s && nt < trail.Length)
        {
            char c = text[e - 1];
            int r = e - 1;
            if (c == '.')
            {
                while (r > s && text[r - 1] == '.') r--;
                if (e - r >= 2) { if (r == s) break; trail[nt++] = new Range(r, e); e = r; continue; }
                if (r == s || (!isUrl && IsAbbreviation(text[s..r]))) break;
                trail[nt++] = new Range(r, e); e = r; continue;
            }
            if (c is '!' or '?')
            {
                while (r > s && text[r - 1] is '!' or '?') r--;
                if (r == s) break;
                trail[nt++] = new Range(r, e); e = r; continue;
            }
            if (Closing.Contains(c))
            {
                while (r > s && text[r - 1] == c) r--;   // a run of the same mark (">>", "''") is one token
                if (r == s) break;
                trail[nt++] = new Range(r, e); e = r; continue;
            }
            break;
        }
        if (isUrl) sink.Add(s, e);
        else Core(text, s, e, ref sink);
        for (int k = nt - 1; k >= 0; k--) sink.Add(trail[k].Start.Value, trail[k].End.Value);
    }

    // A word without leading/trailing punctuation: clitics, then inner hyphens/slashes.
    private static void Core(ReadOnlySpan<char> text, int s, int e, ref Sink sink)
    {
        var w = text[s..e];
        int len = w.Length;
        if (len > 3 && EndsWith(w, "n't"))
        {
            Inner(text, s, e - 3, ref sink); sink.Add(e - 3, e); return;
        }
        foreach (var cl in Clitics)
        {
            if (len > cl.Length + 1 && IsApostrophe(w[len - cl.Length - 1]) && w[(len - cl.Length)..].Equals(cl, StringComparison.OrdinalIgnoreCase))
            {
                int cut = e - cl.Length - 1;
                Inner(text, s, cut, ref sink); sink.Add(cut, e); return;
            }
        }
        if (w.Equals("cannot", StringComparison.OrdinalIgnoreCase)) { sink.Add(s, s + 3); sink.Add(s + 3, e); return; }
        if (w.Equals("gonna", StringComparison.OrdinalIgnoreCase) || w.Equals("wanna", StringComparison.OrdinalIgnoreCase)
            || w.Equals("gotta", StringComparison.OrdinalIgnoreCase)) { sink.Add(s, s + 3); sink.Add(s + 3, e); return; }
        Inner(text, s, e, ref sink);
    }

    private static readonly string[] Clitics = ["s", "re", "ve", "ll", "d", "m"];

    private static bool IsClitic(ReadOnlySpan<char> w)
    {
        if (w.IsEmpty) return false;
        foreach (var cl in Clitics) if (w.Equals(cl, StringComparison.OrdinalIgnoreCase)) return true;
        return false;
    }

    private static int TrimClosing(ReadOnlySpan<char> text, int s, int e)
    {
        while (e > s && (Closing.Contains(text[e - 1]) || text[e - 1] is '.' or '!' or '?')) e--;
        return e;
    }

    private static bool EndsWith(ReadOnlySpan<char> w, string suffix)
    {
        if (w.Length < suffix.Length) return false;
        var tail = w[^suffix.Length..];
        for (int i = 0; i < suffix.Length; i++)
        {
            char a = char.ToLowerInvariant(tail[i]), b = suffix[i];
            if (a == '’') a = '\'';
            if (a != b) return false;
        }
        return true;
    }

    // Splits on hyphens, slashes and brackets inside a word, unless the word is number-like (dates, phone numbers).
    private static void Inner(ReadOnlySpan<char> text, int s, int e, ref Sink sink)
    {
        var w = text[s..e];
        if (IsNumberLike(w) || w.Equals("e-mail", StringComparison.OrdinalIgnoreCase)) { sink.Add(s, e); return; }
        int start = s;
        for (int i = s; i < e; i++)
        {
            char c = text[i];
            if (c is '-' or '/' or '(' or ')' or '[' or ']' or '"' or ';' or '!' or '?' || (c == ',' && !(i > s && i + 1 < e && char.IsDigit(text[i - 1]) && char.IsDigit(text[i + 1]))))
            {
                int r = i;
                while (r + 1 < e && text[r + 1] == c) r++;   // "--", "!!", "??" stay whole
                sink.Add(start, i);
                sink.Add(i, r + 1);
                start = r + 1;
                i = r;
            }
        }
        sink.Add(start, e);
    }

    private static bool IsNumberLike(ReadOnlySpan<char> w)
    {
        bool digit = false;
        foreach (char c in w)
        {
            if (char.IsDigit(c)) digit = true;
            else if (c is not ('.' or ',' or ':' or '/' or '-' or '+')) return false;
        }
        return digit;
    }

    /// <summary>
    /// Whether text[s..e) looks like a URL or an e-mail address ("://" in it, starts with "www.", or its first '@' is not
    /// its first character and a '.' follows the '@' later than right after it), for start positions s that only grow:
    /// the scan of the chunk is done once, so asking at every leading mark stays linear.
    /// </summary>
    private ref struct UrlScan
    {
        private readonly ReadOnlySpan<char> _text;
        private readonly int _e, _lastScheme, _lastDot;
        private int _at; // the first '@' at or after the last start asked about (e when none)

        public UrlScan(ReadOnlySpan<char> text, int s, int e)
        {
            _text = text; _e = e;
            int k = text[s..e].LastIndexOf("://", StringComparison.Ordinal);
            _lastScheme = k < 0 ? -1 : s + k;
            k = text[s..e].LastIndexOf('.');
            _lastDot = k < 0 ? -1 : s + k;
            _at = s;
        }

        public bool From(int s)
        {
            if (_lastScheme >= s || _text[s.._e].StartsWith("www.", StringComparison.OrdinalIgnoreCase)) return true;
            // the first '@' at or after s; one at s itself does not count (as in "@user")
            if (_at < s) _at = s;
            while (_at < _e && _text[_at] != '@') _at++;
            return _at > s && _at < _e && _lastDot > _at + 1;
        }
    }

    private static readonly string[] Abbreviations =
    [
        "mr", "mrs", "ms", "dr", "prof", "capt", "st", "jr", "sr", "inc", "ltd", "co", "corp", "vs", "etc", "no", "mt", "ft", "gov", "gen",
        "sen", "rep", "rev", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "approx", "dept", "est",
    ];

    private static bool IsAbbreviation(ReadOnlySpan<char> w)
    {
        if (w.Length == 1) return char.IsLetter(w[0]);
        bool innerDot = false;
        foreach (char c in w)
        {
            if (c == '.') innerDot = true;
            else if (!char.IsLetter(c)) { innerDot = false; break; }
        }
        if (innerDot) return true;
        foreach (var a in Abbreviations) if (w.Equals(a, StringComparison.OrdinalIgnoreCase)) return true;
        return false;
    }
}
