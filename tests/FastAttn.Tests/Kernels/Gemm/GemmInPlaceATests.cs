using FastAttn.Kernels;

namespace FastAttn.Tests.Kernels;

/// <summary>
/// Products of a few weight panels read A where it is instead of packing it (<see cref="GemmCore.InPlaceAPanels"/>). Each
/// element is the same chain of multiply-adds either way, so the bits must equal those of the packed path (forced with
/// <see cref="GemmCore.NoInPlaceA"/>), on every path, with every epilogue, past one K block and on two threads; A holding a
/// denormal is packed (written as 0) as before.
/// </summary>
public class GemmInPlaceATests
{
    private static float[] Run(float[] x, int m, PackedWeight pw, float[] c0, GemmEpilogue e, int k, FastAttn.Threading.WorkerPool? pool, bool packed)
    {
        float[] y = (float[])c0.Clone();
        GemmCore.NoInPlaceA = packed;
        try { Gemm.Linear(x, m, pw, y, new float[Gemm.LinearScratchSize(m, k)], e, pool); }
        finally { GemmCore.NoInPlaceA = false; }
        return y;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(63)]
    [InlineData(65)]
    [InlineData(130)]
    [InlineData(1025)] // two K blocks: the second adds into C
    public void InPlaceA_GivesThePackedBits(int k)
    {
        IsaPaths.ForEach(() =>
        {
            foreach (int n in new[] { 1, 33, 65, 256 })
                foreach (int m in new[] { 2, 7, 13, 27, 50, 130 })
                {
                    float[] w = Reference.Random(n * k, 31 + k + n, 0.3f);
                    float[] x = Reference.Random(m * k, 32 + m);
                    float[] bias = Reference.Random(n, 33), res = Reference.Random(m * n, 34), c0 = Reference.Random(m * n, 35);
                    x[0] = -0f; // packing writes −0 as +0; the sums must not tell
                    using var pw = new PackedWeight(w, n, k);
                    foreach (var e in new[]
                    {
                        new GemmEpilogue { Bias = bias, Activation = Activation.Relu, Residual = res },             // finished in registers
                        new GemmEpilogue { Bias = bias, Activation = Activation.Gelu, Alpha = 0.75f, Accumulate = true }, // the general epilogue
                        default,
                    })
                    {
                        float[] packed = Run(x, m, pw, c0, e, k, null, packed: true);
                        float[] inPlace = Run(x, m, pw, c0, e, k, null, packed: false);
                        Bits.AssertSame(packed, inPlace, $"m={m} n={n} k={k} act={e.Activation}");
                    }
                    // and against the plain reference (the packed path's own tests bound its error)
                    var ep = new GemmEpilogue { Bias = bias, Activation = Activation.Relu, Residual = res };
                    float[] y = Run(x, m, pw, new float[m * n], ep, k, null, packed: false);
                    var (c, sum) = Reference.Gemm(m, n, k, x, k, w, 1, k, 1f, null, 0, bias, Activation.Relu, res, n);
                    for (int i = 0; i < m * n; i++)
                        Assert.True(Math.Abs(y[i] - c[i]) <= 2.4 * (k + 2) * sum[i] / (1 << 24) + 2e-6 * (1 + Math.Abs(c[i])),
                            $"m={m} n={n} k={k}: y[{i}] = {y[i]}, expected {c[i]}");
                }
        });
    }

    [Fact]
    public void InPlaceA_OnTwoThreads_GivesTheBitsOfOne()
    {
        IsaPaths.ForEach(() =>
        {
            const int m = 97, n = 200, k = 130;
            float[] w = Reference.Random(n * k, 41, 0.3f), x = Reference.Random(m * k, 42), bias = Reference.Random(n, 43);
            using var pw = new PackedWeight(w, n, k);
            using var pool = new FastAttn.Threading.WorkerPool(2);
            var e = new GemmEpilogue { Bias = bias, Activation = Activation.Gelu };
            Bits.AssertSame(Run(x, m, pw, new float[m * n], e, k, null, packed: true), Run(x, m, pw, new float[m * n], e, k, pool, packed: false), "2 threads");
        });
    }

    /// <summary>A denormal in A: the block is packed (the denormal written as 0), so the result is that of a zero there.</summary>
    [Fact]
    public void InPlaceA_WithADenormal_PacksAsBefore()
    {
        IsaPaths.ForEach(() =>
        {
            const int m = 20, n = 64, k = 65;
            float[] w = Reference.Random(n * k, 51), x = Reference.Random(m * k, 52);
            using var pw = new PackedWeight(w, n, k);
            float[] zeroed = (float[])x.Clone();
            x[13 * k + 64] = 1e-40f; // in the scalar tail of a row
            zeroed[13 * k + 64] = 0f;
            Bits.AssertSame(Run(zeroed, m, pw, new float[m * n], default, k, null, packed: true), Run(x, m, pw, new float[m * n], default, k, null, packed: false), "denormal in A");
        });
    }

    [Fact]
    public unsafe void AnyDenormal_FindsDenormalsOnly()
    {
        foreach (int cols in new[] { 1, 7, 16, 33, 65 })
        {
            var rows = 3;
            float[] x = Reference.Random(rows * cols, cols);
            fixed (float* p = x)
            {
                Assert.False(Scan(p, rows, cols));
                foreach (float v in new[] { -0f, 0f, float.NaN, float.PositiveInfinity, float.NegativeInfinity, 1.17549435e-38f, -1.17549435e-38f })
                {
                    x[rows * cols - 1] = v; x[0] = v;
                    Assert.False(Scan(p, rows, cols), $"cols {cols}: {v:R} is not a denormal");
                }
                foreach (float v in new[] { 1e-40f, -1e-45f, 1.1754942e-38f })
                    foreach (int at in new[] { 0, cols / 2, rows * cols - 1 })
                    {
                        float keep = x[at];
                        x[at] = v;
                        Assert.True(Scan(p, rows, cols), $"cols {cols}: {v:R} at {at}");
                        x[at] = keep;
                    }
            }
        }

        static bool Scan(float* p, int rows, int cols)
        {
            bool any = GemmCore.AnyDenormal<SimdScalar, float>(p, cols, rows, cols);
            foreach (var isa in IsaPaths.Supported)
            {
                bool r = isa switch
                {
                    IsaPath.Vector512 => GemmCore.AnyDenormal<Simd512, System.Runtime.Intrinsics.Vector512<float>>(p, cols, rows, cols),
                    IsaPath.Vector256 => GemmCore.AnyDenormal<Simd256, System.Runtime.Intrinsics.Vector256<float>>(p, cols, rows, cols),
                    IsaPath.Vector128 => GemmCore.AnyDenormal<Simd128, System.Runtime.Intrinsics.Vector128<float>>(p, cols, rows, cols),
                    _ => any,
                };
                Assert.True(r == any, $"{isa} says {r}, scalar {any}");
            }
            return any;
        }
    }
}
