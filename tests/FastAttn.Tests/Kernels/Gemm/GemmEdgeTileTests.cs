using FastAttn.Kernels;

namespace FastAttn.Tests.Kernels;

/// <summary>
/// A product's last weight panel holding at most one vector of valid columns multiplies only that vector
/// (<c>GemmMicrokernel.DispatchFirstVector</c>). Each valid element is the same chain of multiply-adds as in a whole-panel tile, so
/// the bits must equal those of the whole-panel path (forced with <see cref="GemmCore.NoEdgeTiles"/>) — on every path,
/// with packed and in-place A, one K block and several, a whole-depth pack (panels outer), bf16 panels, every epilogue
/// and two threads — and the values must match the plain reference.
/// </summary>
public class GemmEdgeTileTests
{
    private static float[] Run(float[] x, int m, PackedWeight pw, float[] c0, GemmEpilogue e, int k, FastAttn.Threading.WorkerPool? pool, bool wholePanel)
    {
        float[] y = (float[])c0.Clone();
        GemmCore.NoEdgeTiles = wholePanel;
        try { Gemm.Linear(x, m, pw, y, new float[Gemm.LinearScratchSize(m, k)], e, pool); }
        finally { GemmCore.NoEdgeTiles = false; }
        return y;
    }

    // last panels of 1, 7, 8, 15 and 16 columns on AVX-512 (panel 32), of 1, 4, 7 and 8 on AVX2 (16), 1–4 on Vector128 (8),
    // 1 on the scalar path (2); and of more than one vector (17, 31) as a control
    public static TheoryData<int> Columns => new() { 1, 7, 33, 40, 47, 48, 100, 300, 17, 31, 271 };

    [Theory]
    [MemberData(nameof(Columns))]
    public void EdgeTile_GivesTheWholePanelBits(int n)
    {
        IsaPaths.ForEach(() =>
        {
            foreach (int k in new[] { 1, 63, 130, 1025 }) // 1025: two K blocks, the second adds into C
                foreach (int m in new[] { 1, 2, 7, 13, 27, 65 })
                    foreach (var precision in new[] { Precision.F32, Precision.BF16Weights })
                    {
                        float[] w = Reference.Random(n * k, 61 + k + n, 0.3f);
                        float[] x = Reference.Random(m * k, 62 + m);
                        float[] bias = Reference.Random(n, 63), res = Reference.Random(m * n, 64), c0 = Reference.Random(m * n, 65);
                        using var pw = new PackedWeight(w, n, k, precision);
                        foreach (var e in new[]
                        {
                            new GemmEpilogue { Bias = bias, Activation = Activation.Relu, Residual = res },
                            new GemmEpilogue { Bias = bias, Activation = Activation.Gelu, Alpha = 0.75f, Accumulate = true },
                            default,
                        })
                        {
                            float[] whole = Run(x, m, pw, c0, e, k, null, wholePanel: true);
                            float[] edge = Run(x, m, pw, c0, e, k, null, wholePanel: false);
                            Bits.AssertSame(whole, edge, $"m={m} n={n} k={k} {precision} act={e.Activation}");
                        }
                        if (precision != Precision.F32) continue;
                        // and against the plain reference (bound as in the GEMM's own tests: k + 2 roundings of the sum of |terms|)
                        var ep = new GemmEpilogue { Bias = bias, Activation = Activation.Relu, Residual = res };
                        float[] y = Run(x, m, pw, new float[m * n], ep, k, null, wholePanel: false);
                        var (c, sum) = Reference.Gemm(m, n, k, x, k, w, 1, k, 1f, null, 0, bias, Activation.Relu, res, n);
                        for (int i = 0; i < m * n; i++)
                            Assert.True(Math.Abs(y[i] - c[i]) <= 2.4 * (k + 2) * sum[i] / (1 << 24) + 2e-6 * (1 + Math.Abs(c[i])),
                                $"m={m} n={n} k={k}: y[{i}] = {y[i]}, expected {c[i]}");
                    }
        });
    }

    [Fact]
    public void EdgeTile_OnTwoThreads_GivesTheBitsOfOneWholePanel()
    {
        IsaPaths.ForEach(() =>
        {
            foreach (var (m, n, k) in new[] { (97, 300, 130), (3, 4100, 1100), (260, 40, 2000) })
            {
                float[] w = Reference.Random(n * k, 71, 0.3f), x = Reference.Random(m * k, 72), bias = Reference.Random(n, 73);
                using var pw = new PackedWeight(w, n, k);
                using var pool = new FastAttn.Threading.WorkerPool(2);
                var e = new GemmEpilogue { Bias = bias, Activation = Activation.Gelu };
                Bits.AssertSame(Run(x, m, pw, new float[m * n], e, k, null, wholePanel: true), Run(x, m, pw, new float[m * n], e, k, pool, wholePanel: false), $"{m}×{k}→{n}, 2 threads");
            }
        });
    }
}
