using FastAttn.Kernels;

namespace FastAttn.Tests.Kernels;

/// <summary>
/// Softmax's column maxima come from the score kernels' registers (<c>StoreColMax</c>) where no pass changes the scores
/// of a key tile before softmax, and from a pass over the tile otherwise (masks, soft cap, relative bias, additive scores,
/// the tiles a window or a distance bias touch, one-vector and tail query tiles); in a tile a causal mask touches, the key
/// blocks every query sees fold theirs and the pass covers the rest after the mask. The maximum is exact, so
/// both must give the same bits (forced with <see cref="Attention.NoFusedMax"/>) — on partial key blocks, several key
/// tiles, keys in place and packed, grouped heads, packed sequences, scores large enough that the shift matters — and
/// match the reference. A NaN score makes its query's output NaN either way.
/// </summary>
public class AttentionFusedMaxTests
{
    private static float[] RunBoth(AttentionCase a, out float[] unfused)
    {
        float[] fused = a.Run();
        Attention.NoFusedMax = true;
        try { unfused = a.Run(); }
        finally { Attention.NoFusedMax = false; }
        return fused;
    }

    [Theory]
    [InlineData(7, 24)]
    [InlineData(16, 16)]
    [InlineData(32, 32)]
    [InlineData(48, 80)]
    [InlineData(64, 64)]
    [InlineData(96, 96)]
    [InlineData(128, 128)]
    public void FusedMaxima_GiveTheBitsOfThePass(int d, int dv)
    {
        IsaPaths.ForEach(() =>
        {
            // 1, 7, 63, 65, 130 queries and keys (tails, one-vector tiles, partial key blocks), 700 (several key tiles);
            // plain, causal (the blocks below each tile's first query fused), windowed, ALiBi on one head of two, grouped heads, packed
            // sequences with a key valid length
            foreach (int t in new[] { 1, 7, 63, 65, 130, 700 })
                foreach (var (causal, window, kvHeads, packedSeq, slopes) in new[]
                {
                    (CausalMode.None, 0, 2, false, false),
                    (CausalMode.TopLeft, 0, 2, false, false),
                    (CausalMode.BottomRight, 0, 1, true, false),
                    (CausalMode.None, 40, 2, false, false),
                    (CausalMode.None, 0, 2, false, true),
                })
                {
                    if (t == 700 && d > 64) continue; // several key tiles are covered by the narrower heads; keep the run short
                    var a = new AttentionCase
                    {
                        Heads = 4, KvHeads = kvHeads, D = d, Dv = dv, Causal = causal, Window = window, Packed = packedSeq,
                        QLens = packedSeq ? [t, 5] : [t], KLens = packedSeq ? [t, 11] : [t],
                        Valid = packedSeq ? [t, 9] : null,
                        Slopes = slopes ? [0.5f, 0f, 0.25f, 0f] : null,
                    };
                    // scores of tens: every column's maximum sets its shift (a wrong one overflows or loses the weights)
                    a.Fill(11 * t + d, 3f);
                    float[] fused = RunBoth(a, out float[] unfused);
                    string what = $"d {d}, dv {dv}, {t} tokens, {causal}, window {window}, {kvHeads} kv heads, packed {packedSeq}, slopes {slopes}";
                    Bits.AssertSame(unfused, fused, what);
                    if (t <= 130) AttentionTests.AssertMatches(a, fused, what);
                }
        });
    }

    [Fact]
    public void FusedMaxima_KeysInPlaceAndPacked_SameBits()
    {
        // 64 queries (two tiles on AVX-512: keys read in place there) and 200 (packed), each with and without in-place keys
        IsaPaths.ForEach(() =>
        {
            foreach (int t in new[] { 64, 200 })
            {
                var a = new AttentionCase { Heads = 3, KvHeads = 3, D = 40, Dv = 32, QLens = [t], KLens = [t] };
                a.Fill(t, 2f);
                float[] fused = RunBoth(a, out float[] unfused);
                Bits.AssertSame(unfused, fused, $"{t} tokens");
                Attention.NoInPlaceK = true;
                try
                {
                    float[] fusedPacked = RunBoth(a, out float[] unfusedPacked);
                    Bits.AssertSame(unfusedPacked, fusedPacked, $"{t} tokens, keys packed");
                    Bits.AssertSame(fused, fusedPacked, $"{t} tokens, in place against packed");
                }
                finally { Attention.NoInPlaceK = false; }
            }
        });
    }

    [Fact]
    public void NaNScore_MakesItsQueriesNaN_EitherWay()
    {
        IsaPaths.ForEach(() =>
        {
            const int t = 70, d = 32;
            var a = new AttentionCase { Heads = 2, KvHeads = 2, D = d, Dv = 32, QLens = [t], KLens = [t] };
            a.Fill(3);
            a.K[(40 * 2 + 1) * d + 3] = float.NaN; // key 40 of head 1: every query of head 1 sees a NaN score
            float[] fused = RunBoth(a, out float[] unfused);
            for (int i = 0; i < fused.Length; i++)
            {
                bool head1 = i / 32 % 2 == 1;
                Assert.Equal(float.IsNaN(unfused[i]), float.IsNaN(fused[i]));
                Assert.Equal(head1, float.IsNaN(fused[i]));
            }
        });
    }
}
