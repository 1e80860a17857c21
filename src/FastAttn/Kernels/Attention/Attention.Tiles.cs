using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FastAttn.Kernels;

public static unsafe partial class Attention
{
    /// <summary>
    /// Tests and measurements set this to leave out the prefetches of the next query tile and the next key/value head
    /// (<see cref="PrefetchRows"/>). Found in a profile of attention 24 × 512 × 32 (1 thread, Zen 5) in a slow minute of
    /// the host: Qᵀ's packing took 4.9 % and K's 2.2 % of the samples, reading a head's 128 bytes of each row at a 3 KB
    /// stride from the shared cache. Measured alternated in one process, at 512 tokens (head widths 16–128): the query
    /// prefetch alone 1.002–1.027× (two runs), with the next head 1.001–1.023×, this form 1.003–1.008× (a faster minute); at 128 tokens, where the rows stay in L2, 0.978–0.985× before the span rule
    /// (<see cref="PrefetchSpanBytes"/>) and 0.997–1.001× with it; perf/ab.sh at 512 tokens 0.991–1.019×, layers at 128–512
    /// tokens 1.000–1.003×. The prefetches were first issued all at once (a query tile's rows before its scores, a key block's
    /// keys and values before it): 256–9,216 lines in a burst stall the core once its outstanding misses are full (1.7 % of
    /// the samples in a profile of 6 × 512 × 128, in <see cref="PrefetchRows"/>). Spread over the score blocks (a few query
    /// rows, and a block's own keys' and values' rows of the next head, before each), alternated in one process against the
    /// bursts (1 thread, Zen 5): 24 × 512 × 32 1.008–1.018× (three runs), 12 × 512 × 64 1.010–1.011×, 6 × 512 × 128
    /// 0.999–1.009×, 9 × 512 × 80 1.002–1.003×, 4 × 2048 × 64 1.005×, causal 16 × 384 × 64 1.015×, causal 24 × 512 × 32 1.013×;
    /// perf/ab.sh, in a slow and noisy phase of the host (150–175 GFLOP/s): attention 0.982–1.053×, layers at 512 tokens 0.989–1.006×.
    /// </summary>
    internal static bool NoQPrefetch;

    /// <summary>
    /// Tests and measurements set this to keep values wider than a vector in the row layout even when their width ends in
    /// part of a vector (P·V transposed only for values one vector wide, the form before). Otherwise such values (20, 24,
    /// 40, 56, 72 on AVX-512) run transposed from <see cref="WideTransposedPVKeys"/> keys: the row layout pads them to
    /// whole vectors (72 as 32 + a panel of 48, 40 as one of 48), the transposed form tiles the value columns exactly
    /// (each element the same chain of multiply-adds: same bits). Measured alternated in one process, 1 thread, AVX-512
    /// (Zen 5), against the row layout: attention 9 × 512 × 20 1.188–1.192×, 24 × 512 × 24 1.099–1.102×, 16 × 512 × 40
    /// 1.051–1.067×, 3 × 300 × 40 1.053–1.057×, 8 × 96 × 24 1.038–1.046×, 8 × 256 × 56 1.037×, 24 × 128 × 24 1.027×,
    /// 7 × 256 × 72 1.016–1.027×, 12 × 128 × 72 1.010–1.012×, 16 × 128 × 40 1.010×, 7 × 257 × 72 0.997×. With fewer keys
    /// the transposed write-out of each tile outweighed the short P·V: 5 × 33 × 40 0.852–0.876×, 16 × 20 × 40 0.854×,
    /// 8 × 50 × 72 0.908×, 5 × 64 × 40 0.992× (hence the key rule; those run as before, 0.998–1.000×).
    /// </summary>
    [ThreadStatic] internal static bool NoWideTransposedPV;

    /// <summary>Keys from which values wider than a vector, ending in part of one, run P·V transposed (see <see cref="NoWideTransposedPV"/>).</summary>
    internal const int WideTransposedPVKeys = 96;

    /// <summary>Bytes of rows (keys × their stride) from which a group prefetches its next query tile and next head.</summary>
    internal const long PrefetchSpanBytes = 1 << 20;

