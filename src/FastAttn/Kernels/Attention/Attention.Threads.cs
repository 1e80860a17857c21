using FastAttn.Threading;

namespace FastAttn.Kernels;

/// <summary>How attention splits itself over a pool's threads (the pool only runs the pieces).</summary>
public static unsafe partial class Attention
{
    /// <summary>Below this many flops a call runs on the calling thread only.</summary>
    private const double ParallelFlops = 2e6;

    /// <summary>
    /// Splits the call over (sequence, key/value head) groups and, when those are too few for the threads, into query
    /// chunks of whole tiles. Each output element is computed by one thread in the same order as on one thread.
    /// False (nothing done) when the call is too small to pay for the hand-off.
    /// </summary>
    private static bool TryMultithread(in Args a, ReadOnlySpan<int> seqLens, ReadOnlySpan<int> keyLens, ReadOnlySpan<int> validLens, int nSeq,
        float* callerScratch, long scratchFloats, WorkerPool pool)
    {
        int threads = pool.Threads;
        if (threads == 1) return false;
        double flops = 0;
        int maxLq = 0;
        for (int s = 0; s < nSeq; s++)
        {
            int lq = seqLens.IsEmpty ? a.TotalQ : seqLens[s];
            int lk = keyLens.IsEmpty ? a.TotalK : keyLens[s];
            int valid = validLens.IsEmpty ? lk : validLens[s];
            flops += 2.0 * lq * Math.Min(lk, valid) * (a.D + a.Dv) * a.Heads;
            maxLq = Math.Max(maxLq, lq);
        }
        if (flops < ParallelFlops) return false;
        int groups = nSeq * a.KvHeads;
        int nq = GemmCore.PanelWidth(a.Isa); // a query tile is two vectors, one panel width
        int chunks = groups >= 2 * threads ? EvenChunks(groups, threads, (maxLq + nq - 1) / nq)
            : Math.Min((2 * threads + groups - 1) / groups, (maxLq + nq - 1) / nq);
        chunks = Math.Max(chunks, 1);
        if (groups * chunks < 2) return false;
        pool.EnsureWorkerScratch(scratchFloats);
        var job = pool.Job<AttentionJob>();
        job.Set(pool, a, callerScratch, nSeq, chunks, ((maxLq + chunks - 1) / chunks + nq - 1) / nq * nq);
        for (int s = 0, sq = 0, sk = 0; s < nSeq; s++)
        {
            int lq = seqLens.IsEmpty ? a.TotalQ : seqLens[s];
            int lk = keyLens.IsEmpty ? a.TotalK : keyLens[s];
            job.SetSequence(s, sq, lq, sk, lk, validLens.IsEmpty ? lk : validLens[s]);
            sq += lq; sk += lk;
        }
        pool.Run(job, groups * chunks);
        job.Clear();
        return true;
    }

    /// <summary>
    /// Query chunks per group when there are enough groups for the threads but they do not divide evenly: 5 heads on 2
    /// threads ran as 3 + 2 (the call took 3 heads' time; in 2 chunks each, 5 + 5 halves), 12 on 8 threads as 8 + 4.
    /// Each chunk packs its group's K and V again (about 0.8 of a query tile's work, measured at 512 tokens, head width
    /// 128), so a split must save more than that: the count minimising rounds × (1/c + 0.8/tiles), c ≤ 4 and ≤ the tiles.
    /// </summary>
    internal static int EvenChunks(int groups, int threads, int tiles)
    {
        int best = 1;
        double bestCost = double.MaxValue, pack = 0.8 / Math.Max(tiles, 1);
        for (int c = 1; c <= Math.Min(4, tiles); c++)
        {
            double cost = Math.Ceiling((double)groups * c / threads) * (1.0 / c + pack);
            if (cost < bestCost - 1e-9) { bestCost = cost; best = c; }
        }
        return best;
    }

    /// <summary>One split attention call; reused by its pool (its tables grow, never shrink), so a run allocates nothing.</summary>
    internal sealed class AttentionJob : IParallelWork
    {
        private WorkerPool? _pool;
        private Args _a;
        private float* _callerScratch;
        private int[] _q0 = new int[8], _k0 = new int[8], _lq = new int[8], _lk = new int[8], _valid = new int[8];
        private int _kvHeads, _chunks, _chunkRows;

        public void Set(WorkerPool pool, in Args a, float* callerScratch, int nSeq, int chunks, int chunkRows)
        {
            _pool = pool; _a = a; _callerScratch = callerScratch; _kvHeads = a.KvHeads; _chunks = chunks; _chunkRows = chunkRows;
            if (_q0.Length < nSeq)
            {
                int n = Math.Max(nSeq, 2 * _q0.Length);
                _q0 = new int[n]; _k0 = new int[n]; _lq = new int[n]; _lk = new int[n]; _valid = new int[n];
            }
        }

        public void SetSequence(int s, int q0, int lq, int k0, int lk, int valid)
        {
            _q0[s] = q0; _lq[s] = lq; _k0[s] = k0; _lk[s] = lk; _valid[s] = valid;
        }

        public void Clear() { _pool = null; _a = default; _callerScratch = null; }

        public void Execute(int item, int worker)
        {
            int c = item % _chunks, g = item / _chunks % _kvHeads, s = item / _chunks / _kvHeads;
            int lq = _lq[s];
            int r0 = c * _chunkRows, r1 = Math.Min(lq, r0 + _chunkRows);
            if (r0 >= r1) return;
            RunGroup(_a, _q0[s], lq, _k0[s], _lk[s], _valid[s], g, r0, r1, worker == 0 ? _callerScratch : _pool!.WorkerScratch(worker));
        }
    }
}
