using System.Diagnostics;
using FastAttn.Tagging;

namespace FastAttn.Cli;

/// <summary>The part-of-speech commands: tag, eval, demo.</summary>
public static class TagCommands
{
    /// <summary>Loads "attention" or "fc" (the models bundled in FastAttn.Tagging, or from <paramref name="folder"/>), or a model file.</summary>
    public static PosTagModel LoadModel(string model, string? folder, FastAttn.Kernels.Precision precision = FastAttn.Kernels.Precision.F32)
    {
        FastAttn.Layers.PrecisionPlan plan = precision;
        if (model is "attention" or "fc")
            return folder == null ? PosTagModel.LoadBundled(model, plan) : PosTagModel.Load(Path.Combine(folder, model + ".safetensors"), plan);
        return PosTagModel.Load(model, plan);
    }

    /// <summary>Formats tokens as word/TAG pairs.</summary>
    public static string Format(IEnumerable<TaggedToken> tokens) => string.Join(' ', tokens.Select(t => $"{t.Word}/{t.Tag}"));

    /// <summary>
    /// <c>fastattn tag</c>: one text, or one sentence per line of a UTF-8 file (<c>-</c> = standard input); the text is
    /// checked (valid UTF-8) before anything is printed.
    /// </summary>
    public static int Tag(string? text, string? file, string model, string? folder, TextWriter output, Func<Stream>? stdin = null, string? precision = null)
    {
        var p = CliInputException.ParsePrecision(precision);
        if ((text == null) == (file == null)) throw new CliInputException("give either a text or --file F (--file - reads standard input).");
        string body = text ?? (file == "-" ? Utf8Text.ReadStream((stdin ?? Console.OpenStandardInput)(), "standard input") : Utf8Text.ReadFile(file!));
        using var m = LoadModel(model, folder, p);
        using var tagger = m.CreateTagger();
        if (text != null) { output.WriteLine(Format(tagger.Tag(text))); return 0; }
        var sb = new System.Text.StringBuilder();
        foreach (var line in Utf8Text.Lines(body)) sb.AppendLine(line.Trim().Length == 0 ? "" : Format(tagger.Tag(line)));
        output.Write(sb.ToString());
        return 0;
    }

    /// <summary>UPOS accuracy of both models (or one) on a CoNLL-U file's gold tokens.</summary>
    public static (double Accuracy, int Words) Evaluate(PosTagger tagger, IReadOnlyList<TaggedSentence> sentences)
    {
        int right = 0, all = 0;
        var tags = new int[sentences.Count == 0 ? 0 : sentences.Max(s => s.Words.Length)];
        foreach (var s in sentences)
        {
            tagger.TagWords(s.Words, tags);
            for (int i = 0; i < s.Words.Length; i++) if (tagger.Model.Tags[tags[i]] == s.Tags[i]) right++;
            all += s.Words.Length;
        }
        return (all == 0 ? 0 : (double)right / all, all);
    }

    /// <summary><c>fastattn eval --conllu F</c>.</summary>
    public static int Eval(string conllu, string? folder, TextWriter output, string? precisionName = null)
    {
        var p = CliInputException.ParsePrecision(precisionName);
        var data = ConllU.Read(conllu);
        if (data.Count == 0) throw new InvalidDataException($"'{conllu}' holds no sentences (no token lines); nothing to evaluate.");
        using var fc = LoadModel("fc", folder, p);
        using var attn = LoadModel("attention", folder, p);
        output.WriteLine($"{Path.GetFileName(conllu)}: {data.Count} sentences, {data.Sum(s => s.Words.Length)} words (gold tokenization){(p == FastAttn.Kernels.Precision.F32 ? "" : $", linear layers in {p}")}");
        var (compared, exact, precision, recall) = TokenizerAgreement.Measure(data);
        if (compared > 0)
            output.WriteLine($"  tokenizer vs the treebank's tokens ({compared} sentences with text): {100.0 * exact / compared:F1} % of sentences identical, token precision {precision * 100:F2} %, recall {recall * 100:F2} %");
        foreach (var (kind, m) in new[] { ("fc", fc), ("attention", attn) })
        {
            using var tagger = m.CreateTagger();
            var sw = Stopwatch.StartNew();
            var (acc, words) = Evaluate(tagger, data);
            sw.Stop();
            output.WriteLine($"  {Label(kind),-16} UPOS accuracy {acc * 100:F2} %   ({words / sw.Elapsed.TotalSeconds / 1000:F0} k words/s, 1 thread)");
        }
        return 0;
    }

    private static string Label(string kind) => kind == "fc" ? "FC-only" : "self-attention";

