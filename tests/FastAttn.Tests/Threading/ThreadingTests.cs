using System.Diagnostics;
using FastAttn.Composition;
using FastAttn.Kernels;
using FastAttn.Layers;
using FastAttn.Threading;

namespace FastAttn.Tests.Threading;

public class ThreadingTests
{
    private static readonly int[] ThreadCounts = [1, 2, 3, 4];

    private static int Chunks(int threads, int heads, int tokens, bool causal = false) =>
        Attention.ChooseChunks(threads, heads, 32, tokens, causal, default, default, default, 1, tokens, tokens, false);

    [Fact]
    public void Attention_ChunkCount_FollowsTheWork()
    {
        // heads that do not divide by the threads are cut into query chunks
        Assert.Equal(2, Chunks(2, 5, 512));
        Assert.Equal(2, Chunks(2, 9, 512));
        Assert.Equal(2, Chunks(8, 12, 512));
        Assert.Equal(1, Chunks(2, 6, 512));   // even already
        Assert.Equal(1, Chunks(2, 5, 32));    // one query tile: nothing to cut
        Assert.Equal(1, Chunks(2, 64, 512));
        // one head of 300 queries (10 tiles): 2 chunks of 5 tiles, not 4 chunks of 96 + 96 + 96 + 12 rows (one thread got 192)
        Assert.Equal(2, Chunks(2, 1, 300));
        // one causal head: the last rows see the most keys; 4 chunks handed out last first balance 2 threads exactly
        Assert.Equal(4, Chunks(2, 1, 512, causal: true));
        // 5 causal heads of 200 queries: a chunk packs only the keys its rows see, so 2 chunks a head beat 3 : 2 heads
        // (measured 5 × 200 × 64 on 2 threads: 113–115 µs as whole heads, 102–104 in 2 chunks)
        Assert.Equal(2, Chunks(2, 5, 200, causal: true));
        // 8 threads on one head of 16 tiles: a chunk of 2 tiles each (16 chunks would pack K and V twice as often)
        Assert.Equal(8, Chunks(8, 1, 512));
        // many threads: at most 32 chunks, and the play stays bounded (2,048 items) however many threads and groups
        Assert.Equal(32, Chunks(64, 1, 2048));
        Assert.InRange(Chunks(256, 3, 4096), 1, 32);
        Assert.InRange(Chunks(64, 100, 512), 1, 8);
        // a packed batch: a long and a short sequence on 2 threads — the long one is cut
        int[] lens = [480, 40];
        Assert.True(Attention.ChooseChunks(2, 1, 32, 480, false, lens, lens, default, 2, 520, 520, false) >= 2);
    }

    [Fact]
    public void Gemm_RowShares_CoverEveryRowOnce_Evenly()
    {
        foreach (int mr in new[] { 4, 12, 14 })
            for (int chunks = 2; chunks <= 12; chunks++)
                for (int m = 1; m <= 400; m++)
                {
                    int next = 0, longest = 0;
                    for (int i = 0; i < chunks; i++)
                    {
                        var (r0, r1) = GemmCore.RowShare(i, chunks, m, mr);
                        Assert.Equal(next, r0);
                        Assert.True(r1 >= r0, $"m={m} chunks={chunks} item {i}: [{r0}, {r1})");
                        longest = Math.Max(longest, r1 - r0);
                        next = r1;
                    }
                    Assert.Equal(m, next);
                    // never longer than whole tiles would give, and no longer than an even share when tiles do not share out or
                    // the last one is short
                    int tiles = (m + mr - 1) / mr;
                    Assert.True(longest <= (tiles + chunks - 1) / chunks * mr, $"m={m} chunks={chunks} mr={mr}: {longest}");
                    if ((tiles % chunks != 0 || m % mr != 0) && mr > 4 && m >= 4 * chunks) Assert.True(longest <= (m + chunks - 1) / chunks, $"m={m} chunks={chunks} mr={mr}: {longest}");
                }
        // 128 rows in tiles of 12 on 2 threads: 64 + 64, not 72 + 56
        Assert.Equal((0, 64), GemmCore.RowShare(0, 2, 128, 12));
        Assert.Equal((64, 128), GemmCore.RowShare(1, 2, 128, 12));
        // 40 rows: 4 tiles share out 2 + 2, but the last holds 4 rows: 20 + 20, not 24 + 16; 48 rows (4 full tiles): 24 + 24
        Assert.Equal((0, 20), GemmCore.RowShare(0, 2, 40, 12));
        Assert.Equal((20, 40), GemmCore.RowShare(1, 2, 40, 12));
        Assert.Equal((0, 24), GemmCore.RowShare(0, 2, 48, 12));
        // 29 rows: 15 + 14 (the caller's share, starting first, takes the odd row), not 16 + 13 as in steps of 4
        Assert.Equal((0, 15), GemmCore.RowShare(0, 2, 29, 12));
        Assert.Equal((15, 29), GemmCore.RowShare(1, 2, 29, 12));
    }

