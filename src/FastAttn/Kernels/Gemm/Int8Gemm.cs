using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using FastAttn.Threading;

namespace FastAttn.Kernels;

/// <summary>The integer dot-product kernel an int8 product runs on.</summary>
internal enum Int8Kernel
{
    /// <summary>Plain integer loops.</summary>
    Scalar = 0,
    /// <summary>AVX2 <c>vpmaddubsw</c> + <c>vpmaddwd</c>: activations limited to 7 bits so the int16 pair sums never saturate.</summary>
    MaddUbs = 1,
    /// <summary>AVX-VNNI 256-bit <c>vpdpbusd</c>: u8 × s8 → int32, 32 multiply-adds per instruction.</summary>
    Vnni = 2,
    /// <summary>SSSE3 <c>pmaddubsw</c> + <c>pmaddwd</c> on 128-bit vectors, for the Vector128 path (7-bit activations as <see cref="MaddUbs"/>).</summary>
    MaddUbs128 = 3,
    /// <summary>
    /// AVX-512BW <c>vpmaddwd</c> on activations and weights widened to int16: 8-bit activations exactly where VNNI is not
    /// available to .NET (AVX-512 cores without AVX-VNNI: AMD Zen 4, Intel Ice Lake-SP and Cascade Lake); activations
    /// are quantized to int16 lanes (4 per group).
    /// </summary>
    Madd16 = 4,
}

/// <summary>Everything one int8 product needs, as raw pointers (pinned by the caller).</summary>
internal unsafe struct Int8Args
{
    public Int8Kernel Kernel;
    /// <summary>Rows per register tile (<see cref="Int8Gemm.TileRows"/>).</summary>
    public int MR;
    /// <summary>Quantized A in tiles of MR rows: tile t at QA + t·TileStride, then K4 groups of MR × 4 levels (the last tile, when partial, of its own rows × 4), a byte each, or an int16 each for <see cref="Int8Kernel.Madd16"/>.</summary>
    public byte* QA;
    public nint TileStride;
    /// <summary>Per row of A: the dequantisation scale and the zero point.</summary>
    public float* RowScale;
    public int* RowZero;
    public int M, N, K4;
    /// <summary>Weights in panels of 16 columns: panel p at PackedB + p·PanelStride, then K4 groups of 16 columns × 4 bytes.</summary>
    public sbyte* PackedB;
    public nint PanelStride;
    /// <summary>Per packed column: weight scale and the sum of its quantized weights (zero-point compensation).</summary>
    public float* ColScale;
    public int* ColSum;
    public float* C;
    public nint Ldc;
    public float Alpha;
    public bool Accumulate;
    public float* Bias;
    public Activation Act;
    public float* Residual;
    public nint Ldr;
}

/// <summary>
/// int8 products y = act(alpha·x·Wᵀ (+y) + bias) + residual with W quantized once per output channel (symmetric s8,
/// per-channel scale) and x quantized per row at call time (asymmetric u8 with a zero point, per-row scale), int32
/// accumulation, and the scales, the zero-point compensation (zero point × the weight column's sum) and the FP32
/// epilogue fused into the store.
/// <para>
/// Why u8 activations with a zero point rather than s8 × s8 with a sign trick: <c>vpdpbusd</c> multiplies u8 by s8
/// natively, so the unsigned activations go in as they are, the compensation is one integer multiply-add per output
/// (column sums are computed when the weight is packed), and an asymmetric range spends all 256 levels on rows that are
/// mostly positive (after GELU or ReLU) where a symmetric s8 range would waste half of them.
/// </para>
/// <para>
/// Without VNNI, <c>vpmaddubsw</c> adds two u8·s8 products into a saturating int16: 255·127·2 would overflow, so that
/// path quantizes activations to 0..127 (127·127·2 = 32,258 ≤ 32,767: never saturates) and is exact too. On AVX-512
/// cores without AVX-VNNI (the 512-bit VNNI of AMD Zen 4 and Intel Ice Lake-SP / Cascade Lake is not exposed by .NET 10)
/// the default is <see cref="Int8Kernel.Madd16"/> instead: activations at 8 bits widened to int16 and <c>vpmaddwd</c>,
/// the same results as VNNI bit for bit. Measured on Zen 4 (1 thread, BenchmarkDotNet short job): 128 × 768 · 768 × 768
/// in 950 µs against 740 for the 7-bit kernel and 1,327 for FP32; all-MiniLM-L6-v2 embeddings' cosine to FP32 mean /
/// min 0.998135 / 0.991125 against 0.994084 / 0.970819 with 7 bits (353 texts). <c>FASTATTN_INT8=maddubs</c> keeps the
/// faster 7-bit kernel. Every path computes the integer dot products exactly, so a path's result equals its integer
/// reference bit for bit.
/// </para>
/// </summary>
internal static unsafe class Int8Gemm
{
    /// <summary>Columns per weight panel: two 8-lane int32 accumulators.</summary>
    public const int NR = 16;
    /// <summary>
    /// Most rows per register tile: with AVX-512 the JIT encodes <c>vpdpbusd</c> in EVEX form and has 32 registers (24
    /// accumulators + 2 weight vectors + 1 broadcast); on the 256-bit path 6 rows fill the 16 AVX2 registers.
    /// </summary>
    public const int MaxMR = 12;

    /// <summary>Rows per register tile on <paramref name="isa"/>.</summary>
    public static int TileRows(IsaPath isa) => isa == IsaPath.Vector512 ? 12 : 6;
    /// <summary>Row tiles per A block kept in L2 while the weight panels stream past.</summary>
    public const int MCTiles = 16;
    /// <summary>Deepest K an int32 accumulator holds without overflow: 255·127·K &lt; 2³¹.</summary>
    public const int MaxDepth = 65536;
    /// <summary>Floats at the start of every thread's scratch for the int32 tile and the dequantized tile.</summary>
    public const int TileFloats = 2 * MaxMR * NR + 3 * NR;

    public static bool IsSupported(Int8Kernel k) => k switch
    {
        Int8Kernel.Scalar => true,
        Int8Kernel.MaddUbs => Avx2.IsSupported,
        Int8Kernel.Vnni => Avx2.IsSupported && AvxVnni.IsSupported,
        Int8Kernel.MaddUbs128 => Ssse3.IsSupported,
        Int8Kernel.Madd16 => Avx512BW.IsSupported && Vector512.IsHardwareAccelerated,
        _ => false,
    };

    /// <summary>The kernel here: VNNI, else the 16-bit one on AVX-512, else <c>vpmaddubsw</c> (lowered by <c>FASTATTN_INT8=scalar|maddubs</c>).</summary>
    public static Int8Kernel Best { get; } = Choose();

    /// <summary>Every int8 kernel this process can run.</summary>
    public static IReadOnlyList<Int8Kernel> Supported { get; } = Enum.GetValues<Int8Kernel>().Where(IsSupported).ToArray();

