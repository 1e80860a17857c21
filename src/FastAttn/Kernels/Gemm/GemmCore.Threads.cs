using System.Diagnostics;
using FastAttn.Threading;

namespace FastAttn.Kernels;

/// <summary>How a GEMM splits itself over a pool's threads (the pool only runs the pieces).</summary>
internal static unsafe partial class GemmCore
{
    /// <summary>Below this many flops a product runs on the calling thread only (the hand-off costs a few µs).</summary>
    public const double ParallelFlops = 2e6;

    /// <summary>
    /// Weight bytes from which a product is split even when its flops are few: for one or a few tokens a product streams its
    /// weights from memory, and two threads stream twice as fast (a (320, 640) layer at one token on 2 threads: 43 → 29 µs in the sweep).
    /// </summary>
    public const long ParallelWeightBytes = 512 * 1024;

    /// <summary>
    /// Pieces per thread a split product's weight panels are cut into (claimed dynamically). Tried 4, so that a thread the
    /// OS takes away holds less of the product: slower on every shape measured (one (320, 4 heads, 1280) layer at 20
    /// tokens, 2 threads: 122 → 184 µs per call), because each piece packs A again and streams a shorter run of panels.
    /// A product of more rows than one A block (<see cref="MCTiles"/> tiles) is cut along its A blocks as well, which
    /// costs nothing: every thread packs each A block it works on once either way (see <see cref="TryMultithread"/>).
    /// </summary>
    public const int ChunksPerThread = 1;

    /// <summary>Scratch floats each worker thread needs for its share of an M×K product (its own A packing).</summary>
    public static long WorkerScratchSize(IsaPath isa, int m, int k) => APackSize(isa, m, k);

    /// <summary>
    /// Runs g on the pool when it is worth it; false (nothing done) when the caller should run it alone. Weight panels
    /// are split evenly, so each thread streams only its share of the weights (A, packed by every thread, is small);
    /// row blocks only when there are too few panels to share out. Each output element is computed by one thread in
    /// the same order as on one thread, so results do not depend on the thread count.
    /// </summary>
    public static bool TryMultithread(in GemmArgs g, float* callerScratch, WorkerPool pool)
    {
        int mr = TileRows(g.Isa), nr = PanelWidth(g.Isa);
        int panels = (g.N + nr - 1) / nr, rowTiles = (g.M + mr - 1) / mr;
        if (!PlanSplit(pool.Threads, 2.0 * g.M * g.N * g.K, (long)g.N * g.K * (g.Bf16 ? 2 : 4), panels, rowTiles, out bool byRows, out int chunks))
            return false;
        // Long products also go in A blocks: item = (A block, share of the panels). Each thread packed every A block for its
        // share of the panels before as well, so this adds no packing and no weight traffic; but a thread the OS takes
        // away for a while (on the machine measured, kernel threads ran for up to 15–20 ms at a time) now holds one block's
        // piece, not half the product, and the other thread takes the rest. Row-split products get the same finer cut.
        int rowBlocks = (rowTiles + MCTiles - 1) / MCTiles;
        if (byRows) chunks = Math.Min(rowTiles, chunks * rowBlocks);
        pool.EnsureWorkerScratch(WorkerScratchSize(g.Isa, g.M, g.K));
        using var lease = pool.Acquire();
        var job = pool.Job<GemmJob>();
        job.Set(pool, g, callerScratch, byRows, chunks, panels);
        int items = byRows ? chunks : chunks * rowBlocks;
        // one share a thread: cut by the threads' measured speeds on products of this shape (see ShareBalance)
        var balance = items == pool.Threads ? job.BalanceFor(g.N, g.K, byRows, items) : null;
        try
        {
            pool.RunHeld(job, items);
            balance?.Update();
        }
        finally { job.Clear(); }
        return true;
    }

