using System.Text;
using FastAttn.Cli;
using FastAttn.Embeddings;
using FastAttn.IO;
using FastAttn.Tests.IO;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// A sentence-transformers folder (modules.json, 1_Pooling/config.json, sentence_bert_config.json) around the tiny BERT:
/// the pooling, normalisation and length it states are used where the caller leaves them open, given settings win, and
/// every malformed or unsupported file is an <see cref="InvalidDataException"/> naming it. Also the <c>embed</c> and
/// <c>search</c> commands on such folders.
/// </summary>
public class SentenceTransformersFolderTests
{
    private const string Text = "the cafe owner paid for books hello world here new xy a don t the cafe";   // 18 pieces with [CLS] and [SEP]

    private const string Modules = """
        [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
         {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
         {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
        """;

    private static string PoolingJson(bool cls, bool mean, int dim = BertModelTests.H, string extra = "") =>
        $$"""{"word_embedding_dimension": {{dim}}, "pooling_mode_cls_token": {{(cls ? "true" : "false")}}, "pooling_mode_mean_tokens": {{(mean ? "true" : "false")}}, "pooling_mode_max_tokens": false, "pooling_mode_mean_sqrt_len_tokens": false{{extra}}}""";

    /// <summary>The tiny BERT, its vocabulary and (unless null) the sentence-transformers files, in <paramref name="sub"/> of the folder for the model.</summary>
    private static void WriteFolder(TempDir dir, string? modules = Modules, string? pooling = null, string? sbert = """{"max_seq_length": 6, "do_lower_case": false}""", string sub = "")
    {
        string at = Path.Combine(dir.Path, sub);
        Directory.CreateDirectory(at);
        var w = BertModelTests.Checkpoint();
        SafeTensorsWriter.Write(Path.Combine(at, "model.safetensors"), w.Select(kv => new SafeTensorsWriter.Entry(kv.Key, kv.Value.Data, kv.Value.Shape)));
        File.WriteAllText(Path.Combine(at, "config.json"), BertModelTests.ConfigJson());
        File.WriteAllText(Path.Combine(at, "vocab.txt"), string.Join('\n', TokenizerRulesTests.Vocab[..BertModelTests.Vocab]) + "\n");
        if (modules != null) File.WriteAllText(dir.File("modules.json"), modules);
        if (pooling != null)
        {
            Directory.CreateDirectory(dir.File("1_Pooling"));
            File.WriteAllText(Path.Combine(dir.Path, "1_Pooling", "config.json"), pooling);
        }
        if (sbert != null) File.WriteAllText(dir.File("sentence_bert_config.json"), sbert);
    }

    /// <summary>The same text through an embedder with every setting stated.</summary>
    private static float[] Explicit(string folder, Pooling pooling, bool normalize, int maxTokens)
    {
        using var e = SentenceEmbedder.Load(folder, options: new SentenceEmbedderOptions { Pooling = pooling, Normalize = normalize, MaxTokensPerText = maxTokens });
        return e.Encode(Text);
    }

    [Fact]
    public void FolderSettings_AreUsed_WhereTheCallerLeavesThemOpen()
    {
        using var dir = new TempDir();
        WriteFolder(dir, pooling: PoolingJson(cls: true, mean: false));
        var st = SentenceTransformersConfig.Read(dir.Path)!;
        Assert.Equal(new SentenceTransformersConfig { Pooling = Pooling.Cls, Normalize = true, MaxSeqLength = 6, Dimension = BertModelTests.H, TransformerPath = "" }, st);

        using (var e = SentenceEmbedder.Load(dir.Path))
        {
            Assert.Equal((Pooling?)Pooling.Cls, e.Options.Pooling);
            Assert.Equal(true, e.Options.Normalize);
            Assert.Equal(6, e.Options.MaxTokensPerText);
            var v = e.Encode(Text);
            Assert.Equal(Explicit(dir.Path, Pooling.Cls, true, 6), v);
            Assert.Equal(1.0, Math.Sqrt(v.Sum(x => (double)x * x)), 5);
        }
        // settings given win; the others still come from the folder
        using (var e = SentenceEmbedder.Load(dir.Path, options: new SentenceEmbedderOptions { Pooling = Pooling.Mean, Threads = 1 }))
        {
            Assert.Equal(Explicit(dir.Path, Pooling.Mean, true, 6), e.Encode(Text));
            Assert.NotEqual(Explicit(dir.Path, Pooling.Cls, true, 6), e.Encode(Text));
        }
        using (var e = SentenceEmbedder.Load(dir.Path, options: new SentenceEmbedderOptions { Normalize = false, MaxTokensPerText = 12 }))
            Assert.Equal(Explicit(dir.Path, Pooling.Cls, false, 12), e.Encode(Text));
        // the same folder without its sentence-transformers files: mean, not normalised, the model's positions
        foreach (var f in new[] { "modules.json", "sentence_bert_config.json" }) File.Delete(dir.File(f));
        Directory.Delete(dir.File("1_Pooling"), true);
        Assert.Null(SentenceTransformersConfig.Read(dir.Path));
        using (var e = SentenceEmbedder.Load(dir.Path))
        {
            Assert.Equal((Pooling?)Pooling.Mean, e.Options.Pooling);
            Assert.Equal(false, e.Options.Normalize);
            Assert.Equal(BertModelTests.MaxPos, e.Options.MaxTokensPerText == 0 ? BertModelTests.MaxPos : e.Options.MaxTokensPerText);
            Assert.Equal(Explicit(dir.Path, Pooling.Mean, false, 0), e.Encode(Text));
        }
    }

