using FastAttn.Composition;
using FastAttn.Kernels;
using FastAttn.Layers;
using FastAttn.Threading;

namespace FastAttn.Tests.Threading;

/// <summary>
/// Speed-weighted shares (<see cref="ShareBalance"/>): the weights follow the measured times, stay bounded and ignore
/// outliers; a weighted cut covers every row and panel once; and a skewed cut gives the same bits as one thread on every
/// job that uses it.
/// </summary>
public class ShareBalanceTests
{
    /// <summary>Runs <paramref name="runs"/> simulated runs: share i of <paramref name="m"/> rows takes fixed + perRow[i]·rows ticks.</summary>
    private static void Simulate(ShareBalance b, int shares, int m, double fixedTicks, double[] perRow, int runs)
    {
        for (int r = 0; r < runs; r++)
        {
            b.Prepare(shares);
            for (int i = 0; i < shares; i++)
            {
                var (r0, r1) = GemmCore.RowShare(i, shares, m, 12, b);
                b.Record(i, i, (long)(fixedTicks + perRow[i] * (r1 - r0)));
            }
            b.Update();
        }
    }

    private static double[] Times(ShareBalance b, int shares, int m, double fixedTicks, double[] perRow)
    {
        var t = new double[shares];
        for (int i = 0; i < shares; i++)
        {
            var (r0, r1) = GemmCore.RowShare(i, shares, m, 12, b);
            t[i] = fixedTicks + perRow[i] * (r1 - r0);
        }
        return t;
    }

    [Fact]
    public void Weights_FollowTheMeasuredTimes_UntilTheSharesFinishTogether()
    {
        // thread 1 takes 1.15x as long per row (and every share has a fixed part): from 100 : 100 the cut moves until the
        // times agree to within a step of 2 rows and the dead band (each share within it of the mean)
        var b = new ShareBalance();
        double[] perRow = [1000, 1150];
        Simulate(b, 2, 200, 5000, perRow, 20 * ShareBalance.Window);
        var t = Times(b, 2, 200, 5000, perRow);
        Assert.False(b.Even);
        Assert.True(b.Weight(0) > 1 && b.Weight(1) < 1, $"weights {b.Weight(0)} {b.Weight(1)}");
        Assert.True(Math.Abs(t[0] - t[1]) <= 2 * 1150 + 2 * ShareBalance.DeadBand * t[0], $"times {t[0]} {t[1]}");
        // the other way round, on three shares
        var c = new ShareBalance();
        double[] three = [1300, 1000, 1000];
        Simulate(c, 3, 300, 0, three, 20 * ShareBalance.Window);
        var t3 = Times(c, 3, 300, 0, three);
        Assert.True(c.Weight(0) < 1 && t3.Max() - t3.Min() <= 2 * 1300 + 2 * ShareBalance.DeadBand * t3.Max(), $"times {string.Join(", ", t3)}");
    }

    [Fact]
    public void Weights_StayBounded_AndEqualTimesLeaveTheCutAlone()
    {
        // one thread 3x slower per row: the weights stop at the bound
        var b = new ShareBalance();
        Simulate(b, 2, 400, 0, [1000, 1900], 40 * ShareBalance.Window);
        Assert.InRange(b.Weight(1), 1 / ShareBalance.MaxSkew - 1e-12, 1);
        Assert.InRange(b.Weight(0), 1, ShareBalance.MaxSkew + 1e-12);
        // equal speeds (and times within the dead band): the weights never move from 1, so the cut stays the equal one
        var e = new ShareBalance();
        var rnd = new Random(3);
        for (int r = 0; r < 20 * ShareBalance.Window; r++)
        {
            e.Prepare(2);
            e.Record(0, 0, 100_000 + rnd.Next(-1000, 1000));
            e.Record(1, 1, 100_000 + rnd.Next(-1000, 1000));
            e.Update();
        }
        e.Prepare(2);
        Assert.True(e.Even);
        Assert.Equal(GemmCore.RowShare(0, 2, 128, 12), GemmCore.RowShare(0, 2, 128, 12, e));
    }

    [Fact]
    public void Outliers_AndSharesRunByOneThread_AreNotCounted()
    {
        var b = new ShareBalance();
        for (int r = 0; r < 10 * ShareBalance.Window; r++)
        {
            b.Prepare(2);
            // a share that took over twice as long (its thread held back), or both shares on thread 0 (one taken over)
            b.Record(0, 0, 100_000);
            if (r % 2 == 0) b.Record(1, 1, 250_000);
            else b.Record(1, 0, 150_000);
            b.Update();
        }
        Assert.True(b.Weight(0) == 1.0 && b.Weight(1) == 1.0, $"weights {b.Weight(0)} {b.Weight(1)}");
        // a share that did not run (no rows): nothing learnt either
        b.Prepare(2);
        b.Record(0, 0, 100_000);
        for (int r = 0; r < 2 * ShareBalance.Window; r++) b.Update();
        Assert.True(b.Weight(0) == 1.0 && b.Weight(1) == 1.0, $"weights {b.Weight(0)} {b.Weight(1)}");
        b.Prepare(2);
        Assert.True(b.Even);
        // Reset: back to equal weights at the next run
        var d = new ShareBalance();
        d.SetWeights([1.2, 0.8]);
        Assert.False(d.Even);
        Assert.Equal(0.6, d.Before(1), 12);
        d.Reset();
        d.Prepare(2);
        Assert.True(d.Even);
        Assert.Equal(0.5, d.Before(1));
    }

