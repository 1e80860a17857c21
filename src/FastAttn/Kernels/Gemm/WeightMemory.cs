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
/// The advised weights get a mapping of their own (<c>mmap</c>), never memory the C allocator hands back: glibc serves large
/// blocks from its heap once a larger block was freed (its mmap threshold rises with every free, up to 32 MB), and a
/// heap block that held something before keeps the 4 KB pages it was first touched with — the advice then changes
/// nothing. Found timing a (320, 10 × 32, 1280) layer at 4 tokens in one process (ad hoc harness, 1 thread, AMD EPYC
/// Zen 5): 72–79 µs built first or after a (1024, 32 × 32, 2048) layer, 102 µs built after a (1024, 16 × 64, 4096)
/// one (102–105 µs with huge pages switched off; 71 µs with glibc's threshold pinned by MALLOC_MMAP_THRESHOLD_; 72–73 µs
/// with this mapping). A 3 MB weight allocated right after a freed 24 MB block and a freed, touched 8 MB one had
/// AnonHugePages 0 kB in /proc/self/smaps with the C allocator's memory, 2 MB with its own mapping (the unit test).
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
    /// free with <see cref="Free"/> and the same <paramref name="mapped"/>. <paramref name="advised"/>: the bytes advised
    /// as huge pages (0 when none). <paramref name="mapped"/>: the length of the allocation's own mapping (0 when it came
    /// from the C allocator).
    /// </summary>
    public static byte* Allocate(long bytes, out long advised, out long mapped)
    {
        mapped = 0;
        advised = Enabled ? HugeBytes(bytes) : 0;
        if (advised == 0) return (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
        long length = Math.Max(bytes, advised);
        length = (length + Environment.SystemPageSize - 1) / Environment.SystemPageSize * Environment.SystemPageSize;
        try
        {
            byte* p = MapAligned(length);
            if (p != null)
            {
                // before the first write: the pages are then faulted in as huge pages
                if (Madvise(p, (nuint)advised, MadvHugePage) != 0) advised = 0;
                mapped = length;
                return p;
            }
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            Enabled = false;
            advised = 0;
            return (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
        }
        // no mapping to be had: the C allocator's memory, advised (huge pages where its pages are fresh)
        var q = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, advised), (nuint)HugePage);
        if (Madvise(q, (nuint)advised, MadvHugePage) != 0) advised = 0;
        return q;
    }

    /// <summary>Frees what <see cref="Allocate"/> returned (<paramref name="mapped"/> as it gave).</summary>
    public static void Free(byte* p, long mapped)
    {
        if (mapped > 0) Munmap(p, (nuint)mapped);
        else NativeMemory.AlignedFree(p);
    }

    /// <summary>A fresh private anonymous mapping of <paramref name="length"/> bytes (a multiple of the page size) starting on a 2 MB boundary; null when the kernel refuses.</summary>
    private static byte* MapAligned(long length)
    {
        nuint total = (nuint)(length + HugePage);
        byte* b = Mmap(null, total, ProtReadWrite, MapPrivateAnonymous, -1, 0);
        if (b == (byte*)-1) return null;
        byte* start = (byte*)(((nint)b + (nint)HugePage - 1) & ~((nint)HugePage - 1));
        nuint head = (nuint)(start - b), tail = total - head - (nuint)length;
        if (head > 0) Munmap(b, head);
        if (tail > 0) Munmap(start + length, tail);
        return start;
    }

    private const int ProtReadWrite = 0x1 | 0x2;              // PROT_READ | PROT_WRITE
    private const int MapPrivateAnonymous = 0x02 | 0x20;      // MAP_PRIVATE | MAP_ANONYMOUS (x86-64 and arm64 Linux)

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static partial byte* Mmap(void* address, nuint length, int protection, int flags, int fd, nint offset);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    private static partial int Munmap(void* address, nuint length);
}
