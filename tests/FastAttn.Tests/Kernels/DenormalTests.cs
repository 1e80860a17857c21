using FastAttn.Kernels;
using FastAttn.Layers;

namespace FastAttn.Tests.Kernels;

/// <summary>
/// Denormal operands (|x| &lt; 2⁻¹²⁶) are packed as zeros by every kernel that feeds multiply-adds — a multiply-add with a
/// denormal operand takes a microcode assist, ~200× its time on Intel (their speed is measured in perf/, not here). What
/// these tests hold: a product or an attention with denormals (and −0) in any operand gives exactly the bits it gives
/// with those entries +0, on every path, and still matches the scalar reference on the original data (each product
/// changes by less than 2⁻¹²⁶·|other operand|, far inside the rounding bound).
/// </summary>
public class DenormalTests
{
    private const double U = 1.0 / (1 << 24);

    /// <summary>Ordinary values with about a fifth replaced by denormals of either sign (from the least, 2⁻¹⁴⁹, to the largest) or −0.</summary>
    private static float[] WithDenormals(int count, int seed, float scale = 1f)
    {
        var r = new Random(seed);
        var x = Reference.Random(count, seed + 1, scale);
        for (int i = 0; i < count; i++)
        {
            int pick = r.Next(10);
            if (pick == 0) x[i] = (r.Next(2) == 0 ? 1 : -1) * BitConverter.Int32BitsToSingle(r.Next(1, 0x800000));
            else if (pick == 1) x[i] = r.Next(2) == 0 ? float.Epsilon : -BitConverter.Int32BitsToSingle(0x7FFFFF);
            else if (pick == 2 && r.Next(4) == 0) x[i] = -0f;
        }
        Assert.Contains(x, v => v != 0 && !float.IsNormal(v));
        return x;
    }

    /// <summary>Makes elements [start, start + count·stride) step stride denormal: a row or column of them alone gives a denormal output unless they are read as 0.</summary>
    private static float[] DenormalRun(float[] x, int start, int count, int stride)
    {
        for (int i = 0; i < count; i++) x[start + i * stride] = (i % 2 == 0 ? 1 : -1) * BitConverter.Int32BitsToSingle(0x400000 + i);
        return x;
    }

    private static float[] Zeroed(float[] x) => [.. x.Select(v => float.IsNormal(v) ? v : 0f)];

