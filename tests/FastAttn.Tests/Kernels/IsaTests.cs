using System.Diagnostics;
using System.Runtime.Intrinsics;
using FastAttn.Kernels;

namespace FastAttn.Tests.Kernels;

/// <summary>
/// Which path the runtime's switches select. The numeric tests run every supported path in-process (IsaPaths); these
/// start child processes with .NET 10's switches — <c>DOTNET_EnableAVX512=0</c>, <c>DOTNET_EnableAVX2=0</c>,
/// <c>DOTNET_EnableHWIntrinsic=0</c> — and check the path each one really selects (older names such as
/// <c>DOTNET_EnableAVX512F</c> are silently ignored by .NET 10, which a test that trusted the switch would not notice).
/// </summary>
public class IsaTests(Xunit.Abstractions.ITestOutputHelper output)
{
    [Fact]
    public void InThisProcess_TheWidestSupportedPathIsActive()
    {
        Assert.Equal(Isa.Best, Isa.Active);
        Assert.Equal(Isa.Supported[^1], Isa.Best);
        Assert.Contains(IsaPath.Scalar, Isa.Supported);
        if (Vector128.IsHardwareAccelerated) Assert.Contains(IsaPath.Vector128, Isa.Supported);
        if (System.Runtime.Intrinsics.X86.Avx512F.IsSupported && Vector512.IsHardwareAccelerated) Assert.Equal(IsaPath.Vector512, Isa.Active);
    }

    [Fact]
    public void UseNarrowsThePathOnThisThreadOnly()
    {
        using (Isa.Use(IsaPath.Scalar))
        {
            Assert.Equal(IsaPath.Scalar, Isa.Current);
            IsaPath other = Isa.Active;
            var t = new Thread(() => other = Isa.Current);
            t.Start(); t.Join();
            Assert.Equal(Isa.Active, other);
        }
        Assert.Equal(Isa.Active, Isa.Current);
    }

    /// <summary>The CLI (built beside the tests) prints the path in its first line: <c>CPU: path=Vector256 (best …)</c>.</summary>
    private static string ChildPath(string? variable)
    {
        string cli = Path.Combine(AppContext.BaseDirectory, "FastAttn.Cli.dll");
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet", [cli, "info"])
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (var v in new[] { "DOTNET_EnableAVX512", "DOTNET_EnableAVX2", "DOTNET_EnableHWIntrinsic", "DOTNET_EnableAVX512F", "FASTATTN_ISA" })
            psi.Environment.Remove(v);
        if (variable != null) psi.Environment[variable] = "0";
        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"fastattn info exited with {p.ExitCode}: {p.StandardError.ReadToEnd()}");
        int i = stdout.IndexOf("path=", StringComparison.Ordinal);
        Assert.True(i >= 0, stdout);
        return stdout[(i + 5)..].Split(' ')[0];
    }

    [Theory]
    [InlineData(null, null)]
    [InlineData("DOTNET_EnableAVX512", IsaPath.Vector256)]
    [InlineData("DOTNET_EnableAVX2", IsaPath.Vector128)]
    [InlineData("DOTNET_EnableHWIntrinsic", IsaPath.Scalar)]
    [InlineData("DOTNET_EnableAVX512F", null)]   // not a .NET 10 switch: changes nothing
    public void RuntimeSwitch_SelectsItsPath_InAChildProcess(string? variable, IsaPath? expected)
    {
        string got = ChildPath(variable);
        output.WriteLine($"{variable ?? "(no switch)"}=0 → {got}");
        // the machine's widest path is the child's without a switch: this process may itself run under a switch (as when
        // the whole test run is repeated with DOTNET_EnableAVX2=0), which the children do not inherit
        bool parentSwitched = new[] { "DOTNET_EnableAVX512", "DOTNET_EnableAVX2", "DOTNET_EnableHWIntrinsic" }.Any(v => Environment.GetEnvironmentVariable(v) == "0");
        IsaPath best = parentSwitched ? Enum.Parse<IsaPath>(ChildPath(null)) : Isa.Active;
        IsaPath want = expected ?? best;
        // a switch can only narrow: on a machine without AVX-512, switching it off leaves the path as it was
        if (want > best) want = best;
        Assert.Equal(want.ToString(), got);
    }
}
