using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace FastAttn.Kernels;

/// <summary>The 256-bit path (AVX2 + FMA): 8 floats per register, 6-row GEMM tiles.</summary>
internal unsafe struct Simd256 : ISimd<Vector256<float>>
{
    public static int Width => 8;
    public static int GemmRows => 6;
    public static Vector256<float> Zero => Vector256<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Load(float* p) => Vector256.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> LoadBf16(ushort* p) => Avx2.IsSupported ? Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(p), 16).AsSingle() : Vector256.ShiftLeft(Vector256.WidenLower(Vector256.Create(Vector128.Load(p), Vector128<ushort>.Zero)), 16).AsSingle();
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
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Exp2NonPositive(Vector256<float> x) => VecMath.Exp2NonPositive<Simd256, Vector256<float>>(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Pow2FromMagic(Vector256<float> t) => (Vector256.ShiftLeft(t.AsInt32(), 23) + Vector256.Create(0x3F800000)).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> ScaleByMagic(Vector256<float> p, Vector256<float> t) => (p.AsInt32() + Vector256.ShiftLeft(t.AsInt32(), 23)).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Abs(Vector256<float> a) => Vector256.Abs(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> SelectLess(Vector256<float> a, Vector256<float> b, Vector256<float> x, Vector256<float> y) => Vector256.ConditionalSelect(Vector256.LessThan(a, b), x, y);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> ZeroDenormals(Vector256<float> v) => Vector256.ConditionalSelect(Vector256.Equals(v.AsInt32() & Vector256.Create(0x7F800000), Vector256<int>.Zero).AsSingle(), Vector256<float>.Zero, v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Reverse(Vector256<float> a) => Vector256.Shuffle(a, Vector256.Create(7, 6, 5, 4, 3, 2, 1, 0));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Vector256<float> a) => Simd128.Sum(a.GetLower() + a.GetUpper());
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float MaxAcross(Vector256<float> a) => Simd128.MaxAcross(Vector128.Max(a.GetLower(), a.GetUpper()));
}
