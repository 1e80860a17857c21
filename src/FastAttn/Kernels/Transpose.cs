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
    /// Each destination row is written as a full 16-float store.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Block16(float* src, nint lds, int rows, float* dst, nint ldd, float scale)
    {
        Vector512<float> z = Vector512<float>.Zero;
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
        var s = Vector512.Create(scale);
        (o0 * s).Store(dst); (o1 * s).Store(dst + ldd); (o2 * s).Store(dst + 2 * ldd); (o3 * s).Store(dst + 3 * ldd);
        (o4 * s).Store(dst + 4 * ldd); (o5 * s).Store(dst + 5 * ldd); (o6 * s).Store(dst + 6 * ldd); (o7 * s).Store(dst + 7 * ldd);
        (o8 * s).Store(dst + 8 * ldd); (o9 * s).Store(dst + 9 * ldd); (oA * s).Store(dst + 10 * ldd); (oB * s).Store(dst + 11 * ldd);
        (oC * s).Store(dst + 12 * ldd); (oD * s).Store(dst + 13 * ldd); (oE * s).Store(dst + 14 * ldd); (oF * s).Store(dst + 15 * ldd);
    }

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
