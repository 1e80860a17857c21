using FastAttn.Composition;

namespace FastAttn.Embeddings;

/// <summary>
/// A cross-encoder or any BERT sequence classifier (<c>BertForSequenceClassification</c>: a checkpoint with
/// <c>pooler.dense</c> and <c>classifier</c>): text pairs in, logits out — a reranker's relevance score of a query and a
/// passage is its one logit. Each pair runs as <c>[CLS] first [SEP] second [SEP]</c> with token types 0 and 1, pairs of a
/// call as packed passes without padding. Thread-safe like <see cref="SentenceEmbedder"/>: each call leases one of up to
/// <see cref="SentenceEmbedderOptions.MaxSessions"/> sessions.
/// </summary>
public sealed class CrossEncoder : IDisposable
{
    private readonly LeasePool<EmbeddingSession> _sessions;
    private readonly bool _ownsModel;

    /// <summary>The model.</summary>
    public BertModel Model { get; }
    /// <summary>The tokenizer.</summary>
    public TextTokenizer Tokenizer { get; }
    /// <summary>Logits per pair (the classifier's outputs; 1 for a reranker).</summary>
    public int Classes { get; }

    /// <summary>A cross-encoder over a loaded model and tokenizer (which it does not dispose); pooling settings in <paramref name="options"/> are ignored.</summary>
    /// <exception cref="ArgumentException">The model has no sequence-classification head, or the options do not fit it.</exception>
    public CrossEncoder(BertModel model, TextTokenizer tokenizer, SentenceEmbedderOptions? options = null)
        : this(model, tokenizer, options, ownsModel: false) { }

    private CrossEncoder(BertModel model, TextTokenizer tokenizer, SentenceEmbedderOptions? options, bool ownsModel)
    {
        Model = model ?? throw new ArgumentNullException(nameof(model));
        Tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        if (model.Head != BertHead.Sequence)
            throw new ArgumentException($"{model.Source} has no sequence-classification head (pooler.dense and classifier weights); a cross-encoder needs one.", nameof(model));
        options = (options ?? new SentenceEmbedderOptions()) with { Pooling = Pooling.Cls, Normalize = false };
        if (options.Threads < 1 || options.Threads > Environment.ProcessorCount)
            throw new ArgumentOutOfRangeException(nameof(options), options.Threads, $"Threads must be 1..{Environment.ProcessorCount}.");
        var first = new EmbeddingSession(model, tokenizer, options);
        Classes = first.Classes;
        first.ClassifyPairs([("warm", "up")], new float[Classes]);   // warms the code paths
        // the warmed session is the pool's first (a flag in the factory handed it to two callers creating at once)
        _sessions = new LeasePool<EmbeddingSession>(() => new EmbeddingSession(model, tokenizer, options),
            options.MaxSessions > 0 ? options.MaxSessions : Environment.ProcessorCount, first);
        _ownsModel = ownsModel;
    }

    /// <summary>
    /// Loads a sequence-classification model (see <see cref="BertModel.Load(string, BertLoadOptions?)"/>) and its vocabulary
    /// (<c>vocab.txt</c> beside it unless given, else <c>tokenizer.json</c>).
    /// </summary>
    /// <exception cref="InvalidDataException">A file is malformed or does not match a BERT model.</exception>
    /// <exception cref="FileNotFoundException">The model or the vocabulary is not there.</exception>
    /// <exception cref="ArgumentException">The model has no sequence-classification head, or the options do not fit it.</exception>
    public static CrossEncoder Load(string modelPath, string? vocabPath = null, SentenceEmbedderOptions? options = null, BertLoadOptions? loadOptions = null)
    {
        ArgumentNullException.ThrowIfNull(modelPath);
        // a cross-encoder folder's sentence-transformers pooling settings do not apply; its length limit does when none is given
        var (model, tokenizer) = SentenceEmbedder.LoadParts(modelPath, vocabPath, loadOptions,
            (m, st) => options?.MaxTokensPerText is > 0 and var n ? n : st?.MaxSeqLength is int s ? Math.Min(s, m.Embeddings.MaxPositions) : 0);
        try { return new CrossEncoder(model, tokenizer, options, ownsModel: true); }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>The logits of one pair (<see cref="Classes"/> of them).</summary>
    /// <exception cref="ArgumentNullException">A text is null.</exception>
    /// <exception cref="ObjectDisposedException">The cross-encoder was disposed.</exception>
    public float[] Logits(string first, string second)
    {
        ArgumentNullException.ThrowIfNull(first);
        ArgumentNullException.ThrowIfNull(second);
        var r = new float[Classes];
        using var lease = _sessions.Rent();
        lease.Value.ClassifyPairs([(first, second)], r);
        return r;
    }

    /// <summary>The logits of <paramref name="pairs"/>, <c>[pairs, Classes]</c> row-major, as packed passes.</summary>
    /// <exception cref="ArgumentException">No pairs, or a text is null.</exception>
    /// <exception cref="ObjectDisposedException">The cross-encoder was disposed.</exception>
    public float[] Logits(IReadOnlyList<(string First, string Second)> pairs)
    {
        ArgumentNullException.ThrowIfNull(pairs);
        var r = new float[pairs.Count * Classes];
        using var lease = _sessions.Rent();
        lease.Value.ClassifyPairs(pairs, r);
        return r;
    }

    /// <summary>
    /// A reranker's scores: the first logit of (<paramref name="query"/>, passage) for each passage, in order (higher is
    /// more relevant; apply a sigmoid for a probability where the model was trained so). Waits asynchronously
    /// (cancellable) while every session is busy.
    /// </summary>
    /// <exception cref="ArgumentException">No passages, or a passage is null.</exception>
    /// <exception cref="OperationCanceledException">Cancelled while waiting.</exception>
    /// <exception cref="ObjectDisposedException">The cross-encoder was disposed.</exception>
    public async Task<float[]> RankAsync(string query, IReadOnlyList<string> passages, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(query);
        ArgumentNullException.ThrowIfNull(passages);
        var pairs = new (string, string)[passages.Count];
        for (int i = 0; i < pairs.Length; i++) pairs[i] = (query, passages[i] ?? throw new ArgumentException($"passage {i} is null.", nameof(passages)));
        var logits = new float[pairs.Length * Classes];
        using (var lease = await _sessions.RentAsync(cancellation).ConfigureAwait(false))
            lease.Value.ClassifyPairs(pairs, logits);
        var scores = new float[pairs.Length];
        for (int i = 0; i < scores.Length; i++) scores[i] = logits[i * Classes];
        return scores;
    }

    /// <summary>Disposes the sessions (leased ones when they come back), and the model if <see cref="Load"/> created it.</summary>
    public void Dispose()
    {
        _sessions.Dispose();
        if (_ownsModel) Model.Dispose();
    }
}
