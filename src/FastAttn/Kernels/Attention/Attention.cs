using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FastAttn.Kernels;


/// <summary>
/// Fused, tiled multi-head attention: out_i = Σ_j α_ij v_j for every query row, computed tile by tile with a
/// running (online) max and sum so scratch grows linearly with sequence length. Q·Kᵀ and P·V run on the
/// packed-GEMM microkernel (K and V packed once per key/value head, Qᵀ once per query tile with the scale
/// folded in); capping, masking and exponentiation are vertical passes over an L1-resident score tile.
/// A query row whose keys are all masked outputs zeros (never NaN).
/// </summary>
public static unsafe partial class Attention
{
    /// <summary>
    /// Scratch floats a call needs (on the calling thread, and on each worker thread of a pool) when no sequence has
    /// more than <paramref name="maxKeyTokens"/> keys. Linear in the key length: packed K and V of one key/value head,
    /// plus fixed-size tiles.
    /// </summary>
    public static long ScratchSize(int headDim, int valueHeadDim, int maxKeyTokens) => ScratchSize(Isa.Current, headDim, valueHeadDim, maxKeyTokens);

    internal static long ScratchSize(IsaPath isa, int headDim, int valueHeadDim, int maxKeyTokens)
    {
        int d = Math.Max(headDim, 1), dv = valueHeadDim <= 0 ? d : valueHeadDim;
        return new Layout(d, dv, maxKeyTokens, GemmCore.TileRows(isa), GemmCore.PanelWidth(isa)).Total + 64; // ≥ 15 of it: GemmCore.AlignToLine
    }

    /// <summary>Scratch floats for this call's options and lengths (the largest sequence decides).</summary>
    public static long ScratchSize(in AttentionOptions options, int keyTokens) => ScratchSize(Isa.Current, AttentionCall.From(options), keyTokens);

    internal static long ScratchSize(IsaPath isa, scoped in AttentionCall o, int keyTokens)
    {
        int maxK = keyTokens;
        ReadOnlySpan<int> kl = !o.KeySequenceLengths.IsEmpty ? o.KeySequenceLengths : o.SequenceLengths;
        if (!kl.IsEmpty) { maxK = 0; foreach (int l in kl) maxK = Math.Max(maxK, l); }
        return ScratchSize(isa, o.HeadDim, o.ValueHeadDim, maxK);
    }

    /// <summary>
    /// Runs attention. Q is <c>[queryTokens, Heads·HeadDim]</c>, K <c>[keyTokens, KvHeads·HeadDim]</c>, V
    /// <c>[keyTokens, KvHeads·ValueHeadDim]</c>, output <c>[queryTokens, Heads·ValueHeadDim]</c>; head h is its own
    /// column block. All arguments are checked before anything is written. With <paramref name="pool"/>, the (sequence,
    /// key/value head) groups and query chunks are split over its threads when the call is large enough (results are
    /// bit-identical for any thread count).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A size or option is out of range.</exception>
    /// <exception cref="ArgumentException">A span is shorter than its shape, lengths do not add up, or the output, scratch or weights overlap an input or each other.</exception>
    /// <exception cref="ObjectDisposedException"><paramref name="pool"/> was disposed.</exception>
    /// <exception cref="InvalidOperationException"><paramref name="pool"/> is running work for another caller.</exception>
    public static void Forward(ReadOnlySpan<float> q, int queryTokens, ReadOnlySpan<float> k, ReadOnlySpan<float> v, int keyTokens,
        Span<float> output, Span<float> scratch, in AttentionOptions options, Threading.WorkerPool? pool = null)
        => Forward(Isa.Current, q, queryTokens, k, v, keyTokens, output, scratch, AttentionCall.From(options), pool);

