namespace FastAttn.Tagging;

/// <summary>One sentence of a treebank: word forms and their UPOS tags.</summary>
public sealed record TaggedSentence(string[] Words, string[] Tags);

/// <summary>Reads CoNLL-U files (word form in column 2, UPOS in column 4); multiword-token ranges and empty nodes are skipped.</summary>
public static class ConllU
{
    /// <summary>Reads every sentence of the file.</summary>
    /// <exception cref="InvalidDataException">A token line without 10 tab-separated columns.</exception>
    public static List<TaggedSentence> Read(string path)
    {
        var result = new List<TaggedSentence>();
        var words = new List<string>();
        var tags = new List<string>();
        int lineNo = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNo++;
            if (line.Length == 0)
            {
                if (words.Count > 0) { result.Add(new([.. words], [.. tags])); words.Clear(); tags.Clear(); }
                continue;
            }
            if (line[0] == '#') continue;
            var cols = line.Split('\t');
            if (cols.Length != 10) throw new InvalidDataException($"{path}:{lineNo}: expected 10 tab-separated columns, found {cols.Length}.");
            if (cols[0].Contains('-') || cols[0].Contains('.')) continue; // multiword token range or empty node
            words.Add(cols[1]);
            tags.Add(cols[3]);
        }
        if (words.Count > 0) result.Add(new([.. words], [.. tags]));
        return result;
    }
}
