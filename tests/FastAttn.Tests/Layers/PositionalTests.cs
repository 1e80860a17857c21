using FastAttn.Composition;
using FastAttn.Layers;

namespace FastAttn.Tests.Layers;

/// <summary>Rotary and sinusoidal positions and the embedding lookup against plain references.</summary>
public class PositionalTests
{
    [Theory]
    [InlineData(2, 1, 1)]
    [InlineData(16, 7, 3)]
    [InlineData(64, 65, 2)]
    [InlineData(6, 130, 5)]
    [InlineData(48, 20, 2)]      // 24 pairs: a vector of 16 and a tail of 8 on the 512-bit path
    public void Rope_RotatesEachPairByItsPosition_PerSequence(int headDim, int tokens, int heads) => IsaPaths.ForEach(() =>
    {
        const double theta = 10000;
        int stride = heads * headDim + 5, col0 = 3;               // columns around the heads stay untouched
        var rope = new Rope(headDim, 200, theta);
        var x = Reference.Random(tokens * stride, 1);
        var orig = (float[])x.Clone();
        int[] lens = tokens > 3 ? [tokens / 3, tokens - tokens / 3] : [tokens];
        rope.Apply(x, tokens, stride, col0, heads, lens);
        int half = headDim / 2;
        for (int t = 0, s = 0, start = 0; t < tokens; t++)
        {
            if (t - start >= lens[s]) { start += lens[s]; s++; }
            int p = t - start;                                    // position restarts in every sequence
            for (int c = 0; c < stride; c++)
            {
                int h = (c - col0) / headDim, i = (c - col0) % headDim;
                double expect;
                if (c < col0 || h >= heads) expect = orig[t * stride + c];
                else
                {
                    int pair = i < half ? i : i - half;
                    double a = p * Math.Pow(theta, -2.0 * pair / headDim);
                    double xa = orig[t * stride + col0 + h * headDim + pair], xb = orig[t * stride + col0 + h * headDim + pair + half];
                    expect = i < half ? xa * Math.Cos(a) - xb * Math.Sin(a) : xb * Math.Cos(a) + xa * Math.Sin(a);
                }
                // cos/sin stored in float (u each), two products and a sum: 4·u relative to |xa| + |xb| ≤ 2
                Assert.True(Math.Abs(x[t * stride + c] - expect) <= 8.0 / (1 << 24) * 2 + 1e-7, $"t={t} c={c}: {x[t * stride + c]} vs {expect}");
            }
        }
        Assert.Throws<ArgumentException>(() => rope.Apply(x, tokens, stride, col0, heads, [tokens + 1]));
        if (tokens > 4) Assert.Throws<ArgumentException>(() => new Rope(headDim, 4).Apply(x, tokens, stride, col0, heads, [tokens]));
    });

    [Fact]
    public void Rope_RejectsBadShapes()
    {
        var rope = new Rope(4, 8);
        Assert.Throws<ArgumentException>(() => new Rope(3, 8));
        Assert.Throws<ArgumentOutOfRangeException>(() => new Rope(4, 8, double.NaN));
        Assert.Throws<ArgumentOutOfRangeException>(() => new Rope(4, 8, 0.5));          // a base below 1 (tiny ones overflow to NaN angles)
        Assert.Throws<ArgumentOutOfRangeException>(() => new Rope(4, 8, 1e39));         // not finite in float32
        Assert.Throws<ArgumentOutOfRangeException>(() => rope.Apply(new float[16], 2, 3, 0, 1));       // stride below a head
        Assert.Throws<ArgumentException>(() => rope.Apply(new float[7], 2, 4, 0, 1));                  // too short
        Assert.Throws<ArgumentException>(() => rope.Apply(new float[80], 20, 4, 0, 1));                // 20 positions > 8
    }

