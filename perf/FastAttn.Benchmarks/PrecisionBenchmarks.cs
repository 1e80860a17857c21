using BenchmarkDotNet.Attributes;
using FastAttn.Benchmarks.Peers;
using FastAttn.Composition;
using FastAttn.Embeddings;
using FastAttn.Kernels;
using FastAttn.Layers;
using FastAttn.TestSupport;

namespace FastAttn.Benchmarks;

/// <summary>
/// y = x·Wᵀ, 128×768·768×768, one thread: FastAttn FP32 (baseline), int8 (dynamic per-row u8 activations, per-channel s8
/// weights, AVX-VNNI) and bf16 weights, against ONNX Runtime's FP32 MatMul and its dynamically quantised form
/// (DynamicQuantizeLinear → MatMulInteger → scale, as <c>quantize_dynamic</c> writes it) on the same weights.
/// </summary>
[MemoryDiagnoser]
public class PrecisionGemmBenchmarks
{
    [Params("128x768x768")]
    public string Shape = "128x768x768";

    public int M, K, N;
    private float[] _x = [], _y = [], _s32 = [], _s8 = [], _s16 = [], _yOrt = [];
    private PackedWeight? _w32, _w8, _w16;
    private OrtRunner? _ort, _ortInt8;

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
        _w32 = new PackedWeight(w, N, K);
        _w8 = new PackedWeight(w, N, K, Precision.Int8);
        _w16 = new PackedWeight(w, N, K, Precision.BF16Weights);
        _s32 = new float[_w32.ScratchSize(M)]; _s8 = new float[_w8.ScratchSize(M)]; _s16 = new float[_w16.ScratchSize(M)];
        var wt = new float[K * N];
        for (int n = 0; n < N; n++) for (int k = 0; k < K; k++) wt[k * N + n] = w[n * K + k];
        _yOrt = new float[M * N];
        var g = new OnnxGraph();
        g.Input("x", M, K);
        g.Node("MatMul", ["x", g.Constant("wT", wt, K, N)], "y");
        g.Output("y", M, N);
        _ort = new OrtRunner(g.ToModel(), 1, [("x", _x, [M, K])], ("y", _yOrt, [M, N]));
        // the dynamically quantised graph: symmetric per-column int8 weights, u8 activations with a per-tensor zero point
        var wq = new sbyte[K * N];
        var ws = new float[N];
        for (int n = 0; n < N; n++)
        {
            float amax = 0;
            for (int k = 0; k < K; k++) amax = Math.Max(amax, Math.Abs(w[n * K + k]));
            ws[n] = amax / 127;
            for (int k = 0; k < K; k++) wq[k * N + n] = (sbyte)Math.Clamp((int)MathF.Round(w[n * K + k] / ws[n]), -127, 127);
        }
        var q = new OnnxGraph();
        q.Input("x", M, K);
        string xq = q.Name("xq"), xs = q.Name("xs"), xz = q.Name("xz");
        q.NodeMulti("DynamicQuantizeLinear", ["x"], [xq, xs, xz]);
        string acc = q.Node("MatMulInteger", [xq, q.Int8s("wq", wq, K, N), xz, q.Int8s("wz", [0])]);
        string f = q.Node("Cast", [acc], null, ("to", 1L));
        q.Node("Mul", [f, q.Node("Mul", [xs, q.Constant("ws", ws, N)])], "y");
        q.Output("y", M, N);
        _ortInt8 = new OrtRunner(q.ToModel(), 1, [("x", _x, [M, K])], ("y", _yOrt, [M, N]));
        // every variant agrees with FP32 within its precision before it is timed
        FastAttnF32(); var r32 = (float[])_y.Clone();
        foreach (var (name, run, tol) in new (string, Action, double)[] { ("int8", FastAttnInt8, 0.02), ("bf16", FastAttnBf16, 0.01), ("ORT int8", OrtInt8, 0.03), ("ORT", OrtF32, 1e-5) })
        {
            Array.Clear(_y); Array.Clear(_yOrt);
            run();
            var got = name.StartsWith("ORT") ? _yOrt : _y;
            double worst = 0, scale = r32.Max(Math.Abs);
            for (int i = 0; i < got.Length; i++) worst = Math.Max(worst, Math.Abs(got[i] - r32[i]) / scale);
            if (worst > tol) throw new InvalidOperationException($"{name}: max |Δ| / max |y| = {worst}");
            Console.WriteLine($"// {name}: max |Δ| / max |y| vs FP32 = {worst:E2}");
        }
        Console.WriteLine($"// weight bytes: FP32 {_w32.SizeInBytes:N0}, int8 {_w8.SizeInBytes:N0} ({(double)_w8.SizeInBytes / _w32.SizeInBytes:F3}×), bf16 {_w16.SizeInBytes:N0} ({(double)_w16.SizeInBytes / _w32.SizeInBytes:F3}×)");
    }

    [GlobalCleanup]
    public void Cleanup() { _w32?.Dispose(); _w8?.Dispose(); _w16?.Dispose(); _ort?.Dispose(); _ortInt8?.Dispose(); }

    [Benchmark(Baseline = true, Description = "FastAttn FP32")]
    public void FastAttnF32() => Gemm.Linear(_x, M, _w32!, _y, _s32);

    [Benchmark(Description = "FastAttn int8 (kernel here: VNNI, else 16-bit vpmaddwd on AVX-512, else pmaddubsw)")]
    public void FastAttnInt8() => Gemm.Linear(_x, M, _w8!, _y, _s8);

    [Benchmark(Description = "FastAttn bf16 weights")]
    public void FastAttnBf16() => Gemm.Linear(_x, M, _w16!, _y, _s16);

    [Benchmark(Description = "ONNX Runtime FP32 MatMul")]
    public void OrtF32() => _ort!.Run();

    [Benchmark(Description = "ONNX Runtime int8 (DynamicQuantizeLinear + MatMulInteger)")]
    public void OrtInt8() => _ortInt8!.Run();
}

