using System.Diagnostics;
using System.Globalization;
using System.Text;
using FastAttn.Benchmarks.Peers;
using FastAttn.Composition;
using FastAttn.Kernels;
using FastAttn.Layers;
using Microsoft.ML.OnnxRuntime;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace FastAttn.Benchmarks;

/// <summary>
/// The shape sweep: one encoder layer (nn.TransformerEncoderLayer semantics) on a grid of odd shapes — every
/// (tokens, model width) pair once, the other axes (head width, FFN ratio, pre/post norm, ReLU/GELU, causal) cycled so
/// every value of every axis appears — each on 1 and 2 threads, FastAttn against ONNX Runtime (a graph of standard ops)
/// and libtorch (nn.TransformerEncoderLayer where it applies, and the same layer from functional ops; the faster counts),
/// interleaved in rounds in one process after their outputs are checked to agree. Plus attention alone at every head
/// width (FastAttn's kernel against libtorch's scaled_dot_product_attention and ONNX Runtime). Writes
/// perf/results/sweep.md and perf/results/sweep.png. Not BenchmarkDotNet: 160 measurements in a few minutes need a
/// lighter loop (medians of interleaved rounds, each round ≥ 10 ms per implementation).
/// </summary>
public static class Sweep
{
    public static readonly int[] Widths = [96, 320, 512, 768, 1024];
    public static readonly int[] HeadWidths = [16, 32, 48, 64, 80, 96, 128];
    public static readonly int[] TokenCounts = [1, 4, 12, 20, 50, 128, 200, 512];
    /// <summary>Idle time before each timed batch (see <see cref="Interleave"/>); <c>--pause MS</c> changes it.</summary>
    private static int PauseMs = 20;
    /// <summary>
    /// Interleaved rounds per point (<c>--rounds N</c>). 21: the same build's ratio at a point moved between two runs by a
    /// standard deviation (of its logarithm) of 0.128 with 7 rounds and 0.074 with 21 (one pair of whole sweeps each, on an
    /// Intel Xeon host, 2026-12-04 — the √3 of independent samples: the noise is from call to call, not from slow phases
    /// a round would share); a whole sweep takes ~7 minutes instead of ~3.
    /// </summary>
    private static int Rounds = 21;

    public sealed record Point(int D, int HeadDim, int FfRatio, int Tokens, bool NormFirst, Activation Act, bool Causal)
    {
        public int Heads => D / HeadDim;
        public int Ff => D * FfRatio;
        /// <summary>
        /// Input projections the layer needs: q, k and v, but at one token only v — the one key's softmax weight is 1 whatever
        /// its (finite) score, so its heads' output is v (FastAttn skips q and k there; the peers compute them).
        /// </summary>
        public int InputProjections => Tokens == 1 ? 1 : 3;
        /// <summary>The flops the layer needs (the projections it needs, the feed-forward, scores and weighted sums from two tokens).</summary>
        public double Flops => 2.0 * Tokens * ((InputProjections + 1.0) * D * D + 2.0 * D * Ff) + (Tokens == 1 ? 0 : (Causal ? 2.0 : 4.0) * Tokens * Tokens * D);
        /// <summary>The FP32 parameters the layer needs in bytes (projections, feed-forward, biases, both norms): read once per call at least.</summary>
        public long WeightBytes => 4L * ((InputProjections + 1L) * (D * D + D) + 2L * D * Ff + Ff + D + 4L * D);
        public override string ToString() =>
            $"d{D} h{Heads}×{HeadDim} ff{Ff} t{Tokens} {(NormFirst ? "pre" : "post")} {(Act == Activation.Gelu ? "GELU" : "ReLU")}{(Causal ? " causal" : "")}";
    }

    /// <summary>The grid: 40 layer points (8 token counts × 5 widths), other axes cycled with coprime periods.</summary>
    public static List<Point> Grid()
    {
        var points = new List<Point>();
        for (int ti = 0; ti < TokenCounts.Length; ti++)
            for (int wi = 0; wi < Widths.Length; wi++)
            {
                int i = ti * Widths.Length + wi, d = Widths[wi];
                // each width cycles through the head widths that divide it (768 takes 16…128, 320 takes 80)
                var valid = HeadWidths.Where(h => d % h == 0).ToArray();
                points.Add(new Point(d, valid[ti % valid.Length], i % 2 == 0 ? 4 : 2, TokenCounts[ti], (i / 2) % 2 == 1,
                    (i / 3) % 2 == 0 ? Activation.Gelu : Activation.Relu, i % 7 is 3 or 6));
            }
        return points;
    }

