using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace FastAttn.Kernels;

/// <summary>
/// The operations every kernel is written against. One kernel body, generic over an ops struct,
/// is specialised by the JIT for each width (the struct type argument makes every call here a
/// direct, inlined intrinsic). <typeparamref name="TVec"/> is the register type itself
/// (<see cref="Vector512{T}"/>, <see cref="Vector256{T}"/>, <see cref="Vector128{T}"/> or
/// <see cref="float"/> for the scalar path), so accumulators stay in registers.
/// </summary>
internal unsafe interface ISimd<TVec> where TVec : struct
{
    /// <summary>Floats per register.</summary>
    static abstract int Width { get; }
    /// <summary>Rows of the GEMM microkernel for this width (bounded by the register file).</summary>
    static abstract int GemmRows { get; }
    static abstract TVec Zero { get; }
    static abstract TVec Load(float* p);
    static abstract void Store(TVec v, float* p);
    static abstract TVec Broadcast(float x);
    static abstract TVec BroadcastFrom(float* p);
    static abstract TVec Add(TVec a, TVec b);
    static abstract TVec Sub(TVec a, TVec b);
    static abstract TVec Mul(TVec a, TVec b);
    static abstract TVec Div(TVec a, TVec b);
    /// <summary>1/x to about 23 bits: the hardware estimate refined by one Newton step (x finite and nonzero).</summary>
    static abstract TVec Reciprocal(TVec x);
    /// <summary>a*b + c; fused where the hardware has FMA, otherwise multiply then add.</summary>
    static abstract TVec Fma(TVec a, TVec b, TVec c);
    static abstract TVec Max(TVec a, TVec b);
    static abstract TVec Min(TVec a, TVec b);
    static abstract TVec Exp(TVec a);
    /// <summary>The float whose bits are (bits(t) &lt;&lt; 23) + bits(1f): 2^n when t = n + 1.5·2^23 (see <see cref="VecMath.Exp{TOps, TVec}"/>).</summary>
    static abstract TVec Pow2FromMagic(TVec t);
    static abstract TVec Abs(TVec a);
    /// <summary>Lanes where a &lt; b take x, the others y.</summary>
    static abstract TVec SelectLess(TVec a, TVec b, TVec x, TVec y);
    static abstract float Sum(TVec a);
    static abstract float MaxAcross(TVec a);
}

