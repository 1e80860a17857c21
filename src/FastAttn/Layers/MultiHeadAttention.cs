using FastAttn.Composition;
using FastAttn.Kernels;

namespace FastAttn.Layers;

/// <summary>Score, normaliser and mask settings a <see cref="MultiHeadAttention"/> layer applies on every call.</summary>
public sealed record AttentionSettings
{
    /// <summary>Score function.</summary>
    public ScoreKind Score { get; init; }
    /// <summary>Dot-product scale (null = 1/√headDim).</summary>
    public float? Scale { get; init; }
    /// <summary>Soft cap (0 = off).</summary>
    public float SoftCap { get; init; }
    /// <summary>Normaliser.</summary>
    public Normalizer Normalizer { get; init; }
    /// <summary>Sigmoid bias (null = −ln L).</summary>
    public float? SigmoidBias { get; init; }
    /// <summary>Causal mask.</summary>
    public CausalMode Causal { get; init; }
    /// <summary>Additive score weights <c>[heads, headDim]</c> when <see cref="Score"/> is additive.</summary>
    public float[]? AdditiveWeights { get; init; }
    /// <summary>Distance bias per head: −slope·|i − j| added to the scores (ALiBi-style, symmetric); null = none.</summary>
    public float[]? DistanceSlopes { get; init; }
}

/// <summary>
/// Multi-head attention like PyTorch's <c>nn.MultiheadAttention</c> (batch-first, no dropout): Q/K/V input
/// projections (one packed <c>[3·dModel, dModel]</c> <c>in_proj_weight</c>, or separate <c>q/k/v_proj_weight</c>
/// with key and value widths <c>kdim</c>/<c>vdim</c>), optional biases, the fused attention kernel, and the output
/// projection. Self-attention runs as a block; cross-attention (queries from one sequence, keys and values
/// from another) through <see cref="ForwardCross"/>. Immutable; the output projection can fuse a residual add.
/// </summary>
public sealed class MultiHeadAttention : IBlock, IDisposable
{
    // Either one packed [3E, E] projection (self-attention with kdim = vdim = E) or three separate ones.
    private readonly Linear? _inProj, _qProj, _kProj, _vProj;
    private readonly Linear _outProj;
    private readonly AttentionSettings _settings;
    private readonly Rope? _rope;
    /// <summary>Model width (embed_dim).</summary>
    public int DModel { get; }
    /// <summary>Key input width (kdim).</summary>
    public int KeyWidth { get; }
    /// <summary>Value input width (vdim).</summary>
    public int ValueWidth { get; }
    /// <summary>Heads.</summary>
    public int Heads { get; }
    /// <summary>Head width.</summary>
    public int HeadDim => DModel / Heads;
    /// <summary>The score, normaliser and mask settings.</summary>
    public AttentionSettings Settings => _settings;
    /// <inheritdoc/>
    public int InputWidth => DModel;
    /// <inheritdoc/>
    public int OutputWidth => DModel;

    /// <summary>Builds the layer from PyTorch-layout weights with a packed <c>in_proj_weight</c> <c>[3·dModel, dModel]</c>.</summary>
    /// <exception cref="ArgumentException">Shapes do not match or heads does not divide dModel.</exception>
    public MultiHeadAttention(int dModel, int heads, ReadOnlySpan<float> inProjWeight, ReadOnlySpan<float> inProjBias,
        ReadOnlySpan<float> outProjWeight, ReadOnlySpan<float> outProjBias, AttentionSettings? settings = null, Rope? rope = null)
    {
        Check(dModel, heads, settings, rope);
        DModel = dModel; Heads = heads; KeyWidth = dModel; ValueWidth = dModel;
        _settings = settings ?? new AttentionSettings();
        _rope = rope;
        ThrowHelper.ExactLength(inProjWeight.Length, 3L * dModel * dModel, nameof(inProjWeight), $"[3*dModel, dModel] = [{3 * dModel}, {dModel}]");
        if (!inProjBias.IsEmpty) ThrowHelper.ExactLength(inProjBias.Length, 3L * dModel, nameof(inProjBias), $"3*dModel = {3 * dModel}");
        ThrowHelper.ExactLength(outProjWeight.Length, (long)dModel * dModel, nameof(outProjWeight), $"[dModel, dModel] = [{dModel}, {dModel}]");
        if (!outProjBias.IsEmpty) ThrowHelper.ExactLength(outProjBias.Length, dModel, nameof(outProjBias), "dModel");
        _inProj = new Linear(inProjWeight, 3 * dModel, dModel, inProjBias);
        if (dModel % Gemm.PanelWidth != 0)
        {
            // cross-attention projects queries, keys and values separately; blocks of the packed weight can be
            // used in place only when they start on a panel boundary
            int e = dModel, e2 = e * e;
            _qProj = new Linear(inProjWeight.Slice(0, e2), e, e, inProjBias.IsEmpty ? default : inProjBias.Slice(0, e));
            _kProj = new Linear(inProjWeight.Slice(e2, e2), e, e, inProjBias.IsEmpty ? default : inProjBias.Slice(e, e));
            _vProj = new Linear(inProjWeight.Slice(2 * e2, e2), e, e, inProjBias.IsEmpty ? default : inProjBias.Slice(2 * e, e));
        }
        _outProj = new Linear(outProjWeight, dModel, dModel, outProjBias);
    }

