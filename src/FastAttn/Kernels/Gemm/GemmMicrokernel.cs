using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FastAttn.Kernels;

/// <summary>Per-tile epilogue state handed to the microkernel's store.</summary>
internal unsafe struct TileEpilogue
{
    public float Alpha;
    public bool LoadC;
    public bool Last;
    public float* Bias;
    public Activation Act;
    public float* Residual;
    public nint Ldr;
    public float* Temp; // 3·64 floats for edge tiles
    public float* Tile; // MR·NR floats: the accumulators of one tile
    public nint Prefetch; // floats ahead of B to prefetch (0 = none)
    public nint PrefetchStep; // floats the prefetch address advances a step (0 = as B does; half of it fetches a next block in halves: GemmCore.SetPrefetch)
    public float* ColMax; // StoreColMax: two vectors of running column maxima the tile's rows are folded into
}

internal interface IRowCount { static abstract int N { get; } }

/// <summary>How a microkernel tile leaves its accumulators: through the general epilogue, or straight into C (full tiles only).</summary>
internal interface IStoreMode { static abstract int Mode { get; } }
/// <summary>Accumulators → tile buffer → <c>Epilogue</c> (alpha, C, bias, activation, residual, edge columns).</summary>
internal struct ViaEpilogue : IStoreMode { public static int Mode => 0; }
/// <summary>C = acc, every column of the tile valid.</summary>
internal struct StoreDirect : IStoreMode { public static int Mode => 1; }
/// <summary>C += acc, every column of the tile valid.</summary>
internal struct AddDirect : IStoreMode { public static int Mode => 2; }
/// <summary>
/// The general epilogue finished in registers, straight into C: (+C) and, on the last K block, +bias → ReLU → +residual.
/// Full-width tiles, alpha 1 and no activation or ReLU only (<see cref="GemmMicrokernel.CanFinishDirect"/>); same
/// operations in the same order as <see cref="ViaEpilogue"/>, so both give the same bits.
/// </summary>
internal struct FinishDirect : IStoreMode { public static int Mode => 3; }
/// <summary>
/// C = acc as <see cref="StoreDirect"/>, and each column's maximum over the tile's rows folded into
/// <see cref="TileEpilogue.ColMax"/> (whole panels only): attention's score tiles Sᵀ, whose columns are queries, hand
/// softmax its running maxima from the registers instead of a pass that reads the tile back.
/// </summary>
internal struct StoreColMax : IStoreMode { public static int Mode => 4; }
/// <summary>How the packed weight panel stores its elements.</summary>
internal interface IWeightFormat { static abstract bool Bf16 { get; } }
/// <summary>FP32 panels.</summary>
internal struct F32Weights : IWeightFormat { public static bool Bf16 => false; }
/// <summary>bfloat16 panels (same layout, 2 bytes per element), widened to FP32 as they are loaded.</summary>
internal struct Bf16Weights : IWeightFormat { public static bool Bf16 => true; }
internal struct Rows1 : IRowCount { public static int N => 1; }
/// <summary>How the microkernel reads A: packed (row i of step k at a + k·aStep + i) or in place (at a + i·lda + k).</summary>
internal interface IALayout { static abstract bool InPlace { get; } }
/// <summary>A packed per tile, k-major (what <c>GemmCore.PackA</c> writes): aStep = the tile's rows.</summary>
internal struct PackedA : IALayout { public static bool InPlace => false; }
/// <summary>A read where it is, row-major with row stride lda (passed as aStep): no packing pass.</summary>
internal struct InPlaceA : IALayout { public static bool InPlace => true; }
/// <summary>
/// Vectors of columns a tile computes (<see cref="N"/>) and vectors B advances per k (<see cref="Stride"/>): a whole panel,
/// a half panel packed one vector wide (the last columns of attention's V), or the first vector of a whole panel (a
/// product's last panel when it holds at most one vector of valid columns).
/// </summary>
internal interface IVecCount { static abstract int N { get; } static abstract int Stride { get; } }
internal struct Vec1 : IVecCount { public static int N => 1; public static int Stride => 1; }
internal struct Vec2 : IVecCount { public static int N => 2; public static int Stride => 2; }
internal struct Vec1Of2 : IVecCount { public static int N => 1; public static int Stride => 2; }
internal struct Rows2 : IRowCount { public static int N => 2; }
internal struct Rows3 : IRowCount { public static int N => 3; }
internal struct Rows4 : IRowCount { public static int N => 4; }
internal struct Rows5 : IRowCount { public static int N => 5; }
internal struct Rows6 : IRowCount { public static int N => 6; }
internal struct Rows7 : IRowCount { public static int N => 7; }
internal struct Rows8 : IRowCount { public static int N => 8; }
internal struct Rows9 : IRowCount { public static int N => 9; }
internal struct Rows10 : IRowCount { public static int N => 10; }
internal struct Rows11 : IRowCount { public static int N => 11; }
internal struct Rows12 : IRowCount { public static int N => 12; }
internal struct Rows13 : IRowCount { public static int N => 13; }
internal struct Rows14 : IRowCount { public static int N => 14; }

