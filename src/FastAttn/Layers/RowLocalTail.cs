using System.Diagnostics;
using FastAttn.Kernels;
using FastAttn.Threading;

namespace FastAttn.Layers;

/// <summary>
/// A layer whose part after the attention is row-local (output projection, norms, feed-forward): on several threads each
/// takes its share of the rows through all of it in one parallel region (see <see cref="EncoderBlock.RowLocalTailBytes"/>).
/// </summary>
internal unsafe interface IRowLocalTail
{
    /// <summary>The GEMM path of the tail's products (the shares are whole register tiles of rows).</summary>
    IsaPath TailIsa { get; }

    /// <summary>
    /// Rows [r0, r1) on the calling thread: from the input x and the heads' output attn to the output y, h holding the
    /// rows' intermediate state (x plus the attention, before the feed-forward).
    /// </summary>
    void Tail(float* x, float* y, float* h, float* attn, int r0, int r1, Span<float> scratch);
}

/// <summary>Runs a row-local tail over a pool: item i is thread i's share of the rows, in blocks of <see cref="EncoderBlock.TailBlockRows"/>; reused by its pool.</summary>
internal sealed unsafe class RowLocalTailJob : IParallelWork
{
    private IRowLocalTail? _layer;
    private WorkerPool? _pool;
    private float* _x, _y, _h, _attn, _callerScratch;
    private long _scratchFloats;
    private int _tokens;
    /// <summary>The threads' shares weighted by their measured speeds (see <see cref="ShareBalance"/>).</summary>
    private readonly ShareBalance _balance = new();

    /// <summary>The shares' balance (tests).</summary>
    internal ShareBalance Balance => _balance;

    /// <summary>
    /// Every row of a call: the caller's share on <paramref name="callerScratch"/>, the workers' on their own scratch (at
    /// least <paramref name="scratchFloats"/> each, ensured here).
    /// </summary>
    public static void Run(IRowLocalTail layer, WorkerPool pool, ReadOnlySpan<float> x, Span<float> y, Span<float> h, Span<float> attn, Span<float> callerScratch, long scratchFloats, int tokens)
    {
        pool.EnsureWorkerScratch(scratchFloats);
        fixed (float* px = x, py = y, ph = h, pa = attn, ps = callerScratch)
        {
            using var lease = pool.Acquire();
            var job = pool.Job<RowLocalTailJob>();
            job._layer = layer; job._pool = pool; job._x = px; job._y = py; job._h = ph; job._attn = pa; job._callerScratch = ps;
            job._scratchFloats = scratchFloats; job._tokens = tokens;
            job._balance.Prepare(pool.Threads);
            try { pool.RunHeld(job, pool.Threads); job._balance.Update(); }
            finally { job._layer = null; job._pool = null; job._x = job._y = job._h = job._attn = job._callerScratch = null; }
        }
    }

    /// <summary>
    /// End of the tail block that starts at row <paramref name="q0"/> of a share ending at <paramref name="r1"/>: the rest
    /// cut into as few blocks of at most <see cref="EncoderBlock.TailBlockRows"/> rows as it takes, of even size (a multiple
    /// of 4 rows), so a share of 100 rows goes as 52 + 48, not 96 + 4 (a block of a few rows reads every weight of the
    /// tail for them). Every row is computed alike in any block, so the cut does not change a bit.
    /// </summary>
    internal static int BlockEnd(int q0, int r1)
    {
        int rest = r1 - q0, max = EncoderBlock.TailBlockRows;
        int blocks = (rest + max - 1) / max;
        int size = Math.Min(max, ((rest + blocks - 1) / blocks + 3) / 4 * 4);
        return Math.Min(r1, q0 + size);
    }

    public void Execute(int item, int worker)
    {
        var l = _layer!;
        var (r0, r1) = GemmCore.RowShare(item, _pool!.Threads, _tokens, GemmCore.TileRows(l.TailIsa), _balance);
        if (r0 >= r1) return;
        long t0 = Stopwatch.GetTimestamp();
        float* scratch = worker == 0 ? _callerScratch : _pool.WorkerScratch(worker);
        for (int q0 = r0, q1; q0 < r1; q0 = q1)
            l.Tail(_x, _y, _h, _attn, q0, q1 = BlockEnd(q0, r1), new Span<float>(scratch, (int)_scratchFloats));
        _balance.Record(item, worker, Stopwatch.GetTimestamp() - t0);
    }
}

