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
}