/// <summary>
/// Whole networks in FP32 (baseline), int8 and bf16 weights, one thread: an 8-token 768/12/3072 encoder layer (bound by
/// its 28 MB of FP32 weights) and all-MiniLM-L6-v2 on 32 texts of 8–128 word pieces (ids → normalised vectors, one packed pass).
/// </summary>
[MemoryDiagnoser]
public class PrecisionModelBenchmarks
{
    [Params("layer-768x12x3072x8", "minilm-batch-32")]
    public string Workload = "layer-768x12x3072x8";

    private readonly Dictionary<Precision, Action> _run = [];
    private readonly Dictionary<Precision, List<IDisposable>> _owned = new() { [Precision.F32] = [], [Precision.Int8] = [], [Precision.BF16Weights] = [] };

    public double Flops => Workload == "minilm-batch-32"
        ? 6 * EmbeddingsBenchmarks.Batch32().Select(t => t.Split(' ').Length + 2).Sum(n => 2.0 * n * (4 * 384.0 * 384 + 2 * 384.0 * 1536) + 4.0 * n * n * 384)
        : 2.0 * 8 * (4.0 * 768 * 768 + 2.0 * 768 * 3072) + 4.0 * 8 * 8 * 768;

    [GlobalSetup(Target = nameof(F32))] public void SetupF32() => Setup(Precision.F32);
    [GlobalSetup(Target = nameof(Int8))] public void SetupInt8() => Setup(Precision.Int8);
    [GlobalSetup(Target = nameof(Bf16))] public void SetupBf16() => Setup(Precision.BF16Weights);

