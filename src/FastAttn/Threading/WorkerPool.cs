using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;

namespace FastAttn.Threading;

/// <summary>A unit of parallel work: <see cref="Execute"/> runs item <c>item</c> on worker <c>worker</c>.</summary>
internal interface IWork
{
    void Execute(int item, int worker);
}

/// <summary>
/// A persistent pool of worker threads owned by one session. The calling thread is worker 0 and takes part in
/// every run; workers 1..Threads−1 are dedicated threads that claim items from a shared counter. Between runs
/// a worker spins for a bounded time (about 50 µs, so the next operation of the same forward pass finds it
/// awake) and then blocks on an event, so an idle pool uses no CPU. Nothing is allocated per run. Each
/// worker owns a pinned scratch buffer. An exception thrown by an item is rethrown on the calling thread after
/// every worker has finished; the pool stays usable. Not reentrant: one run at a time.
/// </summary>
internal sealed unsafe class WorkerPool : IDisposable
{
    private readonly Thread[] _threads;
    private readonly ManualResetEventSlim[] _go;
    private readonly ManualResetEventSlim _done = new(false, 0);
    private readonly float*[] _scratch;
    private readonly long _scratchFloats;
    private long _generation;
    private int _pending;
    private int _next;
    private int _items;
    private IWork? _work;
    private Exception? _error;
    private volatile bool _stopping;
    private bool _disposed;

    /// <summary>Spin iterations (Thread.SpinWait(20) each, ~50 µs in all here) before a waiting thread blocks.</summary>
    private const int SpinRounds = 500;

    /// <summary>The parallel kernels bound to this pool.</summary>
    public Jobs Jobs { get; }
    /// <summary>Threads taking part in a run, the caller included.</summary>
    public int Threads { get; }
    /// <summary>Floats of scratch each worker owns.</summary>
    public long ScratchFloats => _scratchFloats;

    public WorkerPool(int threads, long scratchFloatsPerWorker)
    {
        ThrowHelper.Positive(threads, nameof(threads));
        Threads = threads;
        _scratchFloats = Math.Max(scratchFloatsPerWorker, 1);
        _scratch = new float*[threads];
        for (int i = 0; i < threads; i++)
            _scratch[i] = (float*)NativeMemory.AlignedAlloc((nuint)(_scratchFloats * sizeof(float)), 64);
        _go = new ManualResetEventSlim[threads];
        _threads = new Thread[threads];
        for (int w = 1; w < threads; w++)
        {
            _go[w] = new ManualResetEventSlim(false, 0);
            int id = w;
            _threads[w] = new Thread(() => WorkerLoop(id)) { IsBackground = true, Name = $"FastAttn wk {w}" };
            _threads[w].Start();
        }
        Jobs = new Jobs(this);
    }

    /// <summary>The scratch of worker <paramref name="worker"/>.</summary>
    public float* Scratch(int worker) => _scratch[worker];

    /// <summary>True while any worker thread is alive (for tests).</summary>
    internal bool AnyThreadAlive
    {
        get
        {
            for (int w = 1; w < Threads; w++) if (_threads[w].IsAlive) return true;
            return false;
        }
    }

    /// <summary>Runs items 0..items−1 of <paramref name="work"/> across the pool and returns when all are done.</summary>
    public void Run(IWork work, int items)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (items <= 0) return;
        if (Threads == 1 || items == 1)
        {
            for (int i = 0; i < items; i++) work.Execute(i, 0);
            return;
        }
        _work = work;
        _items = items;
        _next = 0;
        _error = null;
        Volatile.Write(ref _pending, Threads - 1);
        Interlocked.Increment(ref _generation);
        for (int w = 1; w < Threads; w++) _go[w].Set();
        Drain(0);
        // wait for the workers: spin briefly, then block (reset before checking, so no wake-up is lost)
        for (int spin = 0; Volatile.Read(ref _pending) != 0 && spin < SpinRounds; spin++) Thread.SpinWait(20);
        while (true)
        {
            _done.Reset();
            if (Volatile.Read(ref _pending) == 0) break;
            _done.Wait();
        }
        _work = null;
        var error = _error;
        if (error != null)
        {
            _error = null;
            ExceptionDispatchInfo.Capture(error).Throw();
        }
    }

    private void Drain(int worker)
    {
        var work = _work!;
        while (true)
        {
            int i = Interlocked.Increment(ref _next) - 1;
            if (i >= _items) return;
            try { work.Execute(i, worker); }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref _error, e, null);
                // stop handing out items; the run ends as soon as the items in flight finish
                Volatile.Write(ref _next, _items);
                return;
            }
        }
    }

    private void WorkerLoop(int w)
    {
        long seen = 0;
        var go = _go[w];
        while (true)
        {
            for (int spin = 0; Volatile.Read(ref _generation) == seen && !_stopping && spin < SpinRounds; spin++) Thread.SpinWait(20);
            while (Volatile.Read(ref _generation) == seen && !_stopping)
            {
                go.Reset();
                if (Volatile.Read(ref _generation) != seen || _stopping) break;
                go.Wait();
            }
            if (_stopping) return;
            seen = Volatile.Read(ref _generation);
            Drain(w);
            if (Interlocked.Decrement(ref _pending) == 0) _done.Set();
        }
    }

    /// <summary>Stops and joins the worker threads and frees the scratch. Must not race with <see cref="Run"/>.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _stopping = true;
        for (int w = 1; w < Threads; w++) _go[w].Set();
        for (int w = 1; w < Threads; w++) _threads[w].Join();
        for (int w = 1; w < Threads; w++) _go[w].Dispose();
        _done.Dispose();
        for (int i = 0; i < Threads; i++) { NativeMemory.AlignedFree(_scratch[i]); _scratch[i] = null; }
    }
}
