using FastAttn.Kernels;

namespace FastAttn.Tests.Kernels;

public class AttentionTests
{
    public enum Config { Self, Cross, Gqa, Packed }
    public enum MaskKind { None, CausalTopLeft, CausalBottomRight, KeyPadding, Bool, Float }

    // (tokens, headDim) pairs: every listed token count and every listed head width appears.
    private static readonly (int T, int D)[] Shapes =
        [(1, 8), (2, 1), (7, 63), (31, 64), (64, 80), (65, 128), (200, 64), (7, 1), (31, 8), (64, 63), (2, 80), (1, 128), (200, 8)];

    public static TheoryData<ScoreKind, Normalizer, Config> Grid()
    {
        var data = new TheoryData<ScoreKind, Normalizer, Config>();
        foreach (var s in Enum.GetValues<ScoreKind>())
            foreach (var n in Enum.GetValues<Normalizer>())
                foreach (var c in Enum.GetValues<Config>())
                    data.Add(s, n, c);
        return data;
    }

    internal static AttentionCase Make(Config c, int t, int d, ScoreKind s, Normalizer n, MaskKind m, int seed, int[]? keyLens = null)
    {
        var a = new AttentionCase { D = d, Dv = d, Score = s, Norm = n };
        switch (c)
        {
            case Config.Self: a.QLens = [t]; a.KLens = [t]; break;
            case Config.Cross: a.QLens = [t]; a.KLens = [t * 3 / 2 + 1]; a.Dv = d / 2 + 1; break;
            case Config.Gqa: a.Heads = 4; a.KvHeads = 2; a.QLens = [t]; a.KLens = [t]; break;
            case Config.Packed: a.QLens = [t, t / 2 + 1, 3]; a.KLens = (int[])a.QLens.Clone(); a.Packed = true; break;
        }
        if (keyLens != null) a.KLens = keyLens;
        var rnd = new Random(seed);
        switch (m)
        {
            case MaskKind.CausalTopLeft: a.Causal = CausalMode.TopLeft; break;
            case MaskKind.CausalBottomRight: a.Causal = CausalMode.BottomRight; break;
            case MaskKind.KeyPadding: a.Valid = a.KLens.Select(l => l - l / 3).ToArray(); break;
            case MaskKind.Bool:
                a.BoolMask = new bool[a.TotalQ * a.TotalK];
                for (int i = 0; i < a.BoolMask.Length; i++) a.BoolMask[i] = rnd.NextDouble() < 0.7;
                for (int j = 0; j < a.TotalK; j++) a.BoolMask[j] = false; // query row 0 fully masked
                break;
            case MaskKind.Float:
                a.FloatMask = new float[a.TotalQ * a.TotalK];
                for (int i = 0; i < a.FloatMask.Length; i++)
                    a.FloatMask[i] = rnd.NextDouble() < 0.2 ? float.NegativeInfinity : (float)(rnd.NextDouble() * 4 - 2);
                break;
        }
        if (c == Config.Packed && m == MaskKind.KeyPadding) a.Valid![1] = 0; // a sequence with no visible key
        a.Fill(seed);
        return a;
    }

    internal static void AssertMatches(AttentionCase a, float[] got, string what)
    {
        var (r, _, tol) = a.Expected();
        for (int i = 0; i < r.Length; i++)
            if (!(Math.Abs(got[i] - r[i]) <= tol[i]))
                Assert.Fail($"{what}: out[{i}] = {got[i]}, expected {r[i]} (tol {tol[i]:E2})");
    }

    [Theory]
    [MemberData(nameof(Grid))]
    public void MatchesReference_EveryMask_AwkwardSizes(ScoreKind score, Normalizer norm, Config config)
    {
        IsaPaths.ForEach(() =>
        {
            int seed = 1;
            foreach (var m in Enum.GetValues<MaskKind>())
                foreach (var (t, d) in Shapes)
                {
                    if (score == ScoreKind.Additive && t * d > 200 * 64 / 2 && m != MaskKind.None) continue; // keep the slow reference bounded
                    var a = Make(config, t, d, score, norm, m, seed++);
                    AssertMatches(a, a.Run(), $"{score}/{norm}/{config}/{m} T={t} d={d}");
                }
        });
    }

