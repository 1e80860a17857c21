using System.Runtime.InteropServices;

namespace FastAttn.Kernels;

/// <summary>
/// Native memory for packed weights. On Linux a weight of 1.5 MB or more is placed on 2 MB boundaries and its whole 2 MB
/// chunks are advised as transparent huge pages (<c>madvise(MADV_HUGEPAGE)</c>, which the kernel's default <c>madvise</c>
/// mode needs): the products stream the weights, and on 4 KB pages every 4 KB of them costs a TLB miss — in a virtual
/// machine a two-level page walk. A last partial chunk of at least 1.5 MB is rounded up to a whole huge page (at most
/// 0.5 MB unused); a shorter tail stays on ordinary pages. Measured on the Intel Xeon host, two copies of one encoder
/// layer in one process (4 KB pages against huge pages), alternated, 2–10 runs per shape: (1024, 4096) at 1 token 1.10–1.26×
/// (1 and 2 threads), at 4 tokens 1.04–1.40×; (768, 3072) at 8 tokens 0.93–1.17× (median 1.04×), at 20 tokens
/// 1.04–1.06×; (512, 2048) at 50 tokens on 2 threads 0.98–1.05×; (768, 3072) at 128 tokens 1.00–1.03×; six
/// (384, 1536) layers at 12 tokens (MiniLM's shapes: only its 2.4 MB feed-forward weights qualify) 0.98–1.08×. The gain
/// is largest when the weights stream from memory and this host's memory is slow.
/// Advice only: where the kernel has no huge page to give, or THP is off, or the platform is not Linux, the memory is
/// ordinary and nothing else changes. The switch <c>FastAttn.DisableHugePages</c> (AppContext, e.g.
/// <c>&lt;RuntimeHostConfigurationOption&gt;</c>) turns it off.
/// </summary>
internal static unsafe partial class WeightMemory
{
    /// <summary>A transparent huge page on x86-64 and (with 4 KB base pages) arm64.</summary>
    public const long HugePage = 2 << 20;

    /// <summary>Linux's MADV_HUGEPAGE (the same value on every architecture).</summary>
    private const int MadvHugePage = 14;

    /// <summary>Huge pages are asked for: Linux, and not switched off (a libc without madvise turns it off at the first call).</summary>
    public static bool Enabled { get; private set; } =
        OperatingSystem.IsLinux() && !(AppContext.TryGetSwitch("FastAttn.DisableHugePages", out bool off) && off);

    [LibraryImport("libc", EntryPoint = "madvise", SetLastError = true)]
    private static partial int Madvise(void* address, nuint length, int advice);

    /// <summary>Bytes of a <paramref name="bytes"/>-byte buffer's allocation advised as huge pages (whole pages from its start; 0 = none).</summary>
    public static long HugeBytes(long bytes)
    {
        long whole = bytes / HugePage * HugePage;
        return bytes - whole >= HugePage * 3 / 4 ? whole + HugePage : whole;
    }

    /// <summary>
    /// Allocates at least <paramref name="bytes"/> bytes, 64-byte aligned (2 MB-aligned when huge pages are asked for);
    /// free with <see cref="Free"/>. <paramref name="advised"/>: the bytes advised as huge pages (0 when none).
    /// </summary>
    public static byte* Allocate(long bytes, out long advised)
    {
        advised = Enabled ? HugeBytes(bytes) : 0;
        if (advised == 0) return (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
        var p = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, advised), (nuint)HugePage);
        // before the first write: the pages are then faulted in as huge pages
        try
        {
            if (Madvise(p, (nuint)advised, MadvHugePage) != 0) advised = 0;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            Enabled = false;
            advised = 0;
        }
        return p;
    }

    public static void Free(byte* p) => NativeMemory.AlignedFree(p);
}
