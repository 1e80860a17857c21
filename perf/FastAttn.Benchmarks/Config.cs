using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

namespace FastAttn.Benchmarks;

/// <summary>
/// One configuration for every suite: memory diagnoser, median/min/max, categories grouped so peers sit side
/// by side with ratios to the FastAttn baseline. In-process, because libLibTorchSharp.so must be the copy in
/// this project's output folder (patched at build time, see build/TorchSharpGlibcxx.targets); a generated
/// child project would copy the unpatched one from the NuGet cache.
/// </summary>
public static class BenchConfig
{
    public static IConfig Create(bool quick)
    {
        var job = Job.Default.WithToolchain(InProcessEmitToolchain.Instance).WithId(quick ? "Quick" : "Full");
        if (quick) job = job.WithWarmupCount(3).WithIterationCount(9).WithMinIterationTime(Perfolizer.Horology.TimeInterval.FromMilliseconds(150));
        return ManualConfig.CreateEmpty()
            .AddJob(job)
            .AddDiagnoser(MemoryDiagnoser.Default)
            .AddColumnProvider(DefaultColumnProviders.Instance)
            .AddColumn(StatisticColumn.Median, StatisticColumn.Min, StatisticColumn.Max)
            .AddLogger(BenchmarkDotNet.Loggers.ConsoleLogger.Default)
            .AddExporter(BenchmarkDotNet.Exporters.MarkdownExporter.GitHub)
            .WithOrderer(new BenchmarkDotNet.Order.DefaultOrderer(BenchmarkDotNet.Order.SummaryOrderPolicy.Declared))
            .AddLogicalGroupRules(BenchmarkLogicalGroupRule.ByCategory, BenchmarkLogicalGroupRule.ByParams)
            .WithOptions(ConfigOptions.JoinSummary | ConfigOptions.DisableLogFile);
    }
}
