using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;

namespace FastAttn.Threading;

/// <summary>
/// A persistent pool of worker threads: the calling thread is worker 0 and takes part in every run; workers
/// 1..Threads−1 are dedicated threads that claim items from a shared counter. Between runs a worker spins for a
/// bounded time (about 50 µs, so the next operation of the same forward pass finds it awake) and then blocks, so an
/// idle pool uses no CPU. A run allocates nothing. Each worker thread owns a scratch buffer
/// (<see cref="EnsureWorkerScratch"/>) that kernels use for their per-thread packing.
/// <para>
/// Kernels decide for themselves whether a call is worth splitting and how (see <c>Gemm.Linear</c>,
/// <c>Attention.Forward</c>); the pool only runs the pieces. An exception thrown by an item is rethrown on the caller
/// after every item in flight has finished; the pool stays usable.
/// </para>
/// <para>
/// <b>Threads.</b> One run at a time: a second thread calling <see cref="Run(IParallelWork, int)"/> while a run is in progress gets
/// <see cref="InvalidOperationException"/>. <see cref="Dispose"/> may be called from any thread, also during a run (it
/// waits for the run to finish; called by an item of that run, it is done when the run returns). A pool that is dropped without being disposed stops its threads when it is collected.
/// </para>
/// </summary>
public sealed unsafe class WorkerPool : IDisposable
{
    private readonly Core _core;
    private object?[] _jobs = [];
    private int _running;

    /// <summary>Threads taking part in a run, the caller included.</summary>
    public int Threads => _core.Threads;

    /// <summary>Floats of scratch each worker thread (1..Threads−1) owns.</summary>
    public long WorkerScratchFloats => _core.ScratchFloats;

    /// <summary>A pool of <paramref name="threads"/> threads: the caller plus threads − 1 workers it starts now.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="threads"/> is below 1 or above 256.</exception>
    public WorkerPool(int threads)
    {
        if (threads < 1 || threads > 256) ThrowHelper.OutOfRange(nameof(threads), threads, $"'threads' must be between 1 and 256; it is {threads}.");
        _core = new Core(threads);
    }

    /// <summary>Grows every worker's scratch to at least <paramref name="floats"/> (allocates only when it grows). Not during a run.</summary>
    /// <exception cref="ObjectDisposedException">The pool was disposed.</exception>
    /// <exception cref="InvalidOperationException">A run is in progress.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="floats"/> is more than <see cref="MaxScratchFloats"/>.</exception>
    public void EnsureWorkerScratch(long floats)
    {
        if (floats <= _core.ScratchFloats) return;
        // its byte count must fit a native size: 2^62 floats would have asked for 0 bytes and then been written as 2^62
        if (floats > MaxScratchFloats)
            throw new ArgumentOutOfRangeException(nameof(floats), floats, $"a worker's scratch holds at most {MaxScratchFloats} floats.");
        Enter();
        try { _core.GrowScratch(floats); }
        finally { Exit(); }
    }

    /// <summary>The most floats <see cref="EnsureWorkerScratch"/> accepts (bytes up to <see cref="nint.MaxValue"/>).</summary>
    public static long MaxScratchFloats => nint.MaxValue / sizeof(float);

    /// <summary>The scratch of worker <paramref name="worker"/> (1..Threads−1), <see cref="WorkerScratchFloats"/> floats.</summary>
    internal float* WorkerScratch(int worker) => _core.Scratch[worker];

    /// <summary>
    /// The pool's instance of a kernel's job object (created on first use, then reused: a run allocates nothing). Only
    /// while this thread holds the pool (<see cref="Acquire"/>): the object is shared by every caller of the pool, and a
    /// second caller filling it in while the first one's run reads it gave that run the other call's pointers and sizes.
    /// </summary>
    internal T Job<T>() where T : class, new()
    {
        System.Diagnostics.Debug.Assert(_runner == Environment.CurrentManagedThreadId, "Job<T>() outside Acquire()");
        int i = JobSlot<T>.Index;
        if (i >= _jobs.Length) Array.Resize(ref _jobs, Math.Max(i + 1, 2 * _jobs.Length));
        return (T)(_jobs[i] ??= new T());
    }

