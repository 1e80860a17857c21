using FastAttn.Composition;

namespace FastAttn.Layers;

/// <summary>A fully connected layer as a block of a <see cref="Stack"/>: y = act(x·Wᵀ + b) per token.</summary>
public sealed class LinearBlock : Block, IDisposable
{
    /// <summary>The layer.</summary>
    public Linear Linear { get; }
    /// <inheritdoc/>
    public override int InputWidth => Linear.InFeatures;
    /// <inheritdoc/>
    public override int OutputWidth => Linear.OutFeatures;

    /// <summary>Wraps <paramref name="linear"/> (which must not have segments).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="linear"/> is null.</exception>
    public LinearBlock(Linear linear)
    {
        Linear = linear ?? throw new ArgumentNullException(nameof(linear));
        if (linear.Weight.Segments != 1) ThrowHelper.Argument(nameof(linear), "a block needs a layer without segments.");
    }

    /// <inheritdoc/>
    public override long ScratchSize(int maxTokens) => Linear.ScratchSize(maxTokens);
    /// <inheritdoc/>
    public override long WorkerScratchSize(int maxTokens) => Linear.WorkerScratchSize(maxTokens);
    /// <inheritdoc/>
    protected internal override void ForwardCore(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
        => Linear.ForwardCore(input, batch.Tokens, output, scratch, default, batch.Pool);
    /// <inheritdoc/>
    public void Dispose() => Linear.Dispose();
}
