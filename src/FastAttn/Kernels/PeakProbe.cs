using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FastAttn.Kernels;

/// <summary>
/// Measures this core's FP32 FMA peak: a loop of independent broadcast-free FMAs (16 accumulators, enough
/// to cover FMA latency × throughput on current x64 cores), so GEMM figures can be quoted as a percent
/// of a peak measured in the same run.
/// </summary>
public static class PeakProbe
{
    /// <summary>Runs <paramref name="iterations"/> iterations of 16 independent 512-bit FMAs; returns a value to keep the work alive.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    public static float Fma512(long iterations)
    {
        if (!Vector512.IsHardwareAccelerated) return Fma256(iterations * 2);
        var m = Vector512.Create(0.999999f);
        var d = Vector512.Create(1e-7f);
        Vector512<float> a0 = Vector512.Create(1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        Vector512<float> a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0, a15 = a0;
        for (long i = 0; i < iterations; i++)
        {
            a0 = Vector512.FusedMultiplyAdd(a0, m, d); a1 = Vector512.FusedMultiplyAdd(a1, m, d);
            a2 = Vector512.FusedMultiplyAdd(a2, m, d); a3 = Vector512.FusedMultiplyAdd(a3, m, d);
            a4 = Vector512.FusedMultiplyAdd(a4, m, d); a5 = Vector512.FusedMultiplyAdd(a5, m, d);
            a6 = Vector512.FusedMultiplyAdd(a6, m, d); a7 = Vector512.FusedMultiplyAdd(a7, m, d);
            a8 = Vector512.FusedMultiplyAdd(a8, m, d); a9 = Vector512.FusedMultiplyAdd(a9, m, d);
            a10 = Vector512.FusedMultiplyAdd(a10, m, d); a11 = Vector512.FusedMultiplyAdd(a11, m, d);
            a12 = Vector512.FusedMultiplyAdd(a12, m, d); a13 = Vector512.FusedMultiplyAdd(a13, m, d);
            a14 = Vector512.FusedMultiplyAdd(a14, m, d); a15 = Vector512.FusedMultiplyAdd(a15, m, d);
        }
        var s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11)) + ((a12 + a13) + (a14 + a15));
        return Vector512.Sum(s);
    }

    /// <summary>Runs <paramref name="iterations"/> iterations of 16 independent 256-bit FMAs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    public static float Fma256(long iterations)
    {
        var m = Vector256.Create(0.999999f);
        var d = Vector256.Create(1e-7f);
        Vector256<float> a0 = Vector256.Create(1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        Vector256<float> a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0, a15 = a0;
        for (long i = 0; i < iterations; i++)
        {
            a0 = Vector256.FusedMultiplyAdd(a0, m, d); a1 = Vector256.FusedMultiplyAdd(a1, m, d);
            a2 = Vector256.FusedMultiplyAdd(a2, m, d); a3 = Vector256.FusedMultiplyAdd(a3, m, d);
            a4 = Vector256.FusedMultiplyAdd(a4, m, d); a5 = Vector256.FusedMultiplyAdd(a5, m, d);
            a6 = Vector256.FusedMultiplyAdd(a6, m, d); a7 = Vector256.FusedMultiplyAdd(a7, m, d);
            a8 = Vector256.FusedMultiplyAdd(a8, m, d); a9 = Vector256.FusedMultiplyAdd(a9, m, d);
            a10 = Vector256.FusedMultiplyAdd(a10, m, d); a11 = Vector256.FusedMultiplyAdd(a11, m, d);
            a12 = Vector256.FusedMultiplyAdd(a12, m, d); a13 = Vector256.FusedMultiplyAdd(a13, m, d);
            a14 = Vector256.FusedMultiplyAdd(a14, m, d); a15 = Vector256.FusedMultiplyAdd(a15, m, d);
        }
        var s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11)) + ((a12 + a13) + (a14 + a15));
        return Vector256.Sum(s);
    }

    /// <summary>FLOPs one iteration of <see cref="Fma512"/> performs (16 FMAs × 16 lanes × 2).</summary>
    public const double Flops512PerIteration = 16 * 16 * 2;
    /// <summary>FLOPs one iteration of <see cref="Fma256"/> performs.</summary>
    public const double Flops256PerIteration = 16 * 8 * 2;

    /// <summary>Best-of-<paramref name="repeats"/> GFLOP/s of the widest accelerated FMA loop (about 20 ms each).</summary>
    public static double MeasureGflops(int repeats = 7)
    {
        bool wide = Vector512.IsHardwareAccelerated;
        long iters = 4_000_000;
        double best = 0;
        if (wide) Fma512(1000); else Fma256(1000);
        for (int r = 0; r < repeats; r++)
        {
            long t0 = Stopwatch.GetTimestamp();
            if (wide) Fma512(iters); else Fma256(iters);
            double s = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            best = Math.Max(best, iters * (wide ? Flops512PerIteration : Flops256PerIteration) / s / 1e9);
        }
        return best;
    }
}