    /// <summary>The checked entry on a given kernel path (tests run every path in one process).</summary>
    internal static void Forward(IsaPath isa, ReadOnlySpan<float> q, int queryTokens, ReadOnlySpan<float> k, ReadOnlySpan<float> v, int keyTokens,
        Span<float> output, Span<float> scratch, scoped in AttentionCall o, Threading.WorkerPool? pool)
    {
        if (!Isa.IsSupported(isa)) ThrowHelper.Argument(nameof(isa), $"kernel path {isa} is not supported in this process.");
        CheckArgs(isa, q.Length, queryTokens, k.Length, v.Length, keyTokens, output.Length, scratch.Length, o);
        ReadOnlySpan<float> outR = output, sR = scratch, wR = o.WeightsOut;
        ThrowHelper.NoOverlap(outR, q, nameof(output), nameof(q));
        ThrowHelper.NoOverlap(outR, k, nameof(output), nameof(k));
        ThrowHelper.NoOverlap(outR, v, nameof(output), nameof(v));
        ThrowHelper.NoOverlap(sR, q, nameof(scratch), nameof(q));
        ThrowHelper.NoOverlap(sR, k, nameof(scratch), nameof(k));
        ThrowHelper.NoOverlap(sR, v, nameof(scratch), nameof(v));
        ThrowHelper.NoOverlap(sR, outR, nameof(scratch), nameof(output));
        ThrowHelper.NoOverlap(wR, q, "options.WeightsOut", nameof(q));
        ThrowHelper.NoOverlap(wR, k, "options.WeightsOut", nameof(k));
        ThrowHelper.NoOverlap(wR, v, "options.WeightsOut", nameof(v));
        ThrowHelper.NoOverlap(wR, outR, "options.WeightsOut", nameof(output));
        ThrowHelper.NoOverlap(wR, sR, "options.WeightsOut", nameof(scratch));
        var call = o;
        call.ZeroDenormals = true;
        ForwardCore(isa, q, queryTokens, k, v, keyTokens, output, scratch, call, pool);
    }

    /// <summary>The unchecked core: the caller has validated every argument (asserted in debug builds).</summary>
    internal static void ForwardCore(IsaPath isa, ReadOnlySpan<float> q, int queryTokens, ReadOnlySpan<float> k, ReadOnlySpan<float> v, int keyTokens,
        Span<float> output, Span<float> scratch, scoped in AttentionCall o, Threading.WorkerPool? pool)
        => ForwardCore(isa, q, queryTokens, k, v, keyTokens, output, scratch, o, pool, 0, -1);

    /// <summary>
    /// Only query rows [<paramref name="rowStart"/>, <paramref name="rowEnd"/>) of a single sequence, every head, on the
    /// calling thread (a layer running its rows on each thread: every row's output is computed as in the whole call).
    /// </summary>
    internal static void ForwardRowsCore(IsaPath isa, ReadOnlySpan<float> q, int tokens, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        Span<float> output, Span<float> scratch, scoped in AttentionCall o, int rowStart, int rowEnd)
    {
        System.Diagnostics.Debug.Assert(o.SequenceLengths.Length <= 1 && o.KeySequenceLengths.IsEmpty && o.WeightsOut.IsEmpty);
        System.Diagnostics.Debug.Assert(0 <= rowStart && rowStart <= rowEnd && rowEnd <= tokens);
        ForwardCore(isa, q, tokens, k, v, tokens, output, scratch, o, null, rowStart, rowEnd);
    }

