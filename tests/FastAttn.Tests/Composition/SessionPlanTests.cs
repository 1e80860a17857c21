using FastAttn.Layers;

namespace FastAttn.Tests.Composition;

/// <summary>What a session reserves: PlannedFloats counts every buffer, and worker threads get only what kernels need per thread.</summary>
public class SessionPlanTests(Xunit.Abstractions.ITestOutputHelper output)
{
    [Theory]
    [InlineData(768, 12, 3072, 128)]
    [InlineData(384, 12, 1536, 512)]
    [InlineData(96, 4, 192, 7)]
    public void TwoThreads_ReserveLittleMoreThanOne(int d, int heads, int ff, int tokens)
    {
        using var enc = TransformerEncoder.Create(1, d, heads, ff, seed: 1);
        using var one = enc.CreateSessionUnchecked(tokens, 1);
        using var two = enc.CreateSessionUnchecked(tokens, 2);
        long blockScratch = enc.Blocks.Max(b => b.ScratchSize(tokens));
        long worker = enc.Blocks.Max(b => b.WorkerScratchSize(tokens));
        // one thread: two activation buffers and the block's scratch, nothing else
        Assert.Equal(2L * tokens * d + blockScratch, one.PlannedFloats);
        // two threads: plus one worker's per-thread need, which is the kernels' packing, not the block's activations
        Assert.Equal(one.PlannedFloats + worker, two.PlannedFloats);
        Assert.True(worker < blockScratch, $"worker scratch {worker} is not below the block's {blockScratch}");
        output.WriteLine($"d={d} ff={ff} tokens={tokens}: 1 thread {one.PlannedFloats:N0} floats, 2 threads {two.PlannedFloats:N0} ({(double)two.PlannedFloats / one.PlannedFloats:F2}×)");
    }

    /// <summary>
    /// A session sized for 36 tokens over a 64 × 8192 weight runs fewer tokens correctly: 12 rows pack the weight's whole
    /// depth (8192 floats a row) where 36 rows pack one K block (768), and the scratch was once sized for 36 rows only
    /// (an access violation at 12 tokens). Checked against a plain reference, on one and two threads.
    /// </summary>
    [Fact]
    public void ASessionRunsFewerTokensThanItWasSizedFor_OverADeepWeight()
    {
        const int k = 8192, n = 64;
        float[] w = Reference.Random(n * k, 31, 0.02f), b = Reference.Random(n, 32);
        using var lin = new Linear(w, n, k, b);
        using var stack = new FastAttn.Composition.Stack(new LinearBlock(lin));
        foreach (int threads in new[] { 1, 2 })
        {
            using var session = stack.CreateSession(36, threads);
            foreach (int t in new[] { 36, 12, 5, 1, 13 })
            {
                float[] x = Reference.Random(t * k, 33 + t), y = new float[t * n];
                session.Run(x, y);
                var (c, sum) = Reference.Gemm(t, n, k, x, k, w, 1, k, bias: b);
                for (int i = 0; i < t * n; i++)
                    Assert.True(Math.Abs(y[i] - c[i]) <= 2.4 * (k + 2) / (1 << 24) * sum[i] + 1e-6, $"{threads} threads, {t} tokens: y[{i}] = {y[i]}, expected {c[i]}");
            }
        }
    }

    /// <summary>
    /// Every block's scratch and worker-scratch sizes are non-decreasing in the token count, so what a session reserves
    /// for its most tokens serves every call with fewer (the property whose absence crashed the session above): encoder
    /// layers with feed-forward widths past one K block (1030, 4100, 8192) and a model width past it (1536), int8 and
    /// bf16 weights too, 1–300 tokens.
    /// </summary>
    [Theory]
    [InlineData(64, 2, 8192, 0)]
    [InlineData(48, 1, 4100, 0)]
    [InlineData(128, 2, 1030, 1)]
    [InlineData(1536, 12, 256, 0)]
    [InlineData(96, 3, 2048, 2)]
    public void BlockScratchSizes_NeverShrinkWithMoreTokens(int d, int heads, int ff, int precision)
    {
        using var enc = TransformerEncoder.Create(1, d, heads, ff, seed: 3, precision: (FastAttn.Kernels.Precision)precision);
        foreach (var block in enc.Blocks)
        {
            long scratch = 0, worker = 0;
            for (int t = 1; t <= 300; t++)
            {
                long s = block.ScratchSize(t), w = block.WorkerScratchSize(t);
                Assert.True(s >= scratch, $"{block.GetType().Name}: scratch for {t} tokens {s} < {scratch} for {t - 1}");
                Assert.True(w >= worker, $"{block.GetType().Name}: worker scratch for {t} tokens {w} < {worker} for {t - 1}");
                scratch = s; worker = w;
            }
        }
    }

    /// <summary>
    /// Blocks run unchecked inside a session and write their scratch through pointers, so a block that needs more scratch
    /// for fewer tokens than it stated for the session's size is refused at the first call with that many tokens —
    /// before anything is written — and the session stays usable.
    /// </summary>
    [Fact]
    public void ABlockNeedingMoreScratchForFewerTokens_IsRefused_BeforeAnythingIsWritten()
    {
        using var stack = new FastAttn.Composition.Stack(new ShrinkingScratchBlock());
        using var session = stack.CreateSession(8);
        var x8 = Enumerable.Range(0, 8 * 4).Select(i => 0.5f * i).ToArray();
        var y8 = new float[x8.Length];
        session.Run(x8, y8);
        Assert.Equal(x8, y8);
        var y3 = Enumerable.Repeat(7f, 3 * 4).ToArray();
        var e = Assert.Throws<InvalidOperationException>(() => session.Run(x8.AsSpan(0, 3 * 4), y3));
        Assert.Contains("must not shrink", e.Message);
        Assert.All(y3, v => Assert.Equal(7f, v));
        Array.Clear(y8);
        session.Run(x8, y8);
        Assert.Equal(x8, y8);
        // a disposed session is refused as such, also at a token count it has not checked yet
        session.Dispose();
        Assert.Throws<ObjectDisposedException>(() => session.Run(x8.AsSpan(0, 5 * 4), new float[5 * 4]));
    }

    /// <summary>Copies its input; states 16 floats of scratch for 8 or more tokens and 4096 for fewer, and clears what it states.</summary>
    private sealed class ShrinkingScratchBlock : FastAttn.Composition.Block
    {
        public override int InputWidth => 4;
        public override int OutputWidth => 4;
        public override long ScratchSize(int maxTokens) => maxTokens >= 8 ? 16 : 4096;
        protected internal override void ForwardCore(ReadOnlySpan<float> input, Span<float> output, FastAttn.Composition.Batch batch, Span<float> scratch)
        {
            scratch[..(int)ScratchSize(batch.Tokens)].Clear();
            input.CopyTo(output);
        }
    }
}
