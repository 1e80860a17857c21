using System.Numerics.Tensors;
using FastAttn.Composition;
using FastAttn.Layers;

namespace FastAttn.Embeddings;

/// <summary>
/// Runs a <see cref="BertModel"/> for one caller at a time: owns a session sized for
/// <see cref="SentenceEmbedderOptions.MaxBatchTokens"/> tokens and every buffer pooling needs. A batch of texts runs as
/// packed passes (sequences back to back, no padding; each attends only to itself). The id paths
/// (<see cref="EncodeIds"/>, <see cref="HiddenStates"/>) allocate nothing; the text paths allocate in the tokenizer.
/// A second thread entering while a call runs gets <see cref="InvalidOperationException"/>.
/// </summary>
public sealed class EmbeddingSession : IDisposable
{
    private readonly BertModel _model;
    private readonly TextTokenizer? _tokenizer;
    private readonly Session _session;
    private readonly float[] _input, _hidden, _cls, _pooled, _poolScratch;
    private readonly int _maxSequences;
    private int _busy, _disposed;
    private readonly Pooling _pooling;
    private readonly bool _normalize;
    private readonly DenseModule[] _dense;
    private readonly float[] _denseA, _denseB, _denseScratch;   // DenseChunk vectors at a time
    private readonly int _pooledWidth;
    /// <summary>Put before every text of the text paths ("" = nothing).</summary>
    private readonly string _prompt;

    /// <summary>The text as the model sees it: the prompt in force (the options' or the folder's default), if any, put before it.</summary>
    internal string Prompted(string text) => _prompt.Length == 0 ? text : _prompt + text;
    /// <summary>The vector's width before <see cref="SentenceEmbedderOptions.Dimensions"/> cuts it.</summary>
    private readonly int _fullDimension;
    /// <summary>One pooled vector at full width, when the output keeps fewer values (else empty).</summary>
    private readonly float[] _one;
    private const int DenseChunk = 64;

    /// <summary>The settings, open ones resolved (pooling mean and no normalisation where they were null).</summary>
    public SentenceEmbedderOptions Options { get; }
    /// <summary>Length of one embedding.</summary>
    public int Dimension { get; }
    /// <summary>Width of a token's hidden state.</summary>
    public int HiddenWidth => _model.OutputWidth;
    /// <summary>Longest sequence (tokens) this session accepts.</summary>
    public int MaxTokensPerText { get; }