    [Theory]
    [InlineData(Normalizer.Softmax)]
    [InlineData(Normalizer.Relu)]
    [InlineData(Normalizer.Sigmoid)]
    public void WeightsOut_MatchReference_AndSoftmaxRowsSumToOne(Normalizer norm)
    {
        IsaPaths.ForEach(() =>
        {
            foreach (var c in Enum.GetValues<Config>())
                foreach (var m in new[] { MaskKind.None, MaskKind.CausalTopLeft, MaskKind.KeyPadding, MaskKind.Bool })
                {
                    var a = Make(c, 65, 16, ScoreKind.Dot, norm, m, 7);
                    float[] w = new float[a.Heads * a.TotalQ * a.TotalK];
                    float[] got = a.Run(w);
                    AssertMatches(a, got, $"{c}/{m} with weights");
                    var (_, alpha, _) = a.Expected();
                    for (int i = 0; i < w.Length; i++) Assert.True(Math.Abs(w[i] - alpha[i]) <= 2e-6, $"alpha[{i}] = {w[i]} vs {alpha[i]}");
                    if (norm == Normalizer.Softmax)
                        for (int h = 0; h < a.Heads; h++)
                            for (int i = 0; i < a.TotalQ; i++)
                            {
                                double sum = 0;
                                for (int j = 0; j < a.TotalK; j++) sum += w[((long)h * a.TotalQ + i) * a.TotalK + j];
                                bool anyVisible = alpha.Skip((h * a.TotalQ + i) * a.TotalK).Take(a.TotalK).Any(x => x > 0);
                                Assert.True(anyVisible ? Math.Abs(sum - 1) < 1e-5 : sum == 0, $"row sum {sum}");
                            }
                }
        });
    }

    [Theory]
    [InlineData(Normalizer.Softmax)]
    [InlineData(Normalizer.Relu)]
    [InlineData(Normalizer.Sigmoid)]
    public void DistanceSlopes_MatchReference(Normalizer norm)
    {
        IsaPaths.ForEach(() =>
        {
            int seed = 11;
            foreach (var c in Enum.GetValues<Config>())
                foreach (var m in new[] { MaskKind.None, MaskKind.CausalTopLeft, MaskKind.KeyPadding, MaskKind.Float })
                    foreach (var (t, d) in new[] { (1, 8), (7, 63), (20, 24), (65, 16), (130, 8) })
                    {
                        var a = Make(c, t, d, ScoreKind.Dot, norm, m, seed++);
                        // one strong, one mild, one zero (global) and one negative slope, cycled over the heads
                        float[] pool = [1f, 0.0625f, 0f, -0.01f];
                        a.Slopes = Enumerable.Range(0, a.Heads).Select(h => pool[h % pool.Length]).ToArray();
                        AssertMatches(a, a.Run(), $"slopes {c}/{m}/{norm} T={t} d={d}");
                    }
        });
    }

    [Theory]
    [InlineData(Normalizer.Softmax)]
    [InlineData(Normalizer.Sigmoid)]
    public void RelativeBias_MatchesReference(Normalizer norm)
    {
        IsaPaths.ForEach(() =>
        {
            int seed = 31;
            foreach (var c in Enum.GetValues<Config>())
                foreach (var m in new[] { MaskKind.None, MaskKind.CausalTopLeft, MaskKind.KeyPadding, MaskKind.Float })
                    foreach (var (t, d) in new[] { (1, 8), (7, 63), (20, 24), (65, 16), (130, 8) })
                    {
                        var a = Make(c, t, d, ScoreKind.Dot, norm, m, seed++);
                        // the span exactly the longest sequence (the table's ends are read), or longer; a bias that differs for
                        // every distance and head, so a wrong sign or offset of (j − i) shows
                        int longest = Math.Max(a.QLens.Max(), a.KLens.Max());
                        a.RelSpan = seed % 2 == 0 ? longest : longest + 37;
                        a.RelBias = Reference.Random(a.Heads * (2 * a.RelSpan - 1), seed + 100, 2f);
                        AssertMatches(a, a.Run(), $"relative bias {c}/{m}/{norm} T={t} d={d} span={a.RelSpan}");
                    }
        });
    }