/// <summary>
/// A whole encoder layer by rows over a pool (one sequence): thread i takes its share of the rows through the first norm (pre-norm) and
/// the q|k|v product, then — every row's k and v done — through the attention for its rows over every head and the
/// row-local tail. Only the other threads' k and v rows cross between cores; the queries, the heads' outputs and the tail's
/// rows stay with the thread that wrote them. Reused by its pool.
/// </summary>
internal sealed unsafe class RowLocalLayerJob : IParallelWork
{
    private EncoderBlock? _layer;
    private WorkerPool? _pool;
    private float* _x, _y, _h, _qkv, _attn, _callerScratch;
    private long _scratchFloats, _callerFloats;
    private int _tokens, _valid, _phase;
    /// <summary>Each region's shares weighted by the threads' measured speeds (see <see cref="ShareBalance"/>).</summary>
    private readonly ShareBalance _balance0 = new(), _balance1 = new();

    /// <summary>The balance of region <paramref name="phase"/> (0: the projection, 1: the attention and tail; tests).</summary>
    internal ShareBalance Balance(int phase) => phase == 0 ? _balance0 : _balance1;

    /// <summary>
    /// Every row of a call: the caller's share on <paramref name="callerScratch"/>, the workers' on their own scratch (at
    /// least <paramref name="scratchFloats"/> each, ensured here).
    /// </summary>
    public static void Run(EncoderBlock layer, WorkerPool pool, ReadOnlySpan<float> x, Span<float> y, Span<float> h, Span<float> qkv, Span<float> attn,
        Span<float> callerScratch, long scratchFloats, int tokens, int valid)
    {
        pool.EnsureWorkerScratch(scratchFloats);
        fixed (float* px = x, py = y, ph = h, pq = qkv, pa = attn, ps = callerScratch)
        {
            using var lease = pool.Acquire();
            var job = pool.Job<RowLocalLayerJob>();
            job._layer = layer; job._pool = pool; job._x = px; job._y = py; job._h = ph; job._qkv = pq; job._attn = pa; job._callerScratch = ps;
            job._scratchFloats = scratchFloats; job._callerFloats = callerScratch.Length; job._tokens = tokens; job._valid = valid;
            try
            {
                // affine: thread i runs share i in both regions, so its attention reads the queries it projected
                job._phase = 0;
                job._balance0.Prepare(pool.Threads);
                pool.RunHeld(job, pool.Threads, affine: true);
                job._balance0.Update();
                job._phase = 1;
                job._balance1.Prepare(pool.Threads);
                pool.RunHeld(job, pool.Threads, affine: true);
                job._balance1.Update();
            }
            finally { job._layer = null; job._pool = null; job._x = job._y = job._h = job._qkv = job._attn = job._callerScratch = null; }
        }
    }

