using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace FastAttn.Kernels;

/// <summary>The 512-bit path (AVX-512F): 16 floats per register, 12-row GEMM tiles (24 of the 32 registers hold accumulators).</summary>
internal unsafe struct Simd512 : ISimd<Vector512<float>>
{
    public static int Width => 16;
    public static int GemmRows => 12;
    public static Vector512<float> Zero => Vector512<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Load(float* p) => Vector512.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> LoadBf16(ushort* p) => Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512UInt32(Vector256.Load(p)), 16).AsSingle();
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
    /// <summary>
    /// 2^x as <see cref="VecMath.Exp2NonPositive{TOps, TVec}"/> computes it, bit for bit, in 10 instructions instead of 15:
    /// n = round(x) by VRNDSCALEPS (nearest, ties to even, as the 1.5·2²³ trick rounds), the same f = x − n and polynomial,
    /// the exponent applied by VSCALEFPS (exact while the result is normal, as the integer add is), and the lanes below
    /// −126 (−∞ too) zeroed by a compare whose mask the VSCALEFPS applies itself (zero-masking: the JIT folds
    /// ConditionalSelect(mask, Scale, 0) into it; "not less than" keeps NaN lanes, which stay NaN) — no clamp needed, since
    /// only those lanes could leave the normal range. From −126 up n and f are the same numbers as the generic body's, so
    /// every result is the same float. Measured on Zen 5, alternated in one process over a 24 KB score tile (load,
    /// scale-shift, exponential, store, sum, as softmax's pass does): 1.53 against 1.81 ns per vector; softmax's share of
    /// the profile of attention 48 × 512 × 16 went from 25.3 to 23.1 % (the polynomial's six multiply-adds, on the same two
    /// pipes as the products', stay). The masked VSCALEFPS instead of a separate select (10 instructions): perf/ab.sh, 1
    /// thread, attention 48 × 512 × 16 1.033–1.048×, 48 × 128 × 16 1.019–1.026×, 24 × 512 × 32 1.005–1.015×, 12 × 512 × 64
    /// 1.008×, 9 × 512 × 80 1.008×, 6 × 512 × 128 1.007×.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp2NonPositive(Vector512<float> x)
    {
        Vector512<float> n = Avx512F.RoundScale(x, 0x08); // round to nearest even, no precision exception
        Vector512<float> p = VecMath.Exp2Polynomial<Simd512, Vector512<float>>(x - n);
        return Vector512.ConditionalSelect(Avx512F.CompareNotLessThan(x, Vector512.Create(-126f)), Avx512F.Scale(p, n), Vector512<float>.Zero);
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Pow2FromMagic(Vector512<float> t) => (Vector512.ShiftLeft(t.AsInt32(), 23) + Vector512.Create(0x3F800000)).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> ScaleByMagic(Vector512<float> p, Vector512<float> t) => (p.AsInt32() + Vector512.ShiftLeft(t.AsInt32(), 23)).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Abs(Vector512<float> a) => Vector512.Abs(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> SelectLess(Vector512<float> a, Vector512<float> b, Vector512<float> x, Vector512<float> y) => Vector512.ConditionalSelect(Vector512.LessThan(a, b), x, y);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> ZeroDenormals(Vector512<float> v) => Vector512.ConditionalSelect(Vector512.Equals(v.AsInt32() & Vector512.Create(0x7F800000), Vector512<int>.Zero).AsSingle(), Vector512<float>.Zero, v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Reverse(Vector512<float> a) => Vector512.Shuffle(a, Vector512.Create(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Vector512<float> a) => Simd256.Sum(a.GetLower() + a.GetUpper());
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float MaxAcross(Vector512<float> a) => Simd256.MaxAcross(Vector256.Max(a.GetLower(), a.GetUpper()));
}
