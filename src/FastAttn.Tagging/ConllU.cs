namespace FastAttn.Tagging;

/// <summary>One sentence of a treebank: word forms, their UPOS tags, and the raw text when the file gives it (<c># text =</c>).</summary>
public sealed record TaggedSentence(string[] Words, string[] Tags, string? Text = null);

/// <summary>Reads CoNLL-U files (word form in column 2, UPOS in column 4); multiword-token ranges and empty nodes are skipped.</summary>
public static class ConllU
{
    /// <summary>Reads every sentence of the file (strict UTF-8).</summary>
    /// <exception cref="InvalidDataException">Not valid UTF-8, or a token line without 10 tab-separated columns.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public static List<TaggedSentence> Read(string path) => Parse(Utf8Text.ReadFile(path), path);

    /// <summary>Parses CoNLL-U text; <paramref name="source"/> names it in messages.</summary>
    /// <exception cref="InvalidDataException">A token line without 10 tab-separated columns, an empty form or tag.</exception>
    public static List<TaggedSentence> Parse(string text, string source = "<text>")
    {
        ArgumentNullException.ThrowIfNull(text);
        var result = new List<TaggedSentence>();
        var words = new List<string>();
        var tags = new List<string>();
        int lineNo = 0;
        string? sentenceText = null;
        foreach (var line in Utf8Text.Lines(text))
        {
            lineNo++;
            if (line.Length == 0)
            {
                if (words.Count > 0) { result.Add(new([.. words], [.. tags], sentenceText)); words.Clear(); tags.Clear(); }
                sentenceText = null;
                continue;
            }
            if (line[0] == '#')
            {
                if (line.StartsWith("# text = ", StringComparison.Ordinal)) sentenceText = line[9..];
                continue;
            }
            // the first 10 columns, without splitting a long line more than needed
            var cols = line.Split('\t', 11);
            if (cols.Length != 10) throw new InvalidDataException($"{source}:{lineNo}: expected 10 tab-separated columns, found {(cols.Length > 10 ? "more" : cols.Length.ToString())}.");
            if (cols[0].Contains('-') || cols[0].Contains('.')) continue; // multiword token range or empty node
            if (cols[1].Length == 0 || cols[3].Length == 0) throw new InvalidDataException($"{source}:{lineNo}: empty word form or UPOS tag.");
            words.Add(cols[1]);
            tags.Add(cols[3]);
        }
        if (words.Count > 0) result.Add(new([.. words], [.. tags], sentenceText));
        return result;
    }
}

/// <summary>How closely <see cref="EnglishTokenizer"/> reproduces a treebank's tokens from its raw sentence texts.</summary>
public static class TokenizerAgreement
{
    /// <summary>
    /// Sentences compared (those whose gold words can be found in order in their text), sentences tokenized exactly
    /// like the treebank, and token precision/recall (a token counts when its character span matches a gold one).
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="sentences"/> is null.</exception>
    /// <exception cref="ArgumentException">A sentence is null.</exception>
    public static (int Sentences, int Exact, double Precision, double Recall) Measure(IEnumerable<TaggedSentence> sentences)
    {
        int n = 0, exact = 0;
        long tp = 0, predicted = 0, gold = 0;
        ArgumentNullException.ThrowIfNull(sentences);
        foreach (var s in sentences)
        {
            if (s is null) throw new ArgumentException("a sentence is null.", nameof(sentences));
            if (s.Text is null) continue;
            var goldSpans = new HashSet<(int, int)>();
            int pos = 0;
            bool aligned = true;
            foreach (var w in s.Words)
            {
                int at = s.Text.IndexOf(w, pos, StringComparison.Ordinal);
                if (at < 0 || s.Text.AsSpan(pos, at - pos).Trim().Length > 0) { aligned = false; break; }
                goldSpans.Add((at, at + w.Length));
                pos = at + w.Length;
            }
            if (!aligned) continue;
            var ranges = new Range[EnglishTokenizer.Count(s.Text)];
            EnglishTokenizer.Tokenize(s.Text, ranges);
            int hit = 0;
            foreach (var r in ranges) if (goldSpans.Contains((r.Start.Value, r.End.Value))) hit++;
            n++;
            tp += hit; predicted += ranges.Length; gold += goldSpans.Count;
            if (hit == ranges.Length && hit == goldSpans.Count) exact++;
        }
        return (n, exact, predicted == 0 ? 0 : (double)tp / predicted, gold == 0 ? 0 : (double)tp / gold);
    }
}
