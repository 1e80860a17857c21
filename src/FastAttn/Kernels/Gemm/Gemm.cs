using System.Diagnostics;
using FastAttn.Threading;

namespace FastAttn.Kernels;

/// <summary>
/// Single-precision matrix multiplication on row-major spans, allocation-free: the caller provides scratch, sized by
/// the matching <c>…ScratchSize</c> method. The public methods check every argument once and then run the unchecked
/// core that layers call directly. Given a <see cref="WorkerPool"/>, a product large enough to pay for the hand-off is
/// split over its threads (bit-identical results for any thread count).
/// </summary>
public static unsafe class Gemm
{
    /// <summary>The instruction-set path in use.</summary>
    public static IsaPath Path => Isa.Current;

    /// <summary>Columns per packed weight panel on the active path (2 vectors).</summary>
    public static int PanelWidth => GemmCore.PanelWidth(Isa.Current);

    /// <summary>Scratch floats <see cref="Linear"/> needs for <paramref name="rows"/> rows of width <paramref name="inFeatures"/> (on the calling thread) with an FP32 or bf16 weight; see <see cref="PackedWeight.ScratchSize"/> for any weight.</summary>
    public static int LinearScratchSize(int rows, int inFeatures) => GemmCore.APackSize(Isa.Current, rows, inFeatures);

    /// <summary>Scratch floats <see cref="MatMul"/> needs for an M×K by K×N product.</summary>
    public static long MatMulScratchSize(int m, int n, int k) =>
        GemmCore.PackedBSize(Isa.Current, Math.Max(k, 1), Math.Max(n, 1)) + 16 + GemmCore.APackSize(Isa.Current, m, k); // + 16: B's panels start on a line

    /// <summary>
    /// y = epilogue(x · Wᵀ) for x <c>[rows, W.InFeatures]</c> and y <c>[rows, W.PackedOutFeatures]</c> (= OutFeatures for a
    /// weight without segments), both contiguous. With <paramref name="pool"/>, split over its threads when large enough.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="weight"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="rows"/> is below 1, or an epilogue field is out of range.</exception>
    /// <exception cref="ArgumentException">A span is shorter than its shape, bias/residual do not match, or the output overlaps an input or the scratch.</exception>
    /// <exception cref="ObjectDisposedException"><paramref name="weight"/> or <paramref name="pool"/> was disposed.</exception>
    /// <exception cref="InvalidOperationException"><paramref name="pool"/> is running work for another caller.</exception>
    public static void Linear(ReadOnlySpan<float> x, int rows, PackedWeight weight, Span<float> y, Span<float> scratch,
        GemmEpilogue epilogue = default, WorkerPool? pool = null)
    {
        ArgumentNullException.ThrowIfNull(weight);
        ThrowHelper.Positive(rows, nameof(rows));
        int k = weight.InFeatures, n = weight.PackedOutFeatures;
        ThrowHelper.Length(x.Length, (long)rows * k, nameof(x), $"rows*inFeatures = {rows}*{k}");
        ThrowHelper.Length(y.Length, (long)rows * n, nameof(y), $"rows*outFeatures = {rows}*{n}");
        ThrowHelper.Length(scratch.Length, weight.ScratchSize(rows), nameof(scratch), $"weight.ScratchSize({rows})");
        var bias = epilogue.Bias.Span;
        var residual = epilogue.Residual.Span;
        int ldr = CheckEpilogue(epilogue, bias, residual, rows, n);
        ReadOnlySpan<float> yr = y;
        ThrowHelper.NoOverlap(yr, x, nameof(y), nameof(x));
        ThrowHelper.NoOverlap(yr, bias, nameof(y), "epilogue.Bias");
        ThrowHelper.NoOverlap(yr, residual, nameof(y), "epilogue.Residual");
        ThrowHelper.NoOverlap<float>(scratch, x, nameof(scratch), nameof(x));
        ThrowHelper.NoOverlap<float>(scratch, yr, nameof(scratch), nameof(y));
        LinearCore(x, rows, weight, y, scratch, bias, epilogue.Activation, residual, ldr, epilogue.Alpha, epilogue.Accumulate, pool);
    }