    /// <summary>
    /// Runs a product over a weight of three equal segments (an attention's q|k|v) on the pool with thread w taking, in each
    /// segment, the panels [<paramref name="edges"/>[w], <paramref name="edges"/>[w + 1]) counted from the segment's first
    /// panel <paramref name="segmentPanels"/>·s — the panels of the heads that thread then attends to (the pool's affine
    /// hand-out keeps block w on thread w unless it is late, and the attention's hand-out is cut the same way), so the
    /// attention reads q, k and v its own core wrote. Items are (thread share, A block), as in <see cref="TryMultithread"/>.
    /// Every output element is computed as on one thread (same bits).
    /// </summary>
    public static void RunHeadShares(in GemmArgs g, float* callerScratch, WorkerPool pool, int segmentPanels, ReadOnlySpan<int> edges)
    {
        callerScratch = AlignToLine(callerScratch);
        int mr = TileRows(g.Isa), rowTiles = (g.M + mr - 1) / mr, rowBlocks = (rowTiles + MCTiles - 1) / MCTiles;
        pool.EnsureWorkerScratch(WorkerScratchSize(g.Isa, g.M, g.K));
        using var lease = pool.Acquire();
        var job = pool.Job<HeadShareJob>();
        job.Set(pool, g, callerScratch, segmentPanels, edges, rowBlocks);
        pool.RunHeld(job, pool.Threads * rowBlocks, affine: true);
        job.Clear();
    }

    /// <summary>One head-aligned q|k|v product; reused by its pool (its edge table grows, never shrinks).</summary>
    internal sealed class HeadShareJob : IParallelWork
    {
        private WorkerPool? _pool;
        private GemmArgs _g;
        private float* _callerScratch;
        private int _segmentPanels, _rowBlocks;
        private int[] _edges = new int[9];

        public void Set(WorkerPool pool, in GemmArgs g, float* callerScratch, int segmentPanels, ReadOnlySpan<int> edges, int rowBlocks)
        {
            _pool = pool; _g = g; _callerScratch = callerScratch; _segmentPanels = segmentPanels; _rowBlocks = rowBlocks;
            if (_edges.Length < edges.Length) _edges = new int[Math.Max(edges.Length, 2 * _edges.Length)];
            edges.CopyTo(_edges);
        }

        public void Clear() { _pool = null; _g = default; _callerScratch = null; }

        public void Execute(int item, int worker)
        {
            int share = item / _rowBlocks, rb = item % _rowBlocks;
            int p0 = _edges[share], p1 = _edges[share + 1];
            if (p0 >= p1) return;
            int rows = TileRows(_g.Isa) * MCTiles, r0 = rb * rows;
            int s = _segmentPanels;
            Run(_g, r0, Math.Min(r0 + rows, _g.M), new PanelSet(p0, p1, s + p0, s + p1, 2 * s + p0, 2 * s + p1),
                worker == 0 ? _callerScratch : _pool!.WorkerScratch(worker));
        }
    }

    /// <summary>
    /// The split policy every packed product shares (FP32, bf16 and int8): split when the product has enough flops or
    /// streams enough weight bytes; by weight panels, so each thread streams only its share of the weights, or by row
    /// tiles when there are too few panels to share out. False when the caller should run it alone.
    /// </summary>
    internal static bool PlanSplit(int threads, double flops, long weightBytes, int panels, int rowTiles, out bool byRows, out int chunks)
    {
        byRows = false;
        chunks = 0;
        if (threads == 1 || (flops < ParallelFlops && weightBytes < ParallelWeightBytes)) return false;
        byRows = panels < 4 * threads && rowTiles >= threads;
        // panels that do not share out evenly (9 panels on 2 threads: 5 + 4, the longer share 11 % over half) go by rows when
        // the weight is small (each thread then reads all of it, from its cache) and there are rows enough for even shares
        if (!byRows && panels % threads != 0 && weightBytes <= ParallelWeightBytes && rowTiles >= 2 * threads
            && (double)((panels + threads - 1) / threads) * threads / panels > 1.05)
            byRows = true;
        chunks = Math.Min(ChunksPerThread * threads, byRows ? rowTiles : panels);
        return chunks >= 2;
    }

