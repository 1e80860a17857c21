using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace FastAttn.Kernels;

/// <summary>
/// Compiles the microkernel's tile variants of one instruction-set path ahead of use: every row count a register tile can
/// have (1 to <see cref="GemmCore.MaxTileRows"/>) for each store mode, A layout and column form the products (FP32 and
/// bfloat16 weights) and the attention call use, and the int8 products' tiles. Each variant is a method of its own, compiled optimized on its first call (several
/// milliseconds each); a session on several threads otherwise met new ones mid-run: its threads' shares of a layer's rows
/// move with their measured speeds (<c>ShareBalance</c>), each new share size cuts into tiles of heights not seen
/// before, and the thread compiling one held the other at the next barrier. A fresh process ran the 2-thread (96, 3 × 32,
/// 192) layer at 128 tokens at 656–920 µs a call on average over calls 2–100 — a few calls of 10–53 ms, at calls 17,
/// 26, 35 (the balancing's window of 8 runs) —, against 107–124 µs with the balancing off. Now the first multi-thread
/// session of a process compiles them as it is created, spread over the CPUs (2 CPUs, AMD EPYC, Zen 5, three fresh
/// processes each, the same minutes): creating the session 12–14 → 986–1,009 ms (1.5–1.7 s compiling on one thread), the
/// first call 191–195 → 56–60 ms, calls 2–100 890–920 → 238–274 µs on average, stalls above 1 ms in the first 300 calls
/// 77–81 → 12–17 ms (the runtime's tiered recompiles of ordinary methods).
/// Once per process, path and weight form (FP32 always; bfloat16 and int8 once a weight of that form exists — a session is
/// built over its weights, so its own forms are known when it is created). The AppContext switch
/// <c>FastAttn.DisableKernelPrecompile</c> = true leaves everything to first use, as before. The variants below are the
/// ones the call sites in <c>GemmCore</c>, <c>Attention</c> and <c>Int8Gemm</c> use; one added there and not here is
/// compiled at its first use, as every variant was before.
/// </summary>
internal static unsafe class KernelWarmup
{
    private static int _done; // one bit per (IsaPath, weight form): 3·path + form (F32, bfloat16, int8)
    private static int _forms; // weight forms this process has built: bit 1 bfloat16, bit 2 int8 (F32 always counts)
    private static readonly object Gate = new();

    /// <summary>Tests and measurements set this to leave every variant to its first use (the form before).</summary>
    internal static bool Disabled;

    private static int Form(Precision p) => p switch { Precision.BF16Weights => 1, Precision.Int8 => 2, _ => 0 };

    /// <summary>Whether <paramref name="isa"/>'s variants for weights in <paramref name="form"/> were compiled here.</summary>
    internal static bool Done(IsaPath isa, Precision form = Precision.F32) => (Volatile.Read(ref _done) & (1 << (3 * (int)isa + Form(form)))) != 0;

    /// <summary>A weight of <paramref name="form"/> exists: sessions created from now on compile its variants too (<see cref="PackedWeight"/>'s constructor).</summary>
    internal static void Note(Precision form)
    {
        int f = Form(form);
        if (f != 0) Interlocked.Or(ref _forms, 1 << f);
    }

    /// <summary>
    /// Compiles <paramref name="isa"/>'s tile variants for FP32 weights and for every other weight form this process has
    /// built so far, each once per process (later calls return at once).
    /// </summary>
    public static void Precompile(IsaPath isa)
    {
        if (Disabled || !Isa.IsSupported(isa) || (AppContext.TryGetSwitch("FastAttn.DisableKernelPrecompile", out bool off) && off)) return;
        int forms = 1 | Volatile.Read(ref _forms);
        bool all = true;
        for (int f = 0; f < 3; f++) if ((forms & 1 << f) != 0 && (Volatile.Read(ref _done) & 1 << (3 * (int)isa + f)) == 0) all = false;
        if (all) return;
        lock (Gate)
        {
            for (int f = 0; f < 3; f++)
            {
                int bit = 1 << (3 * (int)isa + f);
                if ((forms & 1 << f) == 0 || (_done & bit) != 0) continue;
                if (f == 2) Int8Gemm.PrecompileTiles(Int8Gemm.Current(isa));
                else if (f == 1) Run(isa, bf16: true);
                else Run(isa, bf16: false);
                Volatile.Write(ref _done, _done | bit);
            }
        }
    }

    private static void Run(IsaPath isa, bool bf16)
    {
        switch (isa)
        {
            case IsaPath.Vector512: Run<Simd512, Vector512<float>>(isa, bf16); break;
            case IsaPath.Vector256: Run<Simd256, Vector256<float>>(isa, bf16); break;
            case IsaPath.Vector128: Run<Simd128, Vector128<float>>(isa, bf16); break;
            default: Run<SimdScalar, float>(isa, bf16); break;
        }
    }

