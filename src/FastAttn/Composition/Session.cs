using FastAttn.Threading;

namespace FastAttn.Composition;

/// <summary>
/// Runs a <see cref="Stack"/>: owns every buffer a forward pass needs (planned once from maxTokens: two activation
/// buffers, the largest block's scratch, and each worker thread's share), writes into caller-provided spans and allocates
/// nothing per call.
/// <para>
/// <b>One caller at a time.</b> A second thread entering <see cref="Run(ReadOnlySpan{float}, Span{float}, ReadOnlySpan{int}, ReadOnlySpan{int})"/>
/// while a call is in progress gets <see cref="InvalidOperationException"/> (an interlocked flag; nothing is corrupted).
/// <see cref="Dispose"/> may be called from any thread: it waits for a call in progress to finish, and later calls throw
/// <see cref="ObjectDisposedException"/>. A session dropped without Dispose stops its worker threads when collected.
/// </para>
/// </summary>
public sealed class Session : IDisposable
{
    private readonly Stack _stack;
    private readonly LineAligned _a, _b, _scratch;
    /// <summary>Token counts whose scratch sizes have been checked against what the session reserved (one bit each).</summary>
    private readonly ulong[] _checked;
    private readonly WorkerPool? _pool;
    private int _busy;       // 1 while a call (or Dispose) holds the session
    private int _disposed;

    /// <summary>Threads a call runs on (the caller included).</summary>
    public int Threads { get; }
    /// <summary>Largest total token count a call may have.</summary>
    public int MaxTokens { get; }
    /// <summary>The stack this session runs.</summary>
    public Stack Stack => _stack;
    /// <summary>
    /// Floats this session reserved: two activation buffers, the caller's scratch (the largest block's need) and, for
    /// each worker thread, the largest per-thread need of any block.
    /// </summary>
    public long PlannedFloats => (long)_a.Length + _b.Length + _scratch.Length + (_pool == null ? 0 : (Threads - 1) * _pool.WorkerScratchFloats);

    internal Session(Stack stack, int maxTokens, int threads = 1)
    {
        ThrowHelper.Positive(maxTokens, nameof(maxTokens));
        ThrowHelper.Positive(threads, nameof(threads));
        Threads = threads;
        _stack = stack;
        MaxTokens = maxTokens;
        int widest = 0;
        long need = 0, worker = 0;
        for (int i = 0; i < stack.Blocks.Count; i++)
        {
            widest = Math.Max(widest, Math.Max(stack.InputWidthOf(i), stack.OutputWidthOf(i)));
            long s = stack.Blocks[i].ScratchSize(maxTokens), w = threads > 1 ? stack.Blocks[i].WorkerScratchSize(maxTokens) : 0;
            if (s < 0 || w < 0)
                ThrowHelper.Argument(nameof(stack), $"block {i} ({stack.Blocks[i].GetType().Name}) states a negative scratch size ({(s < 0 ? s : w)} floats) for {maxTokens} tokens.");
            need = Math.Max(need, s);
            worker = Math.Max(worker, w);
        }
        long act = (long)maxTokens * widest;
        if (act > Array.MaxLength || need > Array.MaxLength || worker > Array.MaxLength)
            ThrowHelper.OutOfRange(nameof(maxTokens), maxTokens,
                $"'maxTokens' = {maxTokens} needs buffers of {Math.Max(act, Math.Max(need, worker))} floats, more than one array can hold ({Array.MaxLength}); use a smaller maxTokens.");
        _a = new LineAligned(act);
        _b = new LineAligned(act);
        _scratch = new LineAligned(need);
        _checked = new ulong[maxTokens / 64 + 1];
        if (threads > 1)
        {
            _pool = new WorkerPool(threads);
            _pool.EnsureWorkerScratch(Math.Max(worker, 1));
            // the threads' row shares move with their speeds, and each new share size meets tile variants not compiled
            // yet: compiled now, once per process, not while the other thread waits (see KernelWarmup)
            Kernels.KernelWarmup.Precompile(Kernels.Isa.Current);
        }
    }

    /// <summary>Runs one sequence: input <c>[tokens, InputWidth]</c> → output <c>[tokens, OutputWidth]</c>.</summary>
    /// <exception cref="ArgumentException">Widths do not divide, more tokens than the session was sized for, or output overlaps input.</exception>
    /// <exception cref="InvalidOperationException">Another thread is running this session.</exception>
    /// <exception cref="ObjectDisposedException">The session (or its stack) was disposed.</exception>
    public void Run(ReadOnlySpan<float> input, Span<float> output) => Run(input, output, default, default);

    /// <summary>Runs a packed batch of sequences back to back; each attends only within itself.</summary>
    /// <exception cref="ArgumentException">Shapes, token count or lengths do not add up, or output overlaps input.</exception>
    /// <exception cref="InvalidOperationException">Another thread is running this session.</exception>
    /// <exception cref="ObjectDisposedException">The session (or its stack) was disposed.</exception>
    public void Run(ReadOnlySpan<float> input, Span<float> output, ReadOnlySpan<int> sequenceLengths) => Run(input, output, sequenceLengths, default);

