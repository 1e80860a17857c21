using FastAttn.Composition;

namespace FastAttn.Embeddings;

/// <summary>
/// Sentence embeddings with a BERT-family model: text → word pieces → encoder → pooling → (normalised) vector.
/// Thread-safe: any number of threads may call it at once; each call leases one of up to
/// <see cref="SentenceEmbedderOptions.MaxSessions"/> <see cref="EmbeddingSession"/>s (created on demand, reused). A batch
/// runs as packed passes (no padding). For the allocation-free id paths, hold an <see cref="EmbeddingSession"/> from
/// <see cref="CreateSession"/>.
/// </summary>
public sealed class SentenceEmbedder : IDisposable
{
    private readonly LeasePool<EmbeddingSession> _sessions;
    private readonly bool _ownsModel;

    /// <summary>The model.</summary>
    public BertModel Model { get; }
    /// <summary>The tokenizer.</summary>
    public TextTokenizer Tokenizer { get; }
    /// <summary>The settings, open ones resolved (see <see cref="EmbeddingSession.Options"/>).</summary>
    public SentenceEmbedderOptions Options { get; }
    /// <summary>Length of one embedding.</summary>
    public int Dimension { get; }
    /// <summary>
    /// The prompts of the model folder's <c>config_sentence_transformers.json</c> (e.g. "query" → "search_query: "), empty
    /// when it has none: pass one as <see cref="SentenceEmbedderOptions.Prompt"/>, or put it before a text yourself.
    /// </summary>
    public IReadOnlyDictionary<string, string> Prompts { get; private init; } = System.Collections.ObjectModel.ReadOnlyDictionary<string, string>.Empty;

    /// <summary>An embedder over a loaded model and tokenizer (which the embedder does not dispose).</summary>
    /// <exception cref="ArgumentException">The options do not fit the model.</exception>
    public SentenceEmbedder(BertModel model, TextTokenizer tokenizer, SentenceEmbedderOptions? options = null)
        : this(model, tokenizer, options, ownsModel: false) { }

    private SentenceEmbedder(BertModel model, TextTokenizer tokenizer, SentenceEmbedderOptions? options, bool ownsModel)
    {
        Model = model ?? throw new ArgumentNullException(nameof(model));
        Tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        Options = options ?? new SentenceEmbedderOptions();
        if (Options.Threads < 1 || Options.Threads > Environment.ProcessorCount)
            throw new ArgumentOutOfRangeException(nameof(options), Options.Threads, $"Threads must be 1..{Environment.ProcessorCount}.");
        // one session now: it checks the options, warms the code paths, and tells the dimension
        var first = new EmbeddingSession(model, tokenizer, Options);
        Options = first.Options;                      // open settings resolved (mean pooling, no normalisation)
        Dimension = first.Dimension;
        first.Encode("warm up");
        int capacity = Options.MaxSessions > 0 ? Options.MaxSessions : Environment.ProcessorCount;
        // the warmed session is the pool's first (a flag in the factory handed it to two callers creating at once)
        _sessions = new LeasePool<EmbeddingSession>(() => new EmbeddingSession(model, tokenizer, Options), capacity, first);
        _ownsModel = ownsModel;
    }