    /// <summary>Asks for <paramref name="rows"/> rows of <paramref name="width"/> floats at stride <paramref name="ld"/> into the caches.</summary>
    private static void PrefetchRows(float* p, nint ld, int rows, int width)
    {
        if (!System.Runtime.Intrinsics.X86.Sse.IsSupported) return;
        for (int r = 0; r < rows; r++, p += ld)
        {
            for (int c = 0; c < width; c += 16) System.Runtime.Intrinsics.X86.Sse.Prefetch0(p + c);
            System.Runtime.Intrinsics.X86.Sse.Prefetch0(p + width - 1);
        }
    }

    /// <summary>One sequence, one key/value head and its query heads, query rows [rowStart, rowEnd) of the sequence.</summary>
    internal static void RunGroup(in Args a, int q0, int lq, int k0, int lk, int valid, int kvHead, int rowStart, int rowEnd, float* scratch)
    {
        switch (a.Isa)
        {
            case IsaPath.Vector512: RunGroup<Simd512, Vector512<float>>(a, q0, lq, k0, lk, valid, kvHead, rowStart, rowEnd, scratch); break;
            case IsaPath.Vector256: RunGroup<Simd256, Vector256<float>>(a, q0, lq, k0, lk, valid, kvHead, rowStart, rowEnd, scratch); break;
            case IsaPath.Vector128: RunGroup<Simd128, Vector128<float>>(a, q0, lq, k0, lk, valid, kvHead, rowStart, rowEnd, scratch); break;
            default: RunGroup<SimdScalar, float>(a, q0, lq, k0, lk, valid, kvHead, rowStart, rowEnd, scratch); break;
        }
    }

    /// <summary>
    /// The tile loop. Scores are computed transposed, Sᵀ = K·Qᵀ, as a [keys × queries] tile whose rows are
    /// two vectors of queries: K is packed once per (sequence, kv head) as the broadcast operand, Qᵀ once
    /// per query tile (pre-scaled) as the vector operand, so the running max, the exponentials and the row
    /// sums are all vertical (no horizontal reductions), and the tile is already in the layout P·V
    /// broadcasts from. O = P·V then runs on the same microkernel with V packed once in panels — or, for values one vector
    /// wide, transposed: Oᵀ = Vᵀ·P, the values broadcast and Sᵀ's rows the vector operand (per key two vector loads
    /// a tile of value rows and one broadcast a value row — 20 loads for 32 multiply-adds at dv = 16 —, where the row
    /// layout loads a broadcast per multiply-add: 35), written out through <see cref="WriteTransposed{TOps, TVec}"/>. Measured with perf/ab.sh against the row layout (same bits), 1
    /// thread, AVX-512 (Zen 5): 48 × 128 × 16 1.040×, 48 × 512 × 16 1.107×, 12 × 512 × 16 1.097×, 48 × 2048 × 16 1.101×,
    /// 96 × 128 × 8 1.123×, 96 × 512 × 8 1.321×; written out element by element instead, 48 × 128 × 16 ran 0.940×.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunGroup<TOps, TVec>(in Args a, int q0, int lq, int k0, int lk, int valid, int kvHead, int rowStart, int rowEnd, float* scratch)
        where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width, nq = 2 * w, mr = TOps.GemmRows, nr = nq;
        int d = a.D, dv = a.Dv, dvPad = GemmCore.RoundUp(dv, nr);
        int lkPad = GemmCore.RoundUp(Math.Max(lk, 1), mr);
        // P·V's value panels; the last full one and a half one run as one three-vector panel (1.025–1.09× at 512 keys for
        // value widths 24–112 that end in a half panel, alternated in one process; 1.00–1.015× at 128 keys), in blocks of
        // up to mr3 query rows (3·mr3 accumulators: 24 of AVX-512's 32 registers, 12 of AVX2's 16)
        bool allowTriple = !NoTripleV;
        // values one vector wide, or ending in part of a vector: P·V as Oᵀ = Vᵀ·P (see the summary), the output tile
        // [dv][nq], the values packed as one panel [keys][pvW] (pvW: dv rounded up to a vector)
        bool pvT = (dv <= w || (dv % w != 0 && lk >= WideTransposedPVKeys && !NoWideTransposedPV)) && !NoTransposedPV;
        int pvW = GemmCore.RoundUp(Math.Max(dv, 1), w), nrV = pvT ? pvW : nr;
        int vPanels = VPanels(dv, nrV, w, allowTriple && !pvT, out bool tripleV), mr3 = w >= 16 ? 8 : 4;
        var vTiles = new RowTiles(Math.Max(dv, 1), mr, GemmCore.MaxTileRows(a.Isa));
        var lay = new Layout(d, dv, lk, mr, nq);
        float* kp = scratch + lay.Kp, vp = scratch + lay.Vp, qt = scratch + lay.Qt, st = scratch + lay.St, ot = scratch + lay.Ot;
        float* mv = scratch + lay.Stats, lv = mv + nq, cv = lv + nq, iota = cv + nq, wv = iota + nq;
        var epi = new TileEpilogue { Alpha = 1f, Last = true, Temp = scratch + lay.Header, Tile = scratch + lay.Header + 3 * 64 };
        for (int i = 0; i < nq; i++) iota[i] = i;