    [Fact]
    public void Attention_SplitIntoChunks_SameBits()
    {
        // odd head counts, one long head, causal heads and a packed batch: every thread count gives the single-thread bits
        var cases = new List<(string Name, AttentionCase Case)>();
        foreach (int heads in new[] { 5, 7 })
            cases.Add(($"{heads} heads", new AttentionCase { Heads = heads, KvHeads = heads, D = 24, Dv = 20, QLens = [150], KLens = [150], Norm = Normalizer.Softmax }));
        cases.Add(("one head, 300 queries", new AttentionCase { Heads = 1, KvHeads = 1, D = 40, Dv = 40, QLens = [300], KLens = [300], Norm = Normalizer.Softmax }));
        cases.Add(("one causal head", new AttentionCase { Heads = 1, KvHeads = 1, D = 16, Dv = 24, QLens = [260], KLens = [260], Norm = Normalizer.Softmax, Causal = CausalMode.TopLeft }));
        cases.Add(("5 causal heads", new AttentionCase { Heads = 5, KvHeads = 5, D = 24, Dv = 40, QLens = [200], KLens = [200], Norm = Normalizer.Softmax, Causal = CausalMode.TopLeft }));
        cases.Add(("bottom-right causal, grouped", new AttentionCase { Heads = 4, KvHeads = 2, D = 16, Dv = 16, QLens = [130], KLens = [200], Norm = Normalizer.Softmax, Causal = CausalMode.BottomRight }));
        cases.Add(("sliding window, packed", new AttentionCase { Heads = 2, KvHeads = 2, D = 16, Dv = 16, QLens = [300, 7, 90], KLens = [300, 7, 90], Norm = Normalizer.Softmax, Window = 40, Packed = true }));
        cases.Add(("packed, causal", new AttentionCase { Heads = 1, KvHeads = 1, D = 8, Dv = 8, QLens = [200, 7, 65], KLens = [200, 7, 65], Norm = Normalizer.Softmax, Causal = CausalMode.TopLeft, Packed = true }));
        foreach (var (name, a) in cases)
        {
            a.Fill(17);
            float[]? first = null;
            foreach (int t in ThreadCounts)
            {
                using var pool = new WorkerPool(t);
                float[] outp = new float[a.TotalQ * a.Heads * a.Dv];
                var o = a.Options();
                Attention.Forward(a.Q, a.TotalQ, a.K, a.V, a.TotalK, outp, new float[Attention.ScratchSize(o, a.TotalK)], o, pool);
                if (first == null) { first = outp; Kernels.AttentionTests.AssertMatches(a, outp, name); }
                else Assert.Equal(first, outp);
            }
        }
    }

    [Theory]
    [InlineData(130, 257, 200)]   // many rows: split by rows
    [InlineData(7, 770, 300)]     // few rows: split by weight panels
    [InlineData(96, 1000, 33)]
    [InlineData(400, 300, 100)]   // more rows than one A block: items are (A block, panel share), or finer row pieces
    [InlineData(450, 1000, 50)]
    [InlineData(128, 96, 96)]     // 11 row tiles on 2 threads: rows 64 + 64, each share ending in a short tile
    [InlineData(1000, 60, 20)]    // rows split into more pieces than threads
    [InlineData(130, 288, 96)]    // 9 panels of a small weight: by rows, not 5 + 4 panels
    public void Gemm_SameBits_AtAnyThreadCount(int m, int n, int k)
    {
        using var w = new PackedWeight(Reference.Random(n * k, 1), n, k);
        float[] x = Reference.Random(m * k, 2), bias = Reference.Random(n, 3), res = Reference.Random(m * n, 4);
        float[]? first = null;
        foreach (int t in ThreadCounts)
        {
            using var pool = new WorkerPool(t);
            float[] y = new float[m * n];
            Gemm.Linear(x, m, w, y, new float[Gemm.LinearScratchSize(m, k)],
                new GemmEpilogue { Bias = bias, Activation = Activation.Gelu, Residual = res }, pool);
            if (first == null) first = y; else Assert.Equal(first, y);
        }
    }

    [Fact]
    public void Attention_SameBits_AtAnyThreadCount()
    {
        foreach (var (config, mask) in new[] { (Kernels.AttentionTests.Config.Gqa, Kernels.AttentionTests.MaskKind.CausalTopLeft),
                     (Kernels.AttentionTests.Config.Packed, Kernels.AttentionTests.MaskKind.KeyPadding),
                     (Kernels.AttentionTests.Config.Self, Kernels.AttentionTests.MaskKind.None) })
        {
            var a = Kernels.AttentionTests.Make(config, 200, 64, ScoreKind.Dot, Normalizer.Softmax, mask, 5);
            float[]? first = null;
            foreach (int t in ThreadCounts)
            {
                long need = Attention.ScratchSize(a.Options(), a.TotalK);
                using var pool = new WorkerPool(t);
                float[] outp = new float[a.TotalQ * a.Heads * a.Dv];
                var o = a.Options();
                Attention.Forward(a.Q, a.TotalQ, a.K, a.V, a.TotalK, outp, new float[need], o, pool);
                if (first == null) { first = outp; Kernels.AttentionTests.AssertMatches(a, outp, $"{config}/{mask}"); }
                else Assert.Equal(first, outp);
            }
        }
    }

