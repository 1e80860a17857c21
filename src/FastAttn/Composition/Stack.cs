namespace FastAttn.Composition;

/// <summary>
/// An immutable stack of blocks run in order. Share one stack across threads; give each caller its own
/// <see cref="Session"/> (or use a pool of sessions).
/// </summary>
public sealed class Stack : IDisposable
{
    private readonly IBlock[] _blocks;
    // the widths as the blocks stated them when stacked: sessions size and slice their buffers by these, so a block of the
    // caller's own whose width properties change later cannot make a session hand the next block a span of another width
    private readonly int[] _inWidths, _outWidths;
    /// <summary>The blocks, in order.</summary>
    public IReadOnlyList<IBlock> Blocks => _blocks;
    /// <summary>Input width (the first block's, as it was when stacked).</summary>
    public int InputWidth => _inWidths[0];
    /// <summary>Output width (the last block's, as it was when stacked).</summary>
    public int OutputWidth => _outWidths[^1];

    /// <summary>Block <paramref name="i"/>'s input width as it was when stacked.</summary>
    internal int InputWidthOf(int i) => _inWidths[i];
    /// <summary>Block <paramref name="i"/>'s output width as it was when stacked.</summary>
    internal int OutputWidthOf(int i) => _outWidths[i];

    /// <summary>Stacks the blocks; each block's input width must match the previous block's output width.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="blocks"/> is null.</exception>
    /// <exception cref="ArgumentException">Empty, a null block, a width below 1, or widths do not chain.</exception>
    public Stack(params IBlock[] blocks)
    {
        ArgumentNullException.ThrowIfNull(blocks);
        if (blocks.Length == 0) ThrowHelper.Argument(nameof(blocks), "a stack needs at least one block.");
        _blocks = (IBlock[])blocks.Clone();
        _inWidths = new int[_blocks.Length];
        _outWidths = new int[_blocks.Length];
        for (int i = 0; i < _blocks.Length; i++)
        {
            if (_blocks[i] is null) ThrowHelper.Argument(nameof(blocks), $"block {i} is null.");
            _inWidths[i] = _blocks[i].InputWidth;
            _outWidths[i] = _blocks[i].OutputWidth;
            if (_inWidths[i] < 1 || _outWidths[i] < 1)
                ThrowHelper.Argument(nameof(blocks), $"block {i} states widths {_inWidths[i]} → {_outWidths[i]}; a width must be at least 1.");
        }
        for (int i = 1; i < _blocks.Length; i++)
            if (_inWidths[i] != _outWidths[i - 1])
                ThrowHelper.Argument(nameof(blocks), $"block {i} takes width {_inWidths[i]}; block {i - 1} gives {_outWidths[i - 1]}.");
    }

    /// <summary>
    /// A session sized for calls of up to <paramref name="maxTokens"/> tokens in total, running on
    /// <paramref name="threads"/> threads (the caller plus threads − 1 workers it owns; 1 to the processor count).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">maxTokens below 1 or too large for its buffers, or threads outside 1..processor count.</exception>
    /// <exception cref="ArgumentException">A block states a negative scratch size.</exception>
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
