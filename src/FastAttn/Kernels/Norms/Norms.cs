using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FastAttn.Kernels;

/// <summary>Row-wise normalisation kernels over <c>[rows, width]</c> row-major data (in place allowed).</summary>
internal static unsafe partial class Norms
{
    public static void LayerNorm(IsaPath isa, float* x, float* y, int rows, int width, float* gamma, float* beta, float eps)
    {
        switch (isa)
        {
            case IsaPath.Vector512: LayerNorm<Simd512, Vector512<float>>(x, y, rows, width, gamma, beta, eps, false); break;
            case IsaPath.Vector256: LayerNorm<Simd256, Vector256<float>>(x, y, rows, width, gamma, beta, eps, false); break;
            case IsaPath.Vector128: LayerNorm<Simd128, Vector128<float>>(x, y, rows, width, gamma, beta, eps, false); break;
            default: LayerNorm<SimdScalar, float>(x, y, rows, width, gamma, beta, eps, false); break;
        }
    }

    public static void RmsNorm(IsaPath isa, float* x, float* y, int rows, int width, float* gamma, float eps)
    {
        switch (isa)
        {
            case IsaPath.Vector512: LayerNorm<Simd512, Vector512<float>>(x, y, rows, width, gamma, null, eps, true); break;
            case IsaPath.Vector256: LayerNorm<Simd256, Vector256<float>>(x, y, rows, width, gamma, null, eps, true); break;
            case IsaPath.Vector128: LayerNorm<Simd128, Vector128<float>>(x, y, rows, width, gamma, null, eps, true); break;
            default: LayerNorm<SimdScalar, float>(x, y, rows, width, gamma, null, eps, true); break;
        }
    }

    /// <summary>Two-pass (mean, then centred variance) for accuracy; RMS variant skips the mean.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void LayerNorm<TOps, TVec>(float* x, float* y, int rows, int n, float* gamma, float* beta, float eps, bool rms)
        where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width;
        int r = 0;
        // two rows at a time: each row's steps are a chain of dependent reductions, so a second independent row fills the
        // gaps (the per-row arithmetic and its order are exactly those of the single-row loop below)
        if (!rms && n % w == 0)
        {
            for (; r + 2 <= rows; r += 2)
            {
                float* x0 = x + (long)r * n, x1 = x0 + n, y0 = y + (long)r * n, y1 = y0 + n;
                TVec a0 = TOps.Zero, a1 = TOps.Zero;
                for (int j = 0; j < n; j += w) { a0 = TOps.Add(a0, TOps.Load(x0 + j)); a1 = TOps.Add(a1, TOps.Load(x1 + j)); }
                float mean0 = TOps.Sum(a0) / n, mean1 = TOps.Sum(a1) / n;
                TVec mv0 = TOps.Broadcast(mean0), mv1 = TOps.Broadcast(mean1), q0 = TOps.Zero, q1 = TOps.Zero;
                for (int j = 0; j < n; j += w)
                {
                    TVec c0 = TOps.Sub(TOps.Load(x0 + j), mv0), c1 = TOps.Sub(TOps.Load(x1 + j), mv1);
                    q0 = TOps.Fma(c0, c0, q0); q1 = TOps.Fma(c1, c1, q1);
                }
                TVec iv0 = TOps.Broadcast(1f / MathF.Sqrt(TOps.Sum(q0) / n + eps)), iv1 = TOps.Broadcast(1f / MathF.Sqrt(TOps.Sum(q1) / n + eps));
                for (int j = 0; j < n; j += w)
                {
                    TVec g = TOps.Load(gamma + j);
                    TVec c0 = TOps.Mul(TOps.Mul(TOps.Sub(TOps.Load(x0 + j), mv0), iv0), g);
                    TVec c1 = TOps.Mul(TOps.Mul(TOps.Sub(TOps.Load(x1 + j), mv1), iv1), g);
                    if (beta != null) { TVec b = TOps.Load(beta + j); c0 = TOps.Add(c0, b); c1 = TOps.Add(c1, b); }
                    TOps.Store(c0, y0 + j); TOps.Store(c1, y1 + j);
                }
            }
        }
        for (; r < rows; r++)
        {
            float* xr = x + (long)r * n, yr = y + (long)r * n;
            float mean = 0f;
            int j;
            if (!rms)
            {
                TVec acc = TOps.Zero;
                for (j = 0; j + w <= n; j += w) acc = TOps.Add(acc, TOps.Load(xr + j));
                float s = TOps.Sum(acc);
                for (; j < n; j++) s += xr[j];
                mean = s / n;
            }
            TVec mv = TOps.Broadcast(mean), acc2 = TOps.Zero;
            for (j = 0; j + w <= n; j += w) { TVec c = TOps.Sub(TOps.Load(xr + j), mv); acc2 = TOps.Fma(c, c, acc2); }
            float ss = TOps.Sum(acc2);
            for (; j < n; j++) { float c = xr[j] - mean; ss += c * c; }
            float inv = 1f / MathF.Sqrt(ss / n + eps);
            TVec iv = TOps.Broadcast(inv);
            for (j = 0; j + w <= n; j += w)
            {
                TVec c = TOps.Mul(TOps.Sub(TOps.Load(xr + j), mv), iv);
                c = TOps.Mul(c, TOps.Load(gamma + j));
                if (beta != null) c = TOps.Add(c, TOps.Load(beta + j));
                TOps.Store(c, yr + j);
            }
            for (; j < n; j++)
            {
                float c = (xr[j] - mean) * inv * gamma[j];
                yr[j] = beta != null ? c + beta[j] : c;
            }
        }
    }
}
