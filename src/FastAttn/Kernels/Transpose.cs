using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FastAttn.Kernels;

/// <summary>In-register 16×16 transposes (AVX-512) for the packing routines; other paths copy element by element.</summary>
internal static unsafe class Transpose
{
    /// <summary>True when <see cref="Block16"/> may be used by kernels running on <paramref name="isa"/>.</summary>
    public static bool Available(IsaPath isa) => isa == IsaPath.Vector512 && Avx512F.IsSupported;

    /// <summary>
    /// dst[c·ldd + r] = scale·src[r·lds + c] for r &lt; 16, c &lt; 16, rows r ≥ <paramref name="rows"/> read as zero.
    /// Each destination row is written as a full 16-float store. With <paramref name="zeroDenormals"/>, denormal results are
    /// written as 0 (<see cref="ISimd{TVec}.ZeroDenormals"/>, after the scale): what this packs feeds multiply-adds. (A denormal source
    /// then costs one assist in the scale's multiply, once per element, instead of one in every multiply-add that reads it.)
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Block16(float* src, nint lds, int rows, float* dst, nint ldd, float scale, bool zeroDenormals)
    {
        Vector512<float> z = Vector512<float>.Zero;
        if (rows <= 8)
        {
            // the lower half only: rows 8–15 are zero, so their interleaves and half of the lane gathers are skipped
            var h0 = rows > 0 ? Vector512.Load(src) : z;
            var h1 = rows > 1 ? Vector512.Load(src + lds) : z;
            var h2 = rows > 2 ? Vector512.Load(src + 2 * lds) : z;
            var h3 = rows > 3 ? Vector512.Load(src + 3 * lds) : z;
            var h4 = rows > 4 ? Vector512.Load(src + 4 * lds) : z;
            var h5 = rows > 5 ? Vector512.Load(src + 5 * lds) : z;
            var h6 = rows > 6 ? Vector512.Load(src + 6 * lds) : z;
            var h7 = rows > 7 ? Vector512.Load(src + 7 * lds) : z;
            Quad(h0, h1, h2, h3, out var g0, out var g1, out var g2, out var g3);
            Quad(h4, h5, h6, h7, out var g4, out var g5, out var g6, out var g7);
            Lanes2(g0, g4, out var e0, out var e4, out var e8, out var eC);
            Lanes2(g1, g5, out var e1, out var e5, out var e9, out var eD);
            Lanes2(g2, g6, out var e2, out var e6, out var eA, out var eE);
            Lanes2(g3, g7, out var e3, out var e7, out var eB, out var eF);
            if (scale != 1f)
            {
                var sc = Vector512.Create(scale);
                e0 *= sc; e1 *= sc; e2 *= sc; e3 *= sc; e4 *= sc; e5 *= sc; e6 *= sc; e7 *= sc;
                e8 *= sc; e9 *= sc; eA *= sc; eB *= sc; eC *= sc; eD *= sc; eE *= sc; eF *= sc;
            }
            if (zeroDenormals)
            {
                e0 = Z(e0); e1 = Z(e1); e2 = Z(e2); e3 = Z(e3); e4 = Z(e4); e5 = Z(e5); e6 = Z(e6); e7 = Z(e7);
                e8 = Z(e8); e9 = Z(e9); eA = Z(eA); eB = Z(eB); eC = Z(eC); eD = Z(eD); eE = Z(eE); eF = Z(eF);
            }
            e0.Store(dst); e1.Store(dst + ldd); e2.Store(dst + 2 * ldd); e3.Store(dst + 3 * ldd);
            e4.Store(dst + 4 * ldd); e5.Store(dst + 5 * ldd); e6.Store(dst + 6 * ldd); e7.Store(dst + 7 * ldd);
            e8.Store(dst + 8 * ldd); e9.Store(dst + 9 * ldd); eA.Store(dst + 10 * ldd); eB.Store(dst + 11 * ldd);
            eC.Store(dst + 12 * ldd); eD.Store(dst + 13 * ldd); eE.Store(dst + 14 * ldd); eF.Store(dst + 15 * ldd);
            return;
        }
        var r0 = rows > 0 ? Vector512.Load(src) : z;
        var r1 = rows > 1 ? Vector512.Load(src + lds) : z;
        var r2 = rows > 2 ? Vector512.Load(src + 2 * lds) : z;
        var r3 = rows > 3 ? Vector512.Load(src + 3 * lds) : z;
        var r4 = rows > 4 ? Vector512.Load(src + 4 * lds) : z;
        var r5 = rows > 5 ? Vector512.Load(src + 5 * lds) : z;
        var r6 = rows > 6 ? Vector512.Load(src + 6 * lds) : z;
        var r7 = rows > 7 ? Vector512.Load(src + 7 * lds) : z;
        var r8 = rows > 8 ? Vector512.Load(src + 8 * lds) : z;
        var r9 = rows > 9 ? Vector512.Load(src + 9 * lds) : z;
        var rA = rows > 10 ? Vector512.Load(src + 10 * lds) : z;
        var rB = rows > 11 ? Vector512.Load(src + 11 * lds) : z;
        var rC = rows > 12 ? Vector512.Load(src + 12 * lds) : z;
        var rD = rows > 13 ? Vector512.Load(src + 13 * lds) : z;
        var rE = rows > 14 ? Vector512.Load(src + 14 * lds) : z;
        var rF = rows > 15 ? Vector512.Load(src + 15 * lds) : z;
        // pairs of rows interleaved per 32-bit element, then per 64-bit element: each 128-bit lane of
        // u{4g+c} holds column (c + 4·lane) of rows 4g..4g+3
        Quad(r0, r1, r2, r3, out var u0, out var u1, out var u2, out var u3);
        Quad(r4, r5, r6, r7, out var u4, out var u5, out var u6, out var u7);
        Quad(r8, r9, rA, rB, out var u8, out var u9, out var uA, out var uB);
        Quad(rC, rD, rE, rF, out var uC, out var uD, out var uE, out var uF);
        Lanes(u0, u4, u8, uC, out var o0, out var o4, out var o8, out var oC);
        Lanes(u1, u5, u9, uD, out var o1, out var o5, out var o9, out var oD);
        Lanes(u2, u6, uA, uE, out var o2, out var o6, out var oA, out var oE);
        Lanes(u3, u7, uB, uF, out var o3, out var o7, out var oB, out var oF);
        // ascending row order: a row's store may run into the next row, which is written after it
        if (scale != 1f)
        {
            var s = Vector512.Create(scale);
            o0 *= s; o1 *= s; o2 *= s; o3 *= s; o4 *= s; o5 *= s; o6 *= s; o7 *= s;
            o8 *= s; o9 *= s; oA *= s; oB *= s; oC *= s; oD *= s; oE *= s; oF *= s;
        }
        if (zeroDenormals)
        {
            o0 = Z(o0); o1 = Z(o1); o2 = Z(o2); o3 = Z(o3); o4 = Z(o4); o5 = Z(o5); o6 = Z(o6); o7 = Z(o7);
            o8 = Z(o8); o9 = Z(o9); oA = Z(oA); oB = Z(oB); oC = Z(oC); oD = Z(oD); oE = Z(oE); oF = Z(oF);
        }
        o0.Store(dst); o1.Store(dst + ldd); o2.Store(dst + 2 * ldd); o3.Store(dst + 3 * ldd);
        o4.Store(dst + 4 * ldd); o5.Store(dst + 5 * ldd); o6.Store(dst + 6 * ldd); o7.Store(dst + 7 * ldd);
        o8.Store(dst + 8 * ldd); o9.Store(dst + 9 * ldd); oA.Store(dst + 10 * ldd); oB.Store(dst + 11 * ldd);
        oC.Store(dst + 12 * ldd); oD.Store(dst + 13 * ldd); oE.Store(dst + 14 * ldd); oF.Store(dst + 15 * ldd);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Z(Vector512<float> v) => Simd512.ZeroDenormals(v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Quad(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d,
        out Vector512<float> c0, out Vector512<float> c1, out Vector512<float> c2, out Vector512<float> c3)
    {
        var ab0 = Avx512F.UnpackLow(a, b).AsDouble();
        var ab1 = Avx512F.UnpackHigh(a, b).AsDouble();
        var cd0 = Avx512F.UnpackLow(c, d).AsDouble();
        var cd1 = Avx512F.UnpackHigh(c, d).AsDouble();
        c0 = Avx512F.UnpackLow(ab0, cd0).AsSingle();
        c1 = Avx512F.UnpackHigh(ab0, cd0).AsSingle();
        c2 = Avx512F.UnpackLow(ab1, cd1).AsSingle();
        c3 = Avx512F.UnpackHigh(ab1, cd1).AsSingle();
    }

    /// <summary>As <see cref="Lanes"/> with the last two row groups zero.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Lanes2(Vector512<float> g0, Vector512<float> g1,
        out Vector512<float> c0, out Vector512<float> c4, out Vector512<float> c8, out Vector512<float> c12)
    {
        var z = Vector512<float>.Zero;
        var v0 = Avx512F.Shuffle4x128(g0, g1, 0x88);
        var v1 = Avx512F.Shuffle4x128(g0, g1, 0xDD);
        c0 = Avx512F.Shuffle4x128(v0, z, 0x88);
        c4 = Avx512F.Shuffle4x128(v1, z, 0x88);
        c8 = Avx512F.Shuffle4x128(v0, z, 0xDD);
        c12 = Avx512F.Shuffle4x128(v1, z, 0xDD);
    }

    /// <summary>Gathers the 128-bit lanes of four row groups into columns c, c+4, c+8, c+12.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Lanes(Vector512<float> g0, Vector512<float> g1, Vector512<float> g2, Vector512<float> g3,
        out Vector512<float> c0, out Vector512<float> c4, out Vector512<float> c8, out Vector512<float> c12)
    {
        var v0 = Avx512F.Shuffle4x128(g0, g1, 0x88); // lanes 0,2 of g0 then of g1
        var v1 = Avx512F.Shuffle4x128(g0, g1, 0xDD); // lanes 1,3
        var v2 = Avx512F.Shuffle4x128(g2, g3, 0x88);
        var v3 = Avx512F.Shuffle4x128(g2, g3, 0xDD);
        c0 = Avx512F.Shuffle4x128(v0, v2, 0x88);
        c4 = Avx512F.Shuffle4x128(v1, v3, 0x88);
        c8 = Avx512F.Shuffle4x128(v0, v2, 0xDD);
        c12 = Avx512F.Shuffle4x128(v1, v3, 0xDD);
    }
}