    private static void ForwardCore(IsaPath isa, ReadOnlySpan<float> q, int queryTokens, ReadOnlySpan<float> k, ReadOnlySpan<float> v, int keyTokens,
        Span<float> output, Span<float> scratch, scoped in AttentionCall o, Threading.WorkerPool? pool, int rowStart, int rowEnd)
    {
        System.Diagnostics.Debug.Assert(scratch.Length >= ScratchSize(isa, o, keyTokens));
        int kvHeads = o.KvHeads == 0 ? o.Heads : o.KvHeads;
        int d = o.HeadDim, dv = o.ValueHeadDim == 0 ? d : o.ValueHeadDim;
        int ldq = o.QStride == 0 ? o.Heads * d : o.QStride, ldk = o.KStride == 0 ? kvHeads * d : o.KStride;
        int ldv = o.VStride == 0 ? kvHeads * dv : o.VStride, ldo = o.OutStride == 0 ? o.Heads * dv : o.OutStride;
        int nSeq = o.SequenceLengths.IsEmpty ? 1 : o.SequenceLengths.Length;
        ReadOnlySpan<int> keyLens = !o.KeySequenceLengths.IsEmpty ? o.KeySequenceLengths : o.SequenceLengths;
        if (!o.WeightsOut.IsEmpty && rowEnd < 0) o.WeightsOut.Clear();
        fixed (float* pq = q, pk = k, pv = v, po = output, psGiven = scratch, paw = o.AdditiveWeights, pfm = o.FloatMask, pw = o.WeightsOut)
        fixed (bool* pbm = o.BoolMask)
        fixed (float* pslope = o.DistanceSlopes, prel = o.RelativeBias)
        {
            // the packed operands and tiles start on a cache line (ScratchSize leaves room for this): a managed array starts
            // 8 or 16 bytes past one, wherever the collector puts it, and every 64-byte load or store of the packed Qᵀ, the
            // V panels and the score tile then spans two lines — measured at 1 thread, a scratch 8, 16 or 32 bytes off a line
            // against one on it: 9 × 512 × 80 0.911–0.917×, 6 × 512 × 128 0.937–0.953×, 12 × 128 × 64 0.906–0.934×
            float* ps = GemmCore.AlignToLine(psGiven);
            var a = new Args
            {
                Isa = isa, Q = pq, K = pk, V = pv, Out = po, Ldq = ldq, Ldk = ldk, Ldv = ldv, Ldo = ldo,
                Heads = o.Heads, KvHeads = kvHeads, D = d, Dv = dv, Score = o.Score,
                Scale = o.Score == ScoreKind.Dot ? (o.Scale ?? 1f / MathF.Sqrt(d)) : 1f,
                AddW = o.Score == ScoreKind.Additive ? paw : null, SoftCap = o.SoftCap, Norm = o.Normalizer,
                SigmoidBias = o.SigmoidBias, Causal = o.Causal, Window = o.Window,
                BoolMask = o.BoolMask.IsEmpty ? null : pbm, FloatMask = o.FloatMask.IsEmpty ? null : pfm,
                Weights = o.WeightsOut.IsEmpty ? null : pw, Slopes = o.DistanceSlopes.IsEmpty ? null : pslope,
                TotalQ = queryTokens, TotalK = keyTokens,
                RelBias = o.RelativeBias.IsEmpty ? null : prel, RelSpan = o.RelativeBiasSpan, ZeroDenormals = o.ZeroDenormals,
            };
            if (rowEnd >= 0)
            {
                // one sequence's rows [rowStart, rowEnd) on this thread
                int valid1 = o.KeyValidLengths.IsEmpty ? keyTokens : o.KeyValidLengths[0];
                if (rowEnd > rowStart)
                    for (int g = 0; g < kvHeads; g++) RunGroup(a, 0, queryTokens, 0, keyTokens, valid1, g, rowStart, rowEnd, ps);
                return;
            }
            if (pool != null && TryMultithread(a, o.SequenceLengths, keyLens, o.KeyValidLengths, nSeq, ps, ScratchSize(isa, o, keyTokens), pool, o.AffineGroups)) return;
            int q0 = 0, k0 = 0;
            for (int s = 0; s < nSeq; s++)
            {
                int lq = o.SequenceLengths.IsEmpty ? queryTokens : o.SequenceLengths[s];
                int lk = keyLens.IsEmpty ? keyTokens : keyLens[s];
                int valid = o.KeyValidLengths.IsEmpty ? lk : o.KeyValidLengths[s];
                if (lq > 0)
                {
                    for (int g = 0; g < kvHeads; g++)
                        RunGroup(a, q0, lq, k0, lk, valid, g, 0, lq, ps);
                }
                q0 += lq;
                k0 += lk;
            }
        }
    }

    /// <summary>
    /// Checks a call's sizes, options, lengths and masks without touching any data (used by layers that must
    /// validate before they project). Q, K and V are assumed dense.
    /// </summary>
    internal static void Validate(IsaPath isa, int queryTokens, int keyTokens, Span<float> output, Span<float> scratch, scoped in AttentionCall options)
        => CheckArgs(isa, -1, queryTokens, -1, -1, keyTokens, output.Length, scratch.Length, options);

