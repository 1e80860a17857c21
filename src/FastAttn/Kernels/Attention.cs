using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FastAttn.Kernels;

/// <summary>How a query and a key are turned into a score.</summary>
public enum ScoreKind
{
    /// <summary>s = scale · q·k (scale 1/√headDim unless <see cref="AttentionOptions.Scale"/> is set; 1 for unscaled).</summary>
    Dot = 0,
    /// <summary>s = Σ_d w_d · tanh(q_d + k_d) with a learned vector w per head (Bahdanau / Keras AdditiveAttention).</summary>
    Additive = 1,
}

/// <summary>How a row of scores becomes attention weights α.</summary>
public enum Normalizer
{
    /// <summary>α = softmax(s) over the visible keys (numerically stable, online).</summary>
    Softmax = 0,
    /// <summary>α = relu(s) / L, L the number of (unpadded) keys of the sequence (Wortsman et al. 2023).</summary>
    Relu = 1,
    /// <summary>α = σ(s + b), b = −ln L unless <see cref="AttentionOptions.SigmoidBias"/> is set (Ramapuram et al. 2024).</summary>
    Sigmoid = 2,
}

/// <summary>Causal masking and, when query and key lengths differ, its alignment.</summary>
public enum CausalMode
{
    /// <summary>Every query sees every key.</summary>
    None = 0,
    /// <summary>Query i sees keys j ≤ i (PyTorch's <c>is_causal</c>).</summary>
    TopLeft = 1,
    /// <summary>Query i sees keys j ≤ i + (keys − queries) (ONNX; incremental decoding).</summary>
    BottomRight = 2,
}

/// <summary>Everything about one attention call except the tensors themselves.</summary>
public ref struct AttentionOptions
{
    /// <summary>Query heads.</summary>
    public int Heads;
    /// <summary>Key/value heads (0 = <see cref="Heads"/>); Heads must be a multiple (grouped-query attention).</summary>
    public int KvHeads;
    /// <summary>Width of a query/key head.</summary>
    public int HeadDim;
    /// <summary>Width of a value head (0 = <see cref="HeadDim"/>).</summary>
    public int ValueHeadDim;
    /// <summary>Score function.</summary>
    public ScoreKind Score;
    /// <summary>Dot-product scale; null = 1/√HeadDim, 1 = unscaled.</summary>
    public float? Scale;
    /// <summary>Additive scores: w, <c>[Heads, HeadDim]</c>.</summary>
    public ReadOnlySpan<float> AdditiveWeights;
    /// <summary>Soft-capping: s ← cap·tanh(s/cap) when &gt; 0.</summary>
    public float SoftCap;
    /// <summary>Normaliser.</summary>
    public Normalizer Normalizer;
    /// <summary>Sigmoid attention bias; null = −ln(keys).</summary>
    public float? SigmoidBias;
    /// <summary>Causal mask.</summary>
    public CausalMode Causal;
    /// <summary>Packed batch: query lengths of the sequences stored back to back (empty = one sequence).</summary>
    public ReadOnlySpan<int> SequenceLengths;
    /// <summary>Packed batch, cross-attention: key lengths per sequence (empty = <see cref="SequenceLengths"/>, or all keys).</summary>
    public ReadOnlySpan<int> KeySequenceLengths;
    /// <summary>Key padding: valid keys per sequence (keys at or beyond are ignored); empty = all valid.</summary>
    public ReadOnlySpan<int> KeyValidLengths;
    /// <summary>Boolean mask <c>[queryTokens, keyTokens]</c> (global indices), true = may attend; empty = none.</summary>
    public ReadOnlySpan<bool> BoolMask;
    /// <summary>Additive float mask <c>[queryTokens, keyTokens]</c> added to the scores; empty = none.</summary>
    public ReadOnlySpan<float> FloatMask;
    /// <summary>Optional: receives α as <c>[Heads, queryTokens, keyTokens]</c> (zeros across sequences of a packed batch).</summary>
    public Span<float> WeightsOut;
    /// <summary>Row strides (0 = dense: Heads·HeadDim for Q, KvHeads·HeadDim for K, KvHeads·ValueHeadDim for V, Heads·ValueHeadDim for the output).</summary>
    public int QStride, KStride, VStride, OutStride;
}