    /// <summary>
    /// Builds the layer from separate projections like PyTorch with <c>kdim</c>/<c>vdim</c>: <c>q_proj_weight</c>
    /// <c>[dModel, dModel]</c>, <c>k_proj_weight</c> <c>[dModel, keyWidth]</c>, <c>v_proj_weight</c>
    /// <c>[dModel, valueWidth]</c>, an optional packed <c>in_proj_bias</c> <c>[3·dModel]</c>, and the output projection.
    /// When keyWidth = valueWidth = dModel the three are packed into one projection for self-attention.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes do not match or heads does not divide dModel.</exception>
    public MultiHeadAttention(int dModel, int heads, ReadOnlySpan<float> qProjWeight, ReadOnlySpan<float> kProjWeight, ReadOnlySpan<float> vProjWeight,
        ReadOnlySpan<float> inProjBias, ReadOnlySpan<float> outProjWeight, ReadOnlySpan<float> outProjBias, int keyWidth = 0, int valueWidth = 0,
        AttentionSettings? settings = null, Rope? rope = null)
    {
        Check(dModel, heads, settings, rope);
        keyWidth = keyWidth == 0 ? dModel : keyWidth;
        valueWidth = valueWidth == 0 ? dModel : valueWidth;
        ThrowHelper.Positive(keyWidth, nameof(keyWidth));
        ThrowHelper.Positive(valueWidth, nameof(valueWidth));
        DModel = dModel; Heads = heads; KeyWidth = keyWidth; ValueWidth = valueWidth;
        _settings = settings ?? new AttentionSettings();
        _rope = rope;
        ThrowHelper.ExactLength(qProjWeight.Length, (long)dModel * dModel, nameof(qProjWeight), $"[dModel, dModel] = [{dModel}, {dModel}]");
        ThrowHelper.ExactLength(kProjWeight.Length, (long)dModel * keyWidth, nameof(kProjWeight), $"[dModel, keyWidth] = [{dModel}, {keyWidth}]");
        ThrowHelper.ExactLength(vProjWeight.Length, (long)dModel * valueWidth, nameof(vProjWeight), $"[dModel, valueWidth] = [{dModel}, {valueWidth}]");
        if (!inProjBias.IsEmpty) ThrowHelper.ExactLength(inProjBias.Length, 3L * dModel, nameof(inProjBias), $"3*dModel = {3 * dModel}");
        ThrowHelper.ExactLength(outProjWeight.Length, (long)dModel * dModel, nameof(outProjWeight), $"[dModel, dModel] = [{dModel}, {dModel}]");
        if (!outProjBias.IsEmpty) ThrowHelper.ExactLength(outProjBias.Length, dModel, nameof(outProjBias), "dModel");
        bool square = keyWidth == dModel && valueWidth == dModel;
        if (square)
        {
            // one packed projection serves self-attention (one GEMM) and, by blocks, cross-attention
            var packed = new float[3 * dModel * dModel];
            qProjWeight.CopyTo(packed);
            kProjWeight.CopyTo(packed.AsSpan(dModel * dModel));
            vProjWeight.CopyTo(packed.AsSpan(2 * dModel * dModel));
            _inProj = new Linear(packed, 3 * dModel, dModel, inProjBias);
        }
        if (!square || dModel % Gemm.PanelWidth != 0)
        {
            int e = dModel;
            _qProj = new Linear(qProjWeight, e, e, inProjBias.IsEmpty ? default : inProjBias.Slice(0, e));
            _kProj = new Linear(kProjWeight, e, keyWidth, inProjBias.IsEmpty ? default : inProjBias.Slice(e, e));
            _vProj = new Linear(vProjWeight, e, valueWidth, inProjBias.IsEmpty ? default : inProjBias.Slice(2 * e, e));
        }
        _outProj = new Linear(outProjWeight, dModel, dModel, outProjBias);
    }

