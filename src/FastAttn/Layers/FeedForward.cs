using FastAttn.Composition;
using FastAttn.Kernels;
using FastAttn.Threading;

namespace FastAttn.Layers;

/// <summary>Linear → activation → Linear (PyTorch's <c>linear1</c>, <c>linear2</c>), with the second layer's residual add fused.</summary>
public sealed class FeedForward : Block, IDisposable
{
    private readonly Linear _l1, _l2;
    /// <inheritdoc/>
    public override int InputWidth => _l1.InFeatures;
    /// <inheritdoc/>
    public override int OutputWidth => _l2.OutFeatures;
    /// <summary>Width of the hidden layer (PyTorch's <c>dim_feedforward</c>).</summary>
    public int HiddenWidth => _l1.OutFeatures;
    /// <summary>The hidden layer's activation.</summary>
    public Activation Activation => _l1.Activation;

    /// <summary>Builds the block from PyTorch-layout weights (<c>linear1</c> <c>[ff, d]</c>, <c>linear2</c> <c>[d, ff]</c>; biases may be empty).</summary>
    /// <exception cref="ArgumentException">Shapes do not match.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is below 1, or the activation is unknown.</exception>
    public FeedForward(int dModel, int ffDim, ReadOnlySpan<float> w1, ReadOnlySpan<float> b1, ReadOnlySpan<float> w2, ReadOnlySpan<float> b2, Activation activation)
        : this(dModel, ffDim, w1, b1, w2, b2, activation, Precision.F32, Precision.F32) { }

    /// <summary>As above, with each layer's weights stored and its product computed in the given precision.</summary>
    /// <exception cref="ArgumentException">Shapes do not match.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is below 1, or the activation or a precision is unknown.</exception>
    public FeedForward(int dModel, int ffDim, ReadOnlySpan<float> w1, ReadOnlySpan<float> b1, ReadOnlySpan<float> w2, ReadOnlySpan<float> b2, Activation activation,
        Precision linear1, Precision linear2)
    {
        _l1 = new Linear(w1, ffDim, dModel, b1, activation, linear1);
        try { _l2 = new Linear(w2, dModel, ffDim, b2, Activation.None, linear2); }
        catch { _l1.Dispose(); throw; }
    }

    /// <summary>Bytes of both layers' weights as stored.</summary>
    public long WeightBytes => _l1.WeightBytes + _l2.WeightBytes;
    /// <summary>The first layer (<c>linear1</c>).</summary>
    public Linear Linear1 => _l1;
    /// <summary>The second layer (<c>linear2</c>).</summary>
    public Linear Linear2 => _l2;

    /// <inheritdoc/>
    public override long ScratchSize(int maxTokens) => (long)maxTokens * _l1.OutFeatures + Math.Max(_l1.ScratchSize(maxTokens), _l2.ScratchSize(maxTokens));
    /// <inheritdoc/>
    public override long WorkerScratchSize(int maxTokens) => Math.Max(_l1.WorkerScratchSize(maxTokens), _l2.WorkerScratchSize(maxTokens));

    /// <inheritdoc/>
    protected internal override void ForwardCore(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
        => Core(input, output, batch.Tokens, scratch, default, batch.Pool);

    /// <summary>output = W2·act(W1·x + b1) + b2 [+ residual]; output may be the input's span (the input is read before output is written).</summary>
    /// <exception cref="ArgumentException">A span is shorter than its shape, or output overlaps the residual or the scratch.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="tokens"/> is below 1.</exception>
    public void Forward(ReadOnlySpan<float> input, Span<float> output, int tokens, Span<float> scratch, ReadOnlySpan<float> residual, WorkerPool? pool = null)
    {
        ThrowHelper.Positive(tokens, nameof(tokens));
        ThrowHelper.Length(input.Length, (long)tokens * InputWidth, nameof(input), $"tokens*dModel = {tokens}*{InputWidth}");
        ThrowHelper.Length(output.Length, (long)tokens * OutputWidth, nameof(output), $"tokens*dModel = {tokens}*{OutputWidth}");
        ThrowHelper.Length(scratch.Length, ScratchSize(tokens), nameof(scratch), $"ScratchSize({tokens})");
        if (!residual.IsEmpty) ThrowHelper.Length(residual.Length, (long)tokens * OutputWidth, nameof(residual), $"tokens*dModel = {tokens}*{OutputWidth}");
        ReadOnlySpan<float> o = output;
        ThrowHelper.NoOverlap(o, residual, nameof(output), nameof(residual));
        ThrowHelper.NoOverlap<float>(scratch, input, nameof(scratch), nameof(input));
        ThrowHelper.NoOverlap(scratch, o, nameof(scratch), nameof(output));
        pool?.EnsureWorkerScratch(WorkerScratchSize(tokens));
        Core(input, output, tokens, scratch, residual, pool);
    }

    internal void Core(ReadOnlySpan<float> input, Span<float> output, int tokens, Span<float> scratch, ReadOnlySpan<float> residual, WorkerPool? pool)
    {
        Span<float> h = scratch.Slice(0, tokens * _l1.OutFeatures);
        Span<float> work = scratch.Slice(tokens * _l1.OutFeatures);
        _l1.ForwardCore(input, tokens, h, work, default, pool);
        _l2.ForwardCore(h, tokens, output, work, residual, pool);
    }

    /// <inheritdoc/>
    public void Dispose() { _l1.Dispose(); _l2.Dispose(); }
}
