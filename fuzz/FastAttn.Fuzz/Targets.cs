using System.Text;
using FastAttn.IO;
using FastAttn.Tagging;

namespace FastAttn.Fuzz;

/// <summary>
/// One fuzz target per parser. A target returns normally for input it accepts or rejects the documented way
/// (<see cref="InvalidDataException"/> for files); any other exception, a hang or a crash is a finding. Targets also
/// check what they can of the result (token ranges, tensor sizes), so a silently wrong answer is a finding too.
/// The same functions run the committed corpus and every finding in the normal test run (FuzzRegressionTests).
/// </summary>
public static class Targets
{
    public static readonly string[] Names = ["safetensors", "npy", "conllu", "tokenizer"];

    public static void Run(string target, ReadOnlySpan<byte> input)
    {
        switch (target)
        {
            case "safetensors": SafeTensors(input); break;
            case "npy": NpyFile(input); break;
            case "conllu": Conllu(input); break;
            case "tokenizer": Tokenizer(input); break;
            default: throw new ArgumentException($"unknown fuzz target '{target}'; targets: {string.Join(", ", Names)}.");
        }
    }

    public static void SafeTensors(ReadOnlySpan<byte> input)
    {
        SafeTensorsFile f;
        try { f = SafeTensorsFile.Load(input, "fuzz"); }
        catch (InvalidDataException) { return; }
        using (f)
        {
            long total = 0;
            foreach (var t in f.Tensors)
            {
                Check(t.Begin >= 0 && t.End >= t.Begin && t.End <= input.Length, "tensor range outside the input");
                if (t.Elements > 1 << 20) continue;
                var data = f.ReadFloat32(t.Name);
                Check(data.Length == t.Elements, "element count");
                total += t.End - t.Begin;
            }
            foreach (var kv in f.Metadata) Check(kv.Key != null && kv.Value != null, "null metadata");
        }
    }

    public static void NpyFile(ReadOnlySpan<byte> input)
    {
        try
        {
            var (shape, data) = Npy.Read(input, "fuzz");
            long n = 1;
            foreach (long d in shape) { Check(d >= 0, "negative dimension"); n *= d; }
            Check(n == data.Length, "shape does not match the data");
        }
        catch (InvalidDataException) { }
    }

    public static void Conllu(ReadOnlySpan<byte> input)
    {
        try
        {
            string text = Utf8Text.Decode(input, "fuzz");
            foreach (var s in ConllU.Parse(text, "fuzz"))
            {
                Check(s.Words.Length == s.Tags.Length && s.Words.Length > 0, "sentence shape");
                foreach (var w in s.Words) Check(w.Length > 0 && !w.Contains('\t'), "word");
            }
        }
        catch (InvalidDataException) { }
    }

    private static readonly Lazy<FeatureVocabulary> Vocabulary = new(() => FeatureVocabulary.Build(["the", "saw", "a", "I", "saw", "the"], 1, 1));

    public static void Tokenizer(ReadOnlySpan<byte> input)
    {
        // any text: invalid bytes become U+FFFD here (the tokenizer never sees bytes)
        string text = Encoding.UTF8.GetString(input);
        int n = EnglishTokenizer.Count(text);
        var ranges = new Range[n];
        Check(EnglishTokenizer.Tokenize(text, ranges) == n, "count differs between passes");
        int prev = 0;
        Span<int> ids = stackalloc int[FeatureVocabulary.Count];
        foreach (var r in ranges)
        {
            var (start, length) = r.GetOffsetAndLength(text.Length);
            Check(length > 0 && start >= prev, "tokens must be non-empty, in order, not overlapping");
            for (int i = prev; i < start; i++) Check(char.IsWhiteSpace(text[i]), "a non-space character belongs to no token");
            for (int i = start; i < start + length; i++) Check(!char.IsWhiteSpace(text[i]), "a token holds white space");
            Vocabulary.Value.Extract(text.AsSpan(start, length), ids);
            prev = start + length;
        }
        for (int i = prev; i < text.Length; i++) Check(char.IsWhiteSpace(text[i]), "a non-space character belongs to no token");
    }

    private static void Check(bool ok, string what)
    {
        if (!ok) throw new FuzzFindingException(what);
    }
}

/// <summary>A target's own check failed: a silently wrong answer.</summary>
public sealed class FuzzFindingException(string message) : Exception(message);