        bool materialise = a.Weights != null;
        int bcTile = KeyTile(mr, nq, d, dv);
        int bc = materialise ? lkPad : bcTile;
        int keyEnd = Math.Min(lk, valid);
        bool additive = a.Score == ScoreKind.Additive;
        int group = a.Heads / a.KvHeads;
        // Additive scores take the fast form tanh(q+k) = 1 − 2/(1 + e^{2q}·e^{2k}) when every |q|, |k| ≤ 20
        // (the exponentials, their product and its reciprocal stay finite and normal); otherwise tanh is evaluated directly.
        bool fastAdd = false;
        if (additive && keyEnd > 0)
        {
            float mx = MaxAbs(a.K + k0 * a.Ldk + kvHead * d, a.Ldk, keyEnd, d);
            for (int hh = 0; hh < group; hh++)
                mx = MathF.Max(mx, MaxAbs(a.Q + (q0 + rowStart) * a.Ldq + (kvHead * group + hh) * d, a.Ldq, rowEnd - rowStart, d));
            fastAdd = mx <= 20f;
        }
        // a causal chunk's queries see no key past its last row (+ the bottom-right shift): only those keys are packed (the
        // tiles never read past them either way; the additive form's choice above looked at every key, as one chunk does)
        if (a.Causal != CausalMode.None && !materialise)
            keyEnd = Math.Min(keyEnd, Math.Max(0, rowEnd + (a.Causal == CausalMode.BottomRight ? lk - lq : 0)));
        int* bad = (int*)(scratch + lay.Bad);
        int nBad = 0;
        // dot-product scores read K where it is (see KInPlace) when few query tiles share it and none of them is one vector
        // of queries or less (those tiles run a kernel that reads K packed)
        float* kRows = a.K + k0 * a.Ldk + kvHead * d;
        int lastRows = (rowEnd - rowStart) % nq;
        bool kInPlace = !additive && keyEnd > 0 && (lastRows == 0 || lastRows > w)
            && ((rowEnd - rowStart + nq - 1) / nq) * group <= KInPlaceMaxTiles && KInPlace<TOps, TVec>(a, kRows, keyEnd, d);
        if (keyEnd > 0)
        {
            if (!kInPlace) PackK<TOps, TVec>(a.Isa, kRows, a.Ldk, keyEnd, d, mr, kp, fastAdd, a.ZeroDenormals);
            if (PackV<TOps, TVec>(a.V + k0 * a.Ldv + kvHead * dv, a.Ldv, keyEnd, dv, nrV, vp, a.ZeroDenormals, allowTriple && !pvT))
                nBad = NonFiniteRows<TOps, TVec>(a.V + k0 * a.Ldv + kvHead * dv, a.Ldv, keyEnd, dv, bad);
            // a value row holding NaN or ±∞ is zeroed in the packed copy and added separately, only to the queries that
            // give it a nonzero weight: a masked key (weight exactly 0) must not turn an output into 0·∞ = NaN, and which
            // queries share a tile (and so the product) depends on the vector width
            for (int b = 0; b < nBad; b++)
                for (int p = 0; p < vPanels; p++)
                {
                    int pw = VPanelWidth(dv, p, nrV, w, tripleV, vPanels);
                    new Span<float>(vp + (long)p * keyEnd * nrV + (long)bad[b] * pw, pw).Clear();
                }
        }
        float invL = valid > 0 ? 1f / valid : 0f;
        float sigBias = a.SigmoidBias ?? (valid > 0 ? -MathF.Log(valid) : 0f);
        int causalShift = a.Causal == CausalMode.BottomRight ? lk - lq : 0;
        TVec ninf = TOps.Broadcast(float.NegativeInfinity);