    /// <summary>A session over <paramref name="model"/> (and <paramref name="tokenizer"/> for the text paths).</summary>
    /// <exception cref="ArgumentException">The options do not fit the model (pooler pooling without a pooler, sizes out of range).</exception>
    public EmbeddingSession(BertModel model, TextTokenizer? tokenizer, SentenceEmbedderOptions? options = null)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        _tokenizer = tokenizer;
        options ??= new SentenceEmbedderOptions();
        // open settings: mean pooling (a decoder's: the last token's state, what its causal attention sums up), no normalisation
        // (SentenceEmbedder.Load fills them from a model folder first)
        options = options with { Pooling = _pooling = options.Pooling ?? (model.Config.IsDecoder ? Pooling.LastToken : Pooling.Mean), Normalize = _normalize = options.Normalize ?? false, Prompt = _prompt = options.Prompt ?? "" };
        if (_pooling == Pooling.Pooler && model.Pooler == null) throw new ArgumentException("pooler pooling needs a checkpoint with pooler.dense weights; this model has none.", nameof(options));
        if ((uint)_pooling > (uint)Pooling.LastToken) throw new ArgumentOutOfRangeException(nameof(options), _pooling, "Unknown pooling.");
        int maxPos = model.Embeddings.MaxPositions;
        // open: the model's positions, or one pass's tokens when fewer (a long-context model — ModernBERT's 8,192 positions
        // and up — would otherwise refuse the default pass size); a pass too small for any text is refused below
        MaxTokensPerText = options.MaxTokensPerText != 0 ? options.MaxTokensPerText : options.MaxBatchTokens >= 3 ? Math.Min(maxPos, options.MaxBatchTokens) : maxPos;
        if (MaxTokensPerText < 3 || MaxTokensPerText > maxPos)
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxTokensPerText, $"MaxTokensPerText must be 3..{maxPos} (the model's positions).");
        if (options.MaxBatchTokens < MaxTokensPerText || options.MaxBatchTokens > 1 << 22)
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxBatchTokens, $"MaxBatchTokens must be at least MaxTokensPerText ({MaxTokensPerText}) and at most 4M.");
        if (tokenizer != null && tokenizer.VocabularySize > model.Config.VocabSize)
            throw new ArgumentException($"the vocabulary has {tokenizer.VocabularySize} entries; the model's embedding table {model.Config.VocabSize}.", nameof(tokenizer));
        Options = options;
        int h = model.OutputWidth, max = options.MaxBatchTokens;
        _pooledWidth = _pooling == Pooling.Pooler ? model.Config.HiddenSize : h;
        _dense = options.Dense is { } given ? [.. given] : [];
        for (int i = 0, w = _pooledWidth; i < _dense.Length; w = _dense[i].OutFeatures, i++)
            if (_dense[i] is null || _dense[i].InFeatures != w)
                throw new ArgumentException($"Dense module {i} takes {(_dense[i] is null ? "nothing (null)" : _dense[i].InFeatures.ToString())} features; the vector before it has {w}.", nameof(options));
        _fullDimension = _dense.Length > 0 ? _dense[^1].OutFeatures : _pooledWidth;
        if (options.Dimensions < 0 || options.Dimensions > _fullDimension)
            throw new ArgumentOutOfRangeException(nameof(options), options.Dimensions, $"Dimensions must be 0 (all) or 1..{_fullDimension} (the vector's width).");
        Dimension = options.Dimensions == 0 ? _fullDimension : options.Dimensions;
        _one = Dimension < _fullDimension ? new float[_pooledWidth] : [];
        int widest = _dense.Length == 0 ? 0 : Math.Max(_pooledWidth, _dense.Max(m => m.OutFeatures));
        _denseA = new float[_dense.Length == 0 ? 0 : DenseChunk * widest];
        _denseB = new float[_denseA.Length];
        _denseScratch = new float[_dense.Length == 0 ? 0 : _dense.Max(m => m.Linear.ScratchSize(DenseChunk))];
        _session = model.Encoder.CreateSession(max, options.Threads);
        _input = new float[2 * max];
        _hidden = new float[(long)max * h];
        _maxSequences = max; // a sequence has at least one token
        // the pooler's buffers serve pooler pooling and a sequence-classification head alike
        bool pooler = _pooling == Pooling.Pooler || model.Head == BertHead.Sequence;
        _cls = pooler ? new float[(long)max * h] : [];
        _pooled = pooler ? new float[(long)max * model.Config.HiddenSize] : [];
        _poolScratch = pooler ? new float[Math.Max(model.Pooler!.ScratchSize(max), model.Classifier?.ScratchSize(max) ?? 0)] : [];
    }

    /// <summary>The embedding of one text.</summary>
    /// <exception cref="InvalidOperationException">The session has no tokenizer, or another thread is using it.</exception>
    public float[] Encode(string text)
    {
        var r = new float[Dimension];
        Encode([text], r);
        return r;
    }

    /// <summary>The embeddings of <paramref name="texts"/> into <paramref name="output"/> <c>[texts, Dimension]</c>, in order, as packed passes.</summary>
    /// <exception cref="ArgumentException">output has the wrong length, or a text is null.</exception>
    /// <exception cref="InvalidOperationException">The session has no tokenizer, or another thread is using it.</exception>
    public void Encode(IReadOnlyList<string> texts, Span<float> output)
    {
        ArgumentNullException.ThrowIfNull(texts);
        if (_tokenizer == null) throw new InvalidOperationException("this session was created without a tokenizer; use EncodeIds.");
        if (output.Length != (long)texts.Count * Dimension)
            throw new ArgumentException($"'output' has {output.Length} elements; expected texts*dimension = {texts.Count}*{Dimension}.", nameof(output));
        var lists = new int[texts.Count][];
        for (int i = 0; i < texts.Count; i++)
        {
            if (texts[i] is null) throw new ArgumentException($"text {i} is null.", nameof(texts));
            lists[i] = _tokenizer.Encode(Prompted(texts[i]));
        }
        EncodeLists(lists, output);
    }

    /// <summary>Id lists (one per text, each cut to <see cref="MaxTokensPerText"/> as a text is) encoded back to back into <paramref name="output"/>; checked by <see cref="EncodeIds"/>.</summary>
    internal void EncodeLists(IReadOnlyList<int[]> lists, Span<float> output)
    {
        var ids = new List<int>();
        var lengths = new int[lists.Count];
        for (int i = 0; i < lengths.Length; i++)
        {
            var t = FitToLimit(lists[i]);
            ids.AddRange(t);
            lengths[i] = t.Length;
        }
        EncodeIds(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(ids), lengths, output);
    }

    /// <summary>
    /// The embeddings of sequences of token ids (each with its [CLS] and [SEP]) stored back to back with their
    /// <paramref name="lengths"/>, into <paramref name="output"/> <c>[sequences, Dimension]</c>. Allocates nothing.
    /// </summary>
    /// <exception cref="ArgumentException">The lengths do not add up, a sequence is empty or too long, an id is outside the vocabulary, or output has the wrong length.</exception>
    /// <exception cref="InvalidOperationException">Another thread is using this session.</exception>
    /// <exception cref="ObjectDisposedException">The session or its model was disposed.</exception>
    public void EncodeIds(ReadOnlySpan<int> ids, ReadOnlySpan<int> lengths, Span<float> output)
    {
        Check(ids, lengths);
        if (output.Length != (long)lengths.Length * Dimension)
            throw new ArgumentException($"'output' has {output.Length} elements; expected sequences*dimension = {lengths.Length}*{Dimension}.", nameof(output));
        Enter();
        try
        {
            for (int s0 = 0, t0 = 0, s1, tokens; s0 < lengths.Length; s0 = s1, t0 += tokens)
            {
                s1 = NextPass(lengths, s0, out tokens);
                RunPass(ids.Slice(t0, tokens), lengths[s0..s1]);
                Pool(lengths[s0..s1], output.Slice(s0 * Dimension, (s1 - s0) * Dimension));
            }
        }
        finally { Volatile.Write(ref _busy, 0); }
    }

    /// <summary>Outputs of the model's sequence-classification head (<see cref="BertHead.Sequence"/>); 0 when it has none.</summary>
    public int Classes => _model.Head == BertHead.Sequence ? _model.Classifier!.OutFeatures : 0;

    /// <summary>
    /// The logits of a sequence-classification model (<c>BertForSequenceClassification</c>: pooler, then <c>classifier</c>;
    /// a cross-encoder's relevance score is its one logit) for the sequences of <paramref name="ids"/> stored back to back,
    /// with their token types (<paramref name="typeIds"/>, empty for all 0; a pair from
    /// <see cref="TextTokenizer.EncodePair(string, string, out int[])"/> carries 1 on its second text), into
    /// <paramref name="logits"/> <c>[sequences, Classes]</c>. Allocates nothing.
    /// </summary>
    /// <exception cref="InvalidOperationException">The model has no sequence-classification head, or another thread is using this session.</exception>
    /// <exception cref="ArgumentException">The lengths do not add up, a sequence is empty or too long, an id is outside the vocabulary, a type is outside the model's token types, or logits has the wrong length.</exception>
    /// <exception cref="ObjectDisposedException">The session or its model was disposed.</exception>
    public void ClassifyIds(ReadOnlySpan<int> ids, ReadOnlySpan<int> typeIds, ReadOnlySpan<int> lengths, Span<float> logits)
    {
        if (_model.Head != BertHead.Sequence) throw new InvalidOperationException("this model has no sequence-classification head (a checkpoint with pooler.dense and classifier weights).");
        Check(ids, lengths);
        if (!typeIds.IsEmpty)
        {
            if (typeIds.Length != ids.Length) throw new ArgumentException($"'typeIds' has {typeIds.Length} elements; 'ids' has {ids.Length} (or pass none for all 0).", nameof(typeIds));
            int types = _model.Embeddings.TokenTypes;
            for (int i = 0; i < typeIds.Length; i++)
                if ((uint)typeIds[i] >= (uint)types) throw new ArgumentOutOfRangeException(nameof(typeIds), typeIds[i], $"typeIds[{i}] = {typeIds[i]} is not a token type of this model (0..{types - 1}).");
        }
        int c = Classes, hs = _model.Config.HiddenSize;
        if (logits.Length != (long)lengths.Length * c)
            throw new ArgumentException($"'logits' has {logits.Length} elements; expected sequences*classes = {lengths.Length}*{c}.", nameof(logits));
        Enter();
        try
        {
            for (int s0 = 0, t0 = 0, s1, tokens; s0 < lengths.Length; s0 = s1, t0 += tokens)
            {
                s1 = NextPass(lengths, s0, out tokens);
                RunPass(ids.Slice(t0, tokens), lengths[s0..s1], typeIds.IsEmpty ? default : typeIds.Slice(t0, tokens));
                int n = s1 - s0;
                PoolerOutput(lengths[s0..s1]);
                _model.Classifier!.ForwardCore(_pooled.AsSpan(0, n * hs), n, logits.Slice(s0 * c, n * c), _poolScratch, default, null);
            }
        }
        finally { Volatile.Write(ref _busy, 0); }
    }

    /// <summary>
    /// The logits of text pairs (<c>[CLS] first [SEP] second [SEP]</c>, cut to <see cref="MaxTokensPerText"/> as
    /// <see cref="TextTokenizer.EncodePair(string, string, out int[])"/> cuts them), <c>[pairs, Classes]</c>, as packed passes.
    /// </summary>
    /// <exception cref="InvalidOperationException">The session has no tokenizer, the model no sequence-classification head, or another thread is using the session.</exception>
    /// <exception cref="ArgumentException">No pairs, a text is null, or logits has the wrong length.</exception>
    public void ClassifyPairs(IReadOnlyList<(string First, string Second)> pairs, Span<float> logits)
    {
        ArgumentNullException.ThrowIfNull(pairs);
        if (_tokenizer == null) throw new InvalidOperationException("this session was created without a tokenizer; use ClassifyIds.");
        if (pairs.Count == 0) throw new ArgumentException("no pairs.", nameof(pairs));
        var ids = new List<int>();
        var types = new List<int>();
        var lengths = new int[pairs.Count];
        int max = Math.Min(MaxTokensPerText, _tokenizer.MaxTokens);
        for (int i = 0; i < pairs.Count; i++)
        {
            if (pairs[i].First is null || pairs[i].Second is null) throw new ArgumentException($"pair {i} has a null text.", nameof(pairs));
            var p = _tokenizer.EncodePair(pairs[i].First, pairs[i].Second, max, out var t);
            ids.AddRange(p);
            types.AddRange(t);
            lengths[i] = p.Length;
        }
        // a model with one token type (RoBERTa, ModernBERT, DeBERTa-v3) does not read them: a template's type 1 on the second text is dropped
        ReadOnlySpan<int> typeIds = _model.Embeddings.TokenTypes > 1 ? System.Runtime.InteropServices.CollectionsMarshal.AsSpan(types) : default;
        ClassifyIds(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(ids), typeIds, lengths, logits);
    }

    /// <summary>
    /// The last hidden state of every token (<c>last_hidden_state</c>) for sequences of ids stored back to back, into
    /// <paramref name="output"/> <c>[tokens, HiddenWidth]</c>. Allocates nothing.
    /// </summary>
    /// <exception cref="ArgumentException">The lengths do not add up, a sequence is empty or too long, an id is outside the vocabulary, or output has the wrong length.</exception>
    /// <exception cref="InvalidOperationException">Another thread is using this session.</exception>
    /// <exception cref="ObjectDisposedException">The session or its model was disposed.</exception>
    public void HiddenStates(ReadOnlySpan<int> ids, ReadOnlySpan<int> lengths, Span<float> output)
    {
        Check(ids, lengths);
        int h = HiddenWidth;
        if (output.Length != (long)ids.Length * h)
            throw new ArgumentException($"'output' has {output.Length} elements; expected tokens*hidden = {ids.Length}*{h}.", nameof(output));
        Enter();
        try
        {
            for (int s0 = 0, t0 = 0, s1, tokens; s0 < lengths.Length; s0 = s1, t0 += tokens)
            {
                s1 = NextPass(lengths, s0, out tokens);
                RunPass(ids.Slice(t0, tokens), lengths[s0..s1]);
                _hidden.AsSpan(0, tokens * h).CopyTo(output.Slice(t0 * h, tokens * h));
            }
        }
        finally { Volatile.Write(ref _busy, 0); }
    }

    /// <summary>
    /// The end of the next pass: as many whole sequences from <paramref name="s0"/> on as fit
    /// <see cref="SentenceEmbedderOptions.MaxBatchTokens"/>, and their <paramref name="tokens"/> (at least one sequence:
    /// each fits, checked before).
    /// </summary>
    private int NextPass(ReadOnlySpan<int> lengths, int s0, out int tokens)
    {
        int s1 = s0;
        tokens = 0;
        while (s1 < lengths.Length && tokens + lengths[s1] <= Options.MaxBatchTokens) tokens += lengths[s1++];
        return s1;
    }

    /// <summary>Word-piece ids cut to <see cref="MaxTokensPerText"/>, keeping the final [SEP]; the same array when they fit.</summary>
    internal int[] FitToLimit(int[] ids) => ids.Length <= MaxTokensPerText ? ids : [.. ids.AsSpan(0, MaxTokensPerText - 1), ids[^1]];

    private void Check(ReadOnlySpan<int> ids, ReadOnlySpan<int> lengths)
    {
        if (lengths.IsEmpty) throw new ArgumentException("no sequences.", nameof(lengths));
        long sum = 0;
        foreach (int l in lengths)
        {
            if (l < 1 || l > MaxTokensPerText) throw new ArgumentException($"a sequence of {l} tokens; each needs 1..{MaxTokensPerText}.", nameof(lengths));
            sum += l;
        }
        if (sum != ids.Length) throw new ArgumentException($"'lengths' add up to {sum}; 'ids' has {ids.Length}.", nameof(lengths));
        int vocab = _model.Config.VocabSize;
        for (int i = 0; i < ids.Length; i++)
            if ((uint)ids[i] >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(ids), ids[i], $"ids[{i}] = {ids[i]} is outside the vocabulary (0..{vocab - 1}).");
    }

    private void RunPass(ReadOnlySpan<int> ids, ReadOnlySpan<int> lengths, ReadOnlySpan<int> typeIds = default)
    {
        int n = ids.Length, h = HiddenWidth;
        for (int t = 0; t < n; t++) { _input[2 * t] = ids[t]; _input[2 * t + 1] = typeIds.IsEmpty ? 0 : typeIds[t]; }
        _session.Run(_input.AsSpan(0, 2 * n), _hidden.AsSpan(0, n * h), lengths.Length > 1 ? lengths : default);
    }

    /// <summary>The mean of the last pass's hidden states of tokens [t0, t0 + len) into <paramref name="dst"/>.</summary>
    /// <summary>One sequence's tokens [t0, t0 + len) pooled into <paramref name="dst"/> as <see cref="_pooling"/> says (not the pooler).</summary>
    private void PoolTokens(int t0, int len, Span<float> dst)
    {
        int h = HiddenWidth;
        switch (_pooling)
        {
            case Pooling.Mean: MeanState(t0, len, dst); break;
            case Pooling.Cls: _hidden.AsSpan(t0 * h, h).CopyTo(dst); break;
            case Pooling.LastToken: _hidden.AsSpan((t0 + len - 1) * h, h).CopyTo(dst); break;
            case Pooling.Max:
                _hidden.AsSpan(t0 * h, h).CopyTo(dst);
                for (int t = 1; t < len; t++) TensorPrimitives.Max(dst, _hidden.AsSpan((t0 + t) * h, h), dst);
                break;
            case Pooling.MeanSqrtLength:
                _hidden.AsSpan(t0 * h, h).CopyTo(dst);
                for (int t = 1; t < len; t++) TensorPrimitives.Add(dst, _hidden.AsSpan((t0 + t) * h, h), dst);
                TensorPrimitives.Divide(dst, MathF.Sqrt(len), dst);
                break;
            default: // WeightedMean: Σ i·state_i / Σ i, i = 1 … len
                _hidden.AsSpan(t0 * h, h).CopyTo(dst);
                for (int t = 1; t < len; t++) TensorPrimitives.MultiplyAdd(_hidden.AsSpan((t0 + t) * h, h), t + 1f, dst, dst);
                TensorPrimitives.Divide(dst, len * (len + 1f) / 2f, dst);
                break;
        }
    }

    private void MeanState(int t0, int len, Span<float> dst)
    {
        int h = HiddenWidth;
        _hidden.AsSpan(t0 * h, h).CopyTo(dst);
        for (int t = 1; t < len; t++) TensorPrimitives.Add(dst, _hidden.AsSpan((t0 + t) * h, h), dst);
        TensorPrimitives.Multiply(dst, 1f / len, dst);
    }

    /// <summary>The pooler over each sequence's [CLS] state of the last pass, into <c>_pooled</c> <c>[sequences, hidden]</c>.</summary>
    private void PoolerOutput(ReadOnlySpan<int> lengths)
    {
        int h = HiddenWidth, n = lengths.Length;
        for (int s = 0, t = 0; s < n; t += lengths[s], s++)
        {
            var dst = _cls.AsSpan(s * h, h);
            // ModernBERT's classifier_pooling "mean": the sequence's mean state; else its first token's
            if (_model.PoolerMean) MeanState(t, lengths[s], dst);
            else _hidden.AsSpan(t * h, h).CopyTo(dst);
        }
        var pooled = _pooled.AsSpan(0, n * _model.Config.HiddenSize);
        _model.Pooler!.ForwardCore(_cls.AsSpan(0, n * h), n, pooled, _poolScratch, default, null);
        _model.PoolerNorm?.ForwardCore(pooled, n, pooled, null);
    }

    private void Pool(ReadOnlySpan<int> lengths, Span<float> output)
    {
        int h = HiddenWidth, d = _pooledWidth, t0 = 0, dim = Dimension;
        bool cut = dim < _fullDimension;
        // with Dense modules the pooled vectors are the modules' input: pooled into output's place first only when they
        // are as wide, else chunk by chunk through the modules below
        bool dense = _dense.Length > 0;
        for (int s = 0; s < lengths.Length; s++)
        {
            int len = lengths[s];
            var first = _hidden.AsSpan(t0 * h, h);
            if (_pooling != Pooling.Pooler)
            {
                Span<float> dst = dense ? _denseA.AsSpan((s % DenseChunk) * d, d) : cut ? _one : output.Slice(s * d, d);
                PoolTokens(t0, len, dst);
                if (!dense && cut) _one.AsSpan(0, dim).CopyTo(output.Slice(s * dim, dim));
                if (dense && (s % DenseChunk == DenseChunk - 1 || s == lengths.Length - 1)) ApplyDense(s - s % DenseChunk, s % DenseChunk + 1, output);
            }
            t0 += len;
        }
        if (_pooling == Pooling.Pooler)
        {
            PoolerOutput(lengths);
            if (!dense)
                for (int s = 0; s < lengths.Length; s++) _pooled.AsSpan(s * d, dim).CopyTo(output.Slice(s * dim, dim));
            else
                for (int s0 = 0; s0 < lengths.Length; s0 += DenseChunk)
                {
                    int n = Math.Min(DenseChunk, lengths.Length - s0);
                    _pooled.AsSpan(s0 * d, n * d).CopyTo(_denseA);
                    ApplyDense(s0, n, output);
                }
        }
        if (_normalize)
            for (int s = 0; s < lengths.Length; s++) Vectors.Normalize(output.Slice(s * dim, dim));
    }

    /// <summary>The Dense modules over <paramref name="n"/> pooled vectors in <c>_denseA</c> (sequences from <paramref name="s0"/>), into output.</summary>
    private void ApplyDense(int s0, int n, Span<float> output)
    {
        float[] src = _denseA, dst = _denseB;
        int width = _pooledWidth;
        foreach (var m in _dense)
        {
            m.Linear.ForwardCore(src.AsSpan(0, n * width), n, dst.AsSpan(0, n * m.OutFeatures), _denseScratch, default, null);
            (src, dst) = (dst, src);
            width = m.OutFeatures;
        }
        int dim = Dimension;
        for (int i = 0; i < n; i++) src.AsSpan(i * width, dim).CopyTo(output.Slice((s0 + i) * dim, dim));
    }

    private void Enter()
    {
        if (Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
            throw new InvalidOperationException("This embedding session is already running a call on another thread: one caller at a time (use a SentenceEmbedder, which leases sessions, for concurrent callers).");
        }
        if (Volatile.Read(ref _disposed) != 0) { Volatile.Write(ref _busy, 0); throw new ObjectDisposedException(nameof(EmbeddingSession)); }
    }

    /// <summary>Stops the session's threads once a call in progress has finished.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        var spin = new SpinWait();
        while (Interlocked.CompareExchange(ref _busy, 1, 0) != 0) spin.SpinOnce();
        _session.Dispose();
    }
}
