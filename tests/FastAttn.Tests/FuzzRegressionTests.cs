using FastAttn.Fuzz;

namespace FastAttn.Tests;

/// <summary>
/// Every committed fuzz input — the seed corpus (fuzz/corpus/TARGET) and each crash or hang AFL++ found, kept as a
/// regression (fuzz/findings/TARGET) — through the same target functions the fuzzer runs.
/// </summary>
public class FuzzRegressionTests
{
    private static string FuzzFolder()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
        {
            string p = Path.Combine(d.FullName, "fuzz", "corpus");
            if (Directory.Exists(p)) return Path.GetDirectoryName(p)!;
        }
        throw new DirectoryNotFoundException($"fuzz/corpus not found above {AppContext.BaseDirectory}");
    }

    public static TheoryData<string, string> Inputs()
    {
        var data = new TheoryData<string, string>();
        string root = FuzzFolder();
        foreach (var kind in new[] { "corpus", "findings" })
            foreach (var target in Targets.Names)
            {
                string dir = Path.Combine(root, kind, target);
                if (!Directory.Exists(dir)) continue;
                foreach (var f in Directory.GetFiles(dir).Order(StringComparer.Ordinal))
                    data.Add(target, Path.GetRelativePath(root, f));
            }
        return data;
    }

    [Theory]
    [MemberData(nameof(Inputs))]
    public void CommittedInputs_AreAcceptedOrRejectedTheDocumentedWay(string target, string file)
        => Targets.Run(target, File.ReadAllBytes(Path.Combine(FuzzFolder(), file)));

    [Fact]
    public void EveryTargetHasASeedCorpus()
    {
        foreach (var t in Targets.Names)
            Assert.NotEmpty(Directory.GetFiles(Path.Combine(FuzzFolder(), "corpus", t)));
    }
}
