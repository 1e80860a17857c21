namespace FastAttn.Kernels;

/// <summary>
/// Everything about an attention call except the tensors themselves. A plain value: build it once (lengths and masks as
/// arrays or memory) and reuse it for every call.
/// </summary>
public struct AttentionOptions
{
    /// <summary>Query heads.</summary>
    public int Heads;
    /// <summary>Key/value heads (0 = <see cref="Heads"/>); Heads must be a multiple (grouped-query attention).</summary>
    public int KvHeads;
    /// <summary>Width of a query/key head.</summary>
    public int HeadDim;
    /// <summary>Width of a value head (0 = <see cref="HeadDim"/>).</summary>
    public int ValueHeadDim;
    /// <summary>Score function.</summary>
    public ScoreKind Score;
    /// <summary>Dot-product scale; null = 1/√HeadDim, 1 = unscaled.</summary>
    public float? Scale;
    /// <summary>Additive scores: w, <c>[Heads, HeadDim]</c>.</summary>
    public ReadOnlyMemory<float> AdditiveWeights;
    /// <summary>Soft-capping: s ← cap·tanh(s/cap) when &gt; 0.</summary>
    public float SoftCap;
    /// <summary>Normaliser.</summary>
    public Normalizer Normalizer;
    /// <summary>Sigmoid attention bias; null = −ln(keys).</summary>
    public float? SigmoidBias;
    /// <summary>Causal mask.</summary>
    public CausalMode Causal;
    /// <summary>
    /// Sliding window (local attention, e.g. ModernBERT's local layers, Longformer): query i sees only keys j with
    /// |i − j| ≤ Window, i and j being positions within their sequence; 0 = no window. Combines with every other mask.
    /// Keys outside every query of a tile's window are skipped, not masked: the cost grows with the window, not the sequence.
    /// </summary>
    public int Window;
    /// <summary>Packed batch: query lengths of the sequences stored back to back (empty = one sequence).</summary>
    public ReadOnlyMemory<int> SequenceLengths;
    /// <summary>Packed batch, cross-attention: key lengths per sequence (empty = <see cref="SequenceLengths"/>, or all keys).</summary>
    public ReadOnlyMemory<int> KeySequenceLengths;
    /// <summary>Key padding: valid keys per sequence (keys at or beyond are ignored); empty = all valid.</summary>
    public ReadOnlyMemory<int> KeyValidLengths;
    /// <summary>Boolean mask <c>[queryTokens, keyTokens]</c> (global indices), true = may attend; empty = none.</summary>
    public ReadOnlyMemory<bool> BoolMask;
    /// <summary>Additive float mask <c>[queryTokens, keyTokens]</c> added to the scores; empty = none.</summary>
    public ReadOnlyMemory<float> FloatMask;
    /// <summary>
    /// Distance bias per query head (ALiBi-style, symmetric): −slope_h·|i − j| is added to the scaled scores, where i
    /// and j are the query's and the key's positions within their sequence; <c>[Heads]</c>, empty = none.
    /// </summary>
    public ReadOnlyMemory<float> DistanceSlopes;
    /// <summary>
    /// Relative position bias per query head (MPNet's and T5's bucketed biases, expanded): <c>RelativeBias[h·(2·span − 1) +
    /// (j − i) + span − 1]</c> is added to the scaled scores of query position i and key position j within their
    /// sequence, span = <see cref="RelativeBiasSpan"/>; <c>[Heads, 2·span − 1]</c>, empty = none. Every sequence's query and
    /// key lengths must be at most span.
    /// </summary>
    public ReadOnlyMemory<float> RelativeBias;
    /// <summary>The longest sequence <see cref="RelativeBias"/> covers (distances −(span − 1) … span − 1).</summary>
    public int RelativeBiasSpan;
    /// <summary>Optional: receives α as <c>[Heads, queryTokens, keyTokens]</c> (zeros across sequences of a packed batch).</summary>
    public Memory<float> WeightsOut;
    /// <summary>Row strides (0 = dense: Heads·HeadDim for Q, KvHeads·HeadDim for K, KvHeads·ValueHeadDim for V, Heads·ValueHeadDim for the output).</summary>
    public int QStride, KStride, VStride, OutStride;
}

/// <summary>The options of one call as spans: what the kernel and the layers (whose lengths are spans) work with.</summary>
internal ref struct AttentionCall
{
    public int Heads;
    public int KvHeads;
    public int HeadDim;
    public int ValueHeadDim;
    public ScoreKind Score;
    public float? Scale;
    public ReadOnlySpan<float> AdditiveWeights;
    public float SoftCap;
    public Normalizer Normalizer;
    public float? SigmoidBias;
    public CausalMode Causal;
    public int Window;
    public ReadOnlySpan<int> SequenceLengths;
    public ReadOnlySpan<int> KeySequenceLengths;
    public ReadOnlySpan<int> KeyValidLengths;
    public ReadOnlySpan<bool> BoolMask;
    public ReadOnlySpan<float> FloatMask;
    public ReadOnlySpan<float> DistanceSlopes;
    public ReadOnlySpan<float> RelativeBias;
    public int RelativeBiasSpan;
    public Span<float> WeightsOut;
    public int QStride, KStride, VStride, OutStride;
    /// <summary>
    /// Pack denormal queries, keys and values as zeros (<see cref="ISimd{TVec}.ZeroDenormals"/>): set by the checked entry,
    /// for a caller's own data. The library's layers leave it off: their Q, K and V are products of operands the GEMM has
    /// already packed so (one can only be denormal when tiny operands make it so, and that product took the assists).
    /// </summary>
    public bool ZeroDenormals;
    /// <summary>
    /// Hand the (key/value head) groups out in the pool's affine blocks when the call splits by groups alone: thread w
    /// takes the heads whose q, k and v it projected (<see cref="Attention.SplitsByGroups"/>; set by the self-attention
    /// layer when it split its q|k|v product the same way). Work is the same either way; only which thread runs a head.
    /// </summary>
    public bool AffineGroups;

    /// <summary>The span view of public options (the memory fields' spans).</summary>
    public static AttentionCall From(in AttentionOptions o) => new()
    {
        Heads = o.Heads, KvHeads = o.KvHeads, HeadDim = o.HeadDim, ValueHeadDim = o.ValueHeadDim, Score = o.Score, Scale = o.Scale,
        AdditiveWeights = o.AdditiveWeights.Span, SoftCap = o.SoftCap, Normalizer = o.Normalizer, SigmoidBias = o.SigmoidBias, Causal = o.Causal, Window = o.Window,
        SequenceLengths = o.SequenceLengths.Span, KeySequenceLengths = o.KeySequenceLengths.Span, KeyValidLengths = o.KeyValidLengths.Span,
        BoolMask = o.BoolMask.Span, FloatMask = o.FloatMask.Span, DistanceSlopes = o.DistanceSlopes.Span, WeightsOut = o.WeightsOut.Span,
        RelativeBias = o.RelativeBias.Span, RelativeBiasSpan = o.RelativeBiasSpan,
        QStride = o.QStride, KStride = o.KStride, VStride = o.VStride, OutStride = o.OutStride,
    };
}
