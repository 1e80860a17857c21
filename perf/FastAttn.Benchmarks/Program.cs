using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using FastAttn.Benchmarks;

var clock = System.Diagnostics.Stopwatch.StartNew();
bool quick = !args.Contains("--full");
string[] only = args.Where(a => !a.StartsWith("--")).ToArray();
var all = new (string Name, Type Type)[]
{
    ("peak", typeof(PeakBenchmarks)),
    ("gemm", typeof(GemmBenchmarks)),
    ("attention", typeof(AttentionBenchmarks)),
    ("encoder", typeof(EncoderBenchmarks)),
    ("latency", typeof(LatencyBenchmarks)),
    ("tagger", typeof(TaggerBenchmarks)),
    ("hostile", typeof(HostileInputBenchmarks)),
};
var types = all.Where(t => only.Length == 0 || only.Contains(t.Name) || t.Name == "peak").Select(t => t.Type).ToArray();
var summaries = BenchmarkRunner.Run(types, BenchConfig.Create(quick));
Report.Write(summaries, Path.Combine(Report.RepoRoot(), "perf", "results", "latest.md"), Console.Out);
Chart.WriteLatency(summaries, Path.Combine(Report.RepoRoot(), "perf", "results", "latency.png"), Console.Out);
// also keep a copy per suite, so running one suite does not hide the figures of another
if (only.Length == 1) File.Copy(Path.Combine(Report.RepoRoot(), "perf", "results", "latest.md"), Path.Combine(Report.RepoRoot(), "perf", "results", only[0] + ".md"), true);
Console.WriteLine($"suite took {clock.Elapsed.TotalMinutes:F1} min");
return 0;
