using FastAttn.Kernels;

namespace FastAttn.Layers;

/// <summary>The fully connected layer y = act(x·Wᵀ + b), W <c>[out, in]</c> like <c>nn.Linear</c>, packed once.</summary>
public sealed class Linear : IDisposable
{
    /// <summary>The packed weight.</summary>
    public PackedWeight Weight { get; }
    private readonly float[]? _bias;
    /// <summary>Activation after the bias.</summary>
    public Activation Activation { get; }
    /// <summary>Input width.</summary>
    public int InFeatures => Weight.InFeatures;
    /// <summary>Output width.</summary>
    public int OutFeatures => Weight.OutFeatures;
    /// <summary>The bias (read-only view), empty when there is none.</summary>
    public ReadOnlySpan<float> Bias => _bias;

    /// <summary>Builds the layer from a <c>[outFeatures, inFeatures]</c> weight and optional bias.</summary>
    /// <exception cref="ArgumentException">Shapes do not match.</exception>
    public Linear(ReadOnlySpan<float> weight, int outFeatures, int inFeatures, ReadOnlySpan<float> bias = default, Activation activation = Activation.None)
    {
        if (!bias.IsEmpty) ThrowHelper.ExactLength(bias.Length, outFeatures, nameof(bias), "outFeatures");
        Weight = new PackedWeight(weight, outFeatures, inFeatures);
        _bias = bias.IsEmpty ? null : bias.ToArray();
        Activation = activation;
    }

    /// <summary>Scratch floats for <paramref name="rows"/> rows.</summary>
    public int ScratchSize(int rows) => Gemm.LinearScratchSize(rows, InFeatures);

    /// <summary>y = act(x·Wᵀ + b) [+ residual].</summary>
    public void Forward(ReadOnlySpan<float> x, int rows, Span<float> y, Span<float> scratch, ReadOnlySpan<float> residual = default)
        => Gemm.Linear(x, rows, Weight, y, scratch, new GemmEpilogue { Bias = _bias, Activation = Activation, Residual = residual }, null);

    /// <summary>As above, split over a session's worker threads when large enough.</summary>
    internal void Forward(ReadOnlySpan<float> x, int rows, Span<float> y, Span<float> scratch, ReadOnlySpan<float> residual, Threading.WorkerPool? pool)
        => Gemm.Linear(x, rows, Weight, y, scratch, new GemmEpilogue { Bias = _bias, Activation = Activation, Residual = residual }, pool);

    /// <summary>y = x·W[outStart .. outStart+outCount)ᵀ + b[outStart ..] for a block of output features (no activation).</summary>
    internal void ForwardRows(ReadOnlySpan<float> x, int rows, Span<float> y, Span<float> scratch, int outStart, int outCount)
        => Gemm.LinearBlock(x, rows, Weight, y, scratch, _bias, outStart, outCount);

    /// <inheritdoc/>
    public void Dispose() => Weight.Dispose();
}

/// <summary>Layer normalisation over the last dimension (PyTorch's <c>nn.LayerNorm</c>, biased variance).</summary>
public sealed unsafe class LayerNorm
{
    private readonly float[] _gamma, _beta;
    /// <summary>Width.</summary>
    public int Width => _gamma.Length;
    /// <summary>ε added to the variance.</summary>
    public float Eps { get; }

    /// <summary>Builds the norm; empty gamma/beta mean ones/zeros.</summary>
    public LayerNorm(int width, ReadOnlySpan<float> gamma = default, ReadOnlySpan<float> beta = default, float eps = 1e-5f)
    {
        ThrowHelper.Positive(width, nameof(width));
        if (!gamma.IsEmpty) ThrowHelper.ExactLength(gamma.Length, width, nameof(gamma), "width");
        if (!beta.IsEmpty) ThrowHelper.ExactLength(beta.Length, width, nameof(beta), "width");
        _gamma = gamma.IsEmpty ? Enumerable.Repeat(1f, width).ToArray() : gamma.ToArray();
        _beta = beta.IsEmpty ? new float[width] : beta.ToArray();
        IO.TorchModels.CheckEps(eps, nameof(eps));
        Eps = eps;
    }

