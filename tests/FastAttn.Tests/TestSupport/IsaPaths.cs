using FastAttn.Kernels;

namespace FastAttn.Tests;

/// <summary>
/// Every kernel path this machine supports, run in one process: the body runs once per path with that path in force for
/// the layers it builds and the kernels it calls on this thread (<see cref="Isa.Use"/>). CI also starts child processes
/// with the runtime's switches (see IsaTests) to check what each switch selects.
/// </summary>
internal static class IsaPaths
{
    public static IReadOnlyList<IsaPath> Supported => Isa.Supported;

    /// <summary>xunit data: every supported path.</summary>
    public static TheoryData<IsaPath> Data()
    {
        var d = new TheoryData<IsaPath>();
        foreach (var p in Isa.Supported) d.Add(p);
        return d;
    }

    /// <summary>Runs <paramref name="body"/> on every supported path; a failure names the path.</summary>
    public static void ForEach(Action<IsaPath> body)
    {
        Assert.Contains(IsaPath.Scalar, Isa.Supported);
        foreach (var p in Isa.Supported)
        {
            using var _ = Isa.Use(p);
            try { body(p); }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                throw new Xunit.Sdk.XunitException($"on the {p} path: {e.Message}\n{e.StackTrace}");
            }
        }
    }

    public static void ForEach(Action body) => ForEach(_ => body());
}