    [Fact]
    public void LonePoolingConfig_OldTransformerSubfolder_AndALengthPastThePositions()
    {
        using (var dir = new TempDir())
        {
            // no modules.json: 1_Pooling/config.json alone states the pooling; nothing normalises
            WriteFolder(dir, modules: null, pooling: PoolingJson(cls: false, mean: true), sbert: """{"max_seq_length": 4096}""");
            using var e = SentenceEmbedder.Load(dir.Path);
            Assert.Equal((Pooling?)Pooling.Mean, e.Options.Pooling);
            Assert.Equal(false, e.Options.Normalize);
            Assert.Equal(BertModelTests.MaxPos, e.Options.MaxTokensPerText);   // 4096 cut to the model's 16 positions
            Assert.Equal(Explicit(dir.Path, Pooling.Mean, false, BertModelTests.MaxPos), e.Encode(Text));
        }
        using (var dir = new TempDir())
        {
            // the older layout: the transformer's files in 0_Transformer/, sentence_bert_config.json beside them
            WriteFolder(dir, modules: Modules.Replace("\"path\": \"\"", "\"path\": \"0_Transformer\""), pooling: PoolingJson(cls: true, mean: false), sbert: null, sub: "0_Transformer");
            File.WriteAllText(Path.Combine(dir.Path, "0_Transformer", "sentence_bert_config.json"), """{"max_seq_length": 7}""");
            using var e = SentenceEmbedder.Load(dir.Path);
            Assert.Equal((Pooling?)Pooling.Cls, e.Options.Pooling);
            Assert.Equal(7, e.Options.MaxTokensPerText);
            Assert.Equal(Explicit(Path.Combine(dir.Path, "0_Transformer"), Pooling.Cls, true, 7), e.Encode(Text));
        }
    }

    public static TheoryData<string, string?, string?, string> BadFolders() => new()
    {
        { "not JSON", "[{", null, "not valid JSON" },
        { "modules not an array", """{"type": "x"}""", null, "not a JSON array" },
        { "module without type", """[{"path": ""}]""", null, "no 'type'" },
        { "path leaves the folder", Modules.Replace("1_Pooling", "../1_Pooling"), null, "leaves the model folder" },
        { "absolute path", Modules.Replace("1_Pooling", "/etc"), null, "leaves the model folder" },
        { "a Dense module", Modules.Replace("models.Normalize", "models.Dense"), null, "Dense" },
        { "no pooling module", """[{"path": "", "type": "sentence_transformers.models.Transformer"}]""", null, "no Pooling module" },
        { "pooling before the transformer", """[{"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]""", null, "not supported" },
        { "pooling config missing", Modules, "<none>", "config.json is missing" },
        { "max and mean pooling", Modules, PoolingJson(false, true, extra: ", \"pooling_mode_max_tokens\": true").Replace("\"pooling_mode_max_tokens\": false,", ""), "mean_tokens + max_tokens" },
        { "prompt left out", Modules, PoolingJson(false, true, extra: ", \"include_prompt\": false"), "include_prompt" },
        { "cls and mean", Modules, PoolingJson(true, true), "cls_token + mean_tokens" },
        { "no pooling mode", Modules, PoolingJson(false, false), "pooling none" },
        { "mode not a boolean", Modules, PoolingJson(true, false).Replace("\"pooling_mode_mean_tokens\": false", "\"pooling_mode_mean_tokens\": 1"), "not true or false" },
        { "dimension not the model's", Modules, PoolingJson(true, false, dim: 7), "word_embedding_dimension 7" },
        { "dimension not a number", Modules, PoolingJson(true, false).Replace($"\"word_embedding_dimension\": {BertModelTests.H}", "\"word_embedding_dimension\": \"24\""), "word_embedding_dimension is not" },
    };

