namespace FastAttn.Composition;

/// <summary>
/// A block with checked and unchecked entries: <see cref="Forward"/> (public) checks the spans against the batch and the
/// block's widths and scratch, then runs <see cref="ForwardCore"/>, which trusts its arguments. A session has already
/// checked a call once for the whole stack, so it calls <see cref="ForwardCore"/> directly.
/// </summary>
public abstract class Block : IBlock
{
    /// <inheritdoc/>
    public abstract int InputWidth { get; }
    /// <inheritdoc/>
    public abstract int OutputWidth { get; }
    /// <inheritdoc/>
    public abstract long ScratchSize(int maxTokens);
    /// <inheritdoc/>
    public virtual long WorkerScratchSize(int maxTokens) => 0;
    /// <inheritdoc/>
    public virtual void Validate(Batch batch) { }

    /// <summary>Checks the call, then runs the block.</summary>
    /// <exception cref="ArgumentException">A span is shorter than its shape, the lengths do not add up, or the block cannot run the batch.</exception>
    public void Forward(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
    {
        batch.Check();
        int t = batch.Tokens;
        ThrowHelper.Length(input.Length, (long)t * InputWidth, nameof(input), $"tokens*inputWidth = {t}*{InputWidth}");
        ThrowHelper.Length(output.Length, (long)t * OutputWidth, nameof(output), $"tokens*outputWidth = {t}*{OutputWidth}");
        ThrowHelper.Length(scratch.Length, ScratchSize(t), nameof(scratch), $"ScratchSize({t})");
        ReadOnlySpan<float> o = output;
        ThrowHelper.NoOverlap(o, input[..(t * InputWidth)], nameof(output), nameof(input));
        ThrowHelper.NoOverlap<float>(scratch, input, nameof(scratch), nameof(input));
        ThrowHelper.NoOverlap<float>(scratch, o, nameof(scratch), nameof(output));
        if (batch.Pool != null) batch.Pool.EnsureWorkerScratch(WorkerScratchSize(t));
        Validate(batch);
        ForwardCore(input, output, batch, scratch);
    }

    /// <summary>Runs the block on arguments already checked (by <see cref="Forward"/> or by a session).</summary>
    protected internal abstract void ForwardCore(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch);
}
