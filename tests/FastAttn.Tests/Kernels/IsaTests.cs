using System.Runtime.Intrinsics;
using FastAttn.Kernels;

namespace FastAttn.Tests.Kernels;

/// <summary>
/// CI runs the suite under DOTNET_EnableAVX512=0, DOTNET_EnableAVX2=0 and DOTNET_EnableHWIntrinsic=0.
/// These tests check that each switch really selected the path it names, so a renamed or ignored
/// switch (like .NET 10's no-op DOTNET_EnableAVX512F) cannot pass unnoticed.
/// </summary>
public class IsaTests
{
    private static bool Off(string name) => Environment.GetEnvironmentVariable(name) is "0";

    [Fact]
    public void ActivePathMatchesTheRuntimeSwitches()
    {
        string? forced = Environment.GetEnvironmentVariable("FASTATTN_ISA");
        if (Off("DOTNET_EnableHWIntrinsic"))
        {
            Assert.False(Vector128.IsHardwareAccelerated);
            Assert.Equal(IsaPath.Scalar, Isa.Active);
        }
        else if (Off("DOTNET_EnableAVX2"))
        {
            Assert.False(Vector256.IsHardwareAccelerated);
            Assert.False(Vector512.IsHardwareAccelerated);
            Assert.Equal(IsaPath.Vector128, Isa.Active);
        }
        else if (Off("DOTNET_EnableAVX512"))
        {
            Assert.False(Vector512.IsHardwareAccelerated);
            Assert.Equal(IsaPath.Vector256, Isa.Active);
        }
        else if (string.IsNullOrEmpty(forced))
        {
            Assert.Equal(Isa.Best, Isa.Active);
        }
        // With no switch on an AVX-512 machine the widest path must be the one in use.
        if (!Off("DOTNET_EnableHWIntrinsic") && !Off("DOTNET_EnableAVX2") && !Off("DOTNET_EnableAVX512")
            && string.IsNullOrEmpty(forced) && System.Runtime.Intrinsics.X86.Avx512F.IsSupported)
            Assert.Equal(IsaPath.Vector512, Isa.Active);
    }

    /// <summary>CI sets FASTATTN_EXPECT_ISA with each switch; the path must be exactly that.</summary>
    [Fact]
    public void ExpectedPathFromCi()
    {
        string? expect = Environment.GetEnvironmentVariable("FASTATTN_EXPECT_ISA");
        if (string.IsNullOrEmpty(expect))
        {
            Assert.True(Enum.IsDefined(Isa.Active));
            return;
        }
        Assert.Equal(Enum.Parse<IsaPath>(expect), Isa.Active);
    }
}