    /// <summary>
    /// Rows [start, end) of share <paramref name="item"/> of <paramref name="threads"/> for the attention and tail of a
    /// causal self-attention layer: row r sees min(r + 1, <paramref name="valid"/>) keys (both corners: a layer's keys are
    /// its queries), so later rows cost more. A row costs 2·(d + 2·ff) for the tail's products (out_proj and both
    /// feed-forward products, <paramref name="tailWeight"/> = d + 2·ff, per unit d) and about 5 per key it sees (the
    /// scores' and P·V's 4 multiply-adds per key, at the attention's lower share of the peak); the edges fall where the
    /// running cost reaches i/threads of the total, on multiples of 4 rows. Every row is computed alike in any share (same
    /// bits). On 2 threads, 200 rows of a (320, 640) layer go as 108 + 92 instead of 100 + 100. The weight per key, tried
    /// against 5 (perf/ab.sh, 2 threads, causal (320, 5 × 64, 640) at 200 tokens, (96, 3 × 32, 192) at 128, (320, 10 × 32,
    /// 1280) at 512, (96, 2 × 48, 384) at 200): 9 0.960–1.008×, 3 0.995–1.005×.
    /// </summary>
    internal static (int Start, int End) CausalShare(int item, int threads, int tokens, int valid, int tailWeight, ShareBalance? balance = null)
    {
        // weighted by the threads' measured speeds (ShareBalance) from GemmCore.BalancedRows rows a share, in steps of 2 rows
        bool weighted = balance != null && !balance.Even && tokens >= GemmCore.BalancedRows * threads;
        int Edge(int i)
        {
            if (i <= 0) return 0;
            if (i >= threads) return tokens;
            double target = CausalCost(tokens, valid, tailWeight) * (weighted ? balance!.Before(i) : (double)i / threads);
            int lo = 0, hi = tokens; // least row count whose cost reaches the target
            while (lo < hi) { int mid = (lo + hi) / 2; if (CausalCost(mid, valid, tailWeight) >= target) hi = mid; else lo = mid + 1; }
            return weighted ? Math.Min(tokens, (lo + 1) / 2 * 2) : Math.Min(tokens, (lo + 2) / 4 * 4);
        }
        int a = Edge(item), b = Edge(item + 1);
        return (a, Math.Max(a, b));
    }

    /// <summary><see cref="CausalShare"/>'s cost of a causal layer's first <paramref name="rows"/> rows: Σ_{r &lt; rows} (2·tailWeight + 5·min(r + 1, valid)).</summary>
    internal static double CausalCost(int rows, int valid, int tailWeight)
    {
        long full = Math.Min(rows, valid), capped = rows - full;
        return 2.0 * tailWeight * rows + 5.0 * (full * (full + 1) / 2.0 + (double)capped * valid);
    }

    public void Execute(int item, int worker)
    {
        var l = _layer!;
        IRowLocalTail tail = l;
        int d = l.InputWidth, p = l.Attention.QkvWidth, t = _tokens;
        // the q|k|v product costs the same for every row; under a causal mask the attention's and tail's rows do not, so
        // the second region's shares come from their cost (see CausalShare)
        bool causal = _phase == 1 && l.Attention.Settings.Causal != CausalMode.None;
        int valid = _valid < 0 ? t : Math.Min(_valid, t), tailWeight = d + 2 * l.FeedForward.HiddenWidth;
        var balance = _phase == 0 ? _balance0 : _balance1;
        var (r0, r1) = causal
            ? CausalShare(item, _pool!.Threads, t, valid, tailWeight, balance)
            : GemmCore.RowShare(item, _pool!.Threads, t, GemmCore.TileRows(tail.TailIsa), balance);
        if (r0 >= r1) return;
        long t0 = Stopwatch.GetTimestamp();
        var scratch = worker == 0 ? new Span<float>(_callerScratch, (int)_callerFloats) : new Span<float>(_pool.WorkerScratch(worker), (int)_scratchFloats);
        if (_phase == 0)
        {
            ReadOnlySpan<float> attnIn = new(_x, t * d);
            if (l.NormFirst)
            {
                // the first norm's rows into the output's rows (the output is written last, by the tail of the same rows)
                l.Norm1.ForwardCore(new ReadOnlySpan<float>(_x + (long)r0 * d, (r1 - r0) * d), r1 - r0, new Span<float>(_y + (long)r0 * d, (r1 - r0) * d), null);
                attnIn = new ReadOnlySpan<float>(_y, t * d);
            }
            l.Attention.ProjectRowsCore(attnIn, r0, r1, new Span<float>(_qkv, t * p), scratch);
            balance.Record(item, worker, Stopwatch.GetTimestamp() - t0);
            return;
        }
        l.Attention.AttendRowsCore(new ReadOnlySpan<float>(_qkv, t * p), t, _valid, new Span<float>(_attn, t * d), scratch, r0, r1);
        for (int q0 = r0, q1; q0 < r1; q0 = q1)
            tail.Tail(_x, _y, _h, _attn, q0, q1 = RowLocalTailJob.BlockEnd(q0, r1), scratch);
        balance.Record(item, worker, Stopwatch.GetTimestamp() - t0);
    }
}
