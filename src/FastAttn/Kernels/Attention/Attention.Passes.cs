using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FastAttn.Kernels;

public static unsafe partial class Attention
{
    /// <summary>
    /// Online softmax over an Sᵀ tile of <paramref name="cols"/> keys: running max and sums per query lane, exponentials in
    /// place, the output tile rescaled when the max moved. TC = Vec1 for a tile of at most one vector of queries.
    /// <paramref name="maxRows"/>: the score kernels already folded the column maxima of the tile's first that many keys into
    /// <paramref name="cv"/> (<see cref="StoreColMax"/>; all of them, or under a causal mask the blocks every query sees), so
    /// the pass that reads the tile for them starts after them (or is skipped). Measured with perf/ab.sh against
    /// that pass (1 thread, AMD EPYC Zen 5; same bits): attention 24 × 512 × 32 1.034×, 24 × 128 × 32 1.032×, 48 × 128 × 16
    /// 1.026×, 12 × 512 × 64 1.019×, 6 × 512 × 128 1.015×, 8 × 512 × 96 1.014×, 48 × 512 × 16 1.012×; layers 1.002–1.008×.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void SoftmaxPass<TOps, TVec, TC>(float* st, int cols, float* mv, float* lv, float* cv, bool first, float* ot, int rows, int dvPad, int dvT, int maxRows)
        where TOps : ISimd<TVec> where TVec : struct where TC : IVecCount
    {
        int w = TOps.Width, nq = 2 * w;
        bool two = TC.N == 2;
        TVec ninf = TOps.Broadcast(float.NegativeInfinity), lowest = TOps.Broadcast(float.MinValue);
        // the column maxima in two chains each (even and odd keys; max is exact, so the order changes no result): one chain
        // waited on the max's latency every key. perf/ab.sh, 1 thread, Zen 5: 1.006–1.011× at 512 keys (hw 16–64), 0.995–1.007×
        // at 128
        TVec x0 = ninf, x1 = ninf, y0 = ninf, y1 = ninf;
        int j2 = 0;
        if (maxRows > 0)
        {
            // the score kernels folded the maxima of the first maxRows keys into cv (StoreColMax)
            x0 = TOps.Load(cv); x1 = TOps.Load(cv + w);
            j2 = maxRows;
        }
        for (; j2 + 1 < cols; j2 += 2)
        {
            x0 = TOps.Max(x0, TOps.Load(st + j2 * nq));
            y0 = TOps.Max(y0, TOps.Load(st + (j2 + 1) * nq));
            if (two) { x1 = TOps.Max(x1, TOps.Load(st + j2 * nq + w)); y1 = TOps.Max(y1, TOps.Load(st + (j2 + 1) * nq + w)); }
        }
        if (j2 < cols)
        {
            x0 = TOps.Max(x0, TOps.Load(st + j2 * nq));
            if (two) x1 = TOps.Max(x1, TOps.Load(st + j2 * nq + w));
        }
        x0 = TOps.Max(x0, y0); x1 = TOps.Max(x1, y1);
        TVec m0 = TOps.Load(mv), m1 = two ? TOps.Load(mv + w) : ninf;
        TVec n0 = TOps.Max(m0, x0), n1 = TOps.Max(m1, x1);
        // a column with nothing visible yet keeps m = −∞; subtract 0 there so exp gives 0, not NaN
        TVec z0 = TOps.SelectLess(n0, lowest, TOps.Zero, n0), z1 = TOps.SelectLess(n1, lowest, TOps.Zero, n1);
        // in base 2: p = 2^(s·log₂e − round(z·log₂e)). The rounded shift is the same for a whole column of the tile and is
        // made from the kept maximum the same way on every tile, so its rounding cancels in the normalisation and in the
        // rescale c = 2^(round(m·log₂e) − round(z·log₂e)); each p has one rounding, of the multiply-add, as e^(s − z) had
        TVec log2e = TOps.Broadcast(1.44269504088896341f);
        TVec zl0 = TOps.Mul(z0, log2e), zl1 = TOps.Mul(z1, log2e);
        TVec c0 = TOps.Exp2NonPositive(TOps.Sub(TOps.Mul(m0, log2e), zl0));
        TVec c1 = two ? TOps.Exp2NonPositive(TOps.Sub(TOps.Mul(m1, log2e), zl1)) : TOps.Zero;
        TVec nz0 = TOps.Sub(TOps.Zero, zl0), nz1 = TOps.Sub(TOps.Zero, zl1);
        TVec s0 = TOps.Zero, s1 = TOps.Zero;
        for (int j = 0; j < cols; j++)
        {
            float* sr = st + j * nq;
            TVec p0 = TOps.Exp2NonPositive(TOps.Fma(TOps.Load(sr), log2e, nz0));
            TOps.Store(p0, sr);
            s0 = TOps.Add(s0, p0);
            if (two)
            {
                TVec p1 = TOps.Exp2NonPositive(TOps.Fma(TOps.Load(sr + w), log2e, nz1));
                TOps.Store(p1, sr + w);
                s1 = TOps.Add(s1, p1);
            }
        }
        TOps.Store(n0, mv);
        TOps.Store(TOps.Fma(TOps.Load(lv), c0, s0), lv);
        if (two)
        {
            TOps.Store(n1, mv + w);
            TOps.Store(TOps.Fma(TOps.Load(lv + w), c1, s1), lv + w);
        }
        if (!first)
        {
            TOps.Store(c0, cv);
            if (two) TOps.Store(c1, cv + w);
            if (dvT > 0)
            {
                // the output tile transposed ([dv][nq], see RunGroup): each value row scaled by the queries' factors
                for (int c = 0; c < dvT; c++)
                {
                    float* o = ot + c * nq;
                    TOps.Store(TOps.Mul(TOps.Load(o), c0), o);
                    if (two) TOps.Store(TOps.Mul(TOps.Load(o + w), c1), o + w);
                }
            }
            else
            for (int r = 0; r < rows; r++)
                if (cv[r] != 1f) ScaleRow<TOps, TVec>(ot + r * dvPad, dvPad, cv[r]);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void ReluPass<TOps, TVec>(float* st, int n, float invL) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width;
        TVec f = TOps.Broadcast(invL);
        for (int j = 0; j < n; j++)
            TOps.Store(TOps.Mul(TOps.Max(TOps.Load(st + j * w), TOps.Zero), f), st + j * w); // −∞ → 0
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void SigmoidPass<TOps, TVec>(float* st, int n, float bias) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width;
        TVec b = TOps.Broadcast(bias), lowest = TOps.Broadcast(float.MinValue);
        for (int j = 0; j < n; j++)
        {
            TVec x = TOps.Load(st + j * w);
            TOps.Store(TOps.SelectLess(x, lowest, TOps.Zero, VecMath.Sigmoid<TOps, TVec>(TOps.Add(x, b))), st + j * w); // −∞ → 0
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void SoftCapPass<TOps, TVec>(float* st, int n, float softCap) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width;
        TVec cap = TOps.Broadcast(softCap), inv = TOps.Broadcast(1f / softCap);
        for (int j = 0; j < n; j++)
            TOps.Store(TOps.Mul(cap, VecMath.Tanh<TOps, TVec>(TOps.Mul(TOps.Load(st + j * w), inv))), st + j * w);
    }

    /// <summary>Key jj is visible to query qi iff jj ≤ qi + shift; <paramref name="qBase"/> = first query of the tile + shift.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void CausalPass<TOps, TVec>(float* st, int cols, int j0, int qBase, float* iota) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width, nq = 2 * w;
        TVec ninf = TOps.Broadcast(float.NegativeInfinity);
        TVec q0v = TOps.Add(TOps.Load(iota), TOps.Broadcast(qBase));
        TVec q1v = TOps.Add(TOps.Load(iota + w), TOps.Broadcast(qBase));
        for (int j = Math.Max(0, qBase + 1 - j0); j < cols; j++)
        {
            TVec jj = TOps.Broadcast(j0 + j);
            float* sr = st + j * nq;
            TOps.Store(TOps.SelectLess(q0v, jj, ninf, TOps.Load(sr)), sr);
            TOps.Store(TOps.SelectLess(q1v, jj, ninf, TOps.Load(sr + w)), sr + w);
        }
    }


    /// <summary>Sliding window on an Sᵀ tile: key j0 + c (row c) is masked for query lane i0 + l when |(i0 + l) − (j0 + c)| &gt; window.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void WindowPass<TOps, TVec>(float* st, int cols, int j0, int i0, float* iota, int window) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width, nq = 2 * w;
        TVec ninf = TOps.Broadcast(float.NegativeInfinity);
        TVec q0v = TOps.Add(TOps.Load(iota), TOps.Broadcast(i0));
        TVec q1v = TOps.Add(TOps.Load(iota + w), TOps.Broadcast(i0));
        // positions and the window as floats: exact below 2^24; a window beyond that covers every sequence a call can hold
        TVec wv = TOps.Broadcast(window);
        for (int c = 0; c < cols; c++)
        {
            TVec jj = TOps.Broadcast(j0 + c);
            float* sr = st + c * nq;
            TOps.Store(TOps.SelectLess(wv, TOps.Abs(TOps.Sub(q0v, jj)), ninf, TOps.Load(sr)), sr);
            TOps.Store(TOps.SelectLess(wv, TOps.Abs(TOps.Sub(q1v, jj)), ninf, TOps.Load(sr + w)), sr + w);
        }
    }

