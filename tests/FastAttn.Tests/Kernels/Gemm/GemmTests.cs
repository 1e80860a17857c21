using FastAttn.Kernels;
using System.Runtime.InteropServices;

namespace FastAttn.Tests.Kernels;

public class GemmTests
{
    public static readonly int[] Sizes = [1, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 130, 257];
    // 27 and 50 rows: a last register tile of 3 and 2 rows, recut on AVX-512 as 14 + 13 and 13 + 13 + 12 + 12
    public static TheoryData<int> MSizes => new([.. Sizes, 27, 50]);
    private const double U = 1.0 / (1 << 24); // unit roundoff of float32

    /// <summary>
    /// Error bound for a float32 dot product of length k accumulated in any order, with or without FMA:
    /// |fl(Σ) − Σ| ≤ γ_k Σ|a_i b_i|, γ_k ≈ k·u (Higham, Accuracy and Stability, §3.1); ×2 for the final
    /// rounding of alpha/bias/C additions. The activation adds at most slope ≤ 1.13 times that, plus its
    /// own approximation error (erf: 1.5e-7 absolute; exp-based tanh/sigmoid: a few ulp), covered by the
    /// 2e-6 relative term.
    /// </summary>
    private static void AssertClose(double[] expect, double[] absSum, int k, float[] actual, int ldc, int m, int n, string what)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double e = expect[i * n + j];
                double a = actual[i * ldc + j];
                double tol = 1.2 * 2 * (k + 2) * U * absSum[i * n + j] + 2e-6 * (1 + Math.Abs(e));
                if (!(Math.Abs(a - e) <= tol))
                    Assert.Fail($"{what}: C[{i},{j}] = {a}, expected {e} (tol {tol:E2})");
            }
    }

    /// <summary>
    /// The cut of a row block into register tiles: contiguous, every row once, no tile taller than allowed, and no tile
    /// shorter than <see cref="RowTiles.MinRows"/> rows where the block has rows enough; never more tiles than whole tiles
    /// of the path's height would need.
    /// </summary>
    [Fact]
    public void RowTiles_CoverTheBlock_WithoutShortTiles()
    {
        foreach (var (tileRows, maxRows) in new[] { (12, 14), (12, 12), (6, 6), (4, 4) })
            for (int rows = 1; rows <= 400; rows++)
            {
                var t = new RowTiles(rows, tileRows, maxRows);
                Assert.InRange(t.Count, 1, (rows + tileRows - 1) / tileRows);
                int next = 0, tallest = 0;
                for (int i = 0; i < t.Count; i++)
                {
                    Assert.Equal(next, t.Start(i));
                    // as tall as the count allows when a block has too few rows for MinRows in every tile (7 rows on AVX2: 4 + 3)
                    Assert.InRange(t.Rows(i), Math.Min(RowTiles.MinRows, rows / t.Count), maxRows);
                    tallest = Math.Max(tallest, t.Rows(i));
                    next += t.Rows(i);
                }
                Assert.Equal(rows, next);
                Assert.Equal(tallest, t.MaxRows);
            }
        // the cuts the comments quote
        var fifty = new RowTiles(50, 12, 14);
        Assert.Equal([13, 13, 12, 12], Enumerable.Range(0, fifty.Count).Select(fifty.Rows));
        var fifteen = new RowTiles(15, 12, 14);
        Assert.Equal([8, 7], Enumerable.Range(0, fifteen.Count).Select(fifteen.Rows));
        var sixteen = new RowTiles(16, 12, 14);
        Assert.Equal([8, 8], Enumerable.Range(0, sixteen.Count).Select(sixteen.Rows));
        var sixtyFour = new RowTiles(64, 12, 14);
        Assert.Equal([13, 13, 13, 13, 12], Enumerable.Range(0, sixtyFour.Count).Select(sixtyFour.Rows));
        var twentyEight = new RowTiles(28, 12, 14);
        Assert.Equal([14, 14], Enumerable.Range(0, twentyEight.Count).Select(twentyEight.Rows));
        var sixteenAvx2 = new RowTiles(16, 6, 6);
        Assert.Equal([6, 5, 5], Enumerable.Range(0, sixteenAvx2.Count).Select(sixteenAvx2.Rows));
        var plain = new RowTiles(128, 12, 14);
        Assert.Equal([.. Enumerable.Repeat(12, 10), 8], Enumerable.Range(0, plain.Count).Select(plain.Rows));
    }

    [Theory]
    [MemberData(nameof(MSizes))]
    public void Linear_MatchesReference_AllSizes(int m)
    {
        IsaPaths.ForEach(() =>
        {
            foreach (int n in Sizes)
                foreach (int k in Sizes)
                {
                    float[] w = Reference.Random(n * k, 1000 + n * 7 + k);
                    float[] x = Reference.Random(m * k, 2000 + m * 13 + k);
                    using var pw = new PackedWeight(w, n, k);
                    float[] y = Filled(m * n, float.NaN);
                    Gemm.Linear(x, m, pw, y, new float[Gemm.LinearScratchSize(m, k)]);
                    var (c, s) = Reference.Gemm(m, n, k, x, k, w, 1, k);
                    AssertClose(c, s, k, y, n, m, n, $"Linear m={m} n={n} k={k}");
                }
        });
    }

    /// <summary>
    /// Depths past one K block (768; depths up to 1024 run as one block): several blocks with C reloaded between them for
    /// many rows, one deep block for rows that fit a register tile; with an epilogue (bias, GELU, residual, accumulate) and
    /// on two threads.
    /// </summary>
    [Theory]
    [InlineData(1, 769)]
    [InlineData(30, 1024)]
    [InlineData(30, 1025)]
    [InlineData(5, 1025)]
    [InlineData(7, 1600)]
    [InlineData(12, 2305)]
    [InlineData(13, 1537)]
    [InlineData(65, 800)]
    [InlineData(200, 800)]
    [InlineData(389, 130)]
    [InlineData(16, 8193)] // two tiles of 8 rows, panels outer over 11 K blocks (the last of 513)
    [InlineData(25, 2049)]
    [InlineData(130, 1100)] // eleven tiles, still panels outer (132 × 1100 floats packed: just within one A block's)
    [InlineData(131, 1130)] // 132 × 1130 is past it: K blocks outer
    public void Linear_DeeperThanOneBlock_MatchesReference(int m, int k)
    {
        IsaPaths.ForEach(() =>
        {
            const int n = 70;
            float[] w = Reference.Random(n * k, 11 + k, 0.2f);
            float[] x = Reference.Random(m * k, 12 + m, 0.5f);
            float[] bias = Reference.Random(n, 13), res = Reference.Random(m * n, 14), c0 = Reference.Random(m * n, 15);
            using var pw = new PackedWeight(w, n, k);
            using var pool = new FastAttn.Threading.WorkerPool(2);
            foreach (var p in new[] { null, pool })
            {
                float[] y = (float[])c0.Clone();
                Gemm.Linear(x, m, pw, y, new float[Gemm.LinearScratchSize(m, k)],
                    new GemmEpilogue { Bias = bias, Activation = Activation.Gelu, Residual = res, Accumulate = true, Alpha = 0.75f }, p);
                var (c, sum) = Reference.Gemm(m, n, k, x, k, w, 1, k, 0.75f, c0, n, bias, Activation.Gelu, res, n);
                AssertClose(c, sum, k, y, n, m, n, $"Linear m={m} k={k} pool={p != null}");
            }
        });
    }

    /// <summary>
    /// A row's result does not depend on the rows around it (packed batching promises a request the same bits alone and
    /// in a batch): few rows (one register tile, the weight streamed panel by panel) and many rows (K blocks outside)
    /// add the same partial sums in the same order — also past one K block, with an epilogue and on two threads.
    /// </summary>
    [Theory]
    [InlineData(300)]
    [InlineData(769)]
    [InlineData(1025)]
    [InlineData(1600)]
    [InlineData(300, 200)] // 200 rows: two equal A blocks (rows alone: one)
    [InlineData(1025, 389)]
    [InlineData(2049, 100)] // 100 rows: K blocks outer; up to 71 rows: panels outer
    public void Linear_RowsAloneAndInsideABiggerProduct_AreBitIdentical(int k, int m = 37)
    {
        IsaPaths.ForEach(() =>
        {
            const int n = 90;
            float[] w = Reference.Random(n * k, 21 + k, 0.3f);
            float[] x = Reference.Random(m * k, 22 + k);
            float[] bias = Reference.Random(n, 23), res = Reference.Random(m * n, 24);
            using var pw = new PackedWeight(w, n, k);
            using var pool = new FastAttn.Threading.WorkerPool(2);
            var epi = new GemmEpilogue { Bias = bias, Activation = Activation.Gelu, Residual = res, Alpha = 0.5f };
            float[] all = new float[m * n];
            Gemm.Linear(x, m, pw, all, new float[Gemm.LinearScratchSize(m, k)], epi, pool);
            foreach (var (r0, rows) in new[] { (0, 1), (5, 3), (20, 12), (25, 12), (3, 13), (m - 10, 10), (m / 2, m - m / 2) })
                foreach (var p in new[] { null, pool })
                {
                    float[] part = new float[rows * n];
                    var e = epi;
                    e.Residual = res.AsMemory(r0 * n, rows * n);
                    Gemm.Linear(x.AsSpan(r0 * k, rows * k), rows, pw, part, new float[Gemm.LinearScratchSize(rows, k)], e, p);
                    Assert.Equal(all.AsSpan(r0 * n, rows * n).ToArray(), part);
                }
        });
    }

    /// <summary>
    /// Scratch sized for m rows serves every product of up to m rows, on every path: callers size for the most rows they
    /// will run (a session for its token count) and run fewer, and fewer rows may pack more (a whole depth where m rows
    /// pack one K block). Each size is also at least what a product of exactly those rows packs.
    /// </summary>
    [Fact]
    public void ScratchForTheMostRows_ServesEveryFewerRows()
    {
        foreach (var isa in new[] { IsaPath.Vector512, IsaPath.Vector256, IsaPath.Vector128, IsaPath.Scalar })
        {
            int tile = GemmCore.TileRows(isa);
            foreach (int k in new[] { 1, 7, 768, 1024, 1025, 1100, 2048, 3072, 8192, 8193, 65536 })
            {
                long last = 0;
                for (int m = 1; m <= 400; m++)
                {
                    long size = GemmCore.APackSize(isa, m, k);
                    long packs = (long)Math.Min(GemmCore.RoundUp(m, tile), tile * GemmCore.MCTiles) * GemmCore.BlockDepth(m, k, tile);
                    Assert.True(size >= last, $"{isa} k={k}: {m} rows get {size} floats, {m - 1} rows {last}");
                    Assert.True(size >= packs + GemmCore.ScratchHeader, $"{isa} k={k} m={m}: {size} floats for a pack of {packs}");
                    last = size;
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(MSizes))]
    public void MatMul_BothLayouts_WithStrides_MatchReference(int m)
    {
        IsaPaths.ForEach(() =>
        {
            foreach (int n in Sizes)
                foreach (int k in Sizes)
                    foreach (bool tb in new[] { false, true })
                    {
                        int lda = k + 3, ldc = n + 5;
                        int ldb = (tb ? k : n) + 2;
                        float[] a = Reference.Random((m - 1) * lda + k, 3000 + m + 31 * k);
                        float[] b = Reference.Random(tb ? (n - 1) * ldb + k : (k - 1) * ldb + n, 4000 + n + 17 * k);
                        float[] c = Filled((m - 1) * ldc + n + 4, -0.5f); // gaps and tail must stay untouched
                        Gemm.MatMul(m, n, k, a, lda, b, ldb, tb, c, ldc, new float[Gemm.MatMulScratchSize(m, n, k)]);
                        var (r, s) = tb ? Reference.Gemm(m, n, k, a, lda, b, 1, ldb) : Reference.Gemm(m, n, k, a, lda, b, ldb, 1);
                        AssertClose(r, s, k, c, ldc, m, n, $"MatMul tb={tb} m={m} n={n} k={k}");
                        for (int i = 0; i < m; i++)
                            for (int j = n; j < ldc && i * ldc + j < c.Length; j++)
                                Assert.Equal(-0.5f, c[i * ldc + j]);
                        for (int t = (m - 1) * ldc + n; t < c.Length; t++) Assert.Equal(-0.5f, c[t]);
                    }
        });
    }

    /// <summary>Integers in [−23, 23] with K ≤ 257: every product and partial sum is exact, so the result must be.</summary>
    [Fact]
    public void SmallIntegerProducts_AreExact()
    {
        IsaPaths.ForEach(() =>
        {
            foreach (int m in new[] { 1, 7, 16, 33, 130 })
                foreach (int n in new[] { 1, 17, 63, 65 })
                    foreach (int k in new[] { 1, 15, 127, 257 })
                    {
                        float[] w = Reference.SmallInts(n * k, n + k);
                        float[] x = Reference.SmallInts(m * k, m + 5 * k);
                        using var pw = new PackedWeight(w, n, k);
                        float[] y = new float[m * n];
                        Gemm.Linear(x, m, pw, y, new float[Gemm.LinearScratchSize(m, k)]);
                        float[] c = new float[m * n];
                        Gemm.MatMul(m, n, k, x, k, w, k, true, c, n, new float[Gemm.MatMulScratchSize(m, n, k)]);
                        var (r, _) = Reference.Gemm(m, n, k, x, k, w, 1, k);
                        for (int i = 0; i < r.Length; i++)
                        {
                            Assert.Equal((float)r[i], y[i]);
                            Assert.Equal((float)r[i], c[i]);
                        }
                    }
        });
    }

    [Theory]
    [InlineData(Activation.None)]
    [InlineData(Activation.Relu)]
    [InlineData(Activation.Gelu)]
    [InlineData(Activation.GeluTanh)]
    [InlineData(Activation.Tanh)]
    [InlineData(Activation.Sigmoid)]
    [InlineData(Activation.Silu)]
    public void Epilogues_MatchReference(Activation act)
    {
        IsaPaths.ForEach(() =>
        {
            // alpha 1 takes the in-register finish for full-width tiles (no activation or ReLU); n = 5, 17, 31 end inside one vector
            foreach (var (m, n, k) in new[] { (1, 1, 1), (7, 33, 65), (17, 130, 257), (13, 31, 1000), (130, 65, 1600), (20, 17, 64), (5, 5, 3) })
                foreach (bool accumulate in new[] { false, true })
                foreach (float alpha in new[] { 0.75f, 1f })
                foreach (bool withBias in new[] { true, false })
                {
                    if (!withBias && (accumulate || alpha != 1f)) continue; // no bias: the plain activation epilogue (alpha 1, C overwritten)
                    float[] w = Reference.Random(n * k, 11 + n, 0.2f), x = Reference.Random(m * k, 12 + m, 0.5f);
                    float[]? bias = withBias ? Reference.Random(n, 13) : null;
                    float[] res = Reference.Random(m * (n + 3), 14);
                    float[] c0 = Reference.Random(m * n, 15);
                    using var pw = new PackedWeight(w, n, k);
                    float[] y = (float[])c0.Clone();
                    var epi = new GemmEpilogue { Alpha = alpha, Accumulate = accumulate, Bias = bias, Activation = act, Residual = res, ResidualStride = n + 3 };
                    Gemm.Linear(x, m, pw, y, new float[Gemm.LinearScratchSize(m, k)], epi);
                    var (r, s) = Reference.Gemm(m, n, k, x, k, w, 1, k, alpha, accumulate ? c0 : null, n, bias, act, res, n + 3);
                    AssertClose(r, s, k, y, n, m, n, $"{act} acc={accumulate} alpha={alpha} bias={withBias} m={m} n={n} k={k}");

                    // The same epilogue through MatMul (B dynamic, packed into scratch).
                    float[] c = (float[])c0.Clone();
                    Gemm.MatMul(m, n, k, x, k, w, k, true, c, n, new float[Gemm.MatMulScratchSize(m, n, k)], epi);
                    AssertClose(r, s, k, c, n, m, n, $"MatMul {act} acc={accumulate} alpha={alpha} bias={withBias} m={m} n={n} k={k}");
                }
        });
    }

    [Fact]
    public void DefaultEpilogue_IsPlainProduct()
    {
        IsaPaths.ForEach(() =>
        {
            float[] w = Reference.SmallInts(5 * 4, 1), x = Reference.SmallInts(3 * 4, 2);
            using var pw = new PackedWeight(w, 5, 4);
            float[] y = new float[15];
            GemmEpilogue e = default; // Alpha must read as 1 even for a default-initialised epilogue
            Gemm.Linear(x, 3, pw, y, new float[Gemm.LinearScratchSize(3, 4)], e);
            var (r, _) = Reference.Gemm(3, 5, 4, x, 4, w, 1, 4);
            for (int i = 0; i < 15; i++) Assert.Equal((float)r[i], y[i]);
        });
    }

    [Fact]
    public void SteadyState_AllocatesNothing()
    {
        IsaPaths.ForEach(() =>
        {
            int m = 33, n = 65, k = 130;
            using var pw = new PackedWeight(Reference.Random(n * k, 1), n, k);
            float[] x = Reference.Random(m * k, 2), y = new float[m * n], bias = Reference.Random(n, 3), bt = Reference.Random(n * k, 4);
            float[] s1 = new float[Gemm.LinearScratchSize(m, k)], s2 = new float[Gemm.MatMulScratchSize(m, n, k)];
            float[] c = new float[m * n];
            void Call()
            {
                Gemm.Linear(x, m, pw, y, s1, new GemmEpilogue { Bias = bias, Activation = Activation.Gelu });
                Gemm.MatMul(m, n, k, x, k, bt, k, true, c, n, s2);
            }
            Assert.Equal(0, Reference.SteadyStateAllocations(Call));
        });
    }

    [Fact]
    public void InvalidArguments_Throw_AndLeaveOutputUntouched()
    {
        int m = 4, n = 5, k = 6;
        using var pw = new PackedWeight(Reference.Random(n * k, 1), n, k);
        float[] x = Reference.Random(m * k, 2);
        float[] scratch = new float[Gemm.LinearScratchSize(m, k)];
        float[] y = Filled(m * n, 7f);

        var ex = Assert.Throws<ArgumentException>(() => Gemm.Linear(x.AsSpan(1), m, pw, y, scratch));
        Assert.Equal("x", ex.ParamName);
        Assert.Contains("24", ex.Message); Assert.Contains("23", ex.Message);
        ex = Assert.Throws<ArgumentException>(() => Gemm.Linear(x, m, pw, y.AsSpan(0, 19), scratch));
        Assert.Equal("y", ex.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>("rows", () => Gemm.Linear(x, 0, pw, y, scratch));
        ex = Assert.Throws<ArgumentException>(() => Gemm.Linear(x, m, pw, y, scratch.AsSpan(1)));
        Assert.Equal("scratch", ex.ParamName);
        ex = Assert.Throws<ArgumentException>(() => Gemm.Linear(x, m, pw, y, scratch, new GemmEpilogue { Bias = new float[4] }));
        Assert.Equal("epilogue.Bias", ex.ParamName);
        ex = Assert.Throws<ArgumentException>(() => Gemm.Linear(x, m, pw, y, scratch, new GemmEpilogue { Residual = new float[19] }));
        Assert.Equal("epilogue.Residual", ex.ParamName);

        // a packed weight of the wrong shape for x: K = 6 but x holds rows of 5 → too short for 4 rows
        using var wrong = new PackedWeight(Reference.Random(n * 7, 1), n, 7);
        ex = Assert.Throws<ArgumentException>(() => Gemm.Linear(x, m, wrong, y, new float[Gemm.LinearScratchSize(m, 7)]));
        Assert.Equal("x", ex.ParamName);
        Assert.Contains("4*7", ex.Message);

        float[] c = Filled(m * n, 7f);
        float[] s2 = new float[Gemm.MatMulScratchSize(m, n, k)];
        Assert.Throws<ArgumentOutOfRangeException>("lda", () => Gemm.MatMul(m, n, k, x, k - 1, x, n, false, c, n, s2));
        Assert.Throws<ArgumentOutOfRangeException>("ldc", () => Gemm.MatMul(m, n, k, x, k, x, n, false, c, n - 1, s2));
        Assert.Throws<ArgumentOutOfRangeException>("n", () => Gemm.MatMul(m, 0, k, x, k, x, n, false, c, n, s2));
        ex = Assert.Throws<ArgumentException>(() => Gemm.MatMul(m, n, k, x, k, new float[k * n - 1], n, false, c, n, s2));
        Assert.Equal("b", ex.ParamName);
        ex = Assert.Throws<ArgumentException>(() => Gemm.MatMul(m, n, k, x, k, new float[k * n], n, false, c.AsSpan(1), n, s2));
        Assert.Equal("c", ex.ParamName);

        Assert.Throws<ArgumentException>("weight", () => new PackedWeight(new float[29], 5, 6));
        Assert.Throws<ArgumentOutOfRangeException>("inFeatures", () => new PackedWeight(new float[0], 5, 0));

        Assert.All(y, v => Assert.Equal(7f, v));
        Assert.All(c, v => Assert.Equal(7f, v));
    }

    [Fact]
    public void DisposedWeight_Throws()
    {
        var pw = new PackedWeight(new float[6], 2, 3);
        pw.Dispose();
        pw.Dispose(); // idempotent
        Assert.Throws<ObjectDisposedException>(() => Gemm.Linear(new float[3], 1, pw, new float[2], new float[Gemm.LinearScratchSize(1, 3)]));
    }

    /// <summary>
    /// Weights of 1.5 MB and more sit on 2 MB boundaries with their whole 2 MB chunks advised as transparent huge pages
    /// (Linux): the advice's arithmetic, the placement, that the kernel took the advice when THP is on, and that the product
    /// is the same as on ordinary pages (on every ISA path, the product's panels then start at a huge page).
    /// </summary>
    [Fact]
    public unsafe void LargeWeights_OnHugePages_GiveTheSameProduct()
    {
        const int MB = 1 << 20;
        Assert.Equal(0, WeightMemory.HugeBytes(MB));
        Assert.Equal(0, WeightMemory.HugeBytes(3 * MB / 2 - 1));
        Assert.Equal(2 * MB, WeightMemory.HugeBytes(3 * MB / 2));       // rounded up: at most 0.5 MB unused
        Assert.Equal(2 * MB, WeightMemory.HugeBytes(3 * MB));           // 2 MB advised, the 1 MB tail on ordinary pages
        Assert.Equal(4 * MB, WeightMemory.HugeBytes(7 * MB / 2));
        IsaPaths.ForEach(() =>
        {
            const int n = 770, k = 1030, m = 5;                         // 770 × 1030 floats: 3.0–3.2 MB packed
            float[] w = Reference.Random(n * k, 31), x = Reference.Random(m * k, 32);
            using var pw = new PackedWeight(w, n, k);
            byte* data = pw.Acquire();
            try
            {
                string thp = File.Exists("/sys/kernel/mm/transparent_hugepage/enabled") ? File.ReadAllText("/sys/kernel/mm/transparent_hugepage/enabled") : "";
                if (WeightMemory.Enabled && (thp.Contains("[madvise]") || thp.Contains("[always]")))
                {
                    Assert.Equal(WeightMemory.HugeBytes(pw.SizeInBytes), pw.HugePageBytes);
                    Assert.Equal(0, (long)data % WeightMemory.HugePage);
                    // the mapping holding the weight is one the kernel may back with huge pages
                    Assert.Equal("1", SmapsField((nint)data, "THPeligible"));
                }
                else Assert.Equal(0, pw.HugePageBytes);
            }
            finally { pw.Release(); }
            float[] y = Filled(m * n, float.NaN);
            Gemm.Linear(x, m, pw, y, new float[pw.ScratchSize(m)]);
            var (c, sum) = Reference.Gemm(m, n, k, x, k, w, 1, k);
            AssertClose(c, sum, k, y, n, m, n, "Linear on huge pages");
        });
    }

    /// <summary>
    /// A weight advised as huge pages gets them also after the C allocator has recycled memory: glibc serves large blocks
    /// from its heap once a larger one was freed, and a heap block touched before keeps its 4 KB pages (the weight then
    /// got AnonHugePages 0 kB — the layer it belonged to ran 1.3× slower). The sequence below puts such a block where
    /// the allocator would serve the weight from; the weight must sit in a mapping of its own, on huge pages (asserted
    /// where THP is on for advised memory and the kernel compacts for it: <c>defrag</c> not <c>[never]</c>/<c>[defer]</c>).
    /// </summary>
    [Fact]
    public unsafe void LargeWeights_GetHugePages_AfterTheAllocatorRecycledMemory()
    {
        const int n = 770, k = 1030;                                     // 3.0–3.2 MB packed
        string thp = File.Exists("/sys/kernel/mm/transparent_hugepage/enabled") ? File.ReadAllText("/sys/kernel/mm/transparent_hugepage/enabled") : "";
        string defrag = File.Exists("/sys/kernel/mm/transparent_hugepage/defrag") ? File.ReadAllText("/sys/kernel/mm/transparent_hugepage/defrag") : "";
        if (!OperatingSystem.IsLinux() || !WeightMemory.Enabled || !(thp.Contains("[madvise]") || thp.Contains("[always]")))
        {
            using var plain = new PackedWeight(Reference.Random(n * k, 33), n, k);
            Assert.Equal(0, plain.HugePageBytes);
            return;
        }
        // raise glibc's mmap threshold (a freed 24 MB block), then leave a touched 8 MB block free in its heap
        void* big = NativeMemory.AlignedAlloc(24 << 20, 64);
        new Span<byte>(big, 24 << 20).Fill(1);
        NativeMemory.AlignedFree(big);
        void* used = NativeMemory.AlignedAlloc(8 << 20, 64);
        void* after = NativeMemory.Alloc(1024);                          // keeps the freed block from being trimmed away
        new Span<byte>(used, 8 << 20).Fill(1);
        NativeMemory.AlignedFree(used);
        try
        {
            float[] w = Reference.Random(n * k, 33), x = Reference.Random(3 * k, 34);
            using var pw = new PackedWeight(w, n, k);
            byte* data = pw.Acquire();
            try
            {
                Assert.Equal(WeightMemory.HugeBytes(pw.SizeInBytes), pw.HugePageBytes);
                Assert.Equal(0, (long)data % WeightMemory.HugePage);
                Assert.Equal("1", SmapsField((nint)data, "THPeligible"));
                if (!defrag.Contains("[never]") && !defrag.Contains("[defer]"))
                {
                    string? huge = SmapsField((nint)data, "AnonHugePages");
                    Assert.NotNull(huge);
                    Assert.True(long.Parse(huge!.Split(' ')[0]) >= 2048, $"the weight's mapping has AnonHugePages {huge}");
                }
            }
            finally { pw.Release(); }
            float[] y = Filled(3 * n, float.NaN);
            Gemm.Linear(x, 3, pw, y, new float[pw.ScratchSize(3)]);
            var (c, sum) = Reference.Gemm(3, n, k, x, k, w, 1, k);
            AssertClose(c, sum, k, y, n, 3, n, "Linear on its own mapping");
        }
        finally { NativeMemory.Free(after); }
    }

    /// <summary>A field of the /proc/self/smaps entry of the mapping that holds <paramref name="address"/>.</summary>
    private static string? SmapsField(nint address, string field)
    {
        bool inside = false;
        foreach (var line in File.ReadLines("/proc/self/smaps"))
        {
            int dash = line.IndexOf('-');
            int space = line.IndexOf(' ');
            if (dash > 0 && space > dash && long.TryParse(line.AsSpan(0, dash), System.Globalization.NumberStyles.HexNumber, null, out long lo)
                && long.TryParse(line.AsSpan(dash + 1, space - dash - 1), System.Globalization.NumberStyles.HexNumber, null, out long hi))
            {
                inside = lo <= address && address < hi;
                continue;
            }
            if (inside && line.StartsWith(field + ":", StringComparison.Ordinal)) return line[(field.Length + 1)..].Trim();
        }
        return null;
    }

    internal static float[] Filled(int n, float v)
    {
        var a = new float[n];
        Array.Fill(a, v);
        return a;
    }
}
