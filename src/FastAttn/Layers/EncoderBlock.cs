using FastAttn.Composition;

namespace FastAttn.Layers;

/// <summary>
/// One transformer encoder layer like PyTorch's <c>nn.TransformerEncoderLayer</c> (batch-first, eval mode), also a BERT
/// layer: post-norm x = norm1(x + attn(x)); x = norm2(x + ff(x)), or pre-norm (<c>norm_first</c>)
/// x = x + attn(norm1(x)); x = x + ff(norm2(x)). Residual adds are fused into the projections' epilogues.
/// </summary>
public sealed class EncoderBlock : Block, IDisposable
{
    /// <summary>Self-attention.</summary>
    public MultiHeadAttention Attention { get; }
    /// <summary>Feed-forward.</summary>
    public FeedForward FeedForward { get; }
    /// <summary>First norm.</summary>
    public LayerNorm Norm1 { get; }
    /// <summary>Second norm.</summary>
    public LayerNorm Norm2 { get; }
    /// <summary>Bytes of the block's weights as stored (projections, feed-forward, the two norms).</summary>
    public long WeightBytes => Attention.WeightBytes + FeedForward.WeightBytes + 4L * 2 * (Norm1.Width + Norm2.Width);
    /// <summary>Pre-norm when true.</summary>
    public bool NormFirst { get; }
    /// <inheritdoc/>
    public override int InputWidth => Attention.DModel;
    /// <inheritdoc/>
    public override int OutputWidth => Attention.DModel;

    /// <summary>Assembles a block from its parts.</summary>
    /// <exception cref="ArgumentNullException">A part is null.</exception>
    /// <exception cref="ArgumentException">The parts' widths differ.</exception>
    public EncoderBlock(MultiHeadAttention attention, FeedForward feedForward, LayerNorm norm1, LayerNorm norm2, bool normFirst)
    {
        Attention = attention ?? throw new ArgumentNullException(nameof(attention));
        FeedForward = feedForward ?? throw new ArgumentNullException(nameof(feedForward));
        Norm1 = norm1 ?? throw new ArgumentNullException(nameof(norm1));
        Norm2 = norm2 ?? throw new ArgumentNullException(nameof(norm2));
        NormFirst = normFirst;
        if (feedForward.InputWidth != attention.DModel || feedForward.OutputWidth != attention.DModel || norm1.Width != attention.DModel || norm2.Width != attention.DModel)
            ThrowHelper.Argument(nameof(feedForward), "all parts of an encoder block must have width dModel.");
    }

    /// <inheritdoc/>
    public override long ScratchSize(int maxTokens) => (long)maxTokens * InputWidth + Math.Max(Attention.ScratchSize(maxTokens), FeedForward.ScratchSize(maxTokens));
    /// <inheritdoc/>
    public override long WorkerScratchSize(int maxTokens) => Math.Max(Attention.WorkerScratchSize(maxTokens), FeedForward.WorkerScratchSize(maxTokens));

    /// <inheritdoc/>
    public override void Validate(Batch batch) => Attention.Validate(batch);

    /// <inheritdoc/>
    protected internal override void ForwardCore(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
    {
        int tokens = batch.Tokens, n = tokens * InputWidth;
        Span<float> h = scratch.Slice(0, n);
        Span<float> work = scratch.Slice(n);
        var pool = batch.Pool;
        if (NormFirst)
        {
            Norm1.ForwardCore(input, tokens, output, pool);                        // output = norm1(x)
            Attention.SelfCore(output, h, batch, work, input, default, default);   // h = x + attn(norm1 x)
            Norm2.ForwardCore(h, tokens, output, pool);                            // output = norm2(h)
            FeedForward.Core(output, output, tokens, work, h, pool);               // output = h + ff(norm2 h)
        }
        else
        {
            Attention.SelfCore(input, h, batch, work, input, default, default);    // h = x + attn(x)
            Norm1.ForwardCore(h, tokens, h, pool);
            FeedForward.Core(h, output, tokens, work, h, pool);                    // output = h + ff(h)
            Norm2.ForwardCore(output, tokens, output, pool);
        }
    }

    /// <inheritdoc/>
    public void Dispose() { Attention.Dispose(); FeedForward.Dispose(); }
}