    private static void Check(int dModel, int heads, AttentionSettings? settings, Rope? rope)
    {
        ThrowHelper.Positive(dModel, nameof(dModel));
        ThrowHelper.Positive(heads, nameof(heads));
        if (dModel % heads != 0) ThrowHelper.Argument(nameof(heads), $"'heads' = {heads} must divide dModel = {dModel}.");
        if (settings?.Score == ScoreKind.Additive && settings.AdditiveWeights?.Length != dModel)
            ThrowHelper.Argument(nameof(settings), $"additive scores need AdditiveWeights of heads*headDim = {dModel} elements.");
        if (settings?.DistanceSlopes is { } sl && (sl.Length != heads || sl.Any(x => !float.IsFinite(x))))
            ThrowHelper.Argument(nameof(settings), $"DistanceSlopes needs one finite slope per head ({heads}); it has {sl.Length}.");
        if (rope != null && rope.HeadDim != dModel / heads) ThrowHelper.Argument(nameof(rope), $"RoPE head width {rope.HeadDim} differs from headDim {dModel / heads}.");
    }

    private long AttnScratch(int maxKeys) => Attention.ScratchSize(HeadDim, HeadDim, maxKeys);

    private long ProjScratch(int rows)
    {
        long m = _outProj.ScratchSize(rows);
        if (_inProj != null) m = Math.Max(m, _inProj.ScratchSize(rows));
        if (_qProj != null) m = Math.Max(m, Math.Max(_qProj.ScratchSize(rows), Math.Max(_kProj!.ScratchSize(rows), _vProj!.ScratchSize(rows))));
        return m;
    }

    /// <inheritdoc/>
    public long ScratchSize(int maxTokens) => (long)maxTokens * 4 * DModel + Math.Max(AttnScratch(maxTokens), ProjScratch(maxTokens));

    /// <summary>Scratch floats for <see cref="ForwardCross"/> with up to the given query and key tokens.</summary>
    public long CrossScratchSize(int maxQueryTokens, int maxKeyTokens) =>
        ((long)maxQueryTokens * 2 + (long)maxKeyTokens * 2) * DModel
        + Math.Max(AttnScratch(maxKeyTokens), ProjScratch(Math.Max(maxQueryTokens, maxKeyTokens)));

    /// <inheritdoc/>
    public void Validate(Batch batch)
    {
        if (KeyWidth != DModel || ValueWidth != DModel)
            ThrowHelper.Argument("input", $"self-attention needs kdim = vdim = dModel = {DModel}; this layer has kdim {KeyWidth}, vdim {ValueWidth} (use ForwardCross).");
        if (_rope != null && batch.LongestSequence > _rope.MaxPositions)
            ThrowHelper.Argument("sequenceLengths", $"a sequence of {batch.LongestSequence} tokens is longer than the {_rope.MaxPositions} RoPE positions.");
    }

