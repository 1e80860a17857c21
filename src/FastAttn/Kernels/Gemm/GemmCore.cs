using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FastAttn.Kernels;

/// <summary>Everything one GEMM call needs, as raw pointers (pinned by the public entry point).</summary>
internal unsafe struct GemmArgs
{
    /// <summary>A: M×K row-major with row stride Lda.</summary>
    public float* A;
    public nint Lda;
    public int M, N, K;
    /// <summary>The kernel path (and so the panel width NR and tile height MR) this call runs on.</summary>
    public IsaPath Isa;
    /// <summary>B packed in panels of NR columns: panel p at PackedB + p·PanelStride, then K rows of NR floats (or bf16 values).</summary>
    public float* PackedB;
    /// <summary>Floats between consecutive panels of PackedB (K·NR for a whole packed FP32 matrix, K·NR/2 for bf16).</summary>
    public nint PanelStride;
    /// <summary>The panels hold bfloat16 values (2 bytes each) widened as they are loaded.</summary>
    public bool Bf16;
    /// <summary>C: M×N row-major with row stride Ldc.</summary>
    public float* C;
    public nint Ldc;
    public float Alpha;
    /// <summary>Add the product to what C holds instead of overwriting it.</summary>
    public bool Accumulate;
    /// <summary>Bias of length N or null.</summary>
    public float* Bias;
    public Activation Act;
    /// <summary>Residual M×N with row stride Ldr (added after the activation) or null.</summary>
    public float* Residual;
    public nint Ldr;
}

/// <summary>Up to three ranges of weight panels a product runs over (one per segment of a q|k|v weight, or one range).</summary>
internal readonly struct PanelSet
{
    private readonly int _s0, _e0, _s1, _e1, _s2, _e2;
    public readonly int Count;
    public PanelSet(int start, int end) { _s0 = start; _e0 = end; Count = 1; }
    public PanelSet(int s0, int e0, int s1, int e1, int s2, int e2) { _s0 = s0; _e0 = e0; _s1 = s1; _e1 = e1; _s2 = s2; _e2 = e2; Count = 3; }
    public int Start(int i) => i == 0 ? _s0 : i == 1 ? _s1 : _s2;
    public int End(int i) => i == 0 ? _e0 : i == 1 ? _e1 : _e2;
    public bool Valid(int panels)
    {
        for (int i = 0; i < Count; i++) if (Start(i) < 0 || End(i) > panels || Start(i) > End(i)) return false;
        return true;
    }
}

/// <summary>
/// The packed SGEMM engine: C = alpha·A·B (+C) (+bias, activation, +residual), with B pre-packed into
/// panels of NR = 2 vectors of columns and A packed per (MC×KC) block into caller scratch (or, for products of few
/// panels, read where it is: <see cref="InPlaceAPanels"/>).
/// Loop order (Goto/BLIS): K blocks → M blocks (pack A) → B panels (L1-resident) → MR-row micro-tiles.
/// Every output element is computed by one sequence of FMAs over k in ascending order, so results do
/// not depend on how rows or panels are split between calls or threads.
/// </summary>
internal static unsafe partial class GemmCore
{
    /// <summary>
    /// The depth of an A block that <see cref="PanelsOuter"/>'s scratch budget is counted in (the K block of every deep
    /// product before <see cref="KBlock"/> cut depths evenly). Measured on Zen 5 (MR=12): 128→81%, 256→87%, 512→90%,
    /// 768→92% of peak at 128×768·768×768; deep blocks mean fewer C round trips.
    /// </summary>
    public const int KC = 768;

    /// <summary>
    /// Columns of A packed at once for a product of <paramref name="m"/> rows: a K block (<see cref="KBlock"/>), or the whole
    /// depth when the product runs panel by panel with the K blocks inside (<see cref="PanelsOuter"/>), the weight one
    /// sequential stream. First done for rows that fit one register tile, measured A/B in one process on one encoder layer
    /// (1024, 16 heads, 4096), 1 thread: 1 token 1,579/1,422 → 1,151/1,235 µs, 4 tokens 1,877/1,584 → 1,222/1,312 µs (two
    /// runs each); (512, 2048) and (768, 3072) unchanged. Same blocks, same sums, bit-identical results.
    /// </summary>
    public static int BlockDepth(int m, int k, int tileRows) => PanelsOuter(m, k, tileRows) ? Math.Max(k, 1) : KBlock(k);

    /// <summary>
    /// Whether a product of <paramref name="rows"/> rows and depth <paramref name="k"/> runs panel by panel with the K
    /// blocks inside (A packed once for the whole depth; each thread's share of the rows then too): a depth in several K
    /// blocks, and rows that fit one register tile or whose whole-depth packing takes no more scratch than one A block of
    /// the usual order (<see cref="MCTiles"/> tiles × <see cref="KC"/>). In the usual order (K blocks outside) a K block of every panel is a piece of K·NR floats apart
    /// from the next panel's, so a weight streaming from memory restarts the hardware's and the tile's prefetching at
    /// every piece; panel by panel it is one sequential stream. The K blocks, their sums and the order they are added
    /// in are the same either way (bit-identical). Measured with perf/ab.sh (alternated in one process, AMD EPYC Zen 5)
    /// against K blocks outer for more than one tile of rows: weights from memory 16 × 2048 → 8192 1.198×, 24 × 2048 →
    /// 8192 1.173×, encoder layers (1024, 16 heads, 4096) at 16 tokens 1.118×, (2048, 16, 8192) at 16 tokens 1.096× (2
    /// threads 1.118×); weights in the shared cache 16 × 4096 → 1024 1.047×, (1024, 4096) at 28 tokens 1.033×, (768, 3072) at 20 tokens
    /// on 2 threads 1.030×, 36–130 rows 1.000–1.016×, nothing slower (0.993–0.998× within the noise).
    /// </summary>
    public static bool PanelsOuter(int rows, int k, int tileRows) =>
        k > KBlock(k) && (rows <= tileRows || (long)RoundUp(rows, tileRows) * k <= (long)tileRows * MCTiles * KC);