    /// <summary>
    /// Sliding windows of 1 to past the sequence, on every path, configuration (cross-attention: positions i and j counted
    /// from each sequence's start), mask and normaliser: keys before and after the window skipped or masked at every
    /// offset of a query tile (windows below, at and above the tile's width, starts that are not on a key block).
    /// </summary>
    [Theory]
    [InlineData(Normalizer.Softmax)]
    [InlineData(Normalizer.Relu)]
    [InlineData(Normalizer.Sigmoid)]
    public void Window_MatchesReference(Normalizer norm)
    {
        int[] windows = [1, 3, 16, 33, 64, 1000];
        IsaPaths.ForEach(() =>
        {
            int seed = 51;
            foreach (var c in Enum.GetValues<Config>())
                foreach (var m in new[] { MaskKind.None, MaskKind.CausalTopLeft, MaskKind.CausalBottomRight, MaskKind.KeyPadding, MaskKind.Float })
                    foreach (var (t, d) in new[] { (1, 8), (7, 63), (20, 24), (65, 16), (150, 8) })
                    {
                        var a = Make(c, t, d, ScoreKind.Dot, norm, m, seed++);
                        a.Window = windows[seed % windows.Length];
                        AssertMatches(a, a.Run(), $"window {a.Window} {c}/{m}/{norm} T={t} d={d}");
                    }
        });
    }

    /// <summary>A window across several key tiles (AVX-512: 768 keys per tile) with additive scores and α written out.</summary>
    [Fact]
    public void Window_LongSequence_WeightsAndAdditive()
    {
        IsaPaths.ForEach(() =>
        {
            foreach (var (score, window) in new[] { (ScoreKind.Dot, 200), (ScoreKind.Additive, 5), (ScoreKind.Dot, 900) })
            {
                var a = Make(Config.Self, 1700, 8, score, Normalizer.Softmax, MaskKind.None, 7);
                a.Heads = 1; a.KvHeads = 1; a.Window = window; a.Fill(7);
                var w = new float[a.TotalQ * a.TotalK];
                AssertMatches(a, a.Run(w), $"long window {window} {score}");
                var (_, alpha, _) = a.Expected();
                for (int i = 0; i < w.Length; i += 97)
                    Assert.True(Math.Abs(w[i] - alpha[i]) <= 1e-5 + 1e-4 * alpha[i], $"α[{i}] = {w[i]}, expected {alpha[i]}");
                for (int i = 0; i < a.TotalQ; i += 13)
                    for (int j = 0; j < a.TotalK; j++)
                        if (Math.Abs(i - j) > window) Assert.Equal(0f, w[i * a.TotalK + j]);
            }
        });
    }