    [Theory]
    [MemberData(nameof(BadFolders))]
    public void MalformedOrUnsupportedFiles_AreInvalidData_NamingTheProblem(string what, string? modules, string? pooling, string message)
    {
        using var dir = new TempDir();
        WriteFolder(dir, modules: modules, pooling: pooling == "<none>" ? null : pooling ?? PoolingJson(cls: true, mean: false));
        var ex = Assert.Throws<InvalidDataException>(() => SentenceEmbedder.Load(dir.Path));
        Assert.True(ex.Message.Contains(message, StringComparison.Ordinal), $"{what}: {ex.Message}");
    }

    [Theory]
    [InlineData("""{"max_seq_length": 2}""")]
    [InlineData("""{"max_seq_length": "256"}""")]
    [InlineData("""{"max_seq_length": 1e12}""")]
    [InlineData("""[256]""")]
    public void BadMaxSeqLength_IsInvalidData(string sbert)
    {
        using var dir = new TempDir();
        WriteFolder(dir, pooling: PoolingJson(cls: true, mean: false), sbert: sbert);
        var ex = Assert.Throws<InvalidDataException>(() => SentenceTransformersConfig.Read(dir.Path));
        Assert.Contains("sentence_bert_config.json", ex.Message);
    }

    [Fact]
    public void InvalidUtf8InsideAJsonString_IsInvalidData()
    {
        // the JSON reader accepts the structure; the bytes inside a string would only fail when the string is read
        using var dir = new TempDir();
        WriteFolder(dir, pooling: PoolingJson(cls: true, mean: false));
        var bytes = Encoding.UTF8.GetBytes(Modules);
        bytes[Array.IndexOf(bytes, (byte)'T')] = 0xB6;
        File.WriteAllBytes(dir.File("modules.json"), bytes);
        Assert.Contains("not valid UTF-8", Assert.Throws<InvalidDataException>(() => SentenceEmbedder.Load(dir.Path)).Message);
    }

    [Fact]
    public void AnOversizedFile_IsRefusedBeforeParsing()
    {
        using var dir = new TempDir();
        WriteFolder(dir, pooling: PoolingJson(cls: true, mean: false));
        File.WriteAllText(dir.File("modules.json"), "[" + new string(' ', 2 << 20) + "]");
        Assert.Contains("bytes", Assert.Throws<InvalidDataException>(() => SentenceTransformersConfig.Read(dir.Path)).Message);
    }

