using FastAttn.Kernels;
using FastAttn.Layers;

namespace FastAttn.Composition;

/// <summary>
/// An immutable stack of blocks run in order. Share one stack across threads; give each caller its own
/// <see cref="Session"/>.
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
    /// <exception cref="ArgumentException">Empty, or widths do not chain.</exception>
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
    /// <exception cref="ArgumentOutOfRangeException">maxTokens below 1, or threads outside 1..processor count.</exception>
    public Session CreateSession(int maxTokens, int threads = 1)
    {
        if (threads < 1 || threads > Environment.ProcessorCount)
            ThrowHelper.OutOfRange(nameof(threads), threads, $"'threads' = {threads} must be between 1 and the processor count {Environment.ProcessorCount}.");
        return new(this, maxTokens, threads);
    }

    /// <summary>Any thread count, for tests of determinism beyond this machine's cores.</summary>
    internal Session CreateSessionUnchecked(int maxTokens, int threads) => new(this, maxTokens, threads);

    /// <summary>Disposes blocks that own native memory.</summary>
    public void Dispose()
    {
        foreach (var b in _blocks) (b as IDisposable)?.Dispose();
    }
}

/// <summary>
/// Runs a <see cref="Stack"/>: owns every buffer a forward pass needs (planned once from maxTokens), writes
/// into caller-provided spans and allocates nothing per call. One caller at a time.
/// </summary>
public sealed class Session : IDisposable
{
    private readonly Stack _stack;
    private readonly float[] _a, _b, _scratch;
    private readonly Threading.WorkerPool? _pool;
    /// <summary>Threads a call runs on (the caller included).</summary>
    public int Threads { get; }
    /// <summary>Largest total token count a call may have.</summary>
    public int MaxTokens { get; }
    /// <summary>Scratch floats planned for this session (ping-pong activations plus the largest block's need).</summary>
    public long PlannedFloats => (long)_a.Length + _b.Length + _scratch.Length;

    internal Session(Stack stack, int maxTokens, int threads = 1)
    {
        ThrowHelper.Positive(maxTokens, nameof(maxTokens));
        ThrowHelper.Positive(threads, nameof(threads));
        Threads = threads;
        _stack = stack;
        MaxTokens = maxTokens;
        int widest = stack.Blocks.Max(b => Math.Max(b.InputWidth, b.OutputWidth));
        long act = (long)maxTokens * widest;
        long need = stack.Blocks.Max(b => b.ScratchSize(maxTokens));
        if (act > Array.MaxLength || need > Array.MaxLength || need < 0)
            ThrowHelper.OutOfRange(nameof(maxTokens), maxTokens,
                $"'maxTokens' = {maxTokens} needs buffers of {Math.Max(act, need)} floats, more than one array can hold ({Array.MaxLength}); use a smaller maxTokens.");
        _a = new float[act];
        _b = new float[act];
        _scratch = new float[need];
        // every worker gets as much scratch as the largest block asks for (kernels take theirs from it)
        if (threads > 1) _pool = new Threading.WorkerPool(threads, need);
    }

    /// <summary>Runs one sequence: input <c>[tokens, InputWidth]</c> → output <c>[tokens, OutputWidth]</c>.</summary>
    /// <exception cref="ArgumentException">Widths do not divide, more tokens than the session was sized for, or output overlaps input.</exception>
    public void Run(ReadOnlySpan<float> input, Span<float> output) => Run(input, output, default, default);

    /// <summary>Runs a packed batch of sequences back to back; each attends only within itself.</summary>
    /// <exception cref="ArgumentException">Shapes, token count or lengths do not add up.</exception>
    public void Run(ReadOnlySpan<float> input, Span<float> output, ReadOnlySpan<int> sequenceLengths) => Run(input, output, sequenceLengths, default);