    /// <summary><c>FASTATTN_INT8=scalar</c>: every path runs the scalar kernel.</summary>
    private static readonly bool ScalarOnly = Environment.GetEnvironmentVariable("FASTATTN_INT8")?.Trim().ToLowerInvariant() == "scalar";

    private static Int8Kernel Choose()
    {
        var best = IsSupported(Int8Kernel.Vnni) ? Int8Kernel.Vnni : IsSupported(Int8Kernel.Madd16) ? Int8Kernel.Madd16
            : IsSupported(Int8Kernel.MaddUbs) ? Int8Kernel.MaddUbs : Int8Kernel.Scalar;
        var want = Environment.GetEnvironmentVariable("FASTATTN_INT8")?.Trim().ToLowerInvariant() switch
        {
            "scalar" => Int8Kernel.Scalar,
            "maddubs" => Int8Kernel.MaddUbs,
            _ => best,
        };
        return want < best ? want : best;
    }

    [ThreadStatic] private static Int8Kernel? _override;

    /// <summary>
    /// The kernel a product on <paramref name="isa"/> uses on this thread: <see cref="Best"/> from the 256-bit path up, the
    /// 128-bit kernel on the Vector128 path (unless <c>FASTATTN_INT8=scalar</c>), the scalar kernel below.
    /// </summary>
    public static Int8Kernel Current(IsaPath isa)
    {
        if (_override is { } o) return o;
        // the 16-bit kernel is a 512-bit one: a narrower path takes the 256-bit pmaddubsw kernel below it
        if (isa >= IsaPath.Vector256) return Best == Int8Kernel.Madd16 && isa != IsaPath.Vector512 ? Int8Kernel.MaddUbs : Best;
        return isa == IsaPath.Vector128 && !ScalarOnly && IsSupported(Int8Kernel.MaddUbs128) ? Int8Kernel.MaddUbs128 : Int8Kernel.Scalar;
    }

    /// <summary>Runs this thread's int8 products on <paramref name="kernel"/> until disposed (tests run every kernel).</summary>
    internal static IDisposable Use(Int8Kernel kernel)
    {
        if (!IsSupported(kernel)) throw new ArgumentException($"int8 kernel {kernel} is not supported in this process.", nameof(kernel));
        var previous = _override;
        _override = kernel;
        return new Restore(previous);
    }

    private sealed class Restore(Int8Kernel? previous) : IDisposable
    {
        public void Dispose() => _override = previous;
    }

    /// <summary>Largest activation level of a kernel (7 bits for the <c>pmaddubsw</c> kernels, whose int16 pair sums would saturate at 8).</summary>
    public static int ActivationMax(Int8Kernel k) => k is Int8Kernel.MaddUbs or Int8Kernel.MaddUbs128 ? 127 : 255;

    public static int Groups(int k) => (k + 3) / 4;

    /// <summary>Bytes per quantized activation in the tiled layout: 2 for <see cref="Int8Kernel.Madd16"/> (int16 lanes), else 1.</summary>
    public static int ActivationBytes(Int8Kernel k) => k == Int8Kernel.Madd16 ? 2 : 1;

    /// <summary>Bytes of packed weights for K×N.</summary>
    public static long PackedBytes(int k, int n) => (long)((n + NR - 1) / NR) * NR * Groups(k) * 4;

    /// <summary>Floats of scratch the calling thread needs for an M-row product of depth K (quantized A, row scales, tile).</summary>
    public static long ScratchFloats(int m, int k)
    {
        long rowsPadded = (Math.Max(m, 1) + MaxMR - 1) / MaxMR * (long)MaxMR; // fits the 6- and the 12-row layouts
        long qaBytes = rowsPadded * Groups(Math.Max(k, 1)) * 4 * 2; // room for int16 activations (Madd16)
        return TileFloats + 2L * Math.Max(m, 1) + (qaBytes + 3) / 4 + 16 + 16; // + 16: the tile starts on a line (GemmCore.AlignToLine)
    }

    /// <summary>Floats each worker thread needs (its tile; A is quantized once by the caller).</summary>
    public static long WorkerScratchFloats() => TileFloats;

    // ---------------------------------------------------------------- weights

    /// <summary>
    /// Quantizes W(n, k) = src[n·ldw + k] (n &lt; N, k &lt; K) per row n to s8 in [-127, 127] with scale max|W(n,·)|/127
    /// and packs it into 16-column panels at <paramref name="dst"/> (zero-padded), writing each column's scale and sum.
    /// A row holding NaN or ±∞ is stored as zeros with a NaN scale: its output column is NaN.
    /// </summary>
    public static void PackWeights(float* src, nint ldw, int k, int n, sbyte* dst, float* colScale, int* colSum)
    {
        int k4 = Groups(k), panels = (n + NR - 1) / NR;
        for (int p = 0; p < panels; p++)
        {
            sbyte* d = dst + (long)p * NR * k4 * 4;
            new Span<byte>(d, NR * k4 * 4).Clear();
            for (int j = 0; j < NR; j++)
            {
                int col = p * NR + j;
                if (col >= n) { colScale[col] = 0f; colSum[col] = 0; continue; }
                float* w = src + col * ldw;
                float amax = 0f;
                for (int kk = 0; kk < k; kk++) amax = Math.Max(amax, Math.Abs(w[kk]));
                // a row holding NaN or ±∞ makes amax non-finite (Math.Max carries NaN): its column gets a NaN scale, so its
                // outputs are NaN (as in FP32) rather than a silent 0
                bool finite = float.IsFinite(amax);
                float scale = amax / 127f;
                float inv = finite && scale > 0f && float.IsFinite(127f / amax) ? 127f / amax : 0f;
                int sum = 0;
                for (int kk = 0; kk < k; kk++)
                {
                    int q = Math.Clamp((int)MathF.Round(w[kk] * inv), -127, 127);
                    d[(kk >> 2) * NR * 4 + j * 4 + (kk & 3)] = (sbyte)q;
                    sum += q;
                }
                colScale[col] = !finite ? float.NaN : inv == 0f ? 0f : scale;
                colSum[col] = sum;
            }
        }
    }

    // ---------------------------------------------------------------- activations