    private static class JobSlot<T> { public static readonly int Index = Interlocked.Increment(ref _slots) - 1; }
    private static int _slots;

    /// <summary>
    /// Keeps the workers spinning (instead of blocking after a short spin) until the returned scope is disposed: a session
    /// holds its pool hot for a whole forward call, whose parallel regions come back to back. A blocked worker is woken
    /// through the OS, and on a virtual machine an idle vCPU can take a millisecond to come back, which made a 2-thread
    /// layer of 200 µs take 1–2 ms at times; spinning through the call removes that. Nested holds are fine.
    /// </summary>
    internal HotScope Hot() { _core.EnterHot(); return new HotScope(_core); }

    internal readonly struct HotScope : IDisposable
    {
        private readonly Core? _core;
        internal HotScope(object core) => _core = (Core)core;
        public void Dispose() => _core?.ExitHot();
    }

    /// <summary>True on one of this pool's worker threads (1..Threads−1).</summary>
    internal bool OnWorkerThread => _core.OnWorkerThread();

    /// <summary>True while any worker thread is alive (for tests).</summary>
    internal bool AnyThreadAlive => _core.AnyThreadAlive;

    /// <summary>Runs items 0..items−1 of <paramref name="work"/> across the pool and returns when all are done.</summary>
    /// <exception cref="ObjectDisposedException">The pool was disposed.</exception>
    /// <exception cref="InvalidOperationException">Another thread is running work on this pool.</exception>
    public void Run(IParallelWork work, int items) => Run(work, items, affine: false);

    /// <summary>
    /// Runs items 0..items−1; with <paramref name="affine"/> the items are cut into <see cref="Threads"/> contiguous blocks
    /// and thread w runs block w first, then helps with what is left of the others (from their fronts), so two regions cut
    /// alike give the same thread the same block: a self-attention layer's q|k|v product split by heads and the attention
    /// over those heads (see <c>MultiHeadAttention</c>).
    /// </summary>
    internal void Run(IParallelWork work, int items, bool affine)
    {
        ArgumentNullException.ThrowIfNull(work);
        using var lease = Acquire();
        _core.Run(work, items, affine);
    }

    /// <summary>
    /// Holds the pool for this caller until the returned lease is disposed: a kernel takes it before it fills in its job
    /// object (<see cref="Job{T}"/>) and runs it with <see cref="RunHeld"/>, once or several times. A second caller sharing
    /// the pool is refused here (<see cref="InvalidOperationException"/>, one caller at a time) before it can touch the
    /// job the first caller's run reads — two threads calling a layer with one pool crashed the process before (a run read
    /// the other call's pointers).
    /// </summary>
    /// <exception cref="ObjectDisposedException">The pool was disposed.</exception>
    /// <exception cref="InvalidOperationException">Another thread is running work on this pool.</exception>
    internal Lease Acquire()
    {
        Enter();
        _runner = Environment.CurrentManagedThreadId;
        return new Lease(this);
    }

    /// <summary>A hold on the pool (<see cref="Acquire"/>); disposing it lets the next caller in.</summary>
    internal readonly struct Lease : IDisposable
    {
        private readonly WorkerPool? _pool;
        internal Lease(WorkerPool pool) => _pool = pool;
        public void Dispose() => _pool?.Release();
    }

    private void Release()
    {
        _runner = 0;
        Exit();
        // Dispose called by an item (on this thread or a worker) could not wait for the run it was part of: done now
        if (Volatile.Read(ref _disposeAfterRun) != 0) Dispose();
        GC.KeepAlive(this);
    }

    /// <summary>Runs items 0..items−1 of <paramref name="work"/> (see <see cref="Run(IParallelWork, int, bool)"/>) on the pool this thread holds.</summary>
    internal void RunHeld(IParallelWork work, int items, bool affine = false)
    {
        ArgumentNullException.ThrowIfNull(work);
        if (_runner != Environment.CurrentManagedThreadId) throw new InvalidOperationException("RunHeld needs the pool held by this thread (Acquire).");
        _core.Run(work, items, affine);
    }