    /// <summary>
    /// Loads a model (<c>.safetensors</c> with <c>config.json</c>, a folder, or <c>.onnx</c>; see
    /// <see cref="BertModel.Load(string, BertLoadOptions?)"/>) and its <c>vocab.txt</c> (beside the model unless given; a
    /// folder without one: its <c>tokenizer.json</c>, and a given path named <c>tokenizer.json</c> is read as one).
    /// A sentence-transformers folder (<c>modules.json</c>, <c>1_Pooling/config.json</c>, <c>sentence_bert_config.json</c>;
    /// see <see cref="SentenceTransformersConfig"/>) sets the pooling, the normalisation and the length limit wherever
    /// <paramref name="options"/> leave them open (null pooling or normalisation, 0 tokens per text; settings given win);
    /// its length limit is cut to the model's positions. A folder whose Transformer module lives in a subfolder
    /// (<c>0_Transformer/</c>) is read from there. (<see cref="SentenceTransformersConfig.Read"/> and
    /// <see cref="SentenceTransformersConfig.ApplyTo"/> do the same for a model and options of one's own.)
    /// </summary>
    /// <exception cref="InvalidDataException">A file is malformed or does not match a BERT model, or the sentence-transformers
    /// files name a pipeline FastAttn does not run or a dimension other than the model's.</exception>
    /// <exception cref="FileNotFoundException">The model or the vocabulary is not there.</exception>
    /// <exception cref="IOException">A file cannot be read.</exception>
    /// <exception cref="ArgumentException">The options do not fit the model.</exception>
    public static SentenceEmbedder Load(string modelPath, string? vocabPath = null, SentenceEmbedderOptions? options = null, BertLoadOptions? loadOptions = null)
    {
        ArgumentNullException.ThrowIfNull(modelPath);
        SentenceEmbedderOptions? resolved = null;
        IReadOnlyDictionary<string, string>? prompts = null;
        var (model, tokenizer) = LoadParts(modelPath, vocabPath, loadOptions, (m, st) =>
        {
            resolved = options ?? new SentenceEmbedderOptions();
            if (st != null) { resolved = st.ApplyTo(resolved, m); prompts = st.Prompts; }
            return resolved.MaxTokensPerText;
        });
        try { return new SentenceEmbedder(model, tokenizer, resolved, ownsModel: true) { Prompts = prompts ?? System.Collections.ObjectModel.ReadOnlyDictionary<string, string>.Empty }; }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The model and tokenizer of a model path, as <see cref="Load"/> finds them (sentence-transformers subfolder,
    /// vocab.txt or tokenizer.json); <paramref name="maxTokens"/> gives the tokenizer's limit (0 = the model's positions)
    /// from the loaded model and the folder's sentence-transformers settings. The model is disposed if anything after it fails.
    /// </summary>
    internal static (BertModel, TextTokenizer) LoadParts(string modelPath, string? vocabPath, BertLoadOptions? loadOptions,
        Func<BertModel, SentenceTransformersConfig?, int> maxTokens)
    {
        bool folder = Directory.Exists(modelPath);
        string dir = folder ? modelPath : BertModel.ModelFolder(modelPath);
        var st = SentenceTransformersConfig.Read(dir);
        if (folder && st is { TransformerPath.Length: > 0 } && !File.Exists(Path.Combine(dir, "model.safetensors")) && !File.Exists(Path.Combine(dir, "model.onnx")))
            modelPath = dir = Path.Combine(dir, st.TransformerPath);
        // vocab.txt, else Hugging Face's tokenizer.json (a folder without vocab.txt)
        if (vocabPath == null && !File.Exists(Path.Combine(dir, "vocab.txt")) && File.Exists(Path.Combine(dir, "tokenizer.json")))
            vocabPath = Path.Combine(dir, "tokenizer.json");
        vocabPath ??= Path.Combine(dir, "vocab.txt");
        if (!File.Exists(vocabPath)) throw new FileNotFoundException($"vocabulary '{vocabPath}' not found (nor tokenizer.json); pass its path.", vocabPath);
        bool tokenizerJson = Path.GetFileName(vocabPath).Equals("tokenizer.json", StringComparison.OrdinalIgnoreCase);
        var model = BertModel.Load(modelPath, loadOptions);
        try
        {
            int max = maxTokens(model, st);
            int limit = max == 0 ? model.Embeddings.MaxPositions : max;
            TextTokenizer tokenizer = tokenizerJson ? TextTokenizer.FromTokenizerJson(vocabPath, limit)
                : BertWordPieceTokenizer.FromVocabFile(vocabPath, new BertTokenizerOptions { MaxTokens = limit });
            return (model, tokenizer);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>A session of its own (one caller at a time; the id paths allocate nothing). Dispose it when done.</summary>
    public EmbeddingSession CreateSession() => new(Model, Tokenizer, Options);

    /// <summary>The embedding of one text.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="text"/> is null.</exception>
    /// <exception cref="ObjectDisposedException">The embedder was disposed.</exception>
    public float[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        using var lease = _sessions.Rent();
        return lease.Value.Encode(text);
    }

    /// <summary>The embeddings of <paramref name="texts"/> into <paramref name="output"/> <c>[texts, Dimension]</c> (packed passes).</summary>
    /// <exception cref="ArgumentException">output has the wrong length, or a text is null.</exception>
    /// <exception cref="ObjectDisposedException">The embedder was disposed.</exception>
    public void Encode(IReadOnlyList<string> texts, Span<float> output)
    {
        using var lease = _sessions.Rent();
        lease.Value.Encode(texts, output);
    }

    /// <summary>The embeddings of <paramref name="texts"/>, one array per text.</summary>
    /// <exception cref="ArgumentException">A text is null.</exception>
    /// <exception cref="ObjectDisposedException">The embedder was disposed.</exception>
    public float[][] Encode(IReadOnlyList<string> texts)
    {
        ArgumentNullException.ThrowIfNull(texts);
        var flat = new float[texts.Count * Dimension];
        Encode(texts, flat);
        var r = new float[texts.Count][];
        for (int i = 0; i < r.Length; i++) r[i] = flat.AsSpan(i * Dimension, Dimension).ToArray();
        return r;
    }

    /// <summary>As <see cref="Encode(string)"/>, waiting asynchronously (cancellable) while every session is busy.</summary>
    /// <exception cref="OperationCanceledException">Cancelled while waiting.</exception>
    /// <exception cref="ObjectDisposedException">The embedder was disposed.</exception>
    public async Task<float[]> EncodeAsync(string text, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(text);
        using var lease = await _sessions.RentAsync(cancellation).ConfigureAwait(false);
        return lease.Value.Encode(text);
    }

    /// <summary>
    /// The embeddings of <paramref name="texts"/> (<c>[texts, Dimension]</c>, row-major; packed passes), waiting
    /// asynchronously (cancellable) while every session is busy.
    /// </summary>
    /// <exception cref="ArgumentException">A text is null.</exception>
    /// <exception cref="OperationCanceledException">Cancelled while waiting.</exception>
    /// <exception cref="ObjectDisposedException">The embedder was disposed.</exception>
    public async Task<float[]> EncodeAsync(IReadOnlyList<string> texts, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(texts);
        var flat = new float[texts.Count * Dimension];
        using var lease = await _sessions.RentAsync(cancellation).ConfigureAwait(false);
        lease.Value.Encode(texts, flat);
        return flat;
    }

    /// <summary>
    /// The embeddings of texts already split into word-piece ids (each list with its [CLS] and [SEP], as
    /// <see cref="TextTokenizer.Encode(string)"/> gives them), <c>[texts, Dimension]</c> row-major, waiting
    /// asynchronously (cancellable) while every session is busy: the same vectors as
    /// <see cref="EncodeAsync(IReadOnlyList{string}, CancellationToken)"/> of the texts, for a caller that has tokenized them
    /// already (to check a request's size, say). A list longer than the model's limit is cut as a text is (its first ids
    /// and its last). The ids are checked on the calling thread, and again in the copy the model reads.
    /// </summary>
    /// <exception cref="ArgumentException">No lists, or a list is null or empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An id is outside the vocabulary.</exception>
    /// <exception cref="OperationCanceledException">Cancelled while waiting.</exception>
    /// <exception cref="ObjectDisposedException">The embedder was disposed.</exception>
    public Task<float[]> EncodeIdsAsync(IReadOnlyList<int[]> tokenIds, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(tokenIds);
        if (tokenIds.Count == 0) throw new ArgumentException("no texts.", nameof(tokenIds));
        int vocab = Model.Config.VocabSize;
        for (int i = 0; i < tokenIds.Count; i++)
        {
            if (tokenIds[i] is not { Length: > 0 } ids) throw new ArgumentException($"text {i} has no ids.", nameof(tokenIds));
            foreach (int id in ids)
                if ((uint)id >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(tokenIds), id, $"text {i}: id {id} is outside the vocabulary (0..{vocab - 1}).");
        }
        return EncodeIdsCoreAsync(tokenIds, cancellation);
    }

    private async Task<float[]> EncodeIdsCoreAsync(IReadOnlyList<int[]> tokenIds, CancellationToken cancellation)
    {
        var flat = new float[tokenIds.Count * Dimension];
        using var lease = await _sessions.RentAsync(cancellation).ConfigureAwait(false);
        lease.Value.EncodeLists(tokenIds, flat);
        return flat;
    }

    /// <summary>Disposes the sessions (leased ones when they come back), and the model if <see cref="Load"/> created it.</summary>
    public void Dispose()
    {
        _sessions.Dispose();
        if (_ownsModel) Model.Dispose();
    }
}