    private static void CheckArgs(IsaPath isa, int qLen, int queryTokens, int kLen, int vLen, int keyTokens, int outLen, int scratchLen, scoped in AttentionCall o)
    {
        ThrowHelper.Positive(o.Heads, "options.Heads");
        ThrowHelper.Positive(o.HeadDim, "options.HeadDim");
        int kvHeads = o.KvHeads == 0 ? o.Heads : o.KvHeads;
        int d = o.HeadDim, dv = o.ValueHeadDim == 0 ? d : o.ValueHeadDim;
        ThrowHelper.Positive(kvHeads, "options.KvHeads");
        ThrowHelper.Positive(dv, "options.ValueHeadDim");
        if (o.Heads % kvHeads != 0)
            ThrowHelper.Argument("options.KvHeads", $"'options.KvHeads' = {kvHeads} must divide Heads = {o.Heads}.");
        ThrowHelper.Positive(queryTokens, nameof(queryTokens));
        ThrowHelper.Positive(keyTokens, nameof(keyTokens));
        int ldq = o.QStride == 0 ? o.Heads * d : o.QStride, ldk = o.KStride == 0 ? kvHeads * d : o.KStride;
        int ldv = o.VStride == 0 ? kvHeads * dv : o.VStride, ldo = o.OutStride == 0 ? o.Heads * dv : o.OutStride;
        if (ldq < o.Heads * d) ThrowHelper.OutOfRange("options.QStride", ldq, $"'options.QStride' must be at least Heads*HeadDim = {o.Heads * d}; it is {ldq}.");
        if (ldk < kvHeads * d) ThrowHelper.OutOfRange("options.KStride", ldk, $"'options.KStride' must be at least KvHeads*HeadDim = {kvHeads * d}; it is {ldk}.");
        if (ldv < kvHeads * dv) ThrowHelper.OutOfRange("options.VStride", ldv, $"'options.VStride' must be at least KvHeads*ValueHeadDim = {kvHeads * dv}; it is {ldv}.");
        if (ldo < o.Heads * dv) ThrowHelper.OutOfRange("options.OutStride", ldo, $"'options.OutStride' must be at least Heads*ValueHeadDim = {o.Heads * dv}; it is {ldo}.");
        if (qLen >= 0) ThrowHelper.Length(qLen, ThrowHelper.Extent(queryTokens, o.Heads * d, ldq), "q", $"[{queryTokens}, {o.Heads}*{d}] with row stride {ldq}");
        if (kLen >= 0) ThrowHelper.Length(kLen, ThrowHelper.Extent(keyTokens, kvHeads * d, ldk), "k", $"[{keyTokens}, {kvHeads}*{d}] with row stride {ldk}");
        if (vLen >= 0) ThrowHelper.Length(vLen, ThrowHelper.Extent(keyTokens, kvHeads * dv, ldv), "v", $"[{keyTokens}, {kvHeads}*{dv}] with row stride {ldv}");
        ThrowHelper.Length(outLen, ThrowHelper.Extent(queryTokens, o.Heads * dv, ldo), "output", $"[{queryTokens}, {o.Heads}*{dv}] with row stride {ldo}");
        if ((uint)o.Score > (uint)ScoreKind.Additive) ThrowHelper.OutOfRange("options.Score", o.Score, "Unknown score kind.");
        if ((uint)o.Normalizer > (uint)Normalizer.Sigmoid) ThrowHelper.OutOfRange("options.Normalizer", o.Normalizer, "Unknown normalizer.");
        if ((uint)o.Causal > (uint)CausalMode.BottomRight) ThrowHelper.OutOfRange("options.Causal", o.Causal, "Unknown causal mode.");
        if (o.Window < 0) ThrowHelper.OutOfRange("options.Window", o.Window, "'options.Window' must be 0 (none) or a positive distance.");
        if (o.Score == ScoreKind.Additive && o.AdditiveWeights.Length != o.Heads * d)
            ThrowHelper.Argument("options.AdditiveWeights", $"'options.AdditiveWeights' has {o.AdditiveWeights.Length} elements; expected Heads*HeadDim = {o.Heads}*{d} = {o.Heads * d}.");
        if (o.Scale is float sc && !float.IsFinite(sc)) ThrowHelper.OutOfRange("options.Scale", sc, "'options.Scale' must be finite.");
        if (!(o.SoftCap >= 0) || float.IsInfinity(o.SoftCap)) ThrowHelper.OutOfRange("options.SoftCap", o.SoftCap, "'options.SoftCap' must be finite and ≥ 0.");

        // sequences
        int nSeq = o.SequenceLengths.IsEmpty ? 1 : o.SequenceLengths.Length;
        ReadOnlySpan<int> keyLens = !o.KeySequenceLengths.IsEmpty ? o.KeySequenceLengths : o.SequenceLengths;
        if (!o.SequenceLengths.IsEmpty)
        {
            CheckLengths(o.SequenceLengths, queryTokens, "options.SequenceLengths", "queryTokens");
            if (keyLens.Length != nSeq)
                ThrowHelper.Argument("options.KeySequenceLengths", $"'options.KeySequenceLengths' has {keyLens.Length} sequences; expected {nSeq} like SequenceLengths.");
            CheckLengths(keyLens, keyTokens, o.KeySequenceLengths.IsEmpty ? "options.SequenceLengths" : "options.KeySequenceLengths", "keyTokens");
        }
        else if (!o.KeySequenceLengths.IsEmpty)
            ThrowHelper.Argument("options.KeySequenceLengths", "'options.KeySequenceLengths' needs SequenceLengths (the query lengths) as well.");
        if (!o.KeyValidLengths.IsEmpty)
        {
            if (o.KeyValidLengths.Length != nSeq)
                ThrowHelper.Argument("options.KeyValidLengths", $"'options.KeyValidLengths' has {o.KeyValidLengths.Length} entries; expected one per sequence = {nSeq}.");
            for (int s = 0; s < nSeq; s++)
            {
                int lk = keyLens.IsEmpty ? keyTokens : keyLens[s];
                if ((uint)o.KeyValidLengths[s] > (uint)lk)
                    ThrowHelper.Argument("options.KeyValidLengths", $"'options.KeyValidLengths'[{s}] = {o.KeyValidLengths[s]} is outside 0..{lk} (the sequence's keys).");
            }
        }
        long qk = (long)queryTokens * keyTokens;
        if (!o.BoolMask.IsEmpty && o.BoolMask.Length != qk)
            ThrowHelper.Argument("options.BoolMask", $"'options.BoolMask' has {o.BoolMask.Length} elements; expected queryTokens*keyTokens = {queryTokens}*{keyTokens} = {qk}.");
        if (!o.FloatMask.IsEmpty && o.FloatMask.Length != qk)
            ThrowHelper.Argument("options.FloatMask", $"'options.FloatMask' has {o.FloatMask.Length} elements; expected queryTokens*keyTokens = {queryTokens}*{keyTokens} = {qk}.");
        if (!o.DistanceSlopes.IsEmpty)
        {
            if (o.DistanceSlopes.Length != o.Heads)
                ThrowHelper.Argument("options.DistanceSlopes", $"'options.DistanceSlopes' has {o.DistanceSlopes.Length} elements; expected one per head = {o.Heads}.");
            foreach (float sl in o.DistanceSlopes)
                if (!float.IsFinite(sl)) ThrowHelper.Argument("options.DistanceSlopes", "'options.DistanceSlopes' must be finite.");
        }
        if (!o.RelativeBias.IsEmpty)
        {
            int span = o.RelativeBiasSpan;
            if (span < 1 || span > 1 << 20) ThrowHelper.OutOfRange("options.RelativeBiasSpan", span, "'options.RelativeBiasSpan' must be 1 … 2^20 when RelativeBias is given.");
            if (o.RelativeBias.Length != (long)o.Heads * (2 * span - 1))
                ThrowHelper.Argument("options.RelativeBias", $"'options.RelativeBias' has {o.RelativeBias.Length} elements; expected Heads*(2*RelativeBiasSpan-1) = {o.Heads}*{2 * span - 1}.");
            // checked on every call (a caller may change the table): one vectorised pass — the largest magnitude is NaN or ∞ exactly when one value is
            if (!float.IsFinite(System.Numerics.Tensors.TensorPrimitives.MaxMagnitude(o.RelativeBias))) ThrowHelper.Argument("options.RelativeBias", "'options.RelativeBias' must be finite.");
            for (int s = 0; s < nSeq; s++)
            {
                int lq = o.SequenceLengths.IsEmpty ? queryTokens : o.SequenceLengths[s], lk = keyLens.IsEmpty ? keyTokens : keyLens[s];
                if (lq > span || lk > span)
                    ThrowHelper.Argument("options.RelativeBiasSpan", $"sequence {s} has {lq} queries and {lk} keys; 'options.RelativeBiasSpan' = {span} covers sequences up to {span}.");
            }
        }
        if (!o.WeightsOut.IsEmpty && o.WeightsOut.Length != o.Heads * qk)
            ThrowHelper.Argument("options.WeightsOut", $"'options.WeightsOut' has {o.WeightsOut.Length} elements; expected Heads*queryTokens*keyTokens = {o.Heads}*{queryTokens}*{keyTokens} = {o.Heads * qk}.");
        long need = ScratchSize(isa, o, keyTokens);
        ThrowHelper.Length(scratchLen, need, "scratch", $"Attention.ScratchSize(options, {keyTokens})");

    }

    private static void CheckLengths(ReadOnlySpan<int> lens, int total, string name, string totalName)
    {
        long sum = 0;
        for (int i = 0; i < lens.Length; i++)
        {
            if (lens[i] < 0) ThrowHelper.Argument(name, $"'{name}'[{i}] = {lens[i]} is negative.");
            sum += lens[i];
        }
        if (sum != total) ThrowHelper.Argument(name, $"'{name}' add up to {sum}; expected {totalName} = {total}.");
    }

    internal struct Args
    {
        public IsaPath Isa;
        public float* Q, K, V, Out;
        public nint Ldq, Ldk, Ldv, Ldo;
        public int Heads, KvHeads, D, Dv;
        public ScoreKind Score;
        public float Scale;
        public float* AddW;
        public float SoftCap;
        public Normalizer Norm;
        public float? SigmoidBias;
        public CausalMode Causal;
        public int Window;
        public bool* BoolMask;
        public float* FloatMask;
        public float* Slopes;
        public float* RelBias;
        public int RelSpan;
        public float* Weights;
        public int TotalQ, TotalK;
        public bool ZeroDenormals;
    }

}
