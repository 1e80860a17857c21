using System.Runtime.InteropServices;

namespace FastAttn.Kernels;

/// <summary>
/// A weight matrix stored like PyTorch's <c>nn.Linear.weight</c> (<c>[outFeatures, inFeatures]</c>, row-major), packed
/// once into the GEMM microkernel's panel layout (panels of 2 vectors of output features, K rows each) in 64-byte-aligned
/// native memory.
/// <para>
/// Optionally in <i>segments</i>: consecutive row blocks of the weight (for example the query, key and value blocks of
/// an attention <c>in_proj_weight</c>) each start on a panel boundary, so a product can run over one segment alone
/// (cross-attention projects queries and keys separately) or over all of them at once (self-attention: one GEMM) with
/// no second copy of the weights. With segments the product's output columns are the padded ones:
/// segment s occupies columns <see cref="SegmentColumn"/>(s) onwards.
/// </para>
/// <para>
/// Immutable after construction and safe to share across threads. <see cref="Dispose"/> may race with products using
/// the weight: they keep the memory alive until they finish; later ones throw <see cref="ObjectDisposedException"/>.
/// A weight dropped without Dispose frees its memory when collected (never while a product is reading it).
/// </para>
/// </summary>
public sealed unsafe class PackedWeight : IDisposable
{
    private byte* _data;
    private readonly long _mapped; // the storage's own mapping's length (0: from the C allocator)
    private nint _colScaleOffset, _colSumOffset; // int8: per packed column scale and quantized sum, after the panels
    private int _refs = 1;      // 1 for the owner, +1 per product in flight
    private int _disposed;
    private readonly int[] _segmentRows, _segmentColumn;

    /// <summary>Rows of the original weight (the output width N).</summary>
    public int OutFeatures { get; }
    /// <summary>Columns of the original weight (the reduction depth K).</summary>
    public int InFeatures { get; }
    /// <summary>Bytes of packed storage.</summary>
    public long SizeInBytes { get; }
    /// <summary>Bytes of the storage (from its start) advised as transparent huge pages: 0 off Linux, below 1.5 MB, or when switched off (see <see cref="WeightMemory"/>).</summary>
    internal long HugePageBytes { get; }
    /// <summary>The kernel path the panels are laid out for (products with this weight run on it).</summary>
    public IsaPath Isa { get; }
    /// <summary>Output columns a product over the whole weight writes: <see cref="OutFeatures"/>, plus padding between segments.</summary>
    public int PackedOutFeatures { get; }
    /// <summary>Number of segments (1 unless built with segments).</summary>
    public int Segments => _segmentRows.Length;
    /// <summary>Columns per panel.</summary>
    public int PanelWidth => Precision == Precision.Int8 ? Int8Gemm.NR : GemmCore.PanelWidth(Isa);
    /// <summary>How the weights are stored and the products computed.</summary>
    public Precision Precision { get; }

    /// <summary>Packs <paramref name="weight"/> of shape <c>[outFeatures, inFeatures]</c> for the active kernel path.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is below 1.</exception>
    /// <exception cref="ArgumentException"><paramref name="weight"/> does not hold outFeatures × inFeatures elements.</exception>
    public PackedWeight(ReadOnlySpan<float> weight, int outFeatures, int inFeatures)
        : this(weight, outFeatures, inFeatures, default, Kernels.Isa.Current) { }

    /// <summary>Packs <paramref name="weight"/> of shape <c>[outFeatures, inFeatures]</c> in <paramref name="precision"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is below 1, the precision is unknown, or an int8 weight is deeper than 65,536.</exception>
    /// <exception cref="ArgumentException"><paramref name="weight"/> does not hold outFeatures × inFeatures elements.</exception>
    public PackedWeight(ReadOnlySpan<float> weight, int outFeatures, int inFeatures, Precision precision)
        : this(weight, outFeatures, inFeatures, default, Kernels.Isa.Current, precision) { }

    /// <summary>
    /// Packs <paramref name="weight"/> <c>[outFeatures, inFeatures]</c> in segments of <paramref name="segmentRows"/> rows
    /// (adding up to outFeatures), each starting on a panel boundary.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is below 1.</exception>
    /// <exception cref="ArgumentException">The weight's length or the segments do not match the shape.</exception>
    public PackedWeight(ReadOnlySpan<float> weight, int outFeatures, int inFeatures, ReadOnlySpan<int> segmentRows)
        : this(weight, outFeatures, inFeatures, segmentRows, Kernels.Isa.Current) { }

    /// <summary>As above, in <paramref name="precision"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is below 1, the precision is unknown, or an int8 weight is deeper than 65,536.</exception>
    /// <exception cref="ArgumentException">The weight's length or the segments do not match the shape.</exception>
    public PackedWeight(ReadOnlySpan<float> weight, int outFeatures, int inFeatures, ReadOnlySpan<int> segmentRows, Precision precision)
        : this(weight, outFeatures, inFeatures, segmentRows, Kernels.Isa.Current, precision) { }

