using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace FastAttn.Kernels;

/// <summary>Vector math built on <see cref="ISimd{TVec}"/>: activations shared by every kernel.</summary>
internal static class VecMath
{
    /// <summary>
    /// e^x in single precision (about 1 ulp): n = round(x·log₂e) by the 1.5·2²³ rounding trick, r = x − n·ln2 in two
    /// parts (the first exact), e^r by a degree-6 minimax polynomial (Cephes' expf coefficients), then scaled by 2^n
    /// built from the rounded value's bits. Inputs below −87.3 (including −∞) give exactly 0; above 88.3, clamped.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TVec Exp<TOps, TVec>(TVec x) where TOps : ISimd<TVec> where TVec : struct
    {
        TVec xc = TOps.Max(TOps.Min(x, TOps.Broadcast(88.3f)), TOps.Broadcast(-87.3f));
        TVec magic = TOps.Broadcast(12582912f); // 1.5·2²³
        TVec t = TOps.Fma(xc, TOps.Broadcast(1.44269504088896341f), magic);
        TVec n = TOps.Sub(t, magic);
        TVec r = TOps.Fma(n, TOps.Broadcast(-0.693359375f), xc);
        r = TOps.Fma(n, TOps.Broadcast(2.12194440e-4f), r);
        TVec p = TOps.Broadcast(1.9875691500e-4f);
        p = TOps.Fma(p, r, TOps.Broadcast(1.3981999507e-3f));
        p = TOps.Fma(p, r, TOps.Broadcast(8.3334519073e-3f));
        p = TOps.Fma(p, r, TOps.Broadcast(4.1665795894e-2f));
        p = TOps.Fma(p, r, TOps.Broadcast(1.6666665459e-1f));
        p = TOps.Fma(p, r, TOps.Broadcast(5.0000001201e-1f));
        p = TOps.Fma(p, TOps.Mul(r, r), TOps.Add(r, TOps.Broadcast(1f)));
        TVec y = TOps.Mul(p, TOps.Pow2FromMagic(t));
        return TOps.SelectLess(x, TOps.Broadcast(-87.3f), TOps.Zero, y);
    }

    /// <summary>
    /// e^x for softmax's shifted scores, x ≤ 0: 15 vector operations against <see cref="Exp{TOps, TVec}"/>'s 18, at about
    /// 3 ulp (max relative error 1.6e-7 with fused multiply-adds, 1.8e-7 without, on [−87.3, 0]; Exp: 1.2e-7). No upper
    /// clamp (x ≤ 0 here), r = x − n·ln2 in two parts as in Exp (the first exact, so paths without a fused multiply-add
    /// are as accurate), and e^r by a degree-5 polynomial fitted here for the least maximum relative error on
    /// [−ln2/2, ln2/2] (9.2e-8 in exact arithmetic; constant term 1, so e^0 is exactly 1) instead of Exp's degree 7.
    /// Below −87.3 and at −∞: exactly 0; NaN stays NaN.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TVec ExpNonPositive<TOps, TVec>(TVec x) where TOps : ISimd<TVec> where TVec : struct
    {
        TVec lowest = TOps.Broadcast(-87.3f);
        TVec xc = TOps.Max(lowest, x); // x second: the native max returns it when it is NaN
        TVec magic = TOps.Broadcast(12582912f); // 1.5·2²³
        TVec t = TOps.Fma(xc, TOps.Broadcast(1.44269504088896341f), magic);
        TVec n = TOps.Sub(t, magic);
        TVec r = TOps.Fma(n, TOps.Broadcast(-0.693359375f), xc); // exact: the constant has 9 significant bits
        r = TOps.Fma(n, TOps.Broadcast(2.12194440e-4f), r);
        TVec p = TOps.Broadcast(0.008290267549455166f);
        p = TOps.Fma(p, r, TOps.Broadcast(0.041897956281900406f));
        p = TOps.Fma(p, r, TOps.Broadcast(0.1666763722896576f));
        p = TOps.Fma(p, r, TOps.Broadcast(0.4999915063381195f));
        p = TOps.Fma(p, r, TOps.Broadcast(0.9999997019767761f));
        p = TOps.Fma(p, r, TOps.Broadcast(1f));
        return TOps.SelectLess(x, lowest, TOps.Zero, TOps.Mul(p, TOps.Pow2FromMagic(t)));
    }