    /// <summary>Sentences of the demo: the tutorial's example first, then other words whose tag depends on context.</summary>
    public static readonly string[] DemoSentences =
    [
        "I saw a saw.",
        "Please book a room and bring a book.",
        "They refuse to permit us to obtain the refuse permit.",
        "Time flies like an arrow.",
    ];

    /// <summary>The EWT test set: <c>$FASTATTN_EWT</c>, or <c>shared/data/ud-english-ewt</c> above the working folder or the program; null when absent.</summary>
    public static string? FindTreebankTestSet()
    {
        var env = Environment.GetEnvironmentVariable("FASTATTN_EWT");
        if (!string.IsNullOrEmpty(env) && File.Exists(Path.Combine(env, "en_ewt-ud-test.conllu"))) return Path.Combine(env, "en_ewt-ud-test.conllu");
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var d = new DirectoryInfo(start); d != null; d = d.Parent)
            {
                string p = Path.Combine(d.FullName, "shared", "data", "ud-english-ewt", "en_ewt-ud-test.conllu");
                if (File.Exists(p)) return p;
            }
        return null;
    }

    /// <summary><c>fastattn demo</c>: the tutorial's story in a few lines.</summary>
    public static int Demo(string? folder, TextWriter output)
    {
        using var fc = LoadModel("fc", folder);
        using var attn = LoadModel("attention", folder);
        using var tf = fc.CreateTagger();
        using var ta = attn.CreateTagger();
        output.WriteLine("Part-of-speech tagging, the tutorial's task: a model that sees each word alone must give both \"saw\" the same");
        output.WriteLine("tag; self-attention lets every word look at the whole sentence. Both models: trained on UD English-EWT (libtorch),");
        output.WriteLine("run by FastAttn.");
        foreach (var s in DemoSentences)
        {
            var a = tf.Tag(s);
            var b = ta.Tag(s);
            var widths = a.Select((t, i) => Math.Max(t.Word.Length, Math.Max(t.Tag.Length, b[i].Tag.Length)) + 1).ToArray();
            string Row(string label, Func<int, string> cell) => $"  {label,-15}" + string.Concat(widths.Select((w, i) => cell(i).PadRight(w)));
            output.WriteLine();
            output.WriteLine(Row("", i => a[i].Word));
            output.WriteLine(Row("FC-only", i => a[i].Tag));
            output.WriteLine(Row("self-attention", i => b[i].Tag));
            if (a.Where((t, i) => t.Tag != b[i].Tag).Any()) output.WriteLine(Row("", i => a[i].Tag != b[i].Tag ? "^" : ""));
        }
        output.WriteLine();
        string? ewt = FindTreebankTestSet();
        if (ewt != null)
        {
            // the treebank is here: measure rather than quote
            var data = ConllU.Read(ewt);
            var (af, words) = Evaluate(tf, data);
            var (aa, _) = Evaluate(ta, data);
            output.WriteLine($"  EWT test-set UPOS accuracy, measured now on {words:N0} words ({ewt}): FC-only {af * 100:F2} %, self-attention {aa * 100:F2} %");
        }
        else
        {
            string Acc(PosTagModel m) => m.Metadata.TryGetValue("test_accuracy", out var v) && double.TryParse(v, System.Globalization.CultureInfo.InvariantCulture, out var x) ? $"{x * 100:F2} %" : "n/a";
            output.WriteLine($"  EWT test-set UPOS accuracy as recorded in the model files at training time (treebank not found here; set");
            output.WriteLine($"  FASTATTN_EWT to its folder to measure it): FC-only {Acc(fc)}, self-attention {Acc(attn)}");
        }
        const string Twenty = "The committee said on Monday that it would n't approve the new budget until the mayor explains the cuts .";
        output.WriteLine($"  FastAttn latency per 20-token sentence, 1 thread: FC-only {Latency(tf, Twenty):F1} µs, self-attention {Latency(ta, Twenty):F1} µs (median)");
        return 0;
    }

    /// <summary>Median µs to tag the text with the span overload (tokenizer included).</summary>
    public static double Latency(PosTagger tagger, string text)
    {
        var tokens = new Range[64];
        var tags = new int[64];
        // warm up long enough for tiered compilation to reach its optimised code
        var warm = Stopwatch.StartNew();
        while (warm.ElapsedMilliseconds < 700) tagger.Tag(text, tokens, tags);
        var times = new double[301];
        for (int r = 0; r < times.Length; r++)
        {
            long t0 = Stopwatch.GetTimestamp();
            for (int i = 0; i < 10; i++) tagger.Tag(text, tokens, tags);
            times[r] = Stopwatch.GetElapsedTime(t0).TotalMicroseconds / 10;
        }
        Array.Sort(times);
        return times[times.Length / 2];
    }
}