/// <summary>
/// Fused, tiled multi-head attention: out_i = Σ_j α_ij v_j for every query row, computed tile by tile with a
/// running (online) max and sum so scratch grows linearly with sequence length. Q·Kᵀ and P·V run on the
/// packed-GEMM microkernels; scaling is fused into the GEMM, masking, capping and exponentiation into one
/// pass over each score tile. A query row whose keys are all masked outputs zeros (never NaN).
/// </summary>
public static unsafe class Attention
{
    /// <summary>Query rows per tile.</summary>
    internal static readonly int Br = GemmCore.MR * 4;
    /// <summary>Keys per tile.</summary>
    internal static readonly int Bc = GemmCore.NR * 8;

    /// <summary>
    /// Scratch floats a call needs when no sequence has more than <paramref name="maxKeyTokens"/> keys.
    /// Linear in the key length: packed Kᵀ and V of one head, plus fixed-size tiles.
    /// </summary>
    public static long ScratchSize(int headDim, int valueHeadDim, int maxKeyTokens)
    {
        int d = Math.Max(headDim, 1), dv = valueHeadDim <= 0 ? d : valueHeadDim, lk = Math.Max(maxKeyTokens, 1);
        int nr = GemmCore.NR;
        long kt = (long)d * GemmCore.RoundUp(lk, nr);
        long vp = GemmCore.PackedBSize(lk, dv);
        long s = (long)Br * Bc;
        long o = (long)Br * GemmCore.RoundUp(dv, nr);
        long ml = 2L * Br;
        long gemm = GemmCore.APackSize(Br, Math.Max(d, Math.Max(Bc, lk)));
        return kt + vp + s + o + ml + gemm + 64;
    }

    /// <summary>Scratch floats for this call's options and lengths (the largest sequence decides).</summary>
    public static long ScratchSize(in AttentionOptions o, int keyTokens)
    {
        int maxK = keyTokens;
        ReadOnlySpan<int> kl = !o.KeySequenceLengths.IsEmpty ? o.KeySequenceLengths : o.SequenceLengths;
        if (!kl.IsEmpty) { maxK = 0; foreach (int l in kl) maxK = Math.Max(maxK, l); }
        return ScratchSize(o.HeadDim, o.ValueHeadDim, maxK);
    }

