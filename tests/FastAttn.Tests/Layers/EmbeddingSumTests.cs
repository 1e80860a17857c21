using FastAttn.Composition;
using FastAttn.Layers;

namespace FastAttn.Tests.Layers;

public class EmbeddingSumTests
{
    [Theory]
    [InlineData(1, 1)]
    [InlineData(7, 63)]
    [InlineData(65, 130)]
    public void SumsOneRowPerTable(int tokens, int width)
    {
        int[] rows = [5, 1, 17];
        var tables = rows.Select((r, i) => Reference.Random(r * width, 10 + i)).ToArray();
        var block = new EmbeddingSum(tables, width);
        var rnd = new Random(tokens);
        var ids = new float[tokens * rows.Length];
        for (int i = 0; i < ids.Length; i++) ids[i] = rnd.Next(rows[i % rows.Length]);
        var got = new float[tokens * width];
        block.Forward(ids, got, new Batch(tokens), default);
        for (int t = 0; t < tokens; t++)
            for (int c = 0; c < width; c++)
            {
                double e = 0;
                for (int f = 0; f < rows.Length; f++) e += tables[f][(int)ids[t * rows.Length + f] * width + c];
                Assert.True(Math.Abs(got[t * width + c] - e) <= 1e-6 * (1 + Math.Abs(e)), $"t={t} c={c}");
            }
        Assert.Equal(0, Reference.SteadyStateAllocations(() => block.Forward(ids, got, new Batch(tokens), default)));
    }

    [Fact]
    public void BadIdsThrowBeforeWriting()
    {
        var block = new EmbeddingSum([new float[6], new float[4]], 2);   // 3 rows, 2 rows
        var output = new float[4];
        Array.Fill(output, 7f);
        foreach (var bad in new[] { new float[] { 0, 0, 3, 0 }, new float[] { 0, 0, 0, 2 }, new float[] { 0, 0, -1, 0 }, new float[] { 0.5f, 0, 0, 0 }, new float[] { float.NaN, 0, 0, 0 } })
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => block.Forward(bad, output, new Batch(2), default));
            Assert.All(output, x => Assert.Equal(7f, x));
        }
        Assert.Throws<ArgumentException>(() => new EmbeddingSum([new float[5]], 2));
        Assert.Throws<ArgumentException>(() => new EmbeddingSum([], 2));
    }
}
