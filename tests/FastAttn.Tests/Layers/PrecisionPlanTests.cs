using FastAttn.Kernels;
using FastAttn.Layers;

namespace FastAttn.Tests.Layers;

public class PrecisionPlanTests
{
    [Fact]
    public void For_LongestDottedPrefixWins_OtherwiseTheDefault()
    {
        var plan = new PrecisionPlan(Precision.Int8)
            .With("layers.1", Precision.F32)
            .With("layers.1.linear2", Precision.BF16Weights)
            .With("layers.10.", Precision.BF16Weights);          // a trailing dot is ignored
        Assert.Equal(Precision.Int8, plan.For("layers.0.linear1"));
        Assert.Equal(Precision.F32, plan.For("layers.1.linear1"));
        Assert.Equal(Precision.F32, plan.For("layers.1"));
        Assert.Equal(Precision.BF16Weights, plan.For("layers.1.linear2"));
        Assert.Equal(Precision.BF16Weights, plan.For("layers.10.linear1")); // "layers.1" is not a dotted prefix of it
        Assert.Equal(Precision.Int8, plan.For("layers.11.linear1"));
        Assert.Equal(3, plan.With("layers.1", Precision.Int8).Overrides.Count); // replacing keeps one entry per name
        Assert.Equal(Precision.F32, PrecisionPlan.F32.For("anything"));
        PrecisionPlan implicitPlan = Precision.BF16Weights;
        Assert.Equal(Precision.BF16Weights, implicitPlan.For("x"));
        Assert.Equal(Precision.Int8, PrecisionPlan.ParsePrecision(" INT8 "));
        Assert.Equal(Precision.BF16Weights, PrecisionPlan.ParsePrecision("bf16"));
        Assert.Throws<ArgumentException>(() => PrecisionPlan.ParsePrecision("fp8"));
        Assert.Throws<ArgumentException>(() => plan.With(" ", Precision.F32));
        Assert.Throws<ArgumentOutOfRangeException>(() => plan.With("a", (Precision)9));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PrecisionPlan((Precision)(-1)));
    }

    [Fact]
    public void Encoder_PerLayerOverride_KeepsThatLayerFp32_AndMemoryShrinks()
    {
        var plan = new PrecisionPlan(Precision.Int8).With("layers.1.linear2", Precision.F32).With("layers.0.self_attn", Precision.BF16Weights);
        using var q = TransformerEncoder.Create(2, 64, 4, 256, seed: 3, precision: plan);
        using var f = TransformerEncoder.Create(2, 64, 4, 256, seed: 3);
        var b0 = (EncoderBlock)q.Blocks[0];
        var b1 = (EncoderBlock)q.Blocks[1];
        Assert.Equal(Precision.BF16Weights, b0.Attention.InputProjectionPrecision);
        Assert.Equal(Precision.BF16Weights, b0.Attention.OutputProjectionPrecision);
        Assert.Equal(Precision.Int8, b0.FeedForward.Linear1.Precision);
        Assert.Equal(Precision.Int8, b1.Attention.InputProjectionPrecision);
        Assert.Equal(Precision.Int8, b1.FeedForward.Linear1.Precision);
        Assert.Equal(Precision.F32, b1.FeedForward.Linear2.Precision);
        using var all8 = TransformerEncoder.Create(2, 64, 4, 256, seed: 3, precision: Precision.Int8);
        long f32Bytes = f.Blocks.OfType<EncoderBlock>().Sum(b => b.WeightBytes), int8Bytes = all8.Blocks.OfType<EncoderBlock>().Sum(b => b.WeightBytes);
        Assert.InRange((double)int8Bytes / f32Bytes, 0.25, 0.3);
    }

    /// <summary>
    /// A whole int8 / bf16 encoder (two layers, pre- and post-norm, packed sequences, two threads) stays close to FP32 on
    /// every ISA path, and its steady state allocates nothing.
    /// </summary>
    [Theory]
    [InlineData(Precision.Int8, false)]
    [InlineData(Precision.Int8, true)]
    [InlineData(Precision.BF16Weights, false)]
    public void Encoder_Int8AndBf16_CloseToFp32_ZeroAllocations(Precision precision, bool normFirst)
    {
        IsaPaths.ForEach(() =>
        {
            const int d = 96, tokens = 37;
            using var f = TransformerEncoder.Create(2, d, 4, 2 * d, Activation.Gelu, normFirst, seed: 5);
            using var q = TransformerEncoder.Create(2, d, 4, 2 * d, Activation.Gelu, normFirst, seed: 5, precision: precision);
            var x = Reference.Random(tokens * d, 6);
            var yf = new float[tokens * d];
            var yq = new float[tokens * d];
            int[] lengths = [5, 20, 12];
            using (var s = f.CreateSession(tokens, 1)) s.Run(x, yf, lengths);
            using var sq = q.CreateSession(tokens, 2);
            sq.Run(x, yq, lengths);
            double worst = 0, scale = yf.Max(Math.Abs);
            for (int i = 0; i < yf.Length; i++) worst = Math.Max(worst, Math.Abs(yq[i] - yf[i]));
            // after two layers of LayerNorm outputs O(1): int8 moves them by a few hundredths, bf16 by far less
            Assert.True(worst / scale < (precision == Precision.Int8 ? 0.06 : 0.01), $"{precision}: max |Δ| / max |y| = {worst / scale}");
            Assert.Equal(0, Reference.SteadyStateAllocations(() => sq.Run(x, yq, lengths)));
        });
    }
}