    /// <summary>
    /// Runs attention. Q is <c>[queryTokens, Heads·HeadDim]</c>, K <c>[keyTokens, KvHeads·HeadDim]</c>, V
    /// <c>[keyTokens, KvHeads·ValueHeadDim]</c>, output <c>[queryTokens, Heads·ValueHeadDim]</c>; head h is its own
    /// column block. All arguments are checked before anything is written.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A size or option is out of range.</exception>
    /// <exception cref="ArgumentException">A span is shorter than its shape, or lengths do not add up.</exception>
    public static void Forward(ReadOnlySpan<float> q, int queryTokens, ReadOnlySpan<float> k, ReadOnlySpan<float> v, int keyTokens,
        Span<float> output, Span<float> scratch, scoped in AttentionOptions options)
    {
        var o = options;
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
        ThrowHelper.Length(q.Length, ThrowHelper.Extent(queryTokens, o.Heads * d, ldq), nameof(q), $"[{queryTokens}, {o.Heads}*{d}] with row stride {ldq}");
        ThrowHelper.Length(k.Length, ThrowHelper.Extent(keyTokens, kvHeads * d, ldk), nameof(k), $"[{keyTokens}, {kvHeads}*{d}] with row stride {ldk}");
        ThrowHelper.Length(v.Length, ThrowHelper.Extent(keyTokens, kvHeads * dv, ldv), nameof(v), $"[{keyTokens}, {kvHeads}*{dv}] with row stride {ldv}");
        ThrowHelper.Length(output.Length, ThrowHelper.Extent(queryTokens, o.Heads * dv, ldo), nameof(output), $"[{queryTokens}, {o.Heads}*{dv}] with row stride {ldo}");
        if ((uint)o.Score > (uint)ScoreKind.Additive) ThrowHelper.OutOfRange("options.Score", o.Score, "Unknown score kind.");
        if ((uint)o.Normalizer > (uint)Normalizer.Sigmoid) ThrowHelper.OutOfRange("options.Normalizer", o.Normalizer, "Unknown normalizer.");
        if ((uint)o.Causal > (uint)CausalMode.BottomRight) ThrowHelper.OutOfRange("options.Causal", o.Causal, "Unknown causal mode.");
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
        if (!o.WeightsOut.IsEmpty && o.WeightsOut.Length != o.Heads * qk)
            ThrowHelper.Argument("options.WeightsOut", $"'options.WeightsOut' has {o.WeightsOut.Length} elements; expected Heads*queryTokens*keyTokens = {o.Heads}*{queryTokens}*{keyTokens} = {o.Heads * qk}.");
        long need = ScratchSize(o, keyTokens);
        ThrowHelper.Length(scratch.Length, need, nameof(scratch), $"Attention.ScratchSize(options, {keyTokens})");

        if (!o.WeightsOut.IsEmpty) o.WeightsOut.Clear();
        fixed (float* pq = q, pk = k, pv = v, po = output, ps = scratch, paw = o.AdditiveWeights, pfm = o.FloatMask, pw = o.WeightsOut)
        fixed (bool* pbm = o.BoolMask)
        fixed (int* pSeq = o.SequenceLengths, pKeySeq = keyLens, pValid = o.KeyValidLengths)
        {
            var a = new Args
            {
                Q = pq, K = pk, V = pv, Out = po, Ldq = ldq, Ldk = ldk, Ldv = ldv, Ldo = ldo,
                Heads = o.Heads, KvHeads = kvHeads, D = d, Dv = dv, Score = o.Score,
                Scale = o.Score == ScoreKind.Dot ? (o.Scale ?? 1f / MathF.Sqrt(d)) : 1f,
                AddW = o.Score == ScoreKind.Additive ? paw : null, SoftCap = o.SoftCap, Norm = o.Normalizer,
                SigmoidBias = o.SigmoidBias, Causal = o.Causal,
                BoolMask = o.BoolMask.IsEmpty ? null : pbm, FloatMask = o.FloatMask.IsEmpty ? null : pfm,
                Weights = o.WeightsOut.IsEmpty ? null : pw,
                TotalQ = queryTokens, TotalK = keyTokens,
            };
            int q0 = 0, k0 = 0;
            for (int s = 0; s < nSeq; s++)
            {
                int lq = o.SequenceLengths.IsEmpty ? queryTokens : pSeq[s];
                int lk = keyLens.IsEmpty ? keyTokens : pKeySeq[s];
                int valid = o.KeyValidLengths.IsEmpty ? lk : pValid[s];
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
        public bool* BoolMask;
        public float* FloatMask;
        public float* Weights;
        public int TotalQ, TotalK;
    }

    /// <summary>One sequence, one key/value head and its query heads, query rows [rowStart, rowEnd) of the sequence.</summary>
    internal static void RunGroup(in Args a, int q0, int lq, int k0, int lk, int valid, int kvHead, int rowStart, int rowEnd, float* scratch)
    {
        switch (Isa.Active)
        {
            case IsaPath.Vector512: RunGroup<Simd512, Vector512<float>>(a, q0, lq, k0, lk, valid, kvHead, rowStart, rowEnd, scratch); break;
            case IsaPath.Vector256: RunGroup<Simd256, Vector256<float>>(a, q0, lq, k0, lk, valid, kvHead, rowStart, rowEnd, scratch); break;
            case IsaPath.Vector128: RunGroup<Simd128, Vector128<float>>(a, q0, lq, k0, lk, valid, kvHead, rowStart, rowEnd, scratch); break;
            default: RunGroup<SimdScalar, float>(a, q0, lq, k0, lk, valid, kvHead, rowStart, rowEnd, scratch); break;
        }
    }

    private static void RunGroup<TOps, TVec>(in Args a, int q0, int lq, int k0, int lk, int valid, int kvHead, int rowStart, int rowEnd, float* scratch)
        where TOps : ISimd<TVec> where TVec : struct
    {
        int d = a.D, dv = a.Dv, nr = GemmCore.NR;
        int br = Br;
        bool materialise = a.Weights != null;
        int bc = materialise ? Math.Max(lk, 1) : Bc;
        int dvPad = GemmCore.RoundUp(dv, nr);
        // scratch layout
        float* kt = scratch;
        float* vp = kt + (long)d * GemmCore.RoundUp(Math.Max(lk, 1), nr);
        float* sTile = vp + GemmCore.PackedBSize(Math.Max(lk, 1), dv);
        float* oTile = sTile + (long)Br * Bc;
        float* mRow = oTile + (long)Br * dvPad;
        float* lRow = mRow + Br;
        float* gemmScratch = lRow + Br;

        // Visible keys overall: padding and (per row) causality limit what is read.
        int keyEnd = Math.Min(lk, valid);
        if (keyEnd > 0)
        {
            GemmCore.PackB(a.K + k0 * a.Ldk + kvHead * d, 1, a.Ldk, d, keyEnd, kt);
            GemmCore.PackB(a.V + k0 * a.Ldv + kvHead * dv, a.Ldv, 1, keyEnd, dv, vp);
        }
        int group = a.Heads / a.KvHeads;
        float invL = valid > 0 ? 1f / valid : 0f;
        float sigBias = a.SigmoidBias ?? (valid > 0 ? -MathF.Log(valid) : 0f);
        int causalShift = a.Causal == CausalMode.BottomRight ? lk - lq : 0;

        for (int hh = 0; hh < group; hh++)
        {
            int h = kvHead * group + hh;
            for (int r0 = rowStart; r0 < rowEnd; r0 += br)
            {
                int rows = Math.Min(br, rowEnd - r0);
                for (int r = 0; r < rows; r++) { mRow[r] = float.NegativeInfinity; lRow[r] = 0f; }
                // keys any row of this tile can see
                int tileKeyEnd = keyEnd;
                if (a.Causal != CausalMode.None) tileKeyEnd = Math.Min(tileKeyEnd, Math.Max(0, r0 + rows - 1 + causalShift + 1));
                bool first = true;
                for (int j0 = 0; j0 < tileKeyEnd; j0 += bc)
                {
                    int cols = Math.Min(bc, tileKeyEnd - j0);
                    float* s; nint lds;
                    if (materialise) { s = a.Weights + ((long)h * a.TotalQ + q0 + r0) * a.TotalK + k0 + j0; lds = a.TotalK; }
                    else { s = sTile; lds = Bc; }
                    // scores
                    if (a.Score == ScoreKind.Dot)
                    {
                        var g = new GemmArgs
                        {
                            A = a.Q + (q0 + r0) * a.Ldq + h * d, Lda = a.Ldq, M = rows, N = j0 + cols, K = d,
                            PackedB = kt, PanelStride = (nint)d * nr, C = s - j0, Ldc = lds, Alpha = a.Scale, Ldr = 0,
                        };
                        GemmCore.Run(g, 0, rows, j0 / nr, (j0 + cols + nr - 1) / nr, gemmScratch);
                    }
                    else
                    {
                        AdditiveScores<TOps, TVec>(a.Q + (q0 + r0) * a.Ldq + h * d, a.Ldq, rows, kt, d, j0, cols, a.AddW + h * d, s, lds);
                    }
                    // mask, cap, normalise (online for softmax)
                    for (int r = 0; r < rows; r++)
                    {
                        int qi = r0 + r; // local query index
                        int visEnd = cols;
                        if (a.Causal != CausalMode.None) visEnd = Math.Clamp(qi + causalShift + 1 - j0, 0, cols);
                        float* srow = s + r * lds;
                        long gRow = (long)(q0 + qi) * a.TotalK + k0 + j0;
                        float corr = ProcessRow<TOps, TVec>(srow, cols, visEnd, a, gRow, ref mRow[r], ref lRow[r], invL, sigBias);
                        if (!first && corr != 1f)
                        {
                            float* orow = oTile + r * dvPad;
                            ScaleRow<TOps, TVec>(orow, dv, corr);
                        }
                    }
                    // O += P·V
                    var pv = new GemmArgs
                    {
                        A = s, Lda = lds, M = rows, N = dv, K = cols, PackedB = vp + (long)j0 * nr, PanelStride = (nint)keyEnd * nr,
                        C = oTile, Ldc = dvPad, Alpha = 1f, Accumulate = !first,
                    };
                    GemmCore.Run(pv, 0, rows, 0, dvPad / nr, gemmScratch);
                    first = false;
                }
                // write out: softmax divides by the row sum; fully masked rows (l = 0, or no tile) give zeros.
                for (int r = 0; r < rows; r++)
                {
                    float* dst = a.Out + (q0 + r0 + r) * a.Ldo + h * dv;
                    float* orow = oTile + r * dvPad;
                    if (first) { new Span<float>(dst, dv).Clear(); continue; }
                    float f = a.Norm == Normalizer.Softmax ? (lRow[r] > 0f ? 1f / lRow[r] : 0f) : 1f;
                    ScaleInto<TOps, TVec>(orow, dst, dv, f);
                    if (materialise && a.Norm == Normalizer.Softmax)
                    {
                        float* wrow = a.Weights + ((long)h * a.TotalQ + q0 + r0 + r) * a.TotalK + k0;
                        ScaleRow<TOps, TVec>(wrow, keyEnd, f);
                    }
                }
            }
        }
    }

    /// <summary>
    /// Masks, caps and normalises one row of scores in place. Softmax: updates the running max m and sum l and
    /// returns the factor exp(m_old − m_new) by which earlier output must be rescaled. Others: returns 1.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float ProcessRow<TOps, TVec>(float* s, int cols, int visEnd, in Args a, long gRow, ref float m, ref float l, float invL, float sigBias)
        where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width;
        float ninf = float.NegativeInfinity;
        if (a.SoftCap > 0f)
        {
            TVec cap = TOps.Broadcast(a.SoftCap), inv = TOps.Broadcast(1f / a.SoftCap);
            int j = 0;
            for (; j + w <= visEnd; j += w) TOps.Store(TOps.Mul(cap, VecMath.Tanh<TOps, TVec>(TOps.Mul(TOps.Load(s + j), inv))), s + j);
            for (; j < visEnd; j++) s[j] = a.SoftCap * MathF.Tanh(s[j] / a.SoftCap);
        }
        for (int j = visEnd; j < cols; j++) s[j] = ninf;
        if (a.FloatMask != null)
        {
            float* fm = a.FloatMask + gRow;
            for (int j = 0; j < visEnd; j++) s[j] += fm[j];
        }
        if (a.BoolMask != null)
        {
            bool* bm = a.BoolMask + gRow;
            for (int j = 0; j < visEnd; j++) if (!bm[j]) s[j] = ninf;
        }

        if (a.Norm == Normalizer.Softmax)
        {
            // row max
            TVec mx = TOps.Broadcast(ninf);
            int j = 0;
            for (; j + w <= cols; j += w) mx = TOps.Max(mx, TOps.Load(s + j));
            float rowMax = TOps.MaxAcross(mx);
            for (; j < cols; j++) rowMax = MathF.Max(rowMax, s[j]);
            float mNew = MathF.Max(m, rowMax);
            if (float.IsNegativeInfinity(mNew) || float.IsNaN(mNew))
            {
                for (int t = 0; t < cols; t++) s[t] = 0f;
                return 1f;
            }
            float corr = MathF.Exp(m - mNew); // m = −∞ → 0
            TVec mv = TOps.Broadcast(mNew);
            TVec sum = TOps.Zero;
            j = 0;
            for (; j + w <= cols; j += w)
            {
                TVec p = TOps.Exp(TOps.Sub(TOps.Load(s + j), mv));
                TOps.Store(p, s + j);
                sum = TOps.Add(sum, p);
            }
            float total = TOps.Sum(sum);
            for (; j < cols; j++) { float p = MathF.Exp(s[j] - mNew); s[j] = p; total += p; }
            l = l * corr + total;
            m = mNew;
            return corr;
        }
        else if (a.Norm == Normalizer.Relu)
        {
            TVec f = TOps.Broadcast(invL);
            int j = 0;
            for (; j + w <= cols; j += w)
            {
                TVec x = TOps.Load(s + j);
                // −∞ (masked) → max(−∞, 0) = 0
                TOps.Store(TOps.Mul(TOps.Max(x, TOps.Zero), f), s + j);
            }
            for (; j < cols; j++) s[j] = MathF.Max(s[j], 0f) * invL;
            return 1f;
        }
        else
        {
            TVec b = TOps.Broadcast(sigBias);
            int j = 0;
            TVec lowest = TOps.Broadcast(float.MinValue);
            for (; j + w <= cols; j += w)
            {
                TVec x = TOps.Load(s + j);
                // masked (−∞) keys get exactly 0, not σ(−80)
                TOps.Store(TOps.SelectLess(x, lowest, TOps.Zero, VecMath.Sigmoid<TOps, TVec>(TOps.Add(x, b))), s + j);
            }
            for (; j < cols; j++)
            {
                float x = s[j] + sigBias;
                s[j] = float.IsNegativeInfinity(x) ? 0f : 1f / (1f + MathF.Exp(MathF.Min(-x, 80f)));
            }
            return 1f;
        }
    }

    /// <summary>
    /// Additive scores for rows × [j0, j0+cols): s_ij = Σ_d w_d·tanh(q_id + k_jd), vectorised across keys using
    /// the packed Kᵀ panels (d rows of NR keys), so no horizontal sums are needed.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AdditiveScores<TOps, TVec>(float* q, nint ldq, int rows, float* kt, int d, int j0, int cols, float* wv, float* s, nint lds)
        where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width, nr = 2 * w;
        float* tmp = stackalloc float[64];
        for (int p0 = j0; p0 < j0 + cols; p0 += nr)
        {
            float* panel = kt + (long)(p0 / nr) * d * nr;
            int pc = Math.Min(nr, j0 + cols - p0);
            for (int r = 0; r < rows; r++)
            {
                float* qr = q + r * ldq;
                TVec acc0 = TOps.Zero, acc1 = TOps.Zero, acc2 = TOps.Zero, acc3 = TOps.Zero;
                int dd = 0;
                for (; dd + 2 <= d; dd += 2)
                {
                    float* kp = panel + dd * nr;
                    TVec qd = TOps.Broadcast(qr[dd]), wd = TOps.Broadcast(wv[dd]);
                    TVec qe = TOps.Broadcast(qr[dd + 1]), we = TOps.Broadcast(wv[dd + 1]);
                    acc0 = TOps.Fma(wd, VecMath.Tanh<TOps, TVec>(TOps.Add(qd, TOps.Load(kp))), acc0);
                    acc1 = TOps.Fma(wd, VecMath.Tanh<TOps, TVec>(TOps.Add(qd, TOps.Load(kp + w))), acc1);
                    acc2 = TOps.Fma(we, VecMath.Tanh<TOps, TVec>(TOps.Add(qe, TOps.Load(kp + nr))), acc2);
                    acc3 = TOps.Fma(we, VecMath.Tanh<TOps, TVec>(TOps.Add(qe, TOps.Load(kp + nr + w))), acc3);
                }
                for (; dd < d; dd++)
                {
                    float* kp = panel + dd * nr;
                    TVec qd = TOps.Broadcast(qr[dd]), wd = TOps.Broadcast(wv[dd]);
                    acc0 = TOps.Fma(wd, VecMath.Tanh<TOps, TVec>(TOps.Add(qd, TOps.Load(kp))), acc0);
                    acc1 = TOps.Fma(wd, VecMath.Tanh<TOps, TVec>(TOps.Add(qd, TOps.Load(kp + w))), acc1);
                }
                acc0 = TOps.Add(acc0, acc2);
                acc1 = TOps.Add(acc1, acc3);
                float* dst = s + r * lds + (p0 - j0);
                if (pc == nr) { TOps.Store(acc0, dst); TOps.Store(acc1, dst + w); }
                else
                {
                    TOps.Store(acc0, tmp); TOps.Store(acc1, tmp + w);
                    for (int j = 0; j < pc; j++) dst[j] = tmp[j];
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScaleRow<TOps, TVec>(float* x, int n, float f) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width, j = 0;
        TVec fv = TOps.Broadcast(f);
        for (; j + w <= n; j += w) TOps.Store(TOps.Mul(TOps.Load(x + j), fv), x + j);
        for (; j < n; j++) x[j] *= f;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScaleInto<TOps, TVec>(float* src, float* dst, int n, float f) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width, j = 0;
        TVec fv = TOps.Broadcast(f);
        for (; j + w <= n; j += w) TOps.Store(TOps.Mul(TOps.Load(src + j), fv), dst + j);
        for (; j < n; j++) dst[j] = src[j] * f;
    }
}
