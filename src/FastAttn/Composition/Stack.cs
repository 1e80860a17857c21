namespace FastAttn.Composition;

/// <summary>
/// An immutable stack of blocks run in order. Share one stack across threads; give each caller its own
/// <see cref="Session"/> (or use a pool of sessions).
/// </summary>
public sealed class Stack : IDisposable
{
    private readonly IBlock[] _blocks;
    /// <summary>The blocks, in order.</summary>
    public IReadOnlyList<IBlock> Blocks => _blocks;
    /// <summary>Input width.</summary>
    public int InputWidth => _blocks[0].InputWidth;
    /// <summary>Output width.</summary>
    public int OutputWidth => _blocks[^1].OutputWidth;

    /// <summary>Stacks the blocks; each block's input width must match the previous block's output width.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="blocks"/> is null.</exception>
    /// <exception cref="ArgumentException">Empty, a null block, or widths do not chain.</exception>
    public Stack(params IBlock[] blocks)
    {
        ArgumentNullException.ThrowIfNull(blocks);
        if (blocks.Length == 0) ThrowHelper.Argument(nameof(blocks), "a stack needs at least one block.");
        for (int i = 0; i < blocks.Length; i++)
            if (blocks[i] is null) ThrowHelper.Argument(nameof(blocks), $"block {i} is null.");
        for (int i = 1; i < blocks.Length; i++)
            if (blocks[i].InputWidth != blocks[i - 1].OutputWidth)
                ThrowHelper.Argument(nameof(blocks), $"block {i} takes width {blocks[i].InputWidth}; block {i - 1} gives {blocks[i - 1].OutputWidth}.");
        _blocks = (IBlock[])blocks.Clone();
    }

    /// <summary>
    /// A session sized for calls of up to <paramref name="maxTokens"/> tokens in total, running on
    /// <paramref name="threads"/> threads (the caller plus threads − 1 workers it owns; 1 to the processor count).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">maxTokens below 1 or too large for its buffers, or threads outside 1..processor count.</exception>
    public Session CreateSession(int maxTokens, int threads = 1)
    {
        if (threads < 1 || threads > Environment.ProcessorCount)
            ThrowHelper.OutOfRange(nameof(threads), threads, $"'threads' = {threads} must be between 1 and the processor count {Environment.ProcessorCount}.");
        return new(this, maxTokens, threads);
    }

    /// <summary>Any thread count, for tests of determinism beyond this machine's cores.</summary>
    internal Session CreateSessionUnchecked(int maxTokens, int threads) => new(this, maxTokens, threads);

    /// <summary>
    /// Disposes blocks that own native memory. Calls in flight on other threads finish (the weights stay alive until
    /// they do); later calls throw <see cref="ObjectDisposedException"/>.
    /// </summary>
    public void Dispose()
    {
        foreach (var b in _blocks) (b as IDisposable)?.Dispose();
    }
}