    [Fact]
    public void WeightedCuts_CoverEveryRowAndPanelOnce()
    {
        var rnd = new Random(11);
        var b = new ShareBalance();
        for (int trial = 0; trial < 400; trial++)
        {
            int shares = rnd.Next(2, 5);
            var w = new double[shares];
            for (int i = 0; i < shares; i++) w[i] = 0.8 + 0.45 * rnd.NextDouble();
            b.SetWeights(w);
            int m = rnd.Next(1, 700), panels = rnd.Next(1, 200), valid = rnd.Next(1, m + 1);
            int rowEnd = 0, panelEnd = 0, causalEnd = 0;
            for (int i = 0; i < shares; i++)
            {
                var (r0, r1) = GemmCore.RowShare(i, shares, m, 12, b);
                var (p0, p1) = GemmCore.Share(i, shares, panels, b);
                var (c0, c1) = RowLocalLayerJob.CausalShare(i, shares, m, valid, 96 + 2 * 192, b);
                Assert.True(r0 == rowEnd && r1 >= r0, $"rows: share {i} of {shares}, {m} rows");
                Assert.True(p0 == panelEnd && p1 >= p0, $"panels: share {i} of {shares}, {panels} panels");
                Assert.True(c0 == causalEnd && c1 >= c0, $"causal rows: share {i} of {shares}, {m} rows");
                rowEnd = r1; panelEnd = p1; causalEnd = c1;
            }
            Assert.Equal(m, rowEnd);
            Assert.Equal(panels, panelEnd);
            Assert.Equal(m, causalEnd);
        }
        // below BalancedRows rows (or BalancedPanels panels) a share, the cut stays the equal one
        b.SetWeights([1.2, 0.8]);
        Assert.Equal(GemmCore.RowShare(0, 2, 2 * GemmCore.BalancedRows - 2, 12), GemmCore.RowShare(0, 2, 2 * GemmCore.BalancedRows - 2, 12, b));
        Assert.Equal(GemmCore.Share(0, 2, 2 * GemmCore.BalancedPanels - 1), GemmCore.Share(0, 2, 2 * GemmCore.BalancedPanels - 1, b));
        var (a0, a1) = GemmCore.RowShare(0, 2, 200, 12, b);
        Assert.Equal((0, 120), (a0, a1)); // 0.6 of 200 rows
    }

    [Theory]
    [InlineData(CausalMode.None, false)]
    [InlineData(CausalMode.TopLeft, true)]
    public void SkewedShares_LayerByRows_AndRowLocalTail_SameBitsAsOneThread(CausalMode causal, bool normFirst)
    {
        const int d = 96, t = 150;
        var settings = new AttentionSettings { Causal = causal };
        using var enc = TransformerEncoder.Create(layers: 1, dModel: d, heads: 3, ffDim: 192, normFirst: normFirst, seed: 61, attention: settings);
        var block = Assert.IsType<EncoderBlock>(enc.Blocks[0]);
        float[] x = Reference.Random(t * d, 62);
        using var one = enc.CreateSessionUnchecked(t, 1);
        float[] want = new float[t * d];
        one.Run(x, want);
        using var pool = new WorkerPool(2);
        foreach (double[] w in new[] { new[] { 1.2, 0.8 }, new[] { 0.8, 1.2 } })
        {
            using (pool.Acquire())
            {
                pool.Job<RowLocalLayerJob>().Balance(0).SetWeights(w);
                pool.Job<RowLocalLayerJob>().Balance(1).SetWeights(w);
                pool.Job<RowLocalTailJob>().Balance.SetWeights(w);
            }
            float[] y = new float[t * d], yTail = new float[t * d], scratch = new float[block.ScratchSize(t)];
            int before = EncoderBlock.RowLocalLayerRuns;
            block.Forward(x, y, new Batch(t, pool: pool), scratch);
            Assert.Equal(1, EncoderBlock.RowLocalLayerRuns - before);
            EncoderBlock.NoRowLocalLayer = true;
            try { block.Forward(x, yTail, new Batch(t, pool: pool), scratch); }
            finally { EncoderBlock.NoRowLocalLayer = false; }
            Assert.True(want.AsSpan().SequenceEqual(y), $"by rows, weights {w[0]} : {w[1]}");
            Assert.True(want.AsSpan().SequenceEqual(yTail), $"row-local tail, weights {w[0]} : {w[1]}");
        }
    }

    [Theory]
    [InlineData(12, 1024, 128, false)] // one row tile: split by panels (32 panels of 32 on AVX-512)
    [InlineData(150, 64, 256, true)]   // few panels, one A block: split by rows
    public void SkewedShares_SplitProduct_SameBitsAsOneThread(int m, int n, int k, bool byRows)
    {
        float[] wt = Reference.Random(n * k, 71), x = Reference.Random(m * k, 72), bias = Reference.Random(n, 73);
        using var weight = new PackedWeight(wt, n, k);
        float[] want = new float[m * n], scratch = new float[weight.ScratchSize(m)];
        var epi = new GemmEpilogue { Bias = bias, Activation = Activation.Gelu };
        Gemm.Linear(x, m, weight, want, scratch, epi);
        using var pool = new WorkerPool(2);
        foreach (double[] w in new[] { new[] { 1.25, 0.75 }, new[] { 0.75, 1.25 } })
        {
            using (pool.Acquire()) pool.Job<GemmCore.GemmJob>().BalanceFor(weight.PackedOutFeatures, k, byRows, 2).SetWeights(w);
            float[] y = new float[m * n];
            Gemm.Linear(x, m, weight, y, scratch, epi, pool);
            Assert.True(want.AsSpan().SequenceEqual(y), $"{m} x {k} -> {n}, weights {w[0]} : {w[1]}");
        }
    }
}
