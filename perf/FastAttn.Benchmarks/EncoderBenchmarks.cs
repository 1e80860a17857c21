using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using BenchmarkDotNet.Attributes;
using FastAttn.Benchmarks.Peers;
using FastAttn.Composition;
using FastAttn.Kernels;
using FastAttn.Layers;
using Microsoft.ML.OnnxRuntime;
using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Benchmarks;

/// <summary>Random weights of an nn.TransformerEncoderLayer stack in PyTorch's layouts, shared by every implementation.</summary>
public sealed class EncoderWeights
{
    public sealed record Layer(float[] Win, float[] Bin, float[] Wout, float[] Bout, float[] W1, float[] B1, float[] W2, float[] B2,
        float[] G1, float[] Be1, float[] G2, float[] Be2)
    {
        public IEnumerable<float[]> All => [Win, Bin, Wout, Bout, W1, B1, W2, B2, G1, Be1, G2, Be2];
    }

    public int E, H, F;
    public Layer[] Layers = [];

    public static EncoderWeights Random(int layers, int e, int h, int f, int seed)
    {
        var rnd = new Random(seed);
        float[] R(int n, double s) { var a = new float[n]; for (int i = 0; i < n; i++) a[i] = (float)((rnd.NextDouble() * 2 - 1) * s); return a; }
        float[] One(int n) => R(n, 0.2).Select(x => 1 + x).ToArray();
        double se = 1 / Math.Sqrt(e), sf = 1 / Math.Sqrt(f);
        return new EncoderWeights
        {
            E = e, H = h, F = f,
            Layers = Enumerable.Range(0, layers).Select(_ => new Layer(R(3 * e * e, se), R(3 * e, 0.1), R(e * e, se), R(e, 0.1),
                R(f * e, se), R(f, 0.1), R(e * f, sf), R(e, 0.1), One(e), R(e, 0.1), One(e), R(e, 0.1))).ToArray(),
        };
    }

    public long Floats => Layers.Sum(l => l.All.Sum(a => (long)a.Length));

    /// <summary>The FastAttn stack (post-norm, ReLU, eps 1e-5).</summary>
    public Stack FastAttn() => new(Layers.Select(l => (IBlock)new EncoderBlock(
        new MultiHeadAttention(E, H, l.Win, l.Bin, l.Wout, l.Bout),
        new FeedForward(E, F, l.W1, l.B1, l.W2, l.B2, Activation.Relu),
        new LayerNorm(E, l.G1, l.Be1), new LayerNorm(E, l.G2, l.Be2), normFirst: false)).ToArray());

    private static float[] T(float[] w, int rows, int cols)
    {
        var t = new float[w.Length];
        for (int r = 0; r < rows; r++) for (int c = 0; c < cols; c++) t[c * rows + r] = w[r * cols + c];
        return t;
    }

    /// <summary>The same stack as an ONNX graph of standard ops (opset 17) for a fixed token count.</summary>
    public byte[] OnnxModel(int tokens)
    {
        var g = new OnnxGraph();
        int dh = E / H;
        g.Input("x", tokens, E);
        string heads = g.Int64s("shape_heads", -1, H, dh), flat = g.Int64s("shape_flat", -1, E), split = g.Int64s("split", E, E, E);
        string scale = g.Constant("scale", [1f / MathF.Sqrt(dh)]);
        string x = "x";
        for (int i = 0; i < Layers.Length; i++)
        {
            var l = Layers[i];
            string p = $"l{i}_";
            string qkv = g.Node("Add", [g.Node("MatMul", [x, g.Constant(p + "winT", T(l.Win, 3 * E, E), E, 3 * E)]), g.Constant(p + "bin", l.Bin, 3 * E)]);
            string q = g.Name("q"), k = g.Name("k"), v = g.Name("v");
            g.NodeMulti("Split", [qkv, split], [q, k, v], ("axis", 1L));
            string qh = g.Node("Transpose", [g.Node("Reshape", [q, heads])], null, ("perm", new long[] { 1, 0, 2 }));
            string kh = g.Node("Transpose", [g.Node("Reshape", [k, heads])], null, ("perm", new long[] { 1, 2, 0 }));
            string vh = g.Node("Transpose", [g.Node("Reshape", [v, heads])], null, ("perm", new long[] { 1, 0, 2 }));
            string s = g.Node("Mul", [g.Node("MatMul", [qh, kh]), scale]);
            string a = g.Node("MatMul", [g.Node("Softmax", [s], null, ("axis", -1L)), vh]);
            string af = g.Node("Reshape", [g.Node("Transpose", [a], null, ("perm", new long[] { 1, 0, 2 })), flat]);
            string o = g.Node("Add", [g.Node("MatMul", [af, g.Constant(p + "woutT", T(l.Wout, E, E), E, E)]), g.Constant(p + "bout", l.Bout, E)]);
            string n1 = g.Node("LayerNormalization", [g.Node("Add", [o, x]), g.Constant(p + "g1", l.G1, E), g.Constant(p + "be1", l.Be1, E)], null,
                ("axis", -1L), ("epsilon", 1e-5f));
            string h = g.Node("Relu", [g.Node("Add", [g.Node("MatMul", [n1, g.Constant(p + "w1T", T(l.W1, F, E), E, F)]), g.Constant(p + "b1", l.B1, F)])]);
            string f2 = g.Node("Add", [g.Node("MatMul", [h, g.Constant(p + "w2T", T(l.W2, E, F), F, E)]), g.Constant(p + "b2", l.B2, E)]);
            x = g.Node("LayerNormalization", [g.Node("Add", [f2, n1]), g.Constant(p + "g2", l.G2, E), g.Constant(p + "be2", l.Be2, E)],
                i == Layers.Length - 1 ? "y" : null, ("axis", -1L), ("epsilon", 1e-5f));
        }
        g.Output("y", tokens, E);
        return g.ToModel();
    }

