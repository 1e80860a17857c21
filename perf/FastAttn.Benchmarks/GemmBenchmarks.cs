using BenchmarkDotNet.Attributes;
using FastAttn.Benchmarks.Peers;
using FastAttn.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Benchmarks;

/// <summary>y = x·Wᵀ (nn.Linear without bias) on 1 and 2 threads: FastAttn against libtorch's F.linear and ONNX Runtime's MatMul.</summary>
[MemoryDiagnoser]
public class GemmBenchmarks
{
    [Params("128x768x768", "128x768x3072", "128x3072x768", "8x768x768", "1x768x768", "512x1024x1024")]
    public string Shape = "128x768x768";

    [Params(1, 2)]
    public int Threads = 1;

    private FastAttn.Threading.WorkerPool? _pool;

    public int M, K, N;
    private float[] _x = [], _y = [], _scratch = [];
    private PackedWeight? _w;
    private Tensor? _tx, _tw;
    private OrtRunner? _ort;
    private float[] _yOrt = [];

    public double Flops => 2.0 * M * N * K;

    public void ParseShape()
    {
        var p = Shape.Split('x').Select(int.Parse).ToArray();
        (M, K, N) = (p[0], p[1], p[2]);
    }

    [GlobalSetup]
    public void Setup()
    {
        ParseShape();
        var rnd = new Random(42);
        float[] w = new float[N * K];
        _x = new float[M * K];
        for (int i = 0; i < w.Length; i++) w[i] = (float)(rnd.NextDouble() - 0.5);
        for (int i = 0; i < _x.Length; i++) _x[i] = (float)(rnd.NextDouble() - 0.5);
        _y = new float[M * N];
        _w = new PackedWeight(w, N, K);
        _scratch = new float[Gemm.LinearScratchSize(M, K)];
        TorchPeer.Init(Threads);
        _pool = Threads > 1 ? new FastAttn.Threading.WorkerPool(Threads) : null;
        _tx = torch.tensor(_x, [M, K]);
        _tw = torch.tensor(w, [N, K]);
        var wt = new float[K * N];
        for (int n = 0; n < N; n++) for (int k = 0; k < K; k++) wt[k * N + n] = w[n * K + k];
        var g = new OnnxGraph();
        g.Input("x", M, K);
        g.Node("MatMul", ["x", g.Constant("wT", wt, K, N)], "y");
        g.Output("y", M, N);
        _yOrt = new float[M * N];
        _ort = new OrtRunner(g.ToModel(), Threads, [("x", _x, [M, K])], ("y", _yOrt, [M, N]));
    }

    [GlobalCleanup]
    public void Cleanup() { _w?.Dispose(); _tx?.Dispose(); _tw?.Dispose(); _ort?.Dispose(); _pool?.Dispose(); }

    [Benchmark(Baseline = true, Description = "FastAttn Gemm.Linear"), BenchmarkCategory("Gemm")]
    public void FastAttn() => Gemm.Linear(_x, M, _w!, _y, _scratch, default, _pool);

    [Benchmark(Description = "libtorch F.linear"), BenchmarkCategory("Gemm")]
    public void Torch()
    {
        using var mode = torch.inference_mode();
        using var r = torch.nn.functional.linear(_tx!, _tw!);
    }

    [Benchmark(Description = "ONNX Runtime MatMul (IoBinding)"), BenchmarkCategory("Gemm")]
    public void OnnxRuntime() => _ort!.Run();
}

internal static class TorchPeer
{
    public static void Init(int threads)
    {
        torch.set_num_threads(threads);
        torch.set_grad_enabled(false);
    }
}