    [Theory]
    [InlineData(false, 77)]
    [InlineData(true, 130)]
    public void EncoderStack_SameBits_AtAnyThreadCount(bool normFirst, int tokens)
    {
        using var enc = TransformerEncoder.Create(layers: 2, dModel: 96, heads: 4, ffDim: 256, normFirst: normFirst, seed: 9);
        float[] x = Reference.Random(tokens * 96, 10);
        int[] lens = [tokens / 3, tokens - tokens / 3];
        int[] valid = [tokens / 3 - 2, tokens - tokens / 3];
        float[]? first = null, firstPacked = null;
        foreach (int t in ThreadCounts)
        {
            using var s = enc.CreateSessionUnchecked(tokens, t);
            float[] y = new float[tokens * 96], yp = new float[tokens * 96];
            s.Run(x, y);
            s.Run(x, yp, lens, valid);
            if (first == null) { first = y; firstPacked = yp; }
            else { Assert.Equal(first, y); Assert.Equal(firstPacked, yp); }
        }
    }

    /// <summary>
    /// Where the attention splits by heads alone, the layer's q|k|v product is split the same way (thread w projects the
    /// heads it attends to; the pool's affine hand-out keeps them together): the bits must be those of one thread, for
    /// every thread count, causal or not, with key padding, and where the thread boundaries miss a panel boundary (6 heads
    /// of 16 on 2 threads: the plain split; on 3, 2 heads a thread, they fall on one), or the heads do not share out evenly
    /// (10 heads on 3 or 4 threads) — and the head split must have run where it applies and nowhere else. (These layers
    /// are small enough to run by rows on several threads, <see cref="RowLocalLayerJob"/>; that is switched off here.)
    /// </summary>
    [Theory]
    [InlineData(256, 8, false)]
    [InlineData(320, 10, true)]
    [InlineData(96, 6, false)]
    public void SelfAttention_QkvSplitByHeads_SameBitsAsOneThread(int d, int heads, bool causal)
    {
        EncoderBlock.NoRowLocalLayer = true;
        try { QkvSplitByHeads(d, heads, causal); }
        finally { EncoderBlock.NoRowLocalLayer = false; }
    }

    private static void QkvSplitByHeads(int d, int heads, bool causal)
    {
        int nr = GemmCore.PanelWidth(Isa.Current);
        bool Aligned(int threads)
        {
            if (heads % threads != 0) return false;
            for (int w = 1; w < threads; w++) if (w * heads / threads * (d / heads) % nr != 0) return false;
            return true;
        }
        var settings = new AttentionSettings { Causal = causal ? CausalMode.TopLeft : CausalMode.None };
        using var enc = TransformerEncoder.Create(layers: 1, dModel: d, heads: heads, ffDim: 2 * d, normFirst: true, seed: 31, attention: settings);
        var block = Assert.IsType<EncoderBlock>(enc.Blocks[0]);
        const int maxT = 200;
        float[] x = Reference.Random(maxT * d, 32);
        using var one = enc.CreateSessionUnchecked(maxT, 1);
        int ran = 0;
        foreach (int t in new[] { 33, 100, 200 })
        {
            var xs = x.AsSpan(0, t * d);
            int[] valid = [t - 5];
            float[] want = new float[t * d], wantPadded = new float[t * d];
            one.Run(xs, want);
            one.Run(xs, wantPadded, [t], valid);
            foreach (int threads in new[] { 2, 3, 4 })
            {
                using var pool = new WorkerPool(threads);
                float[] y = new float[t * d], yp = new float[t * d], scratch = new float[block.ScratchSize(t)];
                int before = MultiHeadAttention.HeadSplitRuns;
                block.Forward(xs, y, new Batch(t, pool: pool), scratch);
                block.Forward(xs, yp, new Batch(t, [t], valid, pool: pool), scratch);
                int runs = MultiHeadAttention.HeadSplitRuns - before;
                if (!Aligned(threads)) Assert.Equal(0, runs);
                ran += runs;
                Assert.True(want.AsSpan().SequenceEqual(y), $"{t} tokens, {threads} threads");
                Assert.True(wantPadded.AsSpan().SequenceEqual(yp), $"{t} tokens, {t - 5} valid keys, {threads} threads");
            }
        }
        Assert.True(ran > 0, "the q|k|v product never split by heads");
    }

