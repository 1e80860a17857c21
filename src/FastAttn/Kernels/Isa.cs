using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FastAttn.Kernels;

/// <summary>The instruction-set path the kernels run on.</summary>
public enum IsaPath
{
    /// <summary>Plain scalar code (no SIMD acceleration available or allowed).</summary>
    Scalar = 0,
    /// <summary>128-bit vectors (SSE/AVX or Arm AdvSimd).</summary>
    Vector128 = 1,
    /// <summary>256-bit vectors with FMA (AVX2 + FMA).</summary>
    Vector256 = 2,
    /// <summary>512-bit vectors (AVX-512F).</summary>
    Vector512 = 3,
}

/// <summary>
/// Chooses the kernel path once per process. The choice follows what the runtime reports as
/// accelerated (so <c>DOTNET_EnableAVX512=0</c>, <c>DOTNET_EnableAVX2=0</c> and
/// <c>DOTNET_EnableHWIntrinsic=0</c> select the 256-bit, 128-bit and scalar paths). The environment
/// variable <c>FASTATTN_ISA</c> (<c>scalar</c>, <c>128</c>, <c>256</c>, <c>512</c>) can lower it further,
/// never raise it above what the hardware offers.
/// </summary>
public static class Isa
{
    /// <summary>The best path this process's runtime and CPU allow.</summary>
    public static IsaPath Best { get; } = DetectBest();

    /// <summary>The path every kernel uses in this process.</summary>
    public static IsaPath Active { get; } = Choose();

    private static IsaPath DetectBest()
    {
        if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported) return IsaPath.Vector512;
        if (Vector256.IsHardwareAccelerated && Avx2.IsSupported && Fma.IsSupported) return IsaPath.Vector256;
        if (Vector128.IsHardwareAccelerated) return IsaPath.Vector128;
        return IsaPath.Scalar;
    }

    private static IsaPath Choose()
    {
        IsaPath best = DetectBest();
        string? forced = Environment.GetEnvironmentVariable("FASTATTN_ISA");
        IsaPath want = forced?.Trim().ToLowerInvariant() switch
        {
            "scalar" => IsaPath.Scalar,
            "128" or "vector128" => IsaPath.Vector128,
            "256" or "vector256" => IsaPath.Vector256,
            "512" or "vector512" => IsaPath.Vector512,
            _ => best,
        };
        return want < best ? want : best;
    }

    /// <summary>A one-line description of the CPU features the runtime exposes and the path in use.</summary>
    public static string Describe() =>
        $"path={Active} (best {Best}); Vector512={Vector512.IsHardwareAccelerated} Vector256={Vector256.IsHardwareAccelerated} " +
        $"Vector128={Vector128.IsHardwareAccelerated} AVX512F={Avx512F.IsSupported} AVX2={Avx2.IsSupported} FMA={Fma.IsSupported}; " +
        $"{Environment.ProcessorCount} logical processors";
}
