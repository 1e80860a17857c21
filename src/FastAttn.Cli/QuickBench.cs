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

    public static int Run(double secondsPerShape, TextWriter o) => RunGemm(secondsPerShape, o);

    public static int RunGemm(double secondsPerShape, TextWriter o)
    {
        double peak = PeakProbe.MeasureGflops();
        o.WriteLine($"# FastAttn GEMM, single thread, {Isa.Describe()}");
        o.WriteLine($"# measured FP32 FMA peak: {peak:F1} GFLOP/s");
        o.WriteLine("| shape (M×K · K×N) | median µs | GFLOP/s | % of peak |");
        o.WriteLine("|---|---:|---:|---:|");
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
            o.WriteLine($"| {m}×{k} · {k}×{n} | {us:F1} | {gf:F1} | {100 * gf / peak:F0}% |");
        }
        return 0;
    }

    public static readonly (int M, int K, int N)[] GemmShapes =
    [
        (128, 768, 768), (128, 768, 3072), (128, 3072, 768), (8, 768, 768), (1, 768, 768), (512, 1024, 1024),
    ];
}
