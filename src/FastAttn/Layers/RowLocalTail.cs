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

    /// <summary>
    /// Every row of a call: the caller's share on <paramref name="callerScratch"/>, the workers' on their own scratch (at
    /// least <paramref name="scratchFloats"/> each, ensured here).
    /// </summary>
    public static void Run(IRowLocalTail layer, WorkerPool pool, ReadOnlySpan<float> x, Span<float> y, Span<float> h, Span<float> attn, Span<float> callerScratch, long scratchFloats, int tokens)
    {
        pool.EnsureWorkerScratch(scratchFloats);
        fixed (float* px = x, py = y, ph = h, pa = attn, ps = callerScratch)
        {
            var job = pool.Job<RowLocalTailJob>();
            job._layer = layer; job._pool = pool; job._x = px; job._y = py; job._h = ph; job._attn = pa; job._callerScratch = ps;
            job._scratchFloats = scratchFloats; job._tokens = tokens;
            try { pool.Run(job, pool.Threads); }
            finally { job._layer = null; job._pool = null; job._x = job._y = job._h = job._attn = job._callerScratch = null; }
        }
    }

    public void Execute(int item, int worker)
    {
        var l = _layer!;
        var (r0, r1) = GemmCore.RowShare(item, _pool!.Threads, _tokens, GemmCore.TileRows(l.TailIsa));
        if (r0 >= r1) return;
        float* scratch = worker == 0 ? _callerScratch : _pool.WorkerScratch(worker);
        for (int q0 = r0; q0 < r1; q0 += EncoderBlock.TailBlockRows)
            l.Tail(_x, _y, _h, _attn, q0, Math.Min(r1, q0 + EncoderBlock.TailBlockRows), new Span<float>(scratch, (int)_scratchFloats));
    }
}