        // the next tile's queries and the next head's keys and values are asked for ahead (PrefetchRows) when the keys' rows
        // span more than an L2 (they then come from the shared cache); below it they stay near and the prefetches only cost
        bool prefetch = !NoQPrefetch && (long)lk * Math.Max(a.Ldk, a.Ldq) * sizeof(float) >= PrefetchSpanBytes;
        // the score tiles hand softmax their column maxima (StoreColMax) unless a pass other than the per-tile causal,
        // window and distance ones (decided per tile below) changes scores, or the scores are additive
        bool fuseMax = !NoFusedMax && a.Norm == Normalizer.Softmax && !additive && a.SoftCap <= 0f
            && a.FloatMask == null && a.BoolMask == null && a.RelBias == null;
        for (int hh = 0; hh < group; hh++)
        {
            int h = kvHead * group + hh;
            float wsum = 0f;
            if (additive)
            {
                float* aw = a.AddW + h * d;
                for (int dd = 0; dd < d; dd++) { wv[dd] = fastAdd ? -2f * aw[dd] : aw[dd]; wsum += aw[dd]; }
                if (!fastAdd) wsum = 0f;
            }
            for (int r0 = rowStart; r0 < rowEnd; r0 += nq)
            {
                int rows = Math.Min(nq, rowEnd - r0);
                int tileKeyEnd = keyEnd, tileKeyStart = 0;
                if (a.Causal != CausalMode.None) tileKeyEnd = Math.Min(tileKeyEnd, Math.Max(0, r0 + rows + causalShift));
                if (a.Window > 0)
                {
                    // only the keys some query of the tile can see: [r0 − window, r0 + rows − 1 + window], the start on a packed-K block
                    tileKeyEnd = (int)Math.Min(tileKeyEnd, (long)r0 + rows + a.Window);
                    if (r0 - a.Window > 0) tileKeyStart = (r0 - a.Window) / mr * mr;
                }
                if (tileKeyEnd <= tileKeyStart)
                {
                    for (int r = 0; r < rows; r++) new Span<float>(a.Out + (q0 + r0 + r) * a.Ldo + h * dv, dv).Clear();
                    continue;
                }
                // a tile of at most one vector of queries (a short sequence, or the last tile of a longer one) computes Sᵀ and
                // its softmax one vector wide: Qᵀ packed [d][w], a one-vector microkernel (the Sᵀ rows keep their stride nq; the
                // other passes may touch the unused half, which nothing reads). Each lane's sums are the same as in a full tile.
                // Measured against full tiles, alternated in one process, 1 thread: 12 heads × 12 tokens × 64 1.28×, 8 × 16 × 96
                // 1.25×, 12 × 40 × 64 1.12×, 12 × 100 × 64 1.055×, 12 × 200 × 64 1.03×, 9 × 512 × 80 1.003×.
                bool half = rows <= w && !additive;
                // the last 1–8 queries past the tile's whole vectors (TailLanes): their scores over keys (TailScores), the
                // whole vectors' (none, or one) by the microkernel; the tail needs K packed
                int tail = kInPlace ? 0 : TailLanes(rows, tileKeyEnd - tileKeyStart, d, w, mr, additive), tailLane = rows - tail;
                Debug.Assert(!(half && kInPlace));
                PackQ<TOps, TVec>(a.Isa, a.Q + (q0 + r0) * a.Ldq + h * d, a.Ldq, rows, d, half ? w : nq, qt, additive ? 1f : a.Scale, fastAdd, a.ZeroDenormals);
                // the rows the next PackQ reads (this head's next tile, else the group's next head's first), one line or two a
                // row at the row stride, asked for a few rows before each of this tile's score blocks: they come from the
                // shared cache while this tile computes
                float* qNext = null;
                int qNextRows = 0;
                if (prefetch)
                {
                    if (r0 + nq < rowEnd) { qNext = a.Q + (q0 + r0 + nq) * a.Ldq + h * d; qNextRows = Math.Min(nq, rowEnd - r0 - nq); }
                    else if (hh + 1 < group) { qNext = a.Q + (q0 + rowStart) * a.Ldq + (h + 1) * d; qNextRows = Math.Min(nq, rowEnd - rowStart); }
                }
                // rows of it asked for before each score block of the tile's keys, so the last ones go before its last block
                int qPerBlock = qNext != null ? (qNextRows * mr + tileKeyEnd - tileKeyStart - 1) / (tileKeyEnd - tileKeyStart) : 0;
                TOps.Store(ninf, mv); TOps.Store(ninf, mv + w);
                TOps.Store(TOps.Zero, lv); TOps.Store(TOps.Zero, lv + w);
                bool first = true;
                // the group's last tile also asks for the next key/value head's keys and values, each score block's keys before it
                bool kvAhead = prefetch && hh == group - 1 && r0 + nq >= rowEnd && kvHead + 1 < a.KvHeads;
                for (int j0 = tileKeyStart; j0 < tileKeyEnd; j0 += bc)
                {
                    int cols = Math.Min(bc, tileKeyEnd - j0);
                    // Sᵀ for keys [j0, j0+cols) × this tile's queries; where no pass changes the scores before softmax, the
                    // whole-tile kernels also fold each query's maximum into cv (StoreColMax) and softmax skips its own pass
                    bool causalPass = a.Causal != CausalMode.None && j0 + cols - 1 > r0 + causalShift;
                    bool windowPass = a.Window > 0 && ((long)j0 < (long)r0 + rows - 1 - a.Window || (long)j0 + cols - 1 > (long)r0 + a.Window);
                    // under a causal mask only the key blocks every query of the tile sees (keys up to its first query, + the
                    // bottom-right shift) fold their maxima; the pass finds the rest's after the mask
                    int maxRows = fuseMax && tail == 0 && !half && !windowPass && (a.Slopes == null || a.Slopes[h] == 0f)
                        ? causalPass ? Math.Clamp(r0 + causalShift + 1 - j0, 0, cols) / mr * mr : cols : 0;
                    if (maxRows > 0) { TOps.Store(ninf, cv); TOps.Store(ninf, cv + w); epi.ColMax = cv; }
                    epi.LoadC = false;
                    for (int jb = 0; jb < cols; jb += mr)
                    {
                        int kr = Math.Min(mr, cols - jb);
                        float* kb = kp + (long)(j0 + jb) * d;
                        if (qPerBlock > 0)
                        {
                            int q1 = (j0 - tileKeyStart + jb) / mr * qPerBlock, qn = Math.Min(qPerBlock, qNextRows - q1);
                            if (qn > 0) PrefetchRows(qNext + q1 * a.Ldq, a.Ldq, qn, d);
                        }
                        if (kvAhead && j0 + jb < keyEnd)
                        {
                            int n = Math.Min(kr, keyEnd - j0 - jb);
                            PrefetchRows(a.K + (k0 + j0 + jb) * a.Ldk + (kvHead + 1) * d, a.Ldk, n, d);
                            PrefetchRows(a.V + (k0 + j0 + jb) * a.Ldv + (kvHead + 1) * dv, a.Ldv, n, dv);
                        }
                        if (jb < maxRows)
                        {
                            if (kInPlace) GemmMicrokernel.DispatchInPlace<TOps, TVec, StoreColMax, F32Weights>(kr, kRows + (long)(j0 + jb) * a.Ldk, a.Ldk, qt, d, st + jb * nq, nq, nq, ref epi);
                            else GemmMicrokernel.Dispatch<TOps, TVec, StoreColMax>(kr, kb, mr, qt, d, st + jb * nq, nq, nq, ref epi);
                        }
                        else if (tail > 0)
                        {
                            if (tailLane > 0) GemmMicrokernel.DispatchFirstVector<TOps, TVec, StoreDirect, F32Weights, PackedA>(kr, kb, mr, qt, d, st + jb * nq, nq, w, ref epi);
                        }
                        else if (half) GemmMicrokernel.DispatchHalf<TOps, TVec, StoreDirect>(kr, kb, mr, qt, d, st + jb * nq, nq, ref epi);
                        else if (kInPlace) GemmMicrokernel.DispatchInPlace<TOps, TVec, StoreDirect, F32Weights>(kr, kRows + (long)(j0 + jb) * a.Ldk, a.Ldk, qt, d, st + jb * nq, nq, nq, ref epi);
                        else if (!additive) GemmMicrokernel.Dispatch<TOps, TVec, StoreDirect>(kr, kb, mr, qt, d, st + jb * nq, nq, nq, ref epi);
                        else if (fastAdd) AdditiveBlock<TOps, TVec, FastTanhSum>(kb, mr, kr, qt, nq, d, wv, wsum, st + jb * nq);
                        else AdditiveBlock<TOps, TVec, DirectTanhSum>(kb, mr, kr, qt, nq, d, wv, wsum, st + jb * nq);
                    }
                    if (tail > 0) TailScores<TOps, TVec>(kp + (long)j0 * d, mr, d, cols, qt + tailLane, half ? w : nq, tail, st + tailLane, nq, epi.Temp);
                    // soft cap, masks
                    if (a.SoftCap > 0f) SoftCapPass<TOps, TVec>(st, cols * 2, a.SoftCap);
                    if (causalPass) CausalPass<TOps, TVec>(st, cols, j0, r0 + causalShift, iota);
                    if (windowPass) WindowPass<TOps, TVec>(st, cols, j0, r0, iota, a.Window);
                    if (a.FloatMask != null || a.BoolMask != null) ApplyMasks(a, st, nq, q0 + r0, rows, k0 + j0, cols);
                    if (a.Slopes != null && a.Slopes[h] != 0f) DistancePass<TOps, TVec>(st, cols, j0, r0, iota, a.Slopes[h]);
                    if (a.RelBias != null) RelativeBiasPass<TOps, TVec>(st, cols, j0, r0, a.RelBias + (long)h * (2 * a.RelSpan - 1), a.RelSpan);

                    // normalise
                    if (a.Norm == Normalizer.Softmax)
                    {
                        if (half) SoftmaxPass<TOps, TVec, Vec1>(st, cols, mv, lv, cv, first, ot, rows, dvPad, pvT ? dv : 0, 0);
                        else SoftmaxPass<TOps, TVec, Vec2>(st, cols, mv, lv, cv, first, ot, rows, dvPad, pvT ? dv : 0, maxRows);
                    }
                    else if (a.Norm == Normalizer.Relu) ReluPass<TOps, TVec>(st, cols * 2, invL);
                    else SigmoidPass<TOps, TVec>(st, cols * 2, sigBias);
                    if (materialise) WriteWeights(a, st, nq, h, q0 + r0, rows, k0 + j0, cols, a.Norm == Normalizer.Softmax ? lv : null);

                    // O += P·V: query rows in blocks of mr, value columns in panels
                    epi.LoadC = !first;
                    if (pvT)
                    {
                        // Oᵀ[c][q] += Σ_j V[j][c]·P[j][q]: the packed values (one vector a key) broadcast, Pᵀ's rows (Sᵀ, nq
                        // queries a key) the vector operand — per key two vector loads a tile and a broadcast a value row for
                        // 2·dv multiply-adds, where query rows × one value vector load one broadcast per multiply-add. Each
                        // element is the same chain of multiply-adds in the same order as the row layout's (same bits).
                        float* vb = vp + (long)j0 * pvW;
                        for (int ti = 0; ti < vTiles.Count; ti++)
                        {
                            int c0 = vTiles.Start(ti), cr = vTiles.Rows(ti);
                            float* oc = ot + c0 * nq;
                            if (half)
                            {
                                if (first) GemmMicrokernel.DispatchFirstVector<TOps, TVec, StoreDirect, F32Weights, PackedA>(cr, vb + c0, pvW, st, cols, oc, nq, w, ref epi);
                                else GemmMicrokernel.DispatchFirstVector<TOps, TVec, AddDirect, F32Weights, PackedA>(cr, vb + c0, pvW, st, cols, oc, nq, w, ref epi);
                            }
                            else if (first) GemmMicrokernel.Dispatch<TOps, TVec, StoreDirect>(cr, vb + c0, pvW, st, cols, oc, nq, nq, ref epi);
                            else GemmMicrokernel.Dispatch<TOps, TVec, AddDirect>(cr, vb + c0, pvW, st, cols, oc, nq, nq, ref epi);
                        }
                    }
                    else
                    for (int pr = 0; pr < rows; pr += mr)
                    {
                        int prow = Math.Min(mr, rows - pr);
                        for (int p = 0; p < vPanels - (tripleV ? 1 : 0); p++)
                        {
                            int pw = VPanelWidth(dv, p, nr, w);
                            float* vb = vp + (long)p * keyEnd * nr + (long)j0 * pw, oc = ot + pr * dvPad + p * nr;
                            if (pw < nr)
                            {
                                // the last value columns fit one vector: a one-vector tile (no multiply-adds on zero padding)
                                if (first) GemmMicrokernel.DispatchHalf<TOps, TVec, StoreDirect>(prow, st + pr, nq, vb, cols, oc, dvPad, ref epi);
                                else GemmMicrokernel.DispatchHalf<TOps, TVec, AddDirect>(prow, st + pr, nq, vb, cols, oc, dvPad, ref epi);
                            }
                            else if (first) GemmMicrokernel.Dispatch<TOps, TVec, StoreDirect>(prow, st + pr, nq, vb, cols, oc, dvPad, nr, ref epi);
                            else GemmMicrokernel.Dispatch<TOps, TVec, AddDirect>(prow, st + pr, nq, vb, cols, oc, dvPad, nr, ref epi);
                        }
                    }
                    if (tripleV && !pvT)
                    {
                        // the last two panels as one, three vectors wide, in blocks of up to mr3 query rows
                        int p = vPanels - 1;
                        float* vb = vp + (long)p * keyEnd * nr + (long)j0 * 3 * w;
                        for (int pr = 0; pr < rows; pr += mr3)
                        {
                            int prow = Math.Min(mr3, rows - pr);
                            float* oc = ot + pr * dvPad + p * nr;
                            if (first) GemmMicrokernel.DispatchTriple<TOps, TVec, StoreDirect>(prow, st + pr, nq, vb, cols, oc, dvPad);
                            else GemmMicrokernel.DispatchTriple<TOps, TVec, AddDirect>(prow, st + pr, nq, vb, cols, oc, dvPad);
                        }
                    }
                    if (nBad > 0) AddNonFinite(a, st, nq, ot, dvPad, rows, j0, cols, bad, nBad, k0, kvHead, pvT);
                    first = false;
                }
                // write out: softmax divides by the column sum; fully masked queries (l = 0) give zeros.
                if (pvT)
                {
                    WriteTransposed<TOps, TVec>(a, ot, st, cv, lv, q0 + r0, rows, h, half);
                    continue;
                }
                for (int r = 0; r < rows; r++)
                {
                    float* dst = a.Out + (q0 + r0 + r) * a.Ldo + h * dv;
                    float f = a.Norm == Normalizer.Softmax ? (lv[r] > 0f ? 1f / lv[r] : 0f) : 1f;
                    ScaleInto<TOps, TVec>(ot + r * dvPad, dst, dv, f);
                }
            }
        }
    }

    /// <summary>
    /// Whether the score tiles read K where it is (rows <paramref name="keys"/> × <paramref name="d"/> at the call's key
    /// stride) instead of a packed copy: not when tests ask for packing, not for a stride of a multiple of 2 KB (the
    /// tile's rows would share a handful of L1 sets, as for the GEMM's A — carried over, not measured here), and, where the call zeroes denormals, only when
    /// the keys hold none (the packing writes those as 0). Same products in the same order either way (same bits).
    /// Used where a head's query tiles are few (<see cref="KInPlaceMaxTiles"/>) and none is one vector of queries or less.
    /// Packing K transposes each head's keys once (16 × 16 in-register transposes); the tiles read 12 key rows as 12
    /// short streams instead, every tile. Measured with perf/ab.sh against packing (1 thread, AMD EPYC Zen 5, the checked
    /// entry, so with the denormal scan): attention at 128 tokens (4 tiles a head), head widths 32–128, 1.018–1.058× in
    /// three runs (48 × 128 × 16 0.994–0.995×), 4 × 64 × 64 1.044×; in place for every tile count, 6 × 512 × 128 ran
    /// 0.952–0.954× (the 2026-12-04 attempt found the same loss at 512 keys), 8 × 512 × 96 0.981×, and 16 × 40 × 64 0.966×
    /// when a last one-vector tile packed K as well.
    /// </summary>
    private static bool KInPlace<TOps, TVec>(in Args a, float* kRows, int keys, int d) where TOps : ISimd<TVec> where TVec : struct
        => !NoInPlaceK && (a.Ldk & 511) != 0 && (!a.ZeroDenormals || !GemmCore.AnyDenormal<TOps, TVec>(kRows, a.Ldk, keys, d));

    /// <summary>
    /// Query tiles (counted over the group's heads) up to which the score tiles read K in place: past that, one packing
    /// serves enough tiles to be cheaper than reading twelve key rows a step in each (measured: 6 × 512 × 128, 16 tiles,
    /// 0.952–0.954× in place; 8 × 512 × 96 0.981×; 4 × 2048 × 64 0.985×).
    /// </summary>
    internal const int KInPlaceMaxTiles = 4;

    /// <summary>
    /// Writes a query tile's transposed output (Oᵀ, [dv][nq]) to the output rows of head <paramref name="h"/>: each query's
    /// values times its factor (1/l under softmax, 0 for l = 0, else 1) — the same multiply as the row layout's write-out,
    /// done per value row along the queries — then, on AVX-512, 16 × 16 in-register transposes into <paramref name="tmp"/>
    /// (the score tile, free by now) and one row of dv floats per query out; on the other paths element by element.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void WriteTransposed<TOps, TVec>(in Args a, float* ot, float* tmp, float* fv, float* lv, int qRow, int rows, int h, bool half)
        where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width, nq = 2 * w, dv = a.Dv;
        if (a.Norm == Normalizer.Softmax)
        {
            for (int r = 0; r < nq; r++) fv[r] = lv[r] > 0f ? 1f / lv[r] : 0f;
            TVec f0 = TOps.Load(fv), f1 = TOps.Load(fv + w);
            for (int c = 0; c < dv; c++)
            {
                float* o = ot + c * nq;
                TOps.Store(TOps.Mul(TOps.Load(o), f0), o);
                if (!half) TOps.Store(TOps.Mul(TOps.Load(o + w), f1), o + w);
            }
        }
        if (Transpose.Available(a.Isa) && w == 16)
        {
            for (int hb = 0; hb < rows; hb += 16)
                for (int c0 = 0; c0 < dv; c0 += 16)
                {
                    int cn = Math.Min(16, dv - c0);
                    Transpose.Block16(ot + c0 * nq + hb, nq, cn, tmp, 16, 1f, false); // tmp[q·16 + c] = Oᵀ[c0 + c][hb + q]
                    for (int q = 0, n = Math.Min(16, rows - hb); q < n; q++)
                    {
                        float* dst = a.Out + (qRow + hb + q) * a.Ldo + h * dv + c0;
                        if (cn == 16) TOps.Store(TOps.Load(tmp + q * 16), dst);
                        else for (int c = 0; c < cn; c++) dst[c] = tmp[q * 16 + c];
                    }
                }
            return;
        }
        for (int r = 0; r < rows; r++)
        {
            float* dst = a.Out + (qRow + r) * a.Ldo + h * dv;
            for (int c = 0; c < dv; c++) dst[c] = ot[c * nq + r];
        }
    }

    /// <summary>Indices of the rows (of <paramref name="keys"/> × <paramref name="dv"/>, stride ld) holding a NaN or an infinity.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int NonFiniteRows<TOps, TVec>(float* v, nint ld, int keys, int dv, int* bad) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width, n = 0;
        for (int j = 0; j < keys; j++)
        {
            float* row = v + j * ld;
            // x·0 is 0 for every finite x and NaN otherwise
            TVec acc = TOps.Zero;
            int c = 0;
            for (; c + w <= dv; c += w) acc = TOps.Fma(TOps.Load(row + c), TOps.Zero, acc);
            float s = TOps.Sum(acc);
            for (; c < dv; c++) s += row[c] * 0f;
            if (s != 0f) bad[n++] = j;
        }
        return n;
    }

    /// <summary>O[r] += p[r, j]·v_j for the non-finite value rows j of this key tile, for the queries whose weight is not 0.</summary>
    private static void AddNonFinite(in Args a, float* st, int nq, float* ot, int dvPad, int rows, int j0, int cols, int* bad, int nBad, int k0, int kvHead, bool transposed)
    {
        for (int b = 0; b < nBad; b++)
        {
            int j = bad[b];
            if (j < j0 || j >= j0 + cols) continue;
            float* v = a.V + (k0 + j) * a.Ldv + kvHead * a.Dv;
            for (int r = 0; r < rows; r++)
            {
                float p = st[(j - j0) * nq + r];
                if (p == 0f) continue;
                if (transposed) { for (int c = 0; c < a.Dv; c++) ot[c * nq + r] += p * v[c]; continue; }
                float* o = ot + r * dvPad;
                for (int c = 0; c < a.Dv; c++) o[c] += p * v[c];
            }
        }
    }


    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScaleRow<TOps, TVec>(float* x, int n, float f) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width, j = 0;
        TVec fv = TOps.Broadcast(f);
        for (; j + w <= n; j += w) TOps.Store(TOps.Mul(TOps.Load(x + j), fv), x + j);
        for (; j < n; j++) x[j] *= f;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScaleInto<TOps, TVec>(float* src, float* dst, int n, float f) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width, j = 0;
        TVec fv = TOps.Broadcast(f);
        for (; j + w <= n; j += w) TOps.Store(TOps.Mul(TOps.Load(src + j), fv), dst + j);
        for (; j < n; j++) dst[j] = src[j] * f;
    }
}
