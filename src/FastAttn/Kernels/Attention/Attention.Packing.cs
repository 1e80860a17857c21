using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FastAttn.Kernels;

public static unsafe partial class Attention
{
    /// <summary>
    /// Keys per key tile: a multiple of the microkernel's rows (768 keys on AVX-512; the Sᵀ tile, keys × 2 vectors, is
    /// 96 KB, in L2). Fewer key tiles mean fewer running-max rescales of the output tile, fewer loads and stores of it
    /// between P·V calls, and deeper P·V calls. Measured against 16·mr keys (192, the tile in L1), alternated in one
    /// process, 1 thread: 9 × 512 × 80 1.035–1.043×, 12 × 512 × 64 1.038×, 9 × 1000 × 64 1.028–1.031×, 4 × 2048 × 64
    /// 1.017–1.045×, 6 × 512 × 128 1.020×; 32·mr gained about half of that, 128·mr and 256·mr no more.
    /// </summary>
    internal static int TileKeys(int mr) => mr * 64;

    /// <summary>
    /// Keys per tile for head widths d and dv: <see cref="TileKeys"/>, except when both heads together fit one query
    /// tile's width (d + dv ≤ nq: head width ≤ 16 on AVX-512), where the Sᵀ tile is kept within 24 KB, in L1 (192 keys on
    /// AVX-512; on AVX2 64·mr is already 24 KB). So little arithmetic per score leaves the tile's trips through L2 (written,
    /// read for the maximum, read and written by the exponentials, read by P·V) exposed. Alternated in one process, 1
    /// thread, AVX-512, 16·mr against 64·mr keys: 48×512×16 1.067–1.086×, 48×2048×16 1.096×, 12×512×16 1.087×, 96×512×8
    /// 1.125×; 24×512×24 0.991×, 24×512×32 0.994×, 12×512×64 0.984× (so not beyond); on AVX2 smaller tiles lost (0.96–0.98×).
    /// </summary>
    internal static int KeyTile(int mr, int nq, int d, int dv) =>
        d + dv <= nq ? Math.Clamp(24 * 1024 / (nq * sizeof(float)) / mr * mr, mr, TileKeys(mr)) : TileKeys(mr);

    /// <summary>Offsets (in floats) of the regions of one call's scratch.</summary>
    private readonly struct Layout
    {
        public readonly long Kp, Vp, Qt, St, Ot, Stats, Bad, Header, Total;
        public Layout(int d, int dv, int maxKeys, int mr, int nq)
        {
            int lk = Math.Max(maxKeys, 1), nr = nq;
            long lkPad = GemmCore.RoundUp(lk, mr);
            // each region starts on a 64-byte line of the (aligned) scratch, whatever d and the key count
            Kp = 0;
            Vp = Line(Kp + lkPad * d + 16); // + slack for PackK's overlapping row stores
            Qt = Line(Vp + (long)GemmCore.RoundUp(dv, nr) * lk);
            St = Line(Qt + (long)d * nq);
            Ot = Line(St + Math.Max(TileKeys(mr), lkPad) * nq);
            Stats = Line(Ot + (long)nq * GemmCore.RoundUp(dv, nr));
            Bad = Stats + 4L * nq + d;
            Header = Line(Bad + lk);
            Total = Header + GemmCore.ScratchHeader;
        }

        private static long Line(long floats) => (floats + 15) & ~15L;
    }

    private static float MaxAbs(float* x, nint ld, int rows, int cols)
    {
        float m = 0f;
        for (int r = 0; r < rows; r++)
        {
            float* xr = x + r * ld;
            for (int c = 0; c < cols; c++) m = MathF.Max(m, MathF.Abs(xr[c]));
        }
        return m;
    }

