namespace FastAttn.Kernels;

/// <summary>
/// What happens to each output element after the product: out = act(alpha·(A·B) [+ C] + bias) [+ residual].
/// </summary>
public ref struct GemmEpilogue
{
    private float _alpha;
    private bool _alphaSet;

    /// <summary>Multiplier on the product (1 unless set, also for <c>default</c>).</summary>
    public float Alpha
    {
        readonly get => _alphaSet ? _alpha : 1f;
        set { _alpha = value; _alphaSet = true; }
    }
    /// <summary>Add the product to what the output already holds.</summary>
    public bool Accumulate;
    /// <summary>Per-column bias of length N, or empty for none.</summary>
    public ReadOnlySpan<float> Bias;
    /// <summary>Activation applied after bias.</summary>
    public Activation Activation;
    /// <summary>M×N residual (row stride <see cref="ResidualStride"/>) added after the activation, or empty.</summary>
    public ReadOnlySpan<float> Residual;
    /// <summary>Row stride of <see cref="Residual"/>; 0 means N.</summary>
    public int ResidualStride;

}

/// <summary>
/// Single-precision matrix multiplication on row-major spans, allocation-free: the caller provides
/// scratch, sized by the matching <c>…ScratchSize</c> method.
/// </summary>
public static unsafe class Gemm
{
    /// <summary>The instruction-set path in use.</summary>
    public static IsaPath Path => Isa.Active;

    /// <summary>Scratch floats <see cref="Linear(ReadOnlySpan{float}, int, PackedWeight, Span{float}, Span{float}, GemmEpilogue)"/> needs for <paramref name="rows"/> rows of width <paramref name="inFeatures"/>.</summary>
    public static int LinearScratchSize(int rows, int inFeatures) => GemmCore.APackSize(Math.Max(rows, 1), Math.Max(inFeatures, 1));

    /// <summary>Scratch floats <see cref="MatMul"/> needs for an M×K by K×N product.</summary>
    public static long MatMulScratchSize(int m, int n, int k) =>
        GemmCore.PackedBSize(Math.Max(k, 1), Math.Max(n, 1)) + GemmCore.APackSize(Math.Max(m, 1), Math.Max(k, 1));

    /// <summary>
    /// y = epilogue(x · Wᵀ) for x <c>[rows, W.InFeatures]</c> and y <c>[rows, W.OutFeatures]</c>, both contiguous.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="rows"/> is below 1.</exception>
    /// <exception cref="ArgumentException">A span is shorter than its shape, bias/residual do not match, or the output overlaps an input or the scratch.</exception>
    /// <exception cref="ObjectDisposedException"><paramref name="weight"/> was disposed.</exception>
    public static void Linear(ReadOnlySpan<float> x, int rows, PackedWeight weight, Span<float> y, Span<float> scratch,
        GemmEpilogue epilogue = default) => Linear(x, rows, weight, y, scratch, epilogue, null);

    /// <summary>As above, split over <paramref name="pool"/>'s threads when the product is large enough.</summary>
    internal static void Linear(ReadOnlySpan<float> x, int rows, PackedWeight weight, Span<float> y, Span<float> scratch,
        GemmEpilogue epilogue, Threading.WorkerPool? pool)
    {
        ArgumentNullException.ThrowIfNull(weight);
        ThrowHelper.Positive(rows, nameof(rows));
        int k = weight.InFeatures, n = weight.OutFeatures;
        ThrowHelper.Length(x.Length, (long)rows * k, nameof(x), $"rows*inFeatures = {rows}*{k}");
        ThrowHelper.Length(y.Length, (long)rows * n, nameof(y), $"rows*outFeatures = {rows}*{n}");
        ThrowHelper.Length(scratch.Length, LinearScratchSize(rows, k), nameof(scratch), $"LinearScratchSize({rows}, {k})");
        CheckEpilogue(ref epilogue, rows, n);
        ReadOnlySpan<float> yr = y;
        ThrowHelper.NoOverlap(yr, x, nameof(y), nameof(x));
        ThrowHelper.NoOverlap(yr, epilogue.Bias, nameof(y), "epilogue.Bias");
        ThrowHelper.NoOverlap(yr, epilogue.Residual, nameof(y), "epilogue.Residual");
        ThrowHelper.NoOverlap<float>(scratch, x, nameof(scratch), nameof(x));
        ThrowHelper.NoOverlap<float>(scratch, yr, nameof(scratch), nameof(y));
        fixed (float* px = x, py = y, ps = scratch, pb = epilogue.Bias, pr = epilogue.Residual)
        {
            var g = MakeArgs(px, k, rows, n, k, weight.Data, py, n, ref epilogue, pb, pr);
            if (pool == null || !pool.Jobs.Gemm.TryRun(g)) GemmCore.RunAll(g, ps);
        }
    }