    /// <summary>The same stack as libtorch modules (nn.TransformerEncoderLayer, eval, sequence-first input).</summary>
    public (torch.nn.Module Module, Func<Tensor, Tensor> Forward) Torch()
    {
        var layer = torch.nn.TransformerEncoderLayer(E, H, F, 0.0, torch.nn.Activations.ReLU);
        torch.nn.Module m;
        Func<Tensor, Tensor> fwd;
        if (Layers.Length == 1) { m = layer; fwd = t => layer.call(t); }
        else { var enc = torch.nn.TransformerEncoder(layer, Layers.Length); m = enc; fwd = t => enc.forward(t, null, null); }
        m.eval();
        var ps = m.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        using (torch.no_grad())
        {
            for (int i = 0; i < Layers.Length; i++)
            {
                var l = Layers[i];
                string p = Layers.Length == 1 ? "" : $"layers.{i}.";
                void Set(string name, float[] data)
                {
                    using var t = torch.tensor(data, ps[p + name].shape);
                    ps[p + name].copy_(t);
                }
                Set("self_attn.in_proj_weight", l.Win); Set("self_attn.in_proj_bias", l.Bin);
                Set("self_attn.out_proj.weight", l.Wout); Set("self_attn.out_proj.bias", l.Bout);
                Set("linear1.weight", l.W1); Set("linear1.bias", l.B1); Set("linear2.weight", l.W2); Set("linear2.bias", l.B2);
                Set("norm1.weight", l.G1); Set("norm1.bias", l.Be1); Set("norm2.weight", l.G2); Set("norm2.bias", l.Be2);
            }
        }
        foreach (var prm in ps.Values) prm.Dispose(); // the wrappers only; the module keeps its parameters
        return (m, fwd);
    }
}

/// <summary>
/// One encoder (the same weights) in FastAttn, ONNX Runtime (an in-process ONNX graph, IntraOpNumThreads = threads,
/// pre-bound input and output) and libtorch (nn.TransformerEncoderLayer modules in eval and inference mode,
/// set_num_threads), checked to agree at setup; plus one read of all the weights.
/// </summary>
public sealed class EncoderPeers : IDisposable
{
    public readonly EncoderWeights W;
    public readonly int T, Threads;
    private readonly Stack _stack;
    private readonly Session _session;
    private readonly float[] _x, _y, _yOrt;
    private readonly InferenceSession _ort;
    private readonly OrtIoBinding _binding;
    private readonly RunOptions _runOptions;
    private readonly OrtValue _ortIn, _ortOut;
    private readonly torch.nn.Module _torch;
    private readonly Func<Tensor, Tensor> _torchForward;
    private readonly Tensor _tx;
    private float _sink;

