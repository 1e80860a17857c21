using FastAttn.Composition;
using FastAttn.IO;
using FastAttn.Kernels;
using FastAttn.Layers;
using FastAttn.Tagging;
using FastAttn.Tests.IO;
using FastAttn.Threading;

namespace FastAttn.Tests.Threading;

/// <summary>
/// What a server does wrong, repeated 100 times each with both threads released together by a barrier: two callers on
/// one single-caller object, and Dispose (or a GC) while a call runs. Every outcome must be a right answer or the
/// documented exception — never a crash, a hang or a wrong answer.
/// </summary>
public class MisuseStressTests(Xunit.Abstractions.ITestOutputHelper output)
{
    public const int Repetitions = 100;

    /// <summary>Runs <paramref name="a"/> and <paramref name="b"/> on two threads released together; returns what each threw (null if nothing).</summary>
    internal static (Exception? A, Exception? B) Race(Action a, Action b)
    {
        using var barrier = new Barrier(2);
        Exception? ea = null, eb = null;
        var t = new Thread(() => { barrier.SignalAndWait(); try { b(); } catch (Exception e) { eb = e; } });
        t.Start();
        barrier.SignalAndWait();
        try { a(); } catch (Exception e) { ea = e; }
        Assert.True(t.Join(TimeSpan.FromSeconds(30)), "the second thread hung");
        return (ea, eb);
    }