    /// <summary>Item <paramref name="item"/>'s share [start, end) of <paramref name="total"/> units split into <paramref name="chunks"/> even pieces.</summary>
    internal static (int Start, int End) Share(int item, int chunks, int total) =>
        ((int)((long)item * total / chunks), (int)((long)(item + 1) * total / chunks));

    /// <summary>
    /// Item <paramref name="item"/>'s rows [start, end) of <paramref name="m"/> rows cut into <paramref name="chunks"/> pieces:
    /// whole tiles when they share out evenly (all of them full), else even shares (a share then ends in one short tile; the
    /// first shares take the odd rows, the caller's share starting first) if that makes the longest share shorter. In steps
    /// of 4 rows before (29 rows went 16 + 13): perf/ab.sh, 2 threads, layers by rows at 25–43 tokens, (384, 12 × 32, 1536) at
    /// 26 / 29 / 35 tokens 1.048 / 1.049 / 1.070×, (256, 8 × 32, 1024) at 43 1.044×, (96, 3 × 32, 192) pre-norm at 25 1.059×,
    /// at 50 tokens (25 + 25, not 24 + 26) (96, 6 × 16, 384) causal 1.122×, (320, 20 × 16, 640) 1.034×, (512, 32 × 16, 2048)
    /// pre-norm 1.016×; where the cut is the same 0.980–0.994× ((320, 5 × 64, 640) pre-norm at 41, 21 + 20 instead of 20 + 21:
    /// 1.007×).
    /// Whole tiles split 11 tiles of a 128-row product 6 : 5 (72 : 56 rows); 64 : 64 rows finish together. Every row is
    /// computed the same way in any tile, so the split does not change a bit.
    /// </summary>
    internal static (int Start, int End) RowShare(int item, int chunks, int m, int mr)
    {
        int tiles = (m + mr - 1) / mr;
        // whole tiles that share out evenly, but the last one short: the first share is the longest (40 rows in tiles of 12
        // go 24 + 16)
        if ((tiles % chunks != 0 || m % mr != 0) && mr > 4 && m >= 4 * chunks)
        {
            // even shares only when their longest is shorter than whole tiles' longest
            int longest = 0;
            for (int i = 0; i < chunks; i++) longest = Math.Max(longest, RowEdge(i + 1, chunks, m) - RowEdge(i, chunks, m));
            if (longest < (tiles + chunks - 1) / chunks * mr) return (RowEdge(item, chunks, m), RowEdge(item + 1, chunks, m));
        }
        var (t0, t1) = Share(item, chunks, tiles);
        return (Math.Min(t0 * mr, m), Math.Min(t1 * mr, m));
    }

    /// <summary>
    /// <see cref="RowShare(int, int, int, int)"/> weighted by the threads' measured speeds (<see cref="ShareBalance"/>): the
    /// edges fall where the running weight reaches each share's part, in steps of 2 rows (the tiles of a share of any
    /// height are cut evenly). The equal cut while the weights are equal (or balancing is off), and below
    /// <see cref="BalancedRows"/> rows a share, where one step is too large a part of it.
    /// </summary>
    internal static (int Start, int End) RowShare(int item, int chunks, int m, int mr, ShareBalance? balance)
    {
        if (balance == null || balance.Even || m < BalancedRows * chunks) return RowShare(item, chunks, m, mr);
        return (WeightedEdge(item, chunks, m, balance, 2), WeightedEdge(item + 1, chunks, m, balance, 2));
    }

    /// <summary>Rows (or panels, for <see cref="Share(int, int, int, ShareBalance?)"/>: <see cref="BalancedPanels"/>) a share must average before its cut is weighted.</summary>
    internal const int BalancedRows = 32, BalancedPanels = 16;

    /// <summary>Edge <paramref name="i"/> of a weighted cut of <paramref name="total"/> units, in steps of <paramref name="step"/>.</summary>
    internal static int WeightedEdge(int i, int chunks, int total, ShareBalance b, int step) =>
        i <= 0 ? 0 : i >= chunks ? total : (int)Math.Min(total, Math.Round(b.Before(i) * total / step) * step);