    /// <summary>
    /// 2^x for softmax's shifted scores in base 2 (x ≤ 0, or a rounding error above it): 13 vector operations against
    /// <see cref="ExpNonPositive{TOps, TVec}"/>'s 15 counted the same way (the caller's shift by the maximum becomes one
    /// multiply-add by log₂e, as the subtraction it replaces). n = round(x) by the 1.5·2²³ trick, f = x − n exactly in [−½, ½], 2^f by
    /// <see cref="ExpNonPositive{TOps, TVec}"/>'s polynomial with r = f·ln2 substituted (coefficient k times ln2^k: the same
    /// least maximum relative error, 9.2e-8 in exact arithmetic), and the exponent n added to the polynomial's bits. x is
    /// clamped at −126 first, so n ≥ −126, and where n = −126, f ≥ 0 and the polynomial ≥ 1: the result is always a normal
    /// float (no denormal reaches P·V). Below −126 (e^−87.3, as ExpNonPositive's cut-off) and at −∞: exactly 0; NaN stays NaN.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TVec Exp2NonPositive<TOps, TVec>(TVec x) where TOps : ISimd<TVec> where TVec : struct
    {
        TVec lowest = TOps.Broadcast(-126f);
        TVec xc = TOps.Max(lowest, x); // x second: the native max returns it when it is NaN
        TVec magic = TOps.Broadcast(12582912f); // 1.5·2²³
        TVec t = TOps.Add(xc, magic);
        TVec f = TOps.Sub(xc, TOps.Sub(t, magic));
        return TOps.SelectLess(x, lowest, TOps.Zero, TOps.ScaleByMagic(Exp2Polynomial<TOps, TVec>(f), t));
    }

    /// <summary>2^f for f in [−½, ½]: <see cref="Exp2NonPositive{TOps, TVec}"/>'s degree-5 polynomial (shared with <see cref="Simd512.Exp2NonPositive"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TVec Exp2Polynomial<TOps, TVec>(TVec f) where TOps : ISimd<TVec> where TVec : struct
    {
        TVec p = TOps.Broadcast(0.0013264651643112302f);
        p = TOps.Fma(p, f, TOps.Broadcast(0.009671518579125404f));
        p = TOps.Fma(p, f, TOps.Broadcast(0.05550733953714371f));
        p = TOps.Fma(p, f, TOps.Broadcast(0.24022242426872253f));
        p = TOps.Fma(p, f, TOps.Broadcast(0.6931470036506653f));
        return TOps.Fma(p, f, TOps.Broadcast(1f));
    }

    /// <summary>tanh(x) = sign(x)·(1 − 2/(e^{2|x|}+1)); accurate to a few ulp, saturates cleanly.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TVec Tanh<TOps, TVec>(TVec x) where TOps : ISimd<TVec> where TVec : struct
    {
        TVec ax = TOps.Min(TOps.Abs(x), TOps.Broadcast(20f));
        TVec e = TOps.Exp(TOps.Add(ax, ax));
        TVec t = TOps.Sub(TOps.Broadcast(1f), TOps.Div(TOps.Broadcast(2f), TOps.Add(e, TOps.Broadcast(1f))));
        // For tiny |x| the form above cancels; tanh(x) ≈ x − x³/3 there.
        TVec x2 = TOps.Mul(ax, ax);
        TVec small = TOps.Mul(ax, TOps.Fma(x2, TOps.Broadcast(-1f / 3f), TOps.Broadcast(1f)));
        t = TOps.SelectLess(ax, TOps.Broadcast(0.004f), small, t);
        // restore the sign of x
        return TOps.SelectLess(x, TOps.Zero, TOps.Sub(TOps.Zero, t), t);
    }

    /// <summary>erf(x) via Abramowitz &amp; Stegun 7.1.26 (|error| ≤ 1.5e-7).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TVec Erf<TOps, TVec>(TVec x) where TOps : ISimd<TVec> where TVec : struct
    {
        TVec ax = TOps.Abs(x);
        TVec t = TOps.Div(TOps.Broadcast(1f), TOps.Fma(TOps.Broadcast(0.3275911f), ax, TOps.Broadcast(1f)));
        TVec p = TOps.Broadcast(1.061405429f);
        p = TOps.Fma(p, t, TOps.Broadcast(-1.453152027f));
        p = TOps.Fma(p, t, TOps.Broadcast(1.421413741f));
        p = TOps.Fma(p, t, TOps.Broadcast(-0.284496736f));
        p = TOps.Fma(p, t, TOps.Broadcast(0.254829592f));
        p = TOps.Mul(p, t);
        TVec e = TOps.Exp(TOps.Sub(TOps.Zero, TOps.Mul(ax, ax)));
        TVec y = TOps.Sub(TOps.Broadcast(1f), TOps.Mul(p, e));
        return TOps.SelectLess(x, TOps.Zero, TOps.Sub(TOps.Zero, y), y);
    }