    public static int Run(string[] args, TextWriter console)
    {
        var clock = Stopwatch.StartNew();
        var inv = CultureInfo.InvariantCulture;
        for (int i = 0; i + 1 < args.Length; i++)
        {
            if (args[i] == "--pause") PauseMs = int.Parse(args[i + 1], inv);
            if (args[i] == "--rounds") Rounds = Math.Max(1, int.Parse(args[i + 1], inv));
        }
        string? only = args.FirstOrDefault(a => a.StartsWith("--only=", StringComparison.Ordinal))?[7..];
        double peak = PeakProbe.MeasureGflops();
        console.WriteLine($"FMA peak (one core): {peak:F1} GFLOP/s");
        // the read speeds of the grid's weight sizes, before any peer has started a thread that could share a core with them
        foreach (long b in Grid().Select(p => p.WeightBytes).Distinct().Order())
            console.WriteLine($"read speed of {b / 1e6:F2} MB: {ReadBandwidth.GBps(b, 1):F1} GB/s on 1 thread, {ReadBandwidth.GBps(b, 2):F1} GB/s on 2");
        // shapes off the grid: measured and printed, nothing written
        var extra = args.Where(a => a.StartsWith("--point=", StringComparison.Ordinal) || a.StartsWith("--attention=", StringComparison.Ordinal)).ToList();
        if (extra.Count > 0)
        {
            foreach (var a in extra)
            {
                if (a.StartsWith("--point=", StringComparison.Ordinal))
                {
                    var p = ParsePoint(a[8..]);
                    foreach (int threads in new[] { 1, 2 }) console.WriteLine(MeasureLayer(p, threads, peak).Line(inv));
                }
                else
                {
                    var f = a[12..].Split(',').Select(v => int.TryParse(v, NumberStyles.None, inv, out int x) ? x : 0).ToArray();
                    if (f.Length != 3 || f.Any(v => v < 1)) throw new ArgumentException($"--attention=HEADS,TOKENS,HEADWIDTH expected, not '{a}'.");
                    console.WriteLine(MeasureAttention(f[0], f[2], f[1], peak).Line(inv));
                }
            }
            return 0;
        }
        var grid = Grid();
        foreach (var a in new[] { ("head width", grid.Select(p => p.HeadDim).Distinct().Count(), HeadWidths.Length), ("tokens", grid.Select(p => p.Tokens).Distinct().Count(), TokenCounts.Length), ("width", grid.Select(p => p.D).Distinct().Count(), Widths.Length) })
            if (a.Item2 != a.Item3) throw new InvalidOperationException($"the grid misses a {a.Item1} value");
        var rows = new List<Row>();
        foreach (var p in grid.Where(p => only == null || p.ToString().Contains(only, StringComparison.Ordinal)))
            foreach (int threads in new[] { 1, 2 })
            {
                var r = MeasureLayer(p, threads, peak);
                rows.Add(r);
                console.WriteLine(r.Line(inv));
            }
        var attention = new List<Row>();
        foreach (int hd in HeadWidths)
            foreach (int t in new[] { 128, 512 })
            {
                var r = MeasureAttention(Math.Max(1, 768 / hd), hd, t, peak);
                attention.Add(r);
                console.WriteLine(r.Line(inv));
            }
        string root = Report.RepoRoot();
        WriteMarkdown(Path.Combine(root, "perf", "results", "sweep.md"), rows, attention, peak, clock.Elapsed);
        WriteHeatMap(Path.Combine(root, "perf", "results", "sweep.png"), rows);
        console.WriteLine($"sweep took {clock.Elapsed.TotalMinutes:F1} min; written to perf/results/sweep.md and sweep.png");
        return 0;
    }

