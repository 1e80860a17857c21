using System.Text.Json;
using FastAttn.Composition;
using FastAttn.IO;
using FastAttn.Layers;

namespace FastAttn.Tagging;

/// <summary>Architecture of a tagger, stored as JSON in the model file's <c>__metadata__["fastattn.tagger"]</c>.</summary>
/// <param name="Kind">"attention" (positions + encoder stack) or "fc" (per-word fully connected layers).</param>
/// <param name="DModel">Width of the summed feature embeddings.</param>
/// <param name="Heads">Attention heads (attention model).</param>
/// <param name="Layers">Encoder layers (attention model).</param>
/// <param name="FfDim">Feed-forward width of an encoder layer.</param>
/// <param name="Hidden">Width of the hidden fully connected layers (FC model).</param>
/// <param name="FcLayers">Hidden fully connected layers (FC model).</param>
/// <param name="MaxPositions">Rows of the position table (attention model).</param>
/// <param name="Eps">LayerNorm ε.</param>
/// <param name="DistanceSlopes">Per-head slopes of the attention distance bias −slope·|i − j| (null = none).</param>
public sealed record TaggerConfig(string Kind, int DModel, int Heads, int Layers, int FfDim, int Hidden, int FcLayers, int MaxPositions, float Eps,
    float[]? DistanceSlopes = null);

/// <summary>
/// A part-of-speech tagger trained in PyTorch (see <c>samples/PosTagger.Training</c>) and loaded from safetensors, as
/// one FastAttn <see cref="Stack"/>: the per-word feature embeddings summed (<see cref="EmbeddingSum"/>), then the
/// position table, the encoder blocks and a classifier for the attention model, or fully connected ReLU layers and a
/// classifier for the FC model.
/// Immutable and shareable; tag with a <see cref="PosTagger"/> from <see cref="CreateTagger"/> (one per thread).
/// </summary>
public sealed class PosTagModel : IDisposable
{
    /// <summary>The architecture.</summary>
    public TaggerConfig Config { get; }
    /// <summary>Class names in logit order.</summary>
    public IReadOnlyList<string> Tags { get; }
    /// <summary>The feature vocabularies.</summary>
    public FeatureVocabulary Vocabulary { get; }
    /// <summary>The network after the embeddings.</summary>
    public Stack Stack { get; }
    /// <summary>The file's metadata (accuracies, training time, …).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }
    /// <summary>Longest run of tokens tagged in one pass (the position table for the attention model).</summary>
    public int MaxSequence => Config.Kind == "attention" ? Config.MaxPositions : 4096;

    private PosTagModel(TaggerConfig config, string[] tags, FeatureVocabulary vocab, Stack stack, IReadOnlyDictionary<string, string> meta)
    {
        Config = config; Tags = tags; Vocabulary = vocab; Stack = stack; Metadata = meta;
    }

    /// <summary>Loads a tagger written by the training sample.</summary>
    /// <exception cref="InvalidDataException">The file is not a valid safetensors file or not a tagger of this format.</exception>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public static PosTagModel Load(string path) => Load(path, null);

    /// <summary>
    /// As above, with each linear layer in the precision <paramref name="precision"/> gives it (null = FP32), by file name:
    /// <c>encoder.layers.N.self_attn.in_proj</c>, <c>…out_proj</c>, <c>encoder.layers.N.linear1</c>, <c>…linear2</c>,
    /// <c>fc.N</c>, <c>classifier</c>.
    /// </summary>
    /// <exception cref="InvalidDataException">The file is not a valid safetensors file or not a tagger of this format.</exception>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public static PosTagModel Load(string path, PrecisionPlan? precision)
    {
        using var file = SafeTensorsFile.Open(path);
        return Load(file, precision);
    }

    /// <summary>Loads a tagger from a stream (read to its end).</summary>
    /// <exception cref="InvalidDataException">The bytes are not a valid safetensors file or not a tagger of this format.</exception>
    public static PosTagModel Load(Stream stream, string name = "<stream>")
    {
        using var file = SafeTensorsFile.Load(stream, name);
        return Load(file);
    }