    /// <inheritdoc/>
    public void Forward(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
        => Forward(input, output, batch, scratch, default);

    /// <summary>Self-attention over input; output = out_proj(attention) [+ residual].</summary>
    public void Forward(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch, ReadOnlySpan<float> residual,
        ReadOnlySpan<bool> boolMask = default, ReadOnlySpan<float> floatMask = default)
    {
        Validate(batch);
        int d = DModel, tokens = batch.Tokens;
        Span<float> qkv = scratch.Slice(0, tokens * 3 * d);
        Span<float> attn = scratch.Slice(tokens * 3 * d, tokens * d);
        Span<float> work = scratch.Slice(tokens * 4 * d);
        _inProj!.Forward(input, tokens, qkv, work, default, batch.Pool);
        if (_rope != null)
        {
            _rope.Apply(qkv, tokens, 3 * d, 0, Heads, batch.SequenceLengths);
            _rope.Apply(qkv, tokens, 3 * d, d, Heads, batch.SequenceLengths);
        }
        var o = Options(batch.SequenceLengths, default, batch.KeyValidLengths, boolMask, floatMask);
        o.QStride = 3 * d; o.KStride = 3 * d; o.VStride = 3 * d;
        Attention.Forward(qkv, tokens, qkv.Slice(d), qkv.Slice(2 * d), tokens, attn, work, o, batch.Pool);
        _outProj.Forward(attn, tokens, output, work, residual, batch.Pool);
    }

    /// <summary>
    /// Cross-attention: queries from <paramref name="query"/> <c>[queryTokens, dModel]</c>, keys and values from
    /// <paramref name="key"/> <c>[keyTokens, kdim]</c> and <paramref name="value"/> <c>[keyTokens, vdim]</c>; output
    /// <c>[queryTokens, dModel]</c>. For packed batches give both length lists (sequence s of the queries attends
    /// to sequence s of the keys). RoPE, when set, rotates queries and keys by their own positions.
    /// </summary>
    /// <exception cref="ArgumentException">A span does not match its shape, lengths do not add up, or scratch is short.</exception>
    public void ForwardCross(ReadOnlySpan<float> query, int queryTokens, ReadOnlySpan<float> key, ReadOnlySpan<float> value, int keyTokens,
        Span<float> output, Span<float> scratch, ReadOnlySpan<int> queryLengths = default, ReadOnlySpan<int> keyLengths = default,
        ReadOnlySpan<int> keyValidLengths = default, ReadOnlySpan<bool> boolMask = default, ReadOnlySpan<float> floatMask = default,
        ReadOnlySpan<float> residual = default)
    {
        int d = DModel;
        ThrowHelper.Positive(queryTokens, nameof(queryTokens));
        ThrowHelper.Positive(keyTokens, nameof(keyTokens));
        ThrowHelper.Length(query.Length, (long)queryTokens * d, nameof(query), $"[queryTokens, dModel] = [{queryTokens}, {d}]");
        ThrowHelper.Length(key.Length, (long)keyTokens * KeyWidth, nameof(key), $"[keyTokens, kdim] = [{keyTokens}, {KeyWidth}]");
        ThrowHelper.Length(value.Length, (long)keyTokens * ValueWidth, nameof(value), $"[keyTokens, vdim] = [{keyTokens}, {ValueWidth}]");
        ThrowHelper.Length(output.Length, (long)queryTokens * d, nameof(output), $"[queryTokens, dModel] = [{queryTokens}, {d}]");
        if (!residual.IsEmpty) ThrowHelper.Length(residual.Length, (long)queryTokens * d, nameof(residual), $"[queryTokens, dModel] = [{queryTokens}, {d}]");
        if (queryLengths.IsEmpty != keyLengths.IsEmpty)
            ThrowHelper.Argument(nameof(keyLengths), "'queryLengths' and 'keyLengths' must be given together for a packed batch.");
        if (!queryLengths.IsEmpty && queryLengths.Length != keyLengths.Length)
            ThrowHelper.Argument(nameof(keyLengths), $"'keyLengths' has {keyLengths.Length} sequences; 'queryLengths' has {queryLengths.Length}.");
        if (_rope != null)
        {
            int lq = queryTokens, lk = keyTokens;
            if (!queryLengths.IsEmpty) { lq = 0; foreach (int l in queryLengths) lq = Math.Max(lq, l); lk = 0; foreach (int l in keyLengths) lk = Math.Max(lk, l); }
            if (Math.Max(lq, lk) > _rope.MaxPositions)
                ThrowHelper.Argument(nameof(queryLengths), $"a sequence of {Math.Max(lq, lk)} tokens is longer than the {_rope.MaxPositions} RoPE positions.");
        }
        ThrowHelper.Length(scratch.Length, CrossScratchSize(queryTokens, keyTokens), nameof(scratch), $"CrossScratchSize({queryTokens}, {keyTokens})");
        Span<float> q = scratch.Slice(0, queryTokens * d);
        Span<float> k = scratch.Slice(queryTokens * d, keyTokens * d);
        Span<float> v = scratch.Slice((queryTokens + keyTokens) * d, keyTokens * d);
        Span<float> attn = scratch.Slice((queryTokens + 2 * keyTokens) * d, queryTokens * d);
        Span<float> work = scratch.Slice((2 * queryTokens + 2 * keyTokens) * d);
        // the attention kernel validates lengths and masks before anything is written to output
        var o = Options(queryLengths, keyLengths, keyValidLengths, boolMask, floatMask);
        Attention.Validate(queryTokens, keyTokens, attn, work, o);
        if (_qProj != null)
        {
            _qProj.Forward(query, queryTokens, q, work);
            _kProj!.Forward(key, keyTokens, k, work);
            _vProj!.Forward(value, keyTokens, v, work);
        }
        else
        {
            // packed in_proj: rows [0, d) project queries, [d, 2d) keys, [2d, 3d) values
            _inProj!.ForwardRows(query, queryTokens, q, work, 0, d);
            _inProj.ForwardRows(key, keyTokens, k, work, d, d);
            _inProj.ForwardRows(value, keyTokens, v, work, 2 * d, d);
        }
        if (_rope != null)
        {
            _rope.Apply(q, queryTokens, d, 0, Heads, queryLengths);
            _rope.Apply(k, keyTokens, d, 0, Heads, keyLengths);
        }
        Attention.Forward(q, queryTokens, k, v, keyTokens, attn, work, o);
        _outProj.Forward(attn, queryTokens, output, work, residual);
    }

    private AttentionOptions Options(ReadOnlySpan<int> queryLengths, ReadOnlySpan<int> keyLengths, ReadOnlySpan<int> keyValid,
        ReadOnlySpan<bool> boolMask, ReadOnlySpan<float> floatMask) => new()
    {
        Heads = Heads, HeadDim = HeadDim, Score = _settings.Score, Scale = _settings.Scale, SoftCap = _settings.SoftCap,
        Normalizer = _settings.Normalizer, SigmoidBias = _settings.SigmoidBias, Causal = _settings.Causal,
        AdditiveWeights = _settings.AdditiveWeights, DistanceSlopes = _settings.DistanceSlopes,
        SequenceLengths = queryLengths.Length > 1 || !keyLengths.IsEmpty ? queryLengths : default,
        KeySequenceLengths = keyLengths, KeyValidLengths = keyValid, BoolMask = boolMask, FloatMask = floatMask,
    };

    /// <inheritdoc/>
    public void Dispose()
    {
        _inProj?.Dispose(); _qProj?.Dispose(); _kProj?.Dispose(); _vProj?.Dispose(); _outProj.Dispose();
    }
}

/// <summary>Linear → activation → Linear, with the second layer's residual add fused.</summary>
public sealed class FeedForward : IBlock, IDisposable
{
    private readonly Linear _l1, _l2;
    /// <inheritdoc/>
    public int InputWidth => _l1.InFeatures;
    /// <inheritdoc/>
    public int OutputWidth => _l2.OutFeatures;
    /// <summary>Width of the hidden layer (PyTorch's <c>dim_feedforward</c>).</summary>
    public int HiddenWidth => _l1.OutFeatures;

