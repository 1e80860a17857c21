using System.Runtime.CompilerServices;

namespace FastAttn.Kernels;

public static unsafe partial class Attention
{
    /// <summary>
    /// Tests and measurements set this on their own thread to compute every score tile with the microkernel, vectors of
    /// queries (the form before <see cref="TailScores{TOps, TVec}"/>).
    /// </summary>
    [ThreadStatic] internal static bool NoTailScores;

    /// <summary>
    /// Query lanes past a tile's whole vectors (a sequence's last tile) up to which their scores are computed over keys
    /// (<see cref="TailScores{TOps, TVec}"/>) instead of as one more vector of queries, on AVX-512 (3 on AVX2, half its key
    /// block); and at most one per 8 of the head width (<see cref="TailLanes"/>). r queries over a block of mr keys take r/mr
    /// of the multiply-adds a vector of queries takes, but each score also goes out to the tile on its own, which narrow
    /// heads do not pay back. Alternated in one process, 1 thread, AVX-512 (Zen 5), against a vector of queries: head width
    /// 64, 5–8 queries 1.084–1.161× over 500 keys, 1.008–1.082× over 30; width 48, 1 / 4 / 6 queries 1.084 / 1.019 /
    /// 1.052×, 7–8 0.987–1.024×; width 32, 1–4 queries 1.026–1.063×, 5–8 0.972–1.017×; width 16, 1 query 1.018×, 2 0.996×,
    /// 4 0.980–1.009×, 6–8 0.896–0.981×.
    /// </summary>
    internal const int TailScoreRows = 8;

    /// <summary>
    /// Keys from which a tile's tail lanes take <see cref="TailScores{TOps, TVec}"/>: over fewer the hand-out costs more than
    /// it saves (16 heads × 7 tokens × 64 ran 0.94–0.96× with it, over 7 keys).
    /// </summary>
    internal const int TailScoreKeys = 24;

    /// <summary>
    /// The lanes of a tile of <paramref name="rows"/> queries over <paramref name="keys"/> keys, head width
    /// <paramref name="d"/>, whose scores <see cref="TailScores{TOps, TVec}"/> computes: the queries past the tile's whole
    /// vectors when they are 1 to <see cref="TailScoreRows"/> (AVX-512; half of mr on AVX2) and at most d/8, and the packed
    /// key block fits one vector (AVX-512 and AVX2), else 0.
    /// </summary>
    private static int TailLanes(int rows, int keys, int d, int w, int mr, bool additive)
    {
        int r = rows % w;
        return !additive && !NoTailScores && w >= mr && keys >= TailScoreKeys && rows < 2 * w
            && r <= Math.Min(w >= 16 ? TailScoreRows : mr / 2, d / 8) ? r : 0;
    }