    /// <summary>The kinds of tagger this library carries: "attention" (self-attention, 94.4 % UPOS) and "fc" (per word, 90.1 %).</summary>
    public static IReadOnlyList<string> BundledKinds { get; } = ["attention", "fc"];

    /// <summary>
    /// Loads one of the taggers embedded in this library (trained on UD English-EWT, CC BY-SA 4.0; see the README):
    /// <c>"attention"</c> or <c>"fc"</c>. No file is needed.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="kind"/> is not a bundled model.</exception>
    public static PosTagModel LoadBundled(string kind = "attention") => LoadBundled(kind, null);

    /// <summary>As above, with each linear layer in the precision <paramref name="precision"/> gives it (see <see cref="Load(string, PrecisionPlan?)"/>).</summary>
    /// <exception cref="ArgumentException"><paramref name="kind"/> is not a bundled model.</exception>
    public static PosTagModel LoadBundled(string kind, PrecisionPlan? precision)
    {
        ArgumentNullException.ThrowIfNull(kind);
        if (!BundledKinds.Contains(kind)) throw new ArgumentException($"'{kind}' is not a bundled tagger; choose {string.Join(" or ", BundledKinds)}.", nameof(kind));
        using var s = typeof(PosTagModel).Assembly.GetManifestResourceStream($"FastAttn.Tagging.Models.{kind}.safetensors")
            ?? throw new InvalidOperationException($"the bundled model '{kind}' is missing from the assembly");
        using var file = SafeTensorsFile.Load(s, $"bundled:{kind}");
        return Load(file, precision);
    }

    /// <summary>Loads a tagger from an open safetensors file (the file may be disposed afterwards).</summary>
    /// <exception cref="InvalidDataException">Not a tagger of this format.</exception>
    public static PosTagModel Load(SafeTensorsFile file) => Load(file, null);

    /// <summary>As above, with each linear layer in the precision <paramref name="precision"/> gives it (see <see cref="Load(string, PrecisionPlan?)"/>).</summary>
    /// <exception cref="InvalidDataException">Not a tagger of this format.</exception>
    public static PosTagModel Load(SafeTensorsFile file, PrecisionPlan? precision)
    {
        ArgumentNullException.ThrowIfNull(file);
        var plan = precision ?? PrecisionPlan.F32;
        string path = file.Path;
        string Meta(string key) => file.Metadata.TryGetValue(key, out var v) ? v : throw new InvalidDataException($"'{path}' is not a FastAttn tagger: metadata '{key}' is missing.");
        var cfg = ReadConfig(file);
        string[]? tags;
        try { tags = JsonSerializer.Deserialize<string[]>(Meta("fastattn.tags")); }
        catch (JsonException e) { throw new InvalidDataException($"'{path}': tagger metadata is not valid JSON: {e.Message}", e); }
        if (tags == null || tags.Length == 0 || tags.Any(string.IsNullOrEmpty)) throw new InvalidDataException($"'{path}': tagger metadata is empty.");
        var vocab = FeatureVocabulary.FromJson(Meta("fastattn.vocab"));
        int d = cfg.DModel;
        var tables = new float[FeatureVocabulary.Count][];
        for (int f = 0; f < FeatureVocabulary.Count; f++)
        {
            string name = $"emb.{f}.weight";
            Expect(file, name, vocab.Size(f), d);
            tables[f] = file.ReadFloat32(name);
        }
        var blocks = new List<IBlock> { new EmbeddingSum(tables, d) };
        if (cfg.Kind == "attention")
        {
            Expect(file, "positions", cfg.MaxPositions, d);
            blocks.Add(PositionalEncoding.Learned(file.ReadFloat32("positions"), cfg.MaxPositions, d));
            var encoder = TorchModels.LoadTransformerEncoder(file, new TorchEncoderOptions { Heads = cfg.Heads, Eps = cfg.Eps, Prefix = "encoder.", DistanceSlopes = cfg.DistanceSlopes, Precision = plan });
            if (encoder.Blocks.Count != cfg.Layers) throw new InvalidDataException($"'{path}': {encoder.Blocks.Count} encoder layers, metadata says {cfg.Layers}.");
            if (((EncoderBlock)encoder.Blocks[0]).InputWidth != d) throw new InvalidDataException($"'{path}': encoder width differs from dModel {d}.");
            blocks.AddRange(encoder.Blocks);
        }
        else
        {
            for (int i = 0; i < cfg.FcLayers; i++)
            {
                Expect(file, $"fc.{i}.weight", cfg.Hidden, i == 0 ? d : cfg.Hidden);
                blocks.Add(new LinearBlock(TorchModels.LoadLinear(file, $"fc.{i}", Kernels.Activation.Relu, plan.For($"fc.{i}"))));
            }
        }
        Expect(file, "classifier.weight", tags.Length, cfg.Kind == "attention" ? d : cfg.Hidden);
        blocks.Add(new LinearBlock(TorchModels.LoadLinear(file, "classifier", Kernels.Activation.None, plan.For("classifier"))));
        var meta = new Dictionary<string, string>(file.Metadata.Where(kv => !kv.Key.StartsWith("fastattn.", StringComparison.Ordinal)));
        return new PosTagModel(cfg, tags, vocab, new Stack([.. blocks]), meta);
    }