    /// <summary>
    /// On several threads a small layer runs everything after the attention row-local (each thread its rows through the
    /// output projection, the norms and the feed-forward): the bits must be those of one thread on both sides of the
    /// token count where it starts, with shares of more than one block of rows, for packed sequences too, and through <see cref="Block.Forward"/> with exactly
    /// <see cref="Block.ScratchSize"/> floats of scratch.
    /// </summary>
    [Theory]
    [InlineData(false, Activation.Gelu, Precision.F32)]
    [InlineData(true, Activation.Relu, Precision.F32)]
    [InlineData(false, Activation.Gelu, Precision.Int8)]
    [InlineData(true, Activation.Gelu, Precision.BF16Weights)]
    public void EncoderBlock_RowLocalTail_SameBitsAsOneThread(bool normFirst, Activation act, Precision precision)
    {
        const int d = 160, maxT = 250;
        using var enc = TransformerEncoder.Create(layers: 1, dModel: d, heads: 5, ffDim: 640, activation: act, normFirst: normFirst, seed: 21, precision: precision);
        var block = Assert.IsType<EncoderBlock>(enc.Blocks[0]);
        float[] x = Reference.Random(maxT * d, 22);
        using var one = enc.CreateSessionUnchecked(maxT, 1);
        // from 193 tokens a 2-thread share is more than one block of the tail's rows (96)
        foreach (int t in new[] { 1, 7, 23, 24, 25, 47, 48, 49, 63, 65, 72, 96, 97, 131, 193, 250 })
        {
            int[] lens = t >= 3 ? [t / 3, t - t / 3] : [t];
            var xs = x.AsSpan(0, t * d);
            float[] want = new float[t * d], wantPacked = new float[t * d];
            one.Run(xs, want);
            one.Run(xs, wantPacked, lens);
            foreach (int threads in new[] { 2, 3, 4 })
            {
                using var pool = new WorkerPool(threads);
                float[] y = new float[t * d], yp = new float[t * d], scratch = new float[block.ScratchSize(t)];
                int before = EncoderBlock.RowLocalLayerRuns;
                block.Forward(xs, y, new Batch(t, pool: pool), scratch);
                // one sequence from one tile of rows per thread: the whole layer by rows (the q|k|v weight is 0.3 MB)
                int byRows = t >= EncoderBlock.RowLocalLayerTiles * GemmCore.TileRows(block.Attention.OutProj.Weight.Isa) * threads ? 1 : 0;
                Assert.Equal(byRows, EncoderBlock.RowLocalLayerRuns - before);
                block.Forward(xs, yp, new Batch(t, lens, pool: pool), scratch);
                Assert.Equal(byRows, EncoderBlock.RowLocalLayerRuns - before); // two sequences: not by rows
                Assert.True(want.AsSpan().SequenceEqual(y), $"{t} tokens, {threads} threads");
                Assert.True(wantPacked.AsSpan().SequenceEqual(yp), $"{t} tokens in two sequences, {threads} threads");
            }
        }
    }

    /// <summary>
    /// The tail's blocks cover a share once, in order, each at most <see cref="EncoderBlock.TailBlockRows"/> rows, as few
    /// as that allows, and of even size (100 rows as 52 + 48, not 96 + 4).
    /// </summary>
    [Fact]
    public void RowLocalTail_Blocks_CoverTheShareInFewEvenBlocks()
    {
        int max = EncoderBlock.TailBlockRows;
        foreach (int r0 in new[] { 0, 13 })
            for (int n = 1; n <= 5 * max + 7; n++)
            {
                var sizes = new List<int>();
                for (int q0 = r0, q1; q0 < r0 + n; q0 = q1)
                {
                    q1 = RowLocalTailJob.BlockEnd(q0, r0 + n);
                    Assert.InRange(q1 - q0, 1, max);
                    sizes.Add(q1 - q0);
                }
                Assert.Equal(n, sizes.Sum());
                Assert.Equal((n + max - 1) / max, sizes.Count);
                Assert.True(sizes.Max() - sizes.Min() <= 4 * sizes.Count, $"{n} rows: {string.Join(" + ", sizes)}");
            }
        Assert.Equal([52, 48], Blocks(100));
        Assert.Equal([88, 84, 84], Blocks(256));
        Assert.Equal([96], Blocks(96));

        static int[] Blocks(int n)
        {
            var b = new List<int>();
            for (int q0 = 0, q1; q0 < n; q0 = q1) b.Add((q1 = RowLocalTailJob.BlockEnd(q0, n)) - q0);
            return b.ToArray();
        }
    }