    /// <summary>
    /// Starts <paramref name="callers"/> callers together (caller c runs <paramref name="caller"/>(c) on the thread pool),
    /// runs <paramref name="dispose"/> at once or after a spin that grows with <paramref name="rep"/>, and waits for the
    /// callers: one still running after 30 s fails the test with a <see cref="TimeoutException"/>.
    /// </summary>
    internal static async Task CallersThenDispose(int callers, int rep, Func<int, Task> caller, Action dispose)
    {
        using var start = new Barrier(callers + 1);
        var tasks = Enumerable.Range(0, callers).Select(c => Task.Run(async () => { start.SignalAndWait(); await caller(c); })).ToArray();
        start.SignalAndWait();
        if (rep % 2 == 1) Thread.SpinWait(rep * 300);
        dispose();
        await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(30));
    }

    private static void AssertOneCallerAtATime(Exception? e)
    {
        if (e == null) return;
        var ioe = Assert.IsType<InvalidOperationException>(e);
        Assert.Contains("one caller at a time", ioe.Message);
    }

    [Fact]
    public void Session_TwoCallers_OneRunsRight_TheOtherIsToldOneCallerAtATime()
    {
        foreach (int threads in new[] { 1, 2 })
        {
            // a call of about a millisecond, so the two callers overlap even when they share one core
            using var enc = TransformerEncoder.Create(layers: 2, dModel: 128, heads: 4, ffDim: 256, seed: 3);
            using var s = enc.CreateSessionUnchecked(192, threads);
            float[] x = Reference.Random(192 * 128, 1), want = new float[192 * 128];
            s.Run(x, want);
            int refused = 0;
            for (int rep = 0; rep < Repetitions; rep++)
            {
                float[] ya = new float[want.Length], yb = new float[want.Length];
                var (ea, eb) = Race(() => s.Run(x, ya), () => s.Run(x, yb));
                AssertOneCallerAtATime(ea);
                AssertOneCallerAtATime(eb);
                if (ea == null) Assert.Equal(want, ya);
                if (eb == null) Assert.Equal(want, yb);
                Assert.False(ea != null && eb != null, "both callers refused");
                refused += (ea != null ? 1 : 0) + (eb != null ? 1 : 0);
            }
            output.WriteLine($"threads {threads}: {refused} of {Repetitions} races ended in the one-caller exception");
            // still right afterwards
            var y = new float[want.Length];
            s.Run(x, y);
            Assert.Equal(want, y);
        }
    }

    [Fact]
    public void PosTagger_TwoCallers_OneTagsRight_TheOtherIsToldOneCallerAtATime()
    {
        using var model = PosTagModel.LoadBundled("attention");
        using var tagger = model.CreateTagger(threads: 1);
        const string text = "I saw a saw in the old shed, and then I sawed the wood with it before the rain came.";
        var want = tagger.Tag(text);
        for (int rep = 0; rep < Repetitions; rep++)
        {
            TaggedToken[]? a = null, b = null;
            var (ea, eb) = Race(() => a = tagger.Tag(text), () => b = tagger.Tag(text));
            AssertOneCallerAtATime(ea);
            AssertOneCallerAtATime(eb);
            if (ea == null) Assert.Equal(want, a);
            if (eb == null) Assert.Equal(want, b);
        }
    }

    // a pool whose constructor threw is still finalized; its finalizer read the core the constructor never made, and an
    // exception on the finalizer thread ends the process (found by the reflection probe: the test host died)
    [Fact]
    public void WorkerPool_WhoseConstructorThrew_IsFinalizedWithoutEndingTheProcess()
    {
        static void Construct(int threads)
        {
            try { using var pool = new WorkerPool(threads); }
            catch (ArgumentOutOfRangeException) { }
        }
        for (int rep = 0; rep < Repetitions; rep++) { Construct(0); Construct(-1); Construct(257); }
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        using var alive = new WorkerPool(2);
        var work = new Counting();
        alive.Run(work, 10);
        Assert.Equal(10, work.Done);
    }

    /// <summary>
    /// Two threads calling one layer with one shared pool (a misuse: a pool takes one caller at a time): the kernels' job
    /// objects belong to the pool, and a second caller filled one in while the first one's run read it — the run then used
    /// the other call's pointers and sizes and the process died of an access violation. Now a kernel holds the pool before
    /// it fills in its job: every call either gives the right answer or is refused with the one-caller exception — on the
    /// layer-by-rows path, the split path and with calls of different sizes.
    /// </summary>
    [Fact]
    public void EncoderBlock_TwoCallersSharingOnePool_RightAnswerOrOneCallerAtATime()
    {
        using var enc = TransformerEncoder.Create(layers: 1, dModel: 96, heads: 3, ffDim: 192, seed: 5);
        var block = Assert.IsType<EncoderBlock>(enc.Blocks[0]);
        const int ta = 128, tb = 200, d = 96;
        float[] xa = Reference.Random(ta * d, 6), xb = Reference.Random(tb * d, 7);
        using var pool = new WorkerPool(2);
        foreach (bool byRows in new[] { true, false })
        {
            float[] wantA = new float[ta * d], wantB = new float[tb * d];
            EncoderBlock.NoRowLocalLayer = !byRows;
            try
            {
                block.Forward(xa, wantA, new Batch(ta, pool: pool), new float[block.ScratchSize(ta)]);
                block.Forward(xb, wantB, new Batch(tb, pool: pool), new float[block.ScratchSize(tb)]);
            }
            finally { EncoderBlock.NoRowLocalLayer = false; }
            int refused = 0;
            for (int rep = 0; rep < 4 * Repetitions; rep++)
            {
                float[] ya = new float[ta * d], yb = new float[tb * d], sa = new float[block.ScratchSize(ta)], sb = new float[block.ScratchSize(tb)];
                void Call(float[] x, float[] y, int t, float[] scratch)
                {
                    EncoderBlock.NoRowLocalLayer = !byRows;
                    try { block.Forward(x, y, new Batch(t, pool: pool), scratch); }
                    finally { EncoderBlock.NoRowLocalLayer = false; }
                }
                var (ea, eb) = Race(() => Call(xa, ya, ta, sa), () => Call(xb, yb, tb, sb));
                AssertOneCallerAtATime(ea);
                AssertOneCallerAtATime(eb);
                if (ea == null) Assert.Equal(wantA, ya);
                if (eb == null) Assert.Equal(wantB, yb);
                refused += (ea != null ? 1 : 0) + (eb != null ? 1 : 0);
            }
            output.WriteLine($"by rows {byRows}: {refused} of {4 * Repetitions} races refused one caller");
            // still right afterwards
            var y2 = new float[ta * d];
            block.Forward(xa, y2, new Batch(ta, pool: pool), new float[block.ScratchSize(ta)]);
            Assert.Equal(wantA, y2);
        }
    }

    [Fact]
    public void WorkerPool_TwoCallers_TheSecondIsRefused()
    {
        using var pool = new WorkerPool(2);
        var work = new Counting();
        for (int rep = 0; rep < Repetitions; rep++)
        {
            var (ea, eb) = Race(() => pool.Run(work, 2000), () => pool.Run(work, 2000));
            foreach (var e in new[] { ea, eb }) if (e != null) Assert.IsType<InvalidOperationException>(e);
        }
        work.Done = 0;
        pool.Run(work, 100);
        Assert.Equal(100, work.Done);
    }

    /// <summary>
    /// An item that disposes its own pool — on the calling thread (worker 0) or on a pool thread: Dispose cannot wait for
    /// the run it is part of (it spun for ever), so the run finishes every item, returns, and the pool is disposed then.
    /// </summary>
    [Fact]
    public async Task WorkerPool_DisposedByAnItemOfItsOwnRun_TheRunFinishes_ThenThePoolIsDisposed()
    {
        for (int rep = 0; rep < Repetitions; rep++)
        {
            var pool = new WorkerPool(2);
            var work = new DisposingItem(pool, disposeOnWorker: rep % 3);
            await Task.Run(() => pool.Run(work, 64)).WaitAsync(TimeSpan.FromSeconds(30));   // a hang fails with a TimeoutException
            Assert.Equal(64, work.Done);
            Assert.True(work.Disposed);
            Assert.Throws<ObjectDisposedException>(() => pool.Run(new Counting(), 4));
            Assert.False(pool.AnyThreadAlive);
            pool.Dispose(); // again: nothing left to do
        }
    }

    private sealed class DisposingItem(WorkerPool pool, int disposeOnWorker) : IParallelWork
    {
        public int Done;
        public volatile bool Disposed;
        public void Execute(int item, int worker)
        {
            // 0: the first item on the caller's thread; 1: the first on the pool thread; 2: whichever thread runs item 10
            bool mine = disposeOnWorker == 2 ? item == 10 : worker == disposeOnWorker;
            if (mine && !Disposed) { Disposed = true; pool.Dispose(); }
            // the pool thread's case needs an item on the pool thread: the caller's items hold back until it has one
            if (disposeOnWorker == 1 && worker == 0)
                for (long t0 = Environment.TickCount64; !Disposed && Environment.TickCount64 - t0 < 10_000;) Thread.Yield();
            Interlocked.Increment(ref Done);
            Thread.SpinWait(200);
        }
    }

    /// <summary>
    /// A block of the caller's own that disposes the session running it — on the session's thread, or from an item it runs
    /// on the session's pool thread: Session.Dispose waited for the call in progress, which was its own (it spun for ever).
    /// The call now runs to its end with the right output, the session is disposed as it returns, and its threads end.
    /// </summary>
    [Fact]
    public async Task Session_DisposedByABlockOfItsOwnCall_TheCallFinishes_ThenTheSessionIsDisposed()
    {
        for (int rep = 0; rep < Repetitions; rep++)
        {
            var block = new SessionDisposingBlock(onWorker: rep % 2 == 1);
            using var stack = new Stack(block, new SessionDisposingBlock(onWorker: false) { Inert = true });
            var session = stack.CreateSession(8, threads: 2);
            block.Session = session;
            var x = Enumerable.Range(0, 24).Select(i => (float)i).ToArray();
            var y = new float[24];
            await Task.Run(() => session.Run(x, y)).WaitAsync(TimeSpan.FromSeconds(30));   // a hang fails with a TimeoutException
            Assert.Equal(x.Select(v => v + 2f), y);                                         // both blocks ran, after the dispose too
            Assert.True(block.Disposed);
            Assert.Throws<ObjectDisposedException>(() => session.Run(x, y));
            Assert.False(session.WorkersAlive);
            session.Dispose();
        }
    }

    /// <summary>
    /// A block running its own SessionPool again from inside a leased session (sync or async): with every session leased it
    /// waited for its own session — for ever with capacity 1. Now such a call gets InvalidOperationException at once and
    /// the outer call fails with it; with a session free the inner call runs on it and both give the right output; a
    /// block running another pool is not held back; the pool serves on afterwards.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task SessionPool_RunAgainByABlockOfItsOwnSession_IsRefusedWhenNoSessionIsFree_NotLeftWaiting(bool async)
    {
        var x = Enumerable.Range(0, 24).Select(i => (float)i).ToArray();
        for (int rep = 0; rep < 20; rep++)
        {
            // capacity 1: the only session is the caller's own
            var block = new PoolRunningBlock { Async = async };
            using (var stack = new Stack(block))
            using (var pool = new SessionPool(stack, 8, capacity: 1, warmUp: false))
            {
                block.Pool = pool;
                var y = new float[24];
                var e = await Assert.ThrowsAsync<InvalidOperationException>(() => Task.Run(() => pool.Run(x, y)).WaitAsync(TimeSpan.FromSeconds(30)));
                Assert.Contains("would wait for its own session", e.Message);
                block.Pool = null; // the pool is usable afterwards: its session came back
                pool.Run(x, y);
                Assert.Equal(x.Select(v => v + 1f), y);
            }
            // capacity 2, one caller: the inner call takes the free session (the inner block runs once more, inert)
            var outer = new PoolRunningBlock { Async = async, Depth = 1 };
            using (var stack = new Stack(outer))
            using (var pool = new SessionPool(stack, 8, capacity: 2, warmUp: false))
            {
                outer.Pool = pool;
                var y = new float[24];
                await Task.Run(() => pool.Run(x, y)).WaitAsync(TimeSpan.FromSeconds(30));
                Assert.Equal(x.Select(v => v + 1f), y);
                Assert.Equal(x.Select(v => v + 1f), outer.Inner);
            }
            // the same from work the block runs on its session's pool thread (2 threads per session): the caller's thread
            // waits for the item, the item for the session the caller holds
            var onWorker = new PoolRunningBlock { Async = async, OnWorker = true };
            using (var stack = new Stack(onWorker))
            using (var pool = new SessionPool(stack, 8, threadsPerSession: 2, capacity: 1, warmUp: false))
            {
                onWorker.Pool = pool;
                var y = new float[24];
                var e = await Assert.ThrowsAsync<InvalidOperationException>(() => Task.Run(() => pool.Run(x, y)).WaitAsync(TimeSpan.FromSeconds(30)));
                Assert.Contains("would wait for its own session", e.Message);
            }
            // a block running another pool (capacity 1 each) is not a nested call
            var inner = new PoolRunningBlock();
            using var innerStack = new Stack(inner);
            using var innerPool = new SessionPool(innerStack, 8, capacity: 1, warmUp: false);
            var other = new PoolRunningBlock { Async = async, Pool = innerPool };
            using (var stack = new Stack(other))
            using (var pool = new SessionPool(stack, 8, capacity: 1, warmUp: false))
            {
                var y = new float[24];
                await Task.Run(() => pool.Run(x, y)).WaitAsync(TimeSpan.FromSeconds(30));
                Assert.Equal(x.Select(v => v + 1f), y);
                Assert.Equal(x.Select(v => v + 1f), other.Inner);
            }
        }
    }

    /// <summary>
    /// A block of the caller's own (an <see cref="IBlock"/>) whose width properties change after it was stacked: a session
    /// sliced its activations by the new width, so the library block after it got a span of another width than it reads
    /// (unchecked, through pointers: a NullReferenceException on an empty span, past the span's end on a short one). The
    /// stack now keeps the widths it was built with. Widths below 1 and negative scratch sizes are refused when stacking
    /// and when sizing a session (a width of 0 divided by zero in Run).
    /// </summary>
    [Fact]
    public void ABlockWhoseWidthsChangeAfterStacking_DoesNotChangeWhatTheSessionHandsOn()
    {
        var x = Enumerable.Range(0, 5 * 3).Select(i => 0.25f * i - 1f).ToArray();
        using var honest = new Stack(new ShiftyBlock(), new NormBlock(new LayerNorm(3)));
        var want = new float[x.Length];
        using (var s = honest.CreateSession(8)) s.Run(x, want);
        foreach (int later in new[] { 1, 0, -4, 2, 1 << 20 })
        {
            var shifty = new ShiftyBlock();
            using var stack = new Stack(shifty, new NormBlock(new LayerNorm(3)));
            using var session = stack.CreateSessionUnchecked(8, threads: 1 + (later & 1));
            shifty.Width = later;
            var y = new float[x.Length];
            session.Run(x, y);
            Assert.Equal(want, y);
            Assert.Equal(3, stack.InputWidth);
        }
        Assert.Contains("at least 1", Assert.Throws<ArgumentException>(() => new Stack(new ShiftyBlock { Width = 0 })).Message);
        Assert.Contains("at least 1", Assert.Throws<ArgumentException>(() => new Stack(new ShiftyBlock { Width = -3 }, new NormBlock(new LayerNorm(3)))).Message);
        using var negative = new Stack(new ShiftyBlock { Scratch = -1 });
        Assert.Contains("negative scratch", Assert.Throws<ArgumentException>(() => negative.CreateSession(8)).Message);
        using var negativeWorker = new Stack(new ShiftyBlock { WorkerScratch = -1L << 40 });
        Assert.Contains("negative scratch", Assert.Throws<ArgumentException>(() => negativeWorker.CreateSessionUnchecked(8, 2)).Message);
    }

    /// <summary>Copies its input; widths and scratch sizes as set (3 and 0 unless changed).</summary>
    private sealed class ShiftyBlock : IBlock
    {
        public int Width = 3;
        public long Scratch, WorkerScratch;
        public int InputWidth => Width;
        public int OutputWidth => Width;
        public long ScratchSize(int maxTokens) => Scratch;
        public long WorkerScratchSize(int maxTokens) => WorkerScratch;
        public void Validate(Batch batch) { }
        public void Forward(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
        {
            for (int i = 0; i < output.Length; i++) output[i] = i < input.Length ? input[i] : 0f;
        }
    }

    private sealed class OnWorkerCall(PoolRunningBlock b, float[] input) : IParallelWork
    {
        public Exception? Error;
        private volatile bool _done;
        public void Execute(int item, int worker)
        {
            if (worker == 0)
            {
                for (long t0 = Environment.TickCount64; !_done && Environment.TickCount64 - t0 < 10_000;) Thread.Yield();
                return;
            }
            try
            {
#pragma warning disable xUnit1031 // work on a pool thread is synchronous
                if (b.Async) b.Pool!.RunAsync(input, new float[input.Length]).Wait(TimeSpan.FromSeconds(30));
#pragma warning restore xUnit1031
                else b.Pool!.Run(input, new float[input.Length]);
            }
            catch (AggregateException e) when (e.InnerException is InvalidOperationException ie) { Error = ie; }
            catch (InvalidOperationException e) { Error = e; }
            finally { _done = true; }
        }
    }

    private sealed class PoolRunningBlock : Block
    {
        public SessionPool? Pool;
        public bool Async, OnWorker;
        public int Depth = int.MaxValue; // calls into Pool from nested runs of this block, at most
        public float[]? Inner;
        private int _level;
        public override int InputWidth => 3;
        public override int OutputWidth => 3;
        public override long ScratchSize(int maxTokens) => 0;

        protected internal override void ForwardCore(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
        {
            if (Pool != null && OnWorker)
            {
                // on the session's pool thread: item 1 of two, with the caller's item held back until it has run
                var work = new OnWorkerCall(this, input.ToArray());
                batch.Pool!.Run(work, 2);
                if (work.Error != null) throw work.Error;
            }
            else if (Pool != null && _level < Depth)
            {
                _level++;
                try
                {
                    var inner = new float[output.Length];
#pragma warning disable xUnit1031 // a block is synchronous: it waits for the pool's task as a block of a user's would
                    if (Async) Pool.RunAsync(input.ToArray(), inner).Wait(TimeSpan.FromSeconds(30));
#pragma warning restore xUnit1031
                    else Pool.Run(input, inner);
                    Inner = inner;
                }
                catch (AggregateException e) when (e.InnerException is InvalidOperationException ie) { throw ie; }
                finally { _level--; }
            }
            for (int i = 0; i < input.Length; i++) output[i] = input[i] + 1f;
        }
    }

    private sealed class SessionDisposingBlock(bool onWorker) : Block
    {
        public Session? Session;
        public bool Inert;
        public volatile bool Disposed;
        public override int InputWidth => 3;
        public override int OutputWidth => 3;
        public override long ScratchSize(int maxTokens) => 0;

        protected internal override void ForwardCore(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
        {
            if (!Inert)
            {
                if (onWorker) batch.Pool!.Run(new DisposeOnWorker(this), 64);
                else { Session!.Dispose(); Disposed = true; }
            }
            for (int i = 0; i < input.Length; i++) output[i] = input[i] + 1f;
        }

        private sealed class DisposeOnWorker(SessionDisposingBlock b) : IParallelWork
        {
            public void Execute(int item, int worker)
            {
                if (worker == 1 && !b.Disposed) { b.Session!.Dispose(); b.Disposed = true; }
                // hold the caller's items back until the pool thread has had one
                if (worker == 0)
                    for (long t0 = Environment.TickCount64; !b.Disposed && Environment.TickCount64 - t0 < 10_000;) Thread.Yield();
            }
        }
    }

    private sealed class Counting : IParallelWork
    {
        public int Done;
        public void Execute(int item, int worker) { Interlocked.Increment(ref Done); Thread.SpinWait(50); }
    }

    [Fact]
    public void Session_DisposedWhileRunning_FinishesOrThrowsObjectDisposed()
    {
        using var enc = TransformerEncoder.Create(layers: 2, dModel: 64, heads: 4, ffDim: 128, seed: 3);
        float[] x = Reference.Random(96 * 64, 1), want = new float[96 * 64];
        using (var s0 = enc.CreateSessionUnchecked(96, 1)) s0.Run(x, want);
        int disposedFirst = 0;
        for (int rep = 0; rep < Repetitions; rep++)
        {
            var s = enc.CreateSessionUnchecked(96, 1 + rep % 2);
            var y = new float[want.Length];
            var (ea, eb) = Race(() => s.Run(x, y), s.Dispose);
            Assert.Null(eb);
            if (ea == null) Assert.Equal(want, y); else { Assert.IsType<ObjectDisposedException>(ea); disposedFirst++; }
            Assert.Throws<ObjectDisposedException>(() => s.Run(x, y));
        }
        output.WriteLine($"{disposedFirst} of {Repetitions} calls met the disposed session; the rest finished first");
    }

    [Fact]
    public void Stack_DisposedWhileSessionsRun_TheyFinishOrThrowObjectDisposed()
    {
        float[] x = Reference.Random(96 * 64, 1), want = new float[96 * 64];
        using (var e0 = TransformerEncoder.Create(layers: 2, dModel: 64, heads: 4, ffDim: 128, seed: 3))
        using (var s0 = e0.CreateSessionUnchecked(96, 1)) s0.Run(x, want);
        for (int rep = 0; rep < Repetitions; rep++)
        {
            var enc = TransformerEncoder.Create(layers: 2, dModel: 64, heads: 4, ffDim: 128, seed: 3);
            using var s = enc.CreateSessionUnchecked(96, 1 + rep % 2);
            var y = new float[want.Length];
            var (ea, eb) = Race(() => s.Run(x, y), enc.Dispose);
            Assert.Null(eb);
            if (ea == null) Assert.Equal(want, y); else Assert.IsType<ObjectDisposedException>(ea);
            Assert.Throws<ObjectDisposedException>(() => s.Run(x, y));
        }
    }

    [Fact]
    public void PosTagModel_DisposedWhileTagging_FinishesOrThrowsObjectDisposed()
    {
        const string text = "Time flies like an arrow; fruit flies like a banana, and the old man the boat.";
        TaggedToken[] want;
        using (var m0 = PosTagModel.LoadBundled("attention")) want = m0.Tag(text);
        for (int rep = 0; rep < Repetitions; rep++)
        {
            var model = PosTagModel.LoadBundled("attention");
            var tagger = model.CreateTagger();
            TaggedToken[]? a = null, b = null;
            // one caller on its own tagger, one through the model's pool, and Dispose of the model
            var (ea, eb) = Race(() => a = tagger.Tag(text), () => { b = model.Tag(text); model.Dispose(); });
            foreach (var (e, r) in new[] { (ea, a), (eb, b) })
                if (e == null) Assert.Equal(want, r); else Assert.IsType<ObjectDisposedException>(e);
            Assert.Throws<ObjectDisposedException>(() => model.Tag(text));
            Assert.Throws<ObjectDisposedException>(() => tagger.Tag(text));
            tagger.Dispose();
        }
    }

    /// <summary>
    /// More callers than the model's pool has taggers (processor count), sync and async, and Dispose of the model: the
    /// callers waiting for a tagger waited for ever (the returned taggers' slots were not released after Dispose); each now
    /// tags right or gets <see cref="ObjectDisposedException"/>.
    /// </summary>
    [Fact]
    public async Task PosTagModel_DisposedWithCallersWaitingForATagger_EachTagsOrIsRefused()
    {
        const string text = "Time flies like an arrow; fruit flies like a banana, and the old man the boat.";
        TaggedToken[] want;
        using (var m0 = PosTagModel.LoadBundled("attention")) want = m0.Tag(text);
        int callers = Environment.ProcessorCount + 3;
        for (int rep = 0; rep < Repetitions / 2; rep++)
        {
            var model = PosTagModel.LoadBundled("attention");
            await CallersThenDispose(callers, rep, async c =>
            {
                for (int i = 0; i < 3; i++)
                {
                    try { Assert.Equal(want, c % 2 == 0 ? model.Tag(text) : await model.TagAsync(text)); }
                    catch (ObjectDisposedException) { }
                }
            }, model.Dispose);
            Assert.Throws<ObjectDisposedException>(() => model.Tag(text));
        }
    }

    [Fact]
    public void SafeTensorsFile_DisposedWhileReading_FinishesOrThrowsObjectDisposed()
    {
        using var dir = new TempDir();
        float[] data = Reference.Random(1 << 18, 4);
        string path = dir.File("t.safetensors");
        SafeTensorsWriter.Write(path, [new SafeTensorsWriter.Entry("w", data, [data.Length])]);
        for (int rep = 0; rep < Repetitions; rep++)
        {
            // memory-mapped for half the repetitions: the mapping must stay alive while a read runs
            var f = SafeTensorsFile.Open(path, rep % 2 == 0 ? null : new SafeTensorsOpenOptions { MapAbove = 0 });
            var dst = new float[data.Length];
            var (ea, eb) = Race(() => f.ReadFloat32("w", dst), f.Dispose);
            Assert.Null(eb);
            if (ea == null) Assert.Equal(data, dst); else Assert.IsType<ObjectDisposedException>(ea);
            Assert.Throws<ObjectDisposedException>(() => f.ReadFloat32("w", dst));
        }
    }

    [Fact]
    public void PackedWeight_DisposedWhileGemmReadsIt_FinishesOrThrowsObjectDisposed()
    {
        const int m = 64, n = 384, k = 384;
        float[] w = Reference.Random(n * k, 1), x = Reference.Random(m * k, 2), want = new float[m * n];
        var scratch = new float[Gemm.LinearScratchSize(m, k)];
        using (var p0 = new PackedWeight(w, n, k)) Gemm.Linear(x, m, p0, want, scratch);
        for (int rep = 0; rep < Repetitions; rep++)
        {
            var p = new PackedWeight(w, n, k);
            var y = new float[m * n];
            var s = new float[scratch.Length];
            var (ea, eb) = Race(() => Gemm.Linear(x, m, p, y, s), p.Dispose);
            Assert.Null(eb);
            if (ea == null) Assert.Equal(want, y); else Assert.IsType<ObjectDisposedException>(ea);
        }
    }

    [Fact]
    public void Gemm_OnATemporaryPackedWeight_SurvivesGarbageCollectionsMidCall()
    {
        // the weight is referenced by nothing but the call: its finalizer must not free the panels while the kernel reads them
        const int m = 64, n = 512, k = 512;
        float[] w = Reference.Random(n * k, 1), x = Reference.Random(m * k, 2), want = new float[m * n];
        var scratch = new float[Gemm.LinearScratchSize(m, k)];
        using (var p0 = new PackedWeight(w, n, k)) Gemm.Linear(x, m, p0, want, scratch);
        for (int rep = 0; rep < Repetitions; rep++)
        {
            var y = new float[m * n];
            var (ea, eb) = Race(() => Gemm.Linear(x, m, new PackedWeight(w, n, k), y, scratch),
                () => { for (int i = 0; i < 3; i++) { GC.Collect(); GC.WaitForPendingFinalizers(); } });
            Assert.Null(ea);
            Assert.Null(eb);
            Assert.Equal(want, y);
        }
    }
}
