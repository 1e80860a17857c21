using FastAttn.Kernels;

namespace FastAttn.Tests.Kernels;

/// <summary>
/// Dot-product scores read the keys where they are (the score tile's broadcast operand in place, at the key stride)
/// instead of a packed copy when a head's query tiles are few and none is one vector of queries or less — not for
/// additive scores, key strides of a multiple of 2 KB, or calls that zero denormals when the keys hold one. Each score is the same chain of multiply-adds in the
/// same order either way, so the bits must equal the packed path's (forced with <see cref="Attention.NoInPlaceK"/>) —
/// on partial key blocks, one-vector query tiles after full ones, several key tiles, causal, windowed and padded masks,
/// grouped heads, packed sequences — and match the reference; a denormal key must count as 0 (as packed) on the checked entry.
/// </summary>
public class AttentionInPlaceKTests
{
    private static float[] RunBoth(AttentionCase a, out float[] packed)
    {
        float[] inPlace = a.Run();
        Attention.NoInPlaceK = true;
        try { packed = a.Run(); }
        finally { Attention.NoInPlaceK = false; }
        return inPlace;
    }

    [Theory]
    [InlineData(7)]
    [InlineData(16)]
    [InlineData(33)]
    [InlineData(64)]
    [InlineData(96)]
    public void InPlaceK_GivesThePackedBits(int d)
    {
        IsaPaths.ForEach(() =>
        {
            // in place where a head's query tiles are few (≤ 4, all heads of a group counted) and none is one vector or less
            // (two vectors of queries a tile: 32 on AVX-512, 16 on AVX2, 8 on Vector128, 2 scalar): 6, 8, 24, 32, 56, 64,
            // 120 and 128 queries on some paths; 13, 130 (a last tile of 2) and 700 (several key tiles too) packed
            foreach (int t in new[] { 6, 8, 13, 24, 32, 56, 64, 120, 128, 130, 700 })
                foreach (var (causal, window, kvHeads, packedSeq) in new[]
                {
                    (CausalMode.None, 0, 3, false),
                    (CausalMode.TopLeft, 0, 3, false),
                    (CausalMode.BottomRight, 0, 3, true),
                    (CausalMode.None, 9, 3, false),
                    (CausalMode.None, 0, 1, false),
                })
                {
                    var a = new AttentionCase
                    {
                        Heads = 3, KvHeads = kvHeads, D = d, Dv = 24, Causal = causal, Window = window, Packed = packedSeq,
                        QLens = packedSeq ? [t, 5] : [t], KLens = packedSeq ? [t, 11] : [t],
                        Valid = !packedSeq && t > 3 ? [t - 2] : null,
                    };
                    a.Fill(7 * t + d, 2f);
                    float[] inPlace = RunBoth(a, out float[] packed);
                    Bits.AssertSame(packed, inPlace, $"d {d}, {t} tokens, {causal}, window {window}, {kvHeads} kv heads, packed {packedSeq}");
                    if (t <= 130) AttentionTests.AssertMatches(a, inPlace, $"d {d}, {t} tokens, {causal}, window {window}, {kvHeads} kv heads");
                }
        });
    }

    // rows spanning ≥ 1 MB prefetch the next query tile and, in a group's last tile, the next key/value head: a cache hint
    // only — the bits must be those without it, for grouped heads (next head in the group, next group) and packed sequences
    [Fact]
    public void Prefetch_ChangesNoBits()
    {
        IsaPaths.ForEach(() =>
        {
            foreach (bool packedSeq in new[] { false, true })
            {
                var a = new AttentionCase
                {
                    Heads = 6, KvHeads = 3, D = 64, Dv = 48, Packed = packedSeq,
                    QLens = packedSeq ? [700, 37] : [700], KLens = packedSeq ? [700, 37] : [700], Causal = packedSeq ? CausalMode.TopLeft : CausalMode.None,
                };
                a.Fill(5, 2f);
                float[] on = a.Run();
                Attention.NoQPrefetch = true;
                float[] off;
                try { off = a.Run(); }
                finally { Attention.NoQPrefetch = false; }
                Bits.AssertSame(off, on, $"prefetch, packed {packedSeq}");
            }
        });
    }

    [Fact]
    public void InPlaceK_KeyStrideOf2KB_StillMatches()
    {
        // 8 key heads × 64 = 512 floats a key row: the packed path (a control for the stride rule)
        IsaPaths.ForEach(() =>
        {
            var a = new AttentionCase { Heads = 8, KvHeads = 8, D = 64, Dv = 64, QLens = [70], KLens = [70] };
            a.Fill(91);
            float[] inPlace = RunBoth(a, out float[] packed);
            Bits.AssertSame(packed, inPlace, "key stride 2 KB");
            AttentionTests.AssertMatches(a, inPlace, "key stride 2 KB");
        });
    }

    [Fact]
    public void DenormalKey_CountsAsZero_OnTheCheckedEntry()
    {
        // query column 5 is 1e38 and key column 5 is 0 but for one denormal (1e-38): read as it is, that key's score would
        // gain ~1e38·1e-38 = 1 (times the scale) — the checked entry packs denormals as 0, so the keys must be packed here
        IsaPaths.ForEach(() =>
        {
            const int t = 32, d = 16;                                       // one tile of 32 queries: in place on AVX-512
            var a = new AttentionCase { Heads = 1, KvHeads = 1, D = d, Dv = 16, QLens = [t], KLens = [t] };
            a.Fill(17);
            for (int i = 0; i < t; i++) { a.Q[i * d + 5] = 1e38f; a.K[i * d + 5] = 0f; }
            float[] zero = a.Run();
            a.K[11 * d + 5] = 1e-38f;
            Assert.True(float.IsSubnormal(a.K[11 * d + 5]));
            float[] denormal = a.Run();
            Bits.AssertSame(zero, denormal, "a denormal key as 0");
        });
    }
}
