using BenchmarkDotNet.Attributes;
using FastAttn.Benchmarks.Peers;
using FastAttn.Kernels;
using TorchSharp;
using static TorchSharp.torch;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace FastAttn.Benchmarks;

/// <summary>
/// Attention alone on projected Q, K, V (batch 1, 1 and 2 threads): FastAttn's fused kernel against libtorch's
/// scaled_dot_product_attention, ONNX Runtime (MatMul–Softmax–MatMul graph built in-process, IoBinding) and the naive
/// loop a .NET developer would write with TensorPrimitives (a dot product per score, a softmax per row, a
/// multiply-add per value row). Shape is heads×tokens×headDim plus a variant; 1x4x16 is the per-call floor. The window
/// variant is ModernBERT's local attention (|i − j| ≤ 64): FastAttn skips the keys outside a tile's window; libtorch and
/// ONNX Runtime run it as ModernBERT's PyTorch code does on a CPU, a band mask on the full scores; the naive loop visits the band.
/// </summary>
[MemoryDiagnoser]
public class AttentionBenchmarks
{
    [Params("12x128x64", "8x32x64", "12x512x64", "8x2048x64", "12x128x64-causal", "12x128x64-additive", "12x128x64-relu", "8x2048x64-window", "1x4x16")]
    public string Shape = "12x128x64";

    [Params(1, 2)]
    public int Threads = 1;

    private FastAttn.Threading.WorkerPool? _pool;

    public int H, T, D;
    public string Variant = "";
    private float[] _q = [], _k = [], _v = [], _o = [], _w = [], _scratch = [];
    private float[] _s = [], _tmp = [];
    private Tensor? _tq, _tk, _tv, _tw, _tmask;
    private OrtRunner? _ort;
    private float[] _oOrt = [];

    public void ParseShape()
    {
        var parts = Shape.Split('-');
        var p = parts[0].Split('x').Select(int.Parse).ToArray();
        (H, T, D) = (p[0], p[1], p[2]);
        Variant = parts.Length > 1 ? parts[1] : "";
    }

    /// <summary>The window of the window variant: a query sees keys within this distance.</summary>
    private const int Window = 64;

    /// <summary>Q·Kᵀ and P·V (causal counts half; the window counts the keys in it); the additive variant counts the same work for comparison.</summary>
    public double Flops => Variant == "window"
        ? 4.0 * H * D * Enumerable.Range(0, T).Sum(i => (double)(Math.Min(T, i + Window + 1) - Math.Max(0, i - Window)))
        : 4.0 * H * T * T * D * (Variant == "causal" ? 0.5 : 1);

    private AttentionOptions Options() => new()
    {
        Heads = H, HeadDim = D,
        Causal = Variant == "causal" ? CausalMode.TopLeft : CausalMode.None,
        Window = Variant == "window" ? Window : 0,
        Score = Variant == "additive" ? ScoreKind.Additive : ScoreKind.Dot,
        AdditiveWeights = Variant == "additive" ? _w : default,
        Normalizer = Variant == "relu" ? Normalizer.Relu : Normalizer.Softmax,
    };