/// <summary>
/// The SGEMM microkernel: a register-blocked tile of up to 14 rows × 2 vectors of columns (12 × 32 floats on AVX-512:
/// 24 accumulators), broadcast-FMA over the packed depth, and its stores (through the epilogue, or straight into C).
/// The attention kernel runs its two products on the same tiles.
/// </summary>
internal static unsafe class GemmMicrokernel
{
    /// <summary>Runs the microkernel for a tile of <paramref name="rows"/> (1..14) rows; A advances by <paramref name="aStep"/> floats per k.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Dispatch<TOps, TVec>(int rows, float* a, nint aStep, float* b, int kc, float* c, nint ldc, int cols, ref TileEpilogue e)
        where TOps : ISimd<TVec> where TVec : struct
        => Dispatch<TOps, TVec, ViaEpilogue>(rows, a, aStep, b, kc, c, ldc, cols, ref e);

    /// <summary>As above with a chosen store mode (<see cref="StoreDirect"/> and <see cref="AddDirect"/> need full-width tiles).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Dispatch<TOps, TVec, TM>(int rows, float* a, nint aStep, float* b, int kc, float* c, nint ldc, int cols, ref TileEpilogue e)
        where TOps : ISimd<TVec> where TVec : struct where TM : IStoreMode
        => Dispatch<TOps, TVec, TM, F32Weights>(rows, a, aStep, b, kc, c, ldc, cols, ref e);

    /// <summary>As above for weight panels stored as <typeparamref name="TW"/> (b points at the panel's first element).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Dispatch<TOps, TVec, TM, TW>(int rows, float* a, nint aStep, float* b, int kc, float* c, nint ldc, int cols, ref TileEpilogue e)
        where TOps : ISimd<TVec> where TVec : struct where TM : IStoreMode where TW : IWeightFormat
        => Dispatch<TOps, TVec, TM, TW, Vec2>(rows, a, aStep, b, kc, c, ldc, cols, ref e);

    /// <summary>
    /// One vector of columns (B advances w floats per k): C = acc or C += acc (<see cref="StoreDirect"/>,
    /// <see cref="AddDirect"/>) for a panel only one vector wide.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void DispatchHalf<TOps, TVec, TM>(int rows, float* a, nint aStep, float* b, int kc, float* c, nint ldc, ref TileEpilogue e)
        where TOps : ISimd<TVec> where TVec : struct where TM : IStoreMode
    {
        Debug.Assert(TM.Mode is 1 or 2);
        Dispatch<TOps, TVec, TM, F32Weights, Vec1>(rows, a, aStep, b, kc, c, ldc, TOps.Width, ref e);
    }