    /// <summary>The architecture in a tagger file's <c>fastattn.tagger</c> metadata, validated.</summary>
    /// <exception cref="InvalidDataException">Missing, malformed or an unsupported architecture.</exception>
    public static TaggerConfig ReadConfig(SafeTensorsFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        if (!file.Metadata.TryGetValue("fastattn.tagger", out var json)) throw new InvalidDataException($"'{file.Path}' is not a FastAttn tagger: metadata 'fastattn.tagger' is missing.");
        TaggerConfig? cfg;
        try { cfg = JsonSerializer.Deserialize<TaggerConfig>(json); }
        catch (JsonException e) { throw new InvalidDataException($"'{file.Path}': tagger metadata is not valid JSON: {e.Message}", e); }
        if (cfg == null || cfg.Kind == null) throw new InvalidDataException($"'{file.Path}': tagger metadata is empty.");
        Check(file.Path, cfg);
        return cfg;
    }

    private static void Check(string path, TaggerConfig c)
    {
        bool ok = c.DModel is > 0 and <= 4096 && c.Eps > 0 && float.IsFinite(c.Eps) && c.Kind switch
        {
            "attention" => c.Heads > 0 && c.DModel % c.Heads == 0 && (c.DistanceSlopes == null || (c.DistanceSlopes.Length == c.Heads && c.DistanceSlopes.All(float.IsFinite))) && c.Layers is > 0 and <= 64 && c.FfDim is > 0 and <= 65536 && c.MaxPositions is > 0 and <= 1 << 16,
            "fc" => c.FcLayers is >= 0 and <= 64 && (c.FcLayers == 0 || c.Hidden is > 0 and <= 65536),
            _ => false,
        };
        if (!ok) throw new InvalidDataException($"'{path}': unsupported tagger architecture {c}.");
    }

    private static void Expect(SafeTensorsFile file, string name, long rows, long cols)
    {
        if (!file.Contains(name)) throw new InvalidDataException($"'{file.Path}': tensor '{name}' is missing.");
        var s = file.Info(name).Shape;
        if (s.Length != 2 || s[0] != rows || s[1] != cols)
            throw new InvalidDataException($"'{file.Path}': tensor '{name}' is [{string.Join(", ", s)}], expected [{rows}, {cols}].");
    }

