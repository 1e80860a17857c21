using FastAttn.Embeddings;
using FastAttn.TestSupport;
using Microsoft.ML.OnnxRuntime;

namespace FastAttn.Parity.Tests;

/// <summary>
/// all-MiniLM-L6-v2 as ONNX Runtime's graph optimiser rewrites it — what a .NET team gets by saving a session's optimised
/// model (<c>SessionOptions.OptimizedModelFilePath</c>): at the extended and full levels the feed-forward's MatMul + Add +
/// GELU becomes MatMul + com.microsoft BiasGelu, the pooler's Gemm + Tanh a FusedGemm, the scores' scale a FusedMatMul.
/// FastAttn reads the weights of each saved graph and matches ONNX Runtime running the original file.
/// </summary>
public class OptimizedOnnxParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static string Optimized(GraphOptimizationLevel level)
    {
        var (model, vocab) = MiniLmPackage.Files;
        string dir = Path.Combine(PackagedModel.CacheRoot, $"all-MiniLM-L6-v2-{MiniLmPackage.Version}-ort-{level}-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        using (var so = new SessionOptions { GraphOptimizationLevel = level, OptimizedModelFilePath = Path.Combine(dir, "model.onnx") })
        using (new InferenceSession(model, so)) { }
        File.Copy(vocab, Path.Combine(dir, "vocab.txt"), overwrite: true);
        return dir;
    }

    [Theory]
    [InlineData(GraphOptimizationLevel.ORT_ENABLE_BASIC)]
    [InlineData(GraphOptimizationLevel.ORT_ENABLE_EXTENDED)]
    [InlineData(GraphOptimizationLevel.ORT_ENABLE_ALL)]
    public void AnOptimisedExport_LoadsAndMatchesOnnxRuntime(GraphOptimizationLevel level)
    {
        string dir = Optimized(level);
        try
        {
            var onnx = FastAttn.Onnx.OnnxModelFile.Open(Path.Combine(dir, "model.onnx"));
            var fused = onnx.Nodes.Where(n => n.Domain == "com.microsoft").Select(n => n.OpType).Distinct().Order().ToList();
            output.WriteLine($"{level}: fused nodes {string.Join(", ", fused)}");
            if (level != GraphOptimizationLevel.ORT_ENABLE_BASIC) Assert.Contains("BiasGelu", fused);   // the case this test is for

            using var embedder = SentenceEmbedder.Load(dir, options: new SentenceEmbedderOptions { MaxSessions = 1 });
            Assert.Equal(Kernels.Activation.Gelu, embedder.Model.Config.HiddenAct);
            Assert.NotNull(embedder.Model.Pooler);
            using var session = new EmbeddingSession(embedder.Model, embedder.Tokenizer);
            using var pooled = new EmbeddingSession(embedder.Model, embedder.Tokenizer, new SentenceEmbedderOptions { Pooling = Pooling.Pooler });
            using var ort = new InferenceSession(MiniLmPackage.Files.Model, new SessionOptions { IntraOpNumThreads = 1 });
            int h = embedder.Model.Config.HiddenSize;
            double worst = 0, worstPooler = 0;
            foreach (var s in MiniLmParityTests.BuiltIn.Take(20))
            {
                var ids = embedder.Tokenizer.Encode(s);
                var mine = new float[ids.Length * h];
                session.HiddenStates(ids, [ids.Length], mine);
                var reference = MiniLmParityTests.Ort(ort, ids);
                double md = 0, mr = 0;
                for (int i = 0; i < mine.Length; i++) { md = Math.Max(md, Math.Abs(mine[i] - reference[i])); mr = Math.Max(mr, Math.Abs(reference[i])); }
                worst = Math.Max(worst, md / mr);
                var pool = new float[h];
                pooled.EncodeIds(ids, [ids.Length], pool);
                var refPool = MiniLmParityTests.Ort(ort, ids, ort.OutputMetadata.Keys.First(k => k != "last_hidden_state"));
                for (int c = 0; c < h; c++) worstPooler = Math.Max(worstPooler, Math.Abs(pool[c] - refPool[c]));
            }
            output.WriteLine($"{level}: worst last_hidden_state max|Δ|/max|ref| {worst:E2}, pooler max|Δ| {worstPooler:E2}");
            // the same bound as the original file's test (float32 sums in another order; see MiniLmParityTests)
            Assert.True(worst <= 2e-6, $"last_hidden_state max|Δ|/max|ref| {worst:E2}");
            Assert.True(worstPooler <= 1e-5, $"pooler max|Δ| {worstPooler:E2}");
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
