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
        for (int r = 0; r < rows; r++)
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
