using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using FastAttn.Embeddings;
using FastAttn.TestSupport;

namespace FastAttn.Benchmarks;

/// <summary>
/// The two halves of perf/loadtest.sh that are not wrk: the in-process yardsticks (FastAttn encoding the load test's
/// sentences directly — one at a time, and packed 16 and 64 to a pass — with the service's settings), and the report
/// (perf/results/service.md and its chart) built from the JSON lines of one run.
/// </summary>
public static class ServiceLoad
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>Prints one JSON line: median and p99 of one sentence's encode, and texts/s of packed passes of 16 and 64 sentences.</summary>
    public static void InProcess(string sentencesPath, TextWriter output)
    {
        string[] sentences = File.ReadAllLines(sentencesPath).Where(l => l.Length > 0).ToArray();
        var (modelPath, vocab) = MiniLmPackage.Files;
        using var model = BertModel.Load(modelPath);
        var tokenizer = BertWordPieceTokenizer.FromVocabFile(vocab);
        // the service's batching backend: normalised mean pooling, a session with every processor
        var options = new SentenceEmbedderOptions { Normalize = true, Threads = Environment.ProcessorCount, MaxBatchTokens = 4096 };
        using var session = new EmbeddingSession(model, tokenizer, options);
        using var single = new EmbeddingSession(model, tokenizer, options with { Threads = 1 });
        // one sentence at a time, text in and vector out as /embed does: on one thread (what the batcher uses for a
        // lone short request) and on every thread
        (double P50, double P99) Single(EmbeddingSession s)
        {
            var vector = new float[s.Dimension];
            for (int i = 0; i < 200; i++) s.Encode([sentences[i % sentences.Length]], vector);
            var times = new List<double>();
            var clock = Stopwatch.StartNew();
            for (int i = 0; clock.Elapsed.TotalSeconds < 4 || times.Count < 500; i++)
            {
                long t0 = Stopwatch.GetTimestamp();
                s.Encode([sentences[i % sentences.Length]], vector);
                times.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
            }
            times.Sort();
            return (times[times.Count / 2], times[(int)(times.Count * 0.99)]);
        }
        var one = Single(single);
        var all = Single(session);
        double Throughput(int batch)
        {
            string[] texts = Enumerable.Range(0, batch).Select(i => sentences[i % sentences.Length]).ToArray();
            var encoded = texts.Select(tokenizer.Encode).ToArray();
            int[] ids = [.. encoded.SelectMany(e => e)], lengths = [.. encoded.Select(e => e.Length)];
            var vectors = new float[batch * session.Dimension];
            for (int i = 0; i < 5; i++) session.EncodeIds(ids, lengths, vectors);
            var times = new List<double>();
            var c = Stopwatch.StartNew();
            while (c.Elapsed.TotalSeconds < 5 || times.Count < 20)
            {
                long t0 = Stopwatch.GetTimestamp();
                session.EncodeIds(ids, lengths, vectors);
                times.Add(Stopwatch.GetElapsedTime(t0).TotalSeconds);
            }
            times.Sort();
            return batch / times[times.Count / 2];
        }
        double b16 = Throughput(16), b64 = Throughput(64);
        var lens = sentences.Select(s => tokenizer.Encode(s).Length).ToArray();
        int tokens = lens.Sum();
        // the network's nominal work per sentence (as the embeddings suite counts it), and the FMA peak of one and of
        // every core, measured now: what any throughput here can be held against
        var c = model.Config;
        double gflop = lens.Average(n => c.NumHiddenLayers * (2.0 * n * (4.0 * c.HiddenSize * c.HiddenSize + 2.0 * c.HiddenSize * c.IntermediateSize) + 4.0 * n * n * c.HiddenSize)) / 1e9;
        double peak1 = FastAttn.Kernels.PeakProbe.MeasureGflops();
        double peakAll = 0;
        var peaks = new double[Environment.ProcessorCount];
        Parallel.For(0, peaks.Length, new ParallelOptions { MaxDegreeOfParallelism = peaks.Length }, i => peaks[i] = FastAttn.Kernels.PeakProbe.MeasureGflops());
        peakAll = peaks.Sum();
        output.WriteLine(string.Create(Inv,
            $"{{\"kind\":\"inprocess\",\"threads\":{options.Threads},\"sentences\":{sentences.Length},\"mean_tokens\":{(double)tokens / sentences.Length:F1},\"single1_p50_ms\":{one.P50:F4},\"single1_p99_ms\":{one.P99:F4},\"single_p50_ms\":{all.P50:F4},\"single_p99_ms\":{all.P99:F4},\"batch16_texts_per_s\":{b16:F1},\"batch64_texts_per_s\":{b64:F1},\"gflop_per_sentence\":{gflop:F4},\"peak1_gflops\":{peak1:F1},\"peak_all_gflops\":{peakAll:F1}}}"));
    }

    private sealed record Wrk(string Label, string Endpoint, int Connections, long Requests, double Seconds, double P50, double P90, double P99, double Max, long Non2xx, long SocketErrors)
    {
        public double Rate => Requests / Seconds;
    }

    /// <summary>Writes the markdown report and the chart from the raw JSON lines of one load-test run.</summary>
    public static void Report(string rawPath, string mdPath, string pngPath, TextWriter console)
    {
        var lines = File.ReadAllLines(rawPath).Where(l => l.Length > 0).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        var ip = lines.Single(l => l.GetProperty("kind").GetString() == "inprocess");
        var runs = lines.Where(l => l.GetProperty("kind").GetString() == "wrk").Select(l => new Wrk(
            l.GetProperty("label").GetString()!, l.GetProperty("endpoint").GetString()!, l.GetProperty("connections").GetInt32(),
            l.GetProperty("requests").GetInt64(), l.GetProperty("seconds").GetDouble(), l.GetProperty("p50_ms").GetDouble(),
            l.GetProperty("p90_ms").GetDouble(), l.GetProperty("p99_ms").GetDouble(), l.GetProperty("max_ms").GetDouble(),
            l.GetProperty("non2xx").GetInt64(), l.GetProperty("socket_errors").GetInt64())).ToList();
        var snaps = lines.Where(l => l.GetProperty("kind").GetString() == "snapshot").ToList();
        double singleAll = ip.GetProperty("single_p50_ms").GetDouble(), single1 = ip.GetProperty("single1_p50_ms").GetDouble();
        double single = Math.Min(singleAll, single1); // the faster in-process time: the stricter bound
        double Batch(int c) => ip.GetProperty(c == 16 ? "batch16_texts_per_s" : "batch64_texts_per_s").GetDouble();
        Wrk? Find(string label, string endpoint, int c) => runs.FirstOrDefault(r => r.Label == label && r.Endpoint == endpoint && r.Connections == c);

        var sb = new StringBuilder();
        sb.AppendLine("# FastAttn.Service under load (perf/loadtest.sh)");
        sb.AppendLine();
        sb.AppendLine(string.Create(Inv, $"{DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC; {Environment.ProcessorCount} logical CPUs ({CpuName()}), .NET {Environment.Version}. wrk (1 thread) and the service share the machine; loopback only; closed loop, one short sentence per request ({ip.GetProperty("sentences").GetInt32()} sentences cycled, {ip.GetProperty("mean_tokens").GetDouble():F1} word pieces on average)."));
        sb.AppendLine();
        sb.AppendLine("In-process yardsticks, same run (EmbeddingSession, the service's settings: normalised mean pooling, " + ip.GetProperty("threads").GetInt32() + " threads):");
        sb.AppendLine();
        sb.AppendLine("| one sentence, 1 thread: median / p99 | one sentence, " + ip.GetProperty("threads").GetInt32() + " threads: median / p99 | packed 16 per pass | packed 64 per pass |");
        sb.AppendLine("|---:|---:|---:|---:|");
        sb.AppendLine(string.Create(Inv, $"| {single1:F3} / {ip.GetProperty("single1_p99_ms").GetDouble():F3} ms | {singleAll:F3} / {ip.GetProperty("single_p99_ms").GetDouble():F3} ms | {Batch(16):F0} texts/s | {Batch(64):F0} texts/s |"));
        sb.AppendLine();
        double gflop = ip.GetProperty("gflop_per_sentence").GetDouble(), peakAll = ip.GetProperty("peak_all_gflops").GetDouble();
        sb.AppendLine(string.Create(Inv, $"FP32 FMA peak measured in the same run: {ip.GetProperty("peak1_gflops").GetDouble():F0} GFLOP/s on one core, {peakAll:F0} GFLOP/s on all {Environment.ProcessorCount}. One sentence is {gflop:F3} GFLOP (nominal), so all cores at their peak would embed at most {peakAll / gflop:F0} sentences/s; the packed passes above run at {Batch(16) * gflop:F0} and {Batch(64) * gflop:F0} GFLOP/s ({100 * Batch(16) * gflop / peakAll:F0} % and {100 * Batch(64) * gflop / peakAll:F0} % of it)."));
        sb.AppendLine();
        sb.AppendLine("| service | endpoint | connections | requests/s | GFLOP/s (% of peak) | p50 ms | p90 ms | p99 ms | max ms | p99/p50 | non-2xx | socket errors |");
        sb.AppendLine("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in runs)
            sb.AppendLine(string.Create(Inv, $"| {r.Label} | /{r.Endpoint} | {r.Connections} | {r.Rate:F0} | {(r.Endpoint == "embed" ? $"{r.Rate * gflop:F0} ({100 * r.Rate * gflop / peakAll:F0} %)" : "")} | {r.P50:F2} | {r.P90:F2} | {r.P99:F2} | {r.Max:F1} | {r.P99 / r.P50:F2} | {r.Non2xx} | {r.SocketErrors} |"));
        sb.AppendLine();
        sb.AppendLine("| service | RSS after warm-up | RSS at the end | change | gen-2 GCs after warm-up | gen-2 GCs at the end |");
        sb.AppendLine("|---|---:|---:|---:|---:|---:|");
        foreach (var g in snaps.GroupBy(s => s.GetProperty("label").GetString()))
        {
            var a = g.First(s => s.GetProperty("when").GetString() == "after-warm-up");
            var b = g.First(s => s.GetProperty("when").GetString() == "end");
            double ra = a.GetProperty("rss_bytes").GetDouble(), rb = b.GetProperty("rss_bytes").GetDouble();
            sb.AppendLine(string.Create(Inv, $"| {g.Key} | {ra / 1048576:F0} MiB | {rb / 1048576:F0} MiB | {100 * (rb - ra) / ra:+0.0;-0.0}% | {a.GetProperty("gen2").GetInt32()} | {b.GetProperty("gen2").GetInt32()} |"));
        }
        sb.AppendLine();
        sb.AppendLine("Targets (issue 14), from the figures above:");
        sb.AppendLine();
        var checks = new List<(string What, string Value, bool Ok)>();
        long errors = runs.Sum(r => r.Non2xx + r.SocketErrors);
        checks.Add(("no errors", $"{errors} non-2xx or socket errors", errors == 0));
        if (Find("batching", "embed", 1) is { } one)
        {
            double bound = 1.5 * single + 0.5;
            checks.Add(("/embed p99 at 1 connection ≤ 1.5 × the faster in-process median + 0.5 ms", string.Create(Inv, $"{one.P99:F2} ms ≤ {bound:F2} ms"), one.P99 <= bound));
            checks.Add(("/embed p99 at 1 connection ≤ 1.5 × the two-thread in-process median + 0.5 ms (the session a lone request runs on)", string.Create(Inv, $"{one.P99:F2} ms ≤ {1.5 * singleAll + 0.5:F2} ms"), one.P99 <= 1.5 * singleAll + 0.5));
        }
        foreach (int c in new[] { 16, 64 })
            if (Find("batching", "embed", c) is { } r)
            {
                checks.Add(($"/embed at {c} connections ≥ 70 % of packed-{c} throughput", string.Create(Inv, $"{r.Rate:F0} / {Batch(c):F0} = {100 * r.Rate / Batch(c):F0} %"), r.Rate >= 0.7 * Batch(c)));
                checks.Add(($"/embed at {c} connections p99 ≤ 3 × p50", string.Create(Inv, $"{r.P99:F2} / {r.P50:F2} = {r.P99 / r.P50:F2}"), r.P99 <= 3 * r.P50));
            }
        if (Find("batching", "embed", 64) is { } b64 && Find("no-batching", "embed", 64) is { } n64)
            checks.Add(("batching ≥ 2 × no batching at 64 connections", string.Create(Inv,
                $"{b64.Rate:F0} / {n64.Rate:F0} = {b64.Rate / n64.Rate:F2}×; 2× would be {2 * n64.Rate * gflop:F0} GFLOP/s = {200 * n64.Rate * gflop / peakAll:F0} % of the peak"), b64.Rate >= 2 * n64.Rate));
        foreach (int c in new[] { 1, 16, 64 })
            if (Find("batching", "embed", c) is { } f && Find("onnxruntime", "embed", c) is { } o)
            {
                string latency = c == 1 ? string.Create(Inv, $", and {1000 / (3 * o.Rate):F2} ms per request against the {single:F2} ms in-process median") : "";
                checks.Add(($"FastAttn ≥ 3 × the ONNX Runtime endpoint at {c} connection{(c > 1 ? "s" : "")}", string.Create(Inv,
                    $"{f.Rate:F0} / {o.Rate:F0} = {f.Rate / o.Rate:F2}×; 3× would be {3 * o.Rate * gflop:F0} GFLOP/s = {300 * o.Rate * gflop / peakAll:F0} % of the peak{latency}"), f.Rate >= 3 * o.Rate));
            }
        if (Find("batching-1t", "embed", 1) is { } t1 && Find("onnxruntime", "embed", 1) is { } o1)
        {
            // the same targets with short batches on a one-thread session (--ParallelFromTokens 64)
            checks.Add(("with --ParallelFromTokens 64 (lone requests on one thread): /embed p99 at 1 connection ≤ 1.5 × the one-thread in-process median + 0.5 ms", string.Create(Inv, $"{t1.P99:F2} ms ≤ {1.5 * single1 + 0.5:F2} ms"), t1.P99 <= 1.5 * single1 + 0.5));
            checks.Add(("with --ParallelFromTokens 64: FastAttn ≥ 3 × the ONNX Runtime endpoint at 1 connection", string.Create(Inv,
                $"{t1.Rate:F0} / {o1.Rate:F0} = {t1.Rate / o1.Rate:F2}×; 3× would be {1000 / (3 * o1.Rate):F2} ms per request against the {single1:F2} ms one-thread in-process median"), t1.Rate >= 3 * o1.Rate));
        }
        sb.AppendLine("| target | measured | met |");
        sb.AppendLine("|---|---|---|");
        foreach (var (what, value, ok) in checks) sb.AppendLine($"| {what} | {value} | {(ok ? "yes" : "**no**")} |");
        sb.AppendLine();
        sb.AppendLine("![throughput](service.png)");
        File.WriteAllText(mdPath, sb.ToString());
        console.Write(sb.ToString());
        Chart(runs, Batch(16), Batch(64), pngPath);
        console.WriteLine($"written {mdPath} and {pngPath}");
    }

    private static void Chart(List<Wrk> runs, double batch16, double batch64, string path)
    {
        var plt = new ScottPlot.Plot();
        string[] labels = ["batching", "no-batching", "onnxruntime"];
        string[] names = ["FastAttn, batching", "FastAttn, no batching", "ONNX Runtime (package)"];
        int[] conns = [1, 16, 64];
        var colors = new[] { ScottPlot.Colors.C0, ScottPlot.Colors.C1, ScottPlot.Colors.C2 };
        for (int s = 0; s < labels.Length; s++)
        {
            var bars = new List<ScottPlot.Bar>();
            for (int c = 0; c < conns.Length; c++)
                if (runs.FirstOrDefault(r => r.Label == labels[s] && r.Endpoint == "embed" && r.Connections == conns[c]) is { } r)
                    bars.Add(new ScottPlot.Bar { Position = c * 4 + s, Value = r.Rate, FillColor = colors[s] });
            var bp = plt.Add.Bars(bars);
            bp.LegendText = names[s];
            bp.Color = colors[s];
        }
        foreach (var (c, v) in new[] { (1, batch16), (2, batch64) })
        {
            var line = plt.Add.Line(c * 4 - 0.6, v, c * 4 + 2.6, v);
            line.LineColor = ScottPlot.Colors.Black;
            line.LinePattern = ScottPlot.LinePattern.Dashed;
            if (c == 1) line.LegendText = "in-process packed pass (16 / 64 per pass)";
        }
        plt.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            conns.Select((c, i) => new ScottPlot.Tick(i * 4 + 1, $"{c} connection{(c > 1 ? "s" : "")}")).ToArray());
        plt.Axes.Margins(bottom: 0);
        plt.YLabel("requests/s (one sentence each) — higher is better");
        plt.Title("POST /embed, all-MiniLM-L6-v2, loopback, 2 cores shared with wrk");
        plt.ShowLegend(ScottPlot.Alignment.UpperLeft);
        plt.SavePng(path, 1000, 550);
    }

    private static string CpuName()
    {
        try { return File.ReadLines("/proc/cpuinfo").First(l => l.StartsWith("model name")).Split(':', 2)[1].Trim(); }
        catch (Exception) { return "unknown CPU"; }
    }
}