    /// <summary>
    /// <see cref="Share(int, int, int)"/> weighted by the threads' measured speeds (<see cref="ShareBalance"/>): edges where the running
    /// weight reaches each share's part, rounded to whole units.
    /// </summary>
    internal static (int Start, int End) Share(int item, int chunks, int total, ShareBalance? balance)
    {
        if (balance == null || balance.Even || total < BalancedPanels * chunks) return Share(item, chunks, total);
        return (WeightedEdge(item, chunks, total, balance, 1), WeightedEdge(item + 1, chunks, total, balance, 1));
    }

    private static int RowEdge(int i, int chunks, int m) => i == chunks ? m : (int)Math.Min(m, ((long)i * m + chunks - 1) / chunks);

    /// <summary>One split product; reused by its pool, so a run allocates nothing.</summary>
    internal sealed class GemmJob : IParallelWork
    {
        private WorkerPool? _pool;
        private GemmArgs _g;
        private float* _callerScratch;
        private int _chunks, _panels;
        private bool _byRows;
        /// <summary>This run's balance (one share a thread), null when the items are claimed more finely.</summary>
        private ShareBalance? _balance;
        /// <summary>
        /// Balances kept per product shape (N, K, by rows or by panels): the threads' relative speed differs between
        /// products (measured: equal on a layer's q|k|v product, one thread 2–15 % slower on its feed-forward products).
        /// Round-robin over <see cref="Shapes"/> slots; a model with more shapes than that shares them unbalanced.
        /// </summary>
        private readonly ShareBalance?[] _balances = new ShareBalance?[Shapes];
        private readonly long[] _shapeKeys = new long[Shapes];
        private int _nextShape;
        private const int Shapes = 16;

        public void Set(WorkerPool pool, in GemmArgs g, float* callerScratch, bool byRows, int chunks, int panels)
        {
            _pool = pool; _g = g; _callerScratch = callerScratch; _byRows = byRows; _chunks = chunks; _panels = panels; _balance = null;
        }

        /// <summary>The balance of products of this shape, prepared for a run of <paramref name="shares"/> shares (allocated once per slot).</summary>
        public ShareBalance BalanceFor(int n, int k, bool byRows, int shares)
        {
            long key = ((long)n << 32) | ((long)k << 1) | (byRows ? 1L : 0L);
            int slot = -1;
            for (int i = 0; i < Shapes; i++) if (_balances[i] != null && _shapeKeys[i] == key) { slot = i; break; }
            if (slot < 0)
            {
                slot = _nextShape;
                _nextShape = (_nextShape + 1) % Shapes;
                _shapeKeys[slot] = key;
                _balances[slot] ??= new ShareBalance();
                _balances[slot]!.Reset();
            }
            var b = _balances[slot]!;
            b.Prepare(shares);
            return _balance = b;
        }

        public void Clear() { _pool = null; _g = default; _callerScratch = null; _balance = null; }

        public void Execute(int item, int worker)
        {
            float* scratch = worker == 0 ? _callerScratch : _pool!.WorkerScratch(worker);
            var balance = _balance;
            long t0 = balance == null ? 0 : Stopwatch.GetTimestamp();
            if (_byRows)
            {
                var (r0, r1) = RowShare(item, _chunks, _g.M, TileRows(_g.Isa), balance);
                if (r0 >= r1) return;
                Run(_g, r0, r1, 0, _panels, scratch);
            }
            else
            {
                // item = A block · chunks + share of the panels
                int rows = TileRows(_g.Isa) * MCTiles, r0 = item / _chunks * rows;
                var (p0, p1) = Share(item % _chunks, _chunks, _panels, balance);
                if (p0 >= p1) return;
                Run(_g, r0, Math.Min(r0 + rows, _g.M), p0, p1, scratch);
            }
            balance?.Record(item, worker, Stopwatch.GetTimestamp() - t0);
        }
    }
}
