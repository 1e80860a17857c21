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
        float* callerScratch, long scratchFloats, WorkerPool pool, bool affineGroups = false)
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
            flops += SequenceFlops(lq, lk, valid, a.Window, a.D, a.Dv, a.Heads);
            maxLq = Math.Max(maxLq, lq);
        }
        if (flops < ParallelFlops) return false;
        int groups = nSeq * a.KvHeads;
        int nq = GemmCore.PanelWidth(a.Isa); // a query tile is two vectors, one panel width
        bool causal = a.Causal != CausalMode.None;
        int chunks = ChooseChunks(threads, a.KvHeads, nq, maxLq, causal, seqLens, keyLens, validLens, nSeq, a.TotalQ, a.TotalK, a.Causal == CausalMode.BottomRight);
        if (groups * chunks < 2) return false;
        pool.EnsureWorkerScratch(scratchFloats);
        using var lease = pool.Acquire();
        var job = pool.Job<AttentionJob>();
        job.Set(pool, a, callerScratch, nSeq, chunks, ChunkRows(maxLq, chunks, nq), causal);
        for (int s = 0, sq = 0, sk = 0; s < nSeq; s++)
        {
            int lq = seqLens.IsEmpty ? a.TotalQ : seqLens[s];
            int lk = keyLens.IsEmpty ? a.TotalK : keyLens[s];
            job.SetSequence(s, sq, lq, sk, lk, validLens.IsEmpty ? lk : validLens[s]);
            sq += lq; sk += lk;
        }
        pool.RunHeld(job, groups * chunks, affine: affineGroups && chunks == 1);
        job.Clear();
        return true;
    }

    /// <summary>
    /// True when a self-attention call of one sequence of <paramref name="tokens"/> tokens (no packed batch) on
    /// <paramref name="threads"/> threads would split by key/value head groups alone (one query chunk per group), as
    /// <see cref="TryMultithread"/> decides: then thread w runs groups [w·G/threads, (w+1)·G/threads) under
    /// <see cref="AttentionCall.AffineGroups"/>.
    /// </summary>
    internal static bool SplitsByGroups(IsaPath isa, int heads, int kvHeads, int headDim, int valueHeadDim, int tokens, int validKeys, int window, CausalMode causal, int threads)
    {
        if (threads < 2 || tokens < 1) return false;
        int kv = kvHeads == 0 ? heads : kvHeads, d = headDim, dv = valueHeadDim == 0 ? d : valueHeadDim;
        if (SequenceFlops(tokens, tokens, validKeys, window, d, dv, heads) < ParallelFlops || kv < 2) return false;
        int nq = GemmCore.PanelWidth(isa);
        Span<int> valid = stackalloc int[1];
        valid[0] = validKeys;
        return ChooseChunks(threads, kv, nq, tokens, causal != CausalMode.None, default, default,
            validKeys < tokens ? valid : default, 1, tokens, tokens, causal == CausalMode.BottomRight) == 1;
    }

    /// <summary>Multiply-add flops of one sequence's Q·Kᵀ and P·V over the keys its queries see (valid ones, within the window).</summary>
    private static double SequenceFlops(int lq, int lk, int valid, int window, int d, int dv, int heads) =>
        2.0 * lq * Math.Min(Math.Min(lk, valid), window > 0 ? 2L * window + 1 : long.MaxValue) * (d + dv) * heads;

    /// <summary>Query rows per chunk when a group's longest sequence is cut into <paramref name="chunks"/> (whole query tiles).</summary>
    private static int ChunkRows(int maxLq, int chunks, int nq) => ((maxLq + chunks - 1) / chunks + nq - 1) / nq * nq;

    /// <summary>
    /// Query chunks per (sequence, key/value head) group. Cutting a group lets the threads share work that does not
    /// divide evenly (5 heads on 2 threads took 3 heads' time; one head could not be shared at all), but each chunk
    /// packs its group's K and V again (under a causal mask only the keys its rows see), about 0.8 of a query tile's
    /// work (measured at 512 tokens, head width 128), and chunks are whole query tiles, so 300 queries in 4 chunks are
    /// 96 + 96 + 96 + 12 rows (on 2 threads one took 192 rows: 1.41× instead of ~1.9×). So the count is chosen by
    /// playing the pool's hand-out (each item goes to the thread free first, in item order) for 1 to 8 chunks (up to 2
    /// per thread, at most 32, on more threads; at most 2,048 items played in all) with each chunk's real cost — its
    /// tiles × the keys they see (fewer under a causal mask) plus the packing — and keeping the fewest chunks
    /// within 1 % of the earliest finish. Under a causal mask the chunks of a group are handed out last rows first
    /// (they see the most keys), which the pool's greedy hand-out balances best.
    /// </summary>
    internal static int ChooseChunks(int threads, int kvHeads, int nq, int maxLq, bool causal, ReadOnlySpan<int> seqLens, ReadOnlySpan<int> keyLens,
        ReadOnlySpan<int> validLens, int nSeq, int totalQ, int totalK, bool bottomRight)
    {
        int groups = nSeq * kvHeads, maxTiles = (maxLq + nq - 1) / nq;
        if (maxTiles <= 1 || groups >= 8 * threads) return 1;
        Span<double> loads = stackalloc double[Math.Min(threads, 256)]; // a min-heap: loads[0] is the thread free first
        int best = 1;
        long played = 0;
        double bestTime = double.MaxValue;
        for (int c = 1, cMax = Math.Min(maxTiles, Math.Clamp(2 * threads, 8, 32)); c <= cMax; c++)
        {
            if (c > 1 && (played += (long)groups * c) > 2048) break;
            int rows = ChunkRows(maxLq, c, nq);
            if (c > 1 && rows == ChunkRows(maxLq, c - 1, nq)) continue; // the same cut as c − 1 with an empty chunk
            loads.Clear();
            for (int s = 0; s < nSeq; s++)
            {
                int lq = seqLens.IsEmpty ? totalQ : seqLens[s], lk = keyLens.IsEmpty ? totalK : keyLens[s];
                int keyEnd = Math.Min(lk, validLens.IsEmpty ? lk : validLens[s]), shift = bottomRight ? lk - lq : 0;
                for (int g = 0; g < kvHeads; g++)
                    for (int i = 0; i < c; i++)
                    {
                        int ci = causal ? c - 1 - i : i, r0 = ci * rows, r1 = Math.Min(lq, r0 + rows);
                        if (r0 >= r1) continue;
                        double cost = 0.8 * (causal ? Math.Clamp(r1 + shift, 0, keyEnd) : keyEnd); // packing K and V (a causal chunk: the keys it sees)
                        for (int t0 = r0; t0 < r1; t0 += nq)
                            cost += causal ? Math.Clamp(Math.Min(r1, t0 + nq) + shift, 0, keyEnd) : keyEnd;
                        AddToLeast(loads, cost);
                    }
            }
            double finish = 0;
            foreach (double l in loads) finish = Math.Max(finish, l);
            if (finish < bestTime * 0.99) { bestTime = finish; best = c; }
        }
        return best;
    }

    /// <summary>Adds <paramref name="cost"/> to the least load of a min-heap of loads and restores the heap.</summary>
    private static void AddToLeast(Span<double> heap, double cost)
    {
        double v = heap[0] + cost;
        int i = 0, n = heap.Length;
        while (true)
        {
            int l = 2 * i + 1;
            if (l >= n) break;
            int m = l + 1 < n && heap[l + 1] < heap[l] ? l + 1 : l;
            if (heap[m] >= v) break;
            heap[i] = heap[m];
            i = m;
        }
        heap[i] = v;
    }

    /// <summary>One split attention call; reused by its pool (its tables grow, never shrink), so a run allocates nothing.</summary>
    internal sealed class AttentionJob : IParallelWork
    {
        private WorkerPool? _pool;
        private Args _a;
        private float* _callerScratch;
        private int[] _q0 = new int[8], _k0 = new int[8], _lq = new int[8], _lk = new int[8], _valid = new int[8];
        private int _kvHeads, _chunks, _chunkRows;
        private bool _lastRowsFirst;

        public void Set(WorkerPool pool, in Args a, float* callerScratch, int nSeq, int chunks, int chunkRows, bool lastRowsFirst)
        {
            _pool = pool; _a = a; _callerScratch = callerScratch; _kvHeads = a.KvHeads; _chunks = chunks; _chunkRows = chunkRows; _lastRowsFirst = lastRowsFirst;
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
            if (_lastRowsFirst) c = _chunks - 1 - c;
            int lq = _lq[s];
            int r0 = c * _chunkRows, r1 = Math.Min(lq, r0 + _chunkRows);
            if (r0 >= r1) return;
            RunGroup(_a, _q0[s], lq, _k0[s], _lk[s], _valid[s], g, r0, r1, worker == 0 ? _callerScratch : _pool!.WorkerScratch(worker));
        }
    }
}