    /// <summary>
    /// GELU, x·Φ(x) = 0.5·x·(1 + erf(x/√2)), with erf as in <see cref="Erf{TOps, TVec}"/> (Abramowitz &amp; Stegun 7.1.26) but
    /// arranged for the activation: with z = |x|/√2, h = ½·erfc(z) ≈ ½·t·P(t)·e^{−z²} (the ½ folded into P's coefficients),
    /// and GELU = x·h for x &lt; 0, x·(1 − h) otherwise. Against 0.5·x·(1 + erf) this drops the sign select, the negation and
    /// two multiplies, takes t = 1/(1 + p·z) from the reciprocal estimate refined by one Newton step instead of a divide, and
    /// e^{−z²} from the kernels' base-2 exponential (<see cref="ISimd{TVec}.Exp2NonPositive"/>, the argument never positive; 10
    /// instructions on AVX-512 against <see cref="ExpNonPositive{TOps, TVec}"/>'s 15). Negative inputs no longer
    /// go through 1 + erf, which cancelled; +∞ gives +∞ as before (−∞: NaN, as before and as 0.5·x·(1 + erf) gives).
    /// Measured on AVX-512 (Zen 5): 196,608 values 64 → 53 µs, then 55.5 → 47.6 µs with the base-2 exponential; error against
    /// a double reference on [−10, 10] at most 4.2e-7 absolute with the base-e one (the former form: 4.6e-7); with the base-2
    /// one the tests' bound (7.5·10⁻⁷·|x| + 2u, every path) holds.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TVec Gelu<TOps, TVec>(TVec x) where TOps : ISimd<TVec> where TVec : struct
    {
        // z capped (erfc is 0 in float long before 10⁴): the reciprocal estimate's Newton step turns 1/∞ into NaN
        TVec z = TOps.Min(TOps.Mul(TOps.Abs(x), TOps.Broadcast(0.70710678118654752f)), TOps.Broadcast(1e4f));
        TVec t = TOps.Reciprocal(TOps.Fma(TOps.Broadcast(0.3275911f), z, TOps.Broadcast(1f)));
        TVec p = TOps.Broadcast(0.5f * 1.061405429f);
        p = TOps.Fma(p, t, TOps.Broadcast(0.5f * -1.453152027f));
        p = TOps.Fma(p, t, TOps.Broadcast(0.5f * 1.421413741f));
        p = TOps.Fma(p, t, TOps.Broadcast(0.5f * -0.284496736f));
        p = TOps.Fma(p, t, TOps.Broadcast(0.5f * 0.254829592f));
        // e^{−z²} = 2^{x·(−x·log₂e/2)}, by the kernels' base-2 exponential (fewer instructions on AVX-512)
        TVec h = TOps.Mul(TOps.Mul(p, t), TOps.Exp2NonPositive(TOps.Mul(x, TOps.Mul(x, TOps.Broadcast(-0.72134752044448170f)))));
        return TOps.Mul(x, TOps.SelectLess(x, TOps.Zero, h, TOps.Sub(TOps.Broadcast(1f), h)));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TVec Sigmoid<TOps, TVec>(TVec x) where TOps : ISimd<TVec> where TVec : struct
    {
        // 1/(1+e^{-x}) with the exponent clamped so e^{-x} never overflows to inf/inf.
        TVec nx = TOps.Min(TOps.Sub(TOps.Zero, x), TOps.Broadcast(80f));
        return TOps.Div(TOps.Broadcast(1f), TOps.Add(TOps.Broadcast(1f), TOps.Exp(nx)));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TVec Activate<TOps, TVec>(TVec x, Activation act) where TOps : ISimd<TVec> where TVec : struct
    {
        switch (act)
        {
            case Activation.Relu:
                return TOps.Max(x, TOps.Zero);
            case Activation.Gelu:
                return Gelu<TOps, TVec>(x);
            case Activation.GeluTanh:
            {
                // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
                TVec x3 = TOps.Mul(TOps.Mul(x, x), x);
                TVec inner = TOps.Mul(TOps.Broadcast(0.7978845608028654f), TOps.Fma(x3, TOps.Broadcast(0.044715f), x));
                return TOps.Mul(TOps.Mul(TOps.Broadcast(0.5f), x), TOps.Add(TOps.Broadcast(1f), Tanh<TOps, TVec>(inner)));
            }
            case Activation.Tanh:
                return Tanh<TOps, TVec>(x);
            case Activation.Sigmoid:
                return Sigmoid<TOps, TVec>(x);
            case Activation.Silu:
                return TOps.Mul(x, Sigmoid<TOps, TVec>(x));
            default:
                return x;
        }
    }
}
