using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace FastAttn.Kernels;

/// <summary>The scalar path: the same kernels, one float per "register".</summary>
internal unsafe struct SimdScalar : ISimd<float>
{
    public static int Width => 1;
    public static int GemmRows => 4;
    public static float Zero => 0f;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Load(float* p) => *p;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float LoadBf16(ushort* p) => BitConverter.UInt32BitsToSingle((uint)*p << 16);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(float v, float* p) => *p = v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Broadcast(float x) => x;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float BroadcastFrom(float* p) => *p;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Add(float a, float b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sub(float a, float b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Mul(float a, float b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Div(float a, float b) => a / b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Reciprocal(float x) => 1f / x;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Fma(float a, float b, float c) => a * b + c;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Reverse(float a) => a;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Max(float a, float b) => MathF.Max(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Min(float a, float b) => MathF.Min(a, b);
    // the same polynomial as the vector paths (not MathF.Exp), so every path gives the same values and edges
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Exp(float a) => VecMath.Exp<SimdScalar, float>(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Exp2NonPositive(float x) => VecMath.Exp2NonPositive<SimdScalar, float>(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Pow2FromMagic(float t) => BitConverter.Int32BitsToSingle((BitConverter.SingleToInt32Bits(t) << 23) + 0x3F800000);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float ScaleByMagic(float p, float t) => BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(p) + (BitConverter.SingleToInt32Bits(t) << 23));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Abs(float a) => MathF.Abs(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float SelectLess(float a, float b, float x, float y) => a < b ? x : y;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float ZeroDenormals(float v) => (BitConverter.SingleToInt32Bits(v) & 0x7F800000) == 0 ? 0f : v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(float a) => a;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float MaxAcross(float a) => a;
}
