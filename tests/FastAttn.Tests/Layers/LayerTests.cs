using FastAttn.Composition;
using FastAttn.Kernels;
using FastAttn.Layers;

namespace FastAttn.Tests.Layers;

public class LayerTests
{
    // ---- double-precision references composed by hand from the formulas ----
    internal static double[] Lin(double[] x, int rows, float[] w, float[] b, int outF, int inF)
    {
        var y = new double[rows * outF];
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < outF; o++)
            {
                double s = b[o];
                for (int i = 0; i < inF; i++) s += x[r * inF + i] * w[o * inF + i];
                y[r * outF + o] = s;
            }
        return y;
    }

    internal static double[] Ln(double[] x, int rows, int n, float[] g, float[] b, double eps)
    {
        var y = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            double m = 0; for (int i = 0; i < n; i++) m += x[r * n + i]; m /= n;
            double v = 0; for (int i = 0; i < n; i++) v += (x[r * n + i] - m) * (x[r * n + i] - m); v /= n;
            for (int i = 0; i < n; i++) y[r * n + i] = (x[r * n + i] - m) / Math.Sqrt(v + eps) * g[i] + b[i];
        }
        return y;
    }

    /// <summary>Softmax self-attention over packed [t, 3d] q|k|v rows; <paramref name="slopes"/> adds −slope_h·|i − j| per head.</summary>
    internal static double[] SelfAttn(double[] qkv, int t, int d, int heads, float[]? slopes = null)
    {
        int hd = d / heads;
        var o = new double[t * d];
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < t; i++)
            {
                var s = new double[t]; double m = double.NegativeInfinity;
                for (int j = 0; j < t; j++)
                {
                    double acc = 0;
                    for (int c = 0; c < hd; c++) acc += qkv[i * 3 * d + h * hd + c] * qkv[j * 3 * d + d + h * hd + c];
                    s[j] = acc / Math.Sqrt(hd) - (slopes?[h] ?? 0) * Math.Abs(i - j); m = Math.Max(m, s[j]);
                }
                double sum = 0; for (int j = 0; j < t; j++) { s[j] = Math.Exp(s[j] - m); sum += s[j]; }
                for (int c = 0; c < hd; c++)
                {
                    double acc = 0;
                    for (int j = 0; j < t; j++) acc += s[j] / sum * qkv[j * 3 * d + 2 * d + h * hd + c];
                    o[i * d + h * hd + c] = acc;
                }
            }
        return o;
    }

    internal sealed record Weights(float[] Win, float[] Bin, float[] Wout, float[] Bout, float[] W1, float[] B1, float[] W2, float[] B2,
        float[] G1, float[] Be1, float[] G2, float[] Be2);

    internal static Weights RandomWeights(int d, int ff, int seed) => new(
        Reference.Random(3 * d * d, seed, 0.3f), Reference.Random(3 * d, seed + 1, 0.1f), Reference.Random(d * d, seed + 2, 0.3f), Reference.Random(d, seed + 3, 0.1f),
        Reference.Random(ff * d, seed + 4, 0.3f), Reference.Random(ff, seed + 5, 0.1f), Reference.Random(d * ff, seed + 6, 0.3f), Reference.Random(d, seed + 7, 0.1f),
        Reference.Random(d, seed + 8, 0.2f).Select(x => 1 + x).ToArray(), Reference.Random(d, seed + 9, 0.1f),
        Reference.Random(d, seed + 10, 0.2f).Select(x => 1 + x).ToArray(), Reference.Random(d, seed + 11, 0.1f));

    internal static EncoderBlock Build(Weights w, int d, int heads, int ff, bool normFirst, Activation act) => new(
        new MultiHeadAttention(d, heads, w.Win, w.Bin, w.Wout, w.Bout),
        new FeedForward(d, ff, w.W1, w.B1, w.W2, w.B2, act),
        new LayerNorm(d, w.G1, w.Be1), new LayerNorm(d, w.G2, w.Be2), normFirst);

    internal static double[] RefBlock(double[] x, int t, int d, int heads, int ff, Weights w, bool normFirst, Activation act)
    {
        double[] Add(double[] a, double[] b) => a.Zip(b, (p, q) => p + q).ToArray();
        double[] Ff(double[] h) => Lin(Lin(h, t, w.W1, w.B1, ff, d).Select(v => Reference.Act(v, act)).ToArray(), t, w.W2, w.B2, d, ff);
        double[] Att(double[] h) => Lin(SelfAttn(Lin(h, t, w.Win, w.Bin, 3 * d, d), t, d, heads), t, w.Wout, w.Bout, d, d);
        if (normFirst)
        {
            var h = Add(x, Att(Ln(x, t, d, w.G1, w.Be1, 1e-5)));
            return Add(h, Ff(Ln(h, t, d, w.G2, w.Be2, 1e-5)));
        }
        var h2 = Ln(Add(x, Att(x)), t, d, w.G1, w.Be1, 1e-5);
        return Ln(Add(h2, Ff(h2)), t, d, w.G2, w.Be2, 1e-5);
    }

    [Theory]
    [InlineData(false, Activation.Relu, 7)]
    [InlineData(true, Activation.Gelu, 7)]
    [InlineData(false, Activation.Gelu, 65)]
    [InlineData(true, Activation.Relu, 1)]
    public void TwoBlockEncoder_MatchesHandComposedReference(bool normFirst, Activation act, int t)
    {
        IsaPaths.ForEach(() =>
        {
            int d = 48, heads = 4, ff = 96;
            var w1 = RandomWeights(d, ff, 100); var w2 = RandomWeights(d, ff, 200);
            using var stack = new Stack(Build(w1, d, heads, ff, normFirst, act), Build(w2, d, heads, ff, normFirst, act));
            using var session = stack.CreateSession(100);
            float[] x = Reference.Random(t * d, 5);
            float[] y = new float[t * d];
            session.Run(x, y);
            var r = RefBlock(RefBlock(x.Select(v => (double)v).ToArray(), t, d, heads, ff, w1, normFirst, act), t, d, heads, ff, w2, normFirst, act);
            // Outputs are O(1) after LayerNorm; float32 through two blocks of K ≤ 96 dot products and a
            // normalisation (which can amplify absolute error by 1/σ ~ a few) stays well inside 2e-4.
            for (int i = 0; i < y.Length; i++) Assert.True(Math.Abs(y[i] - r[i]) < 2e-4, $"y[{i}] = {y[i]} vs {r[i]}");
        });
    }

    [Fact]
    public void LayerNormAndRmsNorm_MatchReference()
    {
        IsaPaths.ForEach(() =>
        {
            // widths that are and are not whole vectors (whole ones run two rows at a time); 3 rows = a pair + one alone
            foreach (int n in new[] { 1, 7, 16, 63, 64, 65, 128, 130 })
            {
                float[] x = Reference.Random(3 * n, n, 4f), g = Reference.Random(n, n + 1), b = Reference.Random(n, n + 2);
                float[] y = new float[3 * n];
                new LayerNorm(n, g, b).Forward(x, 3, y);
                var r = Ln(x.Select(v => (double)v).ToArray(), 3, n, g, b, 1e-5);
                for (int i = 0; i < y.Length; i++) Assert.True(Math.Abs(y[i] - r[i]) < 1e-5 * (1 + Math.Abs(r[i])), $"LN n={n}");
                // a row's bits do not depend on its neighbours (packed batching relies on it)
                for (int row = 0; row < 3; row++)
                {
                    float[] one = new float[n];
                    new LayerNorm(n, g, b).Forward(x.AsSpan(row * n, n), 1, one);
                    Assert.True(one.AsSpan().SequenceEqual(y.AsSpan(row * n, n)), $"LN n={n} row {row} alone differs");
                }
                new RmsNorm(n, g, 1e-6f).Forward(x, 3, y);
                for (int row = 0; row < 3; row++)
                {
                    double ms = 0; for (int i = 0; i < n; i++) ms += (double)x[row * n + i] * x[row * n + i]; ms /= n;
                    for (int i = 0; i < n; i++)
                    {
                        double e = x[row * n + i] / Math.Sqrt(ms + 1e-6) * g[i];
                        Assert.True(Math.Abs(y[row * n + i] - e) < 1e-5 * (1 + Math.Abs(e)), $"RMS n={n}");
                    }
                }
            }
        });
    }

    [Fact]
    public void PackedBatch_EqualsEachSequenceAlone_BitForBit()
    {
        IsaPaths.ForEach(() =>
        {
            using var enc = TransformerEncoder.Create(layers: 2, dModel: 64, heads: 4, ffDim: 128, seed: 3);
            using var s = enc.CreateSession(200);
            int[] lens = [5, 65, 1, 30];
            int total = lens.Sum();
            float[] x = Reference.Random(total * 64, 9), y = new float[total * 64];
            s.Run(x, y, lens);
            int t0 = 0;
            foreach (int l in lens)
            {
                float[] yi = new float[l * 64];
                s.Run(x.AsSpan(t0 * 64, l * 64), yi);
                for (int i = 0; i < yi.Length; i++) Assert.Equal(yi[i], y[t0 * 64 + i]);
                t0 += l;
            }
        });
    }

    [Fact]
    public void FourThreads_SharedModel_OwnSessions_BitIdentical()
    {
        using var enc = TransformerEncoder.Create(layers: 2, dModel: 32, heads: 4, ffDim: 64, seed: 4);
        float[] x = Reference.Random(12 * 32, 10), expect = new float[12 * 32];
        using (var s = enc.CreateSession(12)) s.Run(x, expect);
        int mismatches = 0;
        var threads = Enumerable.Range(0, 4).Select(_ => new Thread(() =>
        {
            using var s = enc.CreateSession(12);
            float[] y = new float[12 * 32];
            for (int it = 0; it < 1000; it++)
            {
                s.Run(x, y);
                if (!y.AsSpan().SequenceEqual(expect)) Interlocked.Increment(ref mismatches);
            }
        })).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        Assert.Equal(0, mismatches);
    }

    [Fact]
    public void Run_AllocatesNothing_AfterFirstCall()
    {
        using var enc = TransformerEncoder.Create(layers: 2, dModel: 64, heads: 4, ffDim: 128, normFirst: true, activation: Activation.Gelu);
        using var s = enc.CreateSession(64);
        float[] x = Reference.Random(40 * 64, 1), y = new float[40 * 64];
        int[] lens = [10, 30];
        Assert.Equal(0, Reference.SteadyStateAllocations(() => { s.Run(x, y); s.Run(x, y, lens); }));
    }

    [Fact]
    public void SelfAttention_PermutationEquivariant_WithoutPositions_NotWithThem()
    {
        int t = 9, d = 32;
        using var enc = TransformerEncoder.Create(layers: 1, dModel: d, heads: 4, ffDim: 64, seed: 8);
        var withPos = new Stack(PositionalEncoding.Sinusoidal(64, d), enc.Blocks[0]);
        float[] x = Reference.Random(t * d, 2), xp = new float[t * d];
        int[] perm = [3, 0, 8, 1, 7, 2, 6, 4, 5];
        for (int i = 0; i < t; i++) Array.Copy(x, perm[i] * d, xp, i * d, d);
        foreach (var (stack, equivariant) in new[] { (enc, true), (withPos, false) })
        {
            using var s = stack.CreateSession(t);
            float[] y = new float[t * d], yp = new float[t * d];
            s.Run(x, y); s.Run(xp, yp);
            double maxDiff = 0;
            for (int i = 0; i < t; i++) for (int c = 0; c < d; c++) maxDiff = Math.Max(maxDiff, Math.Abs(yp[i * d + c] - y[perm[i] * d + c]));
            if (equivariant) Assert.True(maxDiff < 1e-5, $"{maxDiff}"); else Assert.True(maxDiff > 1e-2, $"{maxDiff}");
        }
    }

    [Fact]
    public void BadInput_ClearErrors_OutputUntouched()
    {
        using var enc = TransformerEncoder.Create(layers: 1, dModel: 32, heads: 4, ffDim: 64);
        using var s = enc.CreateSession(10);
        float[] y = new float[10 * 32]; Array.Fill(y, 3f);
        Assert.Equal("input", Assert.Throws<ArgumentException>(() => s.Run(new float[33], y.AsSpan(0, 32))).ParamName);
        var ex = Assert.Throws<ArgumentException>(() => s.Run(new float[11 * 32], new float[11 * 32]));
        Assert.Contains("at most 10", ex.Message);
        Assert.Equal("output", Assert.Throws<ArgumentException>(() => s.Run(new float[5 * 32], y)).ParamName);
        ex = Assert.Throws<ArgumentException>(() => s.Run(new float[10 * 32], y, new[] { 4, 5 }));
        Assert.Equal("sequenceLengths", ex.ParamName);
        Assert.Contains("add up to 9", ex.Message);
        Assert.All(y, v => Assert.Equal(3f, v));
        Assert.Throws<ArgumentException>("heads", () => TransformerEncoder.Create(1, 30, 4, 64));
    }
}