    /// <summary>Builds the block from PyTorch-layout weights (<c>linear1</c> <c>[ff, d]</c>, <c>linear2</c> <c>[d, ff]</c>).</summary>
    public FeedForward(int dModel, int ffDim, ReadOnlySpan<float> w1, ReadOnlySpan<float> b1, ReadOnlySpan<float> w2, ReadOnlySpan<float> b2, Activation activation)
    {
        _l1 = new Linear(w1, ffDim, dModel, b1, activation);
        _l2 = new Linear(w2, dModel, ffDim, b2);
    }

    /// <inheritdoc/>
    public long ScratchSize(int maxTokens) => (long)maxTokens * _l1.OutFeatures + Math.Max(_l1.ScratchSize(maxTokens), _l2.ScratchSize(maxTokens));

    /// <inheritdoc/>
    public void Forward(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
        => Forward(input, output, batch.Tokens, scratch, default, batch.Pool);

    /// <summary>output = W2·act(W1·x + b1) + b2 [+ residual].</summary>
    public void Forward(ReadOnlySpan<float> input, Span<float> output, int tokens, Span<float> scratch, ReadOnlySpan<float> residual)
        => Forward(input, output, tokens, scratch, residual, null);

    internal void Forward(ReadOnlySpan<float> input, Span<float> output, int tokens, Span<float> scratch, ReadOnlySpan<float> residual,
        Threading.WorkerPool? pool)
    {
        Span<float> h = scratch.Slice(0, tokens * _l1.OutFeatures);
        Span<float> work = scratch.Slice(tokens * _l1.OutFeatures);
        _l1.Forward(input, tokens, h, work, default, pool);
        _l2.Forward(h, tokens, output, work, residual, pool);
    }

    /// <inheritdoc/>
    public void Dispose() { _l1.Dispose(); _l2.Dispose(); }
}

/// <summary>
/// One transformer encoder layer like PyTorch's <c>nn.TransformerEncoderLayer</c> (batch-first, eval mode):
/// post-norm x = norm1(x + attn(x)); x = norm2(x + ff(x)), or pre-norm (<c>norm_first</c>)
/// x = x + attn(norm1(x)); x = x + ff(norm2(x)). Residual adds are fused into the projections' epilogues.
/// </summary>
public sealed class EncoderBlock : IBlock, IDisposable
{
    /// <summary>Self-attention.</summary>
    public MultiHeadAttention Attention { get; }
    /// <summary>Feed-forward.</summary>
    public FeedForward FeedForward { get; }
    /// <summary>First norm.</summary>
    public LayerNorm Norm1 { get; }
    /// <summary>Second norm.</summary>
    public LayerNorm Norm2 { get; }
    /// <summary>Pre-norm when true.</summary>
    public bool NormFirst { get; }
    /// <inheritdoc/>
    public int InputWidth => Attention.DModel;
    /// <inheritdoc/>
    public int OutputWidth => Attention.DModel;

