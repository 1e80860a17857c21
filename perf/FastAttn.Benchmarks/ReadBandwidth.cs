using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FastAttn.Benchmarks;

/// <summary>
/// How fast this machine reads a buffer of a given size, measured in the run that uses it: the sweep's lower bound on a
/// layer's time (every FP32 weight read once per call). The buffer is read hot, over and over (from whichever cache
/// holds it, as a layer's weights would be between two of its calls if nothing else ran), by one thread or by two each
/// reading half, plain and with a software prefetch 16 KB ahead (what the GEMM kernel does); the best of both over seven
/// rounds of ≥ 400 MB each. The most favourable figure on purpose: a bound made from it is one no kernel can beat.
/// </summary>
internal static unsafe class ReadBandwidth
{
    private static readonly Dictionary<(long, int), double> Cache = [];
    private static float* _buffer;
    private static long _bufferBytes;

    /// <summary>GB/s at which <paramref name="threads"/> threads read <paramref name="bytes"/> bytes together (each its own part).</summary>
    public static double GBps(long bytes, int threads)
    {
        bytes = Math.Max(bytes, 64L * 1024);
        if (Cache.TryGetValue((bytes, threads), out double known)) return known;
        Sweep.WaitQuiet(); // no peer's pool still spinning on a core
        if (_bufferBytes < bytes)
        {
            if (_buffer != null) NativeMemory.AlignedFree(_buffer);
            _buffer = (float*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
            _bufferBytes = bytes;
            for (long i = 0; i < bytes / 4; i++) _buffer[i] = 1e-7f * (i % 13);
        }
        // each thread's part a multiple of 64 floats; the parts side by side
        long part = bytes / 4 / threads / 64 * 64;
        int reps = (int)Math.Max(1, 400e6 / (part * 4.0));
        double best = 0;
        float* buf = _buffer;
        foreach (int prefetch in new[] { 0, 4096 })
            for (int r = 0; r < 7; r++)
            {
                long t0 = Stopwatch.GetTimestamp();
                if (threads == 1) for (int j = 0; j < reps; j++) Read(buf, part, prefetch);
                else Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t => { for (int j = 0; j < reps; j++) Read(buf + t * part, part, prefetch); });
                double s = Stopwatch.GetElapsedTime(t0).TotalSeconds;
                best = Math.Max(best, reps * part * 4.0 * threads / s / 1e9);
            }
        Cache[(bytes, threads)] = best;
        return best;
    }

    /// <summary>
    /// The read speed of a buffer of <paramref name="bytes"/> now (GB/s): the buffer <see cref="GBps"/> measured, read hot
    /// (once unmeasured, then three times plain and three with the prefetch, ~100 MB each, the best kept), by 1 thread or
    /// by 2 reading a half each — the sweep's probe for another tenant taking the memory system (<see cref="Sweep.Steady(int, double, long)"/>).
    /// </summary>
    public static double Probe(long bytes, int threads)
    {
        _ = GBps(bytes, threads); // the buffer exists, and the speed to compare with is measured
        bytes = Math.Max(bytes, 64L * 1024);
        long part = bytes / 4 / threads / 64 * 64;
        int reps = (int)Math.Max(1, 100e6 / (part * 4.0 * threads));
        float* buf = _buffer;
        double best = 0;
        // once unmeasured (the buffer into the caches), then three times each plain and with the prefetch, as GBps reads
        for (int r = 0; r < 7; r++)
        {
            int n = r == 0 ? 1 : reps, prefetch = r % 2 == 0 ? 4096 : 0;
            long t0 = Stopwatch.GetTimestamp();
            if (threads == 1) for (int j = 0; j < n; j++) Read(buf, part, prefetch);
            else Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t => { for (int j = 0; j < n; j++) Read(buf + t * part, part, prefetch); });
            if (r > 0) best = Math.Max(best, n * part * 4.0 * threads / Stopwatch.GetElapsedTime(t0).TotalSeconds / 1e9);
        }
        return best;
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float Read(float* p, long n, int prefetch)
    {
        if (!Vector512.IsHardwareAccelerated) return Read256(p, n);
        Vector512<float> s0 = default, s1 = default, s2 = default, s3 = default;
        for (long i = 0; i + 64 <= n; i += 64)
        {
            if (prefetch > 0 && Sse.IsSupported)
            {
                Sse.Prefetch0(p + i + prefetch); Sse.Prefetch0(p + i + prefetch + 16);
                Sse.Prefetch0(p + i + prefetch + 32); Sse.Prefetch0(p + i + prefetch + 48);
            }
            s0 += Vector512.Load(p + i); s1 += Vector512.Load(p + i + 16);
            s2 += Vector512.Load(p + i + 32); s3 += Vector512.Load(p + i + 48);
        }
        return Vector512.Sum((s0 + s1) + (s2 + s3));
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float Read256(float* p, long n)
    {
        Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
        for (long i = 0; i + 32 <= n; i += 32)
        {
            s0 += Vector256.Load(p + i); s1 += Vector256.Load(p + i + 8);
            s2 += Vector256.Load(p + i + 16); s3 += Vector256.Load(p + i + 24);
        }
        return Vector256.Sum((s0 + s1) + (s2 + s3));
    }
}