    /// <summary>
    /// Packs keys in blocks of mr, d-major inside a block ([d][mr]); zero rows pad the last block. Optionally e^{2k}.
    /// Here and in <see cref="PackQ{TOps, TVec}"/> and <see cref="PackV{TOps, TVec}"/>, with <c>zero</c>, denormals are packed
    /// as 0, as the GEMM's packing does (a multiply-add on a denormal operand takes a microcode assist; see
    /// <see cref="AttentionCall.ZeroDenormals"/> for when).
    /// On AVX-512 whole 16-column chunks go through an in-register transpose whose 16-float row stores run 4 floats
    /// past each 12-float row (ascending order overwrites them; the layout leaves slack after the last block).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackK<TOps, TVec>(IsaPath isa, float* k, nint ldk, int keys, int d, int mr, float* dst, bool exp2, bool zero)
        where TOps : ISimd<TVec> where TVec : struct
    {
        int blocks = (keys + mr - 1) / mr;
        bool fast = Transpose.Available(isa) && mr <= 16;
        int dFast = fast ? d / 16 * 16 : 0;
        for (int b = 0; b < blocks; b++)
        {
            float* db = dst + (long)b * mr * d;
            int kr = Math.Min(mr, keys - b * mr);
            float* kb = k + b * mr * ldk;
            for (int c0 = 0; c0 < dFast; c0 += 16) Transpose.Block16(kb + c0, ldk, kr, db + c0 * mr, mr, 1f, zero);
            for (int i = 0; i < kr; i++)
            {
                float* src = kb + i * ldk;
                float* dd = db + i;
                for (int c = dFast; c < d; c++) dd[c * mr] = zero ? SimdScalar.ZeroDenormals(src[c]) : src[c];
            }
            for (int i = kr; i < mr; i++)
                for (int c = dFast; c < d; c++) db[c * mr + i] = 0f;
            if (exp2) Exp2x<TOps, TVec>(db, mr * d);
        }
    }

    /// <summary>
    /// Width of value panel <paramref name="p"/>: nr, or one vector (w) for a last panel whose columns fit one vector.
    /// Panel p starts at p·keys·nr either way (only the last one can be narrow).
    /// </summary>
    private static int VPanelWidth(int dv, int p, int nr, int w) => dv - p * nr <= w ? w : nr;

    /// <summary>
    /// Value panels as P·V runs them: when the value width ends in a half panel after at least one full one, the last
    /// full panel and the half one are one panel three vectors wide (<paramref name="triple"/>; run by
    /// <see cref="GemmMicrokernel.DispatchTriple{TOps, TVec, TM}"/>). Panel p starts at column p·nr and at p·keys·nr in
    /// the packed copy either way (every panel before the last is a full one).
    /// </summary>
    private static int VPanels(int dv, int nr, int w, bool allowTriple, out bool triple)
    {
        int p = (Math.Max(dv, 1) + nr - 1) / nr;
        triple = allowTriple && p >= 2 && dv - (p - 1) * nr <= w;
        return triple ? p - 1 : p;
    }

    /// <summary>
    /// Tests set this on their own thread to run P·V without the three-vector panel (<see cref="VPanels"/>) and compare
    /// bits; read once per group of heads, on the thread that runs it.
    /// </summary>
    [ThreadStatic] internal static bool NoTripleV;

    /// <summary>Tests set this on their own thread to run P·V in the row layout for values one vector wide (to compare the two layouts' bits).</summary>
    [ThreadStatic] internal static bool NoTransposedPV;

    /// <summary>Tests set this on their own thread to pack K always (to compare the two paths' bits).</summary>
    [ThreadStatic] internal static bool NoInPlaceK;

    /// <summary>
    /// Tests and measurements set this on their own thread to take softmax's column maxima from a pass over the score tile
    /// instead of from the score kernels' registers (<see cref="StoreColMax"/>), to compare the two.
    /// </summary>
    [ThreadStatic] internal static bool NoFusedMax;

    /// <summary>Width of panel <paramref name="p"/> of <paramref name="panels"/> (<see cref="VPanels"/>).</summary>
    private static int VPanelWidth(int dv, int p, int nr, int w, bool triple, int panels) =>
        triple && p == panels - 1 ? 3 * w : VPanelWidth(dv, p, nr, w);

