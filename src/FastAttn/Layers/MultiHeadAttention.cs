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
}

/// <summary>
/// Multi-head self-attention like PyTorch's <c>nn.MultiheadAttention</c> (batch-first, no dropout): a packed
/// <c>[3·dModel, dModel]</c> input projection (<c>in_proj_weight</c>), optional biases, the fused attention
/// kernel, and the output projection. Immutable; the output projection can fuse a residual add.
/// </summary>
public sealed class MultiHeadAttention : IBlock, IDisposable
{
    private readonly Linear _inProj, _outProj;
    private readonly AttentionSettings _settings;
    private readonly Rope? _rope;
    /// <summary>Model width.</summary>
    public int DModel { get; }
    /// <summary>Heads.</summary>
    public int Heads { get; }
    /// <summary>Head width.</summary>
    public int HeadDim => DModel / Heads;
    /// <inheritdoc/>
    public int InputWidth => DModel;
    /// <inheritdoc/>
    public int OutputWidth => DModel;

    /// <summary>Builds the layer from PyTorch-layout weights.</summary>
    /// <exception cref="ArgumentException">Shapes do not match or heads does not divide dModel.</exception>
    public MultiHeadAttention(int dModel, int heads, ReadOnlySpan<float> inProjWeight, ReadOnlySpan<float> inProjBias,
        ReadOnlySpan<float> outProjWeight, ReadOnlySpan<float> outProjBias, AttentionSettings? settings = null, Rope? rope = null)
    {
        ThrowHelper.Positive(dModel, nameof(dModel));
        ThrowHelper.Positive(heads, nameof(heads));
        if (dModel % heads != 0) ThrowHelper.Argument(nameof(heads), $"'heads' = {heads} must divide dModel = {dModel}.");
        DModel = dModel; Heads = heads;
        _settings = settings ?? new AttentionSettings();
        if (_settings.Score == ScoreKind.Additive && _settings.AdditiveWeights?.Length != dModel)
            ThrowHelper.Argument(nameof(settings), $"additive scores need AdditiveWeights of heads*headDim = {dModel} elements.");
        if (rope != null && rope.HeadDim != dModel / heads) ThrowHelper.Argument(nameof(rope), $"RoPE head width {rope.HeadDim} differs from headDim {dModel / heads}.");
        _rope = rope;
        _inProj = new Linear(inProjWeight, 3 * dModel, dModel, inProjBias);
        _outProj = new Linear(outProjWeight, dModel, dModel, outProjBias);
    }

    private long AttnScratch(int maxTokens) => Attention.ScratchSize(HeadDim, HeadDim, maxTokens);

    /// <inheritdoc/>
    public long ScratchSize(int maxTokens) =>
        (long)maxTokens * 4 * DModel + Math.Max(AttnScratch(maxTokens), Math.Max(_inProj.ScratchSize(maxTokens), _outProj.ScratchSize(maxTokens)));

    /// <inheritdoc/>
    public void Forward(ReadOnlySpan<float> input, Span<float> output, int tokens, ReadOnlySpan<int> sequenceLengths, Span<float> scratch)
        => Forward(input, output, tokens, sequenceLengths, scratch, default);

    /// <summary>Self-attention over input; output = out_proj(attention) [+ residual].</summary>
    public void Forward(ReadOnlySpan<float> input, Span<float> output, int tokens, ReadOnlySpan<int> sequenceLengths, Span<float> scratch,
        ReadOnlySpan<float> residual, ReadOnlySpan<int> keyValidLengths = default)
    {
        int d = DModel;
        Span<float> qkv = scratch.Slice(0, tokens * 3 * d);
        Span<float> attn = scratch.Slice(tokens * 3 * d, tokens * d);
        Span<float> work = scratch.Slice(tokens * 4 * d);
        _inProj.Forward(input, tokens, qkv, work);
        if (_rope != null)
        {
            _rope.Apply(qkv, tokens, 3 * d, 0, Heads, sequenceLengths);
            _rope.Apply(qkv, tokens, 3 * d, d, Heads, sequenceLengths);
        }
        var o = new AttentionOptions
        {
            Heads = Heads, HeadDim = HeadDim, Score = _settings.Score, Scale = _settings.Scale, SoftCap = _settings.SoftCap,
            Normalizer = _settings.Normalizer, SigmoidBias = _settings.SigmoidBias, Causal = _settings.Causal,
            AdditiveWeights = _settings.AdditiveWeights, QStride = 3 * d, KStride = 3 * d, VStride = 3 * d,
            SequenceLengths = sequenceLengths.Length > 1 ? sequenceLengths : default, KeyValidLengths = keyValidLengths,
        };
        Attention.Forward(qkv, tokens, qkv.Slice(d), qkv.Slice(2 * d), tokens, attn, work, o);
        _outProj.Forward(attn, tokens, output, work, residual);
    }

