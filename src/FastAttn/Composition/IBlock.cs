namespace FastAttn.Composition;

/// <summary>
/// What one forward call runs on: the total token count, and for a packed batch the length of each sequence
/// (back to back) and optionally how many leading keys of each sequence are valid (key padding).
/// </summary>
public readonly ref struct Batch
{
    /// <summary>Tokens in the call (all sequences together).</summary>
    public int Tokens { get; }
    /// <summary>Lengths of the sequences stored back to back; empty = one sequence of <see cref="Tokens"/>.</summary>
    public ReadOnlySpan<int> SequenceLengths { get; }
    /// <summary>Valid (unpadded) keys per sequence; empty = every key is valid.</summary>
    public ReadOnlySpan<int> KeyValidLengths { get; }

    /// <summary>The session's worker threads (null = run on the calling thread only).</summary>
    internal Threading.WorkerPool? Pool { get; }

    /// <summary>A call over <paramref name="tokens"/> tokens.</summary>
    public Batch(int tokens, ReadOnlySpan<int> sequenceLengths = default, ReadOnlySpan<int> keyValidLengths = default)
    {
        Tokens = tokens; SequenceLengths = sequenceLengths; KeyValidLengths = keyValidLengths; Pool = null;
    }

    internal Batch(int tokens, ReadOnlySpan<int> sequenceLengths, ReadOnlySpan<int> keyValidLengths, Threading.WorkerPool? pool)
    {
        Tokens = tokens; SequenceLengths = sequenceLengths; KeyValidLengths = keyValidLengths; Pool = pool;
    }

    /// <summary>Number of sequences.</summary>
    public int Count => SequenceLengths.IsEmpty ? 1 : SequenceLengths.Length;

    /// <summary>Length of sequence <paramref name="s"/>.</summary>
    public int Length(int s) => SequenceLengths.IsEmpty ? Tokens : SequenceLengths[s];

    /// <summary>The longest sequence.</summary>
    public int LongestSequence
    {
        get
        {
            if (SequenceLengths.IsEmpty) return Tokens;
            int m = 0;
            foreach (int l in SequenceLengths) m = Math.Max(m, l);
            return m;
        }
    }
}

/// <summary>
/// What the composer knows of a block: its widths, how much scratch it needs for a number of tokens, and a
/// forward pass from an input span to an output span over a (possibly packed) <see cref="Batch"/>.
/// </summary>
public interface IBlock
{
    /// <summary>Features per input token.</summary>
    int InputWidth { get; }
    /// <summary>Features per output token.</summary>
    int OutputWidth { get; }
    /// <summary>Scratch floats for a call with up to <paramref name="maxTokens"/> tokens in total.</summary>
    long ScratchSize(int maxTokens);
    /// <summary>
    /// Throws <see cref="ArgumentException"/> if the block cannot run this batch (e.g. a sequence longer than a
    /// position table). The session calls it for every block before any block writes.
    /// </summary>
    void Validate(Batch batch) { }
    /// <summary>Runs the block. Shapes are checked by the session; the block trusts them.</summary>
    void Forward(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch);
}