    /// <summary>Normalises rows of x into y (x and y may be the same span, but must not partly overlap).</summary>
    /// <exception cref="ArgumentException">A span is shorter than rows × width, or x and y overlap without starting at the same element.</exception>
    public void Forward(ReadOnlySpan<float> x, int rows, Span<float> y)
    {
        ThrowHelper.Positive(rows, nameof(rows));
        ThrowHelper.Length(x.Length, (long)rows * Width, nameof(x), $"rows*width = {rows}*{Width}");
        ThrowHelper.Length(y.Length, (long)rows * Width, nameof(y), $"rows*width = {rows}*{Width}");
        CheckInPlace(x, y);
        fixed (float* px = x, py = y, g = _gamma, b = _beta) Norms.LayerNorm(px, py, rows, Width, g, b, Eps);
    }

    internal static void CheckInPlace(ReadOnlySpan<float> x, ReadOnlySpan<float> y)
    {
        if (x.Overlaps(y, out int offset) && offset != 0)
            ThrowHelper.Argument(nameof(y), "'y' partly overlaps 'x'; give the same span (in place) or separate memory.");
    }

    /// <summary>As above, split over a session's worker threads when large enough.</summary>
    internal void Forward(ReadOnlySpan<float> x, int rows, Span<float> y, Threading.WorkerPool? pool)
    {
        if (pool == null) { Forward(x, rows, y); return; }
        ThrowHelper.Positive(rows, nameof(rows));
        ThrowHelper.Length(x.Length, (long)rows * Width, nameof(x), $"rows*width = {rows}*{Width}");
        ThrowHelper.Length(y.Length, (long)rows * Width, nameof(y), $"rows*width = {rows}*{Width}");
        fixed (float* px = x, py = y, g = _gamma, b = _beta)
            if (!pool.Jobs.Norm.TryRun(px, py, rows, Width, g, b, Eps, rms: false)) Norms.LayerNorm(px, py, rows, Width, g, b, Eps);
    }
}

/// <summary>RMS normalisation: y = x / √(mean(x²) + ε) · γ.</summary>
public sealed unsafe class RmsNorm
{
    private readonly float[] _gamma;
    /// <summary>Width.</summary>
    public int Width => _gamma.Length;
    /// <summary>ε.</summary>
    public float Eps { get; }

    /// <summary>Builds the norm; empty gamma means ones.</summary>
    public RmsNorm(int width, ReadOnlySpan<float> gamma = default, float eps = 1e-6f)
    {
        ThrowHelper.Positive(width, nameof(width));
        if (!gamma.IsEmpty) ThrowHelper.ExactLength(gamma.Length, width, nameof(gamma), "width");
        _gamma = gamma.IsEmpty ? Enumerable.Repeat(1f, width).ToArray() : gamma.ToArray();
        IO.TorchModels.CheckEps(eps, nameof(eps));
        Eps = eps;
    }

    /// <summary>Normalises rows of x into y (x and y may be the same span, but must not partly overlap).</summary>
    /// <exception cref="ArgumentException">A span is shorter than rows × width, or x and y overlap without starting at the same element.</exception>
    public void Forward(ReadOnlySpan<float> x, int rows, Span<float> y)
    {
        ThrowHelper.Positive(rows, nameof(rows));
        ThrowHelper.Length(x.Length, (long)rows * Width, nameof(x), $"rows*width = {rows}*{Width}");
        ThrowHelper.Length(y.Length, (long)rows * Width, nameof(y), $"rows*width = {rows}*{Width}");
        LayerNorm.CheckInPlace(x, y);
        fixed (float* px = x, py = y, g = _gamma) Norms.RmsNorm(px, py, rows, Width, g, Eps);
    }
}

/// <summary>A fully connected layer as a block of a <see cref="Composition.Stack"/>: y = act(x·Wᵀ + b) per token.</summary>
public sealed class LinearBlock(Linear linear) : Composition.IBlock, IDisposable
{
    /// <summary>The layer.</summary>
    public Linear Linear { get; } = linear ?? throw new ArgumentNullException(nameof(linear));
    /// <inheritdoc/>
    public int InputWidth => Linear.InFeatures;
    /// <inheritdoc/>
    public int OutputWidth => Linear.OutFeatures;
    /// <inheritdoc/>
    public long ScratchSize(int maxTokens) => Linear.ScratchSize(maxTokens);
    /// <inheritdoc/>
    public void Forward(ReadOnlySpan<float> input, Span<float> output, Composition.Batch batch, Span<float> scratch)
        => Linear.Forward(input, batch.Tokens, output, scratch, default, batch.Pool);
    /// <inheritdoc/>
    public void Dispose() => Linear.Dispose();
}
