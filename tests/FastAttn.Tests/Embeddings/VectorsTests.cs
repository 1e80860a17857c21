using FastAttn.Embeddings;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// The vector helpers against plain references: cosine, top-k, and binary quantisation — bits as numpy's packbits of
/// v &gt; 0 (first value in the high bit, a partial last byte padded with zeros) — with Hamming distances, on awkward lengths.
/// </summary>
public class VectorsTests
{
    private static byte[] PackbitsReference(float[] v)
    {
        var bits = new byte[(v.Length + 7) / 8];
        for (int j = 0; j < v.Length; j++)
            if (v[j] > 0) bits[j / 8] |= (byte)(0x80 >> (j % 8));
        return bits;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(8)]
    [InlineData(63)]
    [InlineData(65)]
    [InlineData(130)]
    [InlineData(384)]
    [InlineData(1024)]
    public void ToBinary_IsPackbits_AndHammingCountsDifferingBits(int n)
    {
        var a = FastAttn.Tests.Reference.Random(n, n, 1f);
        var b = FastAttn.Tests.Reference.Random(n, n + 1, 1f);
        if (n > 2) { a[1] = 0f; a[2] = -0f; }                   // zero is not > 0: bit clear
        var ca = Vectors.ToBinary(a);
        Assert.Equal(PackbitsReference(a), ca);
        var cb = Vectors.ToBinary(b);
        long expect = 0;
        for (int j = 0; j < n; j++) expect += (a[j] > 0) != (b[j] > 0) ? 1 : 0;
        Assert.Equal(expect, Vectors.HammingDistance(ca, cb));
        Assert.Equal(0, Vectors.HammingDistance(ca, ca));
    }

    [Fact]
    public void ToBinary_FirstValueInTheHighBit_AndMisuseRefused()
    {
        Assert.Equal(new byte[] { 0b1000_0001, 0b0100_0000 }, Vectors.ToBinary([1f, -1f, 0f, -2f, -3f, -4f, -5f, 6f, -1f, 2f]));
        Assert.Throws<ArgumentException>(() => Vectors.ToBinary(ReadOnlySpan<float>.Empty));
        Assert.Throws<ArgumentException>(() => Vectors.ToBinary(new float[9], new byte[1]));
        Assert.Throws<ArgumentException>(() => Vectors.HammingDistance(new byte[2], new byte[3]));
    }

    [Fact]
    public void Cosine_AndTopK_MatchTheFormula()
    {
        float[] q = [1f, 2f, 3f], m = [1f, 2f, 3f, -1f, 0f, 0f, 3f, 2f, 1f];
        double Ref(int r) => (q[0] * m[3 * r] + q[1] * m[3 * r + 1] + q[2] * m[3 * r + 2]) / Math.Sqrt(14) / Math.Sqrt(m[3 * r] * m[3 * r] + m[3 * r + 1] * m[3 * r + 1] + m[3 * r + 2] * m[3 * r + 2]);
        var top = Vectors.TopK(q, m, 2);
        Assert.Equal([0, 2], top.Select(t => t.Row));
        Assert.Equal(Ref(2), top[1].Score, 6);
        Assert.Equal(0f, Vectors.Cosine([0f, 0f], [1f, 1f]));
    }
}
