using System.Globalization;
using System.Text;
using BenchmarkDotNet.Reports;
using FastAttn.Kernels;

namespace FastAttn.Benchmarks;

/// <summary>Turns the run's summaries into the README table: medians, GFLOP/s, percent of the peak measured in the same run, ratios.</summary>
public static class Report
{
    public static string RepoRoot()
    {
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d != null && !File.Exists(Path.Combine(d.FullName, "FastAttn.sln"))) d = d.Parent;
        return d?.FullName ?? Directory.GetCurrentDirectory();
    }

    private static double MedianNs(BenchmarkReport r) => r.ResultStatistics?.Median ?? double.NaN;
    private static long Alloc(BenchmarkReport r) => r.GcStats.GetBytesAllocatedPerOperation(r.BenchmarkCase) ?? -1;

    public static void Write(Summary[] summaries, string path, TextWriter console)
    {
        var reports = summaries.SelectMany(s => s.Reports).Where(r => r.ResultStatistics != null).ToList();
        double peak512 = double.NaN, peak256 = double.NaN;
        foreach (var r in reports.Where(r => r.BenchmarkCase.Descriptor.Type == typeof(PeakBenchmarks)))
        {
            double gf = PeakBenchmarks.Iterations * (r.BenchmarkCase.Descriptor.WorkloadMethod.Name == "Fma512"
                ? PeakProbe.Flops512PerIteration : PeakProbe.Flops256PerIteration) / MedianNs(r);
            if (r.BenchmarkCase.Descriptor.WorkloadMethod.Name == "Fma512") peak512 = gf; else peak256 = gf;
        }
        double peak = double.IsNaN(peak512) ? peak256 : Math.Max(peak512, double.IsNaN(peak256) ? 0 : peak256);
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        sb.AppendLine($"Machine: {Environment.ProcessorCount} logical CPUs, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, .NET {Environment.Version}; {Isa.Describe()}");
        sb.AppendLine(string.Create(inv, $"Measured FP32 FMA peak (same run): Vector512 {peak512:F1} GFLOP/s, Vector256 {peak256:F1} GFLOP/s"));
        sb.AppendLine();
        sb.AppendLine("| suite | shape | threads | implementation | median µs | GFLOP/s | % of peak | GB/s | allocated B/op | FastAttn speed-up |");
        sb.AppendLine("|---|---|---:|---|---:|---:|---:|---:|---:|---:|");
        foreach (var group in reports.Where(r => r.BenchmarkCase.Descriptor.Type != typeof(PeakBenchmarks))
                     .GroupBy(r => (r.BenchmarkCase.Descriptor.Type.Name, r.BenchmarkCase.Parameters.DisplayInfo)))
        {
            var baseline = group.FirstOrDefault(r => r.BenchmarkCase.Descriptor.Baseline);
            double baseNs = baseline == null ? double.NaN : MedianNs(baseline);
            foreach (var r in group)
            {
                object? inst = Activator.CreateInstance(r.BenchmarkCase.Descriptor.Type);
                foreach (var p in r.BenchmarkCase.Parameters.Items)
                    r.BenchmarkCase.Descriptor.Type.GetField(p.Name)?.SetValue(inst, p.Value);
                double flops = FlopsOf(inst);
                double bytes = inst?.GetType().GetProperty("Bytes")?.GetValue(inst) is double bb ? bb : double.NaN;
                double ns = MedianNs(r);
                double gf = flops / ns;
                string suite = r.BenchmarkCase.Descriptor.Type.Name.Replace("Benchmarks", "");
                string threads = r.BenchmarkCase.Parameters.Items.FirstOrDefault(p => p.Name == "Threads")?.Value?.ToString() ?? "1";
                string shape = string.Join(", ", r.BenchmarkCase.Parameters.Items.Where(p => p.Name != "Threads").Select(p => $"{p.Value}"));
                string ratio = r.BenchmarkCase.Descriptor.Baseline ? "1.00" : (ns / baseNs).ToString("F2", inv) + "×";
                sb.AppendLine(string.Create(inv,
                    $"| {suite} | {shape} | {threads} | {r.BenchmarkCase.Descriptor.WorkloadMethodDisplayInfo} | {ns / 1e3:F1} | {(double.IsNaN(gf) ? "" : gf.ToString("F1", inv))} | {(double.IsNaN(gf) ? "" : (100 * gf / peak).ToString("F0", inv) + "%")} | {(double.IsNaN(bytes) ? "" : (bytes / ns).ToString("F1", inv))} | {Alloc(r)} | {ratio} |"));
            }
        }
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, sb.ToString());
        console.WriteLine();
        console.WriteLine(sb.ToString());
        console.WriteLine($"written to {path}");
    }

    /// <summary>Calls the benchmark's Setup-free FLOP count: classes expose a Flops property computed from their params.</summary>
    private static double FlopsOf(object? inst)
    {
        if (inst == null) return double.NaN;
        var t = inst.GetType();
        t.GetMethod("ParseShape")?.Invoke(inst, null);
        return t.GetProperty("Flops")?.GetValue(inst) is double d ? d : double.NaN;
    }
}