    /// <summary>
    /// Quantizes rows of x (row stride ldx, K columns) to u8 in [0, qmax] with a per-row scale and zero point, into the
    /// tiled layout the microkernels read. The range always includes 0 (so 0 is exact). A row holding NaN or ±∞ gets a NaN
    /// scale (its outputs are NaN, as in FP32).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void QuantizeRows(float* x, nint ldx, int m, int k, int qmax, int mr, byte* qa, nint tileStride, float* rowScale, int* rowZero, bool wide = false)
    {
        int k4 = Groups(k), es = wide ? 2 : 1;
        for (int r = 0; r < m; r++)
        {
            float* s = x + r * ldx;
            var (mn, mx) = Range(s, k);
            // the last, partial tile is laid out at its own row count (see Run)
            int step = Math.Min(mr, m - r / mr * mr) * 4 * es;
            byte* d = qa + (r / mr) * tileStride + (r % mr) * 4 * es;
            float range = mx - mn;
            if (!float.IsFinite(range))
            {
                rowScale[r] = float.NaN;
                rowZero[r] = 0;
                for (int g = 0; g < k4; g++) { *(int*)(d + g * step) = 0; if (wide) *(int*)(d + g * step + 4) = 0; }
                continue;
            }
            float inv = range > 0f ? qmax / range : 0f;
            if (!float.IsFinite(inv)) inv = 0f; // a range so small it is subnormal: the row is zero to float precision
            int zp = inv == 0f ? 0 : Math.Clamp((int)MathF.Round(-mn * inv), 0, qmax);
            rowScale[r] = inv == 0f ? 0f : range / qmax;
            rowZero[r] = zp;
            QuantizeRow(s, k, inv, zp, qmax, step, d, wide);
        }
    }

    /// <summary>
    /// (min(0, min x), max(0, max x)) over k floats in one pass; when any is NaN or ±∞ the range's width is not finite
    /// (x·0 is NaN exactly for those, and it is added to the result).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static (float Min, float Max) Range(float* s, int k)
    {
        float mn = 0f, mx = 0f, bad = 0f;
        int i = 0;
        if (Vector256.IsHardwareAccelerated && k >= 16)
        {
            Vector256<float> lo0 = default, hi0 = default, lo1 = default, hi1 = default, z = default;
            for (; i + 16 <= k; i += 16)
            {
                var a = Vector256.Load(s + i);
                var b = Vector256.Load(s + i + 8);
                lo0 = Vector256.MinNative(lo0, a); hi0 = Vector256.MaxNative(hi0, a);
                lo1 = Vector256.MinNative(lo1, b); hi1 = Vector256.MaxNative(hi1, b);
                z += a * Vector256<float>.Zero + b * Vector256<float>.Zero;
            }
            var lo = Vector256.MinNative(lo0, lo1);
            var hi = Vector256.MaxNative(hi0, hi1);
            for (int j = 0; j < 8; j++) { mn = Math.Min(mn, lo.GetElement(j)); mx = Math.Max(mx, hi.GetElement(j)); bad += z.GetElement(j); }
        }
        for (; i < k; i++) { mn = Math.Min(mn, s[i]); mx = Math.Max(mx, s[i]); bad += s[i] * 0f; }
        return (mn, mx + bad);
    }

    /// <summary>
    /// q = clamp(round(x·inv) + zp, 0, qmax) (round half to even), 4 levels per group at d + g·step: bytes, or int16 with
    /// <paramref name="wide"/> (<see cref="Int8Kernel.Madd16"/>, an AVX-512 kernel: its rows take the 512-bit loop).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void QuantizeRow(float* s, int k, float inv, int zp, int qmax, int step, byte* d, bool wide)
    {
        int kk = 0;
        // cvtps2dq rounds to nearest even under the default MXCSR, as MathF.Round does; x·inv is within ±qmax, so no overflow
        if (Avx512F.IsSupported && Vector512.IsHardwareAccelerated)
        {
            var vInv = Vector512.Create(inv);
            var vZp = Vector512.Create(zp);
            var vMax = Vector512.Create(qmax);
            for (; kk + 16 <= k; kk += 16)
            {
                var q = Levels16(s + kk, vInv, vZp, vMax);
                int g = kk >> 2;
                if (wide)
                {
                    var words = Avx512F.ConvertToVector256Int16(q).AsUInt64(); // 16 int16 in order: 4 groups of 8 bytes
                    *(ulong*)(d + g * step) = words.GetElement(0);
                    *(ulong*)(d + (g + 1) * step) = words.GetElement(1);
                    *(ulong*)(d + (g + 2) * step) = words.GetElement(2);
                    *(ulong*)(d + (g + 3) * step) = words.GetElement(3);
                    continue;
                }
                var bytes = Avx512F.ConvertToVector128Byte(q).AsUInt32(); // 16 bytes in order
                *(uint*)(d + g * step) = bytes.GetElement(0);
                *(uint*)(d + (g + 1) * step) = bytes.GetElement(1);
                *(uint*)(d + (g + 2) * step) = bytes.GetElement(2);
                *(uint*)(d + (g + 3) * step) = bytes.GetElement(3);
            }
        }
        if (Avx2.IsSupported && !wide)
        {
            var vInv = Vector256.Create(inv);
            var vZp = Vector256.Create(zp);
            var vMax = Vector256.Create(qmax);
            for (; kk + 8 <= k; kk += 8)
            {
                var q = Avx.ConvertToVector256Int32(Vector256.Load(s + kk) * vInv) + vZp;
                q = Vector256.Min(Vector256.Max(q, Vector256<int>.Zero), vMax);
                var s16 = Sse2.PackSignedSaturate(q.GetLower(), q.GetUpper());
                var bytes = Sse2.PackUnsignedSaturate(s16, s16).AsUInt32(); // 8 bytes in order
                int g = kk >> 2;
                *(uint*)(d + g * step) = bytes.GetElement(0);
                *(uint*)(d + (g + 1) * step) = bytes.GetElement(1);
            }
        }
        for (; kk < k; kk++)
        {
            int q = Math.Clamp((int)MathF.Round(s[kk] * inv) + zp, 0, qmax);
            if (wide) *(short*)(d + (kk >> 2) * step + (kk & 3) * 2) = (short)q;
            else d[(kk >> 2) * step + (kk & 3)] = (byte)q;
        }
        // padding of the last group (weights there are 0)
        for (; (kk & 3) != 0; kk++)
            if (wide) *(short*)(d + (kk >> 2) * step + (kk & 3) * 2) = 0;
            else d[(kk >> 2) * step + (kk & 3)] = 0;
    }

    /// <summary>The levels of 16 floats: clamp(round(x·inv) + zp, 0, max) (cvtps2dq: nearest even, as MathF.Round).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Levels16(float* s, Vector512<float> inv, Vector512<int> zp, Vector512<int> max)
        => Vector512.Min(Vector512.Max(Avx512F.ConvertToVector512Int32(Vector512.Load(s) * inv) + zp, Vector512<int>.Zero), max);

    // ---------------------------------------------------------------- products

    /// <summary>
    /// Quantizes A (M×K, row stride lda) into <paramref name="scratch"/> and runs the product, on <paramref name="pool"/>'s
    /// threads when worth it. <paramref name="q"/> carries everything but the quantized A.
    /// </summary>
    public static void Run(ref Int8Args q, float* a, nint lda, int k, float* scratch, WorkerPool? pool)
    {
        int m = q.M;
        scratch = GemmCore.AlignToLine(scratch);
        float* tile = scratch;
        q.RowScale = scratch + TileFloats;
        q.RowZero = (int*)(scratch + TileFloats + m);
        q.QA = (byte*)(scratch + TileFloats + 2L * m);
        q.K4 = Groups(k);
        int es = ActivationBytes(q.Kernel);
        q.TileStride = (nint)q.MR * q.K4 * 4 * es;
        QuantizeRows(a, lda, m, k, ActivationMax(q.Kernel), q.MR, q.QA, q.TileStride, q.RowScale, q.RowZero, es == 2);
        if (pool == null || !TryMultithread(q, tile, pool))
            Run(q, 0, m, 0, (q.N + NR - 1) / NR, tile);
    }

