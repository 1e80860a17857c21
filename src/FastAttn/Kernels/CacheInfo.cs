using System.Runtime.Intrinsics.X86;

namespace FastAttn.Kernels;

/// <summary>What this core's caches are, read from CPUID (no OS call): what the GEMM's prefetch distance follows.</summary>
internal static class CacheInfo
{
    /// <summary>One core's level-1 data cache in bytes; 0 where CPUID does not say (not x86, or no cache leaf).</summary>
    internal static int L1DataBytes { get; } = ReadL1Data();

    private const int AmdEbx = 0x68747541; // "Auth" of "AuthenticAMD"
    private const int HygonEbx = 0x6F677948; // "Hygo" of "HygonGenuine"

    private static int ReadL1Data()
    {
        if (!X86Base.IsSupported) return 0;
        (int maxLeaf, int vendor, _, _) = X86Base.CpuId(0, 0);
        bool amd = vendor is AmdEbx or HygonEbx;
        uint maxExt = (uint)X86Base.CpuId(unchecked((int)0x80000000), 0).Eax;
        // the deterministic cache parameters: leaf 4 (Intel), 0x8000001D (AMD, with topology extensions) — same layout
        int leaf = amd ? (maxExt >= 0x8000001D ? unchecked((int)0x8000001D) : 0) : (maxLeaf >= 4 ? 4 : 0);
        if (leaf != 0)
        {
            for (int i = 0; i < 16; i++)
            {
                (int eax, int ebx, int ecx, _) = X86Base.CpuId(leaf, i);
                int type = eax & 0x1F; // 0 = no more caches, 1 = data, 2 = instruction, 3 = unified
                if (type == 0) break;
                if (((eax >> 5) & 7) != 1 || type == 2) continue;
                long ways = ((uint)ebx >> 22) + 1, partitions = (((uint)ebx >> 12) & 0x3FF) + 1, line = (ebx & 0xFFF) + 1;
                long bytes = ways * partitions * line * ((uint)ecx + 1L);
                return bytes is > 0 and <= 1 << 24 ? (int)bytes : 0;
            }
        }
        // older AMD cores: leaf 0x80000005 gives the L1 data cache in KB in ECX's top byte
        if (amd && maxExt >= 0x80000005) return (int)((uint)X86Base.CpuId(unchecked((int)0x80000005), 0).Ecx >> 24) * 1024;
        return 0;
    }
}
