using FastAttn.Composition;
using FastAttn.Kernels;
using FastAttn.Layers;

namespace FastAttn.Tests.Kernels;

/// <summary>
/// <see cref="KernelWarmup"/> compiles the microkernel's tile variants of a path ahead of use (a multi-thread session does it
/// as it is created), for FP32 weights and every other weight form built so far. It runs every variant once on scratch
/// buffers of its own; these check that it does so on every path and form, once, and that the products and layers computed
/// afterwards are what they were: the plain reference, and a two-thread session's outputs (FP32, bfloat16 and int8
/// weights) the bits of a one-thread session's at every token count, as its row shares move.
/// </summary>
public class KernelWarmupTests
{
    [Fact]
    public void Precompile_OnEveryPath_IsDoneOnceAndTheProductsStillMatchTheReference()
    {
        IsaPaths.ForEach(p =>
        {
            // weights of every form exist (built here), so the precompile covers all three
            using (new PackedWeight(Reference.Random(64, 70), 8, 8, Precision.BF16Weights))
            using (new PackedWeight(Reference.Random(64, 70), 8, 8, Precision.Int8)) { }
            KernelWarmup.Precompile(p);
            foreach (var form in new[] { Precision.F32, Precision.BF16Weights, Precision.Int8 }) Assert.True(KernelWarmup.Done(p, form), form.ToString());
            KernelWarmup.Precompile(p); // a second call returns at once
            Assert.True(KernelWarmup.Done(p));
            // row counts 1–14 (every tile height) and widths ending in part of a panel, after the warm-up
            foreach (int m in new[] { 1, 7, 13, 14, 29 })
                foreach (var (n, k) in new[] { (7, 1), (33, 63), (65, 130) })
                {
                    float[] w = Reference.Random(n * k, 71 + n + k, 0.3f), x = Reference.Random(m * k, 72 + m), bias = Reference.Random(n, 73);
                    using var pw = new PackedWeight(w, n, k);
                    float[] y = new float[m * n];
                    Gemm.Linear(x, m, pw, y, new float[Gemm.LinearScratchSize(m, k)], new GemmEpilogue { Bias = bias, Activation = Activation.Relu });
                    var (c, sum) = Reference.Gemm(m, n, k, x, k, w, 1, k, 1f, null, 0, bias, Activation.Relu);
                    for (int i = 0; i < m * n; i++)
                        Assert.True(Math.Abs(y[i] - c[i]) <= 2.4 * (k + 2) * sum[i] / (1 << 24) + 2e-6 * (1 + Math.Abs(c[i])),
                            $"m={m} n={n} k={k}: y[{i}] = {y[i]}, expected {c[i]}");
                }
        });
    }

    [Theory]
    [InlineData(Precision.F32)]
    [InlineData(Precision.BF16Weights)]
    [InlineData(Precision.Int8)]
    public void ATwoThreadSession_CompilesItsPathAhead_AndGivesTheOneThreadBits(Precision precision)
    {
        IsaPaths.ForEach(p =>
        {
            const int d = 96, heads = 3, ff = 192, maxTokens = 100;
            var r = new Random(81);
            float[] R(int n, float s) { var a = new float[n]; for (int i = 0; i < n; i++) a[i] = (float)(r.NextDouble() * 2 - 1) * s; return a; }
            float[] Ones(int n) { var a = R(n, 0.1f); for (int i = 0; i < n; i++) a[i] += 1f; return a; }
            var w = new EncoderLayerWeights(R(3 * d * d, 0.1f), R(3 * d, 0.1f), R(d * d, 0.1f), R(d, 0.1f), R(ff * d, 0.1f), R(ff, 0.1f),
                R(d * ff, 0.07f), R(d, 0.1f), Ones(d), R(d, 0.1f), Ones(d), R(d, 0.1f));
            using var stack = TransformerEncoder.FromWeights(d, heads, ff, [w], Activation.Gelu, false, 1e-5f, new AttentionSettings(), null, new PrecisionPlan(precision));
            using var one = stack.CreateSession(maxTokens, 1);
            using var two = stack.CreateSession(maxTokens, 2);
            Assert.True(KernelWarmup.Done(p));
            Assert.True(KernelWarmup.Done(p, precision));
            // many calls at each length: the two threads' shares move with their timings, and every cut must give the same bits
            foreach (int t in new[] { 100, 64, 49, 13, 1 })
            {
                float[] x = Reference.Random(t * d, 82 + t), want = new float[t * d], got = new float[t * d];
                one.Run(x, want);
                for (int call = 0; call < 40; call++)
                {
                    two.Run(x, got);
                    Bits.AssertSame(want, got, $"{t} tokens, call {call}");
                }
            }
        });
    }
}
