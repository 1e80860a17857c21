using FastAttn.Kernels;

namespace FastAttn.Tests.Kernels;

/// <summary>
/// P·V runs the last full value panel and a half one as one panel three vectors wide when the value width ends in a half
/// panel (48, 80 or 112 on AVX-512; 33 and 65 on every path, 41 on all but Vector256). Each output is the same chain of multiply-adds either way,
/// so the bits must equal those of the separate panels (with non-finite values too: their rows are cleared in the packed
/// copy by panel width).
/// </summary>
public class AttentionValuePanelTests
{
    [Theory]
    [InlineData(33)]
    [InlineData(41)]
    [InlineData(48)]
    [InlineData(65)]
    [InlineData(80)]
    [InlineData(112)]
    public void ThreeVectorPanel_GivesTheBitsOfSeparatePanels(int dv)
    {
        IsaPaths.ForEach(() =>
        {
            const int heads = 2, d = 24;
            foreach (int t in new[] { 1, 7, 130 })
                foreach (var causal in new[] { CausalMode.None, CausalMode.TopLeft })
                    foreach (bool nonFinite in new[] { false, true })
                    {
                        var q = Reference.Random(t * heads * d, 1);
                        var k = Reference.Random(t * heads * d, 2);
                        var v = Reference.Random(t * heads * dv, 3);
                        if (nonFinite)
                        {
                            v[(t / 2) * heads * dv + dv - 1] = float.NaN;             // head 0, the last column (in the wide panel)
                            v[(t - 1) * heads * dv + dv + 2] = float.PositiveInfinity; // head 1, column 2
                        }
                        var o = new AttentionOptions { Heads = heads, HeadDim = d, ValueHeadDim = dv, Causal = causal };
                        var scratch = new float[Attention.ScratchSize(o, t)];
                        var wide = new float[t * heads * dv];
                        var separate = new float[t * heads * dv];
                        Attention.Forward(q, t, k, v, t, wide, scratch, o);
                        Attention.NoTripleV = true;
                        try { Attention.Forward(q, t, k, v, t, separate, scratch, o); }
                        finally { Attention.NoTripleV = false; }
                        Bits.AssertSame(separate, wide, $"dv {dv}, {t} tokens, {causal}, non-finite {nonFinite}");
                    }
        });
    }

    /// <summary>
    /// Keys over several key tiles (1,700: more than one tile on every path), so the wide panel's tile also adds into the
    /// output tile (after the running maximum moved: larger logits) instead of only storing into it.
    /// </summary>
    [Theory]
    [InlineData(33)]
    [InlineData(48)]
    public void ThreeVectorPanel_ManyKeyTiles(int dv)
    {
        IsaPaths.ForEach(() =>
        {
            var a = new AttentionCase { Heads = 2, KvHeads = 2, D = 16, Dv = dv, QLens = [19], KLens = [1700] };
            a.Fill(31, 2f);
            float[] wide = a.Run();
            AttentionTests.AssertMatches(a, wide, $"dv {dv}, 19 queries × 1700 keys");
            float[] separate;
            Attention.NoTripleV = true;
            try { separate = a.Run(); }
            finally { Attention.NoTripleV = false; }
            Bits.AssertSame(separate, wide, $"dv {dv}");
        });
    }

    [Theory]
    [InlineData(48)]
    [InlineData(80)]
    [InlineData(33)]
    public void ThreeVectorPanel_MatchesTheReference(int dv)
    {
        IsaPaths.ForEach(() =>
        {
            foreach (int t in new[] { 1, 7, 63, 130 })
            {
                var a = new AttentionCase { Heads = 3, KvHeads = 3, D = 16, Dv = dv, QLens = [t], KLens = [t], Causal = t % 2 == 0 ? CausalMode.None : CausalMode.TopLeft };
                a.Fill(t);
                AttentionTests.AssertMatches(a, a.Run(), $"dv {dv}, {t} tokens");
            }
        });
    }
}
