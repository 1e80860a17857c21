using FastAttn.Kernels;

namespace FastAttn.Threading;

/// <summary>
/// The parallel forms of the kernels, as reusable job objects owned by a <see cref="WorkerPool"/> (so a run
/// allocates nothing). Every split gives each output element to exactly one item, computed by the same
/// sequence of operations as the single-threaded kernel, so results are bit-identical for any thread count.
/// </summary>
internal sealed unsafe class Jobs
{
    /// <summary>Below this much work (flops, or element operations for norms) an operation runs on the calling thread only.</summary>
    public const double ParallelFlops = 2e6;

    public readonly GemmJob Gemm;
    public readonly AttentionJob Attention;
    public readonly NormJob Norm;

    public Jobs(WorkerPool pool)
    {
        Gemm = new GemmJob(pool);
        Attention = new AttentionJob(pool);
        Norm = new NormJob(pool);
    }
}

/// <summary>A GEMM split by rows (large M: each item packs only its own rows) or by weight panels (small M).</summary>
internal sealed unsafe class GemmJob : IWork
{
    private readonly WorkerPool _pool;
    private GemmArgs _g;
    private int _chunks, _panels;
    private bool _byRows;

    public GemmJob(WorkerPool pool) => _pool = pool;

    /// <summary>Runs g on the pool when it is worth it; returns false (nothing done) when the caller should run it alone.</summary>
    public bool TryRun(in GemmArgs g)
    {
        int threads = _pool.Threads;
        if (threads == 1 || 2.0 * g.M * g.N * g.K < Jobs.ParallelFlops) return false;
        int mr = GemmCore.MR, panels = (g.N + GemmCore.NR - 1) / GemmCore.NR, rowTiles = (g.M + mr - 1) / mr;
        // weight panels split evenly and each thread streams only its share of the weights (A, packed by
        // both, is small); row blocks only when there are too few panels to share out
        _byRows = panels < 4 * threads && rowTiles >= threads;
        _chunks = Math.Min(threads, _byRows ? rowTiles : panels);
        if (_chunks < 2) return false;
        _g = g;
        _panels = panels;
        _pool.Run(this, _chunks);
        return true;
    }

    public void Execute(int item, int worker)
    {
        float* scratch = _pool.Scratch(worker);
        if (_byRows)
        {
            int mr = GemmCore.MR, tiles = (_g.M + mr - 1) / mr;
            int t0 = (int)((long)item * tiles / _chunks), t1 = (int)((long)(item + 1) * tiles / _chunks);
            GemmCore.Run(_g, t0 * mr, Math.Min(t1 * mr, _g.M), 0, _panels, scratch);
        }
        else
        {
            int p0 = (int)((long)item * _panels / _chunks), p1 = (int)((long)(item + 1) * _panels / _chunks);
            GemmCore.Run(_g, 0, _g.M, p0, p1, scratch);
        }
    }
}

/// <summary>Attention split over (sequence, key/value head) groups and, when they are too few, query-row chunks.</summary>
internal sealed unsafe class AttentionJob : IWork
{
    private readonly WorkerPool _pool;
    private Attention.Args _a;
    private int[] _q0 = new int[8], _k0 = new int[8], _lq = new int[8], _lk = new int[8], _valid = new int[8];
    private int _nSeq, _kvHeads, _chunks, _chunkRows;

    public AttentionJob(WorkerPool pool) => _pool = pool;

    /// <summary>Sequence table for the next run (grows, never shrinks: a larger batch than ever before allocates once).</summary>
    public void SetSequences(int nSeq)
    {
        if (_q0.Length < nSeq)
        {
            int n = Math.Max(nSeq, 2 * _q0.Length);
            _q0 = new int[n]; _k0 = new int[n]; _lq = new int[n]; _lk = new int[n]; _valid = new int[n];
        }
        _nSeq = nSeq;
    }

    public void SetSequence(int s, int q0, int lq, int k0, int lk, int valid)
    {
        _q0[s] = q0; _lq[s] = lq; _k0[s] = k0; _lk[s] = lk; _valid[s] = valid;
    }

    public bool TryRun(in Attention.Args a, double flops, int maxLq)
    {
        int threads = _pool.Threads;
        if (threads == 1 || flops < Jobs.ParallelFlops) return false;
        int groups = _nSeq * a.KvHeads;
        int nq = GemmCore.NR; // a query tile is two vectors, one panel width
        int chunks = groups >= 2 * threads ? 1 : Math.Min((2 * threads + groups - 1) / groups, (maxLq + nq - 1) / nq);
        chunks = Math.Max(chunks, 1);
        if (groups * chunks < 2) return false;
        _a = a;
        _kvHeads = a.KvHeads;
        _chunks = chunks;
        // chunk boundaries on query-tile multiples, so every chunk runs whole tiles
        _chunkRows = ((maxLq + chunks - 1) / chunks + nq - 1) / nq * nq;
        _pool.Run(this, groups * chunks);
        return true;
    }

    public void Execute(int item, int worker)
    {
        int c = item % _chunks, g = item / _chunks % _kvHeads, s = item / _chunks / _kvHeads;
        int lq = _lq[s];
        int r0 = c * _chunkRows, r1 = Math.Min(lq, r0 + _chunkRows);
        if (r0 >= r1) return;
        FastAttn.Kernels.Attention.RunGroup(_a, _q0[s], lq, _k0[s], _lk[s], _valid[s], g, r0, r1, _pool.Scratch(worker));
    }
}

/// <summary>Row-wise LayerNorm / RmsNorm split into contiguous row blocks.</summary>
internal sealed unsafe class NormJob : IWork
{
    private readonly WorkerPool _pool;
    private float* _x, _y, _gamma, _beta;
    private int _rows, _width, _chunks;
    private float _eps;
    private bool _rms;

    public NormJob(WorkerPool pool) => _pool = pool;

    public bool TryRun(float* x, float* y, int rows, int width, float* gamma, float* beta, float eps, bool rms)
    {
        int threads = _pool.Threads;
        if (threads == 1 || 8.0 * rows * width < Jobs.ParallelFlops || rows < 2) return false;
        _x = x; _y = y; _gamma = gamma; _beta = beta;
        _rows = rows; _width = width; _eps = eps; _rms = rms;
        _chunks = Math.Min(threads, rows);
        _pool.Run(this, _chunks);
        return true;
    }

    public void Execute(int item, int worker)
    {
        int r0 = (int)((long)item * _rows / _chunks), r1 = (int)((long)(item + 1) * _rows / _chunks);
        nint off = (nint)r0 * _width;
        if (_rms) Norms.RmsNorm(_x + off, _y + off, r1 - r0, _width, _gamma, _eps);
        else Norms.LayerNorm(_x + off, _y + off, r1 - r0, _width, _gamma, _beta, _eps);
    }
}
