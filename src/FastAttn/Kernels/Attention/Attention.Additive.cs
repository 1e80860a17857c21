using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FastAttn.Kernels;

public static unsafe partial class Attention
{
    /// <summary>How one additive term w·tanh(q + k) is accumulated.</summary>
    private interface ITanhSum
    {
        static abstract TVec Term<TOps, TVec>(TVec k, TVec q, TVec w, TVec acc) where TOps : ISimd<TVec> where TVec : struct;
    }

    /// <summary>Operands are e^{2k}, e^{2q} and −2w: tanh(q+k) = 1 − 2/(1 + e^{2k}e^{2q}); the constant Σw is added at the end. The reciprocal is the hardware estimate plus a Newton step.</summary>
    private struct FastTanhSum : ITanhSum
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TVec Term<TOps, TVec>(TVec k, TVec q, TVec w, TVec acc) where TOps : ISimd<TVec> where TVec : struct
            => TOps.Fma(w, TOps.Reciprocal(TOps.Fma(k, q, TOps.Broadcast(1f))), acc);
    }

    /// <summary>Operands are k, q and w: w·tanh(q + k) evaluated directly (any magnitude).</summary>
    private struct DirectTanhSum : ITanhSum
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TVec Term<TOps, TVec>(TVec k, TVec q, TVec w, TVec acc) where TOps : ISimd<TVec> where TVec : struct
            => TOps.Fma(w, VecMath.Tanh<TOps, TVec>(TOps.Add(k, q)), acc);
    }

    /// <summary>
    /// Additive Sᵀ rows for one packed key block ([d][mr], <paramref name="kr"/> real keys) against the query tile:
    /// four keys × two vectors of queries at a time, d-major, so the d products stay in registers.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AdditiveBlock<TOps, TVec, TSum>(float* kb, int mr, int kr, float* qt, int nq, int d, float* wv, float wsum, float* s)
        where TOps : ISimd<TVec> where TVec : struct where TSum : ITanhSum
    {
        int w = TOps.Width;
        TVec ws = TOps.Broadcast(wsum);
        for (int i0 = 0; i0 < kr; i0 += 4)
        {
            // rows past the block's real keys repeat row i0 and are not stored
            int i1 = i0 + 1 < kr ? i0 + 1 : i0, i2 = i0 + 2 < kr ? i0 + 2 : i0, i3 = i0 + 3 < kr ? i0 + 3 : i0;
            TVec a00 = TOps.Zero, a01 = TOps.Zero, a10 = TOps.Zero, a11 = TOps.Zero;
            TVec a20 = TOps.Zero, a21 = TOps.Zero, a30 = TOps.Zero, a31 = TOps.Zero;
            float* kc = kb;
            float* qc = qt;
            for (int dd = 0; dd < d; dd++)
            {
                TVec e0 = TOps.Load(qc), e1 = TOps.Load(qc + w);
                TVec wd = TOps.BroadcastFrom(wv + dd);
                TVec x = TOps.BroadcastFrom(kc + i0);
                a00 = TSum.Term<TOps, TVec>(x, e0, wd, a00); a01 = TSum.Term<TOps, TVec>(x, e1, wd, a01);
                x = TOps.BroadcastFrom(kc + i1);
                a10 = TSum.Term<TOps, TVec>(x, e0, wd, a10); a11 = TSum.Term<TOps, TVec>(x, e1, wd, a11);
                x = TOps.BroadcastFrom(kc + i2);
                a20 = TSum.Term<TOps, TVec>(x, e0, wd, a20); a21 = TSum.Term<TOps, TVec>(x, e1, wd, a21);
                x = TOps.BroadcastFrom(kc + i3);
                a30 = TSum.Term<TOps, TVec>(x, e0, wd, a30); a31 = TSum.Term<TOps, TVec>(x, e1, wd, a31);
                kc += mr;
                qc += nq;
            }
            float* sr = s + i0 * nq;
            TOps.Store(TOps.Add(a00, ws), sr); TOps.Store(TOps.Add(a01, ws), sr + w);
            if (i0 + 1 < kr) { TOps.Store(TOps.Add(a10, ws), sr + nq); TOps.Store(TOps.Add(a11, ws), sr + nq + w); }
            if (i0 + 2 < kr) { TOps.Store(TOps.Add(a20, ws), sr + 2 * nq); TOps.Store(TOps.Add(a21, ws), sr + 2 * nq + w); }
            if (i0 + 3 < kr) { TOps.Store(TOps.Add(a30, ws), sr + 3 * nq); TOps.Store(TOps.Add(a31, ws), sr + 3 * nq + w); }
        }
    }

}