    /// <summary>
    /// Under a causal mask the attention-and-tail shares of the layer by rows follow the rows' cost: they cover the rows
    /// once, in order, on multiples of 4 rows, the later share shorter, and each share's cost within 6 rows' cost of an even
    /// share of the total (each of its two edges, rounded to 4 rows, moves by up to 2 rows and may pass its target by 1).
    /// </summary>
    [Fact]
    public void LayerByRows_CausalShares_FollowTheRowsCost()
    {
        foreach (int threads in new[] { 2, 3 })
            foreach (int tokens in new[] { 48, 49, 64, 130, 200, 511 })
                foreach (int valid in new[] { tokens, tokens / 3 })
                {
                    const int tail = 320 + 2 * 640;
                    double Row(int r) => 2.0 * tail + 5.0 * Math.Min(r + 1, valid);
                    var costs = new List<double>();
                    int prev = 0;
                    for (int i = 0; i < threads; i++)
                    {
                        var (a, b) = RowLocalLayerJob.CausalShare(i, threads, tokens, valid, tail);
                        Assert.Equal(prev, a);
                        Assert.True(b >= a && (b % 4 == 0 || b == tokens), $"{tokens} tokens: share {i} is [{a}, {b})");
                        costs.Add(Enumerable.Range(a, b - a).Sum(Row));
                        prev = b;
                    }
                    Assert.Equal(tokens, prev);
                    Assert.True(costs.All(c => Math.Abs(c - costs.Average()) <= 6 * Row(tokens - 1) + 1e-9), $"{tokens} tokens, {valid} valid, {threads} threads: {string.Join(", ", costs)}");
                    if (valid == tokens && tokens >= 200)
                        Assert.True(RowLocalLayerJob.CausalShare(threads - 1, threads, tokens, valid, tail) is var (s, e) && e - s < (tokens + threads - 1) / threads, "the last share is the shorter one");
                }
        Assert.Equal((0, 108), RowLocalLayerJob.CausalShare(0, 2, 200, 200, 320 + 2 * 640));
    }

    /// <summary>
    /// The whole layer by rows (<see cref="RowLocalLayerJob"/>: each thread projects its rows' q, k and v, then attends for
    /// its rows over every head from a copy of every row's k and v, then runs its rows' tail) gives the bits of one thread
    /// and of the split path, with causal masks (both corners), fewer valid keys, odd widths and token counts, and head
    /// counts that do not share out over the threads.
    /// </summary>
    [Theory]
    [InlineData(96, 3, 192, false, CausalMode.None)]
    [InlineData(96, 6, 384, true, CausalMode.TopLeft)]
    [InlineData(130, 5, 260, false, CausalMode.BottomRight)]
    [InlineData(64, 1, 256, true, CausalMode.None)]
    [InlineData(320, 10, 640, true, CausalMode.TopLeft)]
    public void EncoderBlock_ByRows_SameBitsAsOneThread(int d, int heads, int ff, bool normFirst, CausalMode causal)
    {
        const int maxT = 300;
        var settings = new AttentionSettings { Causal = causal };
        using var enc = TransformerEncoder.Create(layers: 1, dModel: d, heads: heads, ffDim: ff, normFirst: normFirst, seed: 41 + d, attention: settings);
        var block = Assert.IsType<EncoderBlock>(enc.Blocks[0]);
        float[] x = Reference.Random(maxT * d, 42);
        using var one = enc.CreateSessionUnchecked(maxT, 1);
        int ran = 0;
        foreach (int t in new[] { 49, 64, 97, 130, 200, 300 })
        {
            var xs = x.AsSpan(0, t * d);
            int[] valid = [t - 7];
            float[] want = new float[t * d], wantValid = new float[t * d];
            one.Run(xs, want);
            one.Run(xs, wantValid, [t], valid);
            foreach (int threads in new[] { 2, 3 })
            {
                using var pool = new WorkerPool(threads);
                float[] y = new float[t * d], yv = new float[t * d], ySplit = new float[t * d], scratch = new float[block.ScratchSize(t)];
                int before = EncoderBlock.RowLocalLayerRuns;
                block.Forward(xs, y, new Batch(t, pool: pool), scratch);
                block.Forward(xs, yv, new Batch(t, [t], valid, pool: pool), scratch);
                ran += EncoderBlock.RowLocalLayerRuns - before;
                EncoderBlock.NoRowLocalLayer = true;
                try { block.Forward(xs, ySplit, new Batch(t, pool: pool), scratch); }
                finally { EncoderBlock.NoRowLocalLayer = false; }
                Assert.True(want.AsSpan().SequenceEqual(y), $"{t} tokens, {threads} threads");
                Assert.True(wantValid.AsSpan().SequenceEqual(yv), $"{t} tokens, {t - 7} valid keys, {threads} threads");
                Assert.True(want.AsSpan().SequenceEqual(ySplit), $"{t} tokens, {threads} threads, split path");
            }
        }
        Assert.True(ran > 0, "the layer never ran by rows");
    }