    public static TheoryData<int, int, int> Shapes => new() { { 1, 33, 7 }, { 7, 65, 63 }, { 13, 17, 130 }, { 65, 7, 257 }, { 30, 70, 1025 } };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Linear_ReadsDenormalsAsZero(int m, int n, int k)
    {
        IsaPaths.ForEach(isa =>
        {
            // row 0 of x and the weight row of the last output feature all denormal
            float[] x = DenormalRun(WithDenormals(m * k, m + k), 0, k, 1), w = DenormalRun(WithDenormals(n * k, n + 3 * k, 0.3f), (n - 1) * k, k, 1);
            foreach (var precision in new[] { Precision.F32, Precision.BF16Weights })
            {
                using var pw = new PackedWeight(w, n, k, precision);
                using var pz = new PackedWeight(Zeroed(w), n, k, precision);
                float[] y = new float[m * n], yz = new float[m * n];
                Gemm.Linear(x, m, pw, y, new float[pw.ScratchSize(m)]);
                Gemm.Linear(Zeroed(x), m, pz, yz, new float[pz.ScratchSize(m)]);
                Bits.AssertSame(yz, y, $"{isa} {precision} Linear {m}x{k}->{n}: denormal operands against zeroed");
                if (precision != Precision.F32) continue;
                var (c, s) = Reference.Gemm(m, n, k, x, k, w, 1, k);
                for (int i = 0; i < c.Length; i++)
                    Assert.True(Math.Abs(y[i] - c[i]) <= 1.2 * (k + 2) * U * s[i] + 1e-30, $"{isa} Linear {m}x{k}->{n}: y[{i}] = {y[i]}, reference {c[i]}");
            }
        });
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void MatMul_ReadsDenormalsAsZero(int m, int n, int k)
    {
        IsaPaths.ForEach(isa =>
        {
            // the last row of A all denormal, and B's column 0 as read either way (elements k·n… and 0…k)
            float[] a = DenormalRun(WithDenormals(m * k, 7 * m + k), (m - 1) * k, k, 1);
            float[] b = DenormalRun(DenormalRun(WithDenormals(k * n, 5 * n + k), 0, k, n), 0, k, 1);
            foreach (bool transposeB in new[] { false, true })
            {
                int ldb = transposeB ? k : n;
                float[] c = new float[m * n], cz = new float[m * n];
                var scratch = new float[Gemm.MatMulScratchSize(m, n, k)];
                Gemm.MatMul(m, n, k, a, k, b, ldb, transposeB, c, n, scratch);
                Gemm.MatMul(m, n, k, Zeroed(a), k, Zeroed(b), ldb, transposeB, cz, n, scratch);
                Bits.AssertSame(cz, c, $"{isa} MatMul {m}x{k}x{n} transposeB={transposeB}: denormal operands against zeroed");
            }
        });
    }

    /// <summary>Queries, keys and values with denormals; also queries that the scale 1/√d makes denormal (2⁻¹²⁶ ≤ |q| &lt; 2⁻¹²⁶·√d).</summary>
    [Theory]
    [InlineData(1, 1, 16)]
    [InlineData(7, 63, 7)]
    [InlineData(33, 65, 64)]
    [InlineData(130, 130, 80)]
    public void Attention_ReadsDenormalsAsZero(int lq, int lk, int hd)
    {
        IsaPaths.ForEach(isa =>
        {
            const int heads = 2;
            int d = heads * hd;
            // value column 0 of head 1 all denormal
            float[] q = WithDenormals(lq * d, lq + hd), k = WithDenormals(lk * d, 3 * lk + hd), v = DenormalRun(WithDenormals(lk * d, 5 * lk + hd), hd, lk, d);
            for (int i = 0; i < q.Length; i += 5) q[i] = (i % 2 == 0 ? 1 : -1) * 1.5f * float.Pow(2, -126);
            var options = new AttentionOptions { Heads = heads, HeadDim = hd };
            // the scaled query is flushed after the scale as well, so the reference zeroes what the scale makes denormal
            float scale = 1f / MathF.Sqrt(hd);
            float[] qz = [.. q.Select(x => float.IsNormal(x) && float.IsNormal(x * scale) ? x : 0f)];
            var scratch = new float[Attention.ScratchSize(options, lk)];
            float[] y = new float[lq * d], yz = new float[lq * d];
            Attention.Forward(q, lq, k, v, lk, y, scratch, options);
            Attention.Forward(qz, lq, Zeroed(k), Zeroed(v), lk, yz, scratch, options);
            Bits.AssertSame(yz, y, $"{isa} attention {lq}x{lk}x{hd}: denormal operands against zeroed");
        });
    }

    /// <summary>
    /// An encoder layer (pre- and post-norm) whose projection weights and input hold denormals gives the bits it gives with
    /// them 0: the GEMM packs them as zeros, and its attention is then fed nothing denormal (the layers do not ask it to
    /// check). The input row 0 is all denormal.
    /// </summary>
    [Theory]
    [InlineData(1, false)]
    [InlineData(13, true)]
    [InlineData(40, false)]
    public void EncoderLayer_ReadsDenormalsAsZero(int tokens, bool normFirst)
    {
        IsaPaths.ForEach(isa =>
        {
            const int d = 48, heads = 3, ff = 80;
            EncoderLayerWeights Weights(Func<float[], float[]> f) => new(
                f(WithDenormals(3 * d * d, 1, 0.15f)), Reference.Random(3 * d, 2, 0.1f), f(WithDenormals(d * d, 3, 0.15f)), Reference.Random(d, 4, 0.1f),
                f(WithDenormals(ff * d, 5, 0.15f)), Reference.Random(ff, 6, 0.1f), f(WithDenormals(d * ff, 7, 0.1f)), Reference.Random(d, 8, 0.1f),
                Reference.Random(d, 9), Reference.Random(d, 10, 0.1f), Reference.Random(d, 11), Reference.Random(d, 12, 0.1f));
            using var withDenormals = FastAttn.Layers.TransformerEncoder.FromWeights(d, heads, ff, [Weights(w => w)], Activation.Gelu, normFirst);
            using var zeroed = FastAttn.Layers.TransformerEncoder.FromWeights(d, heads, ff, [Weights(Zeroed)], Activation.Gelu, normFirst);
            float[] x = DenormalRun(WithDenormals(tokens * d, 13 + tokens), 0, d, 1);
            float[] y = new float[tokens * d], yz = new float[tokens * d];
            using (var s = withDenormals.CreateSession(tokens)) s.Run(x, y);
            using (var s = zeroed.CreateSession(tokens)) s.Run(Zeroed(x), yz);
            Bits.AssertSame(yz, y, $"{isa} encoder layer, {tokens} tokens, normFirst={normFirst}: denormal operands against zeroed");
        });
    }
}