    private static void Run<TOps, TVec>(IsaPath isa, bool bf16) where TOps : ISimd<TVec> where TVec : struct
    {
        int maxRows = GemmCore.MaxTileRows(isa);
        // the row counts spread over the machine's CPUs (the compiler runs on each calling thread)
        var options = new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount };
        if (bf16) Parallel.For(1, maxRows + 1, options, rows => Compile<TOps, TVec, Bf16Weights>(rows, attention: false));
        else Parallel.For(1, maxRows + 1, options, rows => Compile<TOps, TVec, F32Weights>(rows, attention: true));
    }

    /// <summary>
    /// The variants of one tile height: the products' for weights stored as <typeparamref name="TW"/> and, with
    /// <paramref name="attention"/>, the attention call's.
    /// </summary>
    private static void Compile<TOps, TVec, TW>(int rows, bool attention) where TOps : ISimd<TVec> where TVec : struct where TW : IWeightFormat
    {
        int w = TOps.Width, nr = 2 * w;
        const int lda = 16, ldc = 64;
        // one depth step over zeros: every variant runs its whole body once (its loop once, its stores), on small buffers
        nuint floats = 16 * lda + 4 * 64 + 16 * ldc + 16 * 64 + 3 * 64;
        float* buf = (float*)NativeMemory.AlignedAlloc(floats * sizeof(float), 64);
        try
        {
            NativeMemory.Clear(buf, floats * sizeof(float));
            float* a = buf, b = a + 16 * lda, c = b + 4 * 64, tile = c + 16 * ldc, temp = tile + 16 * 64;
            var e = new TileEpilogue { Alpha = 1f, Last = true, Temp = temp, Tile = tile };
            // the products: whole panels finished in registers or through the epilogue, a last panel's first vector; A packed or in place
            GemmMicrokernel.Dispatch<TOps, TVec, FinishDirect, TW>(rows, a, rows, b, 1, c, ldc, nr, ref e);
            GemmMicrokernel.Dispatch<TOps, TVec, ViaEpilogue, TW>(rows, a, rows, b, 1, c, ldc, nr, ref e);
            GemmMicrokernel.DispatchFirstVector<TOps, TVec, ViaEpilogue, TW, PackedA>(rows, a, rows, b, 1, c, ldc, w, ref e);
            GemmMicrokernel.DispatchInPlace<TOps, TVec, FinishDirect, TW>(rows, a, lda, b, 1, c, ldc, nr, ref e);
            GemmMicrokernel.DispatchInPlace<TOps, TVec, ViaEpilogue, TW>(rows, a, lda, b, 1, c, ldc, nr, ref e);
            GemmMicrokernel.DispatchFirstVector<TOps, TVec, ViaEpilogue, TW, InPlaceA>(rows, a, lda, b, 1, c, ldc, w, ref e);
            if (!attention) return;
            // attention: scores (packed K, K in place, one vector of queries, a tail's whole vector) and P·V (C = or C +=)
            GemmMicrokernel.Dispatch<TOps, TVec, StoreDirect>(rows, a, rows, b, 1, c, ldc, nr, ref e);
            GemmMicrokernel.Dispatch<TOps, TVec, AddDirect>(rows, a, rows, b, 1, c, ldc, nr, ref e);
            GemmMicrokernel.DispatchInPlace<TOps, TVec, StoreDirect, F32Weights>(rows, a, lda, b, 1, c, ldc, nr, ref e);
            e.ColMax = temp; // scores that hand softmax their column maxima
            GemmMicrokernel.Dispatch<TOps, TVec, StoreColMax>(rows, a, rows, b, 1, c, ldc, nr, ref e);
            GemmMicrokernel.DispatchInPlace<TOps, TVec, StoreColMax, F32Weights>(rows, a, lda, b, 1, c, ldc, nr, ref e);
            GemmMicrokernel.DispatchHalf<TOps, TVec, StoreDirect>(rows, a, rows, b, 1, c, ldc, ref e);
            GemmMicrokernel.DispatchHalf<TOps, TVec, AddDirect>(rows, a, rows, b, 1, c, ldc, ref e);
            GemmMicrokernel.DispatchFirstVector<TOps, TVec, StoreDirect, F32Weights, PackedA>(rows, a, rows, b, 1, c, ldc, w, ref e);
            GemmMicrokernel.DispatchFirstVector<TOps, TVec, AddDirect, F32Weights, PackedA>(rows, a, rows, b, 1, c, ldc, w, ref e);
            if (rows <= 8)
            {
                // P·V's three-vector panel (up to 8 query rows)
                GemmMicrokernel.DispatchTriple<TOps, TVec, StoreDirect>(rows, a, rows, b, 1, c, ldc);
                GemmMicrokernel.DispatchTriple<TOps, TVec, AddDirect>(rows, a, rows, b, 1, c, ldc);
            }
        }
        finally { NativeMemory.AlignedFree(buf); }
    }
}