internal unsafe struct Simd512 : ISimd<Vector512<float>>
{
    public static int Width => 16;
    public static int GemmRows => 12;
    public static Vector512<float> Zero => Vector512<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Load(float* p) => Vector512.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(Vector512<float> v, float* p) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Broadcast(float x) => Vector512.Create(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> BroadcastFrom(float* p) => Vector512.Create(*p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Sub(Vector512<float> a, Vector512<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Mul(Vector512<float> a, Vector512<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Div(Vector512<float> a, Vector512<float> b) => a / b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Reciprocal(Vector512<float> x)
    {
        var r = Avx512F.Reciprocal14(x);
        return Fma(r, Vector512.FusedMultiplyAdd(-x, r, Vector512<float>.One), r);
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Fma(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Vector512.FusedMultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Max(Vector512<float> a, Vector512<float> b) => Vector512.MaxNative(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Min(Vector512<float> a, Vector512<float> b) => Vector512.MinNative(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Exp(Vector512<float> a) => VecMath.Exp<Simd512, Vector512<float>>(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Pow2FromMagic(Vector512<float> t) => (Vector512.ShiftLeft(t.AsInt32(), 23) + Vector512.Create(0x3F800000)).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Abs(Vector512<float> a) => Vector512.Abs(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> SelectLess(Vector512<float> a, Vector512<float> b, Vector512<float> x, Vector512<float> y) => Vector512.ConditionalSelect(Vector512.LessThan(a, b), x, y);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Vector512<float> a) => Simd256.Sum(a.GetLower() + a.GetUpper());
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float MaxAcross(Vector512<float> a) => Simd256.MaxAcross(Vector256.Max(a.GetLower(), a.GetUpper()));
}

internal unsafe struct Simd256 : ISimd<Vector256<float>>
{
    public static int Width => 8;
    public static int GemmRows => 6;
    public static Vector256<float> Zero => Vector256<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Load(float* p) => Vector256.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(Vector256<float> v, float* p) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Broadcast(float x) => Vector256.Create(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> BroadcastFrom(float* p) => Vector256.Create(*p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Sub(Vector256<float> a, Vector256<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Mul(Vector256<float> a, Vector256<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Div(Vector256<float> a, Vector256<float> b) => a / b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Reciprocal(Vector256<float> x)
    {
        if (!Avx.IsSupported) return Vector256<float>.One / x;
        var r = Avx512F.VL.IsSupported ? Avx512F.VL.Reciprocal14(x) : Avx.Reciprocal(x);
        return Fma(r, Fma(Vector256<float>.Zero - x, r, Vector256<float>.One), r);
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Fma(Vector256<float> a, Vector256<float> b, Vector256<float> c)
        => Avx2.IsSupported && System.Runtime.Intrinsics.X86.Fma.IsSupported ? Vector256.FusedMultiplyAdd(a, b, c) : a * b + c;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Max(Vector256<float> a, Vector256<float> b) => Vector256.MaxNative(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Min(Vector256<float> a, Vector256<float> b) => Vector256.MinNative(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Exp(Vector256<float> a) => VecMath.Exp<Simd256, Vector256<float>>(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Pow2FromMagic(Vector256<float> t) => (Vector256.ShiftLeft(t.AsInt32(), 23) + Vector256.Create(0x3F800000)).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Abs(Vector256<float> a) => Vector256.Abs(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> SelectLess(Vector256<float> a, Vector256<float> b, Vector256<float> x, Vector256<float> y) => Vector256.ConditionalSelect(Vector256.LessThan(a, b), x, y);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Vector256<float> a) => Simd128.Sum(a.GetLower() + a.GetUpper());
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float MaxAcross(Vector256<float> a) => Simd128.MaxAcross(Vector128.Max(a.GetLower(), a.GetUpper()));
}

internal unsafe struct Simd128 : ISimd<Vector128<float>>
{
    public static int Width => 4;
    public static int GemmRows => 6;
    public static Vector128<float> Zero => Vector128<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Load(float* p) => Vector128.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(Vector128<float> v, float* p) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Broadcast(float x) => Vector128.Create(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> BroadcastFrom(float* p) => Vector128.Create(*p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Add(Vector128<float> a, Vector128<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Sub(Vector128<float> a, Vector128<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Mul(Vector128<float> a, Vector128<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Div(Vector128<float> a, Vector128<float> b) => a / b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Reciprocal(Vector128<float> x)
    {
        if (!Sse.IsSupported) return Vector128<float>.One / x;
        var r = Avx512F.VL.IsSupported ? Avx512F.VL.Reciprocal14(x) : Sse.Reciprocal(x);
        return Fma(r, Fma(Vector128<float>.Zero - x, r, Vector128<float>.One), r);
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Fma(Vector128<float> a, Vector128<float> b, Vector128<float> c)
        => System.Runtime.Intrinsics.X86.Fma.IsSupported || AdvSimd.IsSupported ? Vector128.FusedMultiplyAdd(a, b, c) : a * b + c;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Max(Vector128<float> a, Vector128<float> b) => Vector128.MaxNative(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Min(Vector128<float> a, Vector128<float> b) => Vector128.MinNative(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Exp(Vector128<float> a) => VecMath.Exp<Simd128, Vector128<float>>(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Pow2FromMagic(Vector128<float> t) => (Vector128.ShiftLeft(t.AsInt32(), 23) + Vector128.Create(0x3F800000)).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Abs(Vector128<float> a) => Vector128.Abs(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> SelectLess(Vector128<float> a, Vector128<float> b, Vector128<float> x, Vector128<float> y) => Vector128.ConditionalSelect(Vector128.LessThan(a, b), x, y);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector128<float> a)
    {
        // Fixed pairwise order, independent of the hardware: (a0 + a2) + (a1 + a3).
        float s02 = a.GetElement(0) + a.GetElement(2);
        float s13 = a.GetElement(1) + a.GetElement(3);
        return s02 + s13;
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float MaxAcross(Vector128<float> a)
        => MathF.Max(MathF.Max(a.GetElement(0), a.GetElement(2)), MathF.Max(a.GetElement(1), a.GetElement(3)));
}

/// <summary>The scalar path: the same kernels, one float per "register".</summary>
internal unsafe struct SimdScalar : ISimd<float>
{
    public static int Width => 1;
    public static int GemmRows => 4;
    public static float Zero => 0f;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Load(float* p) => *p;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(float v, float* p) => *p = v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Broadcast(float x) => x;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float BroadcastFrom(float* p) => *p;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Add(float a, float b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sub(float a, float b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Mul(float a, float b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Div(float a, float b) => a / b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Reciprocal(float x) => 1f / x;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Fma(float a, float b, float c) => a * b + c;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Max(float a, float b) => MathF.Max(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Min(float a, float b) => MathF.Min(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Exp(float a) => MathF.Exp(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Pow2FromMagic(float t) => BitConverter.Int32BitsToSingle((BitConverter.SingleToInt32Bits(t) << 23) + 0x3F800000);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Abs(float a) => MathF.Abs(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float SelectLess(float a, float b, float x, float y) => a < b ? x : y;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(float a) => a;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float MaxAcross(float a) => a;
}

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
                // 0.5·x·(1 + erf(x/√2))
                return TOps.Mul(TOps.Mul(TOps.Broadcast(0.5f), x),
                    TOps.Add(TOps.Broadcast(1f), Erf<TOps, TVec>(TOps.Mul(x, TOps.Broadcast(0.70710678118654752f)))));
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
            default:
                return x;
        }
    }
}