    [GlobalSetup]
    public void Setup()
    {
        ParseShape();
        var rnd = new Random(7);
        float[] R(int n) { var a = new float[n]; for (int i = 0; i < n; i++) a[i] = (float)(rnd.NextDouble() * 2 - 1); return a; }
        _q = R(T * H * D); _k = R(T * H * D); _v = R(T * H * D); _w = R(H * D);
        _o = new float[T * H * D];
        _scratch = new float[Attention.ScratchSize(D, D, T)];
        _s = new float[T]; _tmp = new float[D];
        TorchPeer.Init(Threads);
        _pool = Threads > 1 ? new FastAttn.Threading.WorkerPool(Threads) : null;
        // libtorch and ONNX Runtime take [batch, heads, tokens, headDim]
        float[] Heads(float[] x)
        {
            var r = new float[x.Length];
            for (int t = 0; t < T; t++) for (int h = 0; h < H; h++) Array.Copy(x, (t * H + h) * D, r, (h * T + t) * D, D);
            return r;
        }
        float[] qh = Heads(_q), kh = Heads(_k), vh = Heads(_v);
        _tq = torch.tensor(qh, [1, H, T, D]);
        _tk = torch.tensor(kh, [1, H, T, D]);
        _tv = torch.tensor(vh, [1, H, T, D]);
        _tw = torch.tensor(_w, [1, H, 1, 1, D]);
        if (Variant == "causal") _tmask = torch.ones(T, T, dtype: torch.@bool).tril();
        if (Variant == "window") _tmask = torch.ones(T, T, dtype: torch.@bool).triu(-Window).tril(Window);
        _oOrt = new float[H * T * D];
        _ort = new OrtRunner(OnnxModel(), Threads, [("q", qh, [1, H, T, D]), ("k", kh, [1, H, T, D]), ("v", vh, [1, H, T, D])], ("o", _oOrt, [1, H, T, D]));
        // every implementation computes the same thing
        FastAttn(); Naive(); OnnxRuntime();
        float[] naive = (float[])_o.Clone();
        FastAttn();
        using (torch.inference_mode())
        using (var tr = TorchResult())
        {
            float[] t = tr.contiguous().data<float>().ToArray();
            double dn = 0, dt = 0, dor = 0;
            for (int tt = 0; tt < T; tt++)
                for (int h = 0; h < H; h++)
                    for (int c = 0; c < D; c++)
                    {
                        float ours = _o[(tt * H + h) * D + c];
                        dn = Math.Max(dn, Math.Abs(ours - naive[(tt * H + h) * D + c]));
                        dt = Math.Max(dt, Math.Abs(ours - t[(h * T + tt) * D + c]));
                        dor = Math.Max(dor, Math.Abs(ours - _oOrt[(h * T + tt) * D + c]));
                    }
            if (!(dn < 1e-3 && dt < 1e-3 && dor < 1e-3)) throw new InvalidOperationException($"{Shape}: peers differ from FastAttn: naive {dn}, libtorch {dt}, ONNX Runtime {dor}.");
            Console.WriteLine($"// {Shape}: max |diff| naive {dn:E1}, libtorch {dt:E1}, ONNX Runtime {dor:E1}");
        }
    }

    /// <summary>The same attention as an ONNX graph of standard ops.</summary>
    private byte[] OnnxModel()
    {
        var g = new OnnxGraph();
        g.Input("q", 1, H, T, D); g.Input("k", 1, H, T, D); g.Input("v", 1, H, T, D);
        string s;
        if (Variant == "additive")
        {
            string q5 = g.Node("Unsqueeze", ["q", g.Int64s("ax3", 3)]), k5 = g.Node("Unsqueeze", ["k", g.Int64s("ax2", 2)]);
            string t = g.Node("Tanh", [g.Node("Add", [q5, k5])]);
            s = g.Node("ReduceSum", [g.Node("Mul", [t, g.Constant("w", _w, 1, H, 1, 1, D)]), g.Int64s("axl", -1)], null, ("keepdims", 0L));
        }
        else
        {
            s = g.Node("Mul", [g.Node("MatMul", ["q", g.Node("Transpose", ["k"], null, ("perm", new long[] { 0, 1, 3, 2 }))]), g.Constant("scale", [1f / MathF.Sqrt(D)])]);
            if (Variant == "causal" || Variant == "window")
            {
                var m = new float[T * T];
                for (int i = 0; i < T; i++)
                    for (int j = 0; j < T; j++)
                        if (Variant == "causal" ? j > i : Math.Abs(i - j) > Window) m[i * T + j] = float.NegativeInfinity;
                s = g.Node("Add", [s, g.Constant("mask", m, T, T)]);
            }
        }
        string p = Variant == "relu" ? g.Node("Mul", [g.Node("Relu", [s]), g.Constant("invL", [1f / T])]) : g.Node("Softmax", [s], null, ("axis", -1L));
        g.Node("MatMul", [p, "v"], "o");
        g.Output("o", 1, H, T, D);
        return g.ToModel();
    }