    /// <summary>Assembles a block from its parts.</summary>
    public EncoderBlock(MultiHeadAttention attention, FeedForward feedForward, LayerNorm norm1, LayerNorm norm2, bool normFirst)
    {
        Attention = attention; FeedForward = feedForward; Norm1 = norm1; Norm2 = norm2; NormFirst = normFirst;
        if (feedForward.InputWidth != attention.DModel || norm1.Width != attention.DModel || norm2.Width != attention.DModel)
            ThrowHelper.Argument(nameof(feedForward), "all parts of an encoder block must have width dModel.");
    }

    /// <inheritdoc/>
    public long ScratchSize(int maxTokens) => (long)maxTokens * InputWidth + Math.Max(Attention.ScratchSize(maxTokens), FeedForward.ScratchSize(maxTokens));

    /// <inheritdoc/>
    public void Validate(Batch batch) => Attention.Validate(batch);

    /// <inheritdoc/>
    public void Forward(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
    {
        int tokens = batch.Tokens, n = tokens * InputWidth;
        Span<float> h = scratch.Slice(0, n);
        Span<float> work = scratch.Slice(n);
        var pool = batch.Pool;
        if (NormFirst)
        {
            Norm1.Forward(input, tokens, output, pool);                            // output = norm1(x)
            Attention.Forward(output, h, batch, work, input);                      // h = x + attn(norm1 x)
            Norm2.Forward(h, tokens, output, pool);                                // output = norm2(h)
            FeedForward.Forward(output, output, tokens, work, h, pool);            // output = h + ff(norm2 h)
        }
        else
        {
            Attention.Forward(input, h, batch, work, input);                       // h = x + attn(x)
            Norm1.Forward(h, tokens, h, pool);
            FeedForward.Forward(h, output, tokens, work, h, pool);                 // output = h + ff(h)
            Norm2.Forward(output, tokens, output, pool);
        }
    }

    /// <inheritdoc/>
    public void Dispose() { Attention.Dispose(); FeedForward.Dispose(); }
}
