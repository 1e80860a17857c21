using FastAttn.Kernels;
using FastAttn.Threading;

namespace FastAttn.Tests.Kernels;

/// <summary>
/// A sequence's last query tile computes the scores of its last 1–8 queries past whole vectors (1–3 on AVX2; none on
/// Vector128 and the scalar path, whose key blocks are wider than a vector; at most one per 8 of the head width) over keys:
/// packed K's blocks as the vector operand, each query broadcast (<see cref="Attention.NoTailScores"/> turns it off). Each
/// score is the same chain of multiply-adds in the same order as the microkernel's, so every output, and the materialised
/// weights, must carry the bits of the vector-of-queries form — with 1 to 8 (and 9, past the rule) tail queries after none or one whole vector,
/// over partial key blocks, several key tiles and the block pairs and quads, under every mask and normaliser, grouped
/// heads, packed and cross sequences, key padding, on one thread and two — and match the reference.
/// </summary>
public class AttentionTailScoreTests
{
    private static float[] RunBoth(AttentionCase a, WorkerPool? pool, out float[] vectors, float[]? w1 = null, float[]? w2 = null)
    {
        float[] tail = Run(a, pool, w1);
        Attention.NoTailScores = true;
        try { vectors = Run(a, pool, w2); }
        finally { Attention.NoTailScores = false; }
        return tail;
    }

    private static float[] Run(AttentionCase a, WorkerPool? pool, float[]? weights)
    {
        var o = a.Options();
        if (weights != null) o.WeightsOut = weights;
        float[] outp = new float[a.TotalQ * a.Heads * a.Dv];
        Array.Fill(outp, float.NaN);
        float[] scratch = new float[Attention.ScratchSize(o, a.TotalK)];
        Attention.Forward(a.Q, a.TotalQ, a.K, a.V, a.TotalK, outp, scratch, o, pool);
        return outp;
    }

    [Theory]
    [InlineData(7)]
    [InlineData(16)]
    [InlineData(64)]
    [InlineData(112)]
    public void TailScores_GiveTheVectorBits(int d)
    {
        using var pool = new WorkerPool(2);
        IsaPaths.ForEach(() =>
        {
            // queries: last tiles of 1–9 rows after no whole vector, and 17–25, 33–41 (one vector of 16 plus 1–9 on AVX-512;
            // on AVX2 8-query vectors); keys: 24 (the rule's least), 25, 100 (a pair and a partial block), 700 (several key tiles)
            foreach (var (q, k) in new[] { (1, 24), (2, 25), (3, 100), (4, 700), (5, 31), (6, 100), (7, 60), (8, 130), (9, 100), (4, 23),
                                          (17, 17), (18, 40), (21, 21), (24, 24), (25, 25), (33, 33), (37, 37), (41, 41), (100, 100), (130, 130), (257, 257) })
                foreach (var (causal, window, norm, kvHeads) in new[]
                {
                    (CausalMode.None, 0, Normalizer.Softmax, 1),
                    (CausalMode.TopLeft, 0, Normalizer.Softmax, 3),
                    (CausalMode.BottomRight, 0, Normalizer.Relu, 1),
                    (CausalMode.None, 6, Normalizer.Sigmoid, 3),
                })
                {
                    if (window > 0 && q != k) continue;
                    var a = new AttentionCase { Heads = 3, KvHeads = kvHeads, D = d, Dv = 24, QLens = [q], KLens = [k], Causal = causal, Window = window, Norm = norm };
                    a.Fill(q * 31 + k + d, 2f);
                    foreach (var pl in new[] { null, pool })
                    {
                        float[] tail = RunBoth(a, pl, out float[] vectors);
                        Bits.AssertSame(vectors, tail, $"d {d}, {q} queries × {k} keys, {causal}, window {window}, {norm}, {kvHeads} kv heads{(pl == null ? "" : ", 2 threads")}");
                    }
                }
        });
    }

    [Fact]
    public void TailScores_WithMasksAndWeights_GiveTheVectorBits()
    {
        IsaPaths.ForEach(() =>
        {
            foreach (var (q, k) in new[] { (3, 50), (20, 90), (36, 36), (100, 100) })
                for (int variant = 0; variant < 6; variant++)
                {
                    var a = new AttentionCase { Heads = 2, KvHeads = 1, D = 32, Dv = 16, QLens = [q], KLens = [k] };
                    var rnd = new Random(q * 7 + variant);
                    switch (variant)
                    {
                        case 0:
                            a.BoolMask = new bool[q * k];
                            for (int i = 0; i < a.BoolMask.Length; i++) a.BoolMask[i] = rnd.NextDouble() < 0.8;
                            break;
                        case 1:
                            a.FloatMask = new float[q * k];
                            for (int i = 0; i < a.FloatMask.Length; i++) a.FloatMask[i] = rnd.NextDouble() < 0.1 ? float.NegativeInfinity : (float)(rnd.NextDouble() * 4 - 2);
                            break;
                        case 2: a.Slopes = [0.25f, 0.0625f]; break;
                        case 3: a.SoftCap = 7f; a.Scale = 0.3f; break;
                        case 4: a.Valid = [k / 2]; break;
                        default: a.RelSpan = Math.Max(q, k); a.RelBias = Reference.Random(2 * (2 * a.RelSpan - 1), 9 + q); break;
                    }
                    a.Fill(q + variant, 3f);
                    float[] w1 = new float[a.Heads * q * k], w2 = new float[w1.Length];
                    float[] tail = RunBoth(a, null, out float[] vectors, w1, w2);
                    Bits.AssertSame(vectors, tail, $"{q} × {k}, variant {variant}");
                    Bits.AssertSame(w2, w1, $"{q} × {k}, variant {variant}, weights");
                }
        });
    }

    [Fact]
    public void TailScores_PackedSequencesAndNonFiniteValues_GiveTheVectorBits()
    {
        IsaPaths.ForEach(() =>
        {
            var a = new AttentionCase { Heads = 4, KvHeads = 2, D = 40, Dv = 40, QLens = [35, 3, 66, 19], KLens = [35, 80, 66, 19], Packed = true, Causal = CausalMode.BottomRight };
            a.Fill(77);
            a.V[5 * 2 * 40 + 3] = float.NaN;
            a.V[(35 + 60) * 2 * 40 + 40 + 7] = float.PositiveInfinity;
            float[] tail = RunBoth(a, null, out float[] vectors);
            Bits.AssertSame(vectors, tail, "packed sequences with non-finite values");
        });
    }

    [Theory]
    [InlineData(16)]
    [InlineData(72)]
    public void TailScores_MatchTheReference(int d)
    {
        IsaPaths.ForEach(() =>
        {
            foreach (var (q, k, causal) in new[] { (1, 63), (5, 65), (8, 130), (19, 19), (35, 35), (65, 65), (100, 100) }.Select((x, i) => (x.Item1, x.Item2, i % 2 == 0 ? CausalMode.None : CausalMode.BottomRight)))
            {
                var a = new AttentionCase { Heads = 2, KvHeads = 2, D = d, Dv = d, QLens = [q], KLens = [k], Causal = causal };
                a.Fill(q + 3 * k + d);
                AttentionTests.AssertMatches(a, a.Run(), $"d {d}, {q} × {k}, {causal}");
            }
        });
    }
}