    /// <summary>Depths up to which a product runs as one K block (C written once, never read back).</summary>
    public const int KWhole = 1024;

    /// <summary>
    /// The K block of a product of depth <paramref name="k"/>: the whole depth up to <see cref="KWhole"/>, else the depth cut
    /// into as few blocks of at most <see cref="KWhole"/> as it needs, of equal size (rounded up to 16; the last one the
    /// rest). A depth of 1024 in blocks of 768 + 256 wrote C after the first block and read it back after the second; for
    /// a wide product C is megabytes and had left the caches by then (measured, 128 rows: 1024→4096 at 81–86 % of the peak
    /// in blocks, 84–94 % as one; 1024→1024, whose C stays in L2, 93–97 % either way). Deeper products went in blocks of
    /// <see cref="KC"/> (2048 = 768 + 768 + 512: C written and read back twice where once does); in blocks of at most 1024 (1024 + 1024,
    /// 1280 = 640 + 640), measured alternated in one process (1 thread, AMD EPYC Zen 5): 512 × 2048 → 1024 1.036–1.046×
    /// (1.009× in perf/ab.sh), 512 × 3072 → 768 1.022×, 512 × 1280 → 320 1.022×, 128–200 rows 0.997–1.007×; encoder layers
    /// (perf/ab.sh) (1024, 32 × 32, 2048) at 128 tokens 1.012–1.033×, at 512 tokens 0.998–1.005×. Depends on K only, so a row's sums
    /// are the same alone and inside a bigger product.
    /// </summary>
    public static int KBlock(int k)
    {
        if (k <= KWhole) return Math.Max(k, 1);
        int blocks = (k + KWhole - 1) / KWhole;
        return RoundUp((k + blocks - 1) / blocks, 16);
    }

    /// <summary>
    /// Rows per A block for a range of <paramref name="rows"/>: as few blocks as <see cref="MCTiles"/> tiles allow, of
    /// equal size (rounded up to whole tiles). Every block streams all the weight's panels once, so a thin last block
    /// (200 rows = 192 + 8) paid a whole weight stream for a few rows. Sums do not depend on the blocks (bit-identical).
    /// Measured alternated in one process, 1 thread: 200 × 1024 → 4096 1.020–1.034× faster, 200 × 4096 → 1024
    /// 1.013–1.029×, 210 × 1024 → 4096 1.016×.
    /// </summary>
    public static int RowBlock(int rows, int mr)
    {
        int mcMax = mr * MCTiles;
        int blocks = Math.Max(1, (rows + mcMax - 1) / mcMax);
        return Math.Min(mcMax, Math.Max(mr, RoundUp((rows + blocks - 1) / blocks, mr)));
    }

    /// <summary>A blocks hold MC = 16·MR rows (packed once per K block, reused across all panels).</summary>
    public const int MCTiles = 16;

    public static int PanelWidth(IsaPath p) => p switch
    {
        IsaPath.Vector512 => 2 * Simd512.Width,
        IsaPath.Vector256 => 2 * Simd256.Width,
        IsaPath.Vector128 => 2 * Simd128.Width,
        _ => 2 * SimdScalar.Width,
    };

    /// <summary>
    /// The tallest register tile a product may use on path <paramref name="p"/>: 14 rows on AVX-512 (28 accumulators, two
    /// vectors of the panel and a broadcast: 31 of the 32 registers), else <see cref="TileRows"/> (16 registers hold no more).
    /// </summary>
    public static int MaxTileRows(IsaPath p) => p == IsaPath.Vector512 ? 14 : TileRows(p);

    public static int TileRows(IsaPath p) => p switch
    {
        IsaPath.Vector512 => Simd512.GemmRows,
        IsaPath.Vector256 => Simd256.GemmRows,
        IsaPath.Vector128 => Simd128.GemmRows,
        _ => SimdScalar.GemmRows,
    };

    /// <summary>Floats of packed B for K×N on path <paramref name="isa"/>.</summary>
    public static long PackedBSize(IsaPath isa, int k, int n)
    {
        int nr = PanelWidth(isa);
        return (long)((n + nr - 1) / nr) * nr * k;
    }

    /// <summary>Floats of A-packing scratch one caller (thread) needs for M×K on path <paramref name="isa"/>.</summary>
    /// <remarks>
    /// The most any product of up to <paramref name="m"/> rows packs, not only one of exactly m rows: callers size scratch
    /// for the most rows they will run (a session for its token count) and then run fewer, and fewer rows may pack more —
    /// a whole depth instead of one K block (<see cref="PanelsOuter"/>). Sized for m alone, a session for 36 tokens over a
    /// 64 × 8192 weight packed 12 tokens' 98,304 floats into a 28,768-float scratch (an access violation).
    /// </remarks>
    public static int APackSize(IsaPath isa, int m, int k)
    {
        int tile = TileRows(isa);
        m = Math.Max(m, 1);
        // what a product packs only changes where the rows pass a multiple of the tile, and not past MCTiles tiles
        long most = 0;
        for (int j = 1, steps = Math.Min((m + tile - 1) / tile, MCTiles + 1); j <= steps; j++)
        {
            int rows = Math.Min(m, j * tile);
            most = Math.Max(most, (long)Math.Min(RoundUp(rows, tile), tile * MCTiles) * BlockDepth(rows, k, tile));
        }
        // + accumulator tile and edge temporaries, + slack for PackA's row stores, + up to 15 floats to the first line (AlignToLine)
        return checked((int)most + ScratchHeader + 16 + 16);
    }