    [Fact]
    public void CpuPlacement_AvoidingTheCurrentCpu_MovesTheThreadAtOnce()
    {
        // a dedicated thread, so the test runner's threads keep their masks
        string? failure = null;
        var t = new Thread(() =>
        {
            ulong[]? allowed = CpuPlacement.AllowedOfThisThread();
            if (allowed == null)
            {
                // only where there is nothing to move to, or no Linux affinity call
                if (OperatingSystem.IsLinux() && Environment.ProcessorCount >= 2 && CpuPlacement.Enabled) failure = "no mask on a multi-CPU Linux machine";
                return;
            }
            ulong[] lastSet = (ulong[])allowed.Clone(), start = (ulong[])allowed.Clone();
            for (int round = 0; round < 20 && failure == null; round++)
            {
                int cpu = CpuPlacement.CurrentCpu();
                if (!CpuPlacement.AvoidOnThisThread(allowed, lastSet, cpu)) { failure = $"could not avoid CPU {cpu}"; break; }
                int now = CpuPlacement.CurrentCpu();
                if (now == cpu) failure = $"still on CPU {cpu} after avoiding it";
                if ((allowed[now >> 6] & (1UL << (now & 63))) == 0) failure = $"moved to CPU {now}, which was not allowed";
            }
            // a CPU outside the mask's range changes nothing
            if (failure == null && CpuPlacement.AvoidOnThisThread(allowed, lastSet, 1 << 20)) failure = "avoided a CPU that does not exist";
            // a mask set from outside (here: only the CPU the thread is on, after the thread had its whole starting mask
            // again) is never widened: avoiding that CPU fails and the thread stays
            CpuPlacement.SetOnThisThread(start);
            lastSet = (ulong[])start.Clone();
            int here = CpuPlacement.CurrentCpu();
            var only = new ulong[start.Length];
            only[here >> 6] = 1UL << (here & 63);
            if (failure == null && !CpuPlacement.SetOnThisThread(only)) failure = "could not set a one-CPU mask";
            if (failure == null && CpuPlacement.AvoidOnThisThread(allowed, lastSet, here)) failure = "widened a mask set from outside";
            if (failure == null && CpuPlacement.CurrentCpu() != here) failure = "left the only CPU of a mask set from outside";
            CpuPlacement.SetOnThisThread(start);
        });
        t.Start();
        t.Join();
        Assert.Null(failure);
    }

    [Fact]
    public void TwoThreads_AllocateNothing_PerRun()
    {
        using var enc = TransformerEncoder.Create(layers: 2, dModel: 128, heads: 4, ffDim: 256, seed: 2);
        using var s = enc.CreateSessionUnchecked(100, 2);
        float[] x = Reference.Random(100 * 128, 1), y = new float[100 * 128];
        int[] lens = [40, 60];
        Assert.Equal(0, Reference.SteadyStateAllocations(() => { s.Run(x, y); s.Run(x, y, lens); }));
    }

    private sealed class Throwing : IParallelWork
    {
        public int ThrowAt = -1;
        public int Done;
        public void Execute(int item, int worker)
        {
            if (item == ThrowAt) throw new InvalidOperationException($"item {item} failed");
            Interlocked.Increment(ref Done);
        }
    }