    /// <summary>
    /// Sᵀ for the last <paramref name="r"/> query lanes of a tile (1 to <see cref="TailScoreRows"/>), vectorised over keys:
    /// packed K's blocks ([d][mr], mr ≤ w keys a vector, the lanes past mr ignored) as the vector operand and each query's
    /// element broadcast. A tile's last vector of queries otherwise costs a whole vector a key and dimension however few
    /// queries it holds (4 of 16 lanes at 100 tokens, 2 at 50); here a multiply-add serves mr keys of one query, the
    /// blocks taken two or four at a time so that at least four chains of multiply-adds are in flight. Each score is the same
    /// chain of multiply-adds in the same order as the microkernel's (k·q from zero, dimensions ascending): same bits.
    /// Keys [0, keys) from <paramref name="kp"/> (a block boundary), queries' lanes from <paramref name="q"/> (Qᵀ at stride
    /// <paramref name="qs"/>), written to <paramref name="st"/> (the tile's rows at stride nq, the lanes from the first tail
    /// lane); the other lanes of each row up to the vector's end are set to 0 (the score of a zero-padded query).
    /// </summary>
    private static void TailScores<TOps, TVec>(float* kp, int mr, int d, int keys, float* q, nint qs, int r, float* st, int nq, float* tmp)
        where TOps : ISimd<TVec> where TVec : struct
    {
        switch (r)
        {
            case 1: TailRun<TOps, TVec, Rows1>(kp, mr, d, keys, q, qs, st, nq, tmp); break;
            case 2: TailRun<TOps, TVec, Rows2>(kp, mr, d, keys, q, qs, st, nq, tmp); break;
            case 3: TailRun<TOps, TVec, Rows3>(kp, mr, d, keys, q, qs, st, nq, tmp); break;
            case 4: TailRun<TOps, TVec, Rows4>(kp, mr, d, keys, q, qs, st, nq, tmp); break;
            case 5: TailRun<TOps, TVec, Rows5>(kp, mr, d, keys, q, qs, st, nq, tmp); break;
            case 6: TailRun<TOps, TVec, Rows6>(kp, mr, d, keys, q, qs, st, nq, tmp); break;
            case 7: TailRun<TOps, TVec, Rows7>(kp, mr, d, keys, q, qs, st, nq, tmp); break;
            default: TailRun<TOps, TVec, Rows8>(kp, mr, d, keys, q, qs, st, nq, tmp); break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TailRun<TOps, TVec, TR>(float* kp, int mr, int d, int keys, float* q, nint qs, float* st, int nq, float* tmp)
        where TOps : ISimd<TVec> where TVec : struct where TR : IRowCount
    {
        int blocks = (keys + mr - 1) / mr, b = 0;
        long bs = (long)mr * d;
        if (TR.N <= 2)
            for (; b + 4 <= blocks; b += 4) TailBlocks<TOps, TVec, TR, Rows4>(kp + b * bs, bs, mr, d, q, qs, st + (long)b * mr * nq, nq, keys - b * mr, tmp);
        for (; b + 2 <= blocks; b += 2) TailBlocks<TOps, TVec, TR, Rows2>(kp + b * bs, bs, mr, d, q, qs, st + (long)b * mr * nq, nq, keys - b * mr, tmp);
        for (; b < blocks; b++) TailBlocks<TOps, TVec, TR, Rows1>(kp + b * bs, bs, mr, d, q, qs, st + (long)b * mr * nq, nq, keys - b * mr, tmp);
    }

    /// <summary>
    /// TB packed key blocks × TR queries: TB·TR accumulators (TB 4 for up to 2 queries, else 2 — 16 accumulators for 8
    /// queries on AVX-512, whose 32 registers hold them; on AVX2, at most 3 queries, up to 8 —; a last odd block alone),
    /// each a vector of mr keys.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TailBlocks<TOps, TVec, TR, TB>(float* kb, long bs, int mr, int d, float* q, nint qs, float* st, int nq, int keys, float* tmp)
        where TOps : ISimd<TVec> where TVec : struct where TR : IRowCount where TB : IRowCount
    {
        TVec a00 = TOps.Zero, a01 = TOps.Zero, a02 = TOps.Zero, a03 = TOps.Zero;
        TVec a10 = TOps.Zero, a11 = TOps.Zero, a12 = TOps.Zero, a13 = TOps.Zero;
        TVec a20 = TOps.Zero, a21 = TOps.Zero, a30 = TOps.Zero, a31 = TOps.Zero;
        TVec a40 = TOps.Zero, a41 = TOps.Zero, a50 = TOps.Zero, a51 = TOps.Zero, a60 = TOps.Zero, a61 = TOps.Zero, a70 = TOps.Zero, a71 = TOps.Zero;
        float* k0 = kb, k1 = kb + bs, k2 = kb + 2 * bs, k3 = kb + 3 * bs;
        for (int c = 0; c < d; c++, q += qs)
        {
            nint o = (nint)c * mr;
            TVec v0 = TOps.Load(k0 + o);
            TVec v1 = TB.N > 1 ? TOps.Load(k1 + o) : TOps.Zero;
            TVec v2 = TB.N > 2 ? TOps.Load(k2 + o) : TOps.Zero;
            TVec v3 = TB.N > 3 ? TOps.Load(k3 + o) : TOps.Zero;
            TVec x = TOps.BroadcastFrom(q);
            a00 = TOps.Fma(x, v0, a00);
            if (TB.N > 1) a01 = TOps.Fma(x, v1, a01);
            if (TB.N > 2) a02 = TOps.Fma(x, v2, a02);
            if (TB.N > 3) a03 = TOps.Fma(x, v3, a03);
            if (TR.N > 1)
            {
                x = TOps.BroadcastFrom(q + 1);
                a10 = TOps.Fma(x, v0, a10);
                if (TB.N > 1) a11 = TOps.Fma(x, v1, a11);
                if (TB.N > 2) a12 = TOps.Fma(x, v2, a12);
                if (TB.N > 3) a13 = TOps.Fma(x, v3, a13);
            }
            if (TR.N > 2) { x = TOps.BroadcastFrom(q + 2); a20 = TOps.Fma(x, v0, a20); if (TB.N > 1) a21 = TOps.Fma(x, v1, a21); }
            if (TR.N > 3) { x = TOps.BroadcastFrom(q + 3); a30 = TOps.Fma(x, v0, a30); if (TB.N > 1) a31 = TOps.Fma(x, v1, a31); }
            if (TR.N > 4) { x = TOps.BroadcastFrom(q + 4); a40 = TOps.Fma(x, v0, a40); if (TB.N > 1) a41 = TOps.Fma(x, v1, a41); }
            if (TR.N > 5) { x = TOps.BroadcastFrom(q + 5); a50 = TOps.Fma(x, v0, a50); if (TB.N > 1) a51 = TOps.Fma(x, v1, a51); }
            if (TR.N > 6) { x = TOps.BroadcastFrom(q + 6); a60 = TOps.Fma(x, v0, a60); if (TB.N > 1) a61 = TOps.Fma(x, v1, a61); }
            if (TR.N > 7) { x = TOps.BroadcastFrom(q + 7); a70 = TOps.Fma(x, v0, a70); if (TB.N > 1) a71 = TOps.Fma(x, v1, a71); }
        }
        // lanes out, block by block (the accumulators of block j hold its keys for each query)
        OutBlock<TOps, TVec, TR>(st, nq, Math.Min(mr, keys), a00, a10, a20, a30, a40, a50, a60, a70, tmp);
        if (TB.N > 1 && keys > mr) OutBlock<TOps, TVec, TR>(st + (long)mr * nq, nq, Math.Min(mr, keys - mr), a01, a11, a21, a31, a41, a51, a61, a71, tmp);
        if (TB.N > 2 && keys > 2 * mr) OutBlock<TOps, TVec, TR>(st + 2L * mr * nq, nq, Math.Min(mr, keys - 2 * mr), a02, a12, a20, a20, a40, a40, a40, a40, tmp);
        if (TB.N > 3 && keys > 3 * mr) OutBlock<TOps, TVec, TR>(st + 3L * mr * nq, nq, Math.Min(mr, keys - 3 * mr), a03, a13, a20, a20, a40, a40, a40, a40, tmp);
    }

    /// <summary>
    /// One block's scores out: the TR queries' accumulators (lane i = key i) through <paramref name="tmp"/> into rows
    /// 0..<paramref name="kr"/>−1 of the tile (stride nq), each row first cleared to the vector's end.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void OutBlock<TOps, TVec, TR>(float* row, int nq, int kr, TVec x0, TVec x1, TVec x2, TVec x3, TVec x4, TVec x5, TVec x6, TVec x7, float* tmp)
        where TOps : ISimd<TVec> where TVec : struct where TR : IRowCount
    {
        int w = TOps.Width;
        TOps.Store(x0, tmp);
        if (TR.N > 1) TOps.Store(x1, tmp + w);
        if (TR.N > 2) TOps.Store(x2, tmp + 2 * w);
        if (TR.N > 3) TOps.Store(x3, tmp + 3 * w);
        if (TR.N > 4) TOps.Store(x4, tmp + 4 * w);
        if (TR.N > 5) TOps.Store(x5, tmp + 5 * w);
        if (TR.N > 6) TOps.Store(x6, tmp + 6 * w);
        if (TR.N > 7) TOps.Store(x7, tmp + 7 * w);
        for (int i = 0; i < kr; i++, row += nq)
        {
            TOps.Store(TOps.Zero, row);
            row[0] = tmp[i];
            if (TR.N > 1) row[1] = tmp[w + i];
            if (TR.N > 2) row[2] = tmp[2 * w + i];
            if (TR.N > 3) row[3] = tmp[3 * w + i];
            if (TR.N > 4) row[4] = tmp[4 * w + i];
            if (TR.N > 5) row[5] = tmp[5 * w + i];
            if (TR.N > 6) row[6] = tmp[6 * w + i];
            if (TR.N > 7) row[7] = tmp[7 * w + i];
        }
    }
}