    /// <summary>
    /// The first 64-byte boundary at or after <paramref name="p"/> (at most 15 floats on: p is float-aligned). Kernels start
    /// their scratch there: a managed array starts 8 or 16 bytes past a line, wherever the collector puts it, and a 64-byte
    /// load or store of a packed operand or tile then spans two lines.
    /// </summary>
    internal static float* AlignToLine(float* p) => (float*)(((nint)p + 63) & ~(nint)63);

    /// <summary>Floats at the start of the scratch reserved for the tile and edge temporaries.</summary>
    public const int ScratchHeader = 3 * 64 + 14 * 64;

    /// <summary>
    /// How far ahead (in floats, 16 KB) the microkernel prefetches the packed weight panel it streams. Measured on
    /// the (768, 12, 3072) encoder layer at 8 tokens, whose 28 MB of weights come from memory on every call:
    /// 0 → 900 µs, 1024 → 821, 2048 → 658, 4096 → 561, 8192 → 631 (the first session's host); neutral when the weights
    /// are cache-resident.
    /// </summary>
    public const int PrefetchFloats = 4096;

    /// <summary>
    /// How far ahead (in floats) the tiles of a block of fewer than <see cref="NextBlockTiles"/> row tiles (products of up
    /// to ~24 rows, every tile streaming the weights from the shared cache or memory) prefetch: 16 KB as above, or 8 KB on
    /// cores whose L1 data cache holds 32 KB or less, where lines fetched 16 KB ahead were partly gone again before the
    /// tile reached them. Measured alternated in one process (AMD EPYC Zen 4, 32 KB L1d, 1 thread unless said), 8 KB
    /// against 16 KB: encoder layers (768, 12 × 64, 3072) at 8 tokens 0.904×, (1024, 16 × 64, 4096) at 12 0.899–0.912×
    /// (2 threads 0.873–0.930×), (1024, 8 × 128, 2048) at 20 0.946–0.954×, (512, 16 × 32, 1024) at 4 0.958–0.973×,
    /// (320, 10 × 32, 1280) causal at 4 0.956–0.964×, (768, 16 × 48, 1536) causal at 12 0.799–0.984×, (1024, 64 × 16,
    /// 4096) at 1 token 1.005× and 2 threads 0.969–1.036× (from memory; noisy), layers of 128 tokens and more 0.98–1.01×;
    /// 12 KB against 8 KB 0.930–1.040×. The first tile of a larger block kept at 16 KB (every tile at 8 KB: layers of 128
    /// tokens on 2 threads 1.014–1.049×). Cores with a larger L1 (Zen 5, recent Intel: 48 KB) keep 16 KB, the distance every
    /// earlier measurement on them ran with (8 KB is not measured there); a core CPUID says nothing about keeps it too.
    /// </summary>
    internal static readonly int FewTilesPrefetchFloats = CacheInfo.L1DataBytes is > 0 and <= 32 << 10 ? 2048 : PrefetchFloats;

    public static int RoundUp(int x, int m) => (x + m - 1) / m * m;

    /// <summary>
    /// Packs B(k, n) = src[k·ks + n·ns] for k &lt; K, n &lt; N into panels (zero-padding the last one). Denormals are packed
    /// as 0, as <see cref="PackA"/> does: the microkernel's multiply-adds take a microcode assist on each denormal operand
    /// (an encoder layer whose weights held 1 % denormals ran 27× slower, measured on the Intel Xeon).
    /// </summary>
    public static void PackB(IsaPath isa, float* src, nint ks, nint ns, int k, int n, float* dst)
    {
        int nr = PanelWidth(isa);
        int panels = (n + nr - 1) / nr;
        for (int p = 0; p < panels; p++)
        {
            int col0 = p * nr;
            int cols = Math.Min(nr, n - col0);
            float* d = dst + (long)p * k * nr;
            if (ns == 1)
            {
                // vector copies (MatMul packs its B operand on every call with this)
                int vc = System.Numerics.Vector<float>.Count;
                for (int kk = 0; kk < k; kk++)
                {
                    float* s = src + kk * ks + col0;
                    float* dd = d + (long)kk * nr;
                    CopyZeroingDenormals(isa, s, dd, cols);
                    int j = cols;
                    for (; j < nr && j % vc != 0; j++) dd[j] = 0f;
                    for (; j + vc <= nr; j += vc) System.Numerics.Vector.Store(System.Numerics.Vector<float>.Zero, dd + j);
                    for (; j < nr; j++) dd[j] = 0f;
                }
            }
            else
            {
                // Column-gather: walk each source row (column j of B) contiguously over k.
                for (int j = 0; j < nr; j++)
                {
                    float* dd = d + j;
                    if (j < cols)
                    {
                        float* s = src + (col0 + j) * ns;
                        for (int kk = 0; kk < k; kk++) dd[(long)kk * nr] = SimdScalar.ZeroDenormals(s[kk * ks]);
                    }
                    else
                    {
                        for (int kk = 0; kk < k; kk++) dd[(long)kk * nr] = 0f;
                    }
                }
            }
        }
    }

