using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Runtime.Loader;

// AbHost DIR_A DIR_B SPEC…: the same workloads on two builds of FastAttn in one process, alternated (A B, then B A, …)
// over 11 rounds of ~150 ms batches per build; prints each build's median of the batch medians and A ÷ B.
if (args.Length < 3)
{
    Console.Error.WriteLine("usage: AbHost DIR_A DIR_B SPEC...  (see perf/ab.sh)");
    return 2;
}
var inv = CultureInfo.InvariantCulture;
var make = args.Take(2).Select(dir =>
{
    var context = new DirectoryLoadContext(Path.GetFullPath(dir));
    var shim = context.LoadFromAssemblyPath(Path.Combine(Path.GetFullPath(dir), "AbShim.dll"));
    return shim.GetType("FastAttn.Ab.Workloads")!.GetMethod("Make")!;
}).ToArray();
const int rounds = 11;
foreach (var spec in args.Skip(2))
{
    var builds = make.Select(m => ((Action Run, double Flops))m.Invoke(null, [spec])!).ToArray();
    foreach (var b in builds) for (int i = 0; i < 3; i++) b.Run();
    var sw = Stopwatch.StartNew();
    builds[0].Run();
    int calls = Math.Max(5, (int)(150_000 / Math.Max(sw.Elapsed.TotalMicroseconds, 1)));
    var medians = new[] { new List<double>(), new List<double>() };
    var times = new double[calls];
    for (int r = 0; r < rounds; r++)
        foreach (int b in r % 2 == 0 ? new[] { 0, 1 } : new[] { 1, 0 })
        {
            var run = builds[b].Run;
            run();
            for (int i = 0; i < calls; i++)
            {
                long t0 = Stopwatch.GetTimestamp();
                run();
                times[i] = Stopwatch.GetElapsedTime(t0).TotalMicroseconds;
            }
            Array.Sort(times);
            medians[b].Add(times[calls / 2]);
        }
    double a = Median(medians[0]), bm = Median(medians[1]);
    Console.WriteLine(string.Create(inv, $"{spec,-36} A {a,10:F1} µs   B {bm,10:F1} µs   A ÷ B {a / bm:F3}   ({builds[1].Flops / bm / 1e3:F1} GFLOP/s for B)"));
}
return 0;

static double Median(List<double> v) { var s = v.OrderBy(x => x).ToList(); return s[s.Count / 2]; }

/// <summary>Resolves FastAttn and its dependencies from one build's folder (the framework from the default context).</summary>
sealed class DirectoryLoadContext(string dir) : AssemblyLoadContext(isCollectible: false)
{
    protected override Assembly? Load(AssemblyName name)
    {
        string path = Path.Combine(dir, name.Name + ".dll");
        return File.Exists(path) ? LoadFromAssemblyPath(path) : null;
    }
}