    /// <param name="denormals">
    /// Data with denormals in them (<see cref="DenormalBenchmarks"/>): "weights" — 1 % of every projection's weights
    /// replaced by denormals of either sign; "input" — every input value replaced by one; anything else — none.
    /// </param>
    public EncoderPeers(int layers, int e, int h, int f, int tokens, int threads, string label, string denormals = "none")
    {
        W = EncoderWeights.Random(layers, e, h, f, 11);
        T = tokens; Threads = threads;
        var den = new Random(29);
        float Denormal() => (den.Next(2) == 0 ? 1 : -1) * BitConverter.Int32BitsToSingle(den.Next(1, 0x800000));
        if (denormals == "weights")
            foreach (var l in W.Layers)
                foreach (var a in new[] { l.Win, l.Wout, l.W1, l.W2 })
                    for (int i = 0; i < a.Length; i++) if (den.Next(100) == 0) a[i] = Denormal();
        _stack = W.FastAttn();
        _session = _stack.CreateSession(T, Threads);
        var rnd = new Random(3);
        _x = Enumerable.Range(0, T * e).Select(_ => denormals == "input" ? Denormal() : (float)(rnd.NextDouble() * 2 - 1)).ToArray();
        _y = new float[T * e];
        _yOrt = new float[T * e];
        var so = new SessionOptions { IntraOpNumThreads = Threads, InterOpNumThreads = 1, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        _ort = new InferenceSession(W.OnnxModel(T), so);
        _runOptions = new RunOptions();
        _ortIn = OrtValue.CreateTensorValueFromMemory(_x, [T, e]);
        _ortOut = OrtValue.CreateTensorValueFromMemory(_yOrt, [T, e]);
        _binding = _ort.CreateIoBinding();
        _binding.BindInput("x", _ortIn);
        _binding.BindOutput("y", _ortOut);
        TorchPeer.Init(Threads);
        (_torch, _torchForward) = W.Torch();
        _tx = torch.tensor(_x, [T, 1, e]);
        // the peers must compute the same function
        FastAttn();
        OnnxRuntime();
        Check("ONNX Runtime", _yOrt, label);
        using (torch.inference_mode())
        using (var ty = _torchForward(_tx))
            Check("libtorch", ty.data<float>().ToArray(), label);
        // each peer must use the cores it is given: process CPU time over wall time while it runs
        CpuPerWall("FastAttn", FastAttn);
        CpuPerWall("ONNX Runtime", OnnxRuntime);
        CpuPerWall("libtorch", Torch);
    }

    private void Check(string who, float[] other, string label)
    {
        double max = 0;
        for (int i = 0; i < _y.Length; i++) max = Math.Max(max, Math.Abs(_y[i] - other[i]));
        if (!(max < 2e-3)) throw new InvalidOperationException($"{who} differs from FastAttn by {max} on {label}.");
        Console.WriteLine($"// {who} agrees with FastAttn on {label}: max |diff| = {max:E2}");
    }

    private static void CpuPerWall(string who, Action run)
    {
        run();
        var p = System.Diagnostics.Process.GetCurrentProcess();
        p.Refresh();
        var cpu0 = p.TotalProcessorTime;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (sw.ElapsedMilliseconds < 300) run();
        p.Refresh();
        Console.WriteLine($"// {who}: process CPU time / wall time = {(p.TotalProcessorTime - cpu0).TotalMilliseconds / sw.Elapsed.TotalMilliseconds:F2}");
    }

    public void FastAttn() => _session.Run(_x, _y);

    public void OnnxRuntime() => _ort.RunWithBinding(_runOptions, _binding);

    public void Torch()
    {
        using var mode = torch.inference_mode();
        using var y = _torchForward(_tx);
    }

    /// <summary>One read of every weight (TensorPrimitives.Sum over the float arrays): what streaming them costs.</summary>
    public void ReadWeights()
    {
        float s = 0;
        foreach (var l in W.Layers)
            foreach (var a in l.All) s += TensorPrimitives.Sum(a);
        _sink = s;
    }

    public void Dispose()
    {
        _session.Dispose(); _stack.Dispose();
        _binding.Dispose(); _ortIn.Dispose(); _ortOut.Dispose(); _runOptions.Dispose(); _ort.Dispose();
        _torch.Dispose(); _tx.Dispose();
    }
}

/// <summary>
/// nn.TransformerEncoderLayer (post-norm, ReLU) or a stack of them on 1 and 2 threads: FastAttn against ONNX Runtime
/// and libtorch, plus the time one pass over all the weights takes (the floor for small token counts, where the
/// layer streams its weights once). Shape: [layers L-]dModel x heads x ffDim x tokens.
/// </summary>
[MemoryDiagnoser]
public class EncoderBenchmarks
{
    [Params("768x12x3072x128", "384x12x1536x128", "256x4x1024x32", "768x12x3072x8", "6L-384x12x1536x128")]
    public string Shape = "768x12x3072x128";

