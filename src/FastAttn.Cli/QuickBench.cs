using System.Diagnostics;
using FastAttn.Kernels;

namespace FastAttn.Cli;

/// <summary>A dependency-free quick benchmark: medians of repeated calls, GFLOP/s and percent of a measured peak.</summary>
internal static class QuickBench
{
    public static double MedianMicros(Action body, double budgetSeconds)
    {
        body(); body();
        var times = new List<double>();
        var total = Stopwatch.StartNew();
        // calibrate a batch so each sample is ≥ ~2 ms
        long t0 = Stopwatch.GetTimestamp();
        body();
        double one = Math.Max(Stopwatch.GetElapsedTime(t0).TotalSeconds, 1e-7);
        int batch = Math.Max(1, (int)(0.002 / one));
        while (total.Elapsed.TotalSeconds < budgetSeconds || times.Count < 5)
        {
            long s = Stopwatch.GetTimestamp();
            for (int i = 0; i < batch; i++) body();
            times.Add(Stopwatch.GetElapsedTime(s).TotalSeconds * 1e6 / batch);
            if (times.Count >= 2000) break;
        }
        times.Sort();
        return times[times.Count / 2];
    }

    /// <summary>GEMM, attention and encoder-layer shapes within about <paramref name="totalSeconds"/> seconds.</summary>
    public static int Run(double totalSeconds, TextWriter o)
    {
        var clock = Stopwatch.StartNew();
        double peak = PeakProbe.MeasureGflops();
        int shapes = GemmShapes.Length + AttentionShapes.Length + EncoderShapes.Length;
        double per = Math.Max(0.2, (totalSeconds - clock.Elapsed.TotalSeconds - 2) / shapes);
        o.WriteLine($"# FastAttn quick benchmark, single thread, {Isa.Describe()}");
        o.WriteLine($"# measured FP32 FMA peak: {peak:F1} GFLOP/s");
        o.WriteLine("| what | shape | median µs | GFLOP/s | % of peak |");
        o.WriteLine("|---|---|---:|---:|---:|");
        RunGemm(per, peak, o);
        RunAttention(per, peak, o);
        RunEncoder(per, peak, o);
        o.WriteLine($"# {clock.Elapsed.TotalSeconds:F0} s; the BenchmarkDotNet suite in perf/ compares against libtorch and ONNX Runtime");
        return 0;
    }

    public static readonly (int H, int T, int D)[] AttentionShapes = [(12, 128, 64), (12, 512, 64), (8, 32, 64), (1, 4, 16)];
    public static readonly (int D, int H, int F, int T)[] EncoderShapes = [(768, 12, 3072, 128), (384, 12, 1536, 128), (768, 12, 3072, 8)];

    private static void RunAttention(double seconds, double peak, TextWriter o)
    {
        foreach (var (h, t, d) in AttentionShapes)
        {
            var rnd = new Random(2);
            float[] R(int n) => Enumerable.Range(0, n).Select(_ => (float)(rnd.NextDouble() * 2 - 1)).ToArray();
            float[] q = R(t * h * d), k = R(t * h * d), v = R(t * h * d), y = new float[t * h * d];
            float[] scratch = new float[Attention.ScratchSize(d, d, t)];
            double us = MedianMicros(() => Attention.Forward(q, t, k, v, t, y, scratch, new AttentionOptions { Heads = h, HeadDim = d }), seconds);
            double gf = 4.0 * h * t * t * d / us / 1e3;
            o.WriteLine($"| attention | {h} heads × {t} tokens × {d} | {us:F1} | {gf:F1} | {100 * gf / peak:F0}% |");
        }
    }

    private static void RunEncoder(double seconds, double peak, TextWriter o)
    {
        foreach (var (d, h, f, t) in EncoderShapes)
        {
            using var enc = Layers.TransformerEncoder.Create(1, d, h, f, seed: 1);
            using var s = enc.CreateSession(t);
            float[] x = Enumerable.Range(0, t * d).Select(i => MathF.Sin(i * 0.1f)).ToArray(), y = new float[t * d];
            double us = MedianMicros(() => s.Run(x, y), seconds);
            double gf = (2.0 * t * (4.0 * d * d + 2.0 * d * f) + 4.0 * t * t * d) / us / 1e3;
            o.WriteLine($"| encoder layer | d={d} heads={h} ff={f}, {t} tokens | {us:F1} | {gf:F1} | {100 * gf / peak:F0}% |");
        }
    }

    private static void RunGemm(double secondsPerShape, double peak, TextWriter o)
    {
        foreach (var (m, k, n) in GemmShapes)
        {
            var rnd = new Random(1);
            float[] w = new float[n * k], x = new float[m * k], y = new float[m * n];
            for (int i = 0; i < w.Length; i++) w[i] = (float)(rnd.NextDouble() - 0.5);
            for (int i = 0; i < x.Length; i++) x[i] = (float)(rnd.NextDouble() - 0.5);
            using var pw = new PackedWeight(w, n, k);
            float[] scratch = new float[Gemm.LinearScratchSize(m, k)];
            double us = MedianMicros(() => Gemm.Linear(x, m, pw, y, scratch), secondsPerShape);
            double gf = 2.0 * m * n * k / us / 1e3;
            o.WriteLine($"| GEMM | {m}×{k} · {k}×{n} | {us:F1} | {gf:F1} | {100 * gf / peak:F0}% |");
        }
    }

    public static readonly (int M, int K, int N)[] GemmShapes =
    [
        (128, 768, 768), (128, 768, 3072), (128, 3072, 768), (8, 768, 768), (1, 768, 768), (512, 1024, 1024),
    ];
}