    /// <summary>
    /// Runs a packed batch with key padding: in sequence s only the first <paramref name="keyValidLengths"/>[s]
    /// tokens are attended to (the rest are padding, like PyTorch's <c>src_key_padding_mask</c>); their outputs
    /// are still computed. Empty <paramref name="sequenceLengths"/> = one sequence.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes, token count or lengths do not add up.</exception>
    public void Run(ReadOnlySpan<float> input, Span<float> output, ReadOnlySpan<int> sequenceLengths, ReadOnlySpan<int> keyValidLengths)
    {
        int wIn = _stack.InputWidth, wOut = _stack.OutputWidth;
        if (input.Length == 0 || input.Length % wIn != 0)
            ThrowHelper.Argument(nameof(input), $"'input' has {input.Length} elements; expected tokens*inputWidth with inputWidth = {wIn} and tokens ≥ 1.");
        int tokens = input.Length / wIn;
        if (tokens > MaxTokens)
            ThrowHelper.Argument(nameof(input), $"'input' has {tokens} tokens; this session was sized for at most {MaxTokens}.");
        if (output.Length != (long)tokens * wOut)
            ThrowHelper.Argument(nameof(output), $"'output' has {output.Length} elements; expected tokens*outputWidth = {tokens}*{wOut} = {tokens * wOut}.");
        if (input.Overlaps(output))
            ThrowHelper.Argument(nameof(output), "'output' overlaps 'input'; a session reads its input after writing output (give separate buffers).");
        if (!sequenceLengths.IsEmpty)
        {
            long sum = 0;
            foreach (int l in sequenceLengths)
            {
                if (l < 1) ThrowHelper.Argument(nameof(sequenceLengths), $"'sequenceLengths' holds {l}; every sequence needs at least 1 token.");
                sum += l;
            }
            if (sum != tokens) ThrowHelper.Argument(nameof(sequenceLengths), $"'sequenceLengths' add up to {sum}; expected the input's tokens = {tokens}.");
        }
        ObjectDisposedException.ThrowIf(_disposed, this);
        var batch = new Batch(tokens, sequenceLengths, keyValidLengths, _pool);
        if (!keyValidLengths.IsEmpty)
        {
            if (keyValidLengths.Length != batch.Count)
                ThrowHelper.Argument(nameof(keyValidLengths), $"'keyValidLengths' has {keyValidLengths.Length} entries; expected one per sequence = {batch.Count}.");
            for (int s = 0; s < batch.Count; s++)
                if ((uint)keyValidLengths[s] > (uint)batch.Length(s))
                    ThrowHelper.Argument(nameof(keyValidLengths), $"'keyValidLengths'[{s}] = {keyValidLengths[s]} is outside 0..{batch.Length(s)} (the sequence's tokens).");
        }
        var blocks = _stack.Blocks;
        for (int i = 0; i < blocks.Count; i++) blocks[i].Validate(batch);
        ReadOnlySpan<float> cur = input;
        for (int i = 0; i < blocks.Count; i++)
        {
            var blk = blocks[i];
            Span<float> dst = i == blocks.Count - 1 ? output : (i % 2 == 0 ? _a : _b).AsSpan(0, tokens * blk.OutputWidth);
            blk.Forward(cur, dst, batch, _scratch);
            cur = dst;
        }
    }

    private bool _disposed;

    /// <summary>Stops the session's worker threads. The session cannot run afterwards.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _pool?.Dispose();
    }

    /// <summary>True while a worker thread of this session is alive (for tests).</summary>
    internal bool WorkersAlive => _pool?.AnyThreadAlive ?? false;
}

/// <summary>Builders for common stacks.</summary>
public static class TransformerEncoder
{
    /// <summary>
    /// An encoder of <paramref name="layers"/> blocks like PyTorch's <c>nn.TransformerEncoder</c>, with random
    /// weights (seeded) — for benchmarks and tests; load real weights with the IO layer.
    /// </summary>
    public static Stack Create(int layers, int dModel, int heads, int ffDim, Activation activation = Activation.Relu,
        bool normFirst = false, float eps = 1e-5f, int seed = 0, AttentionSettings? attention = null)
    {
        ThrowHelper.Positive(layers, nameof(layers));
        ThrowHelper.Positive(dModel, nameof(dModel));
        ThrowHelper.Positive(heads, nameof(heads));
        ThrowHelper.Positive(ffDim, nameof(ffDim));
        if (dModel % heads != 0) ThrowHelper.Argument(nameof(heads), $"'heads' = {heads} must divide dModel = {dModel}.");
        if (3L * dModel * dModel > Array.MaxLength || (long)ffDim * dModel > Array.MaxLength)
            ThrowHelper.OutOfRange(nameof(dModel), dModel, $"dModel = {dModel} with ffDim = {ffDim} gives weight matrices larger than one array can hold.");
        var rnd = new Random(seed);
        float[] R(int n, double scale) { var a = new float[n]; for (int i = 0; i < n; i++) a[i] = (float)((rnd.NextDouble() * 2 - 1) * scale); return a; }
        var blocks = new IBlock[layers];
        double sd = 1 / Math.Sqrt(dModel), sf = 1 / Math.Sqrt(ffDim);
        for (int l = 0; l < layers; l++)
        {
            var mha = new MultiHeadAttention(dModel, heads, R(3 * dModel * dModel, sd), R(3 * dModel, 0.1), R(dModel * dModel, sd), R(dModel, 0.1), attention);
            var ff = new FeedForward(dModel, ffDim, R(ffDim * dModel, sd), R(ffDim, 0.1), R(dModel * ffDim, sf), R(dModel, 0.1), activation);
            blocks[l] = new EncoderBlock(mha, ff, new LayerNorm(dModel, R(dModel, 0.2).Select(x => 1 + x).ToArray(), R(dModel, 0.1), eps),
                new LayerNorm(dModel, R(dModel, 0.2).Select(x => 1 + x).ToArray(), R(dModel, 0.1), eps), normFirst);
        }
        return new Stack(blocks);
    }
}
