using FastAttn.Kernels;

namespace FastAttn.Embeddings;

/// <summary>
/// JinaBERT's settings beyond BERT's fields (jina-embeddings-v2, the jina-reranker-v1 models): ALiBi in every layer instead
/// of a position table, and the feed-forward — BERT's (<see cref="Glu"/> null) or a GLU whose first half goes through
/// <see cref="Glu"/> (GELU for "geglu", ReLU for "reglu") and multiplies the second.
/// </summary>
internal sealed record JinaSettings(Activation? Glu)
{
    /// <summary>
    /// ALiBi's slope per head, as JinaBERT's <c>_get_alibi_head_slopes</c> (the ALiBi paper's): for n heads a power of two,
    /// s·rᶦ with s = r = 2^(−8/n); otherwise the slopes of the largest power of two p below n, then every other slope of
    /// 2p's up to n. Computed in double precision as Python's floats and rounded to float32 as <c>torch.Tensor</c> rounds
    /// them; the bias −slope·|i − j| is then added to the scaled scores (the attention kernel's distance bias).
    /// </summary>
    public static float[] AlibiSlopes(int heads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(heads, 1);
        var s = new double[heads];
        Fill(s, heads);
        return [.. s.Select(v => (float)v)];
    }

    private static void Fill(Span<double> dst, int n)
    {
        static void PowerOfTwo(Span<double> d, int count, int n)
        {
            double start = Math.Pow(2, -Math.Pow(2, -(Math.Log2(n) - 3)));
            for (int i = 0; i < count; i++) d[i] = start * Math.Pow(start, i);
        }
        int p = 1;
        while (p * 2 <= n) p *= 2;
        if (p == n) { PowerOfTwo(dst, n, n); return; }
        PowerOfTwo(dst, p, p);
        var wide = new double[2 * p];
        Fill(wide, 2 * p);
        for (int i = 0; i < n - p; i++) dst[p + i] = wide[2 * i];
    }
}
