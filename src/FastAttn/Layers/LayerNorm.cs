using FastAttn.Kernels;
using FastAttn.Threading;

namespace FastAttn.Layers;

/// <summary>Layer normalisation over the last dimension (PyTorch's <c>nn.LayerNorm</c>, biased variance).</summary>
public sealed unsafe class LayerNorm
{
    private readonly float[] _gamma, _beta;
    private readonly IsaPath _isa = Isa.Current;
    /// <summary>Width.</summary>
    public int Width => _gamma.Length;
    /// <summary>ε added to the variance.</summary>
    public float Eps { get; }
    /// <summary>γ (read-only view).</summary>
    public ReadOnlySpan<float> Gamma => _gamma;
    /// <summary>β (read-only view).</summary>
    public ReadOnlySpan<float> Beta => _beta;

    /// <summary>Builds the norm; empty gamma/beta mean ones/zeros.</summary>
    /// <exception cref="ArgumentOutOfRangeException">width below 1, or eps negative or not finite.</exception>
    /// <exception cref="ArgumentException">gamma or beta do not have width elements.</exception>
    public LayerNorm(int width, ReadOnlySpan<float> gamma = default, ReadOnlySpan<float> beta = default, float eps = 1e-5f)
    {
        ThrowHelper.Positive(width, nameof(width));
        if (!gamma.IsEmpty) ThrowHelper.ExactLength(gamma.Length, width, nameof(gamma), "width");
        if (!beta.IsEmpty) ThrowHelper.ExactLength(beta.Length, width, nameof(beta), "width");
        ThrowHelper.Eps(eps, nameof(eps));
        _gamma = gamma.IsEmpty ? Enumerable.Repeat(1f, width).ToArray() : gamma.ToArray();
        _beta = beta.IsEmpty ? new float[width] : beta.ToArray();
        Eps = eps;
    }

    /// <summary>Normalises rows of x into y (x and y may be the same span, but must not partly overlap).</summary>
    /// <exception cref="ArgumentException">A span is shorter than rows × width, or x and y overlap without starting at the same element.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="rows"/> is below 1.</exception>
    public void Forward(ReadOnlySpan<float> x, int rows, Span<float> y, WorkerPool? pool = null)
    {
        CheckRows(x, rows, y, Width);
        ForwardCore(x, rows, y, pool);
    }

    internal static void CheckRows(ReadOnlySpan<float> x, int rows, ReadOnlySpan<float> y, int width)
    {
        ThrowHelper.Positive(rows, nameof(rows));
        ThrowHelper.Length(x.Length, (long)rows * width, nameof(x), $"rows*width = {rows}*{width}");
        ThrowHelper.Length(y.Length, (long)rows * width, nameof(y), $"rows*width = {rows}*{width}");
        if (x.Overlaps(y, out int offset) && offset != 0)
            ThrowHelper.Argument(nameof(y), "'y' partly overlaps 'x'; give the same span (in place) or separate memory.");
    }

    /// <summary>The unchecked core (in place allowed), split over the pool when large enough.</summary>
    internal void ForwardCore(ReadOnlySpan<float> x, int rows, Span<float> y, WorkerPool? pool)
    {
        fixed (float* px = x, py = y, g = _gamma, b = _beta) Norms.Run(_isa, px, py, rows, Width, g, b, Eps, rms: false, pool);
    }
}