    /// <summary>
    /// The unchecked core of <see cref="Linear"/>: y = act(alpha·x·Wᵀ (+y) + bias) + residual over every packed output
    /// column. The caller guarantees the shapes (asserted in debug builds).
    /// </summary>
    internal static void LinearCore(ReadOnlySpan<float> x, int rows, PackedWeight weight, Span<float> y, Span<float> scratch,
        ReadOnlySpan<float> bias, Activation act, ReadOnlySpan<float> residual, int ldr, float alpha = 1f, bool accumulate = false, WorkerPool? pool = null)
    {
        int k = weight.InFeatures, n = weight.PackedOutFeatures;
        Debug.Assert(rows >= 1 && x.Length >= (long)rows * k && y.Length >= (long)rows * n);
        Debug.Assert(scratch.Length >= weight.ScratchSize(rows) && (bias.IsEmpty || bias.Length == n));
        byte* data = weight.Acquire();
        try
        {
            fixed (float* px = x, py = y, ps = scratch, pb = bias, pr = residual)
            {
                if (weight.Precision == Precision.Int8)
                {
                    var q = new Int8Args
                    {
                        Kernel = Int8Gemm.Current(weight.Isa), MR = Int8Gemm.TileRows(weight.Isa), M = rows, N = n, PackedB = (sbyte*)data, PanelStride = (nint)Int8Gemm.NR * Int8Gemm.Groups(k) * 4,
                        ColScale = weight.ColumnScales(data), ColSum = weight.ColumnSums(data), C = py, Ldc = n, Alpha = alpha, Accumulate = accumulate,
                        Bias = bias.IsEmpty ? null : pb, Act = act, Residual = residual.IsEmpty ? null : pr, Ldr = ldr == 0 ? n : ldr,
                    };
                    Int8Gemm.Run(ref q, px, k, k, ps, pool);
                    return;
                }
                var g = Args(weight, data, px, rows, py, bias.IsEmpty ? null : pb, act, residual.IsEmpty ? null : pr, ldr, alpha, accumulate);
                GemmCore.Run(g, ps, pool);
            }
        }
        finally { weight.Release(); }
    }

    /// <summary>
    /// <see cref="LinearCore"/> for a weight of three equal segments (FP32 or bf16) split over the pool by heads: thread w
    /// computes, in each segment, the panels [edges[w], edges[w + 1]) (see <see cref="GemmCore.RunHeadShares"/>). Same bits.
    /// </summary>
    internal static void LinearHeadSharesCore(ReadOnlySpan<float> x, int rows, PackedWeight weight, Span<float> y, Span<float> scratch,
        ReadOnlySpan<float> bias, Activation act, WorkerPool pool, ReadOnlySpan<int> edges)
    {
        int k = weight.InFeatures, n = weight.PackedOutFeatures, nr = weight.PanelWidth;
        Debug.Assert(weight.Precision != Precision.Int8 && weight.Segments == 3 && weight.SegmentColumn(1) % nr == 0);
        Debug.Assert(rows >= 1 && x.Length >= (long)rows * k && y.Length >= (long)rows * n && scratch.Length >= weight.ScratchSize(rows));
        byte* data = weight.Acquire();
        try
        {
            fixed (float* px = x, py = y, ps = scratch, pb = bias)
                GemmCore.RunHeadShares(Args(weight, data, px, rows, py, bias.IsEmpty ? null : pb, act, null, 0, 1f, false), ps, pool, weight.SegmentColumn(1) / nr, edges);
        }
        finally { weight.Release(); }
    }

    /// <summary>The FP32/bf16 product of <paramref name="rows"/> rows of x with the whole of <paramref name="weight"/> (its packed columns).</summary>
    private static GemmArgs Args(PackedWeight weight, byte* data, float* x, int rows, float* y, float* bias, Activation act, float* residual, int ldr,
        float alpha, bool accumulate)
    {
        int k = weight.InFeatures, n = weight.PackedOutFeatures;
        bool bf16 = weight.Precision == Precision.BF16Weights;
        return new GemmArgs
        {
            Isa = weight.Isa, A = x, Lda = k, M = rows, N = n, K = k, PackedB = (float*)data, Bf16 = bf16,
            PanelStride = (nint)k * weight.PanelWidth / (bf16 ? 2 : 1),
            C = y, Ldc = n, Alpha = alpha, Accumulate = accumulate, Bias = bias, Act = act,
            Residual = residual, Ldr = ldr == 0 ? n : ldr,
        };
    }