    /// <summary>Runs rows [rowStart, rowEnd) × panels [panelStart, panelEnd) of the product on the calling thread.</summary>
    public static void Run(in GemmArgs g, int rowStart, int rowEnd, int panelStart, int panelEnd, float* scratch)
        => Run(g, rowStart, rowEnd, new PanelSet(panelStart, panelEnd), scratch);

    /// <summary>Runs rows [rowStart, rowEnd) × the panels of <paramref name="panels"/> on the calling thread (A packed once for all of them).</summary>
    public static void Run(in GemmArgs g, int rowStart, int rowEnd, in PanelSet panels, float* scratch)
    {
        Debug.Assert(rowStart >= 0 && rowEnd <= g.M && panels.Valid((g.N + PanelWidth(g.Isa) - 1) / PanelWidth(g.Isa)));
        if (g.Bf16) Run<Bf16Weights>(g, rowStart, rowEnd, panels, scratch);
        else Run<F32Weights>(g, rowStart, rowEnd, panels, scratch);
    }

    private static void Run<TW>(in GemmArgs g, int rowStart, int rowEnd, in PanelSet panels, float* scratch) where TW : IWeightFormat
    {
        switch (g.Isa)
        {
            case IsaPath.Vector512: Run<Simd512, Vector512<float>, TW>(g, rowStart, rowEnd, panels, scratch); break;
            case IsaPath.Vector256: Run<Simd256, Vector256<float>, TW>(g, rowStart, rowEnd, panels, scratch); break;
            case IsaPath.Vector128: Run<Simd128, Vector128<float>, TW>(g, rowStart, rowEnd, panels, scratch); break;
            default: Run<SimdScalar, float, TW>(g, rowStart, rowEnd, panels, scratch); break;
        }
    }