    /// <summary>
    /// Packs values in panels ([panel][key][width], width from <see cref="VPanelWidth(int, int, int, int, bool, int)"/>, zero-padded past dv) — the
    /// layout P·V's microkernel reads — and says whether any value is NaN or ±∞ (x·0 is 0 for every finite x), in the same pass.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static bool PackV<TOps, TVec>(float* v, nint ldv, int keys, int dv, int nr, float* dst, bool zero, bool allowTriple)
        where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width;
        // two accumulators of x·0 (one per vector of a full panel row): one chain of dependent multiply-adds, a latency
        // each, was the pass's bound
        TVec all0 = TOps.Zero, all1 = TOps.Zero;
        float tail = 0f;
        int panels = VPanels(dv, nr, w, allowTriple, out bool triple);
        for (int p = 0; p < panels; p++)
        {
            int col0 = p * nr;
            int pw = VPanelWidth(dv, p, nr, w, triple, panels);
            int cols = Math.Min(pw, dv - col0);
            float* panel = dst + (long)col0 * keys; // panel p starts at p·keys·nr
            if (cols == 2 * w && pw == 2 * w)
            {
                for (int j = 0; j < keys; j++)
                {
                    float* s = v + j * ldv + col0;
                    float* d = panel + (long)j * pw;
                    TVec x0 = TOps.Load(s), x1 = TOps.Load(s + w);
                    if (zero) { x0 = TOps.ZeroDenormals(x0); x1 = TOps.ZeroDenormals(x1); }
                    all0 = TOps.Fma(x0, TOps.Zero, all0);
                    all1 = TOps.Fma(x1, TOps.Zero, all1);
                    TOps.Store(x0, d);
                    TOps.Store(x1, d + w);
                }
                continue;
            }
            for (int j = 0; j < keys; j++)
            {
                float* s = v + j * ldv + col0;
                float* d = panel + (long)j * pw;
                int c = 0;
                for (; c + w <= cols; c += w) { TVec x = TOps.Load(s + c); if (zero) x = TOps.ZeroDenormals(x); all0 = TOps.Fma(x, TOps.Zero, all0); TOps.Store(x, d + c); }
                for (; c < cols; c++) { float x = zero ? SimdScalar.ZeroDenormals(s[c]) : s[c]; d[c] = x; tail += x * 0f; }
                for (; c < pw && c % w != 0; c++) d[c] = 0f;
                for (; c < pw; c += w) TOps.Store(TOps.Zero, d + c);
            }
        }
        return TOps.Sum(TOps.Add(all0, all1)) + tail != 0f;
    }

    /// <summary>x ← e^{2x} in place.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Exp2x<TOps, TVec>(float* x, int n) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width, j = 0;
        for (; j + w <= n; j += w) { TVec v = TOps.Load(x + j); TOps.Store(TOps.Exp(TOps.Add(v, v)), x + j); }
        for (; j < n; j++) x[j] = MathF.Exp(2f * x[j]);
    }

    /// <summary>Qᵀ of one query tile: [d][nq], scaled; queries beyond <paramref name="rows"/> are zero. Optionally e^{2q}.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackQ<TOps, TVec>(IsaPath isa, float* q, nint ldq, int rows, int d, int nq, float* dst, float scale, bool exp2, bool zero)
        where TOps : ISimd<TVec> where TVec : struct
    {
        int dFast = Transpose.Available(isa) && nq % 16 == 0 ? d / 16 * 16 : 0;
        for (int r0 = 0; r0 < nq && dFast > 0; r0 += 16)
        {
            int rr = Math.Clamp(rows - r0, 0, 16);
            for (int c0 = 0; c0 < dFast; c0 += 16) Transpose.Block16(q + r0 * ldq + c0, ldq, rr, dst + c0 * nq + r0, nq, scale, zero);
        }
        for (int r = 0; r < rows; r++)
        {
            float* src = q + r * ldq;
            float* dd = dst + r;
            for (int c = dFast; c < d; c++) dd[c * nq] = zero ? SimdScalar.ZeroDenormals(src[c] * scale) : src[c] * scale;
        }
        if (rows < nq)
            for (int c = dFast; c < d; c++)
                for (int r = rows; r < nq; r++) dst[c * nq + r] = 0f;
        if (exp2) Exp2x<TOps, TVec>(dst, d * nq);
    }

}
