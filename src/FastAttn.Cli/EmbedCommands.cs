using System.Globalization;
using System.Text;
using FastAttn.Embeddings;
using FastAttn.IO;
using FastAttn.Tagging;

namespace FastAttn.Cli;

/// <summary>The sentence-embedding commands: embed texts, and search a corpus by similarity.</summary>
public static class EmbedCommands
{
    /// <summary>Options shared by embed and search.</summary>
    public sealed record ModelOptions(string Model, string? Vocab = null, string Pooling = "auto", int? Heads = null, int Threads = 1, int MaxTokens = 0, string? Precision = null,
        string? Adapter = null)
    {
        /// <summary>Keep the first N values of every vector (0 = all).</summary>
        public int Dimensions { get; init; }
        /// <summary>A prompt of the model folder, by name, before every text (embed) or before the query (search); null = the folder's default.</summary>
        public string? Prompt { get; init; }
        /// <summary>search: a prompt of the model folder, by name, before every corpus line; null = the folder's default.</summary>
        public string? DocumentPrompt { get; init; }
    }

    /// <summary>
    /// The text of prompt <paramref name="name"/> of the loaded folder to put before a text here; "" for null (then the
    /// embedder puts its own: the folder's default without prompt flags, nothing with them).
    /// </summary>
    private static string PromptText(SentenceEmbedder e, string? name, string flag) =>
        name == null ? ""
        : e.Prompts.TryGetValue(name, out var text) ? text
        : throw new CliInputException(e.Prompts.Count == 0 ? $"{flag} '{name}': the model folder names no prompts (config_sentence_transformers.json)."
            : $"{flag} '{name}' is not one of the folder's prompts: {string.Join(", ", e.Prompts.Keys)}.");

    private static SentenceEmbedder Load(ModelOptions o, bool normalize)
    {
        Pooling? pooling = o.Pooling.ToLowerInvariant() switch
        {
            "auto" => null,
            "mean" => Embeddings.Pooling.Mean,
            "cls" => Embeddings.Pooling.Cls,
            "pooler" => Embeddings.Pooling.Pooler,
            "max" => Embeddings.Pooling.Max,
            "mean-sqrt-len" => Embeddings.Pooling.MeanSqrtLength,
            "weighted-mean" => Embeddings.Pooling.WeightedMean,
            "last" => Embeddings.Pooling.LastToken,
            _ => throw new CliInputException($"--pooling must be auto, mean, cls, pooler, max, mean-sqrt-len, weighted-mean or last; it is '{o.Pooling}'."),
        };
        return SentenceEmbedder.Load(o.Model, o.Vocab,
            // named prompts are put before the texts here, so the embedder itself puts none
            new SentenceEmbedderOptions { Pooling = pooling, Normalize = normalize ? true : null, Threads = o.Threads, MaxTokensPerText = o.MaxTokens, MaxSessions = 1, Dimensions = o.Dimensions,
                Prompt = o.Prompt != null || o.DocumentPrompt != null ? "" : null },
            LoadOptions(o));
    }

    /// <summary>The checks every model command makes of its options, and the load options they give.</summary>
    private static BertLoadOptions LoadOptions(ModelOptions o)
    {
        if (o.Threads < 1 || o.Threads > Environment.ProcessorCount) throw new CliInputException($"--threads must be between 1 and {Environment.ProcessorCount}; it is {o.Threads}.");
        if (o.MaxTokens != 0 && o.MaxTokens < 3) throw new CliInputException($"--max-tokens must be at least 3; it is {o.MaxTokens}.");
        if (o.Heads is int h && h < 1) throw new CliInputException($"--heads must be at least 1; it is {h}.");
        if (o.Dimensions < 0) throw new CliInputException($"--dimensions must be 0 (all) or a positive width; it is {o.Dimensions}.");
        return new BertLoadOptions { Heads = o.Heads, Precision = CliInputException.ParsePrecision(o.Precision), Adapter = o.Adapter };
    }

    /// <summary>The texts of a UTF-8 file, one per line (<c>-</c> = standard input); every line is a text, empty ones too.</summary>
    private static List<string> ReadLines(string file, Func<Stream> stdin)
    {
        string body = file == "-" ? Utf8Text.ReadStream(stdin(), "standard input") : Utf8Text.ReadFile(file);
        return [.. Utf8Text.Lines(body)];
    }