    // ---- the command line ----

    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = CliApp.Run(args, o, e, () => new MemoryStream(Encoding.UTF8.GetBytes("hello world\nthe cafe\n")));
        return (code, o.ToString(), e.ToString());
    }

    /// <summary>Printed with 7 significant digits: within 5·10⁻⁷ of the value relative to its size (1·10⁻⁶ allowed).</summary>
    private static void Close(float expect, float printed) =>
        Assert.True(Math.Abs(expect - printed) <= 1e-6 * Math.Max(Math.Abs(expect), 1e-3), $"{printed} printed for {expect}");

    private static float[] Parse(string line) => [.. line.Split(' ').Select(x => float.Parse(x, System.Globalization.CultureInfo.InvariantCulture))];

    [Fact]
    public void EmbedCommand_AutoPooling_FollowsTheFolder_AndFlagsWin()
    {
        using var dir = new TempDir();
        WriteFolder(dir, pooling: PoolingJson(cls: true, mean: false));
        var auto = Run("embed", "--model", dir.Path, Text);
        Assert.True(auto.Code == 0, auto.Err);
        var v = Parse(auto.Out.Trim());
        var expect = Explicit(dir.Path, Pooling.Cls, true, 6);
        Assert.Equal(expect.Length, v.Length);
        for (int i = 0; i < v.Length; i++) Close(expect[i], v[i]);
        var mean = Parse(Run("embed", "--model", dir.Path, "--pooling", "mean", "--max-tokens", "12", Text).Out.Trim());
        var expectMean = Explicit(dir.Path, Pooling.Mean, true, 12);
        for (int i = 0; i < v.Length; i++) Close(expectMean[i], mean[i]);
    }

    [Fact]
    public void EmbedCommand_Dimensions_CutsThenNormalises_AndRefusesTooMany()
    {
        using var dir = new TempDir();
        WriteFolder(dir, pooling: PoolingJson(cls: false, mean: true));
        var r = Run("embed", "--model", dir.Path, "--dimensions", "10", Text);
        Assert.True(r.Code == 0, r.Err);
        var v = Parse(r.Out.Trim());
        Assert.Equal(10, v.Length);
        // the folder normalises: the full vector's first 10 values, scaled to unit length
        var full = Explicit(dir.Path, Pooling.Mean, false, 6)[..10];
        double n = Math.Sqrt(full.Sum(x => (double)x * x));
        for (int i = 0; i < 10; i++) Close((float)(full[i] / n), v[i]);
        var bad = Run("embed", "--model", dir.Path, "--dimensions", "1000", Text);
        Assert.Equal(2, bad.Code);
        Assert.Single(bad.Err.Trim().Split('\n'));
        // the library's message, without what .NET appends for programmers
        Assert.Contains("1..", bad.Err);
        Assert.Contains("1000", bad.Err);                              // the value given, which the message did not name
        Assert.DoesNotContain("(Parameter '", bad.Err);
        Assert.DoesNotContain("Actual value was", bad.Err);
    }

    [Fact]
    public async Task Prompts_TheDefaultIsPutBeforeEveryText_AGivenOneWins()
    {
        using var dir = new TempDir();
        WriteFolder(dir, pooling: PoolingJson(cls: false, mean: true));
        File.WriteAllText(dir.File("config_sentence_transformers.json"), """
            {"__version__": {"sentence_transformers": "3.0.1"}, "prompts": {"query": "hello world ", "document": ""}, "default_prompt_name": "query", "similarity_fn_name": "cosine"}
            """);
        const string text = "the cafe owner";
        using var byDefault = SentenceEmbedder.Load(dir.Path);
        Assert.Equal("hello world ", byDefault.Prompts["query"]);
        Assert.Equal("hello world ", byDefault.Options.Prompt);
        using var none = SentenceEmbedder.Load(dir.Path, options: new SentenceEmbedderOptions { Prompt = "" });
        var expect = none.Encode("hello world " + text);
        Assert.Equal(expect, byDefault.Encode(text));
        Assert.NotEqual(expect, none.Encode(text));
        // the batcher's text path too
        using (var batcher = new EmbeddingBatcher(byDefault.Model, byDefault.Tokenizer, byDefault.Options))
            Assert.Equal(expect, await batcher.EncodeAsync(text));
        // a default that names no prompt, or prompts that are not texts: refused by name
        File.WriteAllText(dir.File("config_sentence_transformers.json"), """{"prompts": {"query": "q: "}, "default_prompt_name": "passage"}""");
        Assert.Contains("default_prompt_name", Assert.Throws<InvalidDataException>(() => SentenceTransformersConfig.Read(dir.Path)).Message);
        File.WriteAllText(dir.File("config_sentence_transformers.json"), """{"prompts": {"query": 3}}""");
        Assert.Contains("query", Assert.Throws<InvalidDataException>(() => SentenceTransformersConfig.Read(dir.Path)).Message);
        // prompts without a default: none is put, the names are listed
        File.WriteAllText(dir.File("config_sentence_transformers.json"), """{"prompts": {"query": "q: "}, "default_prompt_name": null}""");
        using var listed = SentenceEmbedder.Load(dir.Path);
        Assert.Equal("", listed.Options.Prompt);
        Assert.Equal("q: ", listed.Prompts["query"]);
    }

    [Fact]
    public void PromptFlags_PutTheNamedPrompt_SearchOnBothSides_UnknownNameRefused()
    {
        using var dir = new TempDir();
        WriteFolder(dir, pooling: PoolingJson(cls: false, mean: true));
        File.WriteAllText(dir.File("config_sentence_transformers.json"), """{"prompts": {"query": "hello ", "document": "world "}, "default_prompt_name": "query"}""");
        using var none = SentenceEmbedder.Load(dir.Path, options: new SentenceEmbedderOptions { Prompt = "" });
        // embed: the folder's default without a flag; the named one with it
        var byDefault = Parse(Run("embed", "--model", dir.Path, "the cafe").Out.Trim());
        var named = Parse(Run("embed", "--model", dir.Path, "--prompt", "document", "the cafe").Out.Trim());
        var wantDefault = none.Encode("hello the cafe");
        var wantNamed = none.Encode("world the cafe");
        for (int i = 0; i < byDefault.Length; i++) { Close(wantDefault[i], byDefault[i]); Close(wantNamed[i], named[i]); }
        // search: the query with its prompt, the lines with theirs — the line equal to "prompted query" ranks first at cosine 1
        string corpus = dir.File("corpus.txt");
        File.WriteAllText(corpus, "books here\nnew xy\n");
        var s = Run("search", "--model", dir.Path, "--corpus", corpus, "--top", "1", "--prompt", "document", "--document-prompt", "query", "books", "here");
        Assert.True(s.Code == 0, s.Err);
        var q = none.Encode("world books here");
        var d = none.Encode("hello books here");
        Assert.StartsWith(Vectors.Cosine(q, d).ToString("F4", System.Globalization.CultureInfo.InvariantCulture) + "  books here", s.Out);
        var bad = Run("embed", "--model", dir.Path, "--prompt", "passage", "the cafe");
        Assert.Equal(2, bad.Code);
        Assert.Contains("query, document", bad.Err);
        Assert.Single(bad.Err.Trim().Split('\n'));
    }

    [Fact]
    public void EmbedCommand_FileToNpy_StdinAndSearch()
    {
        using var dir = new TempDir();
        WriteFolder(dir, modules: null, sbert: null);   // a plain Hugging Face folder: mean pooling
        string lines = dir.File("lines.txt"), npy = dir.File("v.npy");
        File.WriteAllText(lines, "hello world\nthe cafe\n\nbooks\n");
        var r = Run("embed", "--model", dir.Path, "--file", lines, "--output", npy, "--normalize");
        Assert.True(r.Code == 0, r.Err);
        var (shape, data) = Npy.Read(npy);
        Assert.Equal([4L, BertModelTests.H], shape);
        using (var e = SentenceEmbedder.Load(dir.Path, options: new SentenceEmbedderOptions { Normalize = true }))
            Assert.Equal(e.Encode(["hello world", "the cafe", "", "books"]).SelectMany(x => x).ToArray(), data);
        var fromStdin = Run("embed", "--model", dir.Path, "--file", "-");
        Assert.Equal(2, fromStdin.Out.Trim().Split('\n').Length);
        // search ranks the corpus line equal to the query first, with cosine 1
        var s = Run("search", "--model", dir.Path, "--corpus", lines, "--top", "2", "the", "cafe");
        Assert.True(s.Code == 0, s.Err);
        Assert.StartsWith("1.0000  the cafe", s.Out.Split('\n')[0]);
    }

    [Theory]
    [InlineData("--pooling", "median")]
    [InlineData("--max-tokens", "2")]
    [InlineData("--threads", "0")]
    [InlineData("--model", "/nonexistent/folder")]
    [InlineData("--dense", "")]
    public void EmbedCommand_BadInput_OneLine_Exit2_NoOutputFile(string flag, string value)
    {
        using var dir = new TempDir();
        WriteFolder(dir, pooling: PoolingJson(cls: true, mean: false));
        if (flag == "--dense") File.WriteAllText(dir.File("modules.json"), Modules.Replace("models.Normalize", "models.Dense"));
        string npy = dir.File("out.npy");
        var args = new List<string> { "embed", "--model", dir.Path, "--output", npy, Text };
        if (flag == "--model") args[2] = value;
        else if (flag != "--dense") args.AddRange([flag, value]);
        var r = Run([.. args]);
        Assert.True(r.Code == 2, $"exit {r.Code}: {r.Err}");
        var lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.DoesNotContain("   at ", r.Err);
        Assert.False(File.Exists(npy));
        Assert.Empty(Directory.GetFiles(dir.Path, "out.npy*"));
    }
}