    /// <summary>A tagger (buffers and a session) for texts of any length, run in passes of up to <paramref name="maxTokens"/> tokens.</summary>
    /// <exception cref="ArgumentOutOfRangeException">maxTokens below 1, or threads outside 1..processor count.</exception>
    public PosTagger CreateTagger(int maxTokens = 256, int threads = 1) => new(this, maxTokens, threads);

    private FastAttn.Composition.LeasePool<PosTagger>? _taggers;
    private readonly object _gate = new();

    /// <summary>
    /// Tags <paramref name="text"/>; thread-safe (any number of callers at once lease one of up to processor-count
    /// taggers). The first call creates and warms a tagger; call <see cref="WarmUp"/> at start-up to move that cost there.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="text"/> is null.</exception>
    /// <exception cref="ObjectDisposedException">The model was disposed.</exception>
    public TaggedToken[] Tag(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        using var lease = Taggers().Rent();
        return lease.Value.Tag(text);
    }

    /// <summary>As <see cref="Tag"/>, waiting asynchronously (cancellable) while every tagger is busy.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="text"/> is null.</exception>
    /// <exception cref="OperationCanceledException">Cancelled while waiting.</exception>
    /// <exception cref="ObjectDisposedException">The model was disposed.</exception>
    public async Task<TaggedToken[]> TagAsync(string text, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(text);
        using var lease = await Taggers().RentAsync(cancellation).ConfigureAwait(false);
        return lease.Value.Tag(text);
    }

    /// <summary>Creates the first pooled tagger and runs it once (JIT), so the first request does not pay for it.</summary>
    /// <exception cref="ObjectDisposedException">The model was disposed.</exception>
    public void WarmUp() => Tag("I saw a saw.");

    private FastAttn.Composition.LeasePool<PosTagger> Taggers()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_taggers != null) return _taggers;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _taggers ??= new FastAttn.Composition.LeasePool<PosTagger>(() => CreateTagger(), Environment.ProcessorCount);
        }
    }

    private volatile bool _disposed;

    /// <summary>
    /// Frees the model. Taggers still running finish (the weights stay alive until they do); later calls throw
    /// <see cref="ObjectDisposedException"/>.
    /// </summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            _taggers?.Dispose();
        }
        Stack.Dispose();
    }
}

/// <summary>One token of a tagged text.</summary>
public readonly record struct TaggedToken(string Word, string Tag, Range Span);

/// <summary>
/// Tags text with a <see cref="PosTagModel"/>. Owns its buffers and session: the span overloads allocate nothing;
/// <see cref="Tag(string)"/> allocates only its result. One caller at a time: a second thread entering while a call runs
/// gets <see cref="InvalidOperationException"/> (for concurrent callers use <see cref="PosTagModel.Tag(string)"/>). Texts
/// longer than <see cref="Window"/> tokens are tagged in consecutive windows.
/// </summary>
public sealed class PosTagger : IDisposable
{
    private const int F = FeatureVocabulary.Count;
    private readonly PosTagModel _model;
    private readonly Session _session;
    private readonly float[] _x, _logits; // _x: the feature ids as floats, the stack's input
    private readonly int _classes;
    private Range[] _tokenBuf = new Range[64];  // the first tokenizer pass of Tag(span) and Tag(string); Tag(string) grows it when a text has more tokens
    private int[] _tagBuf = new int[64];
    /// <summary>Tokens per forward pass.</summary>
    public int Window { get; }
    /// <summary>The model.</summary>
    public PosTagModel Model => _model;