    /// <summary>As above, for kernel path <paramref name="isa"/> (tests run every path in one process).</summary>
    internal PackedWeight(ReadOnlySpan<float> weight, int outFeatures, int inFeatures, ReadOnlySpan<int> segmentRows, IsaPath isa, Precision precision = Precision.F32)
    {
        if ((uint)precision > (uint)Precision.BF16Weights) ThrowHelper.OutOfRange(nameof(precision), precision, "Unknown precision.");
        if (precision == Precision.Int8 && inFeatures > Int8Gemm.MaxDepth)
            ThrowHelper.OutOfRange(nameof(inFeatures), inFeatures, $"int8 weights need inFeatures ≤ {Int8Gemm.MaxDepth} (int32 accumulation); it is {inFeatures}.");
        Precision = precision;
        ThrowHelper.Positive(outFeatures, nameof(outFeatures));
        ThrowHelper.Positive(inFeatures, nameof(inFeatures));
        ThrowHelper.ExactLength(weight.Length, (long)outFeatures * inFeatures, nameof(weight), $"outFeatures*inFeatures = {outFeatures}*{inFeatures}");
        if (!Kernels.Isa.IsSupported(isa)) ThrowHelper.Argument(nameof(isa), $"kernel path {isa} is not supported in this process.");
        int[] seg = segmentRows.IsEmpty ? [outFeatures] : segmentRows.ToArray();
        long sum = 0;
        foreach (int r in seg)
        {
            if (r < 1) ThrowHelper.Argument(nameof(segmentRows), $"'segmentRows' holds {r}; every segment needs at least one row.");
            sum += r;
        }
        if (sum != outFeatures) ThrowHelper.Argument(nameof(segmentRows), $"'segmentRows' add up to {sum}; expected outFeatures = {outFeatures}.");
        Isa = isa;
        OutFeatures = outFeatures;
        InFeatures = inFeatures;
        int nr = precision == Precision.Int8 ? Int8Gemm.NR : GemmCore.PanelWidth(isa);
        _segmentRows = seg;
        _segmentColumn = new int[seg.Length];
        long col = 0;
        for (int s = 0; s < seg.Length; s++)
        {
            _segmentColumn[s] = (int)col;
            // segments after the first start on a panel boundary; the last is not padded beyond its panel
            col += s == seg.Length - 1 ? seg[s] : GemmCore.RoundUp(seg[s], nr);
        }
        if (col > int.MaxValue) ThrowHelper.Argument(nameof(segmentRows), "the padded segments are too wide.");
        PackedOutFeatures = (int)col;
        long panelBytes = precision switch
        {
            Precision.Int8 => Int8Gemm.PackedBytes(inFeatures, PackedOutFeatures),
            Precision.BF16Weights => GemmCore.PackedBSize(isa, inFeatures, PackedOutFeatures) * sizeof(ushort),
            _ => GemmCore.PackedBSize(isa, inFeatures, PackedOutFeatures) * sizeof(float),
        };
        long paddedCols = GemmCore.RoundUp(PackedOutFeatures, nr);
        _colScaleOffset = (nint)((panelBytes + 63) / 64 * 64);
        _colSumOffset = _colScaleOffset + (nint)paddedCols * sizeof(float);
        SizeInBytes = precision == Precision.Int8 ? _colSumOffset + paddedCols * sizeof(int) : panelBytes;
        _data = WeightMemory.Allocate(SizeInBytes, out long advised, out _mapped);
        HugePageBytes = advised;
        GC.AddMemoryPressure(Math.Max(SizeInBytes, advised));
        try
        {
            fixed (float* w = weight)
            {
                for (int s = 0; s < seg.Length; s++)
                {
                    // B(k, n) = W[row0 + n, k]: element (k, n) at w[(row0 + n)·inFeatures + k]
                    long row0 = 0;
                    for (int t = 0; t < s; t++) row0 += seg[t];
                    long panel0 = _segmentColumn[s] / nr;
                    float* src = w + row0 * inFeatures;
                    switch (precision)
                    {
                        case Precision.Int8:
                            Int8Gemm.PackWeights(src, inFeatures, inFeatures, seg[s], (sbyte*)_data + panel0 * Int8Gemm.NR * Int8Gemm.Groups(inFeatures) * 4,
                                (float*)(_data + _colScaleOffset) + _segmentColumn[s], (int*)(_data + _colSumOffset) + _segmentColumn[s]);
                            break;
                        case Precision.BF16Weights:
                            PackBf16(isa, src, inFeatures, seg[s], (ushort*)_data + panel0 * nr * inFeatures);
                            break;
                        default:
                            GemmCore.PackB(isa, src, 1, inFeatures, inFeatures, seg[s], (float*)_data + panel0 * nr * inFeatures);
                            break;
                    }
                }
            }
        }
        catch
        {
            Free();
            GC.SuppressFinalize(this);
            throw;
        }
        KernelWarmup.Note(precision); // multi-thread sessions created from now on compile this form's tile variants ahead
    }

