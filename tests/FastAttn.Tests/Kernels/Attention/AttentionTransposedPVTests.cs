using FastAttn.Kernels;

namespace FastAttn.Tests.Kernels;

/// <summary>
/// Values one vector wide (value head widths up to 16 on AVX-512, 8 on AVX2, 4 on Vector128, 1 on the scalar path) run
/// P·V transposed: Oᵀ = Vᵀ·P with the values broadcast and the score tile's rows as the vector operand. Each output is
/// the same chain of multiply-adds in the same order as in the row layout, so the bits must equal the row layout's
/// (forced with <see cref="Attention.NoTransposedPV"/>) — over several key tiles (the running maximum rescaling the
/// transposed output), one-vector query tiles, causal and windowed masks, grouped heads, ReLU and sigmoid normalisers,
/// non-finite values, packed sequences — and match the reference. Values wider than a vector whose width ends in part of
/// one (17, 24, 40, 72 on AVX-512) run transposed too from <see cref="Attention.WideTransposedPVKeys"/> keys: the same
/// bits again (130 and 700 tokens here; <see cref="Attention.NoWideTransposedPV"/> keeps them in the row layout).
/// </summary>
public class AttentionTransposedPVTests
{
    private static float[] RunBoth(AttentionCase a, out float[] rowLayout)
    {
        float[] transposed = a.Run();
        Attention.NoTransposedPV = true;
        try { rowLayout = a.Run(); }
        finally { Attention.NoTransposedPV = false; }
        return transposed;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(7)]
    [InlineData(8)]
    [InlineData(13)]
    [InlineData(15)]
    [InlineData(16)]
    [InlineData(17)] // more than one vector on every path, ending in part of one: transposed from 96 keys
    [InlineData(24)]
    [InlineData(32)] // whole vectors on every path: the row layout either way (a control)
    [InlineData(40)]
    [InlineData(72)]
    public void TransposedPV_GivesTheRowLayoutBits(int dv)
    {
        IsaPaths.ForEach(() =>
        {
            foreach (int t in new[] { 1, 7, 20, 130, 700 }) // 700 keys: several key tiles at head width 16 (192 keys a tile on AVX-512)
                foreach (var (causal, window, norm, kvHeads) in new[]
                {
                    (CausalMode.None, 0, Normalizer.Softmax, 4),
                    (CausalMode.TopLeft, 0, Normalizer.Softmax, 2),
                    (CausalMode.None, 5, Normalizer.Softmax, 1),
                    (CausalMode.BottomRight, 0, Normalizer.Relu, 4),
                    (CausalMode.None, 0, Normalizer.Sigmoid, 2),
                })
                {
                    var a = new AttentionCase { Heads = 4, KvHeads = kvHeads, D = 16, Dv = dv, QLens = [t], KLens = [t], Causal = causal, Window = window, Norm = norm };
                    a.Fill(t + dv, 3f); // larger logits: the running maximum moves between key tiles
                    float[] transposed = RunBoth(a, out float[] rowLayout);
                    Bits.AssertSame(rowLayout, transposed, $"dv {dv}, {t} tokens, {causal}, window {window}, {norm}, {kvHeads} kv heads");
                }
        });
    }

    [Theory]
    [InlineData(8)]
    [InlineData(16)]
    [InlineData(40)]
    public void TransposedPV_WithNonFiniteValues_GivesTheRowLayoutBits(int dv)
    {
        IsaPaths.ForEach(() =>
        {
            foreach (int t in new[] { 7, 130 })
                foreach (var causal in new[] { CausalMode.None, CausalMode.TopLeft })
                {
                    var a = new AttentionCase { Heads = 2, KvHeads = 2, D = 8, Dv = dv, QLens = [t], KLens = [t], Causal = causal };
                    a.Fill(5 + t);
                    a.V[(t / 2) * 2 * dv + dv - 1] = float.NaN;            // head 0, last column
                    a.V[(t - 1) * 2 * dv + dv + 1] = float.NegativeInfinity; // head 1, column 1 (masked for earlier queries when causal)
                    float[] transposed = RunBoth(a, out float[] rowLayout);
                    Bits.AssertSame(rowLayout, transposed, $"dv {dv}, {t} tokens, {causal}, non-finite values");
                }
        });
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(16)]
    [InlineData(40)]
    [InlineData(72)]
    public void TransposedPV_MatchesTheReference(int dv)
    {
        IsaPaths.ForEach(() =>
        {
            foreach (int t in new[] { 1, 7, 63, 65, 130 })
            {
                var a = new AttentionCase { Heads = 3, KvHeads = 3, D = 16, Dv = dv, QLens = [t, 5], KLens = [t, 9], Packed = true, Causal = t % 2 == 0 ? CausalMode.None : CausalMode.BottomRight };
                a.Fill(t + 100 * dv);
                AttentionTests.AssertMatches(a, a.Run(), $"dv {dv}, {t} tokens");
            }
        });
    }
}