    /// <summary>The managed id of the thread inside <see cref="Run(IParallelWork, int)"/> (0 when none).</summary>
    private volatile int _runner;
    private int _disposeAfterRun;

    private void Enter()
    {
        if (Interlocked.CompareExchange(ref _running, 1, 0) != 0)
        {
            ObjectDisposedException.ThrowIf(_core.Disposed, this);
            throw new InvalidOperationException("This WorkerPool is already running work: one caller at a time (give each thread its own pool or session).");
        }
        if (_core.Disposed)
        {
            Volatile.Write(ref _running, 0);
            ThrowHelper.Disposed(nameof(WorkerPool));
        }
    }

    private void Exit() => Volatile.Write(ref _running, 0);

    /// <summary>
    /// Stops and joins the worker threads and frees their scratch; waits for a run in progress to finish first. Called by
    /// an item of a run (on the running thread or a worker), which cannot wait for its own run, it is done when the run returns.
    /// </summary>
    public void Dispose()
    {
        if (Volatile.Read(ref _running) != 0 && (_runner == Environment.CurrentManagedThreadId || _core.OnWorkerThread()))
        {
            Volatile.Write(ref _disposeAfterRun, 1);
            return;
        }
        // take the run flag so no run can start or be in flight while the scratch is freed
        var spin = new SpinWait();
        while (Interlocked.CompareExchange(ref _running, 1, 0) != 0)
        {
            if (_core.Disposed) return;
            spin.SpinOnce();
        }
        try { _core.Stop(join: true); }
        finally { Volatile.Write(ref _running, 0); }
        GC.SuppressFinalize(this);
    }

    /// <summary>
    /// An unreachable pool cannot be running (a run keeps it alive): stop its threads and free the scratch. A pool whose
    /// constructor threw (threads out of range) is finalized too, without a core: an exception here would end the process.
    /// </summary>
    ~WorkerPool() => _core?.Stop(join: false);

    /// <summary>The state the worker threads share; it holds no reference to the pool object, so a dropped pool can be collected.</summary>
    private sealed class Core
    {
        private readonly Thread?[] _threads;
        private readonly ManualResetEventSlim?[] _go;
        private readonly ManualResetEventSlim _done = new(false, 0);
        public float*[] Scratch;
        public long ScratchFloats;
        public readonly int Threads;
        private long _generation;
        private int _pending, _next, _items;
        private bool _affine;
        /// <summary>Affine runs: the next item of thread w's block at [w·16] and the block's end at [w·16 + 1] (a cache line each).</summary>
        private readonly int[] _claim;
        private IParallelWork? _work;
        private Exception? _error;
        private volatile bool _stopping;
        private int _stopped;
        public bool Disposed => Volatile.Read(ref _stopped) != 0;

        /// <summary>Spin iterations (Thread.SpinWait(20) each, ~50 µs in all here) before a waiting thread blocks.</summary>
        private const int SpinRounds = 500;
        private int _hot;

        /// <summary>
        /// The CPU each thread last ran on (thread w at [w·16], one cache line each), published while it waits or starts work.
        /// When the OS puts two of the pool's threads on one CPU (e.g. while the runtime's tiered-compilation thread holds
        /// the other CPU of a 2-CPU machine), a thread that spin-waits for the other only takes its CPU time: a 2-thread
        /// layer call went from 100 µs to 550 µs for whole 10 ms stretches. A waiter that sees the thread it waits for on
        /// its own CPU yields the CPU instead (<see cref="Pause"/>): it stays runnable, so the kernel's load balancer can move
        /// one of the two to an idle CPU. Blocking at once was worse (the woken thread was placed on its waker's CPU every
        /// time and the two rarely separated again: 290 µs per call); yielding alone let a rare call wait a whole time slice
        /// (a yield is no hand-off), so after a few yields in a row the waiter blocks. A worker that finds itself on the
        /// caller's CPU first takes that CPU out of its own affinity (<see cref="CpuPlacement"/>: the kernel moves it at once);
        /// the yields remain for where it cannot move.
        /// </summary>
        private readonly int[] _cpu;

        private void Publish(int w)
        {
            int c = CpuPlacement.CurrentCpu();
            if (_cpu[w * 16] != c) Volatile.Write(ref _cpu[w * 16], c);
        }

