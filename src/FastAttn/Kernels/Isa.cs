using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FastAttn.Kernels;

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

    /// <summary>Every path this process can run, narrowest first (scalar always; the others as the runtime and CPU allow).</summary>
    public static IReadOnlyList<IsaPath> Supported { get; } = Enum.GetValues<IsaPath>().Where(IsSupported).ToArray();

    /// <summary>True when kernels may run on <paramref name="path"/> in this process (tests run every such path in-process).</summary>
    public static bool IsSupported(IsaPath path) => path switch
    {
        IsaPath.Scalar => true,
        IsaPath.Vector128 => Vector128.IsHardwareAccelerated,
        IsaPath.Vector256 => Vector256.IsHardwareAccelerated && Avx2.IsSupported && Fma.IsSupported,
        IsaPath.Vector512 => Vector512.IsHardwareAccelerated && Avx512F.IsSupported,
        _ => false,
    };

    private static IsaPath DetectBest()
    {
        for (var p = IsaPath.Vector512; p > IsaPath.Scalar; p--)
            if (IsSupported(p)) return p;
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

    [ThreadStatic] private static IsaPath? _override;

    /// <summary>
    /// The path kernels and layers created or called on this thread use: <see cref="Active"/>, unless a test narrowed it
    /// with <see cref="Use"/> (so every supported path runs in one process).
    /// </summary>
    internal static IsaPath Current => _override ?? Active;

    /// <summary>Runs this thread's kernel calls and layer construction on <paramref name="path"/> until disposed.</summary>
    /// <exception cref="ArgumentException">The path is not supported here.</exception>
    internal static IDisposable Use(IsaPath path)
    {
        if (!IsSupported(path)) throw new ArgumentException($"kernel path {path} is not supported in this process.", nameof(path));
        var previous = _override;
        _override = path;
        return new Restore(previous);
    }

    private sealed class Restore(IsaPath? previous) : IDisposable
    {
        public void Dispose() => _override = previous;
    }

    /// <summary>A one-line description of the CPU features the runtime exposes and the path in use.</summary>
    public static string Describe() =>
        $"path={Active} (best {Best}); Vector512={Vector512.IsHardwareAccelerated} Vector256={Vector256.IsHardwareAccelerated} " +
        $"Vector128={Vector128.IsHardwareAccelerated} AVX512F={Avx512F.IsSupported} AVX2={Avx2.IsSupported} FMA={Fma.IsSupported}; " +
        $"{Environment.ProcessorCount} logical processors";
}
