using System.Text;
using FastAttn.Cli;
using FastAttn.IO;
using FastAttn.Tests.IO;
using FastAttn.Tests.Tagging;

namespace FastAttn.Tests.Cli;

/// <summary>The <c>fastattn</c> command line run in-process: results, and bad input → one line on stderr, exit code 2, nothing written.</summary>
public class CliTests
{
    private static string Models => Path.GetDirectoryName(TaggerTests.ModelPath("attention"))!;

    private static (int Code, string Out, string Err) Run(params string[] args) => RunWithInput(null, args);

    private static (int Code, string Out, string Err) RunWithInput(byte[]? stdin, params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = CliApp.Run(args, o, e, () => new MemoryStream(stdin ?? []));
        return (code, o.ToString(), e.ToString());
    }

    /// <summary>Bad input: exit code 2, exactly one line on stderr (no stack trace), nothing on stdout.</summary>
    private static string AssertBadInput((int Code, string Out, string Err) r)
    {
        Assert.True(r.Code == 2, $"exit code {r.Code}; stderr: {r.Err}");
        var lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.DoesNotContain("   at ", r.Err);
        Assert.StartsWith("fastattn", lines[0]);
        return lines[0];
    }

    [Fact]
    public void TagPrintsWordSlashTag_QuotedOrNot()
    {
        var r = Run("tag", "I saw a saw.", "--models", Models);
        Assert.Equal(0, r.Code);
        Assert.Equal("I/PRON saw/VERB a/DET saw/NOUN ./PUNCT", r.Out.Trim());
        // several words without quotes are one text
        Assert.Equal(r.Out, Run("tag", "I", "saw", "a", "saw.", "--models", Models).Out);
    }

    [Fact]
    public void TagFileTagsEachLineAndKeepsBlankLines_AlsoFromStandardInput()
    {
        using var dir = new TempDir();
        string f = dir.File("s.txt");
        File.WriteAllText(f, "I saw a saw.\n\nDon't go.\n");
        foreach (var r in new[] { Run("tag", "--file", f, "--models", Models), RunWithInput(File.ReadAllBytes(f), "tag", "--file", "-", "--models", Models) })
        {
            Assert.Equal(0, r.Code);
            var lines = r.Out.Split('\n').Select(l => l.TrimEnd('\r')).ToArray();
            Assert.Equal("I/PRON saw/VERB a/DET saw/NOUN ./PUNCT", lines[0]);
            Assert.Equal("", lines[1]);
            Assert.StartsWith("Do/AUX n't/PART go/VERB", lines[2]);
        }
    }

    [Fact]
    public void TagRejectsTextThatIsNotUtf8()
    {
        using var dir = new TempDir();
        string f = dir.File("latin1.txt");
        File.WriteAllBytes(f, Encoding.Latin1.GetBytes("Caf\u00e9 au lait.\n"));
        Assert.Contains("not valid UTF-8", AssertBadInput(Run("tag", "--file", f, "--models", Models)));
        Assert.Contains("not valid UTF-8", AssertBadInput(RunWithInput(Encoding.Latin1.GetBytes("na\u00efve"), "tag", "--file", "-", "--models", Models)));
    }

    [Fact]
    public void UsageErrorsAreBadInput()
    {
        AssertBadInput(Run("tag", "--models", Models));                                   // neither text nor file
        AssertBadInput(Run("tag", "x", "--model", "/nonexistent/model.safetensors"));      // a model that is not there
        AssertBadInput(Run("tag", "--file", "/nonexistent.txt", "--models", Models));
        AssertBadInput(Run("eval", "--conllu", "/nonexistent.conllu", "--models", Models));
        AssertBadInput(Run("run", "--bogus"));
        AssertBadInput(Run("nosuchcommand"));
        AssertBadInput(Run("bench", "--seconds", "-1"));
    }

    [Fact]
    public void AMistypedOptionIsAnError_NotText_AndDashedTextGoesAfterDoubleDash()
    {
        // the free-text arguments take any word, so without the check a typo such as --modle was tagged or embedded as input
        Assert.Contains("'--modle'", AssertBadInput(Run("tag", "--modle", "fc", "I", "saw", "--models", Models)));
        Assert.Contains("'-x'", AssertBadInput(Run("tag", "I", "saw", "-x", "--models", Models)));
        Assert.Contains("'--normalise'", AssertBadInput(Run("embed", "--model", "/nonexistent", "--normalise", "hello")));
        Assert.Contains("'--topp'", AssertBadInput(Run("search", "--model", "/nonexistent", "--corpus", "c.txt", "--topp", "3", "q")));
        // after --, every word is text; words that only start with a dash (a number, a lone dash) are text anyway
        var r = Run("tag", "--models", Models, "--", "--modle", "-x");
        Assert.Equal(0, r.Code);
        Assert.StartsWith("--/PUNCT modle/", r.Out);
        Assert.Equal(0, Run("tag", "-5", "degrees", "-", "cold", "--models", Models).Code);
        // an option's value is not text
        Assert.Equal(0, Run("tag", "I", "saw", "--model", "fc", "--models", Models).Code);
    }

