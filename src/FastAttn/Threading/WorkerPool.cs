using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;

namespace FastAttn.Threading;

/// <summary>
/// A persistent pool of worker threads: the calling thread is worker 0 and takes part in every run; workers
/// 1..Threads−1 are dedicated threads. A run's items are dealt out in advance, a sequence per thread, and a thread that
/// has run its own takes over what is left of the others'. Between runs a worker spins for a bounded time (about
/// 0.5 ms, so the next operation of the same forward pass finds it awake) and then blocks, so an idle pool uses no CPU. A run allocates nothing. Each worker thread owns a scratch buffer
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

    /// <summary>Tests: the next run is numbered <paramref name="last"/> + 1 (far from the last run's number), to run across the numbers' wrap.</summary>
    internal void SetLastRunNumber(int last) => _core.SetLastRunNumber(last);

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
        _core.Run(work, items, affine, transient: true);
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
    /// <remarks>
    /// A run's hand-off between the caller and a worker on another CPU costs one transfer of every cache line one of them
    /// reads after the other wrote it (~200 ns each way between CPUs on different dies of the AMD EPYC host, ~40 on one),
    /// and a locked instruction (a claim) first waits for every store before it to reach the other caches. So the words
    /// are laid out by writer: one line the caller writes once a run (the run's number, item count, kind and job) and the
    /// workers poll; one line per thread that only that thread writes (its CPU, asleep, started, done); one claim word per
    /// thread. A run's items are dealt out in advance, thread w's own sequence (affine runs: the w-th contiguous block;
    /// plain runs: items w, w + Threads, …), which it claims one at a time on its own word; a thread that has run its own
    /// takes what is left of the others' from their fronts. Claim words carry the run's number, so nobody resets them.
    /// The caller runs its first item without claiming it, and a thread's one item needs no look once that thread has
    /// announced it started. Measured with a 2-thread run of two 3 µs items (busy loops), AMD EPYC, CPUs on different
    /// dies: the worker began its item ~0.7–1.1 µs after the call and the call returned ~0.4–1.1 µs after the worker's item
    /// ended (a shared item counter, a pending count and the run's number on the line of the job's fields, polls every
    /// 755 ns); see <see cref="Run"/> for after.
    /// </remarks>
    private sealed class Core
    {
        private readonly Thread?[] _threads;
        private readonly ManualResetEventSlim?[] _go;
        private readonly ManualResetEventSlim _done = new(false, 0);
        public float*[] Scratch;
        public long ScratchFloats;
        public readonly int Threads;
        private volatile bool _stopping;
        private int _stopped;
        public bool Disposed => Volatile.Read(ref _stopped) != 0;

        /// <summary>
        /// Polls (<see cref="PollSpin"/> each) before a waiting thread blocks: ~0.5 ms in all here, about what 500 polls of
        /// Thread.SpinWait(20) took before (755 ns each, measured on the AMD EPYC host).
        /// </summary>
        private const int SpinRounds = 10_000;

        /// <summary>
        /// Thread.SpinWait iterations between two polls of what a waiting thread waits for: one (43 ns on the AMD EPYC host).
        /// A thread notices the other's signal half a poll late on average, and a run waits twice (the worker for the job,
        /// the caller for the worker).
        /// </summary>
        private const int PollSpin = 1;

        /// <summary>Polls between two yields of a spinning thread's CPU (<see cref="KeepSpinning"/>): ~50 µs here.</summary>
        private const int YieldEvery = 1024;
        private int _hot;

        // ---- the words of a run (see the remarks): _sync from _base, a 64-byte boundary (pinned: it never moves)
        private readonly int[] _sync;
        private readonly int _base;
        /// <summary>The job line (caller-written): the run's number, its items, 1 for affine, its job's index in <see cref="_works"/>; then 1 while the caller blocks on <see cref="_done"/>.</summary>
        private const int RunWord = 0, ItemsWord = 1, AffineWord = 2, JobWord = 3, BlockingWord = 4;
        /// <summary>Thread w's line (only w writes it) starts at _base + 16·(1 + w): its CPU, asleep (1 while it blocks), the number of the run it started an item of its own in, the number of the run it finished.</summary>
        private const int CpuWord = 0, AsleepWord = 1, StartedWord = 2, DoneWord = 3;
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private int ThreadWord(int w, int word) => _base + 16 * (1 + w) + word;
        /// <summary>Claim words, thread v's at _claimBase + 8·v: (run number &lt;&lt; 32) | the next index into v's sequence.</summary>
        private readonly long[] _claims;
        private readonly int _claimBase;
        /// <summary>
        /// The pool's jobs run so far (a run names its job by index, so the line the workers read does not change for a job
        /// they know); the last slot takes any job once the others are full. A caller's own job (<see cref="WorkerPool.Run(IParallelWork, int)"/>) is
        /// taken out again after its run.
        /// </summary>
        private readonly IParallelWork?[] _works = new IParallelWork?[16];
        private Exception? _error;
        /// <summary>The number of the last run (the caller's own count; the workers see a run's number on the job line).</summary>
        private int _lastRun;

        /// <summary>Tests: the next run gets number <paramref name="last"/> + 1, which must differ from the last run's (the workers wait for a number they have not seen). Not during a run.</summary>
        internal void SetLastRunNumber(int last) => _lastRun = last;

        /// <summary>
        /// The CPU each thread last ran on (on thread w's own line: <see cref="ThreadWord"/>), published while it waits or starts work.
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
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void Publish(int w)
        {
            int c = CpuPlacement.CurrentCpu();
            ref int slot = ref _sync[ThreadWord(w, CpuWord)];
            if (slot != c) Volatile.Write(ref slot, c);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private bool SharesCpu(int w, int other) => Volatile.Read(ref _sync[ThreadWord(w, CpuWord)]) == Volatile.Read(ref _sync[ThreadWord(other, CpuWord)]);

        /// <summary>
        /// Worker <paramref name="w"/>, found on the caller's CPU, takes that CPU out of its own affinity (see
        /// <see cref="CpuPlacement"/>); true when it moved. <paramref name="avoided"/> is the CPU it currently keeps off.
        /// </summary>
        private bool MoveOffCaller(int w, ulong[]? allowed, ulong[]? lastSet, ref int avoided)
        {
            if (allowed == null || lastSet == null) return false;
            int c = Volatile.Read(ref _sync[ThreadWord(0, CpuWord)]);
            if (c < 0 || c == avoided || c != Volatile.Read(ref _sync[ThreadWord(w, CpuWord)])) return false;
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
            if (!sharedCpu) { shared = 0; Thread.SpinWait(PollSpin); return true; }
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
        /// True while a waiting thread should keep spinning; every <see cref="YieldEvery"/>th poll it yields its CPU to any
        /// other runnable thread (on a 2-CPU machine a runtime or OS thread would otherwise wait for a spinner's whole time
        /// slice, stalling the call).
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private bool KeepSpinning(int spin)
        {
            if ((spin & (YieldEvery - 1)) == YieldEvery - 1) Thread.Yield();
            return spin < SpinRounds || Volatile.Read(ref _hot) > 0;
        }

        public Core(int threads)
        {
            Threads = threads;
            Scratch = new float*[threads];
            _sync = GC.AllocateArray<int>(16 * (threads + 2), pinned: true);
            _base = AlignedStart(ref _sync[0], sizeof(int));
            _claims = GC.AllocateArray<long>(8 * (threads + 1), pinned: true);
            _claimBase = AlignedStart(ref _claims[0], sizeof(long));
            for (int w = 0; w < threads; w++) _sync[ThreadWord(w, CpuWord)] = -1 - w; // unknown: never equal
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

        /// <summary>Index of the first element of a pinned array on a 64-byte boundary (the arrays have a line of slack).</summary>
        private static int AlignedStart<T>(ref T first, int size) where T : unmanaged
        {
            nint at = (nint)System.Runtime.CompilerServices.Unsafe.AsPointer(ref first);
            return (int)(((64 - (at & 63)) & 63) / size);
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

        /// <summary>Items of thread <paramref name="v"/>'s own sequence in a run of <paramref name="items"/> items.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private int Count(int v, int items, bool affine) => affine
            ? (int)((long)(v + 1) * items / Threads) - (int)((long)v * items / Threads)
            : v < items ? (items - 1 - v) / Threads + 1 : 0;

        /// <summary>Item <paramref name="k"/> of thread <paramref name="v"/>'s sequence.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private int Item(int v, int k, int items, bool affine) => affine ? (int)((long)v * items / Threads) + k : v + k * Threads;

        /// <summary>
        /// Claims the next index of thread <paramref name="v"/>'s sequence (of <paramref name="count"/> items) in run
        /// <paramref name="run"/>: a word stamped with an earlier run's number counts as <paramref name="from"/> (1 for
        /// the caller's, whose first item the caller runs unclaimed). −1 when none is left; reads before it claims, so a
        /// look at a finished sequence writes nothing.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private int Claim(int v, int run, int count, int from)
        {
            ref long word = ref _claims[_claimBase + 8 * v];
            while (true)
            {
                long cur = Volatile.Read(ref word);
                int k = (int)(cur >> 32) == run ? (int)cur : from;
                if (k >= count) return -1;
                if (Interlocked.CompareExchange(ref word, ((long)run << 32) | (uint)(k + 1), cur) == cur) return k;
            }
        }

        /// <summary>Index of <paramref name="work"/> in <see cref="_works"/> (added if new; the last slot takes any job once the others are full).</summary>
        private int JobIndex(IParallelWork work)
        {
            int last = _works.Length - 1, free = last;
            for (int i = 0; i < last; i++)
            {
                var known = _works[i];
                if (ReferenceEquals(known, work)) return i;
                if (known == null && free == last) free = i;
            }
            _works[free] = work;
            return free;
        }

        /// <summary>
        /// Runs items 0..items−1 (see the class remarks). Measured on the AMD EPYC host, CPUs on different dies, runs of busy
        /// 3 µs items in a loop on 2 threads: a run of 2 items took 0.32–0.36 µs more than one item (1.14–1.22 µs before),
        /// of 4 items 0.53–0.69 µs more than two (1.27–1.28 before); encoder layers on 2 threads (perf/ab.sh) at 1 token
        /// (320, 20 × 16, 640) 1.031–1.040× faster, at 4 tokens (320, 10 × 32, 1280) 1.052×, at 12 (384, 12 × 32, 1536)
        /// 1.018×; the hot loops are compiled optimized from the first call (while still tier-0, the pool code took a
        /// (96, 3 × 32, 192) layer's 2-thread call 6.9–7.3 µs against 4.5–5.1 once compiled). The job's table slot is cleared after the run when
        /// it is <c>transient</c>, a caller's own job (not one of the pool's reused ones), so the pool does not keep it alive.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(IParallelWork work, int items, bool affine, bool transient = false)
        {
            if (items <= 0) return;
            if (Threads == 1 || items == 1)
            {
                for (int i = 0; i < items; i++) work.Execute(i, 0);
                return;
            }
            Publish(0);
            int run = ++_lastRun;
            if (run == 0)
            {
                // the number wrapped: no word may still carry a number a coming run will have (no worker is in a run now)
                run = _lastRun = 1;
                Array.Clear(_claims);
                for (int w = 0; w < Threads; w++) { _sync[ThreadWord(w, StartedWord)] = 0; _sync[ThreadWord(w, DoneWord)] = 0; }
            }
            _error = null;
            _sync[_base + ItemsWord] = items;
            _sync[_base + AffineWord] = affine ? 1 : 0;
            int job = JobIndex(work);
            _sync[_base + JobWord] = job;
            Volatile.Write(ref _sync[_base + RunWord], run);
            // wake the workers that sleep; one about to sleep is woken after the fence below (see WorkerLoop)
            for (int w = 1; w < Threads; w++) if (Volatile.Read(ref _sync[ThreadWord(w, AsleepWord)]) != 0) _go[w]!.Set();
            Drain(0, run, items, affine, work);
            Interlocked.MemoryBarrier();
            for (int w = 1; w < Threads; w++) if (Volatile.Read(ref _sync[ThreadWord(w, AsleepWord)]) != 0) _go[w]!.Set();
            // wait for the workers: spin, then block. Only a caller about to block announces it and resets the event; a
            // worker sets it only when it sees the announcement. Each side writes its word and fences before it reads the
            // other's (the announcement, then the done words; a done word, then the announcement), so at least one sees
            // the other's write: the caller finds the worker done, or the worker sees the announcement and sets the event.
            for (int spin = 0, shared = 0; !AllDone(run) && KeepSpinning(spin) && Pause(WorkerOnCallerCpu(), ref shared); spin++) { }
            if (!AllDone(run))
            {
                Interlocked.Exchange(ref _sync[_base + BlockingWord], 1);
                while (true)
                {
                    _done.Reset();
                    if (AllDone(run)) break;
                    _done.Wait();
                }
                Volatile.Write(ref _sync[_base + BlockingWord], 0);
            }
            // every worker is done with the run (it read the job before it said so)
            if (transient) _works[job] = null;
            var error = _error;
            if (error != null)
            {
                _error = null;
                ExceptionDispatchInfo.Capture(error).Throw();
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private bool AllDone(int run)
        {
            for (int w = 1; w < Threads; w++) if (Volatile.Read(ref _sync[ThreadWord(w, DoneWord)]) != run) return false;
            return true;
        }

        /// <summary>
        /// Runs thread <paramref name="worker"/>'s own sequence, then what is left of the others' (from their fronts, the
        /// next thread's first), so two affine regions cut alike put the same block on the same thread (a product that
        /// computes the heads a thread then attends to; see <c>MultiHeadAttention</c>) while a thread the OS holds back
        /// still has its items taken over.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Drain(int worker, int run, int items, bool affine, IParallelWork work)
        {
            int own = Count(worker, items, affine);
            int from = worker == 0 ? 1 : 0;
            if (worker == 0 && own > 0 && !TryExecute(work, Item(0, 0, items, affine), 0, run, items, affine)) return;
            bool announced = worker == 0;
            for (int k; (k = Claim(worker, run, own, from)) >= 0;)
            {
                // after the claim: the claim (a locked instruction) does not wait for this store to reach the caller
                if (!announced) { Volatile.Write(ref _sync[ThreadWord(worker, StartedWord)], run); announced = true; }
                if (!TryExecute(work, Item(worker, k, items, affine), worker, run, items, affine)) return;
            }
            for (int j = 1; j < Threads; j++)
            {
                int v = worker + j < Threads ? worker + j : worker + j - Threads;
                int count = Count(v, items, affine), first = v == 0 ? 1 : 0;
                if (count <= first) continue;
                // a worker that is done, or that started the one item it has, leaves nothing to take (no look at its claim)
                if (v != 0 && (Volatile.Read(ref _sync[ThreadWord(v, DoneWord)]) == run
                    || count == 1 && Volatile.Read(ref _sync[ThreadWord(v, StartedWord)]) == run)) continue;
                for (int k; (k = Claim(v, run, count, first)) >= 0;)
                    if (!TryExecute(work, Item(v, k, items, affine), worker, run, items, affine)) return;
            }
        }

        /// <summary>Runs item <paramref name="i"/>; false when it threw (the error kept, every sequence claimed to its end: the run ends as soon as the items in flight finish).</summary>
        private bool TryExecute(IParallelWork work, int i, int worker, int run, int items, bool affine)
        {
            try
            {
                work.Execute(i, worker);
                return true;
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref _error, e, null);
                for (int v = 0; v < Threads; v++)
                {
                    int count = Count(v, items, affine);
                    while (Claim(v, run, count, v == 0 ? 1 : 0) >= 0) { }
                }
                return false;
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void WorkerLoop(int w)
        {
            int seen = 0;
            var go = _go[w]!;
            ulong[]? allowed = CpuPlacement.AllowedOfThisThread(), lastSet = allowed == null ? null : (ulong[])allowed.Clone();
            int avoided = -1;
            ref int runWord = ref _sync[_base + RunWord];
            while (true)
            {
                // spin (through a whole session call while hot), then block
                for (int spin = 0, shared = 0; Volatile.Read(ref runWord) == seen && !_stopping && KeepSpinning(spin); spin++)
                {
                    if ((spin & 15) == 0) Publish(w);
                    if (!Pause(SharesCpu(w, 0) && !MoveOffCaller(w, allowed, lastSet, ref avoided), ref shared)) break;
                }
                // block: announce it first (the caller reads the announcement after a fence that follows its write of the
                // run's number; this thread reads the number after the announcement's fence and the reset, so either it
                // sees the new run or the caller sees it asleep and sets its event)
                if (Volatile.Read(ref runWord) == seen && !_stopping)
                {
                    Interlocked.Exchange(ref _sync[ThreadWord(w, AsleepWord)], 1);
                    while (Volatile.Read(ref runWord) == seen && !_stopping)
                    {
                        go.Reset();
                        if (Volatile.Read(ref runWord) != seen || _stopping) break;
                        go.Wait();
                    }
                    Volatile.Write(ref _sync[ThreadWord(w, AsleepWord)], 0);
                }
                if (_stopping) return;
                seen = Volatile.Read(ref runWord);
                int items = _sync[_base + ItemsWord];
                bool affine = _sync[_base + AffineWord] != 0;
                var work = _works[_sync[_base + JobWord]]!;
                Publish(w);
                if (SharesCpu(w, 0)) MoveOffCaller(w, allowed, lastSet, ref avoided);
                Drain(w, seen, items, affine, work);
                Volatile.Write(ref _sync[ThreadWord(w, DoneWord)], seen);
                Interlocked.MemoryBarrier();
                if (Volatile.Read(ref _sync[_base + BlockingWord]) != 0) _done.Set();
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
                Array.Clear(_works);
            }
            // no run is in flight (Dispose holds the run flag; a collected pool cannot be running), so no kernel reads these
            for (int i = 0; i < Threads; i++) { if (Scratch[i] != null) NativeMemory.AlignedFree(Scratch[i]); Scratch[i] = null; }
        }
    }
}