        private bool SharesCpu(int w, int other) => Volatile.Read(ref _cpu[w * 16]) == Volatile.Read(ref _cpu[other * 16]);

        /// <summary>
        /// Worker <paramref name="w"/>, found on the caller's CPU, takes that CPU out of its own affinity (see
        /// <see cref="CpuPlacement"/>); true when it moved. <paramref name="avoided"/> is the CPU it currently keeps off.
        /// </summary>
        private bool MoveOffCaller(int w, ulong[]? allowed, ulong[]? lastSet, ref int avoided)
        {
            if (allowed == null || lastSet == null) return false;
            int c = Volatile.Read(ref _cpu[0]);
            if (c < 0 || c == avoided || c != Volatile.Read(ref _cpu[w * 16])) return false;
            if (!CpuPlacement.AvoidOnThisThread(allowed, lastSet, c)) return false;
            avoided = c;
            Publish(w);
            return true;
        }

        /// <summary>Rounds in a row a waiter yields to a thread on its own CPU before it blocks (a yield is no guaranteed hand-off).</summary>
        private const int SharedCpuYields = 8;

        /// <summary>
        /// One round of a spin-wait: a short pause, or a yield of the CPU when the thread waited for shares it; false (stop
        /// spinning and block) after <see cref="SharedCpuYields"/> yields in a row.
        /// </summary>
        private static bool Pause(bool sharedCpu, ref int shared)
        {
            if (!sharedCpu) { shared = 0; Thread.SpinWait(20); return true; }
            if (++shared > SharedCpuYields) return false;
            Thread.Yield();
            return true;
        }

        /// <summary>True when any worker last published the caller's CPU (one that has finished its item counts too: its spinning would take the caller's CPU as well).</summary>
        private bool WorkerOnCallerCpu()
        {
            for (int w = 1; w < Threads; w++) if (SharesCpu(0, w)) return true;
            return false;
        }

        public void EnterHot() => Interlocked.Increment(ref _hot);

        public void ExitHot() => Interlocked.Decrement(ref _hot);

        /// <summary>
        /// True while a waiting thread should keep spinning; every 64th round it yields its CPU to any other runnable thread
        /// (on a 2-CPU machine a runtime or OS thread would otherwise wait for a spinner's whole time slice, stalling the call).
        /// </summary>
        private bool KeepSpinning(int spin)
        {
            if ((spin & 63) == 63) Thread.Yield();
            return spin < SpinRounds || Volatile.Read(ref _hot) > 0;
        }

        public Core(int threads)
        {
            Threads = threads;
            Scratch = new float*[threads];
            _cpu = new int[threads * 16];
            _claim = new int[threads * 16];
            for (int w = 0; w < threads; w++) _cpu[w * 16] = -1 - w; // unknown: never equal
            _go = new ManualResetEventSlim?[threads];
            _threads = new Thread?[threads];
            for (int w = 1; w < threads; w++)
            {
                _go[w] = new ManualResetEventSlim(false, 0);
                int id = w;
                _threads[w] = new Thread(() => WorkerLoop(id)) { IsBackground = true, Name = $"FastAttn wk {w}" };
                _threads[w]!.Start();
            }
        }

        /// <summary>True on one of this core's worker threads.</summary>
        public bool OnWorkerThread()
        {
            var t = Thread.CurrentThread;
            for (int w = 1; w < Threads; w++) if (ReferenceEquals(_threads[w], t)) return true;
            return false;
        }

        public bool AnyThreadAlive
        {
            get
            {
                for (int w = 1; w < Threads; w++) if (_threads[w]!.IsAlive) return true;
                return false;
            }
        }

        public void GrowScratch(long floats)
        {
            for (int w = 1; w < Threads; w++)
            {
                float* p = (float*)NativeMemory.AlignedAlloc((nuint)(floats * sizeof(float)), 64);
                float* old = Scratch[w];
                Scratch[w] = p;
                if (old != null) NativeMemory.AlignedFree(old);
            }
            ScratchFloats = floats;
        }