    /// <inheritdoc/>
    public void Dispose() { _inProj.Dispose(); _outProj.Dispose(); }
}

/// <summary>Linear → activation → Linear, with the second layer's residual add fused.</summary>
public sealed class FeedForward : IBlock, IDisposable
{
    private readonly Linear _l1, _l2;
    /// <inheritdoc/>
    public int InputWidth => _l1.InFeatures;
    /// <inheritdoc/>
    public int OutputWidth => _l2.OutFeatures;

    /// <summary>Builds the block from PyTorch-layout weights (<c>linear1</c> <c>[ff, d]</c>, <c>linear2</c> <c>[d, ff]</c>).</summary>
    public FeedForward(int dModel, int ffDim, ReadOnlySpan<float> w1, ReadOnlySpan<float> b1, ReadOnlySpan<float> w2, ReadOnlySpan<float> b2, Activation activation)
    {
        _l1 = new Linear(w1, ffDim, dModel, b1, activation);
        _l2 = new Linear(w2, dModel, ffDim, b2);
    }

    /// <inheritdoc/>
    public long ScratchSize(int maxTokens) => (long)maxTokens * _l1.OutFeatures + Math.Max(_l1.ScratchSize(maxTokens), _l2.ScratchSize(maxTokens));

    /// <inheritdoc/>
    public void Forward(ReadOnlySpan<float> input, Span<float> output, int tokens, ReadOnlySpan<int> sequenceLengths, Span<float> scratch)
        => Forward(input, output, tokens, scratch, default);

    /// <summary>output = W2·act(W1·x + b1) + b2 [+ residual].</summary>
    public void Forward(ReadOnlySpan<float> input, Span<float> output, int tokens, Span<float> scratch, ReadOnlySpan<float> residual)
    {
        Span<float> h = scratch.Slice(0, tokens * _l1.OutFeatures);
        Span<float> work = scratch.Slice(tokens * _l1.OutFeatures);
        _l1.Forward(input, tokens, h, work);
        _l2.Forward(h, tokens, output, work, residual);
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
    public void Forward(ReadOnlySpan<float> input, Span<float> output, int tokens, ReadOnlySpan<int> sequenceLengths, Span<float> scratch)
    {
        int n = tokens * InputWidth;
        Span<float> h = scratch.Slice(0, n);
        Span<float> work = scratch.Slice(n);
        if (NormFirst)
        {
            Norm1.Forward(input, tokens, output);                                   // output = norm1(x)
            Attention.Forward(output, h, tokens, sequenceLengths, work, input);    // h = x + attn(norm1 x)
            Norm2.Forward(h, tokens, output);                                      // output = norm2(h)
            FeedForward.Forward(output, output, tokens, work, h);                  // output = h + ff(norm2 h)
        }
        else
        {
            Attention.Forward(input, h, tokens, sequenceLengths, work, input);     // h = x + attn(x)
            Norm1.Forward(h, tokens, h);
            FeedForward.Forward(h, output, tokens, work, h);                       // output = h + ff(h)
            Norm2.Forward(output, tokens, output);
        }
    }

    /// <inheritdoc/>
    public void Dispose() { Attention.Dispose(); FeedForward.Dispose(); }
}
