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
    /// <summary>Width bfloat16 values widened to floats (bf16 bits become the float's upper 16 bits).</summary>
    static abstract TVec LoadBf16(ushort* p);
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
    /// <summary>
    /// 2^x for softmax's shifted scores: <see cref="VecMath.Exp2NonPositive{TOps, TVec}"/>, bit for bit; the 512-bit path
    /// computes it with fewer instructions (see <see cref="Simd512.Exp2NonPositive"/>).
    /// </summary>
    static abstract TVec Exp2NonPositive(TVec x);
    /// <summary>The float whose bits are (bits(t) &lt;&lt; 23) + bits(1f): 2^n when t = n + 1.5·2^23 (see <see cref="VecMath.Exp{TOps, TVec}"/>).</summary>
    static abstract TVec Pow2FromMagic(TVec t);
    /// <summary>
    /// The float whose bits are bits(p) + (bits(t) &lt;&lt; 23): p·2^n when t = n + 1.5·2^23, for p and the result normal
    /// (see <see cref="VecMath.Exp2NonPositive{TOps, TVec}"/>); one integer shift and add instead of building 2^n and multiplying.
    /// </summary>
    static abstract TVec ScaleByMagic(TVec p, TVec t);
    static abstract TVec Abs(TVec a);
    /// <summary>
    /// <paramref name="v"/> with every denormal lane (and −0) made +0, by its exponent bits (integer operations: an FP
    /// operation on a denormal input takes a microcode assist, ~200× a fused multiply-add on the Intel Xeon measured).
    /// </summary>
    static abstract TVec ZeroDenormals(TVec v);
    /// <summary>Lanes where a &lt; b take x, the others y.</summary>
    static abstract TVec SelectLess(TVec a, TVec b, TVec x, TVec y);
    /// <summary>The lanes in reverse order (lane i takes lane Width − 1 − i).</summary>
    static abstract TVec Reverse(TVec a);
    static abstract float Sum(TVec a);
    static abstract float MaxAcross(TVec a);
}