    [Fact]
    public void WorkerException_SurfacesOnCaller_PoolStaysUsable_DisposeJoins()
    {
        var pool = new WorkerPool(3);
        var work = new Throwing { ThrowAt = 5 };
        var ex = Assert.Throws<InvalidOperationException>(() => pool.Run(work, 64));
        Assert.Equal("item 5 failed", ex.Message);
        work.ThrowAt = -1; work.Done = 0;
        pool.Run(work, 64);
        Assert.Equal(64, work.Done);
        // once more failing, then dispose right after the exception
        work.ThrowAt = 0;
        Assert.Throws<InvalidOperationException>(() => pool.Run(work, 8));
        var sw = Stopwatch.StartNew();
        pool.Dispose();
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), "dispose returned");
        Assert.False(pool.AnyThreadAlive);
        Assert.Throws<ObjectDisposedException>(() => pool.Run(work, 8));
    }

    private sealed class Counting : IParallelWork
    {
        public int[] Runs = new int[64];
        public void Execute(int item, int worker) => Interlocked.Increment(ref Runs[item]);
    }

    /// <summary>
    /// The affine hand-out (each thread its own block first, then the others' leftovers) runs every item exactly once for
    /// any item and thread count, fewer items than threads too; an item's exception surfaces on the caller and the pool
    /// stays usable for both kinds of run.
    /// </summary>
    [Fact]
    public void AffineRun_EveryItemOnce_ExceptionSurfaces()
    {
        foreach (int threads in new[] { 2, 3, 4 })
        {
            using var pool = new WorkerPool(threads);
            for (int items = 1; items <= 40; items++)
            {
                var work = new Counting();
                pool.Run(work, items, affine: true);
                for (int i = 0; i < 64; i++) Assert.Equal(i < items ? 1 : 0, work.Runs[i]);
            }
            var failing = new Throwing { ThrowAt = 5 };
            var ex = Assert.Throws<InvalidOperationException>(() => pool.Run(failing, 24, affine: true));
            Assert.Equal("item 5 failed", ex.Message);
            failing.ThrowAt = -1; failing.Done = 0;
            pool.Run(failing, 24, affine: true);
            Assert.Equal(24, failing.Done);
            failing.Done = 0;
            pool.Run(failing, 24);
            Assert.Equal(24, failing.Done);
        }
    }

    /// <summary>A job whose items take uneven time (a sixteenth of them ~100× longer), so threads take over each other's items.</summary>
    private sealed class Uneven : IParallelWork
    {
        public readonly int[] Runs = new int[80];
        private int _seed;

        public void Reset(int seed) { Array.Clear(Runs); _seed = seed; }

        public void Execute(int item, int worker)
        {
            Interlocked.Increment(ref Runs[item]);
            Thread.SpinWait(((item * 7919 + _seed) & 15) == 0 ? 2000 : 20);
        }
    }

    /// <summary>
    /// The pool's hand-out under load: every item of every run exactly once — plain and affine runs, 2, 3 and 5 threads
    /// (more threads than this machine's CPUs too), 1–70 items of uneven length (so sequences are taken over), more job
    /// objects than the pool names by index (its last slot changes hands), and runs numbered across the numbers' wrap
    /// (where the claim words are cleared) and across int.MaxValue.
    /// </summary>
    [Fact]
    public void Runs_EveryItemOnce_UnevenItems_ManyJobs_AcrossTheNumbersWrap()
    {
        var rnd = new Random(7);
        foreach (int threads in new[] { 2, 3, 5 })
        {
            using var pool = new WorkerPool(threads);
            var jobs = Enumerable.Range(0, 20).Select(_ => new Uneven()).ToArray();
            for (int r = 0; r < 2400; r++)
            {
                if (r == 800) pool.SetLastRunNumber(-3);                // runs −2, −1, then 1 (0 skipped, words cleared), 2, …
                if (r == 1600) pool.SetLastRunNumber(int.MaxValue - 2); // int.MaxValue − 1, int.MaxValue, int.MinValue, …
                var job = jobs[rnd.Next(jobs.Length)];
                int items = rnd.Next(1, 71);
                bool affine = rnd.Next(2) == 0;
                job.Reset(rnd.Next());
                pool.Run(job, items, affine);
                int wrong = Array.FindIndex(job.Runs, 0, items, n => n != 1);
                Assert.True(wrong < 0, $"{threads} threads, run {r} ({items} items, affine {affine}): item {wrong} ran {(wrong < 0 ? 0 : job.Runs[wrong])} times");
                Assert.True(job.Runs.Skip(items).All(n => n == 0));
            }
        }
    }

    /// <summary>
    /// A claim word carries its run's number; one left untouched since run 1 (its thread had no items since) must not count
    /// for the run numbered 1 after the numbers wrap: every item of that run runs once.
    /// </summary>
    [Fact]
    public void Runs_AfterTheNumbersWrap_OldClaimWordsDoNotCount()
    {
        foreach (bool affine in new[] { false, true })
        {
            using var pool = new WorkerPool(3);
            var job = new Uneven();
            job.Reset(0);
            pool.Run(job, 3, affine);                            // run 1: every thread's word stamped 1, its item claimed
            for (int r = 0; r < 5; r++) { job.Reset(r); pool.Run(job, 2, affine); } // runs 2–6: one thread has none
            pool.SetLastRunNumber(-3);
            for (int r = 0; r < 2; r++) { job.Reset(r); pool.Run(job, 2, affine); } // runs −2, −1
            job.Reset(1);
            pool.Run(job, 3, affine);                            // run 1 again
            Assert.Equal([1, 1, 1], job.Runs.Take(3));
        }
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static WeakReference RunOwnJob(WorkerPool pool)
    {
        var job = new Counting();
        pool.Run(job, 8);
        Assert.All(job.Runs.Take(8), n => Assert.Equal(1, n));
        return new WeakReference(job);
    }

    /// <summary>A run names its job by an index into the pool's table of jobs; a caller's own job leaves the table after its run (the pool does not keep it alive).</summary>
    [Fact]
    public void Run_DoesNotKeepTheCallersJobAlive()
    {
        using var pool = new WorkerPool(2);
        var weak = RunOwnJob(pool);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        Assert.False(weak.IsAlive, "the pool kept the caller's job alive");
        var again = new Counting();
        pool.Run(again, 8);
        Assert.All(again.Runs.Take(8), n => Assert.Equal(1, n));
    }

    [Fact]
    public void Session_Dispose_WhileIdle_StopsItsThreads()
    {
        using var enc = TransformerEncoder.Create(layers: 1, dModel: 64, heads: 4, ffDim: 128, seed: 2);
        var s = enc.CreateSessionUnchecked(64, 3);
        float[] x = Reference.Random(64 * 64, 1), y = new float[64 * 64];
        s.Run(x, y);
        Assert.True(s.WorkersAlive);
        Thread.Sleep(50); // idle: the workers have stopped spinning and block
        s.Dispose();
        Assert.False(s.WorkersAlive);
        Assert.Throws<ObjectDisposedException>(() => s.Run(x, y));
    }

    [Fact]
    public void CreateSession_RejectsThreadCountsOutsideTheMachine()
    {
        using var enc = TransformerEncoder.Create(layers: 1, dModel: 32, heads: 2, ffDim: 64);
        Assert.Equal("threads", Assert.Throws<ArgumentOutOfRangeException>(() => enc.CreateSession(8, 0)).ParamName);
        Assert.Equal("threads", Assert.Throws<ArgumentOutOfRangeException>(() => enc.CreateSession(8, Environment.ProcessorCount + 1)).ParamName);
    }
}

