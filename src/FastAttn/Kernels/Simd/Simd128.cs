using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace FastAttn.Kernels;

/// <summary>The 128-bit path (SSE/AVX or Arm AdvSimd): 4 floats per register, 6-row GEMM tiles.</summary>
internal unsafe struct Simd128 : ISimd<Vector128<float>>
{
    public static int Width => 4;
    public static int GemmRows => 6;
    public static Vector128<float> Zero => Vector128<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Load(float* p) => Vector128.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> LoadBf16(ushort* p) => Vector128.ShiftLeft(Vector128.WidenLower(Vector128.Create(Vector64.Load(p), Vector64<ushort>.Zero)), 16).AsSingle();
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
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Exp2NonPositive(Vector128<float> x) => VecMath.Exp2NonPositive<Simd128, Vector128<float>>(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Pow2FromMagic(Vector128<float> t) => (Vector128.ShiftLeft(t.AsInt32(), 23) + Vector128.Create(0x3F800000)).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> ScaleByMagic(Vector128<float> p, Vector128<float> t) => (p.AsInt32() + Vector128.ShiftLeft(t.AsInt32(), 23)).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Abs(Vector128<float> a) => Vector128.Abs(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> SelectLess(Vector128<float> a, Vector128<float> b, Vector128<float> x, Vector128<float> y) => Vector128.ConditionalSelect(Vector128.LessThan(a, b), x, y);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> ZeroDenormals(Vector128<float> v) => Vector128.ConditionalSelect(Vector128.Equals(v.AsInt32() & Vector128.Create(0x7F800000), Vector128<int>.Zero).AsSingle(), Vector128<float>.Zero, v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Reverse(Vector128<float> a) => Vector128.Shuffle(a, Vector128.Create(3, 2, 1, 0));
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