    /// <summary>
    /// Only the first vector of each B row is multiplied, B still advancing a whole panel (two vectors) per k: a product's
    /// last panel whose valid columns fit one vector (<paramref name="cols"/> ≤ w; through the general epilogue, half the
    /// multiply-adds and B's loads), and attention's Oᵀ over a query tile of at most one vector (<see cref="StoreDirect"/>,
    /// <see cref="AddDirect"/>). Each valid element is the same chain of multiply-adds as in a whole-panel tile (same bits).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void DispatchFirstVector<TOps, TVec, TM, TW, TA>(int rows, float* a, nint aStep, float* b, int kc, float* c, nint ldc, int cols, ref TileEpilogue e)
        where TOps : ISimd<TVec> where TVec : struct where TM : IStoreMode where TW : IWeightFormat where TA : IALayout
    {
        Debug.Assert(cols <= TOps.Width && TM.Mode != 3);
        Dispatch<TOps, TVec, TM, TW, Vec1Of2, TA>(rows, a, aStep, b, kc, c, ldc, cols, ref e);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Dispatch<TOps, TVec, TM, TW, TC>(int rows, float* a, nint aStep, float* b, int kc, float* c, nint ldc, int cols, ref TileEpilogue e)
        where TOps : ISimd<TVec> where TVec : struct where TM : IStoreMode where TW : IWeightFormat where TC : IVecCount
        => Dispatch<TOps, TVec, TM, TW, TC, PackedA>(rows, a, aStep, b, kc, c, ldc, cols, ref e);

    /// <summary>
    /// As <see cref="Dispatch{TOps, TVec, TM, TW}"/> with A read in place: row i's k-th element at a + i·<paramref name="lda"/> + k
    /// (no packed copy). Each element is the same chain of multiply-adds in the same order as through a packed A.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void DispatchInPlace<TOps, TVec, TM, TW>(int rows, float* a, nint lda, float* b, int kc, float* c, nint ldc, int cols, ref TileEpilogue e)
        where TOps : ISimd<TVec> where TVec : struct where TM : IStoreMode where TW : IWeightFormat
        => Dispatch<TOps, TVec, TM, TW, Vec2, InPlaceA>(rows, a, lda, b, kc, c, ldc, cols, ref e);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Dispatch<TOps, TVec, TM, TW, TC, TA>(int rows, float* a, nint aStep, float* b, int kc, float* c, nint ldc, int cols, ref TileEpilogue e)
        where TOps : ISimd<TVec> where TVec : struct where TM : IStoreMode where TW : IWeightFormat where TC : IVecCount where TA : IALayout
    {
        switch (rows)
        {
            case 14: Tile<TOps, TVec, Rows14, TM, TW, TC, TA>(a, aStep, b, kc, c, ldc, cols, ref e); break;
            case 13: Tile<TOps, TVec, Rows13, TM, TW, TC, TA>(a, aStep, b, kc, c, ldc, cols, ref e); break;
            case 12: Tile<TOps, TVec, Rows12, TM, TW, TC, TA>(a, aStep, b, kc, c, ldc, cols, ref e); break;
            case 11: Tile<TOps, TVec, Rows11, TM, TW, TC, TA>(a, aStep, b, kc, c, ldc, cols, ref e); break;
            case 10: Tile<TOps, TVec, Rows10, TM, TW, TC, TA>(a, aStep, b, kc, c, ldc, cols, ref e); break;
            case 9: Tile<TOps, TVec, Rows9, TM, TW, TC, TA>(a, aStep, b, kc, c, ldc, cols, ref e); break;
            case 8: Tile<TOps, TVec, Rows8, TM, TW, TC, TA>(a, aStep, b, kc, c, ldc, cols, ref e); break;
            case 7: Tile<TOps, TVec, Rows7, TM, TW, TC, TA>(a, aStep, b, kc, c, ldc, cols, ref e); break;
            case 6: Tile<TOps, TVec, Rows6, TM, TW, TC, TA>(a, aStep, b, kc, c, ldc, cols, ref e); break;
            case 5: Tile<TOps, TVec, Rows5, TM, TW, TC, TA>(a, aStep, b, kc, c, ldc, cols, ref e); break;
            case 4: Tile<TOps, TVec, Rows4, TM, TW, TC, TA>(a, aStep, b, kc, c, ldc, cols, ref e); break;
            case 3: Tile<TOps, TVec, Rows3, TM, TW, TC, TA>(a, aStep, b, kc, c, ldc, cols, ref e); break;
            case 2: Tile<TOps, TVec, Rows2, TM, TW, TC, TA>(a, aStep, b, kc, c, ldc, cols, ref e); break;
            default: Tile<TOps, TVec, Rows1, TM, TW, TC, TA>(a, aStep, b, kc, c, ldc, cols, ref e); break;
        }
    }

    /// <summary>
    /// Three vectors of columns (B advances 3w floats per k), up to 8 rows: C = acc or C += acc (<see cref="StoreDirect"/>,
    /// <see cref="AddDirect"/>). For attention's P·V when the value width ends in a half panel (48, 80, 112 on AVX-512):
    /// the last full panel and the half one run as one tile, whose broadcasts of P serve three vectors instead of one or two.
    /// Each element is the same chain of multiply-adds in the same order as in the other tiles (same bits).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void DispatchTriple<TOps, TVec, TM>(int rows, float* a, nint aStep, float* b, int kc, float* c, nint ldc)
        where TOps : ISimd<TVec> where TVec : struct where TM : IStoreMode
    {
        Debug.Assert(TM.Mode is 1 or 2 && rows is >= 1 and <= 8);
        switch (rows)
        {
            case 8: Tile3<TOps, TVec, Rows8, TM>(a, aStep, b, kc, c, ldc); break;
            case 7: Tile3<TOps, TVec, Rows7, TM>(a, aStep, b, kc, c, ldc); break;
            case 6: Tile3<TOps, TVec, Rows6, TM>(a, aStep, b, kc, c, ldc); break;
            case 5: Tile3<TOps, TVec, Rows5, TM>(a, aStep, b, kc, c, ldc); break;
            case 4: Tile3<TOps, TVec, Rows4, TM>(a, aStep, b, kc, c, ldc); break;
            case 3: Tile3<TOps, TVec, Rows3, TM>(a, aStep, b, kc, c, ldc); break;
            case 2: Tile3<TOps, TVec, Rows2, TM>(a, aStep, b, kc, c, ldc); break;
            default: Tile3<TOps, TVec, Rows1, TM>(a, aStep, b, kc, c, ldc); break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile3<TOps, TVec, TR, TM>(float* a, nint aStep, float* b, int kc, float* c, nint ldc)
        where TOps : ISimd<TVec> where TVec : struct where TR : IRowCount where TM : IStoreMode
    {
        int w = TOps.Width;
        TVec c00 = TOps.Zero, c01 = TOps.Zero, c02 = TOps.Zero, c10 = TOps.Zero, c11 = TOps.Zero, c12 = TOps.Zero;
        TVec c20 = TOps.Zero, c21 = TOps.Zero, c22 = TOps.Zero, c30 = TOps.Zero, c31 = TOps.Zero, c32 = TOps.Zero;
        TVec c40 = TOps.Zero, c41 = TOps.Zero, c42 = TOps.Zero, c50 = TOps.Zero, c51 = TOps.Zero, c52 = TOps.Zero;
        TVec c60 = TOps.Zero, c61 = TOps.Zero, c62 = TOps.Zero, c70 = TOps.Zero, c71 = TOps.Zero, c72 = TOps.Zero;
        for (int k = 0; k < kc; k++)
        {
            TVec b0 = TOps.Load(b), b1 = TOps.Load(b + w), b2 = TOps.Load(b + 2 * w);
            TVec x = TOps.BroadcastFrom(a);
            c00 = TOps.Fma(x, b0, c00); c01 = TOps.Fma(x, b1, c01); c02 = TOps.Fma(x, b2, c02);
            if (TR.N > 1) { x = TOps.BroadcastFrom(a + 1); c10 = TOps.Fma(x, b0, c10); c11 = TOps.Fma(x, b1, c11); c12 = TOps.Fma(x, b2, c12); }
            if (TR.N > 2) { x = TOps.BroadcastFrom(a + 2); c20 = TOps.Fma(x, b0, c20); c21 = TOps.Fma(x, b1, c21); c22 = TOps.Fma(x, b2, c22); }
            if (TR.N > 3) { x = TOps.BroadcastFrom(a + 3); c30 = TOps.Fma(x, b0, c30); c31 = TOps.Fma(x, b1, c31); c32 = TOps.Fma(x, b2, c32); }
            if (TR.N > 4) { x = TOps.BroadcastFrom(a + 4); c40 = TOps.Fma(x, b0, c40); c41 = TOps.Fma(x, b1, c41); c42 = TOps.Fma(x, b2, c42); }
            if (TR.N > 5) { x = TOps.BroadcastFrom(a + 5); c50 = TOps.Fma(x, b0, c50); c51 = TOps.Fma(x, b1, c51); c52 = TOps.Fma(x, b2, c52); }
            if (TR.N > 6) { x = TOps.BroadcastFrom(a + 6); c60 = TOps.Fma(x, b0, c60); c61 = TOps.Fma(x, b1, c61); c62 = TOps.Fma(x, b2, c62); }
            if (TR.N > 7) { x = TOps.BroadcastFrom(a + 7); c70 = TOps.Fma(x, b0, c70); c71 = TOps.Fma(x, b1, c71); c72 = TOps.Fma(x, b2, c72); }
            a += aStep;
            b += 3 * w;
        }
        Put3<TOps, TVec, TM>(c00, c01, c02, c, w);
        if (TR.N > 1) Put3<TOps, TVec, TM>(c10, c11, c12, c + ldc, w);
        if (TR.N > 2) Put3<TOps, TVec, TM>(c20, c21, c22, c + 2 * ldc, w);
        if (TR.N > 3) Put3<TOps, TVec, TM>(c30, c31, c32, c + 3 * ldc, w);
        if (TR.N > 4) Put3<TOps, TVec, TM>(c40, c41, c42, c + 4 * ldc, w);
        if (TR.N > 5) Put3<TOps, TVec, TM>(c50, c51, c52, c + 5 * ldc, w);
        if (TR.N > 6) Put3<TOps, TVec, TM>(c60, c61, c62, c + 6 * ldc, w);
        if (TR.N > 7) Put3<TOps, TVec, TM>(c70, c71, c72, c + 7 * ldc, w);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put3<TOps, TVec, TM>(TVec v0, TVec v1, TVec v2, float* p, int w) where TOps : ISimd<TVec> where TVec : struct where TM : IStoreMode
    {
        Put<TOps, TVec, TM>(v0, p);
        Put<TOps, TVec, TM>(v1, p + w);
        Put<TOps, TVec, TM>(v2, p + 2 * w);
    }

    /// <summary>
    /// The register-blocked microkernel: TR rows (≤ MR) × 2 vectors of columns, broadcast-FMA over kc.
    /// One body serves every width and every row count; the JIT folds the row tests away.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile<TOps, TVec, TR, TM, TW, TC, TA>(float* a, nint aStep, float* b, int kc, float* c, nint ldc, int cols, ref TileEpilogue e)
        where TOps : ISimd<TVec> where TVec : struct where TR : IRowCount where TM : IStoreMode where TW : IWeightFormat where TC : IVecCount where TA : IALayout
    {
        // A in place: rows 0–3, 4–7, 8–11, 12–13 from four bases, + {0, 1, 2, 3}·lda held once (aStep is lda); each base
        // advances one float per k. Packed: row i at a + i, a advancing aStep.
        float* p0 = a, p4 = a + 4 * aStep, p8 = a + 8 * aStep, p12 = a + 12 * aStep;
        nint l1 = aStep, l2 = 2 * aStep, l3 = 3 * aStep;
        int w = TOps.Width;
        TVec c00 = TOps.Zero, c01 = TOps.Zero, c10 = TOps.Zero, c11 = TOps.Zero;
        TVec c20 = TOps.Zero, c21 = TOps.Zero, c30 = TOps.Zero, c31 = TOps.Zero;
        TVec c40 = TOps.Zero, c41 = TOps.Zero, c50 = TOps.Zero, c51 = TOps.Zero;
        TVec c60 = TOps.Zero, c61 = TOps.Zero, c70 = TOps.Zero, c71 = TOps.Zero;
        TVec c80 = TOps.Zero, c81 = TOps.Zero, c90 = TOps.Zero, c91 = TOps.Zero;
        TVec cA0 = TOps.Zero, cA1 = TOps.Zero, cB0 = TOps.Zero, cB1 = TOps.Zero;
        TVec cC0 = TOps.Zero, cC1 = TOps.Zero, cD0 = TOps.Zero, cD1 = TOps.Zero;
        nint pf = e.Prefetch;
        float* q = b + pf;
        nint qs = e.PrefetchStep != 0 ? e.PrefetchStep : TW.Bf16 ? TC.Stride * w / 2 : TC.Stride * w;
        for (int k = 0; k < kc; k++)
        {
            if (pf != 0 && System.Runtime.Intrinsics.X86.Sse.IsSupported)
            {
                System.Runtime.Intrinsics.X86.Sse.Prefetch0(q);
                if (TC.N > 1) System.Runtime.Intrinsics.X86.Sse.Prefetch0(q + 16);
                q += qs;
            }
            TVec b0 = TW.Bf16 ? TOps.LoadBf16((ushort*)b) : TOps.Load(b);
            TVec b1 = TC.N == 1 ? TOps.Zero : TW.Bf16 ? TOps.LoadBf16((ushort*)b + w) : TOps.Load(b + w);
            TVec x = TOps.BroadcastFrom(TA.InPlace ? p0 : a);
            c00 = TOps.Fma(x, b0, c00); if (TC.N > 1) c01 = TOps.Fma(x, b1, c01);
            if (TR.N > 1) { x = TOps.BroadcastFrom(TA.InPlace ? p0 + l1 : a + 1); c10 = TOps.Fma(x, b0, c10); if (TC.N > 1) c11 = TOps.Fma(x, b1, c11); }
            if (TR.N > 2) { x = TOps.BroadcastFrom(TA.InPlace ? p0 + l2 : a + 2); c20 = TOps.Fma(x, b0, c20); if (TC.N > 1) c21 = TOps.Fma(x, b1, c21); }
            if (TR.N > 3) { x = TOps.BroadcastFrom(TA.InPlace ? p0 + l3 : a + 3); c30 = TOps.Fma(x, b0, c30); if (TC.N > 1) c31 = TOps.Fma(x, b1, c31); }
            if (TR.N > 4) { x = TOps.BroadcastFrom(TA.InPlace ? p4 : a + 4); c40 = TOps.Fma(x, b0, c40); if (TC.N > 1) c41 = TOps.Fma(x, b1, c41); }
            if (TR.N > 5) { x = TOps.BroadcastFrom(TA.InPlace ? p4 + l1 : a + 5); c50 = TOps.Fma(x, b0, c50); if (TC.N > 1) c51 = TOps.Fma(x, b1, c51); }
            if (TR.N > 6) { x = TOps.BroadcastFrom(TA.InPlace ? p4 + l2 : a + 6); c60 = TOps.Fma(x, b0, c60); if (TC.N > 1) c61 = TOps.Fma(x, b1, c61); }
            if (TR.N > 7) { x = TOps.BroadcastFrom(TA.InPlace ? p4 + l3 : a + 7); c70 = TOps.Fma(x, b0, c70); if (TC.N > 1) c71 = TOps.Fma(x, b1, c71); }
            if (TR.N > 8) { x = TOps.BroadcastFrom(TA.InPlace ? p8 : a + 8); c80 = TOps.Fma(x, b0, c80); if (TC.N > 1) c81 = TOps.Fma(x, b1, c81); }
            if (TR.N > 9) { x = TOps.BroadcastFrom(TA.InPlace ? p8 + l1 : a + 9); c90 = TOps.Fma(x, b0, c90); if (TC.N > 1) c91 = TOps.Fma(x, b1, c91); }
            if (TR.N > 10) { x = TOps.BroadcastFrom(TA.InPlace ? p8 + l2 : a + 10); cA0 = TOps.Fma(x, b0, cA0); if (TC.N > 1) cA1 = TOps.Fma(x, b1, cA1); }
            if (TR.N > 11) { x = TOps.BroadcastFrom(TA.InPlace ? p8 + l3 : a + 11); cB0 = TOps.Fma(x, b0, cB0); if (TC.N > 1) cB1 = TOps.Fma(x, b1, cB1); }
            if (TR.N > 12) { x = TOps.BroadcastFrom(TA.InPlace ? p12 : a + 12); cC0 = TOps.Fma(x, b0, cC0); if (TC.N > 1) cC1 = TOps.Fma(x, b1, cC1); }
            if (TR.N > 13) { x = TOps.BroadcastFrom(TA.InPlace ? p12 + l1 : a + 13); cD0 = TOps.Fma(x, b0, cD0); if (TC.N > 1) cD1 = TOps.Fma(x, b1, cD1); }
            if (TA.InPlace) { p0++; p4++; p8++; p12++; } else a += aStep;
            b += TW.Bf16 ? TC.Stride * w / 2 : TC.Stride * w; // one panel row: 2w elements (2w bf16 = w floats of bytes), also when only its first vector is used; w for a half panel packed one vector wide
        }
        Debug.Assert(TC.N == 2 || TM.Mode != 3, "FinishDirect finishes whole panels only");
        if (TM.Mode == 3)
        {
            bool last = e.Last, loadC = e.LoadC;
            bool relu = last && e.Act == Activation.Relu;
            TVec bias0 = last && e.Bias != null ? TOps.Load(e.Bias) : TOps.Zero;
            TVec bias1 = last && e.Bias != null ? TOps.Load(e.Bias + w) : TOps.Zero;
            float* res = last ? e.Residual : null;
            nint ldr = e.Ldr;
            Fin<TOps, TVec>(c00, c, bias0, loadC, relu, res); Fin<TOps, TVec>(c01, c + w, bias1, loadC, relu, res == null ? null : res + w);
            if (TR.N > 1) FinRow<TOps, TVec>(c10, c11, c + ldc, w, bias0, bias1, loadC, relu, res, ldr, 1);
            if (TR.N > 2) FinRow<TOps, TVec>(c20, c21, c + 2 * ldc, w, bias0, bias1, loadC, relu, res, ldr, 2);
            if (TR.N > 3) FinRow<TOps, TVec>(c30, c31, c + 3 * ldc, w, bias0, bias1, loadC, relu, res, ldr, 3);
            if (TR.N > 4) FinRow<TOps, TVec>(c40, c41, c + 4 * ldc, w, bias0, bias1, loadC, relu, res, ldr, 4);
            if (TR.N > 5) FinRow<TOps, TVec>(c50, c51, c + 5 * ldc, w, bias0, bias1, loadC, relu, res, ldr, 5);
            if (TR.N > 6) FinRow<TOps, TVec>(c60, c61, c + 6 * ldc, w, bias0, bias1, loadC, relu, res, ldr, 6);
            if (TR.N > 7) FinRow<TOps, TVec>(c70, c71, c + 7 * ldc, w, bias0, bias1, loadC, relu, res, ldr, 7);
            if (TR.N > 8) FinRow<TOps, TVec>(c80, c81, c + 8 * ldc, w, bias0, bias1, loadC, relu, res, ldr, 8);
            if (TR.N > 9) FinRow<TOps, TVec>(c90, c91, c + 9 * ldc, w, bias0, bias1, loadC, relu, res, ldr, 9);
            if (TR.N > 10) FinRow<TOps, TVec>(cA0, cA1, c + 10 * ldc, w, bias0, bias1, loadC, relu, res, ldr, 10);
            if (TR.N > 11) FinRow<TOps, TVec>(cB0, cB1, c + 11 * ldc, w, bias0, bias1, loadC, relu, res, ldr, 11);
            if (TR.N > 12) FinRow<TOps, TVec>(cC0, cC1, c + 12 * ldc, w, bias0, bias1, loadC, relu, res, ldr, 12);
            if (TR.N > 13) FinRow<TOps, TVec>(cD0, cD1, c + 13 * ldc, w, bias0, bias1, loadC, relu, res, ldr, 13);
            return;
        }
        if (TM.Mode != 0)
        {
            Put<TOps, TVec, TM>(c00, c); if (TC.N > 1) Put<TOps, TVec, TM>(c01, c + w);
            if (TR.N > 1) { Put<TOps, TVec, TM>(c10, c + ldc); if (TC.N > 1) Put<TOps, TVec, TM>(c11, c + ldc + w); }
            if (TR.N > 2) { Put<TOps, TVec, TM>(c20, c + 2 * ldc); if (TC.N > 1) Put<TOps, TVec, TM>(c21, c + 2 * ldc + w); }
            if (TR.N > 3) { Put<TOps, TVec, TM>(c30, c + 3 * ldc); if (TC.N > 1) Put<TOps, TVec, TM>(c31, c + 3 * ldc + w); }
            if (TR.N > 4) { Put<TOps, TVec, TM>(c40, c + 4 * ldc); if (TC.N > 1) Put<TOps, TVec, TM>(c41, c + 4 * ldc + w); }
            if (TR.N > 5) { Put<TOps, TVec, TM>(c50, c + 5 * ldc); if (TC.N > 1) Put<TOps, TVec, TM>(c51, c + 5 * ldc + w); }
            if (TR.N > 6) { Put<TOps, TVec, TM>(c60, c + 6 * ldc); if (TC.N > 1) Put<TOps, TVec, TM>(c61, c + 6 * ldc + w); }
            if (TR.N > 7) { Put<TOps, TVec, TM>(c70, c + 7 * ldc); if (TC.N > 1) Put<TOps, TVec, TM>(c71, c + 7 * ldc + w); }
            if (TR.N > 8) { Put<TOps, TVec, TM>(c80, c + 8 * ldc); if (TC.N > 1) Put<TOps, TVec, TM>(c81, c + 8 * ldc + w); }
            if (TR.N > 9) { Put<TOps, TVec, TM>(c90, c + 9 * ldc); if (TC.N > 1) Put<TOps, TVec, TM>(c91, c + 9 * ldc + w); }
            if (TR.N > 10) { Put<TOps, TVec, TM>(cA0, c + 10 * ldc); if (TC.N > 1) Put<TOps, TVec, TM>(cA1, c + 10 * ldc + w); }
            if (TR.N > 11) { Put<TOps, TVec, TM>(cB0, c + 11 * ldc); if (TC.N > 1) Put<TOps, TVec, TM>(cB1, c + 11 * ldc + w); }
            if (TR.N > 12) { Put<TOps, TVec, TM>(cC0, c + 12 * ldc); if (TC.N > 1) Put<TOps, TVec, TM>(cC1, c + 12 * ldc + w); }
            if (TR.N > 13) { Put<TOps, TVec, TM>(cD0, c + 13 * ldc); if (TC.N > 1) Put<TOps, TVec, TM>(cD1, c + 13 * ldc + w); }
            if (TM.Mode == 4)
            {
                Debug.Assert(TC.N == 2, "StoreColMax folds whole panels only");
                // two chains (even and odd rows) per vector, then the running maxima: max is exact, so the order changes
                // no finite result (softmax makes a column with a NaN score NaN whichever maximum it is given)
                TVec e0 = c00, e1 = c01, o0 = TOps.Load(e.ColMax), o1 = TOps.Load(e.ColMax + w);
                if (TR.N > 1) { o0 = TOps.Max(o0, c10); o1 = TOps.Max(o1, c11); }
                if (TR.N > 2) { e0 = TOps.Max(e0, c20); e1 = TOps.Max(e1, c21); }
                if (TR.N > 3) { o0 = TOps.Max(o0, c30); o1 = TOps.Max(o1, c31); }
                if (TR.N > 4) { e0 = TOps.Max(e0, c40); e1 = TOps.Max(e1, c41); }
                if (TR.N > 5) { o0 = TOps.Max(o0, c50); o1 = TOps.Max(o1, c51); }
                if (TR.N > 6) { e0 = TOps.Max(e0, c60); e1 = TOps.Max(e1, c61); }
                if (TR.N > 7) { o0 = TOps.Max(o0, c70); o1 = TOps.Max(o1, c71); }
                if (TR.N > 8) { e0 = TOps.Max(e0, c80); e1 = TOps.Max(e1, c81); }
                if (TR.N > 9) { o0 = TOps.Max(o0, c90); o1 = TOps.Max(o1, c91); }
                if (TR.N > 10) { e0 = TOps.Max(e0, cA0); e1 = TOps.Max(e1, cA1); }
                if (TR.N > 11) { o0 = TOps.Max(o0, cB0); o1 = TOps.Max(o1, cB1); }
                if (TR.N > 12) { e0 = TOps.Max(e0, cC0); e1 = TOps.Max(e1, cC1); }
                if (TR.N > 13) { o0 = TOps.Max(o0, cD0); o1 = TOps.Max(o1, cD1); }
                TOps.Store(TOps.Max(o0, e0), e.ColMax);
                TOps.Store(TOps.Max(o1, e1), e.ColMax + w);
            }
            return;
        }
        // Spill the accumulators to an L1-hot tile and finish in a separate method: keeping the epilogue
        // (activations are long) out of this body lets every accumulator stay in a register in the loop.
        float* t = e.Tile;
        int nr = 2 * w;
        // (one vector of columns: the second half of each tile row is not written; the epilogue reads only valid columns)
        TOps.Store(c00, t); if (TC.N > 1) TOps.Store(c01, t + w);
        if (TR.N > 1) { TOps.Store(c10, t + nr); if (TC.N > 1) TOps.Store(c11, t + nr + w); }
        if (TR.N > 2) { TOps.Store(c20, t + 2 * nr); if (TC.N > 1) TOps.Store(c21, t + 2 * nr + w); }
        if (TR.N > 3) { TOps.Store(c30, t + 3 * nr); if (TC.N > 1) TOps.Store(c31, t + 3 * nr + w); }
        if (TR.N > 4) { TOps.Store(c40, t + 4 * nr); if (TC.N > 1) TOps.Store(c41, t + 4 * nr + w); }
        if (TR.N > 5) { TOps.Store(c50, t + 5 * nr); if (TC.N > 1) TOps.Store(c51, t + 5 * nr + w); }
        if (TR.N > 6) { TOps.Store(c60, t + 6 * nr); if (TC.N > 1) TOps.Store(c61, t + 6 * nr + w); }
        if (TR.N > 7) { TOps.Store(c70, t + 7 * nr); if (TC.N > 1) TOps.Store(c71, t + 7 * nr + w); }
        if (TR.N > 8) { TOps.Store(c80, t + 8 * nr); if (TC.N > 1) TOps.Store(c81, t + 8 * nr + w); }
        if (TR.N > 9) { TOps.Store(c90, t + 9 * nr); if (TC.N > 1) TOps.Store(c91, t + 9 * nr + w); }
        if (TR.N > 10) { TOps.Store(cA0, t + 10 * nr); if (TC.N > 1) TOps.Store(cA1, t + 10 * nr + w); }
        if (TR.N > 11) { TOps.Store(cB0, t + 11 * nr); if (TC.N > 1) TOps.Store(cB1, t + 11 * nr + w); }
        if (TR.N > 12) { TOps.Store(cC0, t + 12 * nr); if (TC.N > 1) TOps.Store(cC1, t + 12 * nr + w); }
        if (TR.N > 13) { TOps.Store(cD0, t + 13 * nr); if (TC.N > 1) TOps.Store(cD1, t + 13 * nr + w); }
        Epilogue<TOps, TVec>(TR.N, c, ldc, cols, ref e);
    }

    /// <summary>Whether a tile of <paramref name="cols"/> columns can use <see cref="FinishDirect"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool CanFinishDirect(int cols, int nr, in TileEpilogue e)
        => cols == nr && e.Alpha == 1f && (!e.Last || e.Act == Activation.None || e.Act == Activation.Relu);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FinRow<TOps, TVec>(TVec v0, TVec v1, float* p, int w, TVec bias0, TVec bias1, bool loadC, bool relu, float* res, nint ldr, int r)
        where TOps : ISimd<TVec> where TVec : struct
    {
        float* rr = res == null ? null : res + r * ldr;
        Fin<TOps, TVec>(v0, p, bias0, loadC, relu, rr);
        Fin<TOps, TVec>(v1, p + w, bias1, loadC, relu, rr == null ? null : rr + w);
    }

    // the steps of Finish for alpha 1 in its order: (+C), +bias (0 when none or not the last block), ReLU, +residual
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Fin<TOps, TVec>(TVec v, float* p, TVec bias, bool loadC, bool relu, float* res)
        where TOps : ISimd<TVec> where TVec : struct
    {
        if (loadC) v = TOps.Add(v, TOps.Load(p));
        v = TOps.Add(v, bias);
        if (relu) v = TOps.Max(v, TOps.Zero);
        if (res != null) v = TOps.Add(v, TOps.Load(res));
        TOps.Store(v, p);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put<TOps, TVec, TM>(TVec v, float* p) where TOps : ISimd<TVec> where TVec : struct where TM : IStoreMode
        => TOps.Store(TM.Mode == 2 ? TOps.Add(v, TOps.Load(p)) : v, p);

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Epilogue<TOps, TVec>(int rows, float* c, nint ldc, int cols, ref TileEpilogue e)
        where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width;
        int nr = 2 * w;
        bool simple = e.Alpha == 1f && !e.LoadC && (!e.Last || (e.Bias == null && e.Act == Activation.None && e.Residual == null));
        if (cols < nr)
        {
            EdgeEpilogue<TOps, TVec>(rows, c, ldc, cols, ref e);
            return;
        }
        if (e.Alpha == 1f && !e.LoadC && e.Last && e.Act != Activation.None)
        {
            // the common case of an activation here (a feed-forward's first product, one K block; ReLU finishes in the
            // microkernel) in one tight loop: the same operations in the same order as Finish (+bias, activation,
            // +residual), with the bias held in registers and the activation's kind in a local
            bool hasBias = e.Bias != null;
            TVec b0 = hasBias ? TOps.Load(e.Bias) : TOps.Zero, b1 = hasBias ? TOps.Load(e.Bias + w) : TOps.Zero;
            float* res0 = e.Residual;
            nint ldr = e.Ldr;
            Activation act = e.Act;
            for (int r = 0; r < rows; r++)
            {
                float* t = e.Tile + r * nr;
                float* cr = c + r * ldc;
                TVec v0 = TOps.Load(t), v1 = TOps.Load(t + w);
                if (hasBias) { v0 = TOps.Add(v0, b0); v1 = TOps.Add(v1, b1); } // not + 0: −0 stays −0, as in Finish
                v0 = VecMath.Activate<TOps, TVec>(v0, act);
                v1 = VecMath.Activate<TOps, TVec>(v1, act);
                if (res0 != null)
                {
                    v0 = TOps.Add(v0, TOps.Load(res0 + r * ldr));
                    v1 = TOps.Add(v1, TOps.Load(res0 + r * ldr + w));
                }
                TOps.Store(v0, cr);
                TOps.Store(v1, cr + w);
            }
            return;
        }
        for (int r = 0; r < rows; r++)
        {
            float* t = e.Tile + r * nr;
            float* cr = c + r * ldc;
            if (cols == nr && simple)
            {
                TOps.Store(TOps.Load(t), cr);
                TOps.Store(TOps.Load(t + w), cr + w);
                continue;
            }
            float* res = e.Residual == null ? null : e.Residual + r * e.Ldr;
            if (cols == nr)
            {
                TOps.Store(Finish<TOps, TVec>(TOps.Load(t), cr, e.Bias, res, ref e), cr);
                TOps.Store(Finish<TOps, TVec>(TOps.Load(t + w), cr + w, e.Bias == null ? null : e.Bias + w, res == null ? null : res + w, ref e), cr + w);
            }
            else
            {
                float* tc = e.Temp, tb = e.Temp + 64, tr = e.Temp + 128;
                for (int j = 0; j < nr; j++)
                {
                    bool valid = j < cols;
                    tc[j] = valid && e.LoadC ? cr[j] : 0f;
                    tb[j] = valid && e.Bias != null ? e.Bias[j] : 0f;
                    tr[j] = valid && res != null ? res[j] : 0f;
                }
                TOps.Store(Finish<TOps, TVec>(TOps.Load(t), tc, e.Bias == null ? null : tb, res == null ? null : tr, ref e), tc);
                TOps.Store(Finish<TOps, TVec>(TOps.Load(t + w), tc + w, e.Bias == null ? null : tb + w, res == null ? null : tr + w, ref e), tc + w);
                for (int j = 0; j < cols; j++) cr[j] = tc[j];
            }
        }
    }

    /// <summary>
    /// A tile narrower than the panel: whole vectors of valid columns are finished in place; only the one vector that
    /// straddles the edge goes through zero-padded temporaries (the bias part of those is built once per tile).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void EdgeEpilogue<TOps, TVec>(int rows, float* c, nint ldc, int cols, ref TileEpilogue e)
        where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width;
        int nr = 2 * w;
        int full = cols / w * w;           // columns finished in place: 0 or w
        int part = Math.Min(cols - full, w); // valid columns of the straddling vector (may be 0)
        float* tc = e.Temp, tb = e.Temp + 64, tr = e.Temp + 128;
        bool last = e.Last;
        float* bias = last ? e.Bias : null;
        if (part > 0 && bias != null)
        {
            for (int j = 0; j < w; j++) tb[j] = j < part ? bias[full + j] : 0f;
        }
        for (int r = 0; r < rows; r++)
        {
            float* t = e.Tile + r * nr;
            float* cr = c + r * ldc;
            float* res = last && e.Residual != null ? e.Residual + r * e.Ldr : null;
            for (int j = 0; j < full; j += w)
                TOps.Store(Finish<TOps, TVec>(TOps.Load(t + j), cr + j, bias == null ? null : bias + j, res == null ? null : res + j, ref e), cr + j);
            if (part == 0) continue;
            float* cp = cr + full;
            for (int j = 0; j < w; j++)
            {
                bool valid = j < part;
                tc[j] = valid && e.LoadC ? cp[j] : 0f;
                if (res != null) tr[j] = valid ? res[full + j] : 0f;
            }
            TOps.Store(Finish<TOps, TVec>(TOps.Load(t + full), tc, bias == null ? null : tb, res == null ? null : tr, ref e), tc);
            for (int j = 0; j < part; j++) cp[j] = tc[j];
        }
    }

    /// <summary>alpha·acc (+C) and, on the last K block, +bias → activation → +residual.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TVec Finish<TOps, TVec>(TVec acc, float* cOld, float* bias, float* res, ref TileEpilogue e)
        where TOps : ISimd<TVec> where TVec : struct
    {
        TVec v = e.Alpha == 1f ? acc : TOps.Mul(acc, TOps.Broadcast(e.Alpha));
        if (e.LoadC) v = TOps.Add(v, TOps.Load(cOld));
        if (e.Last)
        {
            if (bias != null) v = TOps.Add(v, TOps.Load(bias));
            if (e.Act != Activation.None) v = VecMath.Activate<TOps, TVec>(v, e.Act);
            if (res != null) v = TOps.Add(v, TOps.Load(res));
        }
        return v;
    }
}
