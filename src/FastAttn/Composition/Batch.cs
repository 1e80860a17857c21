using FastAttn.Threading;

namespace FastAttn.Composition;

/// <summary>
/// What one forward call runs on: the total token count, for a packed batch the length of each sequence (back to back)
/// and optionally how many leading keys of each sequence are valid (key padding), and the threads the call may use.
/// </summary>
public readonly ref struct Batch
{
    /// <summary>Tokens in the call (all sequences together).</summary>
    public int Tokens { get; }
    /// <summary>Lengths of the sequences stored back to back; empty = one sequence of <see cref="Tokens"/>.</summary>
    public ReadOnlySpan<int> SequenceLengths { get; }
    /// <summary>Valid (unpadded) keys per sequence; empty = every key is valid.</summary>
    public ReadOnlySpan<int> KeyValidLengths { get; }
    /// <summary>
    /// The session's worker threads (null = the calling thread only). A custom block passes it to the kernels
    /// (<c>Gemm.Linear</c>, <c>Attention.Forward</c>) or runs its own <see cref="IParallelWork"/> on it.
    /// </summary>
    public WorkerPool? Pool { get; }

    /// <summary>A call over <paramref name="tokens"/> tokens.</summary>
    public Batch(int tokens, ReadOnlySpan<int> sequenceLengths = default, ReadOnlySpan<int> keyValidLengths = default, WorkerPool? pool = null)
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

    /// <summary>Checks the lengths: at least one token, sequences of at least one token adding up to it, valid keys within each sequence.</summary>
    /// <exception cref="ArgumentException">The lengths do not describe the tokens.</exception>
    public void Check()
    {
        ThrowHelper.Positive(Tokens, "tokens");
        if (!SequenceLengths.IsEmpty)
        {
            long sum = 0;
            foreach (int l in SequenceLengths)
            {
                if (l < 1) ThrowHelper.Argument("sequenceLengths", $"'sequenceLengths' holds {l}; every sequence needs at least 1 token.");
                sum += l;
            }
            if (sum != Tokens) ThrowHelper.Argument("sequenceLengths", $"'sequenceLengths' add up to {sum}; expected the input's tokens = {Tokens}.");
        }
        if (!KeyValidLengths.IsEmpty)
        {
            if (KeyValidLengths.Length != Count)
                ThrowHelper.Argument("keyValidLengths", $"'keyValidLengths' has {KeyValidLengths.Length} entries; expected one per sequence = {Count}.");
            for (int s = 0; s < Count; s++)
                if ((uint)KeyValidLengths[s] > (uint)Length(s))
                    ThrowHelper.Argument("keyValidLengths", $"'keyValidLengths'[{s}] = {KeyValidLengths[s]} is outside 0..{Length(s)} (the sequence's tokens).");
        }
    }
}
