using BenchmarkDotNet.Reports;

namespace FastAttn.Benchmarks;

/// <summary>The README's chart: latency against sequence length per implementation, log–log, from the latency suite.</summary>
public static class Chart
{
    public static void WriteLatency(Summary[] summaries, string path, TextWriter console)
    {
        var reports = summaries.SelectMany(s => s.Reports)
            .Where(r => r.ResultStatistics != null && r.BenchmarkCase.Descriptor.Type == typeof(LatencyBenchmarks)).ToList();
        if (reports.Count == 0) return;
        var plt = new ScottPlot.Plot();
        var colors = new[] { ScottPlot.Colors.C0, ScottPlot.Colors.C1, ScottPlot.Colors.C2, ScottPlot.Colors.C3 };
        int ci = 0;
        double minY = double.MaxValue, maxY = 0;
        foreach (var g in reports.GroupBy(r => r.BenchmarkCase.Descriptor.WorkloadMethodDisplayInfo.Trim('\'')))
        {
            var pts = g.Select(r => (T: Convert.ToDouble(r.BenchmarkCase.Parameters["Tokens"]), Us: r.ResultStatistics!.Median / 1e3))
                .OrderBy(p => p.T).ToArray();
            var sc = plt.Add.Scatter(pts.Select(p => Math.Log2(p.T)).ToArray(), pts.Select(p => Math.Log10(p.Us)).ToArray());
            sc.LegendText = g.Key;
            sc.Color = colors[ci++ % colors.Length];
            sc.LineWidth = 2;
            sc.MarkerSize = 8;
            minY = Math.Min(minY, pts.Min(p => p.Us)); maxY = Math.Max(maxY, pts.Max(p => p.Us));
        }
        // log scales: the data are plotted as log2(tokens) and log10(µs); ticks are labelled with the real values
        var yTicks = new ScottPlot.TickGenerators.NumericAutomatic
        {
            MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
            IntegerTicksOnly = true,
            LabelFormatter = y => $"{Math.Pow(10, y):N0}",
        };
        plt.Axes.Left.TickGenerator = yTicks;
        var xTicks = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true, LabelFormatter = x => $"{Math.Pow(2, x):N0}" };
        plt.Axes.Bottom.TickGenerator = xTicks;
        plt.Grid.MajorLineColor = ScottPlot.Colors.Black.WithOpacity(0.15);
        plt.Grid.MinorLineColor = ScottPlot.Colors.Black.WithOpacity(0.05);
        plt.Grid.MinorLineWidth = 1;
        plt.XLabel("sequence length (tokens, log scale)");
        plt.YLabel("median latency per call (µs, log scale)");
        plt.Title($"One encoder layer (d={LatencyBenchmarks.E}, {LatencyBenchmarks.H} heads, ff={LatencyBenchmarks.F}), 1 thread — lower is better");
        plt.ShowLegend(ScottPlot.Alignment.UpperLeft);
        plt.Axes.SetLimitsY(Math.Floor(Math.Log10(minY)), Math.Ceiling(Math.Log10(maxY)));
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        plt.SavePng(path, 1000, 600);
        console.WriteLine($"chart written to {path}");
    }
}
