using System.Numerics.Tensors;

namespace FastAttn.Embeddings;

/// <summary>Similarity helpers for embedding vectors.</summary>
public static class Vectors
{
    /// <summary>The cosine similarity of two vectors of the same length (0 when either is zero).</summary>
    /// <exception cref="ArgumentException">The lengths differ or are zero.</exception>
    public static float Cosine(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        if (a.Length != b.Length || a.Length == 0) throw new ArgumentException($"the vectors have {a.Length} and {b.Length} elements; cosine needs two of the same, nonzero length.");
        float na = TensorPrimitives.Norm(a), nb = TensorPrimitives.Norm(b);
        return na == 0 || nb == 0 ? 0 : TensorPrimitives.Dot(a, b) / (na * nb);
    }

    /// <summary>Scales <paramref name="v"/> to unit length in place (a zero vector stays zero).</summary>
    public static void Normalize(Span<float> v)
    {
        float n = TensorPrimitives.Norm(v);
        if (n > 0) TensorPrimitives.Divide(v, n, v);
    }

    /// <summary>
    /// Binary quantisation of an embedding: bit j is set when <paramref name="v"/>[j] &gt; 0, packed eight to a byte with
    /// the first value in the high bit — the bytes sentence-transformers' <c>quantize_embeddings(…, "ubinary")</c> gives
    /// (numpy's <c>packbits</c>; its "binary" is each byte − 128 as int8). A 1,024-value vector becomes 128 bytes; compare
    /// such codes with <see cref="HammingDistance"/>.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="bits"/> is not ⌈length / 8⌉ bytes, or the vector is empty.</exception>
    public static void ToBinary(ReadOnlySpan<float> v, Span<byte> bits)
    {
        if (v.IsEmpty || bits.Length != (v.Length + 7) / 8)
            throw new ArgumentException($"'bits' has {bits.Length} bytes; a vector of {v.Length} values packs into {(v.Length + 7) / 8}.", nameof(bits));
        for (int b = 0; b < bits.Length; b++)
        {
            int code = 0, j0 = 8 * b;
            for (int j = 0; j < 8; j++) code = (code << 1) | (j0 + j < v.Length && v[j0 + j] > 0 ? 1 : 0);
            bits[b] = (byte)code;
        }
    }

    /// <summary>The binary code of <paramref name="v"/> (see <see cref="ToBinary(ReadOnlySpan{float}, Span{byte})"/>).</summary>
    /// <exception cref="ArgumentException">The vector is empty.</exception>
    public static byte[] ToBinary(ReadOnlySpan<float> v)
    {
        var bits = new byte[(v.Length + 7) / 8];
        ToBinary(v, bits);
        return bits;
    }

    /// <summary>The number of bits in which two binary codes of the same length differ (smaller is more similar).</summary>
    /// <exception cref="ArgumentException">The lengths differ.</exception>
    public static long HammingDistance(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        if (a.Length != b.Length) throw new ArgumentException($"the codes have {a.Length} and {b.Length} bytes; they must have the same length.");
        return TensorPrimitives.HammingBitDistance(a, b);
    }

    /// <summary>
    /// The <paramref name="k"/> rows of <paramref name="matrix"/> (<c>[rows, dimension]</c>) most similar to
    /// <paramref name="query"/> by cosine, best first (ties by row).
    /// </summary>
    /// <exception cref="ArgumentException">The matrix is not a whole number of rows of the query's length.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="k"/> is below 1.</exception>
    public static (int Row, float Score)[] TopK(ReadOnlySpan<float> query, ReadOnlySpan<float> matrix, int k)
    {
        if (query.IsEmpty || matrix.Length % query.Length != 0) throw new ArgumentException($"the matrix has {matrix.Length} elements, not a whole number of rows of {query.Length}.", nameof(matrix));
        if (k < 1) throw new ArgumentOutOfRangeException(nameof(k), k, "k must be at least 1.");
        int rows = matrix.Length / query.Length, d = query.Length;
        var scores = new (int Row, float Score)[rows];
        for (int r = 0; r < rows; r++) scores[r] = (r, Cosine(query, matrix.Slice(r * d, d)));
        Array.Sort(scores, (x, y) => y.Score != x.Score ? y.Score.CompareTo(x.Score) : x.Row.CompareTo(y.Row));
        return scores[..Math.Min(k, rows)];
    }
}
