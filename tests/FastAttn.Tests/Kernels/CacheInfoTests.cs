using System.Globalization;
using System.Runtime.Intrinsics.X86;
using FastAttn.Kernels;

namespace FastAttn.Tests.Kernels;

/// <summary>
/// The L1 data cache size read from CPUID (what the GEMM's prefetch distance follows) against what Linux reports in
/// sysfs for the same core (the kernel reads the same CPUID leaves; a wrong field, shift or +1 in our decoding differs).
/// </summary>
public class CacheInfoTests
{
    [Fact]
    public void L1Data_AgreesWithTheOperatingSystem()
    {
        int bytes = CacheInfo.L1DataBytes;
        if (!X86Base.IsSupported)
        {
            Assert.Equal(0, bytes);
            return;
        }
        int? os = SysfsL1Data();
        if (os is int expected) Assert.Equal(expected, bytes);
        else Assert.True(bytes == 0 || bytes is >= 8 << 10 and <= 1 << 20, $"L1d {bytes} bytes");
    }

    [Fact]
    public void FewTilePrefetch_IsTheShortDistanceOnlyForSmallL1()
    {
        int bytes = CacheInfo.L1DataBytes;
        int expected = bytes > 0 && bytes <= 32 << 10 ? 2048 : GemmCore.PrefetchFloats;
        Assert.Equal(expected, GemmCore.FewTilesPrefetchFloats);
        Assert.InRange(GemmCore.FewTilesPrefetchFloats * sizeof(float), 1, Math.Max(bytes, GemmCore.PrefetchFloats * sizeof(float)));
    }

    /// <summary>cpu0's level-1 data (or unified) cache from /sys/devices/system/cpu/cpu0/cache, in bytes; null off Linux or where absent.</summary>
    private static int? SysfsL1Data()
    {
        const string root = "/sys/devices/system/cpu/cpu0/cache";
        if (!Directory.Exists(root)) return null;
        foreach (string dir in Directory.GetDirectories(root, "index*").Order(StringComparer.Ordinal))
        {
            string Read(string name) => File.ReadAllText(Path.Combine(dir, name)).Trim();
            try
            {
                if (Read("level") != "1" || Read("type") is not ("Data" or "Unified")) continue;
                string size = Read("size"); // "32K"
                int scale = size.EndsWith('K') ? 1024 : size.EndsWith('M') ? 1 << 20 : 1;
                return int.Parse(size.TrimEnd('K', 'M'), CultureInfo.InvariantCulture) * scale;
            }
            catch (IOException) { return null; }
            catch (UnauthorizedAccessException) { return null; }
        }
        return null;
    }
}
