using FastAttn.Kernels;
using FastAttn.Threading;
using Xunit.Abstractions;

namespace FastAttn.Tests.Kernels;

/// <summary>
/// The attention kernel on combinations drawn at random (seeded) that the grid tests take one at a time: grouped heads, key
/// and value widths 1–139 that differ, packed, cross and single sequences (1–199 tokens), dot or additive scores, the three
/// normalisers, a given scale, soft caps, causal masks (both alignments), windows, key padding (a sequence may see no key),
/// distance slopes, boolean and float masks — on every ISA path, on the caller's thread and split over a two-thread pool,
/// each output against the reference's per-element error bound (<see cref="AttentionCase.Expected"/>).
/// </summary>
public class AttentionRandomTests(ITestOutputHelper output)
{
    [Fact]
    public void RandomCombinations_MatchReference()
    {
        var rnd = new Random(1203);
        using var pool = new WorkerPool(2);
        int cases = 0;
        for (int cfg = 0; cfg < 60; cfg++)
        {
            var a = new AttentionCase();
            a.KvHeads = rnd.Next(1, 4);
            a.Heads = a.KvHeads * rnd.Next(1, 4);
            a.D = rnd.Next(1, 140); a.Dv = rnd.Next(4) == 0 ? rnd.Next(1, 140) : a.D;
            a.Score = rnd.Next(6) == 0 ? ScoreKind.Additive : ScoreKind.Dot;
            int maxLen = a.Score == ScoreKind.Additive ? 25 : 200; // the additive reference evaluates a tanh per score and dimension
            int nSeq = rnd.Next(1, 4);
            bool cross = rnd.Next(3) == 0;
            a.QLens = Enumerable.Range(0, nSeq).Select(_ => rnd.Next(5) == 0 ? rnd.Next(1, 4) : rnd.Next(1, maxLen)).ToArray();
            a.KLens = cross ? a.QLens.Select(_ => rnd.Next(1, maxLen)).ToArray() : (int[])a.QLens.Clone();
            a.Packed = nSeq > 1 || rnd.Next(2) == 0;
            if (!a.Packed) { a.QLens = a.QLens[..1]; a.KLens = a.KLens[..1]; }
            a.Norm = rnd.Next(5) switch { 0 => Normalizer.Relu, 1 => Normalizer.Sigmoid, _ => Normalizer.Softmax };
            if (rnd.Next(4) == 0) a.Scale = (float)(rnd.NextDouble() * 0.5);
            if (rnd.Next(5) == 0) a.SoftCap = (float)(5 + rnd.NextDouble() * 30);
            a.Causal = rnd.Next(3) switch { 0 => CausalMode.TopLeft, 1 when cross => CausalMode.BottomRight, _ => CausalMode.None };
            if (rnd.Next(4) == 0 && !cross) a.Window = rnd.Next(1, 40);
            if (rnd.Next(4) == 0) a.Valid = a.KLens.Select(l => rnd.Next(0, l + 1)).ToArray();
            if (rnd.Next(5) == 0) a.Slopes = Enumerable.Range(0, a.Heads).Select(_ => (float)(rnd.NextDouble() * 0.3)).ToArray();
            int mask = rnd.Next(6);
            if (mask == 0)
            {
                a.BoolMask = new bool[a.TotalQ * a.TotalK];
                for (int i = 0; i < a.BoolMask.Length; i++) a.BoolMask[i] = rnd.NextDouble() < 0.8;
            }
            else if (mask == 1)
            {
                a.FloatMask = new float[a.TotalQ * a.TotalK];
                for (int i = 0; i < a.FloatMask.Length; i++) a.FloatMask[i] = rnd.NextDouble() < 0.1 ? float.NegativeInfinity : (float)(rnd.NextDouble() * 4 - 2);
            }
            a.Fill(rnd.Next(), scale: rnd.Next(3) == 0 ? 3f : 1f);
            string what = $"case {cfg}: heads {a.Heads}/{a.KvHeads} d {a.D}/{a.Dv} q [{string.Join(",", a.QLens)}] k [{string.Join(",", a.KLens)}] {a.Score} {a.Norm} scale {a.Scale} cap {a.SoftCap} {a.Causal} window {a.Window} valid [{string.Join(",", a.Valid ?? [])}] slopes {a.Slopes != null} bool {a.BoolMask != null} float {a.FloatMask != null} packed {a.Packed}";
            IsaPaths.ForEach(p =>
            {
                var o = a.Options();
                float[] scratch = new float[Attention.ScratchSize(o, a.TotalK)];
                foreach (var pl in new[] { null, pool })
                {
                    float[] got = new float[a.TotalQ * a.Heads * a.Dv];
                    Array.Fill(got, float.NaN);
                    Attention.Forward(a.Q, a.TotalQ, a.K, a.V, a.TotalK, got, scratch, o, pl);
                    AttentionTests.AssertMatches(a, got, $"{what} on {p}{(pl == null ? "" : ", 2 threads")}");
                }
            });
            cases++;
        }
        output.WriteLine($"{cases} random cases");
    }
}
