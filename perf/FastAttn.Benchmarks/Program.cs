using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using FastAttn.Benchmarks;

bool quick = !args.Contains("--full");
string[] only = args.Where(a => !a.StartsWith("--")).ToArray();
var all = new (string Name, Type Type)[]
{
    ("peak", typeof(PeakBenchmarks)),
    ("gemm", typeof(GemmBenchmarks)),
};
var types = all.Where(t => only.Length == 0 || only.Contains(t.Name) || t.Name == "peak").Select(t => t.Type).ToArray();
var summaries = BenchmarkRunner.Run(types, BenchConfig.Create(quick));
Report.Write(summaries, Path.Combine(Report.RepoRoot(), "perf", "results", "latest.md"), Console.Out);
return 0;