    /// <summary>
    /// Runs a packed batch with key padding: in sequence s only the first <paramref name="keyValidLengths"/>[s]
    /// tokens are attended to (the rest are padding, like PyTorch's <c>src_key_padding_mask</c>); their outputs
    /// are still computed. Empty <paramref name="sequenceLengths"/> = one sequence.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes, token count or lengths do not add up, or output overlaps input.</exception>
    /// <exception cref="InvalidOperationException">Another thread is running this session.</exception>
    /// <exception cref="ObjectDisposedException">The session (or its stack) was disposed.</exception>
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
        var batch = new Batch(tokens, sequenceLengths, keyValidLengths, _pool);
        batch.Check();
        var blocks = _stack.Blocks;
        for (int i = 0; i < blocks.Count; i++) blocks[i].Validate(batch);
        Enter();
        _runner = Environment.CurrentManagedThreadId;
        var hot = _pool?.Hot() ?? default;
        try
        {
            // (held: a disposed or busy session is refused by Enter first)
            if ((_checked[tokens >> 6] & (1UL << (tokens & 63))) == 0) CheckScratch(tokens);
            ReadOnlySpan<float> cur = input;
            for (int i = 0; i < blocks.Count; i++)
            {
                var blk = blocks[i];
                Span<float> dst = i == blocks.Count - 1 ? output : (i % 2 == 0 ? _a : _b).Span.Slice(0, tokens * _stack.OutputWidthOf(i));
                if (blk is Block b) b.ForwardCore(cur, dst, batch, _scratch.Span);
                else blk.Forward(cur, dst, batch, _scratch.Span);
                cur = dst;
            }
        }
        finally
        {
            hot.Dispose();
            _runner = 0;
            // disposed by a block of this very call: done now that the call is over (this thread still holds the session)
            if (Volatile.Read(ref _disposeAfterRun) != 0) _pool?.Dispose();
            Volatile.Write(ref _busy, 0);
        }
    }

    /// <summary>
    /// The first call with <paramref name="tokens"/> tokens: every block's scratch for that many tokens must fit what the
    /// session reserved for <see cref="MaxTokens"/> — blocks run unchecked here and write their scratch through pointers.
    /// A block whose size shrank as tokens grew (the GEMM's packing once did: an access violation) is refused instead.
    /// </summary>
    /// <exception cref="InvalidOperationException">A block needs more scratch for fewer tokens than it stated for the session's size.</exception>
    private void CheckScratch(int tokens)
    {
        var blocks = _stack.Blocks;
        long workerFloats = _pool?.WorkerScratchFloats ?? 0;
        for (int i = 0; i < blocks.Count; i++)
        {
            long s = blocks[i].ScratchSize(tokens), w = _pool != null ? blocks[i].WorkerScratchSize(tokens) : 0;
            if (s > _scratch.Length || w > Math.Max(workerFloats, 1))
                throw new InvalidOperationException($"block {i} ({blocks[i].GetType().Name}) needs {(s > _scratch.Length ? s : w)} floats of " +
                    $"{(s > _scratch.Length ? "scratch" : "worker scratch")} for {tokens} tokens, more than it stated for the session's {MaxTokens} " +
                    $"({(s > _scratch.Length ? _scratch.Length : workerFloats)}); a block's scratch size must not shrink as tokens grow.");
        }
        _checked[tokens >> 6] |= 1UL << (tokens & 63);
    }

    /// <summary>The managed id of the thread inside <see cref="Run(ReadOnlySpan{float}, Span{float}, ReadOnlySpan{int}, ReadOnlySpan{int})"/> (0 when none).</summary>
    private volatile int _runner;
    private int _disposeAfterRun;

    /// <summary>True on the thread inside this session's call, or on one of its worker threads.</summary>
    internal bool OnCallThread => _runner == Environment.CurrentManagedThreadId || (_pool?.OnWorkerThread ?? false);

    private void Enter()
    {
        if (Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
            throw new InvalidOperationException("This session is already running a call on another thread: a session serves one caller at a time (use one session per thread, or a SessionPool).");
        }
        if (Volatile.Read(ref _disposed) != 0)
        {
            Volatile.Write(ref _busy, 0);
            ThrowHelper.Disposed(nameof(Session));
        }
    }

    /// <summary>Stops the session's worker threads (after a call in progress finishes). The session cannot run afterwards.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        // called by a block inside this session's own call (on its thread, or on a pool thread running the block's work):
        // waiting for the call would wait for ever; the call disposes the pool as it ends
        if (OnCallThread)
        {
            Volatile.Write(ref _disposeAfterRun, 1);
            return;
        }
        var spin = new SpinWait();
        while (Interlocked.CompareExchange(ref _busy, 1, 0) != 0) spin.SpinOnce();
        _pool?.Dispose();
    }

    /// <summary>True while a worker thread of this session is alive (for tests).</summary>
    internal bool WorkersAlive => _pool?.AnyThreadAlive ?? false;

    /// <summary>The session's pool (null for one thread), for tests.</summary>
    internal WorkerPool? Pool => _pool;
}
