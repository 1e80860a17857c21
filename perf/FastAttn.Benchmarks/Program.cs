using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using FastAttn.Benchmarks;

// perf/loadtest.sh's helpers: not BenchmarkDotNet suites
if (args is ["service-inprocess", var sentences]) { ServiceLoad.InProcess(sentences, Console.Out); return 0; }
if (args is ["service-report", var raw, var md, var png]) { ServiceLoad.Report(raw, md, png, Console.Out); return 0; }
// the shape sweep (its own interleaved loop, not BenchmarkDotNet): perf/results/sweep.md and sweep.png
if (args is ["sweep", ..]) return Sweep.Run(args[1..], Console.Out);

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
    ("denormal", typeof(DenormalBenchmarks)),
    ("embeddings", typeof(EmbeddingsBenchmarks)),
    ("architectures", typeof(ArchitectureBenchmarks)),
    ("decoders", typeof(DecoderBenchmarks)),
    ("load", typeof(LoadBenchmarks)),
    ("precision", typeof(PrecisionGemmBenchmarks)),
    ("precision", typeof(PrecisionModelBenchmarks)),
};
// suites run only when named (they take a while, or measure something other than the engine)
string[] onDemand = ["hostile", "denormal", "embeddings", "precision", "architectures", "decoders", "load"];
var types = all.Where(t => (only.Length == 0 && !onDemand.Contains(t.Name)) || only.Contains(t.Name) || t.Name == "peak").Select(t => t.Type).ToArray();
var summaries = BenchmarkRunner.Run(types, BenchConfig.Create(quick));
Report.Write(summaries, Path.Combine(Report.RepoRoot(), "perf", "results", "latest.md"), Console.Out);
Chart.WriteLatency(summaries, Path.Combine(Report.RepoRoot(), "perf", "results", "latency.png"), Console.Out);
// also keep a copy per suite, so running one suite does not hide the figures of another
if (only.Length == 1) File.Copy(Path.Combine(Report.RepoRoot(), "perf", "results", "latest.md"), Path.Combine(Report.RepoRoot(), "perf", "results", only[0] + ".md"), true);
Console.WriteLine($"suite took {clock.Elapsed.TotalMinutes:F1} min");
return 0;