    /// <summary>The whole product: on <paramref name="pool"/>'s threads when it is worth splitting, else on the caller.</summary>
    public static void Run(in GemmArgs g, float* scratch, Threading.WorkerPool? pool)
    {
        scratch = AlignToLine(scratch);
        if (pool == null || !TryMultithread(g, scratch, pool))
            Run(g, 0, g.M, 0, (g.N + PanelWidth(g.Isa) - 1) / PanelWidth(g.Isa), scratch);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Run<TOps, TVec, TW>(in GemmArgs g, int rowStart, int rowEnd, in PanelSet panels, float* scratch)
        where TOps : ISimd<TVec> where TVec : struct where TW : IWeightFormat
    {
        int nr = 2 * TOps.Width;
        int mr = TOps.GemmRows;
        int mcMax = mr * MCTiles;
        int K = g.K;
        float* aPack = scratch + ScratchHeader;
        var epi = new TileEpilogue { Alpha = g.Alpha, Act = g.Act, Ldr = g.Ldr, Temp = scratch, Tile = scratch + 3 * 64, Prefetch = PrefetchFloats };
        int kcMax = KBlock(K);
        bool halves = !NoHalvedNextBlock && (long)K * g.N * (TW.Bf16 ? 2 : 4) >= HalvedNextBlockBytes;
        // (the whole product's rows decide, as they did for its scratch: APackSize; then a thread's share qualifies too)
        if (PanelsOuter(g.M, K, mr))
        {
            // panels outer, K blocks inside, A packed once for the whole depth (see PanelsOuter): the weight is read as one
            // sequential stream, each K block of a panel by every row tile in turn while it is in the caches. The blocks,
            // their sums and the order they are added in are the same as below, so the result is bit for bit the same as
            // for these rows inside a bigger product (batching relies on it).
            int rows = rowEnd - rowStart;
            var tiles = new RowTiles(rows, mr, rows <= mr ? mr : MaxTileRows(g.Isa));
            PackA(g.Isa, g.A + rowStart * g.Lda, g.Lda, K, aPack, tiles);
            for (int ri = 0; ri < panels.Count; ri++)
            for (int jp = panels.Start(ri), panelEnd = panels.End(ri); jp < panelEnd; jp++)
            {
                int col = jp * nr;
                int cols = Math.Min(nr, g.N - col);
                epi.Bias = g.Bias == null ? null : g.Bias + col;
                for (int pc = 0; pc < K; pc += kcMax)
                {
                    int kc = Math.Min(kcMax, K - pc);
                    epi.LoadC = pc > 0 || g.Accumulate;
                    epi.Last = pc + kc == K;
                    float* bPanel = g.PackedB + jp * g.PanelStride + (TW.Bf16 ? (long)pc * nr / 2 : (long)pc * nr);
                    // the block read next: this panel's next K block, else the next panel's first
                    int nextJp = pc + kc < K ? jp : jp + 1 < panelEnd ? jp + 1 : ri + 1 < panels.Count ? panels.Start(ri + 1) : -1;
                    long nextPc = pc + kc < K ? pc + kc : 0;
                    nint nextBlock = nextJp < 0 ? 0 : (nint)((nextJp - jp) * g.PanelStride + (TW.Bf16 ? (nextPc - pc) * nr / 2 : (nextPc - pc) * nr));
                    for (int ti = 0; ti < tiles.Count; ti++)
                    {
                        int ir = tiles.Start(ti), tr = tiles.Rows(ti);
                        int row = rowStart + ir;
                        float* c = g.C + row * g.Ldc + col;
                        epi.Residual = g.Residual == null ? null : g.Residual + row * g.Ldr + col;
                        SetPrefetch(ref epi, ti, tiles.Count, nextBlock, kc, TW.Bf16 ? nr / 2 : nr, halves);
                        Tile<TOps, TVec, TW>(tr, aPack + (long)ir * K + (long)pc * tr, tr, bPanel, kc, c, g.Ldc, cols, nr, ref epi);
                    }
                }
            }
            return;
        }
        int mcStep = RowBlock(rowEnd - rowStart, mr);
        bool inPlaceOk = ReadsAInPlace(g, nr);
        for (int pc = 0; pc < K; pc += kcMax)
        {
            int kc = Math.Min(kcMax, K - pc);
            epi.LoadC = pc > 0 || g.Accumulate;
            epi.Last = pc + kc == K;
            for (int ic = rowStart; ic < rowEnd; ic += mcStep)
            {
                int mc = Math.Min(mcStep, rowEnd - ic);
                var tiles = new RowTiles(mc, mr, MaxTileRows(g.Isa));
                // A in place unless the block holds a denormal (packing writes those as 0, as the tiles then read them)
                bool inPlace = inPlaceOk && !AnyDenormal<TOps, TVec>(g.A + ic * g.Lda + pc, g.Lda, mc, kc);
                if (!inPlace) PackA(g.Isa, g.A + ic * g.Lda + pc, g.Lda, kc, aPack, tiles);
                for (int ri = 0; ri < panels.Count; ri++)
                for (int jp = panels.Start(ri), panelEnd = panels.End(ri); jp < panelEnd; jp++)
                {
                    int col = jp * nr;
                    int cols = Math.Min(nr, g.N - col);
                    float* bPanel = g.PackedB + jp * g.PanelStride + (TW.Bf16 ? (long)pc * nr / 2 : (long)pc * nr);
                    epi.Bias = g.Bias == null ? null : g.Bias + col;
                    int nextJp = jp + 1 < panelEnd ? jp + 1 : ri + 1 < panels.Count ? panels.Start(ri + 1) : -1;
                    nint nextPanel = nextJp < 0 ? 0 : (nint)(nextJp - jp) * g.PanelStride;
                    for (int ti = 0; ti < tiles.Count; ti++)
                    {
                        int ir = tiles.Start(ti), rows = tiles.Rows(ti);
                        int row = ic + ir;
                        float* c = g.C + row * g.Ldc + col;
                        epi.Residual = g.Residual == null ? null : g.Residual + row * g.Ldr + col;
                        SetPrefetch(ref epi, ti, tiles.Count, nextPanel, kc, TW.Bf16 ? nr / 2 : nr, halves);
                        if (inPlace) TileInPlace<TOps, TVec, TW>(rows, g.A + row * g.Lda + pc, g.Lda, bPanel, kc, c, g.Ldc, cols, nr, ref epi);
                        else Tile<TOps, TVec, TW>(rows, aPack + ir * kc, rows, bPanel, kc, c, g.Ldc, cols, nr, ref epi);
                    }
                }
            }
        }
    }

    /// <summary>
    /// The weight prefetch of row tile <paramref name="ti"/> of a block of <paramref name="tiles"/> row tiles. With at
    /// least <see cref="NextBlockTiles"/>, the block's first tile prefetches <see cref="PrefetchFloats"/> ahead as it
    /// streams the block (from wherever it is); the second prefetches, at the same pace, the block the product reads next
    /// (<paramref name="next"/> floats on: the next panel, or this panel's next K block), so that block's first tile finds
    /// it in this core's caches instead of the shared cache or memory; later tiles read the block from L2 and prefetch
    /// nothing. With fewer, every tile prefetches 16 KB ahead. Measured with perf/ab.sh against a 16 KB prefetch in every
    /// tile (1 thread, AMD EPYC Zen 5), in a slow phase of the host: encoder layers (1024, 32 × 32, 2048) at 128 tokens
    /// 1.044×, (768, 6 × 128, 3072) at 128 1.030×, (512, 8 × 64, 2048) at 200 1.025×, products 128 × 2048 → 1024
    /// 1.036×, 200 × 1024 → 4096 1.026×; in fast phases layers at 128–512 tokens 0.982–1.028× (two runs), products
    /// 1.000–1.011×. From two tiles on, products of 16 and 20 rows (a tile of 8 rows) lost 0.939× and layers at 16–20
    /// tokens 0.931–0.967× (the 2026-12-04 attempt found the same); from three, 16–40-row products and 16–40-token layers
    /// measure 0.979–1.045× (noise: those of two tiles run the old prefetch). The next block fetched by a second
    /// prefetch instruction in the loop instead (<c>prefetcht1</c>, into L2): a (320, 10 × 32, 1280) layer at 4 tokens,
    /// whose products have one tile per block, 0.94× in two runs of three — the extra test and branch in every step.
    /// <para>
    /// A weight of at least <see cref="HalvedNextBlockBytes"/> (one that a layer's cycle of products brings from memory on
    /// every call) has the next block fetched in halves: the second tile the first half and the third the second, each
    /// one line a step (half its own pace; <see cref="TileEpilogue.PrefetchStep"/>). One tile asking for a whole block from
    /// memory in the time it streams its own from L2 (98 KB in ~2.5 µs at 128 rows and depth 768, ~39 GB/s) outran what
    /// one core's misses bring in, so the next block's first tile still waited on part of it. Found alternating four
    /// distinct weights in one process (1 thread, AMD EPYC Zen 5): 128 × 768 → 3072 ran at 87.0 % of the peak against 92.2 %
    /// for one weight looped, 128 × 2048 → 1024 at 85.2 against 90.0; the halves 1.031–1.047× there (two runs), 1.039–1.056× at
    /// 200 × 1024 → 4096, 1.023–1.072× at 64 × 1024 → 2048 and 1.018–1.025× at 512 rows (a third run, in a minute the host ran at 70 % of its
    /// peak, 0.989–1.018×); quarters from four tiles 1.018–1.042×. perf/ab.sh against the single-tile
    /// fetch: layers (768, 6 × 128, 3072) at 128 tokens 1.029–1.040×, (1024, 32 × 32, 2048) at 128 1.041–1.042×, (1024, 64 ×
    /// 16, 4096) causal at 50 1.047× (2 threads 1.046×), (1024, 16 × 64, 4096) at 64 1.013–1.028× and causal at 200 1.012–1.025× (2
    /// threads 1.025×), (1024, 8 × 128, 2048) at 512 1.009–1.045×, (768, 24 × 32, 3072) causal at 512 1.016×. Weights that
    /// stay in the caches lost a little with it (every product: (96, 3 × 32, 192) at 128 tokens 0.986× twice, (384, 12 × 32,
    /// 1536) at 128 0.993×, 128 × 512 → 1536 looped 0.993×), hence the size rule; with it those run 0.992–0.999× (noise:
    /// they take the old path).
    /// </para>
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void SetPrefetch(ref TileEpilogue e, int ti, int tiles, nint next, int kc, int step, bool halves)
    {
        if (halves && tiles >= NextBlockTiles && next != 0)
        {
            // the second and third tiles fetch half the next block each, at half the pace they stream their own
            e.PrefetchStep = ti == 1 || ti == 2 ? step / 2 : 0;
            e.Prefetch = ti == 0 ? PrefetchFloats : ti == 1 ? next : ti == 2 ? next + (nint)kc * (step / 2) : 0;
            return;
        }
        e.PrefetchStep = 0;
        e.Prefetch = tiles < NextBlockTiles ? FewTilesPrefetchFloats : ti == 0 ? PrefetchFloats : ti == 1 ? next : 0;
    }

    /// <summary>Tests and measurements set this to fetch the next block in the second tile alone, at the full pace (the form before the halves).</summary>
    internal static bool NoHalvedNextBlock;

    /// <summary>Weight bytes from which a product's next block is fetched in halves (see <see cref="SetPrefetch"/>).</summary>
    internal const long HalvedNextBlockBytes = 4L << 20;

    /// <summary>Row tiles a block needs before its second tile fetches the next block (see <see cref="SetPrefetch"/>).</summary>
    internal const int NextBlockTiles = 3;

    // full-width tiles with a short epilogue finish in registers; the rest go through the general epilogue (same bits); a
    // last panel of at most one vector of valid columns multiplies only its first vector (the same chains for those columns)
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Tile<TOps, TVec, TW>(int rows, float* a, nint aStep, float* b, int kc, float* c, nint ldc, int cols, int nr, ref TileEpilogue e)
        where TOps : ISimd<TVec> where TVec : struct where TW : IWeightFormat
    {
        if (GemmMicrokernel.CanFinishDirect(cols, nr, e)) GemmMicrokernel.Dispatch<TOps, TVec, FinishDirect, TW>(rows, a, aStep, b, kc, c, ldc, cols, ref e);
        else if (cols <= TOps.Width && !NoEdgeTiles) GemmMicrokernel.DispatchFirstVector<TOps, TVec, ViaEpilogue, TW, PackedA>(rows, a, aStep, b, kc, c, ldc, cols, ref e);
        else GemmMicrokernel.Dispatch<TOps, TVec, ViaEpilogue, TW>(rows, a, aStep, b, kc, c, ldc, cols, ref e);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void TileInPlace<TOps, TVec, TW>(int rows, float* a, nint lda, float* b, int kc, float* c, nint ldc, int cols, int nr, ref TileEpilogue e)
        where TOps : ISimd<TVec> where TVec : struct where TW : IWeightFormat
    {
        if (GemmMicrokernel.CanFinishDirect(cols, nr, e)) GemmMicrokernel.DispatchInPlace<TOps, TVec, FinishDirect, TW>(rows, a, lda, b, kc, c, ldc, cols, ref e);
        else if (cols <= TOps.Width && !NoEdgeTiles) GemmMicrokernel.DispatchFirstVector<TOps, TVec, ViaEpilogue, TW, InPlaceA>(rows, a, lda, b, kc, c, ldc, cols, ref e);
        else GemmMicrokernel.DispatchInPlace<TOps, TVec, ViaEpilogue, TW>(rows, a, lda, b, kc, c, ldc, cols, ref e);
    }

    /// <summary>Tests set this on their own thread to run a last panel of one vector of columns as a whole panel (to compare the two paths' bits).</summary>
    [ThreadStatic] internal static bool NoEdgeTiles;

    /// <summary>
    /// Products of at most this many weight panels read A where it is instead of packing it per block. Packing A costs
    /// one pass of in-register transposes over the block (shuffle-bound, 11–21 floats/ns here), repaid over only a few
    /// panels. Measured alternated in one process, 1 thread, AMD EPYC (Zen 5): the POS tagger's 20-token sentence (products
    /// of 20 rows, depth 64 and 256, 64–256 columns) 31.7–32.6 → 30.5–31.3 µs (8 pairs); encoder layers (96, 3 × 32, 192)
    /// 4.6 → 4.4 µs at 4 tokens and 136–141 → 135–137 at 128, (96, 6 × 16, 384) at 50 tokens 71.7–73.1 → 69.7–72.0,
    /// (96, 2 × 48, 384) at 12 and (96, 1 × 96, 192) at 512 unchanged. Wider
    /// products read in place gained nothing beyond noise (128 × 768 → 2304, 50 × 768 → 3072, 20 × 384 → 1536, 128 × 384 →
    /// 1152, 512 × 320 → 1280: within −1 … +2 %, 3 pairs each), so they keep the packed path.
    /// </summary>
    internal const int InPlaceAPanels = 8;

    /// <summary>Tests set this on their own thread to pack A always (to compare the two paths' bits).</summary>
    [ThreadStatic] internal static bool NoInPlaceA;

    /// <summary>
    /// Whether product <paramref name="g"/> may read A in place: few panels (<see cref="InPlaceAPanels"/>), at least two
    /// rows (one row's packing is a plain copy), a row stride that is not a multiple of 2 KB (such rows share a handful of
    /// L1 sets: up to 14 rows of a tile would evict each other), and A not overlapping C (a packed copy of A was taken
    /// before C was written; read in place, A must not change under the tiles).
    /// </summary>
    private static bool ReadsAInPlace(in GemmArgs g, int nr)
    {
        if (NoInPlaceA || g.N > InPlaceAPanels * nr || g.M < 2 || (g.Lda & 511) == 0) return false;
        byte* a0 = (byte*)g.A, a1 = (byte*)(g.A + (g.M - 1) * g.Lda + g.K);
        byte* c0 = (byte*)g.C, c1 = (byte*)(g.C + (g.M - 1) * g.Ldc + g.N);
        return a1 <= c0 || c1 <= a0;
    }

    /// <summary>
    /// Whether rows × cols of x (stride ld) hold a denormal (nonzero, below the least normal float in magnitude). Compares
    /// and maxima only: no arithmetic on a denormal (each would take a microcode assist).
    /// <para>
    /// Compiled optimized at once, as every per-call helper with a vector loop is: left to tiered compilation, its first
    /// (unoptimized, nothing inlined) code ran for hundreds of calls — tiering waits while other code is still being
    /// compiled —, and a fresh process ran the (96, 3 × 32, 192) layer at 128 tokens at 182–232 µs a call for its first 500
    /// calls against 135–145 µs once tiered (1 thread, three processes each); with it, 136–145 µs from the second call.
    /// </para>
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static bool AnyDenormal<TOps, TVec>(float* x, nint ld, int rows, int cols) where TOps : ISimd<TVec> where TVec : struct
    {
        const float minNormal = 1.17549435e-38f; // 2^-126
        int w = TOps.Width;
        TVec least = TOps.Broadcast(minNormal), acc0 = TOps.Zero, acc1 = TOps.Zero;
        float tail = 0f;
        for (int r = 0; r < rows; r++)
        {
            float* row = x + r * ld;
            int c = 0;
            for (; c + 2 * w <= cols; c += 2 * w)
            {
                TVec m0 = TOps.Abs(TOps.Load(row + c)), m1 = TOps.Abs(TOps.Load(row + c + w));
                acc0 = TOps.Max(acc0, TOps.SelectLess(m0, least, m0, TOps.Zero)); // NaN compares false: 0
                acc1 = TOps.Max(acc1, TOps.SelectLess(m1, least, m1, TOps.Zero));
            }
            if (c + w <= cols)
            {
                TVec m0 = TOps.Abs(TOps.Load(row + c));
                acc0 = TOps.Max(acc0, TOps.SelectLess(m0, least, m0, TOps.Zero));
                c += w;
            }
            for (; c < cols; c++) { float m = MathF.Abs(row[c]); if (m < minNormal) tail = MathF.Max(tail, m); }
        }
        return TOps.MaxAcross(TOps.Max(acc0, acc1)) > 0f || tail > 0f;
    }

    /// <summary>dst[i] = src[i] for i &lt; n, denormals (and −0) written as +0, in vectors of path <paramref name="isa"/>.</summary>
    internal static void CopyZeroingDenormals(IsaPath isa, float* src, float* dst, long n)
    {
        switch (isa)
        {
            case IsaPath.Vector512: CopyZeroingDenormals<Simd512, Vector512<float>>(src, dst, n); break;
            case IsaPath.Vector256: CopyZeroingDenormals<Simd256, Vector256<float>>(src, dst, n); break;
            case IsaPath.Vector128: CopyZeroingDenormals<Simd128, Vector128<float>>(src, dst, n); break;
            default: CopyZeroingDenormals<SimdScalar, float>(src, dst, n); break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void CopyZeroingDenormals<TOps, TVec>(float* src, float* dst, long n) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width;
        long i = 0;
        for (; i + w <= n; i += w) TOps.Store(TOps.ZeroDenormals(TOps.Load(src + i)), dst + i);
        for (; i < n; i++) dst[i] = SimdScalar.ZeroDenormals(src[i]);
    }

    /// <summary>
    /// Packs the rows of <paramref name="tiles"/> × kc columns of A into one group per tile, k-major inside a group at the
    /// tile's own row count (a group starts at its first row · kc; A advances by the group's rows per k). A product of
    /// one or a few rows then reads only the floats it uses (a 12-float stride for one row made A's pack 12× its size and
    /// cost a fifth of the weight-streaming speed at one token). Denormals are packed as 0 (|x| &lt; 2⁻¹²⁶, so each product
    /// changes by less than 2⁻¹²⁶·|b|): a multiply-add with a denormal operand takes a microcode assist, ~200× its time on
    /// the Intel Xeon measured — an encoder layer on an input of denormals ran 43× slower than on an ordinary one.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackA(IsaPath isa, float* a, nint lda, int kc, float* dst, in RowTiles tiles)
    {
        // AVX-512: 16-column chunks through an in-register transpose (its 16-float row stores run past each row of the
        // group; ascending order overwrites them, and the scratch has slack after the last group)
        int kFast = Transpose.Available(isa) && tiles.MaxRows <= 16 ? kc / 16 * 16 : 0;
        for (int ti = 0; ti < tiles.Count; ti++)
        {
            int g0 = tiles.Start(ti), rows = tiles.Rows(ti);
            float* d = dst + g0 * kc;
            if (rows == 1)
            {
                CopyZeroingDenormals(isa, a + g0 * lda, d, kc);
                continue;
            }
            for (int k0 = 0; k0 < kFast; k0 += 16) Transpose.Block16(a + g0 * lda + k0, lda, rows, d + k0 * rows, rows, 1f, true);
            for (int i = 0; i < rows; i++)
            {
                float* s = a + (g0 + i) * lda;
                float* dd = d + i;
                int k = kFast;
                for (; k + 4 <= kc; k += 4)
                {
                    dd[k * rows] = SimdScalar.ZeroDenormals(s[k]);
                    dd[(k + 1) * rows] = SimdScalar.ZeroDenormals(s[k + 1]);
                    dd[(k + 2) * rows] = SimdScalar.ZeroDenormals(s[k + 2]);
                    dd[(k + 3) * rows] = SimdScalar.ZeroDenormals(s[k + 3]);
                }
                for (; k < kc; k++) dd[k * rows] = SimdScalar.ZeroDenormals(s[k]);
            }
        }
    }
}

/// <summary>
/// How a block of rows is cut into register tiles: tiles of the path's tile height and a shorter last one, unless that
/// one would have fewer than <see cref="MinRows"/> rows. A tile of r rows keeps 2·r chains of multiply-adds in flight,
/// and two FMA units of 4 cycles' latency need 8 to stay busy: a 2-row tile runs at half their speed (50 rows as
/// 12 + 12 + 12 + 12 + 2 took 4 % longer per flop than 48), and a 4-row tile has no slack at all (and loads 6 operands
/// per 8 multiply-adds). Such a block is cut into tiles of nearly equal height instead — one tile fewer where the
/// tallest tile allows it (50 = 13 + 13 + 12 + 12, 64 = 13 + 13 + 13 + 13 + 12, 28 = 14 + 14), else as many (16 = 8 + 8,
/// 15 = 8 + 7 on AVX-512; on paths whose tiles are shorter than 8 rows every block of several tiles is cut so, 16 = 6 + 5 + 5
/// on AVX2). Each element is the same chain of multiply-adds whatever tile it is in (same bits).
/// </summary>
internal readonly struct RowTiles
{
    /// <summary>
    /// Rows below which a last tile is folded into the others: 8 (16 chains, twice what the FMA units need). Measured
    /// against 4 (perf/ab.sh, alternated in one process, 1 thread, AMD EPYC Zen 5): products 16 × 1024 → 3072 1.028×,
    /// 40 × 768 → 768 1.058×, 52 × 512 → 2048 1.046×, 64 × 768 → 3072 1.034×, 17/28/100 rows 1.010–1.018×; encoder layers
    /// (1024, 16 heads, 4096) at 28 tokens 1.122×, (768, 12, 3072) at 64 tokens 1.012× (2 threads 1.062×), (512, 8, 2048)
    /// at 40 tokens 1.010×. 10 instead of 8 (folding last tiles of 8 and 9 rows too) gained nothing (1.000–1.008×).
    /// </summary>
    public const int MinRows = 8;

    /// <summary>Tiles in the block, and the tallest of them.</summary>
    public readonly int Count, MaxRows;
    // tiles 0.._taller-1 have _height + 1 rows, the others _height, the last one _last
    private readonly int _height, _taller, _last;

    /// <param name="rows">Rows of the block (≥ 1).</param>
    /// <param name="tileRows">The path's tile height.</param>
    /// <param name="maxRows">The tallest tile allowed (≥ <paramref name="tileRows"/>).</param>
    public RowTiles(int rows, int tileRows, int maxRows)
    {
        int count = (rows + tileRows - 1) / tileRows;
        int last = rows - (count - 1) * tileRows;
        if (count == 1 || last >= MinRows)
        {
            Count = count; _height = tileRows; _taller = 0; _last = last;
            MaxRows = count == 1 ? rows : tileRows;
            return;
        }
        if (rows <= (count - 1) * maxRows) count--;
        Count = count; _height = rows / count; _taller = rows % count; _last = _height;
        MaxRows = _height + (_taller > 0 ? 1 : 0);
    }

    /// <summary>First row of tile <paramref name="i"/> within the block.</summary>
    public int Start(int i) => i * _height + Math.Min(i, _taller);

    /// <summary>Rows of tile <paramref name="i"/>.</summary>
    public int Rows(int i) => i == Count - 1 ? _last : _height + (i < _taller ? 1 : 0);
}