        public void Run(IParallelWork work, int items, bool affine)
        {
            if (items <= 0) return;
            if (Threads == 1 || items == 1)
            {
                for (int i = 0; i < items; i++) work.Execute(i, 0);
                return;
            }
            Publish(0);
            _work = work;
            _items = items;
            _next = 0;
            _affine = affine;
            if (affine)
                for (int w = 0; w < Threads; w++)
                {
                    _claim[w * 16] = (int)((long)w * items / Threads);
                    _claim[w * 16 + 1] = (int)((long)(w + 1) * items / Threads);
                }
            _error = null;
            Volatile.Write(ref _pending, Threads - 1);
            Interlocked.Increment(ref _generation);
            for (int w = 1; w < Threads; w++) _go[w]!.Set();
            Drain(0);
            // wait for the workers: spin briefly, then block (reset before checking, so no wake-up is lost)
            for (int spin = 0, shared = 0; Volatile.Read(ref _pending) != 0 && KeepSpinning(spin) && Pause(WorkerOnCallerCpu(), ref shared); spin++) { }
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

        /// <summary>
        /// Claims and runs items until none is left. Plain runs take the next item of the whole run (whichever thread comes
        /// first: the OS wakes them in no fixed order); affine runs take thread <paramref name="worker"/>'s own block first,
        /// then the others' leftovers, so two regions cut alike put the same block on the same thread (a product that
        /// computes the heads a thread then attends to; see <c>MultiHeadAttention</c>) while a thread the OS holds back still
        /// has its items taken over.
        /// </summary>
        private void Drain(int worker)
        {
            var work = _work!;
            if (_affine)
            {
                for (int k = 0; k < Threads; k++)
                {
                    int v = worker + k < Threads ? worker + k : worker + k - Threads;
                    int end = _claim[v * 16 + 1];
                    while (true)
                    {
                        int i = Interlocked.Increment(ref _claim[v * 16]) - 1;
                        if (i >= end) break;
                        try { work.Execute(i, worker); }
                        catch (Exception e)
                        {
                            Interlocked.CompareExchange(ref _error, e, null);
                            for (int u = 0; u < Threads; u++) Volatile.Write(ref _claim[u * 16], _claim[u * 16 + 1]);
                            return;
                        }
                    }
                }
                return;
            }
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
            var go = _go[w]!;
            ulong[]? allowed = CpuPlacement.AllowedOfThisThread(), lastSet = allowed == null ? null : (ulong[])allowed.Clone();
            int avoided = -1;
            while (true)
            {
                // spin (through a whole session call while hot), then block
                for (int spin = 0, shared = 0; Volatile.Read(ref _generation) == seen && !_stopping && KeepSpinning(spin); spin++)
                {
                    Publish(w);
                    if (!Pause(SharesCpu(w, 0) && !MoveOffCaller(w, allowed, lastSet, ref avoided), ref shared)) break;
                }
                while (Volatile.Read(ref _generation) == seen && !_stopping)
                {
                    go.Reset();
                    if (Volatile.Read(ref _generation) != seen || _stopping) break;
                    go.Wait();
                }
                if (_stopping) return;
                seen = Volatile.Read(ref _generation);
                Publish(w);
                if (SharesCpu(w, 0)) MoveOffCaller(w, allowed, lastSet, ref avoided);
                Drain(w);
                if (Interlocked.Decrement(ref _pending) == 0) _done.Set();
            }
        }

        /// <summary>Stops the workers (joining them when asked) and frees the scratch; idempotent.</summary>
        public void Stop(bool join)
        {
            if (Interlocked.Exchange(ref _stopped, 1) != 0) return;
            _stopping = true;
            for (int w = 1; w < Threads; w++) _go[w]!.Set();
            if (join)
            {
                for (int w = 1; w < Threads; w++) _threads[w]!.Join();
                for (int w = 1; w < Threads; w++) _go[w]!.Dispose();
                _done.Dispose();
            }
            // no run is in flight (Dispose holds the run flag; a collected pool cannot be running), so no kernel reads these
            for (int i = 0; i < Threads; i++) { if (Scratch[i] != null) NativeMemory.AlignedFree(Scratch[i]); Scratch[i] = null; }
        }
    }
}