    [Fact]
    public void Window_Negative_Throws()
    {
        var a = Make(Config.Self, 7, 8, ScoreKind.Dot, Normalizer.Softmax, MaskKind.None, 1);
        a.Window = -1;
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => a.Run());
        Assert.Contains("Window", ex.Message);
    }

    [Fact]
    public void RelativeBias_Validated()
    {
        var a = Make(Config.Self, 7, 8, ScoreKind.Dot, Normalizer.Softmax, MaskKind.None, 1);
        var outp = new float[a.TotalQ * a.Heads * a.Dv];
        var scratch = new float[Attention.ScratchSize(a.Options(), a.TotalK)];
        void Fails(float[] bias, int span)
        {
            a.RelBias = bias; a.RelSpan = span;
            Assert.ThrowsAny<ArgumentException>(() => { var o = a.Options(); Attention.Forward(a.Q, a.TotalQ, a.K, a.V, a.TotalK, outp, scratch, o); });
        }
        int longest = Math.Max(a.QLens.Max(), a.KLens.Max());
        Fails(new float[a.Heads * (2 * longest - 1) - 1], longest);                 // one short
        Fails(new float[a.Heads * (2 * (longest - 1) - 1)], longest - 1);          // a sequence longer than the span
        Fails(new float[a.Heads], 0);                                               // no span
        var nan = new float[a.Heads * (2 * longest - 1)];
        nan[3] = float.NaN;
        Fails(nan, longest);
        Assert.All(outp, x => Assert.Equal(0f, x));
    }

    [Fact]
    public void DistanceSlopes_Validated()
    {
        var a = Make(Config.Self, 7, 8, ScoreKind.Dot, Normalizer.Softmax, MaskKind.None, 1);
        var outp = new float[a.TotalQ * a.Heads * a.Dv];
        var scratch = new float[Attention.ScratchSize(a.Options(), a.TotalK)];
        a.Slopes = [1f];
        Assert.Throws<ArgumentException>(() => { var o = a.Options(); Attention.Forward(a.Q, a.TotalQ, a.K, a.V, a.TotalK, outp, scratch, o); });
        a.Slopes = [1f, float.NaN];
        Assert.Throws<ArgumentException>(() => { var o = a.Options(); Attention.Forward(a.Q, a.TotalQ, a.K, a.V, a.TotalK, outp, scratch, o); });
        Assert.All(outp, x => Assert.Equal(0f, x));
    }

    [Fact]
    public void ScaleSoftCapAndSigmoidBias_Options()
    {
        IsaPaths.ForEach(() =>
        {
            foreach (var (scale, cap, bias) in new (float?, float, float?)[] { (1f, 0, null), (0.3f, 5f, -1f), (null, 2f, 0.5f) })
                foreach (var norm in Enum.GetValues<Normalizer>())
                    foreach (var score in Enum.GetValues<ScoreKind>())
                    {
                        var a = Make(Config.Self, 33, 24, score, norm, MaskKind.None, 3);
                        a.Scale = scale; a.SoftCap = cap; a.SigmoidBias = bias;
                        a.Fill(5, 3f);
                        AssertMatches(a, a.Run(), $"scale={scale} cap={cap} bias={bias} {norm} {score}");
                    }
        });
    }

    [Fact]
    public void MultiQuery_OneKvHead()
    {
        IsaPaths.ForEach(() =>
        {
            var a = Make(Config.Self, 31, 16, ScoreKind.Dot, Normalizer.Softmax, MaskKind.CausalTopLeft, 9);
            a.Heads = 6; a.KvHeads = 1; a.Fill(9);
            AssertMatches(a, a.Run(), "MQA");
        });
    }

    [Fact]
    public void LongSequence_SpansManyKeyTiles()
    {
        IsaPaths.ForEach(() =>
        {
            foreach (var m in new[] { MaskKind.None, MaskKind.CausalBottomRight })
            {
                var a = Make(Config.Cross, 700, 32, ScoreKind.Dot, Normalizer.Softmax, m, 11);
                a.Heads = 1; a.KvHeads = 1; a.Fill(11, 2f);
                AssertMatches(a, a.Run(), $"long {m}");
            }
        });
    }

    /// <summary>
    /// A few queries against keys spanning three key tiles on every path (AVX-512: 768 keys per tile), with every
    /// mask and normaliser, dot and additive scores: the running max and its rescales, masks and causal cuts across tiles.
    /// </summary>
    [Fact]
    public void FewQueries_ManyKeyTiles_EveryMaskAndNormalizer()
    {
        IsaPaths.ForEach(() =>
        {
            foreach (var s in new[] { ScoreKind.Dot, ScoreKind.Additive })
                foreach (var n in Enum.GetValues<Normalizer>())
                    foreach (var m in Enum.GetValues<MaskKind>())
                    {
                        var a = Make(Config.Cross, 19, 12, s, n, m, 31, keyLens: [1700]);
                        a.Fill(31, 2f); // larger logits: the running max moves between tiles
                        AssertMatches(a, a.Run(), $"{s} {n} {m}");
                    }
        });
    }

    [Fact]
    public void HugeLogits_AreFiniteAndCorrect()
    {
        IsaPaths.ForEach(() =>
        {
            foreach (float big in new[] { 1e4f, -1e4f })
            {
                var a = Make(Config.Self, 65, 4, ScoreKind.Dot, Normalizer.Softmax, MaskKind.None, 13);
                a.Scale = 1f;
                a.Fill(13);
                // q·k = ±1e4-scale logits: q = big·e0, k rows ∈ {±1, …}
                for (int i = 0; i < a.Q.Length; i++) a.Q[i] = i % a.D == 0 ? big : 0f;
                float[] got = a.Run();
                Assert.All(got, x => Assert.True(float.IsFinite(x)));
                AssertMatches(a, got, $"logits {big}");
            }
        });
    }

    [Theory]
    [InlineData(0.05f)]  // tanh nearly linear
    [InlineData(19.9f)]  // fast form e^{2q}·e^{2k} at the edge of its range (|q|, |k| ≤ 20)
    [InlineData(25f)]    // mixed: most values in range, some beyond
    [InlineData(60f)]    // beyond it: tanh evaluated directly
    public void Additive_AnyMagnitude_MatchesReference(float magnitude)
    {
        IsaPaths.ForEach(() =>
        {
            foreach (var (t, d) in new[] { (7, 8), (65, 64), (200, 63) })
            {
                var a = Make(Config.Self, t, d, ScoreKind.Additive, Normalizer.Softmax, MaskKind.None, 23);
                a.Fill(23, magnitude);
                AssertMatches(a, a.Run(), $"additive |x| ≤ {magnitude} T={t} d={d}");
            }
        });
    }

    [Fact]
    public void FullyMaskedRows_GiveZeros_NotNaN()
    {
        IsaPaths.ForEach(() =>
        {
            foreach (var norm in Enum.GetValues<Normalizer>())
            {
                var a = Make(Config.Self, 7, 8, ScoreKind.Dot, norm, MaskKind.None, 17);
                a.BoolMask = new bool[49];
                for (int i = 1; i < 7; i++) for (int j = 0; j < 7; j++) a.BoolMask[i * 7 + j] = true; // row 0 sees nothing
                float[] got = a.Run();
                for (int c = 0; c < a.Heads * a.Dv; c++) Assert.Equal(0f, got[c]);
                // and causal bottom-right with more queries than keys: the first rows see nothing
                var b = Make(Config.Cross, 9, 8, ScoreKind.Dot, norm, MaskKind.CausalBottomRight, 19);
                b.KLens = [4]; b.Fill(19);
                float[] got2 = b.Run();
                Assert.All(got2, x => Assert.False(float.IsNaN(x)));
                for (int c = 0; c < b.Heads * b.Dv * 5; c++) Assert.Equal(0f, got2[c]);
                AssertMatches(b, got2, "BR 9q/4k");
            }
        });
    }

    [Fact]
    public void PermutationEquivariant_WithoutPositions()
    {
        var a = Make(Config.Self, 31, 16, ScoreKind.Dot, Normalizer.Softmax, MaskKind.None, 23);
        float[] y = a.Run();
        int[] perm = Enumerable.Range(0, 31).Reverse().ToArray();
        var p = Make(Config.Self, 31, 16, ScoreKind.Dot, Normalizer.Softmax, MaskKind.None, 23);
        int qw = a.Heads * a.D, vw = a.KvHeads * a.Dv, ow = a.Heads * a.Dv;
        for (int i = 0; i < 31; i++)
        {
            Array.Copy(a.Q, perm[i] * qw, p.Q, i * qw, qw);
            Array.Copy(a.K, perm[i] * qw, p.K, i * qw, qw);
            Array.Copy(a.V, perm[i] * vw, p.V, i * vw, vw);
        }
        float[] yp = p.Run();
        for (int i = 0; i < 31; i++)
            for (int c = 0; c < ow; c++)
                Assert.True(Math.Abs(yp[i * ow + c] - y[perm[i] * ow + c]) < 1e-5, "permuted output must be the permuted output");
    }

    [Fact]
    public void Causal_OutputDoesNotDependOnLaterTokens()
    {
        var a = Make(Config.Self, 65, 16, ScoreKind.Dot, Normalizer.Softmax, MaskKind.CausalTopLeft, 29);
        float[] y = a.Run();
        int cut = 40, qw = a.Heads * a.D, vw = a.KvHeads * a.Dv, ow = a.Heads * a.Dv;
        for (int i = cut + 1; i < 65; i++)
        {
            for (int c = 0; c < qw; c++) { a.Q[i * qw + c] += 3f; a.K[i * qw + c] -= 2f; }
            for (int c = 0; c < vw; c++) a.V[i * vw + c] *= -5f;
        }
        float[] y2 = a.Run();
        for (int t = 0; t < (cut + 1) * ow; t++) Assert.Equal(y[t], y2[t]);
    }

    [Fact]
    public void MaskedKeys_HaveNoEffect()
    {
        foreach (var norm in Enum.GetValues<Normalizer>())
        {
            var a = Make(Config.Self, 33, 8, ScoreKind.Dot, norm, MaskKind.KeyPadding, 31);
            float[] y = a.Run();
            int valid = a.Valid![0], kw = a.KvHeads * a.D;
            for (int j = valid; j < 33; j++) for (int c = 0; c < kw; c++) { a.K[j * kw + c] = 1e3f; a.V[j * kw + c] = float.NaN; }
            float[] y2 = a.Run();
            Assert.Equal(y, y2);
        }
    }

    [Fact]
    public void PackedBatch_EqualsEachSequenceAlone_BitForBit()
    {
        IsaPaths.ForEach(() =>
        {
            int[] lens = [5, 65, 1, 31];
            var packed = new AttentionCase { Heads = 2, KvHeads = 2, D = 16, Dv = 16, QLens = lens, KLens = lens, Packed = true, Causal = CausalMode.TopLeft };
            packed.Fill(37);
            float[] y = packed.Run();
            int q0 = 0, qw = 32;
            foreach (int l in lens)
            {
                var one = new AttentionCase { Heads = 2, KvHeads = 2, D = 16, Dv = 16, QLens = [l], KLens = [l], Causal = CausalMode.TopLeft };
                one.Q = packed.Q.Skip(q0 * qw).Take(l * qw).ToArray();
                one.K = packed.K.Skip(q0 * qw).Take(l * qw).ToArray();
                one.V = packed.V.Skip(q0 * qw).Take(l * qw).ToArray();
                float[] y1 = one.Run();
                for (int t = 0; t < l * qw; t++) Assert.Equal(y[q0 * qw + t], y1[t]);
                q0 += l;
            }
        });
    }

    [Fact]
    public void Scratch_IsLinearInSequenceLength()
    {
        long s16k = Attention.ScratchSize(64, 64, 16384) * sizeof(float);
        Assert.True(s16k < 64L << 20, $"scratch for 16,384 tokens is {s16k} bytes");
        Assert.True(s16k < 16384L * 16384 * 4 / 16, "far below one tokens×tokens matrix");
        long s8k = Attention.ScratchSize(64, 64, 8192);
        Assert.True(Attention.ScratchSize(64, 64, 16384) < 2.1 * s8k);
    }

    [Fact]
    public void SteadyState_AllocatesNothing()
    {
        foreach (var score in Enum.GetValues<ScoreKind>())
        {
            var a = Make(Config.Packed, 65, 16, score, Normalizer.Softmax, MaskKind.CausalTopLeft, 41);
            float[] outp = new float[a.TotalQ * a.Heads * a.Dv];
            float[] scratch = new float[Attention.ScratchSize(a.Options(), a.TotalK)];
            void Call()
            {
                var o = a.Options();
                Attention.Forward(a.Q, a.TotalQ, a.K, a.V, a.TotalK, outp, scratch, o);
            }
            Assert.Equal(0, Reference.SteadyStateAllocations(Call));
        }
    }

    [Fact]
    public void InvalidShapes_Throw_BeforeWriting()
    {
        var a = Make(Config.Self, 7, 8, ScoreKind.Dot, Normalizer.Softmax, MaskKind.None, 43);
        float[] outp = new float[7 * 16];
        Array.Fill(outp, 5f);
        float[] scratch = new float[Attention.ScratchSize(a.Options(), 7)];
        void Check<T>(string param, Func<AttentionOptions, AttentionOptions> tweak, int qt = 7, int kt = 7, int qCut = 0) where T : ArgumentException
        {
            var ex = Assert.Throws<T>(() =>
            {
                var o = tweak(a.Options());
                Attention.Forward(a.Q.AsSpan(qCut), qt, a.K, a.V, kt, outp, scratch, o);
            });
            Assert.Equal(param, ex.ParamName);
        }
        Check<ArgumentException>("q", o => o, qCut: 1);
        Check<ArgumentException>("k", o => o, kt: 8);
        Check<ArgumentOutOfRangeException>("options.Heads", o => { o.Heads = 0; return o; });
        Check<ArgumentException>("options.KvHeads", o => { o.KvHeads = 3; o.Heads = 2; return o; });
        Check<ArgumentException>("options.AdditiveWeights", o => { o.Score = ScoreKind.Additive; o.AdditiveWeights = new float[3]; return o; });
        Check<ArgumentException>("options.SequenceLengths", o => { o.SequenceLengths = new[] { 3, 3 }; return o; });
        Check<ArgumentException>("options.KeyValidLengths", o => { o.KeyValidLengths = new[] { 8 }; return o; });
        Check<ArgumentException>("options.BoolMask", o => { o.BoolMask = new bool[48]; return o; });
        Check<ArgumentException>("options.FloatMask", o => { o.FloatMask = new float[50]; return o; });
        Check<ArgumentException>("options.WeightsOut", o => { o.WeightsOut = new float[97]; return o; });
        Check<ArgumentOutOfRangeException>("options.QStride", o => { o.QStride = 15; return o; });
        Check<ArgumentOutOfRangeException>("options.SoftCap", o => { o.SoftCap = -1; return o; });
        var ex2 = Assert.Throws<ArgumentException>(() => Attention.Forward(a.Q, 7, a.K, a.V, 7, outp, scratch.AsSpan(0, 10), a.Options()));
        Assert.Equal("scratch", ex2.ParamName);
        var ex3 = Assert.Throws<ArgumentException>(() => Attention.Forward(a.Q, 7, a.K, a.V, 7, outp.AsSpan(1), scratch, a.Options()));
        Assert.Contains("[7, 2*8]", ex3.Message);
        Assert.All(outp, x => Assert.Equal(5f, x));
    }
}