    internal PosTagger(PosTagModel model, int maxTokens, int threads)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (maxTokens < 1) throw new ArgumentOutOfRangeException(nameof(maxTokens), maxTokens, "'maxTokens' must be at least 1.");
        _model = model;
        Window = Math.Min(maxTokens, model.MaxSequence);
        _classes = model.Tags.Count;
        _x = new float[Window * F];
        _logits = new float[Window * _classes];
        _session = model.Stack.CreateSession(Window, threads);
    }

    private int _busy, _disposed;

    private void Enter()
    {
        if (Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
            throw new InvalidOperationException("This PosTagger is already tagging on another thread: one caller at a time (use PosTagModel.Tag for concurrent callers, or one tagger per thread).");
        }
        if (Volatile.Read(ref _disposed) != 0) { Volatile.Write(ref _busy, 0); throw new ObjectDisposedException(nameof(PosTagger)); }
    }

    private void Exit() => Volatile.Write(ref _busy, 0);

    /// <summary>Tokenizes <paramref name="text"/> into <paramref name="tokens"/>, tags into <paramref name="tags"/> (indices into the model's tags); returns the token count. Allocates nothing.</summary>
    /// <exception cref="ArgumentException">A span is shorter than the token count (checked before anything is written).</exception>
    /// <exception cref="InvalidOperationException">Another thread is using this tagger.</exception>
    /// <exception cref="ObjectDisposedException">The tagger or its model was disposed.</exception>
    public int Tag(ReadOnlySpan<char> text, Span<Range> tokens, Span<int> tags)
    {
        Enter();
        try
        {
            // one tokenizer pass into the tagger's own buffer, so the caller's spans are checked before anything is written to
            // them; a text with more tokens than that buffer holds takes a second pass straight into the caller's span
            int n = EnglishTokenizer.Fill(text, _tokenBuf);
            if (tokens.Length < n) throw new ArgumentException($"the text has {n} tokens; 'tokens' has room for {tokens.Length}.", nameof(tokens));
            if (tags.Length < n) throw new ArgumentException($"the text has {n} tokens; 'tags' has room for {tags.Length}.", nameof(tags));
            if (n <= _tokenBuf.Length) _tokenBuf.AsSpan(0, n).CopyTo(tokens);
            else EnglishTokenizer.Fill(text, tokens);
            TagTokensCore(text, tokens[..n], tags);
            return n;
        }
        finally { Exit(); }
    }

    // tokens of text into _tokenBuf (grown, with _tagBuf, when a text has more tokens than ever before); returns the count
    private int TokenizeOwn(ReadOnlySpan<char> text)
    {
        int n = EnglishTokenizer.Fill(text, _tokenBuf);
        if (n > _tokenBuf.Length)
        {
            _tokenBuf = new Range[Math.Max(n, 2 * _tokenBuf.Length)];
            _tagBuf = new int[_tokenBuf.Length];
            EnglishTokenizer.Fill(text, _tokenBuf);
        }
        return n;
    }

    /// <summary>Tags already tokenized text (tokens as ranges of <paramref name="text"/>). Allocates nothing.</summary>
    /// <exception cref="ArgumentException"><paramref name="tags"/> is shorter than the tokens.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A range lies outside the text.</exception>
    /// <exception cref="InvalidOperationException">Another thread is using this tagger.</exception>
    /// <exception cref="ObjectDisposedException">The tagger or its model was disposed.</exception>
    public void TagTokens(ReadOnlySpan<char> text, ReadOnlySpan<Range> tokens, Span<int> tags)
    {
        if (tags.Length < tokens.Length) throw new ArgumentException($"'tags' has {tags.Length} elements; there are {tokens.Length} tokens.", nameof(tags));
        foreach (var r in tokens) r.GetOffsetAndLength(text.Length); // throws ArgumentOutOfRangeException for a range outside the text
        Enter();
        try { TagTokensCore(text, tokens, tags); }
        finally { Exit(); }
    }

    private void TagTokensCore(ReadOnlySpan<char> text, ReadOnlySpan<Range> tokens, Span<int> tags)
    {
        for (int w0 = 0; w0 < tokens.Length; w0 += Window)
        {
            int n = Math.Min(Window, tokens.Length - w0);
            for (int i = 0; i < n; i++) Featurize(text[tokens[w0 + i]], i);
            RunWindow(n);
            Argmax(n, tags.Slice(w0, n));
        }
    }

    /// <summary>Tags a sentence given as words. Allocates nothing.</summary>
    /// <exception cref="ArgumentException"><paramref name="tags"/> is shorter than the words, or a word is null.</exception>
    /// <exception cref="InvalidOperationException">Another thread is using this tagger.</exception>
    /// <exception cref="ObjectDisposedException">The tagger or its model was disposed.</exception>
    public void TagWords(ReadOnlySpan<string> words, Span<int> tags)
    {
        if (tags.Length < words.Length) throw new ArgumentException($"'tags' has {tags.Length} elements; there are {words.Length} words.", nameof(tags));
        foreach (var w in words) ArgumentNullException.ThrowIfNull(w, nameof(words));
        Enter();
        try
        {
            for (int w0 = 0; w0 < words.Length; w0 += Window)
            {
                int n = Math.Min(Window, words.Length - w0);
                for (int i = 0; i < n; i++) Featurize(words[w0 + i], i);
                RunWindow(n);
                Argmax(n, tags.Slice(w0, n));
            }
        }
        finally { Exit(); }
    }

    /// <summary>The classifier's logits <c>[words, tags]</c> for a sentence given as words (at most <see cref="Window"/>).</summary>
    /// <exception cref="ArgumentException">No words or more than the window, logits of the wrong length, or a null word.</exception>
    /// <exception cref="InvalidOperationException">Another thread is using this tagger.</exception>
    /// <exception cref="ObjectDisposedException">The tagger or its model was disposed.</exception>
    public void Logits(ReadOnlySpan<string> words, Span<float> logits)
    {
        if (words.Length == 0 || words.Length > Window) throw new ArgumentException($"'words' has {words.Length} words; expected 1..{Window}.", nameof(words));
        if (logits.Length != words.Length * _classes) throw new ArgumentException($"'logits' has {logits.Length} elements; expected words*tags = {words.Length * _classes}.", nameof(logits));
        foreach (var w in words) ArgumentNullException.ThrowIfNull(w, nameof(words));
        Enter();
        try
        {
            for (int i = 0; i < words.Length; i++) Featurize(words[i], i);
            RunWindow(words.Length);
            _logits.AsSpan(0, logits.Length).CopyTo(logits);
        }
        finally { Exit(); }
    }

    /// <summary>Tokenizes and tags <paramref name="text"/>; allocates only the result.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="text"/> is null.</exception>
    /// <exception cref="InvalidOperationException">Another thread is using this tagger.</exception>
    /// <exception cref="ObjectDisposedException">The tagger or its model was disposed.</exception>
    public TaggedToken[] Tag(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        Enter();
        try
        {
            int n = TokenizeOwn(text);
            var tokens = _tokenBuf;
            var tags = _tagBuf;
            TagTokensCore(text, tokens.AsSpan(0, n), tags);
            var result = new TaggedToken[n];
            for (int i = 0; i < n; i++) result[i] = new TaggedToken(text[tokens[i]], _model.Tags[tags[i]], tokens[i]);
            return result;
        }
        finally { Exit(); }
    }

    // token i of the window: its feature ids, written as floats into the stack's input row
    private void Featurize(ReadOnlySpan<char> word, int i)
    {
        Span<int> ids = stackalloc int[F];
        _model.Vocabulary.Extract(word, ids);
        for (int f = 0; f < F; f++) _x[i * F + f] = ids[f];
    }

    private void RunWindow(int n)
    {
        _session.Run(_x.AsSpan(0, n * F), _logits.AsSpan(0, n * _classes));
    }

    private void Argmax(int n, Span<int> tags)
    {
        for (int i = 0; i < n; i++)
        {
            var row = _logits.AsSpan(i * _classes, _classes);
            int best = 0;
            for (int c = 1; c < row.Length; c++) if (row[c] > row[best]) best = c;
            tags[i] = best;
        }
    }

    /// <summary>Stops the tagger's session (after a call in progress finishes).</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        var spin = new SpinWait();
        while (Interlocked.CompareExchange(ref _busy, 1, 0) != 0) spin.SpinOnce();
        _session.Dispose();
    }
}