    [Params(1, 2)]
    public int Threads = 1;

    public int L, E, H, F, T;
    private EncoderPeers? _p;

    public void ParseShape()
    {
        string s = Shape;
        L = 1;
        if (s.Contains("L-")) { L = int.Parse(s[..s.IndexOf('L')]); s = s[(s.IndexOf('-') + 1)..]; }
        var p = s.Split('x').Select(int.Parse).ToArray();
        (E, H, F, T) = (p[0], p[1], p[2], p[3]);
    }

    public double Flops => L * (2.0 * T * (4.0 * E * E + 2.0 * E * F) + 4.0 * T * T * E);

    [GlobalSetup]
    public void Setup() { ParseShape(); _p = new EncoderPeers(L, E, H, F, T, Threads, $"{Shape} at {Threads} thread(s)"); }

    [GlobalCleanup]
    public void Cleanup() => _p?.Dispose();

    [Benchmark(Baseline = true, Description = "FastAttn Session.Run"), BenchmarkCategory("Encoder")]
    public void FastAttn() => _p!.FastAttn();

    [Benchmark(Description = "ONNX Runtime (IoBinding)"), BenchmarkCategory("Encoder")]
    public void OnnxRuntime() => _p!.OnnxRuntime();

    [Benchmark(Description = "libtorch nn.TransformerEncoderLayer"), BenchmarkCategory("Encoder")]
    public void Torch() => _p!.Torch();

    [Benchmark(Description = "read all weights once"), BenchmarkCategory("Encoder")]
    public void ReadWeights() => _p!.ReadWeights();
}

/// <summary>
/// Latency against sequence length for the chart: one (384, 12, 1536) encoder layer, single thread, at 16 to 1024
/// tokens, FastAttn against ONNX Runtime and libtorch.
/// </summary>
[MemoryDiagnoser]
public class LatencyBenchmarks
{
    public const int E = 384, H = 12, F = 1536;

    [Params(16, 64, 256, 1024)]
    public int Tokens = 16;

    private EncoderPeers? _p;

    public double Flops => 2.0 * Tokens * (4.0 * E * E + 2.0 * E * F) + 4.0 * Tokens * Tokens * E;

    [GlobalSetup]
    public void Setup() => _p = new EncoderPeers(1, E, H, F, Tokens, 1, $"latency {E}x{H}x{F}x{Tokens}");

    [GlobalCleanup]
    public void Cleanup() => _p?.Dispose();

    [Benchmark(Baseline = true, Description = "FastAttn Session.Run"), BenchmarkCategory("Latency")]
    public void FastAttn() => _p!.FastAttn();

    [Benchmark(Description = "ONNX Runtime (IoBinding)"), BenchmarkCategory("Latency")]
    public void OnnxRuntime() => _p!.OnnxRuntime();

    [Benchmark(Description = "libtorch nn.TransformerEncoderLayer"), BenchmarkCategory("Latency")]
    public void Torch() => _p!.Torch();
}

/// <summary>
/// Denormal operands: one encoder layer (384, 12 heads, 1536, 128 tokens, 1 thread) on ordinary data, with 1 % of its
/// projection weights denormal, and on an input of denormals — FastAttn against ONNX Runtime and libtorch in the same run.
/// A multiply-add with a denormal operand takes a microcode assist (~200× its time on the Intel Xeon measured); FastAttn
/// packs denormals as zeros, the peers (defaults: no flush-to-zero) do not.
/// </summary>
[MemoryDiagnoser]
public class DenormalBenchmarks
{
    [Params("none", "weights", "input")]
    public string Denormals = "none";

    private EncoderPeers? _p;

    [GlobalSetup]
    public void Setup() => _p = new EncoderPeers(1, 384, 12, 1536, 128, 1, $"384x12x1536x128 with denormals: {Denormals}", Denormals);

    [GlobalCleanup]
    public void Cleanup() => _p?.Dispose();

    [Benchmark(Baseline = true, Description = "FastAttn Session.Run")]
    public void FastAttn() => _p!.FastAttn();

    [Benchmark(Description = "ONNX Runtime (IoBinding)")]
    public void OnnxRuntime() => _p!.OnnxRuntime();

    [Benchmark(Description = "libtorch nn.TransformerEncoderLayer")]
    public void Torch() => _p!.Torch();
}
