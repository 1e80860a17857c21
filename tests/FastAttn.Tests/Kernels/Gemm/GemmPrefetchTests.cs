using FastAttn.Kernels;

namespace FastAttn.Tests.Kernels;

/// <summary>
/// Products whose weight spans at least <see cref="GemmCore.HalvedNextBlockBytes"/> fetch each next weight block in two
/// halves, from the second and third row tiles (see <c>GemmCore.SetPrefetch</c>). A prefetch reads nothing into a result,
/// so the bits must equal those of the single-tile fetch (forced with <see cref="GemmCore.NoHalvedNextBlock"/>) on every
/// path, in both loop orders (one K block, and two: panels outer), with FP32 and bf16 weights and on two threads; and the
/// sums must stay within the FP32 bound of a plain double reference.
/// </summary>
public class GemmPrefetchTests
{
    private static float[] Run(float[] x, int m, PackedWeight pw, GemmEpilogue e, FastAttn.Threading.WorkerPool? pool, bool single)
    {
        var y = new float[m * pw.OutFeatures];
        GemmCore.NoHalvedNextBlock = single;
        try { Gemm.Linear(x, m, pw, y, new float[pw.ScratchSize(m)], e, pool); }
        finally { GemmCore.NoHalvedNextBlock = false; }
        return y;
    }

    [Theory]
    [InlineData(1024, 1040)]  // one K block: 4.3 MB of FP32 weight
    [InlineData(1025, 1030)]  // two K blocks (a short second one)
    public void HalvedNextBlock_ChangesNoBits(int k, int n)
    {
        Assert.True((long)k * n * 4 >= GemmCore.HalvedNextBlockBytes, "the product must be large enough to fetch in halves");
        float[] w = Reference.Random(n * k, 51 + k, 0.3f), bias = Reference.Random(n, 52);
        using var pw = new PackedWeight(w, n, k);
        using var bf = new PackedWeight(Reference.Random(2 * n * k, 53 + k, 0.3f), 2 * n, k, Precision.BF16Weights);
        using var pool = new FastAttn.Threading.WorkerPool(2);
        var e = new GemmEpilogue { Bias = bias, Activation = Activation.Relu };
        IsaPaths.ForEach(() =>
        {
            foreach (int m in new[] { 1, 40, 130 })
            {
                float[] x = Reference.Random(m * k, 54 + m);
                float[] halves = Run(x, m, pw, e, null, single: false);
                Bits.AssertSame(Run(x, m, pw, e, null, single: true), halves, $"m={m} k={k}");
                Bits.AssertSame(Run(x, m, pw, e, pool, single: true), Run(x, m, pw, e, pool, single: false), $"2 threads m={m} k={k}");
                Bits.AssertSame(Run(x, m, bf, default, null, single: true), Run(x, m, bf, default, null, single: false), $"bf16 m={m} k={k}");
                var (c, sum) = Reference.Gemm(m, n, k, x, k, w, 1, k, 1f, null, 0, bias, Activation.Relu, null, n);
                for (int i = 0; i < m * n; i++)
                    Assert.True(Math.Abs(halves[i] - c[i]) <= 2.4 * (k + 2) * sum[i] / (1 << 24) + 2e-6 * (1 + Math.Abs(c[i])),
                        $"m={m} n={n} k={k}: y[{i}] = {halves[i]}, expected {c[i]}");
            }
        });
    }
}