/// <summary>Runs alone (no other test in parallel), so the process CPU time it reads is the idle session's.</summary>
[CollectionDefinition("Idle CPU", DisableParallelization = true)]
public class IdleCpuCollection { }

[Collection("Idle CPU")]
public class IdleCpuTests(Xunit.Abstractions.ITestOutputHelper output)
{
    /// <summary>CPU ticks (utime + stime, 1/100 s) used so far by each of this process's threads named "FastAttn wk …".</summary>
    private static Dictionary<string, long> WorkerTicks()
    {
        var r = new Dictionary<string, long>();
        foreach (var dir in Directory.GetDirectories("/proc/self/task"))
        {
            string name;
            try { name = File.ReadAllText(Path.Combine(dir, "comm")).Trim(); } catch (IOException) { continue; } // the thread ended meanwhile
            if (!name.StartsWith("FastAttn wk")) continue;
            string stat;
            try { stat = File.ReadAllText(Path.Combine(dir, "stat")); } catch (IOException) { continue; } // the thread ended meanwhile
            // fields after the parenthesised name: state is field 3, utime 14, stime 15
            var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            r[Path.GetFileName(dir)] = long.Parse(f[11]) + long.Parse(f[12]);
        }
        return r;
    }

    private static int WorkerThreads() => WorkerTicks().Count;

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void CreateAll(Stack enc, List<Session> into, int count)
    {
        float[] x = Reference.Random(32 * 64, 1), y = new float[32 * 64];
        for (int i = 0; i < count; i++) { var s = enc.CreateSessionUnchecked(32, 2); s.Run(x, y); into.Add(s); } // never disposed
    }

    private static int SettledWorkerThreads()
    {
        int last = -1;
        var wait = Stopwatch.StartNew();
        while (wait.Elapsed < TimeSpan.FromSeconds(10))
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            Thread.Sleep(50);
            int n = WorkerThreads();
            if (n == last) return n;
            last = n;
        }
        return last;
    }

    [Fact]
    public void DroppedSessions_WorkerThreadsEnd_AfterCollection()
    {
        if (!OperatingSystem.IsLinux()) return; // counts threads in /proc
        using var enc = FastAttn.Layers.TransformerEncoder.Create(layers: 1, dModel: 64, heads: 4, ffDim: 128, seed: 2);
        // sessions other tests dropped end their workers when collected: let that finish first, or it would happen during
        // this test and hide (or fake) the change it measures
        int before = SettledWorkerThreads();
        var sessions = new List<Session>();
        CreateAll(enc, sessions, 200);
        int peak = WorkerThreads();
        sessions.Clear(); // dropped: unreachable, not disposed
        var wait = Stopwatch.StartNew();
        int now = peak;
        while (wait.Elapsed < TimeSpan.FromSeconds(30))
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            now = WorkerThreads();
            if (now <= before) break;
            Thread.Sleep(50);
        }
        output.WriteLine($"worker threads: {before} before, {peak} after creating 200 two-thread sessions, {now} after collection ({wait.ElapsedMilliseconds} ms)");
        Assert.True(peak >= before + 100, $"only {peak - before} worker threads appeared: the test does not see them");
        Assert.True(now <= before, $"{now - before} worker threads of dropped sessions are still alive");
    }

    [Fact]
    public void IdleSession_WithTwoThreads_UsesUnderOnePercentOfACore()
    {
        if (!OperatingSystem.IsLinux()) return; // reads per-thread CPU time from /proc
        using var enc = TransformerEncoder.Create(layers: 1, dModel: 128, heads: 4, ffDim: 256, seed: 2);
        float[] x = Reference.Random(64 * 128, 1), y = new float[64 * 128];
        using var s = enc.CreateSessionUnchecked(64, 2);
        // positive control: while the session runs for half a second, its worker's CPU time is visible
        var start = WorkerTicks();
        Assert.Single(start); // one worker thread besides the caller
        var run = Stopwatch.StartNew();
        while (run.ElapsedMilliseconds < 500) s.Run(x, y);
        var busy = WorkerTicks();
        long busyTicks = busy.Sum(kv => kv.Value - start[kv.Key]);
        Assert.True(busyTicks >= 5, $"the worker used only {busyTicks} ticks in 500 ms of runs: the measurement does not see it");
        Thread.Sleep(100); // past the workers' bounded spin
        var before = WorkerTicks();
        var wall = Stopwatch.StartNew();
        Thread.Sleep(1000);
        var after = WorkerTicks();
        long ticks = after.Sum(kv => kv.Value - before[kv.Key]);
        output.WriteLine($"idle {wall.ElapsedMilliseconds} ms: the session's worker used {ticks * 10} ms of CPU (10 ms resolution); it used {busyTicks * 10} ms in 500 ms of runs before");
        // 1% of a core over one second is 10 ms, one tick
        Assert.True(ticks <= 1, $"the idle worker used {ticks} ticks (1/100 s) in one second");
    }
}