    /// <summary>
    /// y = x · W[segment]ᵀ + bias[segment] for one segment of a segmented weight (y is <c>[rows, segment rows]</c>, bias
    /// indexed by the packed column). Unchecked: the caller guarantees the shapes.
    /// </summary>
    internal static void LinearSegmentCore(ReadOnlySpan<float> x, int rows, PackedWeight weight, int segment, Span<float> y, Span<float> scratch,
        ReadOnlySpan<float> packedBias, WorkerPool? pool = null)
    {
        int k = weight.InFeatures, nr = weight.PanelWidth, col0 = weight.SegmentColumn(segment), count = weight.SegmentRows(segment);
        Debug.Assert(col0 % nr == 0 && y.Length >= (long)rows * count && x.Length >= (long)rows * k);
        byte* data = weight.Acquire();
        try
        {
            fixed (float* px = x, py = y, ps = scratch, pb = packedBias)
            {
                // the segment's panels as a product of their own: N = count columns starting at panel col0 / nr
                if (weight.Precision == Precision.Int8)
                {
                    nint stride = (nint)Int8Gemm.NR * Int8Gemm.Groups(k) * 4;
                    var q = new Int8Args
                    {
                        Kernel = Int8Gemm.Current(weight.Isa), MR = Int8Gemm.TileRows(weight.Isa), M = rows, N = count, PackedB = (sbyte*)data + (long)(col0 / nr) * stride, PanelStride = stride,
                        ColScale = weight.ColumnScales(data) + col0, ColSum = weight.ColumnSums(data) + col0, C = py, Ldc = count, Alpha = 1f,
                        Bias = packedBias.IsEmpty ? null : pb + col0,
                    };
                    Int8Gemm.Run(ref q, px, k, k, ps, pool);
                    return;
                }
                bool bf16 = weight.Precision == Precision.BF16Weights;
                nint panelStride = (nint)k * nr / (bf16 ? 2 : 1);
                var g = new GemmArgs
                {
                    Isa = weight.Isa, A = px, Lda = k, M = rows, N = count, K = k, PackedB = (float*)data + (col0 / nr) * panelStride, Bf16 = bf16,
                    PanelStride = panelStride, C = py, Ldc = count, Alpha = 1f, Bias = packedBias.IsEmpty ? null : pb + col0,
                };
                GemmCore.Run(g, ps, pool);
            }
        }
        finally { weight.Release(); }
    }