    /// <summary>Rows [rowStart, rowEnd) (rowStart a multiple of MR) × panels [panelStart, panelEnd) on the calling thread.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run(in Int8Args q, int rowStart, int rowEnd, int panelStart, int panelEnd, float* tile)
    {
        int mr = q.MR;
        Debug.Assert(rowStart % mr == 0 && mr <= MaxMR);
        int* acc = (int*)tile;
        int mcMax = mr * MCTiles;
        for (int ic = rowStart; ic < rowEnd; ic += mcMax)
        {
            int mc = Math.Min(mcMax, rowEnd - ic);
            for (int jp = panelStart; jp < panelEnd; jp++)
            {
                int col = jp * NR;
                int cols = Math.Min(NR, q.N - col);
                sbyte* b = q.PackedB + jp * q.PanelStride;
                for (int ir = 0; ir < mc; ir += mr)
                {
                    int rows = Math.Min(mr, mc - ir);
                    int row = ic + ir;
                    // tiles before the last are full; the last is laid out at its own row count (a product of one row reads
                    // 4 bytes of A per group, not 4·MR: MR× less of A to stream beside the weights)
                    byte* a = q.QA + (row / mr) * q.TileStride;
                    switch (q.Kernel)
                    {
                        case Int8Kernel.Madd16: DispatchMadd16(rows, a, rows * 8, b, q.K4, acc); break;
                        case Int8Kernel.Vnni: DispatchVector<VnniDot>(rows, a, rows * 4, b, q.K4, acc); break;
                        case Int8Kernel.MaddUbs: DispatchVector<MaddUbsDot>(rows, a, rows * 4, b, q.K4, acc); break;
                        case Int8Kernel.MaddUbs128: TileMaddUbs128(rows, a, rows * 4, b, q.K4, acc); break;
                        default: TileScalar(rows, a, rows * 4, b, q.K4, acc); break;
                    }
                    Store(q, row, rows, col, cols, tile);
                }
            }
        }
    }

    /// <summary>One 4-byte-group multiply-accumulate: acc += Σ u8(a)·s8(b) over each lane's 4 bytes.</summary>
    private interface IDot { static abstract Vector256<int> Dot(Vector256<int> acc, Vector256<byte> a, Vector256<sbyte> b); }

