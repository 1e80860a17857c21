using FastAttn.Embeddings;
using FastAttn.TestSupport;
using Microsoft.ML.OnnxRuntime;

namespace FastAttn.Parity.Tests;

/// <summary>
/// all-MiniLM-L6-v2 with its weights in an ONNX external data file, written by ONNX Runtime itself (a session saving its
/// model with <c>session.optimized_model_external_initializers_file_name</c>) — the layout exporters use for models over
/// protobuf's 2 GB (<c>model.onnx</c> + <c>model.onnx_data</c>). FastAttn reads the weights from that file and matches
/// ONNX Runtime running the same pair of files, and itself on the original file bit for bit.
/// </summary>
public class ExternalDataOnnxParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    [Fact]
    public void ExternalDataWrittenByOnnxRuntime_LoadsAndMatchesIt()
    {
        var (model, vocab) = MiniLmPackage.Files;
        string dir = Path.Combine(PackagedModel.CacheRoot, $"all-MiniLM-L6-v2-{MiniLmPackage.Version}-external-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        try
        {
            using (var so = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL, OptimizedModelFilePath = Path.Combine(dir, "model.onnx") })
            {
                so.AddSessionConfigEntry("session.optimized_model_external_initializers_file_name", "model.onnx_data");
                so.AddSessionConfigEntry("session.optimized_model_external_initializers_min_size_in_bytes", "1024");
                using (new InferenceSession(model, so)) { }
            }
            File.Copy(vocab, Path.Combine(dir, "vocab.txt"), overwrite: true);
            long onnxBytes = new FileInfo(Path.Combine(dir, "model.onnx")).Length, dataBytes = new FileInfo(Path.Combine(dir, "model.onnx_data")).Length;
            output.WriteLine($"model.onnx {onnxBytes:N0} bytes, model.onnx_data {dataBytes:N0} bytes");
            Assert.True(dataBytes > 80_000_000 && onnxBytes < 1_000_000, "the weights are outside the model file");

            using var external = SentenceEmbedder.Load(dir, options: new SentenceEmbedderOptions { MaxSessions = 1 });
            using var original = SentenceEmbedder.Load(Path.GetDirectoryName(model)!, options: new SentenceEmbedderOptions { MaxSessions = 1 });
            using var ort = new InferenceSession(Path.Combine(dir, "model.onnx"), new SessionOptions { IntraOpNumThreads = 1 });
            using var se = new EmbeddingSession(external.Model, external.Tokenizer);
            using var so2 = new EmbeddingSession(original.Model, original.Tokenizer);
            int h = external.Model.Config.HiddenSize;
            double worst = 0;
            foreach (var s in MiniLmParityTests.BuiltIn.Take(20))
            {
                var ids = external.Tokenizer.Encode(s);
                float[] mine = new float[ids.Length * h], same = new float[ids.Length * h];
                se.HiddenStates(ids, [ids.Length], mine);
                so2.HiddenStates(ids, [ids.Length], same);
                Assert.Equal(same, mine);
                var reference = MiniLmParityTests.Ort(ort, ids);
                double md = 0, mr = 0;
                for (int i = 0; i < mine.Length; i++) { md = Math.Max(md, Math.Abs(mine[i] - reference[i])); mr = Math.Max(mr, Math.Abs(reference[i])); }
                worst = Math.Max(worst, md / mr);
            }
            output.WriteLine($"worst last_hidden_state max|Δ|/max|ref| against ONNX Runtime on the same files {worst:E2}");
            // the same bound as the original file's test (float32 sums in another order; see MiniLmParityTests)
            Assert.True(worst <= 2e-6, $"last_hidden_state max|Δ|/max|ref| {worst:E2}");
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
