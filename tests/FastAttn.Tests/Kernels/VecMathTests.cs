using FastAttn.Kernels;
using Op = FastAttn.Kernels.VecMathMap.Op;

namespace FastAttn.Tests.Kernels;

/// <summary>
/// The vector approximations every kernel shares (exp, tanh, erf, sigmoid, GELU, the refined reciprocal) against
/// double-precision references, on every supported path, over their working ranges and the edges.
/// </summary>
public class VecMathTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private const double U = 1.0 / (1 << 24);   // unit roundoff of float32

    private static float[] Grid(double lo, double hi, int n)
    {
        var r = new float[n];
        for (int i = 0; i < n; i++) r[i] = (float)(lo + (hi - lo) * i / (n - 1));
        return r;
    }

    /// <summary>
    /// Bounds, each from the method's own error analysis: exp — the Cephes degree-6 polynomial (≈1 ulp) times an exact
    /// power of two, plus the rounding of r = x − n·ln2 (≤ 2 ulp) → 4 ulp relative; tanh = 1 − 2/(e^{2x}+1) — e's relative
    /// error times 2e/(e+1)² ≤ ½, plus the division and subtraction → 4·u absolute; erf — Abramowitz–Stegun 7.1.26's
    /// 1.5·10⁻⁷ in exact arithmetic, plus its six coefficients rounded to float and the rounding of t = 1/(1+px), the
    /// degree-5 Horner polynomial and e^{−x²} in y = 1 − p·e (≈ 8·u, more where the scalar path's multiply-adds are not
    /// fused) → 7.5·10⁻⁷; sigmoid — 1/(1+e) with e's error → 3·u absolute;
    /// GELU(x) = ½x(1+erf(x/√2)) — x times erf's bound; the reciprocal estimate refined by one Newton step → 2⁻²² relative;
    /// softmax's exp for x ≤ 0 — its degree-5 polynomial's 9.2·10⁻⁸ (1.5 u) in exact arithmetic plus the same roundings
    /// as exp → 6 ulp relative (float32 emulation of both the fused and the unfused path: 2.7 u and 3.1 u); its base-2 form
    /// for x ≤ 0 — the same polynomial in f = x − round(x) (exact, |f| ≤ ½; coefficients scaled by powers of ln2 and
    /// rounded to float) times an exact power of two, so only the polynomial's error and its Horner roundings → 6 ulp.
    /// </summary>
    private static (double Abs, double Rel) Bound(IsaPath isa, Op op, double x) => op switch
    {
        Op.Exp => (0, 4 * U),
        Op.ExpNonPositive => (0, 6 * U),
        Op.Exp2NonPositive => (0, 6 * U),
        Op.Tanh => (4 * U, 0),
        Op.Erf => (7.5e-7, 0),
        Op.Sigmoid => (3 * U, 0),
        Op.Gelu => (7.5e-7 * Math.Abs(x) + 2 * U, 2 * U),
        Op.GeluTanh => (4 * U * Math.Abs(x) + 2 * U, 2 * U),
        Op.Relu => (0, 0),
        _ => (0, Math.Pow(2, -22)),
    };

    private static double Ref(Op op, double x) => op switch
    {
        Op.Exp or Op.ExpNonPositive => Math.Exp(x),
        Op.Exp2NonPositive => Math.Pow(2, x),
        Op.Tanh => Math.Tanh(x),
        Op.Erf => Reference.Erf(x),
        Op.Sigmoid => 1 / (1 + Math.Exp(-x)),
        Op.Relu => Math.Max(x, 0),
        Op.Gelu => Reference.Act(x, Activation.Gelu),
        Op.GeluTanh => Reference.Act(x, Activation.GeluTanh),
        _ => 1 / x,
    };

    public static TheoryData<string> Ops() => new(Enum.GetNames<Op>());

    [Theory]
    [MemberData(nameof(Ops))]
    public void MatchesDoubleReference_OnEveryPath(string name)
    {
        var op = Enum.Parse<Op>(name);
        float[] x = op switch
        {
            Op.Exp => [.. Grid(-87, 88, 20011), 0f, -0f, 1e-30f, -1e-30f],
            Op.ExpNonPositive => [.. Grid(-87.29, 0, 40011), .. Grid(-1, 0, 20011), -0f, -1e-30f],
            // down to the cut-off (2^−126, the least normal float) and the few ulp above 0 a rounded shift can leave
            Op.Exp2NonPositive => [.. Grid(-126, 0, 40011), .. Grid(-1, 0, 20011), .. Grid(-126, -125, 1001), -0f, -1e-30f, 1e-7f, 4e-6f],
            Op.Reciprocal => [.. Grid(0.001, 1000, 20011), .. Grid(-1000, -0.001, 1001), 1e-30f, 3e30f],
            _ => [.. Grid(-12, 12, 20011), 0f, -0f, 1e-6f, -1e-6f, 0.0039f, 0.0041f, 19.9f, 20.1f, -25f, 40f],
        };
        var y = new float[x.Length];
        IsaPaths.ForEach(isa =>
        {
            // offsets 0..width so that every element is seen both in a vector and in the scalar tail
            for (int off = 0; off < 3; off++)
            {
                VecMathMap.Apply(isa, op, x.AsSpan(off), y.AsSpan(off));
                double worst = 0;
                for (int i = off; i < x.Length; i++)
                {
                    double e = Ref(op, x[i]), g = y[i];
                    var (abs, rel) = Bound(isa, op, x[i]);
                    double err = Math.Abs(g - e), tol = abs + rel * Math.Abs(e);
                    worst = Math.Max(worst, tol > 0 ? err / tol : err);
                    Assert.True(err <= tol, $"{op}({x[i]:R}) = {g:R}, expected {e:R} (error {err:E2} > {tol:E2})");
                }
                if (off == 0) output.WriteLine($"{isa} {op}: worst error {worst:P0} of its bound");
            }
        });
    }

    /// <summary>
    /// The 512-bit path's softmax exponential (VRNDSCALEPS and VSCALEFPS instead of the 1.5·2²³ trick and an integer add
    /// into the exponent) gives the same float as the portable body on every input of its domain (x ≤ 0 and a few ulp
    /// above, as a rounded shift leaves) and on the edges: −∞, NaN, ±0, denormals, the cut-off at −126 and far below it.
    /// </summary>
    [Fact]
    public unsafe void Exp2NonPositive_Vector512_SameBitsAsPortableBody()
    {
        if (!Isa.IsSupported(IsaPath.Vector512)) { output.WriteLine("Vector512 not supported here: nothing to compare"); return; }
        var x = new List<float>(Grid(-140, 1, 400_000));
        x.AddRange(Grid(-126.01, -125.99, 20_001));
        x.AddRange(Grid(-0.001, 0.001, 20_001));
        for (int k = -130; k <= 1; k++) { x.Add(k); x.Add(k + 0.5f); x.Add(MathF.BitDecrement(k + 0.5f)); x.Add(MathF.BitIncrement(k + 0.5f)); }
        x.AddRange([float.NegativeInfinity, float.NaN, -float.NaN, 0f, -0f, -1e-40f, 1e-40f, -float.Epsilon, float.MinValue, -1e30f, -126f, MathF.BitDecrement(-126f), MathF.BitIncrement(-126f), 1e-7f, 4e-6f]);
        while (x.Count % 16 != 0) x.Add(-1f);
        int same = 0;
        fixed (float* p = x.ToArray())
            for (int i = 0; i < x.Count; i += 16)
            {
                var v = System.Runtime.Intrinsics.Vector512.Load(p + i);
                var fast = Simd512.Exp2NonPositive(v);
                var portable = VecMath.Exp2NonPositive<Simd512, System.Runtime.Intrinsics.Vector512<float>>(v);
                for (int l = 0; l < 16; l++)
                {
                    // NaN payloads may differ; NaN-ness may not
                    bool bothNaN = float.IsNaN(fast[l]) && float.IsNaN(portable[l]);
                    Assert.True(bothNaN || BitConverter.SingleToInt32Bits(fast[l]) == BitConverter.SingleToInt32Bits(portable[l]),
                        $"2^{p[i + l]:R}: {fast[l]:R} against the portable body's {portable[l]:R}");
                    same++;
                }
            }
        output.WriteLine($"{same} inputs, the same result");
    }

    [Fact]
    public void Edges_AreExact()
    {
        IsaPaths.ForEach(isa =>
        {
            float[] Run(Op op, params float[] x) { var y = new float[x.Length]; VecMathMap.Apply(isa, op, x, y); return y; }
            // exp: far below the range is exactly 0 (also −∞), exp(0) = 1
            Assert.Equal([0f, 0f, 0f, 1f], Run(Op.Exp, -88f, -1000f, float.NegativeInfinity, 0f));
            // softmax's exp: the same edges (masked scores are −∞ and must weigh exactly 0; the maximum weighs exactly 1), NaN stays NaN
            var en = Run(Op.ExpNonPositive, -88f, -1000f, float.NegativeInfinity, 0f, -0f, float.NaN);
            Assert.Equal([0f, 0f, 0f, 1f, 1f], en[..5]);
            Assert.True(float.IsNaN(en[5]), $"ExpNonPositive(NaN) = {en[5]}");
            // its base-2 form: the same, and the cut-off 2^−126 itself the least normal float, not a denormal
            var e2 = Run(Op.Exp2NonPositive, -126.01f, -1000f, float.NegativeInfinity, 0f, -0f, float.NaN, -126f, -125.99f);
            Assert.Equal([0f, 0f, 0f, 1f, 1f], e2[..5]);
            Assert.True(float.IsNaN(e2[5]), $"Exp2NonPositive(NaN) = {e2[5]}");
            Assert.Equal(float.Pow(2, -126), e2[6]);
            Assert.True(float.IsNormal(e2[7]), $"Exp2NonPositive(-125.99) = {e2[7]:R}");
            // GELU: the identity far right (also at +∞ and the largest floats), exactly 0 at 0
            Assert.Equal([float.PositiveInfinity, 3e38f, 1e20f, 40f, 0f], Run(Op.Gelu, float.PositiveInfinity, 3e38f, 1e20f, 40f, 0f));
            // tanh and sigmoid saturate cleanly, keep the sign, and are odd/complementary
            Assert.Equal([1f, -1f, 0f], Run(Op.Tanh, 50f, -50f, 0f));
            var sg = Run(Op.Sigmoid, 200f, -200f, 0f);
            Assert.Equal(1f, sg[0]);
            Assert.InRange(sg[1], 0f, 1e-30f);   // e^{−x} is clamped at e^{80}, so never ∞/∞
            Assert.Equal(0.5f, sg[2]);
            var t = Run(Op.Tanh, 0.3f, -0.3f);
            Assert.Equal(t[0], -t[1]);
            // erf is odd and saturates
            var e = Run(Op.Erf, 0.7f, -0.7f, 10f, -10f);
            Assert.Equal(e[0], -e[1]);
            Assert.Equal(1f, e[2], 6);
            Assert.Equal(-1f, e[3], 6);
            Assert.Equal([0f, 0f, 3f], Run(Op.Relu, -2f, 0f, 3f));
        });
    }
}