    /// <summary><c>fastattn embed</c>: vectors of one text or of each line of a file, printed or written as <c>[n, dim]</c> float32 .npy.</summary>
    public static int Embed(ModelOptions o, string? text, string? file, bool normalize, string? output, TextWriter outw, Func<Stream> stdin)
    {
        if ((text == null) == (file == null)) throw new CliInputException("give either a text or --file F (--file - reads standard input).");
        if (output != null && Directory.Exists(output)) throw new CliInputException($"--output '{output}' is a directory.");
        var texts = text != null ? [text] : ReadLines(file!, stdin);
        if (texts.Count == 0) throw new CliInputException($"'{file}' holds no lines to embed.");
        using var embedder = Load(o, normalize);
        // an adapter's task instruction goes before every text, as the model's own encode(task=...) puts it; a named prompt likewise
        if (o.Adapter != null && embedder.Model.Config.AdapterInstruction(o.Adapter) is { Length: > 0 } instruction)
            texts = [.. texts.Select(t => instruction + t)];
        if (o.Prompt != null && PromptText(embedder, o.Prompt, "--prompt") is { Length: > 0 } prompt)
            texts = [.. texts.Select(t => prompt + t)];
        var vectors = new float[texts.Count * embedder.Dimension];
        embedder.Encode(texts, vectors);
        if (output != null)
        {
            Npy.Write(output, vectors, texts.Count, embedder.Dimension);
            outw.WriteLine($"wrote {texts.Count} × {embedder.Dimension} float32 to {output} ({embedder.Model.Source})");
            return 0;
        }
        var sb = new StringBuilder();
        for (int i = 0; i < texts.Count; i++)
        {
            var v = vectors.AsSpan(i * embedder.Dimension, embedder.Dimension);
            for (int j = 0; j < v.Length; j++) sb.Append(j == 0 ? "" : " ").Append(v[j].ToString("G7", CultureInfo.InvariantCulture));
            sb.AppendLine();
        }
        outw.Write(sb.ToString());
        return 0;
    }

    /// <summary><c>fastattn rank</c>: the corpus lines ordered by a cross-encoder's score for (query, line), the best <paramref name="top"/> printed.</summary>
    public static int Rank(ModelOptions o, string query, string corpus, int top, TextWriter outw, Func<Stream> stdin)
    {
        if (top < 1) throw new CliInputException($"--top must be at least 1; it is {top}.");
        var load = LoadOptions(o);
        var lines = ReadLines(corpus, stdin).Select(l => l.Trim()).Where(l => l.Length > 0).ToList();
        if (lines.Count == 0) throw new CliInputException($"'{corpus}' holds no non-empty lines to rank.");
        using var ce = CrossEncoder.Load(o.Model, o.Vocab, new SentenceEmbedderOptions { Threads = o.Threads, MaxTokensPerText = o.MaxTokens, MaxSessions = 1 }, load);
        var scores = ce.RankAsync(query, lines).GetAwaiter().GetResult();
        foreach (int i in Enumerable.Range(0, lines.Count).OrderByDescending(i => scores[i]).ThenBy(i => i).Take(top))
            outw.WriteLine($"{scores[i].ToString("F4", CultureInfo.InvariantCulture)}  {lines[i]}");
        return 0;
    }

    /// <summary><c>fastattn search</c>: the corpus lines most similar to the query, with their cosine similarity.</summary>
    public static int Search(ModelOptions o, string query, string corpus, int top, TextWriter outw, Func<Stream> stdin)
    {
        if (top < 1) throw new CliInputException($"--top must be at least 1; it is {top}.");
        var lines = ReadLines(corpus, stdin).Select(l => l.Trim()).Where(l => l.Length > 0).ToList();
        if (lines.Count == 0) throw new CliInputException($"'{corpus}' holds no non-empty lines to search.");
        using var embedder = Load(o, normalize: true);
        // asymmetric models (nomic, e5, arctic-embed) want a query prompt and a document prompt: each by name (a side not named gets
        // none), or without either flag the folder's default prompt for both
        string queryPrompt = PromptText(embedder, o.Prompt, "--prompt"), documentPrompt = PromptText(embedder, o.DocumentPrompt, "--document-prompt");
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var matrix = new float[lines.Count * embedder.Dimension];
        embedder.Encode(documentPrompt.Length == 0 ? lines : [.. lines.Select(l => documentPrompt + l)], matrix);
        double corpusMs = sw.Elapsed.TotalMilliseconds;
        var q = embedder.Encode(queryPrompt + query);
        foreach (var (row, score) in Vectors.TopK(q, matrix, top))
            outw.WriteLine($"{score.ToString("F4", CultureInfo.InvariantCulture)}  {lines[row]}");
        outw.WriteLine($"# {lines.Count} lines embedded in {corpusMs / 1000:F1} s ({lines.Count / (corpusMs / 1000):F0} lines/s, {o.Threads} thread{(o.Threads > 1 ? "s" : "")}); {embedder.Model.Source}");
        return 0;
    }
}
