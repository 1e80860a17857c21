using FastAttn.Composition;

namespace FastAttn.Layers;

/// <summary>A LayerNorm or RmsNorm as a block (e.g. the final <c>norm</c> of an <c>nn.TransformerEncoder</c>).</summary>
public sealed class NormBlock : Block
{
    /// <summary>The LayerNorm (null when this block wraps an RmsNorm).</summary>
    public LayerNorm? Norm { get; }
    /// <summary>The RmsNorm (null when this block wraps a LayerNorm).</summary>
    public RmsNorm? Rms { get; }
    /// <inheritdoc/>
    public override int InputWidth => Norm?.Width ?? Rms!.Width;
    /// <inheritdoc/>
    public override int OutputWidth => InputWidth;

    /// <summary>Wraps a LayerNorm.</summary>
    public NormBlock(LayerNorm norm) => Norm = norm ?? throw new ArgumentNullException(nameof(norm));
    /// <summary>Wraps an RmsNorm.</summary>
    public NormBlock(RmsNorm norm) => Rms = norm ?? throw new ArgumentNullException(nameof(norm));

    /// <inheritdoc/>
    public override long ScratchSize(int maxTokens) => 0;
    /// <inheritdoc/>
    protected internal override void ForwardCore(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
    {
        if (Norm != null) Norm.ForwardCore(input, batch.Tokens, output, batch.Pool);
        else Rms!.ForwardCore(input, batch.Tokens, output, batch.Pool);
    }
}