    /// <summary><c>D,HEADWIDTH,FFRATIO,TOKENS[,pre][,gelu][,causal]</c> (post-norm ReLU unless told), e.g. <c>384,64,4,1000,gelu</c>.</summary>
    private static Point ParsePoint(string spec)
    {
        var f = spec.Split(',');
        var n = f.Take(4).Select(v => int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out int x) ? x : 0).ToArray();
        var flags = f.Skip(4).ToHashSet(StringComparer.OrdinalIgnoreCase);
        if (n.Length != 4 || n.Any(v => v < 1) || n[0] % n[1] != 0 || !flags.IsSubsetOf(["pre", "post", "gelu", "relu", "causal"]))
            throw new ArgumentException($"--point=D,HEADWIDTH,FFRATIO,TOKENS[,pre][,gelu][,causal] with HEADWIDTH dividing D expected, not '{spec}'.");
        return new Point(n[0], n[1], n[2], n[3], flags.Contains("pre"), flags.Contains("gelu") ? Activation.Gelu : Activation.Relu, flags.Contains("causal"));
    }

    /// <param name="BoundUs">
    /// The least time any implementation can take on this machine in this run: the flops at the measured FMA peak of
    /// <paramref name="Threads"/> cores, or the layer's FP32 weights read once at the best read speed measured for a
    /// buffer of their size (<see cref="ReadBandwidth"/>), whichever is longer.
    /// </param>
    /// <param name="Attempts">Times the point was measured: again when a probe of the machine's speed before or after it read slow (<see cref="Interleave"/>).</param>
    /// <param name="Steady">The probes before and after the kept measurement read the machine at its speed.</param>
    public sealed record Row(string What, Point? P, int Threads, double FastAttnUs, double OrtUs, double TorchUs, string TorchVariant, double Flops, double Peak, double MaxDiff, double BoundUs,
        int Attempts = 1, bool Steady = true, double RoundTripNs = double.NaN)
    {
        /// <summary>Measured again: the ratio of the first measurement, and which probe read slow ("FMA", "memory").</summary>
        public double FirstRatio { get; init; } = double.NaN;
        public string Slow { get; init; } = "";
        /// <summary>2-thread rows: the two CPUs read as on different dies before or after the kept measurement (<see cref="CrossCoreProbe"/>).</summary>
        public bool Far => RoundTripNs > CrossCoreProbe.FarNs;
        public double Best => Math.Min(OrtUs, TorchUs);
        public double Ratio => FastAttnUs / Best;
        public double PercentOfPeak => 100 * Flops / (FastAttnUs * 1e3) / Peak;
        /// <summary>FastAttn's time as a share of the bound: 100 % would be the machine's limit.</summary>
        public double PercentOfBound => 100 * BoundUs / FastAttnUs;
        /// <summary>The lowest ratio this point allows: the bound over the faster peer's time.</summary>
        public double LowestRatio => BoundUs / Best;
        /// <summary>True when even an implementation at the bound would take more than 0.9 of the faster peer's time.</summary>
        public bool TargetOutOfReach => LowestRatio > 0.9 && PercentOfBound <= 100;
        public string Line(IFormatProvider f) => string.Format(f, "{0,-58} {1}T  FastAttn {2,9:F1} µs  ORT {3,9:F1}  torch {4,9:F1} ({5})  ratio {6:F2}  {7:F0}% of peak  bound {8:F1} µs ({9:F0}% of it; lowest ratio {10:F2}){11}",
            What, Threads, FastAttnUs, OrtUs, TorchUs, TorchVariant, Ratio, PercentOfPeak, BoundUs, PercentOfBound, LowestRatio,
            (Attempts > 1 ? string.Create(f, $"  measured {Attempts} times ({Slow} slow; first ratio {FirstRatio:F2})") : "") + (Steady ? "" : " (machine slow)") + (double.IsNaN(RoundTripNs) ? "" : $"  CPU round trip {RoundTripNs:F0} ns"));

        /// <summary>The point's name in the table: ‡ measured again after a slow probe, ‡‡ slow still after the retries.</summary>
        public string Marked => What + (Steady ? (Attempts > 1 ? " ‡" : "") : " ‡‡");

        /// <summary>The bound of a product of <paramref name="flops"/> reading <paramref name="bytes"/> bytes on <paramref name="threads"/> cores of FMA peak <paramref name="peak"/> GFLOP/s each.</summary>
        public static double Bound(double flops, long bytes, int threads, double peak) =>
            Math.Max(flops / (peak * threads) / 1e3, bytes == 0 ? 0 : bytes / ReadBandwidth.GBps(bytes, threads) / 1e3);
    }

    // ------------------------------------------------------------------ layers

    private static Row MeasureLayer(Point p, int threads, double peak)
    {
        int d = p.D, t = p.Tokens, ff = p.Ff;
        double bound = Row.Bound(p.Flops, p.WeightBytes, threads, peak); // before this point's peers exist (measured now unless known)
        var w = EncoderWeights.Random(1, d, p.Heads, ff, 11 + d + t).Layers[0];
        var rnd = new Random(t * 31 + d);
        var x = Enumerable.Range(0, t * d).Select(_ => (float)(rnd.NextDouble() * 2 - 1)).ToArray();
        var settings = new AttentionSettings { Causal = p.Causal ? CausalMode.TopLeft : CausalMode.None };
        using var stack = TransformerEncoder.FromWeights(d, p.Heads, ff,
            [new EncoderLayerWeights(w.Win, w.Bin, w.Wout, w.Bout, w.W1, w.B1, w.W2, w.B2, w.G1, w.Be1, w.G2, w.Be2)], p.Act, p.NormFirst, 1e-5f, settings);
        using var session = stack.CreateSession(t, threads);
        var y = new float[t * d];
        Action fa = () => session.Run(x, y);

        var yOrt = new float[t * d];
        using var ort = new OrtRunner(OnnxLayer(p, w), threads, [("x", x, [t, d])], ("y", yOrt, [t, d]));
        Action ox = ort.Run;

        TorchPeer.Init(threads);
        using var tx = torch.tensor(x, [t, d]);
        var tw = TorchWeights(w, p);
        using var mask = p.Causal ? torch.triu(torch.full(t, t, float.NegativeInfinity), 1) : null;
        Func<Tensor> functional = () => TorchFunctional(tx, tw, p);
        // nn.TransformerEncoderLayer: post-norm only (TorchSharp has no norm_first); its native fast path where libtorch takes it
        torch.nn.Module? module = null;
        Func<Tensor>? moduleForward = null;
        Tensor? tx3 = null;
        if (!p.NormFirst)
        {
            var layer = torch.nn.TransformerEncoderLayer(d, p.Heads, ff, 0.0, p.Act == Activation.Gelu ? torch.nn.Activations.GELU : torch.nn.Activations.ReLU);
            layer.eval();
            var ps = layer.named_parameters().ToDictionary(q => q.name, q => q.parameter);
            using (torch.no_grad())
                foreach (var (name, data) in new[] { ("self_attn.in_proj_weight", w.Win), ("self_attn.in_proj_bias", w.Bin), ("self_attn.out_proj.weight", w.Wout), ("self_attn.out_proj.bias", w.Bout),
                    ("linear1.weight", w.W1), ("linear1.bias", w.B1), ("linear2.weight", w.W2), ("linear2.bias", w.B2), ("norm1.weight", w.G1), ("norm1.bias", w.Be1), ("norm2.weight", w.G2), ("norm2.bias", w.Be2) })
                {
                    using var src = torch.tensor(data, ps[name].shape);
                    ps[name].copy_(src);
                }
            module = layer;
            tx3 = torch.tensor(x, [t, 1, d]);
            var m = mask;
            moduleForward = () => layer.call(tx3, m);
        }
        // the same function everywhere
        fa(); ox();
        double diff = MaxRelDiff(y, yOrt, "ONNX Runtime", p);
        using (torch.inference_mode())
        {
            using (var r = functional()) diff = Math.Max(diff, MaxRelDiff(y, r.data<float>().ToArray(), "libtorch (functional)", p));
            if (moduleForward != null) using (var r = moduleForward()) diff = Math.Max(diff, MaxRelDiff(y, r.data<float>().ToArray(), "nn.TransformerEncoderLayer", p));
        }
        var impls = new List<(string Name, Action Run)> { ("fa", fa), ("ort", ox), ("torch-f", () => { using var m = torch.inference_mode(); using var r = functional(); }) };
        if (moduleForward != null) impls.Add(("torch-m", () => { using var m = torch.inference_mode(); using var r = moduleForward(); }));
        double tripBefore = threads > 1 ? CrossCoreProbe.RoundTripNs() : double.NaN;
        // a point whose bound is its weights' read is also probed for the read speed (see Steady)
        long readBytes = p.WeightBytes / ReadBandwidth.GBps(p.WeightBytes, threads) >= p.Flops / (peak * threads) ? p.WeightBytes : 0;
        var med = Interleave(impls, threads, peak, readBytes, out int attempts, out bool steady, out var first, out string slow);
        double trip = threads > 1 ? Math.Max(tripBefore, CrossCoreProbe.RoundTripNs()) : double.NaN;
        module?.Dispose(); tx3?.Dispose();
        foreach (var tt in tw) tt.Dispose();
        bool moduleFaster = med.ContainsKey("torch-m") && med["torch-m"] < med.GetValueOrDefault("torch-f", double.MaxValue);
        return new Row(p.ToString(), p, threads, med["fa"], med.GetValueOrDefault("ort", double.NaN), moduleFaster ? med["torch-m"] : med.GetValueOrDefault("torch-f", double.NaN), moduleFaster ? "module" : "functional", p.Flops, peak, diff, bound, attempts, steady, trip)
            { FirstRatio = FirstRatio(first), Slow = slow };
    }

    private static double MaxRelDiff(float[] a, float[] b, string who, Point p)
    {
        double max = 0, scale = a.Max(Math.Abs);
        for (int i = 0; i < a.Length; i++) max = Math.Max(max, Math.Abs(a[i] - b[i]));
        if (!(max / scale < 1e-4)) throw new InvalidOperationException($"{who} differs from FastAttn on {p}: max |Δ| / max |y| = {max / scale:E2}");
        return max / scale;
    }

    /// <summary>
    /// Median time per call (µs) over interleaved rounds: each round runs every implementation for the same number of calls (≥ 10 ms for the fastest), timing every
    /// call. The median of single calls, not of round means: on this shared 2-CPU machine a call now and then loses a
    /// scheduler time slice (~4 ms) to another process's or another runtime's thread, and one such stall would move a
    /// round's mean by far more than the differences measured here. Measured again, up to <see cref="MaxRetries"/> times,
    /// when the machine reads slow before or after (<see cref="Steady"/>); one measurement is <see cref="InterleaveOnce"/>.
    /// </summary>
    private static Dictionary<string, double> Interleave(List<(string Name, Action Run)> impls, int threads, double peak, long readBytes,
        out int attempts, out bool steady, out Dictionary<string, double>? first, out string slow)
    {
        first = null;
        var reasons = new SortedSet<string>();
        for (attempts = 1; ; attempts++)
        {
            string? why = Steady(threads, peak, readBytes);
            var med = InterleaveOnce(impls);
            why ??= Steady(threads, peak, readBytes);
            steady = why == null;
            if (!steady) reasons.Add(why!);
            slow = string.Join(" and ", reasons);
            if (steady || attempts > MaxRetries) return med;
            first ??= med;
            // the host gave this process less than its cores (or its memory bandwidth) for a while (a phase of seconds to
            // minutes, seen on every host here: a whole point's 2-thread rows at its 1-thread times, ONNX Runtime's too):
            // wait it out, measure again
            for (int i = 0; i < 40 && Steady(threads, peak, readBytes) != null; i++) Thread.Sleep(250);
        }
    }

    /// <summary>The ratio of a point's first measurement, when it was measured again (NaN otherwise).</summary>
    private static double FirstRatio(Dictionary<string, double>? first) =>
        first == null ? double.NaN : first["fa"] / first.Where(kv => kv.Key != "fa").Min(kv => kv.Value);

    /// <summary>Measurements of a point again after a slow probe (<see cref="Interleave"/>); then it is kept and marked.</summary>
    private const int MaxRetries = 2;

    /// <summary>A probe reading below this share of <c>threads × peak</c> marks the machine slow.</summary>
    private const double SteadyShare = 0.85;

    /// <summary>
    /// A read probe below this share of the speed measured at the start of the run marks the memory system taken: 80 %, not
    /// 85 %, since the start's figure is the best of 14 reads and a probe's of 6 (a 50 MB buffer read from memory at 1 token
    /// varied by more than 15 % in quiet minutes).
    /// </summary>
    private const double SteadyReadShare = 0.80;

    /// <summary>
    /// True when the machine runs at its speed now: after <see cref="WaitQuiet"/> (a peer's pool spinning on is not the
    /// machine), <paramref name="threads"/> threads of a FastAttn pool (placed as its kernels' threads are) each run the FMA
    /// peak loop for ~2 ms at once, best of three, and together reach <see cref="SteadyShare"/> of <paramref name="threads"/>
    /// × the run's peak (wall time from the first start to the last end: a thread that waits for a CPU counts, and one the
    /// pool's affine hand-out gives to the caller when its worker is late reads as half speed).
    /// </summary>
    internal static bool Steady(int threads, double peak) => Steady(threads, peak, 0) == null;

    /// <summary>
    /// Null when the machine runs at its speed now, else what read slow: "FMA" (below), or — for a point whose bound is
    /// its weights' read (<paramref name="readBytes"/> &gt; 0) — "memory" when a buffer of that size, read hot over and over on
    /// <paramref name="threads"/> threads (best of six × ~1–2 ms, <see cref="ReadBandwidth.Probe"/>), reads below
    /// <see cref="SteadyReadShare"/> of the speed measured for it at the start of the run. The FMA loop does not see another
    /// tenant taking the memory system (seen here: the same 8 MB layer at 4 tokens 101–163 µs in runs minutes apart, a plain
    /// read of its size 79–93 GB/s across processes started seconds apart).
    /// </summary>
    internal static string? Steady(int threads, double peak, long readBytes)
    {
        if (!SteadyFma(threads, peak)) return "FMA";
        if (readBytes > 0 && ReadBandwidth.Probe(readBytes, threads) < SteadyReadShare * ReadBandwidth.GBps(readBytes, threads)) return "memory";
        return null;
    }

    private static bool SteadyFma(int threads, double peak)
    {
        WaitQuiet();
        var work = new ProbeWork(threads);
        if (threads > 1) _probePool ??= new FastAttn.Threading.WorkerPool(threads);
        double best = 0;
        for (int rep = 0; rep < 3; rep++)
        {
            if (threads > 1) _probePool!.Run(work, threads, affine: true);
            else work.Execute(0, 0);
            double seconds = (double)(work.End.Max() - work.Start.Min()) / Stopwatch.Frequency;
            double gflops = threads * work.Flops / seconds / 1e9;
            best = Math.Max(best, gflops);
            if (best >= SteadyShare * threads * peak) return true;
        }
        return false;
    }

    private static FastAttn.Threading.WorkerPool? _probePool;

    private sealed class ProbeWork(int threads) : FastAttn.Threading.IParallelWork
    {
        private const long Iterations = 1_000_000;
        private static readonly bool Wide = System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated;
        public readonly long[] Start = new long[threads], End = new long[threads];
        public double Flops => Iterations * (Wide ? PeakProbe.Flops512PerIteration : PeakProbe.Flops256PerIteration);

        public void Execute(int item, int worker)
        {
            Start[item] = Stopwatch.GetTimestamp();
            if (Wide) PeakProbe.Fma512(Iterations); else PeakProbe.Fma256(Iterations);
            End[item] = Stopwatch.GetTimestamp();
        }
    }

    private static Dictionary<string, double> InterleaveOnce(List<(string Name, Action Run)> impls)
    {
        // the setup allocated weights and tensors (tens of MB per point): collect now, so that no background GC of this
        // process runs while the calls are timed (it would take one of the two CPUs and stop managed threads)
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        var reps = new Dictionary<string, int>();
        foreach (var (name, run) in impls)
        {
            run(); run();
            var sw = Stopwatch.StartNew();
            run();
            reps[name] = Math.Max(1, (int)(10e-3 / Math.Max(sw.Elapsed.TotalSeconds, 1e-7)));
        }
        // every implementation gets batches of the same number of calls (as many as the fastest makes in 10 ms): the first
        // calls after the pause run on cold caches and an idle core (on an Intel Xeon host, a 50 MB layer at one token: 2.3,
        // 1.6, 1.4, 1.0 ms for calls 1-4 of a batch), so an implementation timed over more calls per batch had a lower median
        // for it alone — the one measured faster at setup got the longer batches
        int calls = reps.Values.Max();
        foreach (var name in reps.Keys.ToList()) reps[name] = calls;
        var times = impls.ToDictionary(i => i.Name, _ => new List<double>());
        for (int r = 0; r < Rounds; r++)
            for (int j = 0; j < impls.Count; j++)
            {
                // the order rotates every round, and each batch starts after a pause: libtorch's OpenMP threads and ONNX
                // Runtime's pool spin for a while after a call, and whoever runs next on these two cores would pay for it
                var (name, run) = impls[(j + r) % impls.Count];
                GC.Collect(); // no collection of this process runs into the next batch (libtorch's wrappers allocate per call)
                WaitQuiet();
                run();
                var list = times[name];
                for (int i = 0; i < reps[name]; i++)
                {
                    long t0 = Stopwatch.GetTimestamp();
                    run();
                    list.Add(Stopwatch.GetElapsedTime(t0).TotalMicroseconds);
                }
            }
        return times.ToDictionary(kv => kv.Key, kv => { var l = kv.Value.OrderBy(v => v).ToList(); return l[l.Count / 2]; });
    }

    /// <summary>
    /// Sleeps <see cref="PauseMs"/>, then on until this process's threads have been idle for a 5 ms window (at most 1 s): a
    /// peer's pool keeps spinning on a core after its call returns, for as long as its spin count lasts — ONNX Runtime's
    /// 2-thread pool ~36–45 ms of CPU on an Intel Xeon (measured: process CPU while the caller slept 50/100/300 ms after a
    /// call), longer than any fixed pause chosen on another host — and whatever runs next on the two cores pays for it.
    /// </summary>
    internal static void WaitQuiet()
    {
        Thread.Sleep(PauseMs);
        for (int i = 0; i < 200; i++)
        {
            var c0 = Environment.CpuUsage.TotalTime;
            Thread.Sleep(5);
            if ((Environment.CpuUsage.TotalTime - c0).TotalMilliseconds < 0.5) return;
        }
    }

    private static float[] T(float[] w, int rows, int cols)
    {
        var t = new float[w.Length];
        for (int r = 0; r < rows; r++) for (int c = 0; c < cols; c++) t[c * rows + r] = w[r * cols + c];
        return t;
    }

    /// <summary>The layer as an ONNX graph of standard ops (opset 17): GELU as 0.5·x·(1 + erf(x/√2)) (ORT fuses it), causal as an additive mask.</summary>
    private static byte[] OnnxLayer(Point p, EncoderWeights.Layer l)
    {
        int E = p.D, H = p.Heads, F = p.Ff, dh = p.HeadDim, tokens = p.Tokens;
        var g = new OnnxGraph();
        g.Input("x", tokens, E);
        string heads = g.Int64s("shape_heads", -1, H, dh), flat = g.Int64s("shape_flat", -1, E), split = g.Int64s("split", E, E, E);
        string scale = g.Constant("scale", [1f / MathF.Sqrt(dh)]);
        string LN(string v, float[] gamma, float[] beta, string? output = null) =>
            g.Node("LayerNormalization", [v, g.Constant(g.Name("g"), gamma, E), g.Constant(g.Name("b"), beta, E)], output, ("axis", -1L), ("epsilon", 1e-5f));
        string Attn(string h)
        {
            string qkv = g.Node("Add", [g.Node("MatMul", [h, g.Constant("winT", T(l.Win, 3 * E, E), E, 3 * E)]), g.Constant("bin", l.Bin, 3 * E)]);
            string q = g.Name("q"), k = g.Name("k"), v = g.Name("v");
            g.NodeMulti("Split", [qkv, split], [q, k, v], ("axis", 1L));
            string qh = g.Node("Transpose", [g.Node("Reshape", [q, heads])], null, ("perm", new long[] { 1, 0, 2 }));
            string kh = g.Node("Transpose", [g.Node("Reshape", [k, heads])], null, ("perm", new long[] { 1, 2, 0 }));
            string vh = g.Node("Transpose", [g.Node("Reshape", [v, heads])], null, ("perm", new long[] { 1, 0, 2 }));
            string s = g.Node("Mul", [g.Node("MatMul", [qh, kh]), scale]);
            if (p.Causal)
            {
                var m = new float[tokens * tokens];
                for (int i = 0; i < tokens; i++) for (int j = i + 1; j < tokens; j++) m[i * tokens + j] = float.NegativeInfinity;
                s = g.Node("Add", [s, g.Constant("causal", m, tokens, tokens)]);
            }
            string a = g.Node("MatMul", [g.Node("Softmax", [s], null, ("axis", -1L)), vh]);
            string af = g.Node("Reshape", [g.Node("Transpose", [a], null, ("perm", new long[] { 1, 0, 2 })), flat]);
            return g.Node("Add", [g.Node("MatMul", [af, g.Constant("woutT", T(l.Wout, E, E), E, E)]), g.Constant("bout", l.Bout, E)]);
        }
        string Ffn(string h)
        {
            string u = g.Node("Add", [g.Node("MatMul", [h, g.Constant("w1T", T(l.W1, F, E), E, F)]), g.Constant("b1", l.B1, F)]);
            string act = p.Act == Activation.Gelu
                ? g.Node("Mul", [g.Node("Mul", [u, g.Constant("half", [0.5f])]), g.Node("Add", [g.Node("Erf", [g.Node("Mul", [u, g.Constant("rsqrt2", [0.70710678f])])]), g.Constant("one", [1f])])])
                : g.Node("Relu", [u]);
            return g.Node("Add", [g.Node("MatMul", [act, g.Constant("w2T", T(l.W2, E, F), F, E)]), g.Constant("b2", l.B2, E)]);
        }
        if (p.NormFirst)
        {
            string h1 = g.Node("Add", ["x", Attn(LN("x", l.G1, l.Be1))]);
            g.Node("Add", [h1, Ffn(LN(h1, l.G2, l.Be2))], "y");
        }
        else
        {
            string h1 = LN(g.Node("Add", ["x", Attn("x")]), l.G1, l.Be1);
            LN(g.Node("Add", [h1, Ffn(h1)]), l.G2, l.Be2, "y");
        }
        g.Output("y", tokens, E);
        return g.ToModel();
    }

    private static Tensor[] TorchWeights(EncoderWeights.Layer l, Point p)
    {
        int E = p.D, F = p.Ff;
        return [torch.tensor(l.Win, [3 * E, E]), torch.tensor(l.Bin, [3 * E]), torch.tensor(l.Wout, [E, E]), torch.tensor(l.Bout, [E]),
            torch.tensor(l.W1, [F, E]), torch.tensor(l.B1, [F]), torch.tensor(l.W2, [E, F]), torch.tensor(l.B2, [E]),
            torch.tensor(l.G1, [E]), torch.tensor(l.Be1, [E]), torch.tensor(l.G2, [E]), torch.tensor(l.Be2, [E])];
    }

    /// <summary>The layer from libtorch's functional ops (linear, scaled_dot_product_attention, layer_norm, gelu/relu).</summary>
    private static Tensor TorchFunctional(Tensor x, Tensor[] w, Point p)
    {
        using var scope = torch.NewDisposeScope();
        int E = p.D, H = p.Heads, dh = p.HeadDim, T = p.Tokens;
        Tensor LN(Tensor v, int i) => F.layer_norm(v, [E], w[i], w[i + 1], 1e-5);
        Tensor Attn(Tensor h)
        {
            var qkv = F.linear(h, w[0], w[1]).view(T, 3, H, dh).permute(1, 2, 0, 3); // [3, H, T, dh]
            var a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_casual: p.Causal);
            return F.linear(a.permute(1, 0, 2).reshape(T, E), w[2], w[3]);
        }
        Tensor Ffn(Tensor h)
        {
            var u = F.linear(h, w[4], w[5]);
            return F.linear(p.Act == Activation.Gelu ? F.gelu(u) : F.relu(u), w[6], w[7]);
        }
        Tensor y;
        if (p.NormFirst) { var h1 = x + Attn(LN(x, 8)); y = h1 + Ffn(LN(h1, 10)); }
        else { var h1 = LN(x + Attn(x), 8); y = LN(h1 + Ffn(h1), 10); }
        return y.MoveToOuterDisposeScope();
    }

    // ------------------------------------------------------------------ attention alone

    private static Row MeasureAttention(int heads, int hd, int t, double peak)
    {
        int d = heads * hd;
        var rnd = new Random(hd * 7 + t);
        float[] R(int n) => Enumerable.Range(0, n).Select(_ => (float)(rnd.NextDouble() * 2 - 1)).ToArray();
        var q = R(t * d); var k = R(t * d); var v = R(t * d);
        var y = new float[t * d];
        var options = new AttentionOptions { Heads = heads, HeadDim = hd };
        var scratch = new float[Attention.ScratchSize(options, t)];
        Action fa = () => Attention.Forward(q, t, k, v, t, y, scratch, options);
        TorchPeer.Init(1);
        using var tq = torch.tensor(q, [t, heads, hd]).permute(1, 0, 2).contiguous();
        using var tk = torch.tensor(k, [t, heads, hd]).permute(1, 0, 2).contiguous();
        using var tv = torch.tensor(v, [t, heads, hd]).permute(1, 0, 2).contiguous();
        Func<Tensor> sdpa = () => torch.nn.functional.scaled_dot_product_attention(tq, tk, tv);
        // ONNX Runtime: the standard-op graph of attention on [T, d] inputs
        var g = new OnnxGraph();
        foreach (var n in new[] { "q", "k", "v" }) g.Input(n, t, d);
        string shape = g.Int64s("shape", t, heads, hd), flat = g.Int64s("flat", t, d);
        string qh = g.Node("Transpose", [g.Node("Reshape", ["q", shape])], null, ("perm", new long[] { 1, 0, 2 }));
        string kh = g.Node("Transpose", [g.Node("Reshape", ["k", shape])], null, ("perm", new long[] { 1, 2, 0 }));
        string vh = g.Node("Transpose", [g.Node("Reshape", ["v", shape])], null, ("perm", new long[] { 1, 0, 2 }));
        string s = g.Node("Mul", [g.Node("MatMul", [qh, kh]), g.Constant("scale", [1f / MathF.Sqrt(hd)])]);
        string a = g.Node("MatMul", [g.Node("Softmax", [s], null, ("axis", -1L)), vh]);
        g.Node("Reshape", [g.Node("Transpose", [a], null, ("perm", new long[] { 1, 0, 2 })), flat], "y");
        g.Output("y", t, d);
        var yOrt = new float[t * d];
        using var ort = new OrtRunner(g.ToModel(), 1, [("q", q, [t, d]), ("k", k, [t, d]), ("v", v, [t, d])], ("y", yOrt, [t, d]));
        fa(); ort.Run();
        var p = new Point(d, hd, 1, t, false, Activation.None, false);
        double diff = MaxRelDiff(y, yOrt, "ONNX Runtime attention", p);
        using (torch.inference_mode())
        using (var r = sdpa())
        using (var rt = r.permute(1, 0, 2).contiguous())
            diff = Math.Max(diff, MaxRelDiff(y, rt.data<float>().ToArray(), "scaled_dot_product_attention", p));
        var med = Interleave([("fa", fa), ("ort", ort.Run), ("torch", () => { using var m = torch.inference_mode(); using var r = sdpa(); })], 1, peak, 0, out int attempts, out bool steady, out var first, out string slow);
        return new Row($"attention {heads}×{t}×{hd}", null, 1, med["fa"], med["ort"], med["torch"], "SDPA", 4.0 * t * t * d, peak, diff, Row.Bound(4.0 * t * t * d, 0, 1, peak), attempts, steady)
            { FirstRatio = FirstRatio(first), Slow = slow };
    }

    // ------------------------------------------------------------------ output

    private static void WriteMarkdown(string path, List<Row> rows, List<Row> attention, double peak, TimeSpan took)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.AppendLine(string.Create(inv, $"# Shape sweep ({DateTime.UtcNow:yyyy-MM-dd}, {took.TotalMinutes:F1} min)"));
        sb.AppendLine();
        sb.AppendLine(string.Create(inv, $"Machine: {Environment.ProcessorCount} logical CPUs, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, .NET {Environment.Version}; {Isa.Describe()}"));
        sb.AppendLine(string.Create(inv, $"FMA peak of one core, measured in this run: {peak:F1} GFLOP/s. Command: `dotnet run -c Release --project perf/FastAttn.Benchmarks -- sweep`."));
        sb.AppendLine();
        sb.AppendLine($"One encoder layer per row (nn.TransformerEncoderLayer semantics, eval); time = median per call over {Rounds} interleaved rounds (order rotating; before each batch a full GC, then idle until the process's threads have been quiet for 5 ms, at least 20 ms — peers' pools spin on after their calls; every implementation timed over the same number of calls per batch, as many as the fastest makes in 10 ms); ratio = FastAttn ÷ the faster peer (below 1: FastAttn is faster); % of peak = FastAttn's GFLOP/s over one core's peak (2-thread rows can reach 200 %). libtorch = the faster of nn.TransformerEncoderLayer (post-norm only) and the same layer from functional ops. Every peer's output was checked against FastAttn's (max |Δ| / max |y| < 1e-4) before timing.");
        sb.AppendLine();
        var all = rows.Concat(attention).ToList();
        var ratios = all.Select(r => r.Ratio).OrderBy(v => v).ToList();
        var worst = all.MaxBy(r => r.Ratio)!;
        sb.AppendLine(string.Create(inv, $"**Summary**: {all.Count} points; median ratio {ratios[ratios.Count / 2]:F2}; worst {worst.Ratio:F2} ({worst.What}, {worst.Threads} thread{(worst.Threads > 1 ? "s" : "")}); {all.Count(r => r.Ratio <= 0.9)} of {all.Count} at ≤ 0.9."));
        var twoThread = rows.Where(r => r.Threads == 2 && r.P!.Tokens >= 64).Select(r => (r, one: rows.First(o => o.P == r.P && o.Threads == 1))).ToList();
        if (twoThread.Count > 0)
        {
            static List<double> Speedups(IEnumerable<(Row r, Row one)> set) => set.Select(x => x.one.FastAttnUs / x.r.FastAttnUs).OrderBy(q => q).ToList();
            string Scaling(IEnumerable<(Row r, Row one)> set)
            {
                var v = Speedups(set);
                return v.Count == 0 ? "none" : string.Create(inv, $"{v.Count} point{(v.Count == 1 ? "" : "s")}, min {v[0]:F2}×, median {v[v.Count / 2]:F2}×");
            }
            var all2 = Speedups(twoThread);
            sb.AppendLine(string.Create(inv, $"2 threads ÷ 1 thread (FastAttn, ≥ 64 tokens): min {all2[0]:F2}×, median {all2[all2.Count / 2]:F2}×."));
            var trips = rows.Where(r => r.Threads == 2 && !double.IsNaN(r.RoundTripNs)).Select(r => r.RoundTripNs).OrderBy(v => v).ToList();
            if (trips.Count > 0)
                sb.AppendLine(string.Create(inv, $"Where the host put the two CPUs (a cache line's round trip between them, measured before and after each 2-thread point, the larger kept; {trips[0]:F0}–{trips[^1]:F0} ns in this run; above {CrossCoreProbe.FarNs:F0} ns read as different dies, where every line one thread reads from the other's cache costs that much more): 2 ÷ 1 thread with the CPUs near: {Scaling(twoThread.Where(x => !double.IsNaN(x.r.RoundTripNs) && !x.r.Far))}; far: {Scaling(twoThread.Where(x => x.r.Far))}."));
        }
        var ofBound = all.Select(r => r.PercentOfBound).OrderBy(v => v).ToList();
        var outOfReach = all.Where(r => r.TargetOutOfReach).ToList();
        string reach = outOfReach.Count == 0
            ? "at no point would an implementation at the bound take more than 0.9 of the faster peer's time, so the machine rules out a ratio ≤ 0.9 nowhere"
            : $"on {outOfReach.Count} point{(outOfReach.Count == 1 ? "" : "s")} even an implementation at the bound would take more than 0.9 of the faster peer's time (†), so a ratio ≤ 0.9 is out of reach there at FP32: "
              + string.Join("; ", outOfReach.Select(r => string.Create(inv, $"{r.What}, {r.Threads}T: bound {r.BoundUs:F0} µs ÷ {r.Best:F0} µs = {r.LowestRatio:F2}")));
        sb.AppendLine(string.Create(inv, $"Bound (the least time this machine allows, measured in this run — see below): FastAttn at a median {ofBound[ofBound.Count / 2]:F0} % of it (lowest {ofBound[0]:F0} %); {reach}."));
        // what the issue's two ratio targets ask of this machine: the share of each point's bound FastAttn would have to
        // reach for it (bound ÷ faster peer ÷ target), the median taken as the summary takes it (the (n/2+1)-th smallest)
        var hardest = all.MaxBy(r => r.LowestRatio)!;
        var forMedian = all.Select(r => r.LowestRatio / 0.7).OrderBy(v => v).ToList();
        int needed = all.Count / 2 + 1, within = all.Count(r => r.LowestRatio <= 0.7);
        sb.AppendLine(string.Create(inv, $"What the targets ask of this machine: every point ≤ 0.9 needs FastAttn at {100 * hardest.LowestRatio / 0.9:F1} % of the bound at the hardest point ({hardest.What}, {hardest.Threads}T: the faster peer at {100 * hardest.LowestRatio:F1} % of it), and ≥ 95 % at {all.Count(r => r.LowestRatio / 0.9 >= 0.95)} point(s); a median ≤ 0.7 needs {needed} points at ≤ 0.7, which {(within < needed ? $"the machine rules out: only {within} can reach 0.7 even at the bound" : string.Create(inv, $"asks FastAttn for ≥ {100 * forMedian[needed - 1]:F1} % of the bound at each of the {needed} points where it asks least ({within} points can reach 0.7 at all)"))}."));
        var again = all.Where(r => r.Attempts > 1).ToList();
        sb.AppendLine(string.Create(inv, $"Host slowdowns: before and after each point a probe ran the FMA peak loop on the point's threads (best of three × ~2 ms), and at points whose bound is the weights' read a read of a buffer of their size, hot, on the point's threads (best of six × ~1–2 ms); below {SteadyShare * 100:F0} % of threads × the run's peak, or {SteadyReadShare * 100:F0} % of the read speed measured for that size at the start of the run, the point was measured again once the probes read normal (up to {MaxRetries} times), peers included: {(again.Count == 0 ? "no point needed it" : string.Join("; ", again.Select(r => string.Create(inv, $"{r.What}, {r.Threads}T ({r.Attempts} times, {r.Slow} slow; first measurement's ratio {r.FirstRatio:F2}{(r.Steady ? "" : ", still slow: ‡‡")})"))))}."));
        var belowBound = all.Where(r => r.PercentOfBound > 100).ToList();
        if (belowBound.Count > 0)
            sb.AppendLine(string.Create(inv, $"Measured faster than the bound, so the read speed was measured low there (noise; the bound does not hold for these rows): {string.Join("; ", belowBound.Select(r => $"{r.What}, {r.Threads}T ({r.PercentOfBound:F0} %)"))}."));
        sb.AppendLine();
        sb.AppendLine("Bound = the larger of the point's flops at the FMA peak (× 2 on 2 threads) and its FP32 weights read once (at one token without q and k: the one key's softmax weight is 1, so the heads' output is v — FastAttn skips q and k there, the peers compute them; their flops are left out of % of peak too) at the best speed measured for a buffer of their size, read hot over and over (plain and with a 16 KB software prefetch; 2 threads each reading half) — the most favourable case, as if nothing else had run between two calls. Read speeds measured in this run:");
        sb.AppendLine();
        sb.AppendLine("| bytes | 1 thread GB/s | 2 threads GB/s |");
        sb.AppendLine("|---:|---:|---:|");
        foreach (long b in rows.Where(r => r.P != null).Select(r => r.P!.WeightBytes).Distinct().OrderBy(b => b))
            sb.AppendLine(string.Create(inv, $"| {b / 1e6:F2} MB | {ReadBandwidth.GBps(b, 1):F1} | {ReadBandwidth.GBps(b, 2):F1} |"));
        sb.AppendLine();
        sb.AppendLine("![FastAttn ÷ best peer per point](sweep.png)");
        sb.AppendLine();
        sb.AppendLine("| point | threads | FastAttn µs | ONNX Runtime µs | libtorch µs | libtorch variant | ratio | FastAttn % of peak | bound µs | FastAttn % of bound | lowest ratio | max rel Δ | CPU round trip ns |");
        sb.AppendLine("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in all)
            sb.AppendLine(string.Create(inv, $"| {r.Marked} | {r.Threads} | {r.FastAttnUs:F1} | {r.OrtUs:F1} | {r.TorchUs:F1} | {r.TorchVariant} | {(r.Ratio > 0.9 ? "**" : "")}{r.Ratio:F2}{(r.Ratio > 0.9 ? "**" : "")} | {r.PercentOfPeak:F0}% | {r.BoundUs:F1} | {r.PercentOfBound:F0}% | {r.LowestRatio:F2}{(r.TargetOutOfReach ? " †" : "")} | {r.MaxDiff:E1} | {(double.IsNaN(r.RoundTripNs) ? "" : r.RoundTripNs.ToString("F0", inv))} |"));
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, sb.ToString());
    }

    /// <summary>Heat map: model width × tokens, 1 thread on the left and 2 threads on the right, colour = FastAttn ÷ best peer.</summary>
    private static void WriteHeatMap(string path, List<Row> rows)
    {
        int nt = TokenCounts.Length, cols = 2 * nt + 1;
        var data = new double[Widths.Length, cols];
        var plt = new ScottPlot.Plot();
        for (int wi = 0; wi < Widths.Length; wi++)
        {
            // the heat map draws data row 0 at the top; text and ticks use y = wi (96 at the bottom)
            data[Widths.Length - 1 - wi, nt] = double.NaN; // the gap between the panels
            for (int threads = 1; threads <= 2; threads++)
                for (int ti = 0; ti < nt; ti++)
                {
                    var r = rows.FirstOrDefault(x => x.Threads == threads && x.P!.D == Widths[wi] && x.P.Tokens == TokenCounts[ti]);
                    int c = (threads - 1) * (nt + 1) + ti;
                    data[Widths.Length - 1 - wi, c] = r?.Ratio ?? double.NaN;
                    if (r == null) continue;
                    var txt = plt.Add.Text(r.Ratio.ToString("F2", CultureInfo.InvariantCulture), c, wi);
                    txt.LabelAlignment = ScottPlot.Alignment.MiddleCenter;
                    txt.LabelFontSize = 12;
                    txt.LabelFontColor = ScottPlot.Colors.Black;
                    txt.LabelBackgroundColor = ScottPlot.Colors.White.WithOpacity(0.6);
                }
        }
        var hm = plt.Add.Heatmap(data);
        hm.Colormap = new ScottPlot.Colormaps.Turbo();
        hm.ManualRange = new ScottPlot.Range(0.2, 1.2);
        plt.MoveToBack(hm);
        plt.Add.ColorBar(hm);
        var xs = new List<double>(); var xl = new List<string>();
        for (int threads = 1; threads <= 2; threads++)
            for (int ti = 0; ti < nt; ti++) { xs.Add((threads - 1) * (nt + 1) + ti); xl.Add($"{TokenCounts[ti]}"); }
        plt.Axes.Bottom.SetTicks(xs.ToArray(), xl.ToArray());
        plt.Axes.Left.SetTicks(Enumerable.Range(0, Widths.Length).Select(i => (double)i).ToArray(), Widths.Select(w => w.ToString()).ToArray());
        plt.XLabel("tokens — left: 1 thread, right: 2 threads");
        plt.YLabel("model width");
        plt.Title("One encoder layer: FastAttn time ÷ the faster of ONNX Runtime and libtorch (below 1: FastAttn faster)");
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        plt.SavePng(path, 1400, 520);
    }
}
