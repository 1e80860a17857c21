using BenchmarkDotNet.Attributes;
using FastAttn.Kernels;

namespace FastAttn.Benchmarks;

/// <summary>The FP32 FMA peak of one core, measured in the same run as everything else.</summary>
[MemoryDiagnoser]
public class PeakBenchmarks
{
    public const long Iterations = 1_000_000;

    [Benchmark(Description = "FMA peak Vector512")]
    public float Fma512() => PeakProbe.Fma512(Iterations);

    [Benchmark(Description = "FMA peak Vector256")]
    public float Fma256() => PeakProbe.Fma256(Iterations);
}