    /// <summary>
    /// Random command lines (seeded) from the commands, their options and awkward values — missing, non-UTF-8 and
    /// directory paths, negative, huge and non-numeric numbers, empty and control-character text, a lone surrogate, a dash,
    /// '--' — end in exit code 0 or 2, never 1 (an internal error); a code 2 prints exactly one line and no stack trace; and
    /// a failed run leaves neither its output file nor a temporary one. (Run ad hoc with 1,500 lines that also loaded
    /// all-MiniLM-L6-v2: no finding.)
    /// </summary>
    [Fact]
    public void RandomCommandLines_EndInSuccessOrOneLineOfBadInput_AndLeaveNoPartialFile()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("c.txt"), "a cat\nthe dog sat\n\nx\n");
        File.WriteAllBytes(dir.File("bad.txt"), [0xff, 0xfe, 0x41]);
        string output = dir.File("out.npy");
        string[] commands = ["tag", "eval", "embed", "search", "rank", "run", "info", "nosuch", ""];
        string[] options = ["--model", "--models", "--file", "--precision", "--threads", "--max-tokens", "--dimensions", "--pooling",
            "--output", "--corpus", "--top", "--prompt", "--adapter", "--heads", "--normalize", "--vocab", "--input", "--conllu",
            "--lengths", "--key-valid", "--eps", "--prefix", "--causal", "--activation", "--norm-first", "--", "-x"];
        string[] values = ["attention", "fc", "int8", "bf16", "f32", "0", "-1", "1", "2", "99999", "1e9", "NaN", "", " ", "-", "--",
            "/nonexistent", dir.Path, dir.File("c.txt"), dir.File("bad.txt"), output, Models, "I saw a saw.", "mean", "nope",
            "1,2", "a,b", "\u0000", "\ud800", new string('a', 3000), "-5", "gelu"];
        var rnd = new Random(20261203);
        var codes = new Dictionary<int, int>();
        for (int i = 0; i < 300; i++)
        {
            var args = new List<string> { commands[rnd.Next(commands.Length)] };
            for (int j = rnd.Next(0, 7); j > 0; j--)
            {
                if (rnd.Next(3) > 0) args.Add(options[rnd.Next(options.Length)]);
                args.Add(values[rnd.Next(values.Length)]);
            }
            if (args[0] == "") args.RemoveAt(0);
            var r = Run([.. args]);
            string line = string.Join(" | ", args.Select(a => a.Length > 30 ? a[..30] + "…" : a));
            Assert.True(r.Code is 0 or 2, $"exit code {r.Code} for {line}: {r.Err}");
            if (r.Code == 2) AssertBadInput(r);
            Assert.DoesNotContain("   at ", r.Err);
            if (r.Code != 0) Assert.False(File.Exists(output), $"{line} failed and left {output}");
            File.Delete(output);
            Assert.Empty(Directory.GetFiles(dir.Path, ".*.tmp"));
            codes[r.Code] = codes.GetValueOrDefault(r.Code) + 1;
        }
        Assert.True(codes.GetValueOrDefault(2) > 100, "most random lines are bad input");
    }

    [Fact]
    public void EvalPrintsBothAccuracies_AndRejectsAnEmptyFile()
    {
        using var dir = new TempDir();
        string f = dir.File("a.conllu");
        File.WriteAllText(f, "# text = I saw a saw.\n1\tI\tI\tPRON\tPRP\t_\t2\tnsubj\t_\t_\n2\tsaw\tsee\tVERB\tVBD\t_\t0\troot\t_\t_\n"
            + "3\ta\ta\tDET\tDT\t_\t4\tdet\t_\t_\n4\tsaw\tsaw\tNOUN\tNN\t_\t2\tobj\t_\t_\n5\t.\t.\tPUNCT\t.\t_\t2\tpunct\t_\t_\n\n");
        var r = Run("eval", "--conllu", f, "--models", Models);
        Assert.Equal(0, r.Code);
        Assert.Contains("FC-only          UPOS accuracy 80.00 %", r.Out);       // the second "saw" is wrong
        Assert.Contains("self-attention   UPOS accuracy 100.00 %", r.Out);
        File.WriteAllText(f, "");
        Assert.Contains("no sentences", AssertBadInput(Run("eval", "--conllu", f, "--models", Models)));
        File.WriteAllText(f, "1\tonly\tthree\n");
        Assert.Contains("10 tab-separated columns", AssertBadInput(Run("eval", "--conllu", f, "--models", Models)));
    }

    [Fact]
    public void DemoTellsTheStory_AndSaysWhereTheAccuracyComesFrom()
    {
        var r = Run("demo", "--models", Models);
        Assert.Equal(0, r.Code);
        Assert.Contains("self-attention PRON VERB DET NOUN PUNCT", r.Out);
        Assert.Contains("FC-only        PRON VERB DET VERB PUNCT", r.Out);
        // measured when the treebank is found, otherwise quoted from the model files and said so
        Assert.True(r.Out.Contains("measured now on") || r.Out.Contains("as recorded in the model files"), r.Out);
        Assert.Contains("µs", r.Out);
    }

    private static string EncoderFile(TempDir dir, string? metadata = null)
    {
        // a one-layer nn.TransformerEncoder (d 8, 2 heads, ff 16) under the prefix "encoder."
        string path = dir.File(metadata == null ? "enc.safetensors" : "enc-meta.safetensors");
        var rnd = new Random(3);
        SafeTensorsWriter.Entry T(string name, params long[] shape)
        {
            long n = shape.Aggregate(1L, (a, b) => a * b);
            return new("encoder.layers.0." + name, Enumerable.Range(0, (int)n).Select(_ => (float)(rnd.NextDouble() - 0.5)).ToArray(), shape);
        }
        SafeTensorsWriter.Write(path,
        [
            T("self_attn.in_proj_weight", 24, 8), T("self_attn.in_proj_bias", 24), T("self_attn.out_proj.weight", 8, 8), T("self_attn.out_proj.bias", 8),
            T("linear1.weight", 16, 8), T("linear1.bias", 16), T("linear2.weight", 8, 16), T("linear2.bias", 8),
            T("norm1.weight", 8), T("norm1.bias", 8), T("norm2.weight", 8), T("norm2.bias", 8),
        ], metadata == null ? null : new Dictionary<string, string> { [EncoderMetadata.Key] = metadata });
        return path;
    }

    [Fact]
    public void RunUsesTheArchitectureAFileCarries_AndRejectsAContradictingFlag()
    {
        using var dir = new TempDir();
        string plain = EncoderFile(dir);
        string described = EncoderFile(dir, EncoderMetadata.Write(new TorchEncoderOptions { Heads = 2, Prefix = "encoder." }));
        string x = dir.File("x.npy"), y1 = dir.File("y1.npy"), y2 = dir.File("y2.npy");
        Npy.Write(x, Enumerable.Range(0, 5 * 8).Select(i => MathF.Sin(i)).ToArray(), 5, 8);
        // without metadata, --heads is required
        Assert.Contains("--heads", AssertBadInput(Run("run", "--model", plain, "--input", x, "--output", y1, "--prefix", "encoder")));
        Assert.False(File.Exists(y1));
        Assert.Equal(0, Run("run", "--model", plain, "--input", x, "--output", y1, "--prefix", "encoder", "--heads", "2").Code);
        // with metadata, nothing is needed and the answer is the same
        Assert.Equal(0, Run("run", "--model", described, "--input", x, "--output", y2).Code);
        Assert.Equal(Npy.Read(y1).Data, Npy.Read(y2).Data);
        // a flag that contradicts the file is refused, nothing written
        File.Delete(y2);
        Assert.Contains("contradicts", AssertBadInput(Run("run", "--model", described, "--input", x, "--output", y2, "--heads", "4")));
        Assert.Contains("contradicts", AssertBadInput(Run("run", "--model", described, "--input", x, "--output", y2, "--norm-first")));
        Assert.False(File.Exists(y2));
        // the bundled tagger file carries its architecture too
        var info = Run("info", "--model", TaggerTests.ModelPath("attention"));
        Assert.Equal(0, info.Code);
        Assert.Contains("heads=4 headDim=16 ff=256 post-norm", info.Out);
        Assert.Contains("--heads 2 contradicts", AssertBadInput(Run("info", "--model", TaggerTests.ModelPath("attention"), "--heads", "2")));
        // no line of info is longer than a screen's worth (the vocabulary metadata is clipped)
        Assert.All(info.Out.Split('\n'), l => Assert.True(l.Length < 300, $"{l.Length}-character line"));
    }

    [Fact]
    public void Precision_Int8AndBf16_RunTagAndEval_CloseToFp32()
    {
        using var dir = new TempDir();
        string model = EncoderFile(dir);
        string x = dir.File("x.npy");
        Npy.Write(x, Enumerable.Range(0, 5 * 8).Select(i => MathF.Sin(i)).ToArray(), 5, 8);
        string[] Args(string y, string p) => ["run", "--model", model, "--input", x, "--output", dir.File(y), "--prefix", "encoder", "--heads", "2", "--precision", p];
        Assert.Equal(0, Run(Args("f32.npy", "f32")).Code);
        Assert.Equal(0, Run(Args("int8.npy", "int8")).Code);
        Assert.Equal(0, Run(Args("bf16.npy", "bf16")).Code);
        var f32 = Npy.Read(dir.File("f32.npy")).Data;
        foreach (var (file, tol) in new[] { ("int8.npy", 0.1), ("bf16.npy", 0.02) })
        {
            var got = Npy.Read(dir.File(file)).Data;
            Assert.NotEqual(f32, got);                          // a different computation really ran
            for (int i = 0; i < got.Length; i++) Assert.True(Math.Abs(got[i] - f32[i]) < tol, $"{file}[{i}]: {got[i]} vs {f32[i]}");
        }
        var tag = Run("tag", "--precision", "int8", "I saw a saw.");
        Assert.Equal(0, tag.Code);
        Assert.Equal("I/PRON saw/VERB a/DET saw/NOUN ./PUNCT", tag.Out.Trim());
        AssertBadInput(Run("tag", "--precision", "fp8", "I saw a saw."));
    }

    [Fact]
    public void RunRejectsBadArguments_WithOneLine_AndWritesNothing()
    {
        using var dir = new TempDir();
        string model = EncoderFile(dir);
        string x = dir.File("x.npy"), y = dir.File("y.npy");
        Npy.Write(x, new float[5 * 8], 5, 8);
        string[] Args(params string[] extra) => ["run", "--model", model, "--input", x, "--output", y, "--prefix", "encoder", "--heads", "2", .. extra];
        AssertBadInput(Run(Args("--lengths", "99999999999")));
        AssertBadInput(Run(Args("--lengths", "2,x")));
        AssertBadInput(Run(Args("--lengths", "2,2")));                      // do not add up to 5 tokens
        AssertBadInput(Run(Args("--eps", "-1")));
        AssertBadInput(Run(Args("--eps", "NaN")));
        AssertBadInput(Run(Args("--threads", "0")));
        AssertBadInput(Run(Args("--activation", "swish")));
        Assert.Contains("--precision must be f32, int8 or bf16", AssertBadInput(Run(Args("--precision", "int4"))));
        AssertBadInput(Run("run", "--model", model, "--input", dir.Path, "--output", y, "--prefix", "encoder", "--heads", "2"));   // a directory as input
        AssertBadInput(Run("run", "--model", dir.Path, "--input", x, "--output", y, "--heads", "2"));                             // a directory as model
        Assert.False(File.Exists(y));
        AssertBadInput(Run("run", "--model", model, "--input", x, "--output", dir.Path, "--prefix", "encoder", "--heads", "2"));   // a directory as output
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp", SearchOption.AllDirectories));
        Assert.Empty(Directory.GetFiles(dir.Path, ".*", SearchOption.AllDirectories));
    }

    [Fact]
    public void NpyWriteToAnUnwritablePlace_LeavesNoPartialFile()
    {
        using var dir = new TempDir();
        string sub = Path.Combine(dir.Path, "missing-folder", "y.npy");
        var e = Assert.ThrowsAny<IOException>(() => Npy.Write(sub, new float[4], 2, 2));
        Assert.Contains("y.npy'", e.Message);           // the path given, not the temporary file's name
        Assert.DoesNotContain(".tmp", e.Message);
        Assert.False(File.Exists(sub));
        // a write that fails half-way (here: a shape that does not match is caught before; a failing stream is
        // simulated by AtomicFile's own test) leaves the old file intact
        string y = dir.File("y.npy");
        Npy.Write(y, [1, 2, 3, 4], 2, 2);
        Assert.Throws<ArgumentException>(() => Npy.Write(y, [1, 2, 3], 2, 2));
        Assert.Equal([1f, 2, 3, 4], Npy.Read(y).Data);
    }
}
