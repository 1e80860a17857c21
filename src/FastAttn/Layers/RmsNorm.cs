using FastAttn.Kernels;
using FastAttn.Threading;

namespace FastAttn.Layers;

/// <summary>RMS normalisation: y = x / √(mean(x²) + ε) · γ.</summary>
public sealed unsafe class RmsNorm
{
    private readonly float[] _gamma;
    private readonly IsaPath _isa = Isa.Current;
    /// <summary>Width.</summary>
    public int Width => _gamma.Length;
    /// <summary>ε.</summary>
    public float Eps { get; }

    /// <summary>Builds the norm; empty gamma means ones.</summary>
    /// <exception cref="ArgumentOutOfRangeException">width below 1, or eps negative or not finite.</exception>
    /// <exception cref="ArgumentException">gamma does not have width elements.</exception>
    public RmsNorm(int width, ReadOnlySpan<float> gamma = default, float eps = 1e-6f)
    {
        ThrowHelper.Positive(width, nameof(width));
        if (!gamma.IsEmpty) ThrowHelper.ExactLength(gamma.Length, width, nameof(gamma), "width");
        ThrowHelper.Eps(eps, nameof(eps));
        _gamma = gamma.IsEmpty ? Enumerable.Repeat(1f, width).ToArray() : gamma.ToArray();
        Eps = eps;
    }

    /// <summary>Normalises rows of x into y (x and y may be the same span, but must not partly overlap).</summary>
    /// <exception cref="ArgumentException">A span is shorter than rows × width, or x and y overlap without starting at the same element.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="rows"/> is below 1.</exception>
    public void Forward(ReadOnlySpan<float> x, int rows, Span<float> y, WorkerPool? pool = null)
    {
        LayerNorm.CheckRows(x, rows, y, Width);
        ForwardCore(x, rows, y, pool);
    }

    /// <summary>The unchecked core (in place allowed).</summary>
    internal void ForwardCore(ReadOnlySpan<float> x, int rows, Span<float> y, WorkerPool? pool)
    {
        fixed (float* px = x, py = y, g = _gamma) Norms.Run(_isa, px, py, rows, Width, g, null, Eps, rms: true, pool);
    }
}
