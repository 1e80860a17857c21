namespace FastAttn.Composition;

/// <summary>
/// What the composer knows of a block: its widths, how much scratch it needs for a number of tokens, and a
/// forward pass from an input span to an output span. A packed batch of sequences arrives as
/// <c>[tokens, width]</c> with the lengths alongside (empty lengths = one sequence of all tokens).
/// </summary>
public interface IBlock
{
    /// <summary>Features per input token.</summary>
    int InputWidth { get; }
    /// <summary>Features per output token.</summary>
    int OutputWidth { get; }
    /// <summary>Scratch floats for a call with up to <paramref name="maxTokens"/> tokens in total.</summary>
    long ScratchSize(int maxTokens);
    /// <summary>Runs the block. Shapes are checked by the session; the block trusts them.</summary>
    void Forward(ReadOnlySpan<float> input, Span<float> output, int tokens, ReadOnlySpan<int> sequenceLengths, Span<float> scratch);
}
