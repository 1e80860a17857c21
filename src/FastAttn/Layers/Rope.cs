using System.Runtime.Intrinsics;

namespace FastAttn.Layers;

/// <summary>Rotary position embedding (RoPE, rotate-half pairing i ↔ i + headDim/2) applied to Q and K heads in place.</summary>
public sealed class Rope
{
    /// <summary>cos and sin of the first <see cref="Rows"/> positions, published together (replaced, never changed, when they grow).</summary>
    private sealed class Tables(float[] cos, float[] sin, int rows)
    {
        public readonly float[] Cos = cos, Sin = sin;
        public readonly int Rows = rows;
    }

    private Tables _tables;
    private readonly double _theta;
    private readonly bool _float32Angles;
    private readonly double _ntk;
    private readonly object _grow = new();
    /// <summary>Positions computed at construction; longer sequences grow the tables (doubling) up to <see cref="MaxPositions"/>.</summary>
    private const int InitialRows = 512;
    /// <summary>Head width (even).</summary>
    public int HeadDim { get; }
    /// <summary>Longest sequence covered.</summary>
    public int MaxPositions { get; }

    /// <summary>θ_i = base^(−2i/headDim).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is below 1, theta is below 1 or not finite in float32, or the tables would not fit in one array.</exception>
    /// <exception cref="ArgumentException">headDim is odd.</exception>
    public Rope(int headDim, int maxPositions, double theta = 10000) : this(headDim, maxPositions, theta, false) { }

    /// <summary>
    /// As above; with <paramref name="float32Angles"/> the angles are computed as Hugging Face's default rotary embedding
    /// computes them, in float32: inv_freq_i = 1 / base^(2i/headDim), then position · inv_freq_i, each rounded to float32
    /// (at position 8,000 the angle differs from the exact one by up to ~5·10⁻⁴ rad; matching it keeps parity).
    /// </summary>
    /// <remarks>
    /// <paramref name="ntkFactor"/> f ≠ 1: fixed NTK-aware scaling as GTE's <c>NTKScalingRotaryEmbedding</c> builds it for
    /// every position (its cache is always built past the trained length): the base becomes θ·f and every frequency is
    /// further divided by f^(2/headDim) — in float32, 1 / (θ·f)^(2i/headDim) / f^(2/headDim), each step rounded.
    /// </remarks>
    internal Rope(int headDim, int maxPositions, double theta, bool float32Angles, double ntkFactor = 1)
    {
        if (!(ntkFactor >= 1 && ntkFactor <= 1 << 20)) ThrowHelper.OutOfRange(nameof(ntkFactor), ntkFactor, "'ntkFactor' must be in [1, 2^20].");
        theta *= ntkFactor;
        ThrowHelper.Positive(headDim, nameof(headDim));
        if (headDim % 2 != 0) ThrowHelper.Argument(nameof(headDim), $"'headDim' must be even for RoPE; it is {headDim}.");
        ThrowHelper.Positive(maxPositions, nameof(maxPositions));
        // below 1 the frequencies pass 1 and, for tiny bases, overflow to ∞ (an angle ∞ or 0·∞ has no cosine: NaN outputs)
        if (!(theta >= 1 && theta <= float.MaxValue)) ThrowHelper.OutOfRange(nameof(theta), theta, "'theta' (the RoPE base) must be at least 1 and finite in float32.");
        if ((long)maxPositions * (headDim / 2) > Array.MaxLength)
            ThrowHelper.OutOfRange(nameof(maxPositions), maxPositions, $"tables of maxPositions*headDim/2 = {maxPositions}*{headDim / 2} floats are larger than one array can hold.");
        HeadDim = headDim; MaxPositions = maxPositions;
        _theta = theta; _float32Angles = float32Angles; _ntk = ntkFactor;
        // a model may allow far more positions than it is run with (ModernBERT: 8,192; a config may say 2^20): the tables
        // cover what has been asked, so memory follows the longest sequence run, not the configured maximum
        _tables = Build(Math.Min(maxPositions, InitialRows));
    }

    private Tables Build(int rows)
    {
        int half = HeadDim / 2;
        var cos = new float[(long)rows * half];
        var sin = new float[(long)rows * half];
        // the frequencies once per pair, not per position: base^(−2i/headDim) exactly, or Hugging Face's float32 1 / base^(2i/headDim)
        var freq = new double[half];
        var freq32 = new float[half];
        double ntkDivisor = Math.Pow(_ntk, 2.0 / HeadDim);
        for (int i = 0; i < half; i++)
        {
            freq[i] = Math.Pow(_theta, -2.0 * i / HeadDim);
            freq32[i] = 1f / MathF.Pow((float)_theta, (float)(2 * i) / HeadDim);
            if (_ntk != 1) { freq[i] /= ntkDivisor; freq32[i] /= (float)ntkDivisor; }
        }
        for (int p = 0; p < rows; p++)
            for (int i = 0; i < half; i++)
            {
                double a = _float32Angles ? (float)p * freq32[i] : p * freq[i];
                cos[(long)p * half + i] = (float)Math.Cos(a); sin[(long)p * half + i] = (float)Math.Sin(a);
            }
        return new Tables(cos, sin, rows);
    }

