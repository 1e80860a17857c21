using FastAttn.Tagging;

namespace FastAttn.Tests.Tagging;

public class FeatureTests
{
    private static readonly string[] Corpus =
        ["The", "the", "cats", "cat", "running", "ran", "2024", "1999", "U.S.", "well-known", "!", "the", "cats", "running", "ran", "running", "Ran"];

    // Plain reference: the same rules written with strings.
    private static int[] Expected(FeatureVocabulary v, string w)
    {
        string norm = new(w.Select(c => char.IsAsciiDigit(c) ? '0' : char.ToLowerInvariant(c)).ToArray());
        int Id(int f, string key) { int i = v.Lists[f].ToList().IndexOf(key); return i < 0 ? 0 : i; }
        var ids = new int[FeatureVocabulary.Count];
        ids[0] = w.Length <= FeatureVocabulary.MaxWordLength ? Id(0, norm) : 0;
        for (int k = 1; k <= 3; k++) ids[k] = Id(k, norm[..Math.Min(k, norm.Length)]);
        for (int k = 1; k <= 4; k++) ids[3 + k] = Id(3 + k, norm[Math.Max(0, norm.Length - k)..]);
        ids[8] = FeatureVocabulary.Shape(w);
        return ids;
    }

    [Fact]
    public void ExtractMatchesTheStringReference()
    {
        var v = FeatureVocabulary.Build(Corpus, minWordCount: 2, minAffixCount: 2);
        Assert.Equal(["<unk>", "ran", "running", "the", "0000", "cats"], v.Lists[0]);
        var ids = new int[FeatureVocabulary.Count];
        foreach (var w in Corpus.Concat(["RUNNING", "Cats", "unseen", "x", "", "2025", new string('a', 80) + "ing", "Théâtre"]))
        {
            v.Extract(w, ids);
            Assert.Equal(Expected(v, w), ids);
        }
    }

    /// <summary>
    /// A known word's affix ids come from a table built at load: every word of the bundled tagger's vocabulary, as is,
    /// capitalised and upper-cased, and unknown words, give the ids the plain rules give.
    /// </summary>
    [Fact]
    public void ExtractOfEveryVocabularyWordMatchesTheRules()
    {
        using var m = PosTagModel.LoadBundled("attention");
        var v = m.Vocabulary;
        var maps = Enumerable.Range(0, FeatureVocabulary.Count - 1)
            .Select(f => v.Lists[f].Select((e, i) => (e, i)).Skip(1).ToDictionary(p => p.e, p => p.i, StringComparer.Ordinal)).ToArray();
        int Id(int f, string key) => maps[f].TryGetValue(key, out int i) ? i : 0;
        int[] Rules(string w)
        {
            string norm = new(w.Select(c => char.IsAsciiDigit(c) ? '0' : char.ToLowerInvariant(c)).ToArray());
            var r = new int[FeatureVocabulary.Count];
            r[0] = w.Length <= FeatureVocabulary.MaxWordLength ? Id(0, norm) : 0;
            string pre = norm[..Math.Min(norm.Length, FeatureVocabulary.MaxWordLength)];
            for (int k = 1; k <= 3; k++) r[k] = Id(k, pre[..Math.Min(k, pre.Length)]);
            for (int k = 1; k <= 4; k++) r[3 + k] = Id(3 + k, norm[Math.Max(0, norm.Length - k)..]);
            r[8] = FeatureVocabulary.Shape(w);
            return r;
        }
        var ids = new int[FeatureVocabulary.Count];
        int checkedWords = 0;
        foreach (var e in v.Lists[0].Skip(1).Concat(["zzyzx", "Qwertyuiop", "0000-00", new string('b', 70)]))
            foreach (var w in new[] { e, e.ToUpperInvariant(), e.Length > 0 ? char.ToUpperInvariant(e[0]) + e[1..] : e })
            {
                v.Extract(w, ids);
                Assert.Equal(Rules(w), ids);
                checkedWords++;
            }
        Assert.True(checkedWords > 3 * 1000, $"only {checkedWords} words checked");
    }

    /// <summary>A hand-made list may hold an entry that is not its own normalized form: it is never matched, and nothing breaks.</summary>
    [Fact]
    public void EntryThatIsNotNormalized_IsNeverMatched()
    {
        string[] Unk(params string[] rest) => ["<unk>", .. rest];
        var v = new FeatureVocabulary([Unk("Cat", "cat"), Unk("c"), Unk("ca"), Unk("cat"), Unk("t"), Unk("at"), Unk("cat"), Unk()]);
        var ids = new int[FeatureVocabulary.Count];
        v.Extract("Cat", ids);
        Assert.Equal([2, 1, 1, 1, 1, 1, 1, 0, FeatureVocabulary.Shape("Cat")], ids);
    }

    [Theory]
    [InlineData("cat", 1 * 8)]
    [InlineData("Cat", 2 * 8)]
    [InlineData("I", 2 * 8)]
    [InlineData("CAT", 3 * 8)]
    [InlineData("iPhone", 4 * 8)]
    [InlineData("1999", 0 * 8 + 4)]
    [InlineData("well-known", 1 * 8 + 2)]
    [InlineData("-", 0 * 8 + 2 + 1)]
    [InlineData("...", 0 * 8 + 1)]
    [InlineData("B-52", 2 * 8 + 4 + 2)]
    public void ShapeClasses(string word, int shape)
    {
        Assert.Equal(shape, FeatureVocabulary.Shape(word));
        Assert.InRange(shape, 0, FeatureVocabulary.ShapeCount - 1);
    }

    [Fact]
    public void JsonRoundTripAndBadJson()
    {
        var v = FeatureVocabulary.Build(Corpus);
        var back = FeatureVocabulary.FromJson(v.ToJson());
        for (int f = 0; f < FeatureVocabulary.Count - 1; f++) Assert.Equal(v.Lists[f], back.Lists[f]);
        Assert.Throws<InvalidDataException>(() => FeatureVocabulary.FromJson("{"));
        Assert.Throws<InvalidDataException>(() => FeatureVocabulary.FromJson("{\"word\":[\"<unk>\"]}"));
        Assert.Throws<InvalidDataException>(() => FeatureVocabulary.FromJson("{\"word\":[\"x\"],\"prefix1\":[\"<unk>\"],\"prefix2\":[\"<unk>\"],\"prefix3\":[\"<unk>\"],\"suffix1\":[\"<unk>\"],\"suffix2\":[\"<unk>\"],\"suffix3\":[\"<unk>\"],\"suffix4\":[\"<unk>\"]}"));
        Assert.Throws<InvalidDataException>(() => FeatureVocabulary.FromJson("null"));
    }

    [Fact]
    public void ExtractAllocatesNothing()
    {
        var v = FeatureVocabulary.Build(Corpus);
        var ids = new int[FeatureVocabulary.Count];
        Assert.Equal(0, Reference.SteadyStateAllocations(() => v.Extract("Running", ids)));
    }
}