    /// <summary>
    /// y = x · W[outStart .. outStart+outCount)ᵀ + bias[outStart ..]: a block of the weight's output features, for
    /// projections packed side by side. outStart must be a multiple of <see cref="PanelWidth"/>; y is
    /// <c>[rows, outCount]</c>. Shapes are trusted (internal callers check them).
    /// </summary>
    internal static void LinearBlock(ReadOnlySpan<float> x, int rows, PackedWeight weight, Span<float> y, Span<float> scratch,
        ReadOnlySpan<float> bias, int outStart, int outCount)
    {
        int k = weight.InFeatures, nr = GemmCore.NR;
        if (outStart % nr != 0) throw new InvalidOperationException($"output block start {outStart} is not a multiple of the panel width {nr}.");
        fixed (float* px = x, py = y, ps = scratch, pb = bias)
        {
            var g = new GemmArgs
            {
                A = px, Lda = k, M = rows, N = outStart + outCount, K = k, PackedB = weight.Data, PanelStride = (nint)k * nr,
                C = py - outStart, Ldc = outCount, Alpha = 1f, Bias = bias.IsEmpty ? null : pb,
            };
            GemmCore.Run(g, 0, rows, outStart / nr, (outStart + outCount + nr - 1) / nr, ps);
        }
    }

    /// <summary>Columns per packed weight panel on the active path (2 vectors).</summary>
    public static int PanelWidth => GemmCore.NR;

    /// <summary>
    /// C = epilogue(A · B) where A is M×K (row stride lda), B is K×N (row stride ldb) or, when
    /// <paramref name="transposeB"/> is set, B is given as its transpose N×K (row stride ldb), and C is
    /// M×N (row stride ldc). B is packed into <paramref name="scratch"/> for each call.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is below 1 or a stride below its row width.</exception>
    /// <exception cref="ArgumentException">A span is shorter than its strided shape, bias/residual do not match, or the output overlaps an input or the scratch.</exception>
    public static void MatMul(int m, int n, int k,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, bool transposeB,
        Span<float> c, int ldc, Span<float> scratch, GemmEpilogue epilogue = default)
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
        CheckEpilogue(ref epilogue, m, n);
        ReadOnlySpan<float> cr = c, sr = scratch;
        ThrowHelper.NoOverlap(cr, a, nameof(c), nameof(a));
        ThrowHelper.NoOverlap(cr, b, nameof(c), nameof(b));
        ThrowHelper.NoOverlap(cr, epilogue.Bias, nameof(c), "epilogue.Bias");
        ThrowHelper.NoOverlap(cr, epilogue.Residual, nameof(c), "epilogue.Residual");
        ThrowHelper.NoOverlap(sr, a, nameof(scratch), nameof(a));
        ThrowHelper.NoOverlap(sr, b, nameof(scratch), nameof(b));
        ThrowHelper.NoOverlap(sr, cr, nameof(scratch), nameof(c));
        fixed (float* pa = a, pbm = b, pc = c, ps = scratch, pb = epilogue.Bias, pr = epilogue.Residual)
        {
            float* packed = ps;
            if (transposeB) GemmCore.PackB(pbm, 1, ldb, k, n, packed);
            else GemmCore.PackB(pbm, ldb, 1, k, n, packed);
            var g = MakeArgs(pa, lda, m, n, k, packed, pc, ldc, ref epilogue, pb, pr);
            GemmCore.RunAll(g, ps + GemmCore.PackedBSize(k, n));
        }
    }

    private static void CheckEpilogue(ref GemmEpilogue e, int m, int n)
    {
        if (!e.Bias.IsEmpty && e.Bias.Length != n)
            ThrowHelper.Argument("epilogue.Bias", $"'epilogue.Bias' has {e.Bias.Length} elements; expected n = {n}.");
        if (!e.Residual.IsEmpty)
        {
            int ldr = e.ResidualStride == 0 ? n : e.ResidualStride;
            if (ldr < n) ThrowHelper.OutOfRange("epilogue.ResidualStride", ldr, $"'epilogue.ResidualStride' must be at least n = {n}; it is {ldr}.");
            ThrowHelper.Length(e.Residual.Length, ThrowHelper.Extent(m, n, ldr), "epilogue.Residual", $"(m-1)*stride+n with m={m}, n={n}, stride={ldr}");
        }
        if ((uint)e.Activation > (uint)Activation.Sigmoid)
            ThrowHelper.OutOfRange("epilogue.Activation", e.Activation, "Unknown activation.");
    }

    internal static GemmArgs MakeArgs(float* a, nint lda, int m, int n, int k, float* packedB, float* c, nint ldc,
        ref GemmEpilogue e, float* bias, float* residual)
    {
        return new GemmArgs
        {
            A = a, Lda = lda, M = m, N = n, K = k, PackedB = packedB, PanelStride = (nint)k * GemmCore.NR, C = c, Ldc = ldc,
            Alpha = e.Alpha, Accumulate = e.Accumulate,
            Bias = e.Bias.IsEmpty ? null : bias, Act = e.Activation,
            Residual = e.Residual.IsEmpty ? null : residual,
            Ldr = e.ResidualStride == 0 ? n : e.ResidualStride,
        };
    }
}
