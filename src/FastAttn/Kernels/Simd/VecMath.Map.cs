using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FastAttn.Kernels;

/// <summary>The vector math functions applied element-wise to a span on a chosen path (for tests and scalar-free loops).</summary>
internal static unsafe class VecMathMap
{
    public enum Op { Exp, ExpNonPositive, Exp2NonPositive, Tanh, Erf, Sigmoid, Relu, Gelu, GeluTanh, Reciprocal }

    public static void Apply(IsaPath isa, Op op, ReadOnlySpan<float> x, Span<float> y)
    {
        fixed (float* px = x, py = y)
        {
            switch (isa)
            {
                case IsaPath.Vector512: Apply<Simd512, Vector512<float>>(op, px, py, x.Length); break;
                case IsaPath.Vector256: Apply<Simd256, Vector256<float>>(op, px, py, x.Length); break;
                case IsaPath.Vector128: Apply<Simd128, Vector128<float>>(op, px, py, x.Length); break;
                default: Apply<SimdScalar, float>(op, px, py, x.Length); break;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Apply<TOps, TVec>(Op op, float* x, float* y, int n) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width, i = 0;
        for (; i + w <= n; i += w) TOps.Store(One<TOps, TVec>(op, TOps.Load(x + i)), y + i);
        // the tail through the scalar path's operations, so every element takes a path the kernels use
        for (; i < n; i++) y[i] = One<SimdScalar, float>(op, x[i]);
    }

    private static TVec One<TOps, TVec>(Op op, TVec v) where TOps : ISimd<TVec> where TVec : struct => op switch
    {
        Op.Exp => TOps.Exp(v),
        Op.ExpNonPositive => VecMath.ExpNonPositive<TOps, TVec>(v),
        Op.Exp2NonPositive => TOps.Exp2NonPositive(v),
        Op.Tanh => VecMath.Tanh<TOps, TVec>(v),
        Op.Erf => VecMath.Erf<TOps, TVec>(v),
        Op.Sigmoid => VecMath.Sigmoid<TOps, TVec>(v),
        Op.Relu => VecMath.Activate<TOps, TVec>(v, Activation.Relu),
        Op.Gelu => VecMath.Activate<TOps, TVec>(v, Activation.Gelu),
        Op.GeluTanh => VecMath.Activate<TOps, TVec>(v, Activation.GeluTanh),
        _ => TOps.Reciprocal(v),
    };
}