    /// <summary>
    /// The tables start short and grow to the longest sequence asked (a model allowing 2^20 positions costs nothing until
    /// it runs them): threads growing them at once all get the right rotation, every path, before and after the growth.
    /// </summary>
    [Fact]
    public void Rope_TablesGrowOnDemand_AcrossThreads()
    {
        const int headDim = 8, maxPositions = 1 << 20;
        var rope = new Rope(headDim, maxPositions, 10000);
        int[] lengths = [3, 700, 2100, 513, 5000, 1];
        var results = new float[lengths.Length][];
        var inputs = lengths.Select((l, i) => Reference.Random(l * headDim, 40 + i)).ToArray();
        Parallel.For(0, lengths.Length, new ParallelOptions { MaxDegreeOfParallelism = 6 }, i =>
        {
            results[i] = (float[])inputs[i].Clone();
            rope.Apply(results[i], lengths[i], headDim, 0, 1);
        });
        for (int i = 0; i < lengths.Length; i++)
            for (int p = 0; p < lengths[i]; p += 1 + p / 7)
                for (int k = 0; k < headDim / 2; k++)
                {
                    double a = p * Math.Pow(10000, -2.0 * k / headDim);
                    double xa = inputs[i][p * headDim + k], xb = inputs[i][p * headDim + k + headDim / 2];
                    // cos/sin rounded to float (u each) at angles up to 5,000 rad (the angle itself exact in double): 4·u·(|xa| + |xb|)
                    Assert.True(Math.Abs(results[i][p * headDim + k] - (xa * Math.Cos(a) - xb * Math.Sin(a))) <= 5e-7, $"length {lengths[i]} p={p} k={k}");
                    Assert.True(Math.Abs(results[i][p * headDim + k + headDim / 2] - (xb * Math.Cos(a) + xa * Math.Sin(a))) <= 5e-7, $"length {lengths[i]} p={p} k={k}");
                }
        // after the growth, every path rotates a long sequence as the first call did
        IsaPaths.ForEach(() =>
        {
            var again = (float[])inputs[4].Clone();
            rope.Apply(again, lengths[4], headDim, 0, 1);
            Assert.Equal(results[4], again);
        });
    }

    [Fact]
    public void Sinusoidal_MatchesTheFormula()
    {
        var pe = PositionalEncoding.Sinusoidal(50, 10);
        for (int p = 0; p < 50; p++)
            for (int i = 0; i < 10; i++)
            {
                double angle = p / Math.Pow(10000, 2 * (i / 2) / 10.0);
                Assert.Equal((float)(i % 2 == 0 ? Math.Sin(angle) : Math.Cos(angle)), pe.Table[p * 10 + i]);
            }
        // added per sequence, positions restarting at 0
        var x = Reference.Random(7 * 10, 2);
        var y = new float[7 * 10];
        pe.Forward(x, y, new Batch(7, [3, 4]), default);
        for (int t = 0; t < 7; t++)
            for (int i = 0; i < 10; i++)
                Assert.Equal(x[t * 10 + i] + pe.Table[(t < 3 ? t : t - 3) * 10 + i], y[t * 10 + i]);
    }

    [Fact]
    public void Embedding_GathersAndAccumulatesRows_AndChecksIds()
    {
        var table = Reference.Random(13 * 5, 3);
        var emb = new Embedding(table, 13, 5);
        int[] ids = [0, 12, 7, 7, 1];
        var y = new float[ids.Length * 5];
        emb.Lookup(ids, y);
        for (int i = 0; i < ids.Length; i++)
            for (int c = 0; c < 5; c++) Assert.Equal(table[ids[i] * 5 + c], y[i * 5 + c]);
        var acc = Reference.Random(ids.Length * 5, 4);
        var before = (float[])acc.Clone();
        emb.Lookup(ids, acc, accumulate: true);
        for (int i = 0; i < acc.Length; i++) Assert.Equal(before[i] + table[ids[i / 5] * 5 + i % 5], acc[i]);
        var untouched = (float[])y.Clone();
        Assert.Throws<ArgumentOutOfRangeException>(() => emb.Lookup([1, 13], y));
        Assert.Throws<ArgumentOutOfRangeException>(() => emb.Lookup([-1], y));
        Assert.Throws<ArgumentException>(() => emb.Lookup(ids, new float[24]));
        Assert.Equal(untouched, y);
    }
}
