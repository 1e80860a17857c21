namespace FastAttn.Composition;

/// <summary>
/// The thread-safe way to run a <see cref="Stack"/> from a server: any number of threads may call <see cref="Run"/> or
/// <see cref="RunAsync"/> at once; each call leases one of up to <see cref="Capacity"/> sessions (created on demand,
/// reused, each owning its buffers and threads) and returns it afterwards. The first session is created and run once on
/// zero input at construction, so the first request does not pay for the JIT.
/// </summary>
public sealed class SessionPool : IDisposable
{
    private readonly LeasePool<Session> _pool;

    /// <summary>The stack.</summary>
    public Stack Stack { get; }
    /// <summary>Largest total token count a call may have.</summary>
    public int MaxTokens { get; }
    /// <summary>Most sessions alive at once (callers beyond that wait).</summary>
    public int Capacity => _pool.Capacity;

    /// <summary>A pool of sessions over <paramref name="stack"/> sized for <paramref name="maxTokens"/> tokens per call.</summary>
    /// <param name="stack">The model (not disposed by the pool).</param>
    /// <param name="maxTokens">Largest total token count a call may have.</param>
    /// <param name="threadsPerSession">Threads of each session.</param>
    /// <param name="capacity">Most sessions at once; 0 = the processor count divided by the threads per session (at least 1).</param>
    /// <param name="warmUp">Run the first session once at construction.</param>
    /// <exception cref="ArgumentOutOfRangeException">A size is out of range.</exception>
    public SessionPool(Stack stack, int maxTokens, int threadsPerSession = 1, int capacity = 0, bool warmUp = true)
    {
        Stack = stack ?? throw new ArgumentNullException(nameof(stack));
        if (capacity < 0) ThrowHelper.OutOfRange(nameof(capacity), capacity, "'capacity' must not be negative.");
        MaxTokens = maxTokens;
        var first = stack.CreateSession(maxTokens, threadsPerSession);
        if (warmUp)
        {
            int t = Math.Min(8, maxTokens);
            try { first.Run(new float[t * stack.InputWidth], new float[t * stack.OutputWidth]); }
            catch (ArgumentException) { } // a stack whose input cannot be zeros is simply not warmed
        }
        // the warmed session is the pool's first (a flag in the factory handed it to two callers creating at once)
        _pool = new LeasePool<Session>(() => stack.CreateSession(maxTokens, threadsPerSession),
            capacity > 0 ? capacity : Math.Max(1, Environment.ProcessorCount / threadsPerSession), first);
        _inCall.Capacity = Math.Min(_pool.Capacity, 64); // no allocation per call
    }

    /// <summary>Runs a (packed) batch on a leased session; see <see cref="Session.Run(ReadOnlySpan{float}, Span{float}, ReadOnlySpan{int}, ReadOnlySpan{int})"/>.</summary>
    /// <exception cref="ArgumentException">Shapes, token count or lengths do not add up, or output overlaps input.</exception>
    /// <exception cref="ObjectDisposedException">The pool or the stack was disposed.</exception>
    /// <exception cref="InvalidOperationException">Called from a block running in one of this pool's sessions (or from work it runs on the session's threads) while every session is leased (it would wait for its own).</exception>
    public void Run(ReadOnlySpan<float> input, Span<float> output, ReadOnlySpan<int> sequenceLengths = default, ReadOnlySpan<int> keyValidLengths = default)
    {
        using var lease = Running() ? RentNested() : _pool.Rent();
        RunOn(lease.Value, input, output, sequenceLengths, keyValidLengths);
    }

    /// <summary>As <see cref="Run"/>, waiting asynchronously (cancellable) while every session is busy.</summary>
    /// <exception cref="ArgumentException">Shapes, token count or lengths do not add up, or output overlaps input.</exception>
    /// <exception cref="OperationCanceledException">Cancelled while waiting for a session.</exception>
    /// <exception cref="ObjectDisposedException">The pool or the stack was disposed.</exception>
    /// <exception cref="InvalidOperationException">Called from a block running in one of this pool's sessions (or from work it runs on the session's threads) while every session is leased (it would wait for its own).</exception>
    public async Task RunAsync(ReadOnlyMemory<float> input, Memory<float> output, ReadOnlyMemory<int> sequenceLengths = default,
        ReadOnlyMemory<int> keyValidLengths = default, CancellationToken cancellation = default)
    {
        using var lease = Running() ? RentNested() : await _pool.RentAsync(cancellation).ConfigureAwait(false);
        RunOn(lease.Value, input.Span, output.Span, sequenceLengths.Span, keyValidLengths.Span);
    }

    /// <summary>Sessions of this pool running a call now.</summary>
    private readonly List<Session> _inCall = [];

    /// <summary>True on a thread taking part in a call on one of this pool's sessions: its caller's, or a worker thread of the session.</summary>
    private bool Running()
    {
        lock (_inCall)
            foreach (var s in _inCall)
                if (s.OnCallThread) return true;
        return false;
    }

    /// <summary>
    /// A lease for a call made by a block running in one of this pool's sessions: a free session or none — waiting could
    /// be waiting for the session this very thread holds (with one session, for ever).
    /// </summary>
    private Lease<Session> RentNested()
    {
        if (_pool.TryRent(out var lease)) return lease;
        throw new InvalidOperationException("A block running in a session of this SessionPool ran the pool again while all its sessions were leased: it would wait for its own session. Give the pool a larger capacity, or run the inner stack on a session of its own.");
    }

    private void RunOn(Session session, ReadOnlySpan<float> input, Span<float> output, ReadOnlySpan<int> sequenceLengths, ReadOnlySpan<int> keyValidLengths)
    {
        lock (_inCall) _inCall.Add(session);
        try { session.Run(input, output, sequenceLengths, keyValidLengths); }
        finally { lock (_inCall) _inCall.Remove(session); }
    }

    /// <summary>Disposes the sessions (leased ones as they come back). The stack is not disposed.</summary>
    public void Dispose() => _pool.Dispose();
}