    /// <summary>Boolean and float masks (global [queryTokens, keyTokens] indices) applied to an Sᵀ tile.</summary>
    private static void ApplyMasks(in Args a, float* st, int nq, int qRow, int rows, int kCol, int cols)
    {
        for (int r = 0; r < rows; r++)
        {
            long g = (long)(qRow + r) * a.TotalK + kCol;
            if (a.FloatMask != null)
            {
                float* fm = a.FloatMask + g;
                for (int j = 0; j < cols; j++) st[j * nq + r] += fm[j];
            }
            if (a.BoolMask != null)
            {
                bool* bm = a.BoolMask + g;
                for (int j = 0; j < cols; j++) if (!bm[j]) st[j * nq + r] = float.NegativeInfinity;
            }
        }
    }

    /// <summary>
    /// Subtracts slope·|i − j| from an Sᵀ tile (query i = i0 + lane, key j = j0 + row, positions within the sequence);
    /// padding lanes get finite values that are never written out.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void DistancePass<TOps, TVec>(float* st, int cols, int j0, int i0, float* iota, float slope) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width, nq = 2 * w;
        TVec q0v = TOps.Add(TOps.Load(iota), TOps.Broadcast(i0));
        TVec q1v = TOps.Add(TOps.Load(iota + w), TOps.Broadcast(i0));
        TVec sv = TOps.Broadcast(slope);
        for (int c = 0; c < cols; c++)
        {
            TVec jj = TOps.Broadcast(j0 + c);
            float* sr = st + c * nq;
            TOps.Store(TOps.Sub(TOps.Load(sr), TOps.Mul(sv, TOps.Abs(TOps.Sub(q0v, jj)))), sr);
            TOps.Store(TOps.Sub(TOps.Load(sr + w), TOps.Mul(sv, TOps.Abs(TOps.Sub(q1v, jj)))), sr + w);
        }
    }

    /// <summary>
    /// Adds table[(j − i) + span − 1] to the score of key j = j0 + c (row c) and query i = i0 + lane: for a row, lane l reads
    /// table[top − l] with top = j − i0 + span − 1, i.e. a vector loaded below top and reversed. Lanes past the sequence's
    /// queries (nothing reads them) would read below the table near its end; such rows go lane by lane, clamped.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RelativeBiasPass<TOps, TVec>(float* st, int cols, int j0, int i0, float* table, int span) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width, nq = 2 * w;
        for (int c = 0; c < cols; c++)
        {
            float* sr = st + c * nq;
            int top = j0 + c - i0 + span - 1;
            if (top - (nq - 1) >= 0)
            {
                TOps.Store(TOps.Add(TOps.Load(sr), TOps.Reverse(TOps.Load(table + top - w + 1))), sr);
                TOps.Store(TOps.Add(TOps.Load(sr + w), TOps.Reverse(TOps.Load(table + top - nq + 1))), sr + w);
            }
            else
                for (int l = 0; l < nq; l++) sr[l] += table[Math.Max(top - l, 0)];
        }
    }

    /// <summary>Copies the (single, whole-row) P tile into the weights output, dividing by the softmax sum when given.</summary>
    private static void WriteWeights(in Args a, float* st, int nq, int h, int qRow, int rows, int kCol, int cols, float* l)
    {
        for (int r = 0; r < rows; r++)
        {
            float f = l == null ? 1f : (l[r] > 0f ? 1f / l[r] : 0f);
            float* wr = a.Weights + ((long)h * a.TotalQ + qRow + r) * a.TotalK + kCol;
            for (int j = 0; j < cols; j++) wr[j] = st[j * nq + r] * f;
        }
    }

}
