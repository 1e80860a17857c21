namespace FastAttn.Tests;

/// <summary>Plain, slow, double-accumulating references written straight from the formulas.</summary>
internal static class Reference
{
    /// <summary>
    /// Bytes allocated on this thread by <paramref name="calls"/> calls after a warm-up, the smallest over up to
    /// ten windows. An allocation made per call shows up in every window; a one-off runtime event (a method
    /// tiering up mid-window) does not, so the minimum is the steady-state figure. Ten, not three: until a method is
    /// recompiled optimised it can allocate what the optimised code keeps on the stack (.NET 10's escape analysis), and on
    /// the slow scalar path with other tests running beside it that recompilation came after three windows (the tagger's
    /// string overload read 120,776 bytes against its result's 117,600 in two of seven runs under
    /// DOTNET_EnableHWIntrinsic=0).
    /// </summary>
    public static long SteadyStateAllocations(Action call, int warmup = 20, int calls = 100)
    {
        for (int i = 0; i < warmup; i++) call();
        long best = long.MaxValue;
        for (int w = 0; w < 10 && best != 0; w++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < calls; i++) call();
            best = Math.Min(best, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        return best;
    }

    public static double Act(double x, FastAttn.Kernels.Activation a) => a switch
    {
        FastAttn.Kernels.Activation.Relu => Math.Max(x, 0),
        FastAttn.Kernels.Activation.Gelu => 0.5 * x * (1 + Erf(x / Math.Sqrt(2))),
        FastAttn.Kernels.Activation.GeluTanh => 0.5 * x * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x))),
        FastAttn.Kernels.Activation.Tanh => Math.Tanh(x),
        FastAttn.Kernels.Activation.Sigmoid => 1 / (1 + Math.Exp(-x)),
        FastAttn.Kernels.Activation.Silu => x / (1 + Math.Exp(-x)),
        _ => x,
    };

    /// <summary>erf to ~1e-15 (series for small |x|, continued fraction for large).</summary>
    public static double Erf(double x)
    {
        double ax = Math.Abs(x);
        double r;
        if (ax < 3)
        {
            // Maclaurin series: erf x = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))
            double sum = 0, term = ax;
            for (int n = 0; n < 200; n++)
            {
                double t = term / (2 * n + 1);
                sum += t;
                if (Math.Abs(t) < 1e-17 * Math.Abs(sum)) break;
                term *= -ax * ax / (n + 1);
            }
            r = 2 / Math.Sqrt(Math.PI) * sum;
        }
        else
        {
            // erfc continued fraction (Lentz), accurate for x ≥ 3
            double f = ax, c = ax, d = 0;
            for (int n = 1; n < 200; n++)
            {
                double an = n / 2.0;
                d = ax + an * d; d = 1 / d;
                c = ax + an / c;
                double delta = c * d;
                f *= delta;
                if (Math.Abs(delta - 1) < 1e-16) break;
            }
            r = 1 - Math.Exp(-ax * ax) / Math.Sqrt(Math.PI) / f;
        }
        return x < 0 ? -r : r;
    }

    /// <summary>
    /// C = act(alpha·A·B + (acc ? C0 : 0) + bias) + residual, with A M×K (lda), B(k,n) = b[k·ks + n·ns].
    /// Also returns Σ|a||b| per element, for error bounds.
    /// </summary>
    public static (double[] c, double[] absSum) Gemm(int m, int n, int k, float[] a, int lda, float[] b, int ks, int ns,
        float alpha = 1, float[]? c0 = null, int ldc0 = 0, float[]? bias = null, FastAttn.Kernels.Activation act = 0,
        float[]? res = null, int ldr = 0)
    {
        var c = new double[m * n];
        var s = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double acc = 0, abs = 0;
                for (int kk = 0; kk < k; kk++)
                {
                    double p = (double)a[i * lda + kk] * b[kk * ks + j * ns];
                    acc += p;
                    abs += Math.Abs(p);
                }
                double v = alpha * acc;
                if (c0 != null) v += c0[i * ldc0 + j];
                if (bias != null) v += bias[j];
                v = Act(v, act);
                if (res != null) v += res[i * ldr + j];
                c[i * n + j] = v;
                s[i * n + j] = Math.Abs(alpha) * abs + (c0 != null ? Math.Abs(c0[i * ldc0 + j]) : 0) + (bias != null ? Math.Abs(bias[j]) : 0);
            }
        return (c, s);
    }

    public static float[] Random(int count, int seed, float scale = 1f)
    {
        var r = new Random(seed);
        var x = new float[count];
        for (int i = 0; i < count; i++) x[i] = (float)((r.NextDouble() * 2 - 1) * scale);
        return x;
    }

    /// <summary>Small integers in [−23, 23]: every product and partial sum is exact in float32 for K ≤ 257.</summary>
    public static float[] SmallInts(int count, int seed)
    {
        var r = new Random(seed);
        var x = new float[count];
        for (int i = 0; i < count; i++) x[i] = r.Next(-23, 24);
        return x;
    }
}
