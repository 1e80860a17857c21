using FastAttn.Composition;
using FastAttn.Kernels;
using FastAttn.Layers;
using FastAttn.Threading;

namespace FastAttn.Tests.Layers;

public class MultiHeadAttentionTests
{
    /// <summary>PyTorch's MHA in double: separate projections, per-head softmax(q·kᵀ/√hd)·v, output projection.</summary>
    private static double[] RefMha(float[] query, int tq, float[] key, float[] value, int tk, int e, int kdim, int vdim, int heads,
        float[] wq, float[] wk, float[] wv, float[] bin, float[] wo, float[] bo, int validKeys)
    {
        double[] Proj(float[] x, int rows, float[] w, int inF, int bOff)
        {
            var y = new double[rows * e];
            for (int r = 0; r < rows; r++)
                for (int o = 0; o < e; o++)
                {
                    double s = bin[bOff + o];
                    for (int i = 0; i < inF; i++) s += (double)x[r * inF + i] * w[o * inF + i];
                    y[r * e + o] = s;
                }
            return y;
        }
        double[] q = Proj(query, tq, wq, e, 0), k = Proj(key, tk, wk, kdim, e), v = Proj(value, tk, wv, vdim, 2 * e);
        int hd = e / heads;
        var att = new double[tq * e];
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < tq; i++)
            {
                var s = new double[validKeys]; double m = double.NegativeInfinity;
                for (int j = 0; j < validKeys; j++)
                {
                    double acc = 0;
                    for (int c = 0; c < hd; c++) acc += q[i * e + h * hd + c] * k[j * e + h * hd + c];
                    s[j] = acc / Math.Sqrt(hd); m = Math.Max(m, s[j]);
                }
                double sum = 0; for (int j = 0; j < validKeys; j++) { s[j] = Math.Exp(s[j] - m); sum += s[j]; }
                for (int c = 0; c < hd; c++)
                {
                    double acc = 0;
                    for (int j = 0; j < validKeys; j++) acc += s[j] / sum * v[j * e + h * hd + c];
                    att[i * e + h * hd + c] = acc;
                }
            }
        var y2 = new double[tq * e];
        for (int r = 0; r < tq; r++)
            for (int o = 0; o < e; o++)
            {
                double s = bo[o];
                for (int i = 0; i < e; i++) s += att[r * e + i] * wo[o * e + i];
                y2[r * e + o] = s;
            }
        return y2;
    }

    private static void AssertClose(double[] expect, float[] got, double tol, string what)
    {
        Assert.Equal(expect.Length, got.Length);
        for (int i = 0; i < got.Length; i++)
            if (!(Math.Abs(got[i] - expect[i]) <= tol * (1 + Math.Abs(expect[i]))))
                Assert.Fail($"{what}: [{i}] = {got[i]}, expected {expect[i]}");
    }

    // e = 36 is not a multiple of the packed panel width (separate projections); 64 is (blocks of the packed weight)
    [Theory]
    [InlineData(64, 4, 64, 64, 7, 9, true)]
    [InlineData(64, 4, 64, 64, 33, 65, false)]
    [InlineData(36, 3, 36, 36, 5, 12, true)]
    [InlineData(48, 4, 20, 30, 13, 7, false)]   // kdim, vdim differ from embed_dim
    [InlineData(32, 1, 7, 5, 1, 1, false)]
    public void CrossAttention_MatchesReference(int e, int heads, int kdim, int vdim, int tq, int tk, bool packedCtor)
    {
        float[] wq = Reference.Random(e * e, 1, 0.3f), wk = Reference.Random(e * kdim, 2, 0.3f), wv = Reference.Random(e * vdim, 3, 0.3f);
        float[] bin = Reference.Random(3 * e, 4, 0.1f), wo = Reference.Random(e * e, 5, 0.3f), bo = Reference.Random(e, 6, 0.1f);
        float[] query = Reference.Random(tq * e, 7), key = Reference.Random(tk * kdim, 8), value = Reference.Random(tk * vdim, 9);
        using var mha = packedCtor
            ? new MultiHeadAttention(e, heads, wq.Concat(wk).Concat(wv).ToArray(), bin, wo, bo)
            : new MultiHeadAttention(e, heads, wq, wk, wv, bin, wo, bo, kdim, vdim);
        float[] outp = new float[tq * e];
        float[] scratch = new float[mha.CrossScratchSize(tq, tk)];
        mha.ForwardCross(query, tq, key, value, tk, outp, scratch);
        // float32 projections of width ≤ 64 and a softmax: errors of a few 1e-6 relative
        AssertClose(RefMha(query, tq, key, value, tk, e, kdim, vdim, heads, wq, wk, wv, bin, wo, bo, tk), outp, 2e-5, "cross");

        // key padding: only the first keys count
        int valid = Math.Max(1, tk / 2);
        mha.ForwardCross(query, tq, key, value, tk, outp, scratch, keyValidLengths: new[] { valid });
        AssertClose(RefMha(query, tq, key, value, tk, e, kdim, vdim, heads, wq, wk, wv, bin, wo, bo, valid), outp, 2e-5, "cross, padded");
    }

    [Fact]
    public void SeparateWeights_EqualPackedWeights_BitForBit()
    {
        int e = 64, heads = 4, t = 19;
        float[] wq = Reference.Random(e * e, 11, 0.3f), wk = Reference.Random(e * e, 12, 0.3f), wv = Reference.Random(e * e, 13, 0.3f);
        float[] bin = Reference.Random(3 * e, 14, 0.1f), wo = Reference.Random(e * e, 15, 0.3f), bo = Reference.Random(e, 16, 0.1f);
        using var a = new MultiHeadAttention(e, heads, wq.Concat(wk).Concat(wv).ToArray(), bin, wo, bo);
        using var b = new MultiHeadAttention(e, heads, wq, wk, wv, bin, wo, bo);
        float[] x = Reference.Random(t * e, 17), ya = new float[t * e], yb = new float[t * e];
        float[] scratch = new float[a.ScratchSize(t)];
        a.Forward(x, ya, new Batch(t), scratch);
        b.Forward(x, yb, new Batch(t), scratch);
        Assert.Equal(ya, yb);
        // self-attention through ForwardCross (same input three times) gives the same bits as well
        float[] yc = new float[t * e], cs = new float[a.CrossScratchSize(t, t)];
        a.ForwardCross(x, t, x, x, t, yc, cs);
        Assert.Equal(ya, yc);
    }

    [Fact]
    public void CrossAttention_BadArguments_ThrowBeforeWriting()
    {
        int e = 32, kdim = 8, vdim = 8;
        using var mha = new MultiHeadAttention(e, 4, Reference.Random(e * e, 1), Reference.Random(e * kdim, 2), Reference.Random(e * vdim, 3),
            default, Reference.Random(e * e, 4), default, kdim, vdim);
        float[] q = new float[3 * e], k = new float[5 * kdim], v = new float[5 * vdim], o = Enumerable.Repeat(7f, 3 * e).ToArray();
        float[] s = new float[mha.CrossScratchSize(3, 5)];
        Assert.Equal("key", Assert.Throws<ArgumentException>(() => mha.ForwardCross(q, 3, k.AsSpan(1), v, 5, o, s)).ParamName);
        Assert.Equal("options.KeyValidLengths", Assert.Throws<ArgumentException>(() => mha.ForwardCross(q, 3, k, v, 5, o, s, keyValidLengths: new[] { 6 })).ParamName);
        Assert.Equal("keyLengths", Assert.Throws<ArgumentException>(() => mha.ForwardCross(q, 3, k, v, 5, o, s, queryLengths: new[] { 3 })).ParamName);
        Assert.Equal("scratch", Assert.Throws<ArgumentException>(() => mha.ForwardCross(q, 3, k, v, 5, o, s.AsSpan(1))).ParamName);
        // self-attention is not possible with kdim != dModel
        var ex = Assert.Throws<ArgumentException>(() => mha.Forward(q, o, new Batch(3), new float[mha.ScratchSize(3)]));
        Assert.Contains("kdim", ex.Message);
        Assert.All(o, x => Assert.Equal(7f, x));
    }

    [Fact]
    public void SessionKeyPadding_ValidRows_EqualTheTruncatedSequence_BitForBit()
    {
        using var enc = TransformerEncoder.Create(layers: 2, dModel: 64, heads: 4, ffDim: 128, seed: 3);
        using var s = enc.CreateSession(80);
        int[] lens = [30, 50], valid = [21, 50];
        float[] x = Reference.Random(80 * 64, 4), y = new float[80 * 64];
        s.Run(x, y, lens, valid);
        // sequence 0 truncated to its 21 valid tokens, sequence 1 whole
        float[] y0 = new float[21 * 64], y1 = new float[50 * 64];
        s.Run(x.AsSpan(0, 21 * 64), y0);
        s.Run(x.AsSpan(30 * 64, 50 * 64), y1);
        Assert.Equal(y0, y.AsSpan(0, 21 * 64).ToArray());
        Assert.Equal(y1, y.AsSpan(30 * 64, 50 * 64).ToArray());
        // the padding tokens' values do not reach the valid tokens
        float[] x2 = (float[])x.Clone();
        for (int i = 21 * 64; i < 30 * 64; i++) x2[i] = 1000f;
        float[] y2 = new float[80 * 64];
        s.Run(x2, y2, lens, valid);
        Assert.Equal(y.AsSpan(0, 21 * 64).ToArray(), y2.AsSpan(0, 21 * 64).ToArray());
        Assert.Equal(y.AsSpan(30 * 64).ToArray(), y2.AsSpan(30 * 64).ToArray());
        // bad padding lengths are rejected before anything is written
        float[] sentinel = Enumerable.Repeat(5f, 80 * 64).ToArray();
        Assert.Equal("keyValidLengths", Assert.Throws<ArgumentException>(() => s.Run(x, sentinel, lens, new[] { 31, 50 })).ParamName);
        Assert.Equal("keyValidLengths", Assert.Throws<ArgumentException>(() => s.Run(x, sentinel, lens, new[] { 3 })).ParamName);
        Assert.All(sentinel, v => Assert.Equal(5f, v));
    }

    /// <summary>Runs a self-attention layer over <paramref name="x"/> and returns its output.</summary>
    private static float[] Self(MultiHeadAttention mha, float[] x, int[]? lens, int[]? valid, WorkerPool? pool, bool[]? boolMask = null)
    {
        int t = x.Length / mha.DModel;
        float[] y = new float[x.Length], s = new float[mha.ScratchSize(t)];
        mha.Forward(x, y, new Batch(t, lens, valid, pool), s, default, boolMask);
        return y;
    }

    // a one-token sequence's only key has softmax weight exactly 1: the layer skips q, k and the scores when every sequence
    // has one token, and replaces the kernel's output by v for one-token sequences packed among longer ones, so a request
    // keeps its bits alone and packed, on any thread count and in every precision of the input projection
    [Theory]
    [InlineData(64, 4, Precision.F32, 1)]
    [InlineData(64, 4, Precision.F32, 2)]
    [InlineData(36, 3, Precision.F32, 2)]      // panel padding between the q, k and v segments
    [InlineData(130, 5, Precision.F32, 1)]
    [InlineData(64, 4, Precision.Int8, 2)]
    [InlineData(64, 2, Precision.BF16Weights, 1)]
    public void OneTokenSequences_TakeV_MatchReference_AndKeepTheirBitsPacked(int e, int heads, Precision precision, int threads)
    {
        float[] wq = Reference.Random(e * e, 21, 0.3f), wk = Reference.Random(e * e, 22, 0.3f), wv = Reference.Random(e * e, 23, 0.3f);
        float[] bin = Reference.Random(3 * e, 24, 0.1f), wo = Reference.Random(e * e, 25, 0.3f), bo = Reference.Random(e, 26, 0.1f);
        using var mha = new MultiHeadAttention(e, heads, wq.Concat(wk).Concat(wv).ToArray(), bin, wo, bo, null, null, precision, Precision.F32);
        using var pool = threads > 1 ? new WorkerPool(threads) : null;
        float[] x = Reference.Random(8 * e, 27);
        float[] Row(int r) => x.AsSpan(r * e, e).ToArray();
        float[] Rows(int r, int n) => x.AsSpan(r * e, n * e).ToArray();

        int runs = MultiHeadAttention.OneKeyRuns;
        float[] alone0 = Self(mha, Row(0), null, null, pool), alone7 = Self(mha, Row(7), null, null, pool);
        Assert.Equal(runs + 2, MultiHeadAttention.OneKeyRuns);
        // against PyTorch's formula in double (one key: softmax weight 1): FP32 projections of width ≤ 130
        if (precision == Precision.F32)
        {
            AssertClose(RefMha(Row(0), 1, Row(0), Row(0), 1, e, e, e, heads, wq, wk, wv, bin, wo, bo, 1), alone0, 2e-5, "one token");
            AssertClose(RefMha(Row(7), 1, Row(7), Row(7), 1, e, e, e, heads, wq, wk, wv, bin, wo, bo, 1), alone7, 2e-5, "one token");
        }
        // the same token as a query over two keys (itself counted once more) is a different answer: the path is not a no-op
        Assert.NotEqual(alone0, Self(mha, Rows(0, 2), null, null, pool).AsSpan(0, e).ToArray());

        // three one-token sequences: the shortcut again, each row its lone bits
        float[] three = Self(mha, Rows(5, 3), [1, 1, 1], null, pool);
        Assert.Equal(runs + 3, MultiHeadAttention.OneKeyRuns);
        Assert.Equal(alone7, three.AsSpan(2 * e, e).ToArray());

        // one-token sequences packed with a longer one go through the kernel, and still keep their lone bits
        float[] mixed = Self(mha, x, [1, 6, 1], null, pool);
        Assert.Equal(runs + 3, MultiHeadAttention.OneKeyRuns);
        Assert.Equal(alone0, mixed.AsSpan(0, e).ToArray());
        Assert.Equal(alone7, mixed.AsSpan(7 * e, e).ToArray());
        Assert.Equal(Self(mha, Rows(1, 6), null, null, pool), mixed.AsSpan(e, 6 * e).ToArray());
        // and a one-token sequence's output does not depend on the thread count
        Assert.Equal(Self(mha, Row(0), null, null, null), alone0);
        float[] y1 = new float[e], s1 = new float[mha.ScratchSize(1)];
        Assert.Equal(0, Reference.SteadyStateAllocations(() => mha.Forward(x.AsSpan(0, e), y1, new Batch(1, default, default, pool), s1, default)));
    }

    // the shortcut holds only where the kernel's answer is v: not for a score that may overflow (the kernel gives NaN, as
    // PyTorch does), a key hidden by padding or a mask (zeros), or another normaliser
    [Fact]
    public void OneTokenSequences_KeepTheKernelsAnswer_WhereTheKeysWeightIsNotOne()
    {
        int e = 64, heads = 4;
        float[] w = Enumerable.Repeat(0.3f, 3 * e * e).ToArray(), bin = new float[3 * e], wo = Reference.Random(e * e, 31, 0.3f), bo = Reference.Random(e, 32, 0.1f);
        using var mha = new MultiHeadAttention(e, heads, w, bin, wo, bo);
        int runs = MultiHeadAttention.OneKeyRuns;
        // q = k = 0.3·64·10¹⁹ in every element: q·k over 16 elements overflows to +∞ and the softmax gives NaN
        float[] huge = Enumerable.Repeat(1e19f, e).ToArray();
        Assert.All(Self(mha, huge, null, null, null), v => Assert.True(float.IsNaN(v)));
        float[] packed = Self(mha, huge.Concat(Reference.Random(3 * e, 33)).ToArray(), [1, 3], null, null);
        Assert.All(packed.AsSpan(0, e).ToArray(), v => Assert.True(float.IsNaN(v)));
        // a non-finite input is left to the kernel too
        float[] nan = Reference.Random(e, 34); nan[5] = float.NaN;
        Assert.All(Self(mha, nan, null, null, null), v => Assert.True(float.IsNaN(v)));
        Assert.Equal(runs, MultiHeadAttention.OneKeyRuns);

        // the one key hidden (padding length 0, or a false mask entry): zeros out of the heads, so the output projection's bias
        float[] x = Reference.Random(e, 35);
        Assert.Equal(bo, Self(mha, x, null, [0], null));
        Assert.Equal(bo, Self(mha, x, null, null, null, [false]));
        float[] two = Self(mha, x.Concat(x).ToArray(), [1, 1], [1, 0], null);
        Assert.Equal(bo, two.AsSpan(e, e).ToArray());
        Assert.Equal(Self(mha, x, null, null, null), two.AsSpan(0, e).ToArray());
        Assert.Equal(runs + 1, MultiHeadAttention.OneKeyRuns);    // only the call with both keys visible, and finite scores

        // ReLU normaliser: α = relu(s)/L is not 1, so the kernel runs
        using var relu = new MultiHeadAttention(e, heads, Reference.Random(3 * e * e, 36, 0.3f), bin, wo, bo, new AttentionSettings { Normalizer = Normalizer.Relu });
        Self(relu, x, null, null, null);
        Assert.Equal(runs + 1, MultiHeadAttention.OneKeyRuns);
    }

    [Fact]
    public void EveryLayer_AllocatesNothing_InSteadyState()
    {
        int t = 37, d = 64, ff = 128;
        float[] x = Reference.Random(t * d, 1), y = new float[t * d], h = new float[t * ff];
        using var lin = new Linear(Reference.Random(ff * d, 2), ff, d, Reference.Random(ff, 3), Activation.Gelu);
        float[] ls = new float[lin.ScratchSize(t)];
        Assert.Equal(0, Reference.SteadyStateAllocations(() => lin.Forward(x, t, h, ls)));
        var ln = new LayerNorm(d);
        Assert.Equal(0, Reference.SteadyStateAllocations(() => ln.Forward(x, t, y)));
        var rms = new RmsNorm(d);
        Assert.Equal(0, Reference.SteadyStateAllocations(() => rms.Forward(x, t, y)));
        var emb = new Embedding(Reference.Random(100 * d, 4), 100, d);
        int[] ids = Enumerable.Range(0, t).Select(i => i * 7 % 100).ToArray();
        Assert.Equal(0, Reference.SteadyStateAllocations(() => emb.Lookup(ids, y)));
        var pe = PositionalEncoding.Sinusoidal(64, d);
        int[] lens = [10, 27];
        Assert.Equal(0, Reference.SteadyStateAllocations(() => pe.Forward(x, y, new Batch(t, lens), default)));
        var rope = new Rope(16, 64);
        Assert.Equal(0, Reference.SteadyStateAllocations(() => rope.Apply(y, t, d, 0, 4, lens)));
        using var enc = TransformerEncoder.Create(layers: 1, dModel: d, heads: 4, ffDim: ff, seed: 5);
        var blk = (EncoderBlock)enc.Blocks[0];
        float[] s = new float[blk.ScratchSize(t)];
        Assert.Equal(0, Reference.SteadyStateAllocations(() => blk.Attention.Forward(x, y, new Batch(t, lens), s)));
        Assert.Equal(0, Reference.SteadyStateAllocations(() => blk.FeedForward.Forward(x, y, new Batch(t), s)));
        Assert.Equal(0, Reference.SteadyStateAllocations(() => blk.Forward(x, y, new Batch(t, lens, new[] { 9, 20 }), s)));
        float[] cs = new float[blk.Attention.CrossScratchSize(t, 20)];
        float[] kv = Reference.Random(20 * d, 6);
        Assert.Equal(0, Reference.SteadyStateAllocations(() => blk.Attention.ForwardCross(x, t, kv, kv, 20, y, cs)));
    }
}