    /// <summary>Builds all three (to check them against each other and to size them), then keeps only the one timed.</summary>
    private void Setup(Precision timed)
    {
        var sizes = new Dictionary<Precision, long>();
        if (Workload == "minilm-batch-32")
        {
            var texts = EmbeddingsBenchmarks.Batch32();
            var outputs = new Dictionary<Precision, float[]>();
            foreach (var p in new[] { Precision.F32, Precision.Int8, Precision.BF16Weights })
            {
                var model = BertModel.Load(MiniLmPackage.Folder, new BertLoadOptions { Precision = p });
                var session = new EmbeddingSession(model, BertWordPieceTokenizer.FromVocabFile(MiniLmPackage.Files.Vocab), new SentenceEmbedderOptions { Normalize = true, Threads = 1 });
                _owned[p].Add(session); _owned[p].Add(model);
                var output = new float[texts.Length * 384];
                outputs[p] = output;
                var tok = BertWordPieceTokenizer.FromVocabFile(MiniLmPackage.Files.Vocab);
                var encoded = texts.Select(t => tok.Encode(t)).ToArray();
                int[] ids = [.. encoded.SelectMany(e => e)], lengths = [.. encoded.Select(e => e.Length)];
                _run[p] = () => session.EncodeIds(ids, lengths, output); // the span path: ids → vectors
                _run[p]();
                sizes[p] = model.WeightBytes;
            }
            for (int i = 0; i < texts.Length; i++)
                foreach (var p in new[] { Precision.Int8, Precision.BF16Weights })
                {
                    double c = Vectors.Cosine(outputs[Precision.F32].AsSpan(i * 384, 384), outputs[p].AsSpan(i * 384, 384));
                    if (c < 0.99) throw new InvalidOperationException($"text {i}: {p} cosine to FP32 {c}");
                }
        }
        else
        {
            const int tokens = 8;
            var x = new float[tokens * 768];
            var rnd = new Random(3);
            for (int i = 0; i < x.Length; i++) x[i] = (float)(rnd.NextDouble() * 2 - 1);
            var outputs = new Dictionary<Precision, float[]>();
            foreach (var p in new[] { Precision.F32, Precision.Int8, Precision.BF16Weights })
            {
                var stack = TransformerEncoder.Create(1, 768, 12, 3072, seed: 7, precision: p);
                var session = stack.CreateSession(tokens, 1);
                _owned[p].Add(session); _owned[p].Add(stack);
                var y = new float[tokens * 768];
                outputs[p] = y;
                _run[p] = () => session.Run(x, y);
                _run[p]();
                sizes[p] = stack.Blocks.OfType<EncoderBlock>().Sum(b => b.WeightBytes);
            }
            foreach (var p in new[] { Precision.Int8, Precision.BF16Weights })
            {
                double worst = 0;
                for (int i = 0; i < x.Length; i++) worst = Math.Max(worst, Math.Abs(outputs[p][i] - outputs[Precision.F32][i]));
                if (worst > 0.1) throw new InvalidOperationException($"{p}: max |Δ| = {worst} (LayerNorm output)");
                Console.WriteLine($"// {p}: max |Δ| vs FP32 = {worst:E2}");
            }
        }
        Console.WriteLine($"// model bytes: FP32 {sizes[Precision.F32]:N0}, int8 {sizes[Precision.Int8]:N0} ({(double)sizes[Precision.Int8] / sizes[Precision.F32]:F3}×), bf16 {sizes[Precision.BF16Weights]:N0} ({(double)sizes[Precision.BF16Weights] / sizes[Precision.F32]:F3}×)");
        foreach (var (p, list) in _owned)
            if (p != timed) { foreach (var o in list) o.Dispose(); list.Clear(); _run.Remove(p); }
        GC.Collect();
    }

    [GlobalCleanup]
    public void Cleanup() { foreach (var list in _owned.Values) { foreach (var o in list) o.Dispose(); list.Clear(); } _run.Clear(); }

    [Benchmark(Baseline = true, Description = "FastAttn FP32")]
    public void F32() => _run[Precision.F32]();

    [Benchmark(Description = "FastAttn int8")]
    public void Int8() => _run[Precision.Int8]();

    [Benchmark(Description = "FastAttn bf16 weights")]
    public void Bf16() => _run[Precision.BF16Weights]();
}
