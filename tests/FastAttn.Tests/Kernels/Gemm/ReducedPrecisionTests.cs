using FastAttn.Kernels;
using FastAttn.Threading;

namespace FastAttn.Tests.Kernels;

/// <summary>
/// int8 and bf16 products against plain scalar references kept here: the int8 kernels (VNNI, 16-bit vpmaddwd, vpmaddubsw, scalar) must
/// reproduce an exact integer reference bit for bit on every kernel path; bf16 weights must match an FP32 reference run
/// on the bf16-rounded weights within the FP32 GEMM bound.
/// </summary>
public class ReducedPrecisionTests
{
    private static readonly int[] Sizes = [1, 3, 7, 16, 17, 63, 65, 130];

    /// <summary>Every int8 kernel this machine has, on every ISA path (the ISA path decides the FP32 epilogue's width).</summary>
    private static void ForEachKernel(Action<Int8Kernel> body)
    {
        Assert.Contains(Int8Kernel.Scalar, Int8Gemm.Supported);
        IsaPaths.ForEach(p =>
        {
            foreach (var k in Int8Gemm.Supported)
            {
                using var _ = Int8Gemm.Use(k);
                try { body(k); }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    throw new Xunit.Sdk.XunitException($"int8 kernel {k}: {e.Message}\n{e.StackTrace}");
                }
            }
        });
    }

    [Fact]
    public void Int8_Vector128Path_RunsThe128BitKernel()
    {
        // the SSE path has its own pmaddubsw kernel (tested bit for bit with every other kernel above); below it, scalar
        bool sse = System.Runtime.Intrinsics.X86.Ssse3.IsSupported;
        Assert.Equal(sse, Int8Gemm.Supported.Contains(Int8Kernel.MaddUbs128));
        bool scalarOnly = Environment.GetEnvironmentVariable("FASTATTN_INT8")?.Trim().ToLowerInvariant() == "scalar";
        Assert.Equal(sse && !scalarOnly ? Int8Kernel.MaddUbs128 : Int8Kernel.Scalar, Int8Gemm.Current(IsaPath.Vector128));
        Assert.Equal(Int8Kernel.Scalar, Int8Gemm.Current(IsaPath.Scalar));
        Assert.Equal(127, Int8Gemm.ActivationMax(Int8Kernel.MaddUbs128));
    }

    [Fact]
    public void Int8_WithoutVnni_AnAvx512CoreRunsThe16BitKernel_At8Bits()
    {
        // where .NET exposes no VNNI but the core has AVX-512BW (AMD Zen 4, Intel Ice Lake-SP), the 512-bit path takes the
        // exact 8-bit vpmaddwd kernel and narrower paths the 7-bit pmaddubsw one
        bool bw = System.Runtime.Intrinsics.X86.Avx512BW.IsSupported && System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated;
        Assert.Equal(bw, Int8Gemm.Supported.Contains(Int8Kernel.Madd16));
        Assert.Equal(255, Int8Gemm.ActivationMax(Int8Kernel.Madd16));
        Assert.Equal(127, Int8Gemm.ActivationMax(Int8Kernel.MaddUbs));
        string? forced = Environment.GetEnvironmentVariable("FASTATTN_INT8")?.Trim().ToLowerInvariant();
        if (!bw || Int8Gemm.IsSupported(Int8Kernel.Vnni) || forced is "scalar" or "maddubs") return;
        Assert.Equal(Int8Kernel.Madd16, Int8Gemm.Best);
        Assert.Equal(Int8Kernel.Madd16, Int8Gemm.Current(IsaPath.Vector512));
        Assert.Equal(Int8Kernel.MaddUbs, Int8Gemm.Current(IsaPath.Vector256));
    }

    // ------------------------------------------------------------ the integer reference

    /// <summary>Per-output-channel symmetric weights, written from the formula: q = clamp(round(w·127/max|w|), ±127).</summary>
    private static (sbyte[] q, float[] scale) QuantizeWeights(float[] w, int n, int k)
    {
        var q = new sbyte[n * k];
        var scale = new float[n];
        for (int j = 0; j < n; j++)
        {
            float amax = 0;
            for (int i = 0; i < k; i++) amax = Math.Max(amax, Math.Abs(w[j * k + i]));
            if (amax == 0) continue;
            float inv = 127f / amax;
            scale[j] = amax / 127f;
            for (int i = 0; i < k; i++) q[j * k + i] = (sbyte)Math.Clamp((int)MathF.Round(w[j * k + i] * inv), -127, 127);
        }
        return (q, scale);
    }

    /// <summary>Per-row asymmetric activations: range [min(0, min x), max(0, max x)] over qmax levels, zero point round(−min·inv).</summary>
    private static (byte[] q, float[] scale, int[] zero) QuantizeRows(float[] x, int m, int k, int qmax)
    {
        var q = new byte[m * k];
        var scale = new float[m];
        var zero = new int[m];
        for (int r = 0; r < m; r++)
        {
            float mn = 0, mx = 0;
            for (int i = 0; i < k; i++) { mn = Math.Min(mn, x[r * k + i]); mx = Math.Max(mx, x[r * k + i]); }
            float range = mx - mn;
            if (range == 0) continue;
            float inv = qmax / range;
            zero[r] = Math.Clamp((int)MathF.Round(-mn * inv), 0, qmax);
            scale[r] = range / qmax;
            for (int i = 0; i < k; i++) q[r * k + i] = (byte)Math.Clamp((int)MathF.Round(x[r * k + i] * inv) + zero[r], 0, qmax);
        }
        return (q, scale, zero);
    }

    /// <summary>y = (float)(Σ (qa − zp)·qw) · rowScale · colScale: the exact integer product, dequantized in the kernel's order.</summary>
    private static float[] IntegerReference(float[] x, float[] w, int m, int n, int k, int qmax)
    {
        var (qw, sw) = QuantizeWeights(w, n, k);
        var (qa, sa, za) = QuantizeRows(x, m, k, qmax);
        var y = new float[m * n];
        for (int r = 0; r < m; r++)
            for (int j = 0; j < n; j++)
            {
                long acc = 0, colSum = 0;
                for (int i = 0; i < k; i++) { acc += qa[r * k + i] * qw[j * k + i]; colSum += qw[j * k + i]; }
                long exact = acc - za[r] * colSum;
                Assert.InRange(exact, int.MinValue, int.MaxValue);
                y[r * n + j] = (float)exact * sa[r] * sw[j];
            }
        return y;
    }

    [Fact]
    public void Int8_EveryKernel_EqualsIntegerReference_BitForBit_AwkwardSizes()
    {
        ForEachKernel(kernel =>
        {
            foreach (int m in Sizes)
                foreach (int n in Sizes)
                    foreach (int k in Sizes)
                    {
                        float[] w = Reference.Random(n * k, 100 + n * 31 + k);
                        float[] x = Reference.Random(m * k, 200 + m * 17 + k, 3f);
                        // skew some rows positive (as after GELU) so the zero point moves
                        for (int i = 0; i < x.Length; i += 3) x[i] = Math.Abs(x[i]);
                        using var pw = new PackedWeight(w, n, k, Precision.Int8);
                        float[] y = Filled(m * n, float.NaN);
                        Gemm.Linear(x, m, pw, y, new float[pw.ScratchSize(m)]);
                        float[] expect = IntegerReference(x, w, m, n, k, Int8Gemm.ActivationMax(kernel));
                        Bits.AssertSame(expect, y, $"m={m} n={n} k={k} against the integer reference");
                    }
        });
    }

    /// <summary>
    /// The saturation edges: every activation at the top level (255, or 127 on the vpmaddubsw kernel) or 0 and every weight
    /// at ±127, so each int16 pair sum of vpmaddubsw sits at ±127·127·2 = ±32,258 (the largest that fits) and int32 sums
    /// reach 255·127·K; and K = 4,096 for long accumulations.
    /// </summary>
    [Theory]
    [InlineData(1, 4096)]
    [InlineData(7, 768)]
    [InlineData(13, 130)]
    public void Int8_SaturationEdges_AreExact(int m, int k)
    {
        ForEachKernel(kernel =>
        {
            const int n = 33;
            var w = new float[n * k];
            for (int j = 0; j < n; j++)
                for (int i = 0; i < k; i++)
                    w[j * k + i] = j % 3 == 0 ? 1f : j % 3 == 1 ? -1f : (i % 2 == 0 ? 1f : -1f);
            var x = new float[m * k];
            for (int r = 0; r < m; r++)
                for (int i = 0; i < k; i++)
                    x[r * k + i] = r % 2 == 0 ? 5f : (i % 4 == 0 ? -2f : 6f); // even rows: all at the top level, zero point 0
            using var pw = new PackedWeight(w, n, k, Precision.Int8);
            float[] y = new float[m * n];
            Gemm.Linear(x, m, pw, y, new float[pw.ScratchSize(m)]);
            float[] expect = IntegerReference(x, w, m, n, k, Int8Gemm.ActivationMax(kernel));
            Assert.Equal(expect, y);
            // the all-positive rows and ±1 weights are represented exactly: y = 5·Σw
            for (int j = 0; j < n; j++) Assert.Equal(5.0 * (j % 3 == 0 ? k : j % 3 == 1 ? -k : 0), y[j], 1e-3 * k);
        });
    }

    /// <summary>
    /// Against the FP32 product: the quantization error of one output is at most Σ_k (|δx||w| + |x||δw| + |δx||δw|) with
    /// |δx| ≤ sx/2 and |δw| ≤ sw/2 (round to nearest), plus float rounding of the FP32 epilogue.
    /// </summary>
    [Theory]
    [InlineData(Activation.None)]
    [InlineData(Activation.Gelu)]
    [InlineData(Activation.Relu)]
    [InlineData(Activation.Silu)]
    public void Int8_WithEpilogue_WithinQuantizationBound(Activation act)
    {
        ForEachKernel(kernel =>
        {
            foreach (int m in new[] { 1, 7, 65 })
                foreach (int n in new[] { 3, 17, 130 })
                    foreach (int k in new[] { 7, 64, 257 })
                    {
                        float[] w = Reference.Random(n * k, 7 + n + k);
                        float[] x = Reference.Random(m * k, 9 + m + k, 2f);
                        float[] bias = Reference.Random(n, 11);
                        float[] res = Reference.Random(m * n, 13);
                        float[] c0 = Reference.Random(m * n, 15);
                        using var pw = new PackedWeight(w, n, k, Precision.Int8);
                        float[] y = (float[])c0.Clone();
                        var epi = new GemmEpilogue { Alpha = 0.5f, Accumulate = true, Bias = bias, Activation = act, Residual = res };
                        Gemm.Linear(x, m, pw, y, new float[pw.ScratchSize(m)], epi);
                        var (c, _) = Reference.Gemm(m, n, k, x, k, w, 1, k, 0.5f, c0, n, bias, act, res, n);
                        int qmax = Int8Gemm.ActivationMax(kernel);
                        for (int r = 0; r < m; r++)
                        {
                            float mn = Math.Min(0, x.AsSpan(r * k, k).ToArray().Min()), mx = Math.Max(0, x.AsSpan(r * k, k).ToArray().Max());
                            double sx = (mx - mn) / qmax;
                            for (int j = 0; j < n; j++)
                            {
                                double sw = w.AsSpan(j * k, k).ToArray().Max(Math.Abs) / 127.0;
                                double bound = 0;
                                for (int i = 0; i < k; i++) bound += sx / 2 * Math.Abs(w[j * k + i]) + sw / 2 * Math.Abs(x[r * k + i]) + sx * sw / 4;
                                bound = 0.5 * bound * 1.13 + 1e-5 * (1 + Math.Abs(c[r * n + j])); // alpha 0.5, GELU slope ≤ 1.13
                                double got = y[r * n + j], want = c[r * n + j];
                                if (!(Math.Abs(got - want) <= bound)) Assert.Fail($"m={m} n={n} k={k} [{r},{j}]: {got} vs {want} (bound {bound:E2})");
                            }
                        }
                    }
        });
    }

    [Fact]
    public void Int8_RowWithNaNOrInfinity_GivesNaNRow_OthersUnaffected()
    {
        ForEachKernel(_ =>
        {
            const int m = 3, n = 20, k = 9;
            float[] w = Reference.Random(n * k, 1);
            float[] x = Reference.Random(m * k, 2);
            x[k + 4] = float.NaN;
            x[2 * k + 1] = float.PositiveInfinity;
            using var pw = new PackedWeight(w, n, k, Precision.Int8);
            float[] y = new float[m * n];
            Gemm.Linear(x, m, pw, y, new float[pw.ScratchSize(m)]);
            for (int j = 0; j < n; j++)
            {
                Assert.True(float.IsFinite(y[j]));
                Assert.True(float.IsNaN(y[n + j]));
                Assert.True(float.IsNaN(y[2 * n + j]));
            }
        });
    }

    /// <summary>A weight row (output column) holding NaN or ±∞ gives NaN in that column, as FP32 would, not a silent 0.</summary>
    [Fact]
    public void Int8_WeightRowWithNaNOrInfinity_GivesNaNColumn_OthersUnaffected()
    {
        ForEachKernel(_ =>
        {
            const int m = 5, n = 20, k = 9;
            float[] w = Reference.Random(n * k, 3);
            w[3 * k + 2] = float.NaN;
            w[17 * k + 8] = float.NegativeInfinity;
            float[] x = Reference.Random(m * k, 4);
            using var pw = new PackedWeight(w, n, k, Precision.Int8);
            float[] y = new float[m * n];
            Gemm.Linear(x, m, pw, y, new float[pw.ScratchSize(m)]);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                    Assert.True(j is 3 or 17 ? float.IsNaN(y[i * n + j]) : float.IsFinite(y[i * n + j]), $"y[{i},{j}] = {y[i * n + j]}");
        });
    }

    [Fact]
    public void Int8_ZeroRowsAndColumns_GiveExactZeros()
    {
        ForEachKernel(_ =>
        {
            const int m = 4, n = 18, k = 11;
            float[] w = Reference.Random(n * k, 3);
            w.AsSpan(5 * k, k).Clear();                   // an all-zero weight row
            float[] x = Reference.Random(m * k, 4);
            x.AsSpan(2 * k, k).Clear();                   // an all-zero input row
            using var pw = new PackedWeight(w, n, k, Precision.Int8);
            float[] y = Filled(m * n, 1f);
            Gemm.Linear(x, m, pw, y, new float[pw.ScratchSize(m)]);
            for (int r = 0; r < m; r++) Assert.Equal(0f, y[r * n + 5]);
            for (int j = 0; j < n; j++) Assert.Equal(0f, y[2 * n + j]);
        });
    }

    [Fact]
    public void Int8_TwoThreads_BitIdenticalToOne()
    {
        ForEachKernel(_ =>
        {
            using var pool = new WorkerPool(2);
            foreach (var (m, n, k) in new[] { (128, 768, 256), (5, 1000, 300), (200, 40, 64) })
            {
                float[] w = Reference.Random(n * k, m + n);
                float[] x = Reference.Random(m * k, m + k);
                using var pw = new PackedWeight(w, n, k, Precision.Int8);
                float[] y1 = new float[m * n], y2 = new float[m * n];
                Gemm.Linear(x, m, pw, y1, new float[pw.ScratchSize(m)]);
                Gemm.Linear(x, m, pw, y2, new float[pw.ScratchSize(m)], default, pool);
                Assert.Equal(y1, y2);
            }
        });
    }

    [Fact]
    public void Int8_Segments_MatchSeparateWeights()
    {
        ForEachKernel(_ =>
        {
            const int k = 45, m = 9;
            int[] seg = [7, 20, 5];
            int n = seg.Sum();
            float[] w = Reference.Random(n * k, 5);
            float[] x = Reference.Random(m * k, 6);
            using var packed = new PackedWeight(w, n, k, seg, Precision.Int8);
            float[] all = new float[m * packed.PackedOutFeatures];
            Gemm.Linear(x, m, packed, all, new float[packed.ScratchSize(m)]);
            int row0 = 0;
            for (int s = 0; s < seg.Length; s++)
            {
                using var alone = new PackedWeight(w.AsSpan(row0 * k, seg[s] * k), seg[s], k, Precision.Int8);
                float[] y = new float[m * seg[s]];
                Gemm.Linear(x, m, alone, y, new float[alone.ScratchSize(m)]);
                for (int r = 0; r < m; r++)
                    for (int j = 0; j < seg[s]; j++)
                        Assert.Equal(y[r * seg[s] + j], all[r * packed.PackedOutFeatures + packed.SegmentColumn(s) + j]);
                row0 += seg[s];
            }
        });
    }

    [Fact]
    public void Int8_Memory_IsAboutAQuarter_AndTooDeepIsRejected()
    {
        using var f = new PackedWeight(new float[768 * 768], 768, 768);
        using var q = new PackedWeight(new float[768 * 768], 768, 768, Precision.Int8);
        using var b = new PackedWeight(new float[768 * 768], 768, 768, Precision.BF16Weights);
        Assert.InRange((double)q.SizeInBytes / f.SizeInBytes, 0.25, 0.26);
        Assert.Equal(0.5, (double)b.SizeInBytes / f.SizeInBytes, 3);
        Assert.Throws<ArgumentOutOfRangeException>(() => new PackedWeight(new float[65537], 1, 65537, Precision.Int8));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PackedWeight(new float[4], 2, 2, (Precision)7));
    }

    [Fact]
    public void ReducedPrecision_SteadyState_AllocatesNothing()
    {
        ForEachKernel(_ =>
        {
            foreach (var p in new[] { Precision.Int8, Precision.BF16Weights })
            {
                const int m = 20, n = 70, k = 130;
                using var pw = new PackedWeight(Reference.Random(n * k, 1), n, k, p);
                float[] x = Reference.Random(m * k, 2), y = new float[m * n], s = new float[pw.ScratchSize(m)];
                var epi = new GemmEpilogue { Bias = Reference.Random(n, 3), Activation = Activation.Gelu };
                Assert.Equal(0, Reference.SteadyStateAllocations(() => Gemm.Linear(x, m, pw, y, s, epi)));
            }
        });
    }

    // ------------------------------------------------------------ bf16

    [Fact]
    public void Bf16_Rounding_NearestEven_NaNAndInfinity()
    {
        Assert.Equal(0x3F80, PackedWeight.ToBf16(1f));
        Assert.Equal(0x3F80, PackedWeight.ToBf16(BitConverter.UInt32BitsToSingle(0x3F808000))); // tie → even (down)
        Assert.Equal(0x3F82, PackedWeight.ToBf16(BitConverter.UInt32BitsToSingle(0x3F818000))); // tie → even (up)
        Assert.Equal(0x3F81, PackedWeight.ToBf16(BitConverter.UInt32BitsToSingle(0x3F808001))); // above the tie
        Assert.Equal(0x7F80, PackedWeight.ToBf16(float.PositiveInfinity));
        Assert.Equal(0x7F80, PackedWeight.ToBf16(float.MaxValue)); // rounds up to infinity, as IEEE rounding does
        Assert.True(float.IsNaN(PackedWeight.FromBf16(PackedWeight.ToBf16(float.NaN))));
        Assert.Equal(-2.5f, PackedWeight.FromBf16(PackedWeight.ToBf16(-2.5f)));
    }

    [Fact]
    public void Bf16Weights_MatchFp32ReferenceOnRoundedWeights_AwkwardSizes()
    {
        IsaPaths.ForEach(() =>
        {
            foreach (int m in Sizes)
                foreach (int n in Sizes)
                    foreach (int k in Sizes)
                    {
                        float[] w = Reference.Random(n * k, 300 + n * 7 + k);
                        float[] x = Reference.Random(m * k, 400 + m + k);
                        float[] wr = w.Select(v => PackedWeight.FromBf16(PackedWeight.ToBf16(v))).ToArray();
                        float[] bias = Reference.Random(n, 5);
                        using var pw = new PackedWeight(w, n, k, Precision.BF16Weights);
                        float[] y = Filled(m * n, float.NaN);
                        Gemm.Linear(x, m, pw, y, new float[pw.ScratchSize(m)], new GemmEpilogue { Bias = bias, Activation = Activation.Gelu });
                        var (c, s) = Reference.Gemm(m, n, k, x, k, wr, 1, k, bias: bias, act: Activation.Gelu);
                        for (int i = 0; i < c.Length; i++)
                        {
                            double tol = 1.2 * 2 * (k + 2) / (double)(1 << 24) * s[i] * 1.13 + 2e-6 * (1 + Math.Abs(c[i]));
                            if (!(Math.Abs(y[i] - c[i]) <= tol)) Assert.Fail($"m={m} n={n} k={k} [{i}]: {y[i]} vs {c[i]} (tol {tol:E2})");
                        }
                    }
        });
    }

    [Fact]
    public void Bf16Weights_SegmentsAndThreads_MatchWholeSingleThread()
    {
        IsaPaths.ForEach(() =>
        {
            const int k = 96, m = 70;
            int[] seg = [33, 33, 33];
            float[] w = Reference.Random(99 * k, 8);
            float[] x = Reference.Random(m * k, 9);
            using var pw = new PackedWeight(w, 99, k, seg, Precision.BF16Weights);
            using var pool = new WorkerPool(2);
            float[] y1 = new float[m * pw.PackedOutFeatures], y2 = new float[y1.Length];
            Gemm.Linear(x, m, pw, y1, new float[pw.ScratchSize(m)]);
            Gemm.Linear(x, m, pw, y2, new float[pw.ScratchSize(m)], default, pool);
            Assert.Equal(y1, y2);
            using var alone = new PackedWeight(w.AsSpan(33 * k, 33 * k), 33, k, Precision.BF16Weights);
            float[] y3 = new float[m * 33];
            Gemm.Linear(x, m, alone, y3, new float[alone.ScratchSize(m)]);
            for (int r = 0; r < m; r++)
                for (int j = 0; j < 33; j++) Assert.Equal(y3[r * 33 + j], y1[r * pw.PackedOutFeatures + pw.SegmentColumn(1) + j]);
        });
    }

    private static float[] Filled(int n, float v) { var a = new float[n]; Array.Fill(a, v); return a; }
}
