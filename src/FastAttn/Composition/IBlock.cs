namespace FastAttn.Composition;

/// <summary>
/// What the composer knows of a block: its widths, how much scratch it needs for a number of tokens (on the calling
/// thread and on each worker thread), and a forward pass from an input span to an output span over a (possibly packed)
/// <see cref="Batch"/>. Derive from <see cref="Block"/> to get the shape checks for free.
/// </summary>
public interface IBlock
{
    /// <summary>Features per input token.</summary>
    int InputWidth { get; }
    /// <summary>Features per output token.</summary>
    int OutputWidth { get; }
    /// <summary>Scratch floats the calling thread needs for a call with up to <paramref name="maxTokens"/> tokens in total.</summary>
    long ScratchSize(int maxTokens);
    /// <summary>Scratch floats each worker thread of a session's pool needs for such a call (0 when the block runs on the caller only).</summary>
    long WorkerScratchSize(int maxTokens) => 0;
    /// <summary>
    /// Throws <see cref="ArgumentException"/> if the block cannot run this batch (e.g. a sequence longer than a
    /// position table). The session calls it for every block before any block writes.
    /// </summary>
    void Validate(Batch batch) { }
    /// <summary>
    /// Runs the block: input <c>[batch.Tokens, InputWidth]</c> → output <c>[batch.Tokens, OutputWidth]</c>. Must not read
    /// input after writing output where they may share memory (the session never passes overlapping spans).
    /// </summary>
    void Forward(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch);
}