    [GlobalCleanup]
    public void Cleanup() { _tq?.Dispose(); _tk?.Dispose(); _tv?.Dispose(); _tw?.Dispose(); _tmask?.Dispose(); _ort?.Dispose(); _pool?.Dispose(); }

    [Benchmark(Baseline = true, Description = "FastAttn Attention.Forward"), BenchmarkCategory("Attention")]
    public void FastAttn() => Attention.Forward(_q, T, _k, _v, T, _o, _scratch, Options(), _pool);

    private Tensor TorchResult()
    {
        if (Variant == "additive" || Variant == "relu")
        {
            // libtorch has no fused kernel for these: the equivalent composition
            using var s = Variant == "relu"
                ? torch.nn.functional.relu(torch.matmul(_tq!, _tk!.transpose(-2, -1)) * (1.0 / Math.Sqrt(D))) * (1.0 / T)
                : torch.softmax((torch.tanh(_tq!.unsqueeze(3) + _tk!.unsqueeze(2)) * _tw!).sum(-1), -1);
            return torch.matmul(s, _tv!);
        }
        if (Variant == "window") return torch.nn.functional.scaled_dot_product_attention(_tq!, _tk!, _tv!, attn_mask: _tmask);
        return torch.nn.functional.scaled_dot_product_attention(_tq!, _tk!, _tv!, is_casual: Variant == "causal");
    }

    [Benchmark(Description = "libtorch scaled_dot_product_attention"), BenchmarkCategory("Attention")]
    public void Torch()
    {
        using var mode = torch.inference_mode();
        using var o = TorchResult();
    }

    [Benchmark(Description = "ONNX Runtime (IoBinding)"), BenchmarkCategory("Attention")]
    public void OnnxRuntime() => _ort!.Run();

    /// <summary>What a .NET developer would write with TensorPrimitives: a dot per score, a softmax per row, a multiply-add per value row.</summary>
    [Benchmark(Description = "naive TensorPrimitives loops (1 thread)"), BenchmarkCategory("Attention")]
    public void Naive()
    {
        int ld = H * D;
        float scale = 1f / MathF.Sqrt(D);
        Span<float> s = _s, tmp = _tmp;
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++)
            {
                var qi = _q.AsSpan(i * ld + h * D, D);
                int j0 = Variant == "window" ? Math.Max(0, i - Window) : 0;
                int n = Variant == "causal" ? i + 1 : Variant == "window" ? Math.Min(T, i + Window + 1) - j0 : T;
                for (int jj = 0; jj < n; jj++)
                {
                    int j = j0 + jj;
                    var kj = _k.AsSpan(j * ld + h * D, D);
                    if (Variant == "additive")
                    {
                        TensorPrimitives.Add(qi, kj, tmp);
                        TensorPrimitives.Tanh(tmp, tmp);
                        s[jj] = TensorPrimitives.Dot(_w.AsSpan(h * D, D), tmp);
                    }
                    else s[jj] = TensorPrimitives.Dot(qi, kj) * scale;
                }
                var row = s[..n];
                if (Variant == "relu")
                {
                    TensorPrimitives.Max(row, 0f, row);
                    TensorPrimitives.Multiply(row, 1f / T, row);
                }
                else
                {
                    float m = TensorPrimitives.Max(row);
                    TensorPrimitives.Subtract(row, m, row);
                    TensorPrimitives.Exp(row, row);
                    TensorPrimitives.Divide(row, TensorPrimitives.Sum(row), row);
                }
                var oi = _o.AsSpan(i * ld + h * D, D);
                oi.Clear();
                for (int jj = 0; jj < n; jj++) TensorPrimitives.MultiplyAdd(_v.AsSpan((j0 + jj) * ld + h * D, D), row[jj], oi, oi);
            }
    }
}