    /// <summary>
    /// C = epilogue(A · B) where A is M×K (row stride lda), B is K×N (row stride ldb) or, when
    /// <paramref name="transposeB"/> is set, B is given as its transpose N×K (row stride ldb), and C is
    /// M×N (row stride ldc). B is packed into <paramref name="scratch"/> for each call.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is below 1 or a stride below its row width.</exception>
    /// <exception cref="ArgumentException">A span is shorter than its strided shape, bias/residual do not match, or the output overlaps an input or the scratch.</exception>
    /// <exception cref="ObjectDisposedException"><paramref name="pool"/> was disposed.</exception>
    /// <exception cref="InvalidOperationException"><paramref name="pool"/> is running work for another caller.</exception>
    public static void MatMul(int m, int n, int k,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, bool transposeB,
        Span<float> c, int ldc, Span<float> scratch, GemmEpilogue epilogue = default, WorkerPool? pool = null)
    {
        ThrowHelper.Positive(m, nameof(m));
        ThrowHelper.Positive(n, nameof(n));
        ThrowHelper.Positive(k, nameof(k));
        if (lda < k) ThrowHelper.OutOfRange(nameof(lda), lda, $"'lda' must be at least k = {k}; it is {lda}.");
        int bCols = transposeB ? k : n, bRows = transposeB ? n : k;
        if (ldb < bCols) ThrowHelper.OutOfRange(nameof(ldb), ldb, $"'ldb' must be at least {(transposeB ? "k" : "n")} = {bCols}; it is {ldb}.");
        if (ldc < n) ThrowHelper.OutOfRange(nameof(ldc), ldc, $"'ldc' must be at least n = {n}; it is {ldc}.");
        ThrowHelper.Length(a.Length, ThrowHelper.Extent(m, k, lda), nameof(a), $"(m-1)*lda+k with m={m}, k={k}, lda={lda}");
        ThrowHelper.Length(b.Length, ThrowHelper.Extent(bRows, bCols, ldb), nameof(b),
            $"({(transposeB ? "n" : "k")}-1)*ldb+{(transposeB ? "k" : "n")} with n={n}, k={k}, ldb={ldb}");
        ThrowHelper.Length(c.Length, ThrowHelper.Extent(m, n, ldc), nameof(c), $"(m-1)*ldc+n with m={m}, n={n}, ldc={ldc}");
        ThrowHelper.Length(scratch.Length, MatMulScratchSize(m, n, k), nameof(scratch), $"MatMulScratchSize({m}, {n}, {k})");
        var bias = epilogue.Bias.Span;
        var residual = epilogue.Residual.Span;
        int ldr = CheckEpilogue(epilogue, bias, residual, m, n);
        ReadOnlySpan<float> cr = c, sr = scratch;
        ThrowHelper.NoOverlap(cr, a, nameof(c), nameof(a));
        ThrowHelper.NoOverlap(cr, b, nameof(c), nameof(b));
        ThrowHelper.NoOverlap(cr, bias, nameof(c), "epilogue.Bias");
        ThrowHelper.NoOverlap(cr, residual, nameof(c), "epilogue.Residual");
        ThrowHelper.NoOverlap(sr, a, nameof(scratch), nameof(a));
        ThrowHelper.NoOverlap(sr, b, nameof(scratch), nameof(b));
        ThrowHelper.NoOverlap(sr, cr, nameof(scratch), nameof(c));
        var isa = Isa.Current;
        fixed (float* pa = a, pbm = b, pc = c, ps = scratch, pb = bias, pr = residual)
        {
            float* packed = GemmCore.AlignToLine(ps);
            if (transposeB) GemmCore.PackB(isa, pbm, 1, ldb, k, n, packed);
            else GemmCore.PackB(isa, pbm, ldb, 1, k, n, packed);
            var g = new GemmArgs
            {
                Isa = isa, A = pa, Lda = lda, M = m, N = n, K = k, PackedB = packed, PanelStride = (nint)k * GemmCore.PanelWidth(isa),
                C = pc, Ldc = ldc, Alpha = epilogue.Alpha, Accumulate = epilogue.Accumulate, Bias = bias.IsEmpty ? null : pb,
                Act = epilogue.Activation, Residual = residual.IsEmpty ? null : pr, Ldr = ldr,
            };
            GemmCore.Run(g, packed + GemmCore.PackedBSize(isa, k, n), pool);
        }
    }

    /// <summary>Checks the epilogue against an M×N product; returns the residual's row stride.</summary>
    private static int CheckEpilogue(in GemmEpilogue e, ReadOnlySpan<float> bias, ReadOnlySpan<float> residual, int m, int n)
    {
        if (!bias.IsEmpty && bias.Length != n)
            ThrowHelper.Argument("epilogue.Bias", $"'epilogue.Bias' has {bias.Length} elements; expected n = {n}.");
        int ldr = e.ResidualStride == 0 ? n : e.ResidualStride;
        if (!residual.IsEmpty)
        {
            if (ldr < n) ThrowHelper.OutOfRange("epilogue.ResidualStride", ldr, $"'epilogue.ResidualStride' must be at least n = {n}; it is {ldr}.");
            ThrowHelper.Length(residual.Length, ThrowHelper.Extent(m, n, ldr), "epilogue.Residual", $"(m-1)*stride+n with m={m}, n={n}, stride={ldr}");
        }
        if ((uint)e.Activation > (uint)Activation.Silu)
            ThrowHelper.OutOfRange("epilogue.Activation", e.Activation, "Unknown activation.");
        if (!float.IsFinite(e.Alpha)) ThrowHelper.OutOfRange("epilogue.Alpha", e.Alpha, "'epilogue.Alpha' must be finite.");
        return ldr;
    }
}
