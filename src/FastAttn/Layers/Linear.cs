using FastAttn.Kernels;
using FastAttn.Threading;

namespace FastAttn.Layers;

/// <summary>
/// The fully connected layer y = act(x·Wᵀ + b), W <c>[out, in]</c> like <c>nn.Linear</c>, packed once. Immutable and
/// shareable; <see cref="Dispose"/> may race with calls (they finish, later ones throw <see cref="ObjectDisposedException"/>).
/// </summary>
public sealed class Linear : IDisposable
{
    private readonly float[]? _bias;          // indexed by packed column (zeros between segments)
    private readonly float[]? _logicalBias;   // as given, for callers

    /// <summary>The packed weight.</summary>
    public PackedWeight Weight { get; }
    /// <summary>How the weight is stored and the product computed.</summary>
    public Precision Precision => Weight.Precision;
    /// <summary>Activation after the bias.</summary>
    public Activation Activation { get; }
    /// <summary>Bytes of the packed weight and the bias.</summary>
    public long WeightBytes => Weight.SizeInBytes + 4L * (_bias?.Length ?? 0);
    /// <summary>Input width.</summary>
    public int InFeatures => Weight.InFeatures;
    /// <summary>Output width.</summary>
    public int OutFeatures => Weight.OutFeatures;
    /// <summary>The bias (read-only view), empty when there is none.</summary>
    public ReadOnlySpan<float> Bias => _logicalBias;

    /// <summary>Builds the layer from a <c>[outFeatures, inFeatures]</c> weight and optional bias.</summary>
    /// <exception cref="ArgumentException">Shapes do not match.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is below 1, or the activation is unknown.</exception>
    public Linear(ReadOnlySpan<float> weight, int outFeatures, int inFeatures, ReadOnlySpan<float> bias = default, Activation activation = Activation.None)
        : this(weight, outFeatures, inFeatures, bias, activation, default) { }

    /// <summary>As above, with the weight stored and the product computed in <paramref name="precision"/>.</summary>
    /// <exception cref="ArgumentException">Shapes do not match.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is below 1, the activation or precision is unknown, or an int8 layer is deeper than 65,536.</exception>
    public Linear(ReadOnlySpan<float> weight, int outFeatures, int inFeatures, ReadOnlySpan<float> bias, Activation activation, Precision precision)
        : this(weight, outFeatures, inFeatures, bias, activation, default, precision) { }

    /// <summary>
    /// As above, packed in segments of output rows that each start on a panel boundary (see <see cref="PackedWeight"/>):
    /// a product over the whole layer writes <see cref="PackedWeight.PackedOutFeatures"/> columns.
    /// </summary>
    internal Linear(ReadOnlySpan<float> weight, int outFeatures, int inFeatures, ReadOnlySpan<float> bias, Activation activation, ReadOnlySpan<int> segments,
        Precision precision = Precision.F32)
    {
        if (!bias.IsEmpty) ThrowHelper.ExactLength(bias.Length, outFeatures, nameof(bias), "outFeatures");
        if ((uint)activation > (uint)Activation.Silu) ThrowHelper.OutOfRange(nameof(activation), activation, "Unknown activation.");
        Weight = new PackedWeight(weight, outFeatures, inFeatures, segments, Kernels.Isa.Current, precision);
        Activation = activation;
        if (!bias.IsEmpty)
        {
            _logicalBias = bias.ToArray();
            _bias = new float[Weight.PackedOutFeatures];
            int src = 0;
            for (int s = 0; s < Weight.Segments; s++)
            {
                bias.Slice(src, Weight.SegmentRows(s)).CopyTo(_bias.AsSpan(Weight.SegmentColumn(s)));
                src += Weight.SegmentRows(s);
            }
        }
    }

    /// <summary>Scratch floats for <paramref name="rows"/> rows (on the calling thread).</summary>
    public int ScratchSize(int rows) => checked((int)Weight.ScratchSize(rows));

    /// <summary>Scratch floats each worker thread of a pool needs for <paramref name="rows"/> rows.</summary>
    public long WorkerScratchSize(int rows) => Weight.WorkerScratchSize(rows);

    /// <summary>y = act(x·Wᵀ + b) [+ residual], split over <paramref name="pool"/>'s threads when large enough.</summary>
    /// <exception cref="ArgumentException">A span is shorter than its shape, or y overlaps x, the residual or the scratch.</exception>
    /// <exception cref="ObjectDisposedException">The layer or the pool was disposed.</exception>
    public void Forward(ReadOnlySpan<float> x, int rows, Span<float> y, Span<float> scratch, ReadOnlySpan<float> residual = default, WorkerPool? pool = null)
    {
        ThrowHelper.Positive(rows, nameof(rows));
        int n = Weight.PackedOutFeatures;
        ThrowHelper.Length(x.Length, (long)rows * InFeatures, nameof(x), $"rows*inFeatures = {rows}*{InFeatures}");
        ThrowHelper.Length(y.Length, (long)rows * n, nameof(y), $"rows*outFeatures = {rows}*{n}");
        ThrowHelper.Length(scratch.Length, ScratchSize(rows), nameof(scratch), $"ScratchSize({rows})");
        if (!residual.IsEmpty) ThrowHelper.Length(residual.Length, (long)rows * n, nameof(residual), $"rows*outFeatures = {rows}*{n}");
        ReadOnlySpan<float> yr = y;
        ThrowHelper.NoOverlap(yr, x, nameof(y), nameof(x));
        ThrowHelper.NoOverlap(yr, residual, nameof(y), nameof(residual));
        ThrowHelper.NoOverlap<float>(scratch, x, nameof(scratch), nameof(x));
        ThrowHelper.NoOverlap<float>(scratch, yr, nameof(scratch), nameof(y));
        ForwardCore(x, rows, y, scratch, residual, pool);
    }

    /// <summary>The unchecked core of <see cref="Forward"/> (layers call it with shapes they guarantee).</summary>
    internal void ForwardCore(ReadOnlySpan<float> x, int rows, Span<float> y, Span<float> scratch, ReadOnlySpan<float> residual, WorkerPool? pool)
        => Gemm.LinearCore(x, rows, Weight, y, scratch, _bias, Activation, residual, 0, pool: pool);

    /// <summary>The q|k|v product split by heads (<see cref="Gemm.LinearHeadSharesCore"/>); no residual. Unchecked.</summary>
    internal void ForwardHeadSharesCore(ReadOnlySpan<float> x, int rows, Span<float> y, Span<float> scratch, WorkerPool pool, ReadOnlySpan<int> edges)
        => Gemm.LinearHeadSharesCore(x, rows, Weight, y, scratch, _bias, Activation, pool, edges);

    /// <summary>y = x·W[segment]ᵀ + b[segment] (no activation): one segment of a segmented layer, y <c>[rows, segment rows]</c>. Unchecked.</summary>
    internal void ForwardSegmentCore(ReadOnlySpan<float> x, int rows, int segment, Span<float> y, Span<float> scratch, WorkerPool? pool)
        => Gemm.LinearSegmentCore(x, rows, Weight, segment, y, scratch, _bias, pool);

    /// <inheritdoc/>
    public void Dispose() => Weight.Dispose();
}