    private struct VnniDot : IDot
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Dot(Vector256<int> acc, Vector256<byte> a, Vector256<sbyte> b) => AvxVnni.MultiplyWideningAndAdd(acc, a, b);
    }

    private struct MaddUbsDot : IDot
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Dot(Vector256<int> acc, Vector256<byte> a, Vector256<sbyte> b)
            => Avx2.Add(acc, Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(a, b), Vector256.Create((short)1)));
    }

    /// <summary>
    /// Runs every tile height of <paramref name="kernel"/>'s generic tiles once on zeros (one group of 4), so each is
    /// compiled before a product needs it (<see cref="KernelWarmup"/>); the 128-bit and scalar kernels take the height at
    /// run time and have nothing to compile ahead.
    /// </summary>
    internal static void PrecompileTiles(Int8Kernel kernel)
    {
        if (kernel is not (Int8Kernel.Vnni or Int8Kernel.MaddUbs or Int8Kernel.Madd16)) return;
        byte* buf = (byte*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc(1024, 64);
        try
        {
            System.Runtime.InteropServices.NativeMemory.Clear(buf, 1024);
            byte* a = buf;
            sbyte* b = (sbyte*)(buf + 64);
            int* acc = (int*)(buf + 256); // 12 rows × 16 sums
            for (int rows = 1; rows <= 12; rows++)
            {
                if (kernel == Int8Kernel.Vnni) DispatchVector<VnniDot>(rows, a, rows * 4, b, 1, acc);
                else if (kernel == Int8Kernel.Madd16) DispatchMadd16(rows, a, rows * 8, b, 1, acc);
                else DispatchVector<MaddUbsDot>(rows, a, rows * 4, b, 1, acc);
            }
        }
        finally { System.Runtime.InteropServices.NativeMemory.AlignedFree(buf); }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void DispatchVector<TD>(int rows, byte* a, int aStep, sbyte* b, int k4, int* acc) where TD : IDot
    {
        switch (rows)
        {
            case 12: TileVector<TD, Rows12>(a, aStep, b, k4, acc); break;
            case 11: TileVector<TD, Rows11>(a, aStep, b, k4, acc); break;
            case 10: TileVector<TD, Rows10>(a, aStep, b, k4, acc); break;
            case 9: TileVector<TD, Rows9>(a, aStep, b, k4, acc); break;
            case 8: TileVector<TD, Rows8>(a, aStep, b, k4, acc); break;
            case 7: TileVector<TD, Rows7>(a, aStep, b, k4, acc); break;
            case 6: TileVector<TD, Rows6>(a, aStep, b, k4, acc); break;
            case 5: TileVector<TD, Rows5>(a, aStep, b, k4, acc); break;
            case 4: TileVector<TD, Rows4>(a, aStep, b, k4, acc); break;
            case 3: TileVector<TD, Rows3>(a, aStep, b, k4, acc); break;
            case 2: TileVector<TD, Rows2>(a, aStep, b, k4, acc); break;
            default: TileVector<TD, Rows1>(a, aStep, b, k4, acc); break;
        }
    }

    /// <summary>
    /// TR rows × 16 columns: per group of 4 k, two weight vectors and one 4-byte broadcast per row. Tiles of up to 3 rows
    /// keep two accumulator sets (even and odd groups) so enough independent dot products are in flight to cover the
    /// instruction's latency; integer sums make the split exact.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TileVector<TD, TR>(byte* a, int aStep, sbyte* b, int k4, int* acc) where TD : IDot where TR : IRowCount
    {
        Vector256<int> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        Vector256<int> c60 = default, c61 = default, c70 = default, c71 = default, c80 = default, c81 = default, c90 = default, c91 = default, cA0 = default, cA1 = default, cB0 = default, cB1 = default;
        int g = 0;
        if (TR.N <= 3)
        {
            // second set: odd groups into the accumulators of rows 6.. (unused by such small tiles)
            for (; g + 2 <= k4; g += 2)
            {
                if (Sse.IsSupported) Sse.Prefetch0(b + 1024);
                var b0 = Vector256.Load(b);
                var b1 = Vector256.Load(b + 32);
                var b2 = Vector256.Load(b + 64);
                var b3 = Vector256.Load(b + 96);
                var x = Vector256.Create(*(int*)a).AsByte();
                var y = Vector256.Create(*(int*)(a + aStep)).AsByte();
                c00 = TD.Dot(c00, x, b0); c01 = TD.Dot(c01, x, b1); c60 = TD.Dot(c60, y, b2); c61 = TD.Dot(c61, y, b3);
                if (TR.N > 1)
                {
                    x = Vector256.Create(*(int*)(a + 4)).AsByte(); y = Vector256.Create(*(int*)(a + aStep + 4)).AsByte();
                    c10 = TD.Dot(c10, x, b0); c11 = TD.Dot(c11, x, b1); c70 = TD.Dot(c70, y, b2); c71 = TD.Dot(c71, y, b3);
                }
                if (TR.N > 2)
                {
                    x = Vector256.Create(*(int*)(a + 8)).AsByte(); y = Vector256.Create(*(int*)(a + aStep + 8)).AsByte();
                    c20 = TD.Dot(c20, x, b0); c21 = TD.Dot(c21, x, b1); c80 = TD.Dot(c80, y, b2); c81 = TD.Dot(c81, y, b3);
                }
                a += 2 * aStep;
                b += 2 * NR * 4;
            }
            c00 += c60; c01 += c61; c10 += c70; c11 += c71; c20 += c80; c21 += c81;
            c60 = c61 = c70 = c71 = c80 = c81 = default;
        }
        Vector256<sbyte> w0, w1;
        Vector256<byte> xv;
        // two groups per trip (fewer loop and pointer instructions per dot product), then the odd one
        for (; g + 2 <= k4; g += 2)
        {
            if (Sse.IsSupported) Sse.Prefetch0(b + 1024);
            w0 = Vector256.Load(b + 0); w1 = Vector256.Load(b + 32);
            xv = Vector256.Create(*(int*)(a)).AsByte(); c00 = TD.Dot(c00, xv, w0); c01 = TD.Dot(c01, xv, w1);
            if (TR.N > 1) { xv = Vector256.Create(*(int*)(a + 4)).AsByte(); c10 = TD.Dot(c10, xv, w0); c11 = TD.Dot(c11, xv, w1); }
            if (TR.N > 2) { xv = Vector256.Create(*(int*)(a + 8)).AsByte(); c20 = TD.Dot(c20, xv, w0); c21 = TD.Dot(c21, xv, w1); }
            if (TR.N > 3) { xv = Vector256.Create(*(int*)(a + 12)).AsByte(); c30 = TD.Dot(c30, xv, w0); c31 = TD.Dot(c31, xv, w1); }
            if (TR.N > 4) { xv = Vector256.Create(*(int*)(a + 16)).AsByte(); c40 = TD.Dot(c40, xv, w0); c41 = TD.Dot(c41, xv, w1); }
            if (TR.N > 5) { xv = Vector256.Create(*(int*)(a + 20)).AsByte(); c50 = TD.Dot(c50, xv, w0); c51 = TD.Dot(c51, xv, w1); }
            if (TR.N > 6) { xv = Vector256.Create(*(int*)(a + 24)).AsByte(); c60 = TD.Dot(c60, xv, w0); c61 = TD.Dot(c61, xv, w1); }
            if (TR.N > 7) { xv = Vector256.Create(*(int*)(a + 28)).AsByte(); c70 = TD.Dot(c70, xv, w0); c71 = TD.Dot(c71, xv, w1); }
            if (TR.N > 8) { xv = Vector256.Create(*(int*)(a + 32)).AsByte(); c80 = TD.Dot(c80, xv, w0); c81 = TD.Dot(c81, xv, w1); }
            if (TR.N > 9) { xv = Vector256.Create(*(int*)(a + 36)).AsByte(); c90 = TD.Dot(c90, xv, w0); c91 = TD.Dot(c91, xv, w1); }
            if (TR.N > 10) { xv = Vector256.Create(*(int*)(a + 40)).AsByte(); cA0 = TD.Dot(cA0, xv, w0); cA1 = TD.Dot(cA1, xv, w1); }
            if (TR.N > 11) { xv = Vector256.Create(*(int*)(a + 44)).AsByte(); cB0 = TD.Dot(cB0, xv, w0); cB1 = TD.Dot(cB1, xv, w1); }
            w0 = Vector256.Load(b + 64); w1 = Vector256.Load(b + 96);
            xv = Vector256.Create(*(int*)(a + aStep)).AsByte(); c00 = TD.Dot(c00, xv, w0); c01 = TD.Dot(c01, xv, w1);
            if (TR.N > 1) { xv = Vector256.Create(*(int*)(a + aStep + 4)).AsByte(); c10 = TD.Dot(c10, xv, w0); c11 = TD.Dot(c11, xv, w1); }
            if (TR.N > 2) { xv = Vector256.Create(*(int*)(a + aStep + 8)).AsByte(); c20 = TD.Dot(c20, xv, w0); c21 = TD.Dot(c21, xv, w1); }
            if (TR.N > 3) { xv = Vector256.Create(*(int*)(a + aStep + 12)).AsByte(); c30 = TD.Dot(c30, xv, w0); c31 = TD.Dot(c31, xv, w1); }
            if (TR.N > 4) { xv = Vector256.Create(*(int*)(a + aStep + 16)).AsByte(); c40 = TD.Dot(c40, xv, w0); c41 = TD.Dot(c41, xv, w1); }
            if (TR.N > 5) { xv = Vector256.Create(*(int*)(a + aStep + 20)).AsByte(); c50 = TD.Dot(c50, xv, w0); c51 = TD.Dot(c51, xv, w1); }
            if (TR.N > 6) { xv = Vector256.Create(*(int*)(a + aStep + 24)).AsByte(); c60 = TD.Dot(c60, xv, w0); c61 = TD.Dot(c61, xv, w1); }
            if (TR.N > 7) { xv = Vector256.Create(*(int*)(a + aStep + 28)).AsByte(); c70 = TD.Dot(c70, xv, w0); c71 = TD.Dot(c71, xv, w1); }
            if (TR.N > 8) { xv = Vector256.Create(*(int*)(a + aStep + 32)).AsByte(); c80 = TD.Dot(c80, xv, w0); c81 = TD.Dot(c81, xv, w1); }
            if (TR.N > 9) { xv = Vector256.Create(*(int*)(a + aStep + 36)).AsByte(); c90 = TD.Dot(c90, xv, w0); c91 = TD.Dot(c91, xv, w1); }
            if (TR.N > 10) { xv = Vector256.Create(*(int*)(a + aStep + 40)).AsByte(); cA0 = TD.Dot(cA0, xv, w0); cA1 = TD.Dot(cA1, xv, w1); }
            if (TR.N > 11) { xv = Vector256.Create(*(int*)(a + aStep + 44)).AsByte(); cB0 = TD.Dot(cB0, xv, w0); cB1 = TD.Dot(cB1, xv, w1); }
            a += 2 * aStep;
            b += 2 * NR * 4;
        }
        for (; g < k4; g++)
        {
            w0 = Vector256.Load(b + 0); w1 = Vector256.Load(b + 32);
            xv = Vector256.Create(*(int*)(a)).AsByte(); c00 = TD.Dot(c00, xv, w0); c01 = TD.Dot(c01, xv, w1);
            if (TR.N > 1) { xv = Vector256.Create(*(int*)(a + 4)).AsByte(); c10 = TD.Dot(c10, xv, w0); c11 = TD.Dot(c11, xv, w1); }
            if (TR.N > 2) { xv = Vector256.Create(*(int*)(a + 8)).AsByte(); c20 = TD.Dot(c20, xv, w0); c21 = TD.Dot(c21, xv, w1); }
            if (TR.N > 3) { xv = Vector256.Create(*(int*)(a + 12)).AsByte(); c30 = TD.Dot(c30, xv, w0); c31 = TD.Dot(c31, xv, w1); }
            if (TR.N > 4) { xv = Vector256.Create(*(int*)(a + 16)).AsByte(); c40 = TD.Dot(c40, xv, w0); c41 = TD.Dot(c41, xv, w1); }
            if (TR.N > 5) { xv = Vector256.Create(*(int*)(a + 20)).AsByte(); c50 = TD.Dot(c50, xv, w0); c51 = TD.Dot(c51, xv, w1); }
            if (TR.N > 6) { xv = Vector256.Create(*(int*)(a + 24)).AsByte(); c60 = TD.Dot(c60, xv, w0); c61 = TD.Dot(c61, xv, w1); }
            if (TR.N > 7) { xv = Vector256.Create(*(int*)(a + 28)).AsByte(); c70 = TD.Dot(c70, xv, w0); c71 = TD.Dot(c71, xv, w1); }
            if (TR.N > 8) { xv = Vector256.Create(*(int*)(a + 32)).AsByte(); c80 = TD.Dot(c80, xv, w0); c81 = TD.Dot(c81, xv, w1); }
            if (TR.N > 9) { xv = Vector256.Create(*(int*)(a + 36)).AsByte(); c90 = TD.Dot(c90, xv, w0); c91 = TD.Dot(c91, xv, w1); }
            if (TR.N > 10) { xv = Vector256.Create(*(int*)(a + 40)).AsByte(); cA0 = TD.Dot(cA0, xv, w0); cA1 = TD.Dot(cA1, xv, w1); }
            if (TR.N > 11) { xv = Vector256.Create(*(int*)(a + 44)).AsByte(); cB0 = TD.Dot(cB0, xv, w0); cB1 = TD.Dot(cB1, xv, w1); }
            a += aStep;
            b += NR * 4;
        }
        c00.Store(acc); c01.Store(acc + 8);
        if (TR.N > 1) { c10.Store(acc + 16); c11.Store(acc + 24); }
        if (TR.N > 2) { c20.Store(acc + 32); c21.Store(acc + 40); }
        if (TR.N > 3) { c30.Store(acc + 48); c31.Store(acc + 56); }
        if (TR.N > 4) { c40.Store(acc + 64); c41.Store(acc + 72); }
        if (TR.N > 5) { c50.Store(acc + 80); c51.Store(acc + 88); }
        if (TR.N > 6) { c60.Store(acc + 96); c61.Store(acc + 104); }
        if (TR.N > 7) { c70.Store(acc + 112); c71.Store(acc + 120); }
        if (TR.N > 8) { c80.Store(acc + 128); c81.Store(acc + 136); }
        if (TR.N > 9) { c90.Store(acc + 144); c91.Store(acc + 152); }
        if (TR.N > 10) { cA0.Store(acc + 160); cA1.Store(acc + 168); }
        if (TR.N > 11) { cB0.Store(acc + 176); cB1.Store(acc + 184); }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void DispatchMadd16(int rows, byte* a, int aStep, sbyte* b, int k4, int* acc)
    {
        switch (rows)
        {
            case 12: TileMadd16<Rows12>(a, aStep, b, k4, acc); break;
            case 11: TileMadd16<Rows11>(a, aStep, b, k4, acc); break;
            case 10: TileMadd16<Rows10>(a, aStep, b, k4, acc); break;
            case 9: TileMadd16<Rows9>(a, aStep, b, k4, acc); break;
            case 8: TileMadd16<Rows8>(a, aStep, b, k4, acc); break;
            case 7: TileMadd16<Rows7>(a, aStep, b, k4, acc); break;
            case 6: TileMadd16<Rows6>(a, aStep, b, k4, acc); break;
            case 5: TileMadd16<Rows5>(a, aStep, b, k4, acc); break;
            case 4: TileMadd16<Rows4>(a, aStep, b, k4, acc); break;
            case 3: TileMadd16<Rows3>(a, aStep, b, k4, acc); break;
            case 2: TileMadd16<Rows2>(a, aStep, b, k4, acc); break;
            default: TileMadd16<Rows1>(a, aStep, b, k4, acc); break;
        }
    }

    /// <summary>
    /// TR rows × 16 columns on 512-bit <c>vpmaddwd</c>: per group of 4 k the panel's 64 weight bytes sign-extended to two
    /// vectors of int16 (columns 0–7 and 8–15, each column's 4 weights adjacent) and, per row, its 4 int16 activations
    /// broadcast; each product lane then holds one column's k0·a0 + k1·a1 or k2·a2 + k3·a3, and the two lanes of a column
    /// are added at the end (<see cref="Fold16"/>). |a·w| ≤ 255·127, so the int16 × int16 pair sums are exact in int32, as
    /// is every int8 kernel.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TileMadd16<TR>(byte* a, int aStep, sbyte* b, int k4, int* acc) where TR : IRowCount
    {
        Vector512<int> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        Vector512<int> c60 = default, c61 = default, c70 = default, c71 = default, c80 = default, c81 = default, c90 = default, c91 = default, cA0 = default, cA1 = default, cB0 = default, cB1 = default;
        Vector512<short> x;
        for (int g = 0; g < k4; g++)
        {
            if (Sse.IsSupported) Sse.Prefetch0(b + 1024);
            var w0 = Avx512BW.ConvertToVector512Int16(Vector256.Load(b));
            var w1 = Avx512BW.ConvertToVector512Int16(Vector256.Load(b + 32));
            { x = Vector512.Create(*(long*)(a + 0)).AsInt16(); c00 += Avx512BW.MultiplyAddAdjacent(x, w0); c01 += Avx512BW.MultiplyAddAdjacent(x, w1); }
            if (TR.N > 1) { x = Vector512.Create(*(long*)(a + 8)).AsInt16(); c10 += Avx512BW.MultiplyAddAdjacent(x, w0); c11 += Avx512BW.MultiplyAddAdjacent(x, w1); }
            if (TR.N > 2) { x = Vector512.Create(*(long*)(a + 16)).AsInt16(); c20 += Avx512BW.MultiplyAddAdjacent(x, w0); c21 += Avx512BW.MultiplyAddAdjacent(x, w1); }
            if (TR.N > 3) { x = Vector512.Create(*(long*)(a + 24)).AsInt16(); c30 += Avx512BW.MultiplyAddAdjacent(x, w0); c31 += Avx512BW.MultiplyAddAdjacent(x, w1); }
            if (TR.N > 4) { x = Vector512.Create(*(long*)(a + 32)).AsInt16(); c40 += Avx512BW.MultiplyAddAdjacent(x, w0); c41 += Avx512BW.MultiplyAddAdjacent(x, w1); }
            if (TR.N > 5) { x = Vector512.Create(*(long*)(a + 40)).AsInt16(); c50 += Avx512BW.MultiplyAddAdjacent(x, w0); c51 += Avx512BW.MultiplyAddAdjacent(x, w1); }
            if (TR.N > 6) { x = Vector512.Create(*(long*)(a + 48)).AsInt16(); c60 += Avx512BW.MultiplyAddAdjacent(x, w0); c61 += Avx512BW.MultiplyAddAdjacent(x, w1); }
            if (TR.N > 7) { x = Vector512.Create(*(long*)(a + 56)).AsInt16(); c70 += Avx512BW.MultiplyAddAdjacent(x, w0); c71 += Avx512BW.MultiplyAddAdjacent(x, w1); }
            if (TR.N > 8) { x = Vector512.Create(*(long*)(a + 64)).AsInt16(); c80 += Avx512BW.MultiplyAddAdjacent(x, w0); c81 += Avx512BW.MultiplyAddAdjacent(x, w1); }
            if (TR.N > 9) { x = Vector512.Create(*(long*)(a + 72)).AsInt16(); c90 += Avx512BW.MultiplyAddAdjacent(x, w0); c91 += Avx512BW.MultiplyAddAdjacent(x, w1); }
            if (TR.N > 10) { x = Vector512.Create(*(long*)(a + 80)).AsInt16(); cA0 += Avx512BW.MultiplyAddAdjacent(x, w0); cA1 += Avx512BW.MultiplyAddAdjacent(x, w1); }
            if (TR.N > 11) { x = Vector512.Create(*(long*)(a + 88)).AsInt16(); cB0 += Avx512BW.MultiplyAddAdjacent(x, w0); cB1 += Avx512BW.MultiplyAddAdjacent(x, w1); }
            a += aStep;
            b += NR * 4;
        }
        Fold16(c00, c01, acc + 0);
        if (TR.N > 1) Fold16(c10, c11, acc + 16);
        if (TR.N > 2) Fold16(c20, c21, acc + 32);
        if (TR.N > 3) Fold16(c30, c31, acc + 48);
        if (TR.N > 4) Fold16(c40, c41, acc + 64);
        if (TR.N > 5) Fold16(c50, c51, acc + 80);
        if (TR.N > 6) Fold16(c60, c61, acc + 96);
        if (TR.N > 7) Fold16(c70, c71, acc + 112);
        if (TR.N > 8) Fold16(c80, c81, acc + 128);
        if (TR.N > 9) Fold16(c90, c91, acc + 144);
        if (TR.N > 10) Fold16(cA0, cA1, acc + 160);
        if (TR.N > 11) Fold16(cB0, cB1, acc + 176);
    }

    /// <summary>Row sums of one Madd16 tile row: lanes 2c and 2c + 1 of <paramref name="lo"/> (columns 0–7) and <paramref name="hi"/> (8–15) added, 16 in column order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Fold16(Vector512<int> lo, Vector512<int> hi, int* dst)
    {
        var even = Vector512.Create(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        var odd = Vector512.Create(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        (Avx512F.PermuteVar16x32x2(lo, even, hi) + Avx512F.PermuteVar16x32x2(lo, odd, hi)).Store(dst);
    }

    /// <summary>
    /// The 128-bit kernel: rows in pairs (8 accumulators — the 16 columns as four 4-column vectors per row — 4 weight
    /// vectors, 2 broadcasts and the ones vector fill the 16 SSE registers), the weight panel read again from L1 for each
    /// pair. <c>pmaddubsw</c> adds two u8·s8 products into int16 (7-bit activations: never saturates), <c>pmaddwd</c> with
    /// ones widens the pair sums to int32. Exact, like every int8 kernel.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TileMaddUbs128(int rows, byte* a, int aStep, sbyte* b, int k4, int* acc)
    {
        var ones = Vector128.Create((short)1);
        int r = 0;
        for (; r + 2 <= rows; r += 2)
        {
            Vector128<int> c0 = default, c1 = default, c2 = default, c3 = default, d0 = default, d1 = default, d2 = default, d3 = default;
            byte* ar = a + r * 4;
            sbyte* bg = b;
            for (int g = 0; g < k4; g++)
            {
                var w0 = Vector128.Load(bg); var w1 = Vector128.Load(bg + 16); var w2 = Vector128.Load(bg + 32); var w3 = Vector128.Load(bg + 48);
                var x = Vector128.Create(*(int*)ar).AsByte();
                var y = Vector128.Create(*(int*)(ar + 4)).AsByte();
                c0 = Dot128(c0, x, w0, ones);
                c1 = Dot128(c1, x, w1, ones);
                c2 = Dot128(c2, x, w2, ones);
                c3 = Dot128(c3, x, w3, ones);
                d0 = Dot128(d0, y, w0, ones);
                d1 = Dot128(d1, y, w1, ones);
                d2 = Dot128(d2, y, w2, ones);
                d3 = Dot128(d3, y, w3, ones);
                ar += aStep;
                bg += NR * 4;
            }
            int* o = acc + r * NR;
            c0.Store(o); c1.Store(o + 4); c2.Store(o + 8); c3.Store(o + 12);
            d0.Store(o + 16); d1.Store(o + 20); d2.Store(o + 24); d3.Store(o + 28);
        }
        if (r < rows)
        {
            Vector128<int> c0 = default, c1 = default, c2 = default, c3 = default;
            byte* ar = a + r * 4;
            sbyte* bg = b;
            for (int g = 0; g < k4; g++)
            {
                var x = Vector128.Create(*(int*)ar).AsByte();
                c0 = Dot128(c0, x, Vector128.Load(bg), ones);
                c1 = Dot128(c1, x, Vector128.Load(bg + 16), ones);
                c2 = Dot128(c2, x, Vector128.Load(bg + 32), ones);
                c3 = Dot128(c3, x, Vector128.Load(bg + 48), ones);
                ar += aStep;
                bg += NR * 4;
            }
            int* o = acc + r * NR;
            c0.Store(o); c1.Store(o + 4); c2.Store(o + 8); c3.Store(o + 12);
        }
    }

    /// <summary>acc += Σ u8(a)·s8(b) over each int32 lane's 4 bytes: <c>pmaddubsw</c> into int16 pairs, <c>pmaddwd</c> with ones.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> Dot128(Vector128<int> acc, Vector128<byte> a, Vector128<sbyte> b, Vector128<short> ones)
        => Sse2.Add(acc, Sse2.MultiplyAddAdjacent(Ssse3.MultiplyAddAdjacent(a, b), ones));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TileScalar(int rows, byte* a, int aStep, sbyte* b, int k4, int* acc)
    {
        for (int r = 0; r < rows; r++)
        {
            for (int j = 0; j < NR; j++)
            {
                int s = 0;
                for (int g = 0; g < k4; g++)
                {
                    byte* ag = a + g * aStep + r * 4;
                    sbyte* bg = b + g * NR * 4 + j * 4;
                    s += ag[0] * bg[0] + ag[1] * bg[1] + ag[2] * bg[2] + ag[3] * bg[3];
                }
                acc[r * NR + j] = s;
            }
        }
    }

    /// <summary>
    /// Dequantizes a tile — v = (float)(acc − zp·colSum)·(rowScale·colScale) — and applies alpha, (+C), bias, activation
    /// and residual like the FP32 epilogue.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Store(in Int8Args q, int row, int rows, int col, int cols, float* tile)
    {
        int* acc = (int*)tile;
        float* t = tile + MaxMR * NR;
        if (cols == NR && Avx2.IsSupported)
        {
            // a full tile: dequantize and finish in registers, one pass straight into C
            for (int r = 0; r < rows; r++)
            {
                var vzp = Vector256.Create(q.RowZero[row + r]);
                var vrs = Vector256.Create(q.RowScale[row + r]);
                int* ar = acc + r * NR;
                float* c = q.C + (row + r) * q.Ldc + col;
                float* res = q.Residual == null ? null : q.Residual + (row + r) * q.Ldr + col;
                for (int j = 0; j < NR; j += 8)
                {
                    var corrected = Vector256.Load(ar + j) - vzp * Vector256.Load(q.ColSum + col + j);
                    var v = Vector256.ConvertToSingle(corrected) * vrs * Vector256.Load(q.ColScale + col + j);
                    Simd256.Store(Finish<Simd256, Vector256<float>>(v, c + j, q.Bias == null ? null : q.Bias + col + j, res == null ? null : res + j, q), c + j);
                }
            }
            return;
        }
        bool direct = cols == NR && q.Alpha == 1f && !q.Accumulate && q.Bias == null && q.Act == Activation.None && q.Residual == null;
        for (int r = 0; r < rows; r++)
        {
            float rs = q.RowScale[row + r];
            int zp = q.RowZero[row + r];
            int* ar = acc + r * NR;
            float* tr = direct ? q.C + (row + r) * q.Ldc + col : t + r * NR; // a plain product is written straight into C
            int j = 0;
            if (Vector256.IsHardwareAccelerated)
            {
                var vzp = Vector256.Create(zp);
                var vrs = Vector256.Create(rs);
                for (; j < NR; j += 8)
                {
                    var corrected = Vector256.Load(ar + j) - vzp * Vector256.Load(q.ColSum + col + j);
                    (Vector256.ConvertToSingle(corrected) * vrs * Vector256.Load(q.ColScale + col + j)).Store(tr + j);
                }
            }
            for (; j < NR; j++) tr[j] = (float)(ar[j] - zp * q.ColSum[col + j]) * rs * q.ColScale[col + j];
        }
        if (direct) return;
        for (int r = 0; r < rows; r++)
        {
            float* tr = t + r * NR;
            float* c = q.C + (row + r) * q.Ldc + col;
            float* res = q.Residual == null ? null : q.Residual + (row + r) * q.Ldr + col;
            float* bias = q.Bias == null ? null : q.Bias + col;
            int j = 0;
            if (Vector256.IsHardwareAccelerated && Avx2.IsSupported)
                for (; j + 8 <= cols; j += 8)
                    Simd256.Store(Finish<Simd256, Vector256<float>>(Simd256.Load(tr + j), c + j, bias == null ? null : bias + j, res == null ? null : res + j, q), c + j);
            for (; j < cols; j++)
                c[j] = Finish<SimdScalar, float>(tr[j], c + j, bias == null ? null : bias + j, res == null ? null : res + j, q);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TVec Finish<TOps, TVec>(TVec v, float* cOld, float* bias, float* res, in Int8Args q)
        where TOps : ISimd<TVec> where TVec : struct
    {
        if (q.Alpha != 1f) v = TOps.Mul(v, TOps.Broadcast(q.Alpha));
        if (q.Accumulate) v = TOps.Add(v, TOps.Load(cOld));
        if (bias != null) v = TOps.Add(v, TOps.Load(bias));
        if (q.Act != Activation.None) v = VecMath.Activate<TOps, TVec>(v, q.Act);
        if (res != null) v = TOps.Add(v, TOps.Load(res));
        return v;
    }

    // ---------------------------------------------------------------- threads

    /// <summary>Splits the product over the pool's threads like the FP32 engine (weight panels first, row tiles when few panels).</summary>
    private static bool TryMultithread(in Int8Args q, float* callerTile, WorkerPool pool)
    {
        int panels = (q.N + NR - 1) / NR, rowTiles = (q.M + q.MR - 1) / q.MR;
        // int8 does twice the multiply-adds per cycle, so a product needs twice the flops to pay for the hand-off
        double flops = 2.0 * q.M * q.N * q.K4 * 4;
        if (!GemmCore.PlanSplit(pool.Threads, flops / 2, (long)q.N * q.K4 * 4, panels, rowTiles, out bool byRows, out int chunks)) return false;
        pool.EnsureWorkerScratch(WorkerScratchFloats());
        using var lease = pool.Acquire();
        var job = pool.Job<Int8Job>();
        job.Set(pool, q, callerTile, byRows, chunks, panels);
        pool.RunHeld(job, chunks);
        job.Clear();
        return true;
    }

    internal sealed class Int8Job : IParallelWork
    {
        private WorkerPool? _pool;
        private Int8Args _q;
        private float* _callerTile;
        private int _chunks, _panels;
        private bool _byRows;

        public void Set(WorkerPool pool, in Int8Args q, float* callerTile, bool byRows, int chunks, int panels)
        {
            _pool = pool; _q = q; _callerTile = callerTile; _byRows = byRows; _chunks = chunks; _panels = panels;
        }

        public void Clear() { _pool = null; _q = default; _callerTile = null; }

        public void Execute(int item, int worker)
        {
            float* tile = worker == 0 ? _callerTile : _pool!.WorkerScratch(worker);
            if (_byRows)
            {
                int mr = _q.MR;
                var (t0, t1) = GemmCore.Share(item, _chunks, (_q.M + mr - 1) / mr);
                Run(_q, t0 * mr, Math.Min(t1 * mr, _q.M), 0, _panels, tile);
            }
            else
            {
                var (p0, p1) = GemmCore.Share(item, _chunks, _panels);
                Run(_q, 0, _q.M, p0, p1, tile);
            }
        }
    }
}