    /// <summary>Tables covering <paramref name="longest"/> positions (≤ <see cref="MaxPositions"/>): the current ones, or grown once under a lock.</summary>
    private Tables Covering(int longest)
    {
        var t = Volatile.Read(ref _tables);
        if (t.Rows >= longest) return t;
        lock (_grow)
        {
            t = _tables;
            if (t.Rows < longest)
            {
                t = Build((int)Math.Min(MaxPositions, Math.Max(longest, 2L * t.Rows)));
                Volatile.Write(ref _tables, t);
            }
            return t;
        }
    }

    /// <summary>Rotates heads of x <c>[tokens, stride]</c> (columns col0 .. col0 + heads·headDim) by position within each sequence.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is out of range.</exception>
    /// <exception cref="ArgumentException">x is shorter than its shape, the lengths do not add up to tokens, or a sequence is longer than <see cref="MaxPositions"/>.</exception>
    public void Apply(Span<float> x, int tokens, int stride, int col0, int heads, ReadOnlySpan<int> sequenceLengths = default)
    {
        ThrowHelper.Positive(tokens, nameof(tokens));
        ThrowHelper.Positive(heads, nameof(heads));
        if (col0 < 0) ThrowHelper.OutOfRange(nameof(col0), col0, "'col0' must not be negative.");
        if (stride < col0 + (long)heads * HeadDim) ThrowHelper.OutOfRange(nameof(stride), stride, $"'stride' must be at least col0 + heads*headDim = {col0 + (long)heads * HeadDim}.");
        ThrowHelper.Length(x.Length, ThrowHelper.Extent(tokens, col0 + heads * HeadDim, stride), nameof(x), $"[{tokens}, stride {stride}]");
        new Composition.Batch(tokens, sequenceLengths).Check();
        ApplyCore(x, tokens, stride, col0, heads, sequenceLengths);
    }

    /// <summary>Throws unless every sequence fits the tables.</summary>
    internal void CheckPositions(int longest)
    {
        if (longest > MaxPositions) ThrowHelper.Argument("sequenceLengths", $"a sequence of {longest} tokens is longer than the {MaxPositions} RoPE positions.");
    }

    /// <summary>The unchecked core of <see cref="Apply"/>.</summary>
    internal void ApplyCore(Span<float> x, int tokens, int stride, int col0, int heads, ReadOnlySpan<int> sequenceLengths)
    {
        int n = sequenceLengths.IsEmpty ? 1 : sequenceLengths.Length, longest = 0;
        for (int s = 0; s < n; s++) longest = Math.Max(longest, sequenceLengths.IsEmpty ? tokens : sequenceLengths[s]);
        CheckPositions(longest);
        var tb = Covering(longest);
        switch (Kernels.Isa.Current)
        {
            case Kernels.IsaPath.Vector512: Rotate<Kernels.Simd512, Vector512<float>>(tb, x, stride, col0, heads, tokens, sequenceLengths); break;
            case Kernels.IsaPath.Vector256: Rotate<Kernels.Simd256, Vector256<float>>(tb, x, stride, col0, heads, tokens, sequenceLengths); break;
            case Kernels.IsaPath.Vector128: Rotate<Kernels.Simd128, Vector128<float>>(tb, x, stride, col0, heads, tokens, sequenceLengths); break;
            default: Rotate<Kernels.SimdScalar, float>(tb, x, stride, col0, heads, tokens, sequenceLengths); break;
        }
    }

    /// <summary>
    /// (a, b) ← (a·cos − b·sin, b·cos + a·sin) for the pairs (i, i + headDim/2) of every head, position by position; products
    /// and differences rounded as the scalar loop rounds them (no fused multiply-add), so every path gives the same bits.
    /// </summary>
    private unsafe void Rotate<TOps, TVec>(Tables tb, Span<float> x, int stride, int col0, int heads, int tokens, ReadOnlySpan<int> sequenceLengths)
        where TOps : Kernels.ISimd<TVec> where TVec : struct
    {
        int half = HeadDim / 2, w = TOps.Width, n = sequenceLengths.IsEmpty ? 1 : sequenceLengths.Length, t0 = 0;
        fixed (float* px = x, pcos = tb.Cos, psin = tb.Sin)
        {
            for (int s = 0; s < n; s++)
            {
                int len = sequenceLengths.IsEmpty ? tokens : sequenceLengths[s];
                for (int p = 0; p < len; p++)
                {
                    float* c = pcos + (long)p * half, sn = psin + (long)p * half;
                    for (int h = 0; h < heads; h++)
                    {
                        float* a = px + (long)(t0 + p) * stride + col0 + h * HeadDim, b = a + half;
                        int i = 0;
                        for (; i + w <= half; i += w)
                        {
                            TVec va = TOps.Load(a + i), vb = TOps.Load(b + i), vc = TOps.Load(c + i), vs = TOps.Load(sn + i);
                            TOps.Store(TOps.Sub(TOps.Mul(va, vc), TOps.Mul(vb, vs)), a + i);
                            TOps.Store(TOps.Add(TOps.Mul(vb, vc), TOps.Mul(va, vs)), b + i);
                        }
                        for (; i < half; i++)
                        {
                            float va = a[i], vb = b[i];
                            a[i] = va * c[i] - vb * sn[i];
                            b[i] = vb * c[i] + va * sn[i];
                        }
                    }
                }
                t0 += len;
            }
        }
    }
}