    /// <summary>
    /// Packs like the FP32 panels (denormals as 0), then rounds each weight to bfloat16 (nearest even; NaN stays NaN): a
    /// normal float never rounds to a denormal bfloat16 (the least normal float is one).
    /// </summary>
    private static void PackBf16(IsaPath isa, float* src, int inFeatures, int rows, ushort* dst)
    {
        long n = GemmCore.PackedBSize(isa, inFeatures, rows);
        float* tmp = (float*)NativeMemory.Alloc((nuint)(n * sizeof(float)));
        try
        {
            GemmCore.PackB(isa, src, 1, inFeatures, inFeatures, rows, tmp);
            for (long i = 0; i < n; i++) dst[i] = ToBf16(tmp[i]);
        }
        finally { NativeMemory.Free(tmp); }
    }

    /// <summary>The bfloat16 nearest to <paramref name="x"/> (ties to even); NaN maps to a quiet NaN.</summary>
    internal static ushort ToBf16(float x)
    {
        uint bits = BitConverter.SingleToUInt32Bits(x);
        if (float.IsNaN(x)) return (ushort)((bits >> 16) | 0x40);
        bits += 0x7FFFu + ((bits >> 16) & 1u);
        return (ushort)(bits >> 16);
    }

    /// <summary>The float a bfloat16 stands for.</summary>
    internal static float FromBf16(ushort b) => BitConverter.UInt32BitsToSingle((uint)b << 16);

    /// <summary>Per packed column: the int8 weight scale (null unless <see cref="Precision.Int8"/>).</summary>
    internal float* ColumnScales(byte* data) => (float*)(data + _colScaleOffset);
    /// <summary>Per packed column: the sum of the quantized weights (null unless <see cref="Precision.Int8"/>).</summary>
    internal int* ColumnSums(byte* data) => (int*)(data + _colSumOffset);

    /// <summary>Floats of scratch a product over <paramref name="rows"/> rows needs on the calling thread.</summary>
    public long ScratchSize(int rows) => Precision == Precision.Int8
        ? Int8Gemm.ScratchFloats(rows, InFeatures)
        : GemmCore.APackSize(Isa, rows, InFeatures);

    /// <summary>Floats of scratch each worker thread of a pool needs for a product over <paramref name="rows"/> rows.</summary>
    public long WorkerScratchSize(int rows) => Precision == Precision.Int8
        ? Int8Gemm.WorkerScratchFloats()
        : GemmCore.WorkerScratchSize(Isa, rows, InFeatures);

    /// <summary>Rows of segment <paramref name="segment"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="segment"/> is not in [0, <see cref="Segments"/>).</exception>
    public int SegmentRows(int segment) => _segmentRows[CheckSegment(segment)];
    /// <summary>The output column (a multiple of <see cref="PanelWidth"/>) where segment <paramref name="segment"/> starts.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="segment"/> is not in [0, <see cref="Segments"/>).</exception>
    public int SegmentColumn(int segment) => _segmentColumn[CheckSegment(segment)];

    private int CheckSegment(int segment) => (uint)segment < (uint)_segmentRows.Length ? segment
        : throw new ArgumentOutOfRangeException(nameof(segment), segment, $"segments are 0..{_segmentRows.Length - 1}.");

    /// <summary>
    /// Takes a reference for a product and returns the panels; pair with <see cref="Release"/> (in a finally).
    /// </summary>
    /// <exception cref="ObjectDisposedException">The weight was disposed.</exception>
    internal byte* Acquire()
    {
        while (true)
        {
            int r = Volatile.Read(ref _refs);
            if (r == 0) ThrowHelper.Disposed(nameof(PackedWeight));
            if (Interlocked.CompareExchange(ref _refs, r + 1, r) == r) return _data;
        }
    }

    internal void Release()
    {
        if (Interlocked.Decrement(ref _refs) == 0) Free();
    }

    /// <summary>Frees the packed storage once no product is using it; later products throw <see cref="ObjectDisposedException"/>.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            Release();
            GC.SuppressFinalize(this);
        }
    }

    private void Free()
    {
        byte* p = _data;
        if (p == null) return;
        _data = null;
        WeightMemory.Free(p, _mapped);
        GC.RemoveMemoryPressure(Math.Max(SizeInBytes, HugePageBytes));
    }

    /// <summary>
    /// Frees the storage if the owner forgot to dispose. A product in flight keeps this object reachable (it holds a
    /// reference until it releases), so the finalizer never runs under a kernel.
    /// </summary>
    ~PackedWeight() => Free();
}
