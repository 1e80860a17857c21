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
    /// <summary>
    /// Distance bias per query head (ALiBi-style, symmetric): −slope_h·|i − j| is added to the scaled scores, where i
    /// and j are the query's and the key's positions within their sequence; <c>[Heads]</c>, empty = none.
    /// </summary>
    public ReadOnlySpan<float> DistanceSlopes;
    /// <summary>Optional: receives α as <c>[Heads, queryTokens, keyTokens]</c> (zeros across sequences of a packed batch).</summary>
    public Span<float> WeightsOut;
    /// <summary>Row strides (0 = dense: Heads·HeadDim for Q, KvHeads·HeadDim for K, KvHeads·ValueHeadDim for V, Heads·ValueHeadDim for the output).</summary>
    public int QStride, KStride, VStride, OutStride;
}

/// <summary>
/// Fused, tiled multi-head attention: out_i = Σ_j α_ij v_j for every query row, computed tile by tile with a
/// running (online) max and sum so scratch grows linearly with sequence length. Q·Kᵀ and P·V run on the
/// packed-GEMM microkernel (K and V packed once per key/value head, Qᵀ once per query tile with the scale
/// folded in); capping, masking and exponentiation are vertical passes over an L1-resident score tile.
/// A query row whose keys are all masked outputs zeros (never NaN).
/// </summary>
public static unsafe class Attention
{
    /// <summary>
    /// Scratch floats a call needs when no sequence has more than <paramref name="maxKeyTokens"/> keys.
    /// Linear in the key length: packed K and V of one key/value head, plus fixed-size tiles.
    /// </summary>
    public static long ScratchSize(int headDim, int valueHeadDim, int maxKeyTokens)
    {
        int d = Math.Max(headDim, 1), dv = valueHeadDim <= 0 ? d : valueHeadDim;
        return new Layout(d, dv, maxKeyTokens, GemmCore.MR, GemmCore.NR).Total + 64;
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
    /// <exception cref="ArgumentException">A span is shorter than its shape, lengths do not add up, or the output, scratch or weights overlap an input or each other.</exception>
    public static void Forward(ReadOnlySpan<float> q, int queryTokens, ReadOnlySpan<float> k, ReadOnlySpan<float> v, int keyTokens,
        Span<float> output, Span<float> scratch, scoped in AttentionOptions options)
        => Forward(q, queryTokens, k, v, keyTokens, output, scratch, options, null);

    /// <summary>As above, split over <paramref name="pool"/>'s threads (each worker uses its own scratch) when large enough.</summary>
    internal static void Forward(ReadOnlySpan<float> q, int queryTokens, ReadOnlySpan<float> k, ReadOnlySpan<float> v, int keyTokens,
        Span<float> output, Span<float> scratch, scoped in AttentionOptions options, Threading.WorkerPool? pool)
    {
        var o = options;
        CheckArgs(q.Length, queryTokens, k.Length, v.Length, keyTokens, output.Length, scratch.Length, o);
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
        int kvHeads = o.KvHeads == 0 ? o.Heads : o.KvHeads;
        int d = o.HeadDim, dv = o.ValueHeadDim == 0 ? d : o.ValueHeadDim;
        int ldq = o.QStride == 0 ? o.Heads * d : o.QStride, ldk = o.KStride == 0 ? kvHeads * d : o.KStride;
        int ldv = o.VStride == 0 ? kvHeads * dv : o.VStride, ldo = o.OutStride == 0 ? o.Heads * dv : o.OutStride;
        int nSeq = o.SequenceLengths.IsEmpty ? 1 : o.SequenceLengths.Length;
        ReadOnlySpan<int> keyLens = !o.KeySequenceLengths.IsEmpty ? o.KeySequenceLengths : o.SequenceLengths;
        if (!o.WeightsOut.IsEmpty) o.WeightsOut.Clear();
        fixed (float* pq = q, pk = k, pv = v, po = output, ps = scratch, paw = o.AdditiveWeights, pfm = o.FloatMask, pw = o.WeightsOut)
        fixed (bool* pbm = o.BoolMask)
        fixed (float* pslope = o.DistanceSlopes)
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
                Weights = o.WeightsOut.IsEmpty ? null : pw, Slopes = o.DistanceSlopes.IsEmpty ? null : pslope,
                TotalQ = queryTokens, TotalK = keyTokens,
            };
            if (pool != null && pool.Threads > 1)
            {
                var job = pool.Jobs.Attention;
                job.SetSequences(nSeq);
                double flops = 0;
                int maxLq = 0;
                for (int s = 0, sq = 0, sk = 0; s < nSeq; s++)
                {
                    int lq = o.SequenceLengths.IsEmpty ? queryTokens : pSeq[s];
                    int lk = keyLens.IsEmpty ? keyTokens : pKeySeq[s];
                    int valid = o.KeyValidLengths.IsEmpty ? lk : pValid[s];
                    job.SetSequence(s, sq, lq, sk, lk, valid);
                    flops += 2.0 * lq * Math.Min(lk, valid) * (d + dv) * o.Heads;
                    maxLq = Math.Max(maxLq, lq);
                    sq += lq; sk += lk;
                }
                if (job.TryRun(a, flops, maxLq)) return;
            }
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

    /// <summary>
    /// Checks a call's sizes, options, lengths and masks without touching any data (used by layers that must
    /// validate before they project). Q, K and V are assumed dense.
    /// </summary>
    internal static void Validate(int queryTokens, int keyTokens, Span<float> output, Span<float> scratch, scoped in AttentionOptions options)
        => CheckArgs(-1, queryTokens, -1, -1, keyTokens, output.Length, scratch.Length, options);

    private static void CheckArgs(int qLen, int queryTokens, int kLen, int vLen, int keyTokens, int outLen, int scratchLen, scoped in AttentionOptions o)
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
        if (!o.WeightsOut.IsEmpty && o.WeightsOut.Length != o.Heads * qk)
            ThrowHelper.Argument("options.WeightsOut", $"'options.WeightsOut' has {o.WeightsOut.Length} elements; expected Heads*queryTokens*keyTokens = {o.Heads}*{queryTokens}*{keyTokens} = {o.Heads * qk}.");
        long need = ScratchSize(o, keyTokens);
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
        public float* Slopes;
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

    /// <summary>
    /// The tile loop. Scores are computed transposed, Sᵀ = K·Qᵀ, as a [keys × queries] tile whose rows are
    /// two vectors of queries: K is packed once per (sequence, kv head) as the broadcast operand, Qᵀ once
    /// per query tile (pre-scaled) as the vector operand, so the running max, the exponentials and the row
    /// sums are all vertical (no horizontal reductions), and the tile is already in the layout P·V
    /// broadcasts from. O = P·V then runs on the same microkernel with V packed once in panels.
    /// </summary>
    private static void RunGroup<TOps, TVec>(in Args a, int q0, int lq, int k0, int lk, int valid, int kvHead, int rowStart, int rowEnd, float* scratch)
        where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width, nq = 2 * w, mr = TOps.GemmRows, nr = nq;
        int d = a.D, dv = a.Dv, dvPad = GemmCore.RoundUp(dv, nr);
        int lkPad = GemmCore.RoundUp(Math.Max(lk, 1), mr);
        var lay = new Layout(d, dv, lk, mr, nq);
        float* kp = scratch + lay.Kp, vp = scratch + lay.Vp, qt = scratch + lay.Qt, st = scratch + lay.St, ot = scratch + lay.Ot;
        float* mv = scratch + lay.Stats, lv = mv + nq, cv = lv + nq, iota = cv + nq, wv = iota + nq;
        var epi = new TileEpilogue { Alpha = 1f, Last = true, Temp = scratch + lay.Header, Tile = scratch + lay.Header + 3 * 64 };
        for (int i = 0; i < nq; i++) iota[i] = i;

        bool materialise = a.Weights != null;
        int bcTile = TileKeys(mr);
        int bc = materialise ? lkPad : bcTile;
        int keyEnd = Math.Min(lk, valid);
        bool additive = a.Score == ScoreKind.Additive;
        int group = a.Heads / a.KvHeads;
        // Additive scores take the fast form tanh(q+k) = 1 − 2/(1 + e^{2q}·e^{2k}) when every |q|, |k| ≤ 20
        // (the exponentials, their product and its reciprocal stay finite and normal); otherwise tanh is evaluated directly.
        bool fastAdd = false;
        if (additive && keyEnd > 0)
        {
            float mx = MaxAbs(a.K + k0 * a.Ldk + kvHead * d, a.Ldk, keyEnd, d);
            for (int hh = 0; hh < group; hh++)
                mx = MathF.Max(mx, MaxAbs(a.Q + (q0 + rowStart) * a.Ldq + (kvHead * group + hh) * d, a.Ldq, rowEnd - rowStart, d));
            fastAdd = mx <= 20f;
        }
        int* bad = (int*)(scratch + lay.Bad);
        int nBad = 0;
        if (keyEnd > 0)
        {
            PackK<TOps, TVec>(a.K + k0 * a.Ldk + kvHead * d, a.Ldk, keyEnd, d, mr, kp, fastAdd);
            GemmCore.PackB(a.V + k0 * a.Ldv + kvHead * dv, a.Ldv, 1, keyEnd, dv, vp);
            nBad = NonFiniteRows<TOps, TVec>(a.V + k0 * a.Ldv + kvHead * dv, a.Ldv, keyEnd, dv, bad);
            // a value row holding NaN or ±∞ is zeroed in the packed copy and added separately, only to the queries that
            // give it a nonzero weight: a masked key (weight exactly 0) must not turn an output into 0·∞ = NaN, and which
            // queries share a tile (and so the product) depends on the vector width
            for (int b = 0; b < nBad; b++)
                for (int p = 0; p < dvPad / nr; p++) new Span<float>(vp + (long)p * keyEnd * nr + (long)bad[b] * nr, nr).Clear();
        }
        float invL = valid > 0 ? 1f / valid : 0f;
        float sigBias = a.SigmoidBias ?? (valid > 0 ? -MathF.Log(valid) : 0f);
        int causalShift = a.Causal == CausalMode.BottomRight ? lk - lq : 0;
        TVec ninf = TOps.Broadcast(float.NegativeInfinity);

        for (int hh = 0; hh < group; hh++)
        {
            int h = kvHead * group + hh;
            float wsum = 0f;
            if (additive)
            {
                float* aw = a.AddW + h * d;
                for (int dd = 0; dd < d; dd++) { wv[dd] = fastAdd ? -2f * aw[dd] : aw[dd]; wsum += aw[dd]; }
                if (!fastAdd) wsum = 0f;
            }
            for (int r0 = rowStart; r0 < rowEnd; r0 += nq)
            {
                int rows = Math.Min(nq, rowEnd - r0);
                int tileKeyEnd = keyEnd;
                if (a.Causal != CausalMode.None) tileKeyEnd = Math.Min(tileKeyEnd, Math.Max(0, r0 + rows + causalShift));
                if (tileKeyEnd <= 0)
                {
                    for (int r = 0; r < rows; r++) new Span<float>(a.Out + (q0 + r0 + r) * a.Ldo + h * dv, dv).Clear();
                    continue;
                }
                PackQ<TOps, TVec>(a.Q + (q0 + r0) * a.Ldq + h * d, a.Ldq, rows, d, nq, qt, additive ? 1f : a.Scale, fastAdd);
                TOps.Store(ninf, mv); TOps.Store(ninf, mv + w);
                TOps.Store(TOps.Zero, lv); TOps.Store(TOps.Zero, lv + w);
                bool first = true;
                for (int j0 = 0; j0 < tileKeyEnd; j0 += bc)
                {
                    int cols = Math.Min(bc, tileKeyEnd - j0);
                    // Sᵀ for keys [j0, j0+cols) × this tile's queries
                    epi.LoadC = false;
                    for (int jb = 0; jb < cols; jb += mr)
                    {
                        int kr = Math.Min(mr, cols - jb);
                        float* kb = kp + (long)(j0 + jb) * d;
                        if (!additive) GemmCore.Dispatch<TOps, TVec, StoreDirect>(kr, kb, mr, qt, d, st + jb * nq, nq, nq, ref epi);
                        else if (fastAdd) AdditiveBlock<TOps, TVec, FastTanhSum>(kb, mr, kr, qt, nq, d, wv, wsum, st + jb * nq);
                        else AdditiveBlock<TOps, TVec, DirectTanhSum>(kb, mr, kr, qt, nq, d, wv, wsum, st + jb * nq);
                    }
                    // soft cap, masks
                    if (a.SoftCap > 0f) SoftCapPass<TOps, TVec>(st, cols * 2, a.SoftCap);
                    if (a.Causal != CausalMode.None && j0 + cols - 1 > r0 + causalShift)
                        CausalPass<TOps, TVec>(st, cols, j0, r0 + causalShift, iota);
                    if (a.FloatMask != null || a.BoolMask != null) ApplyMasks(a, st, nq, q0 + r0, rows, k0 + j0, cols);
                    if (a.Slopes != null && a.Slopes[h] != 0f) DistancePass<TOps, TVec>(st, cols, j0, r0, iota, a.Slopes[h]);

                    // normalise
                    if (a.Norm == Normalizer.Softmax) SoftmaxPass<TOps, TVec>(st, cols, mv, lv, cv, first, ot, rows, dvPad);
                    else if (a.Norm == Normalizer.Relu) ReluPass<TOps, TVec>(st, cols * 2, invL);
                    else SigmoidPass<TOps, TVec>(st, cols * 2, sigBias);
                    if (materialise) WriteWeights(a, st, nq, h, q0 + r0, rows, k0 + j0, cols, a.Norm == Normalizer.Softmax ? lv : null);

                    // O += P·V: query rows in blocks of mr, value columns in panels
                    epi.LoadC = !first;
                    for (int pr = 0; pr < rows; pr += mr)
                    {
                        int prow = Math.Min(mr, rows - pr);
                        for (int p = 0; p < dvPad / nr; p++)
                        {
                            float* vb = vp + (long)p * keyEnd * nr + (long)j0 * nr, oc = ot + pr * dvPad + p * nr;
                            if (first) GemmCore.Dispatch<TOps, TVec, StoreDirect>(prow, st + pr, nq, vb, cols, oc, dvPad, nr, ref epi);
                            else GemmCore.Dispatch<TOps, TVec, AddDirect>(prow, st + pr, nq, vb, cols, oc, dvPad, nr, ref epi);
                        }
                    }
                    if (nBad > 0) AddNonFinite(a, st, nq, ot, dvPad, rows, j0, cols, bad, nBad, k0, kvHead);
                    first = false;
                }
                // write out: softmax divides by the column sum; fully masked queries (l = 0) give zeros.
                for (int r = 0; r < rows; r++)
                {
                    float* dst = a.Out + (q0 + r0 + r) * a.Ldo + h * dv;
                    float f = a.Norm == Normalizer.Softmax ? (lv[r] > 0f ? 1f / lv[r] : 0f) : 1f;
                    ScaleInto<TOps, TVec>(ot + r * dvPad, dst, dv, f);
                }
            }
        }
    }

    /// <summary>Indices of the rows (of <paramref name="keys"/> × <paramref name="dv"/>, stride ld) holding a NaN or an infinity.</summary>
    private static int NonFiniteRows<TOps, TVec>(float* v, nint ld, int keys, int dv, int* bad) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width, n = 0;
        for (int j = 0; j < keys; j++)
        {
            float* row = v + j * ld;
            // x·0 is 0 for every finite x and NaN otherwise
            TVec acc = TOps.Zero;
            int c = 0;
            for (; c + w <= dv; c += w) acc = TOps.Fma(TOps.Load(row + c), TOps.Zero, acc);
            float s = TOps.Sum(acc);
            for (; c < dv; c++) s += row[c] * 0f;
            if (s != 0f) bad[n++] = j;
        }
        return n;
    }

    /// <summary>O[r] += p[r, j]·v_j for the non-finite value rows j of this key tile, for the queries whose weight is not 0.</summary>
    private static void AddNonFinite(in Args a, float* st, int nq, float* ot, int dvPad, int rows, int j0, int cols, int* bad, int nBad, int k0, int kvHead)
    {
        for (int b = 0; b < nBad; b++)
        {
            int j = bad[b];
            if (j < j0 || j >= j0 + cols) continue;
            float* v = a.V + (k0 + j) * a.Ldv + kvHead * a.Dv;
            for (int r = 0; r < rows; r++)
            {
                float p = st[(j - j0) * nq + r];
                if (p == 0f) continue;
                float* o = ot + r * dvPad;
                for (int c = 0; c < a.Dv; c++) o[c] += p * v[c];
            }
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void SoftmaxPass<TOps, TVec>(float* st, int cols, float* mv, float* lv, float* cv, bool first, float* ot, int rows, int dvPad)
        where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width, nq = 2 * w;
        TVec ninf = TOps.Broadcast(float.NegativeInfinity), lowest = TOps.Broadcast(float.MinValue);
        TVec x0 = ninf, x1 = ninf;
        for (int j = 0; j < cols; j++)
        {
            x0 = TOps.Max(x0, TOps.Load(st + j * nq));
            x1 = TOps.Max(x1, TOps.Load(st + j * nq + w));
        }
        TVec m0 = TOps.Load(mv), m1 = TOps.Load(mv + w);
        TVec n0 = TOps.Max(m0, x0), n1 = TOps.Max(m1, x1);
        // a column with nothing visible yet keeps m = −∞; subtract 0 there so exp gives 0, not NaN
        TVec z0 = TOps.SelectLess(n0, lowest, TOps.Zero, n0), z1 = TOps.SelectLess(n1, lowest, TOps.Zero, n1);
        TVec c0 = TOps.Exp(TOps.Sub(m0, z0)), c1 = TOps.Exp(TOps.Sub(m1, z1));
        TVec s0 = TOps.Zero, s1 = TOps.Zero;
        for (int j = 0; j < cols; j++)
        {
            float* sr = st + j * nq;
            TVec p0 = TOps.Exp(TOps.Sub(TOps.Load(sr), z0));
            TVec p1 = TOps.Exp(TOps.Sub(TOps.Load(sr + w), z1));
            TOps.Store(p0, sr); TOps.Store(p1, sr + w);
            s0 = TOps.Add(s0, p0); s1 = TOps.Add(s1, p1);
        }
        TOps.Store(n0, mv); TOps.Store(n1, mv + w);
        TOps.Store(TOps.Fma(TOps.Load(lv), c0, s0), lv); TOps.Store(TOps.Fma(TOps.Load(lv + w), c1, s1), lv + w);
        if (!first)
        {
            TOps.Store(c0, cv); TOps.Store(c1, cv + w);
            for (int r = 0; r < rows; r++)
                if (cv[r] != 1f) ScaleRow<TOps, TVec>(ot + r * dvPad, dvPad, cv[r]);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void ReluPass<TOps, TVec>(float* st, int n, float invL) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width;
        TVec f = TOps.Broadcast(invL);
        for (int j = 0; j < n; j++)
            TOps.Store(TOps.Mul(TOps.Max(TOps.Load(st + j * w), TOps.Zero), f), st + j * w); // −∞ → 0
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void SigmoidPass<TOps, TVec>(float* st, int n, float bias) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width;
        TVec b = TOps.Broadcast(bias), lowest = TOps.Broadcast(float.MinValue);
        for (int j = 0; j < n; j++)
        {
            TVec x = TOps.Load(st + j * w);
            TOps.Store(TOps.SelectLess(x, lowest, TOps.Zero, VecMath.Sigmoid<TOps, TVec>(TOps.Add(x, b))), st + j * w); // −∞ → 0
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void SoftCapPass<TOps, TVec>(float* st, int n, float softCap) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width;
        TVec cap = TOps.Broadcast(softCap), inv = TOps.Broadcast(1f / softCap);
        for (int j = 0; j < n; j++)
            TOps.Store(TOps.Mul(cap, VecMath.Tanh<TOps, TVec>(TOps.Mul(TOps.Load(st + j * w), inv))), st + j * w);
    }

    /// <summary>Key jj is visible to query qi iff jj ≤ qi + shift; <paramref name="qBase"/> = first query of the tile + shift.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void CausalPass<TOps, TVec>(float* st, int cols, int j0, int qBase, float* iota) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width, nq = 2 * w;
        TVec ninf = TOps.Broadcast(float.NegativeInfinity);
        TVec q0v = TOps.Add(TOps.Load(iota), TOps.Broadcast(qBase));
        TVec q1v = TOps.Add(TOps.Load(iota + w), TOps.Broadcast(qBase));
        for (int j = Math.Max(0, qBase + 1 - j0); j < cols; j++)
        {
            TVec jj = TOps.Broadcast(j0 + j);
            float* sr = st + j * nq;
            TOps.Store(TOps.SelectLess(q0v, jj, ninf, TOps.Load(sr)), sr);
            TOps.Store(TOps.SelectLess(q1v, jj, ninf, TOps.Load(sr + w)), sr + w);
        }
    }

    /// <summary>Keys per key tile: a multiple of the microkernel's rows; the Sᵀ tile (keys × 2 vectors) stays in L1.</summary>
    internal static int TileKeys(int mr) => mr * 16;

    /// <summary>Offsets (in floats) of the regions of one call's scratch.</summary>
    private readonly struct Layout
    {
        public readonly long Kp, Vp, Qt, St, Ot, Stats, Bad, Header, Total;
        public Layout(int d, int dv, int maxKeys, int mr, int nq)
        {
            int lk = Math.Max(maxKeys, 1), nr = nq;
            long lkPad = GemmCore.RoundUp(lk, mr);
            Kp = 0;
            Vp = Kp + lkPad * d + 16; // + slack for PackK's overlapping row stores
            Qt = Vp + (long)GemmCore.RoundUp(dv, nr) * lk;
            St = Qt + (long)d * nq;
            Ot = St + Math.Max(TileKeys(mr), lkPad) * nq;
            Stats = Ot + (long)nq * GemmCore.RoundUp(dv, nr);
            Bad = Stats + 4L * nq + d;
            Header = Bad + lk;
            Total = Header + GemmCore.ScratchHeader;
        }
    }

    private static float MaxAbs(float* x, nint ld, int rows, int cols)
    {
        float m = 0f;
        for (int r = 0; r < rows; r++)
        {
            float* xr = x + r * ld;
            for (int c = 0; c < cols; c++) m = MathF.Max(m, MathF.Abs(xr[c]));
        }
        return m;
    }

    /// <summary>
    /// Packs keys in blocks of mr, d-major inside a block ([d][mr]); zero rows pad the last block. Optionally e^{2k}.
    /// On AVX-512 whole 16-column chunks go through an in-register transpose whose 16-float row stores run 4 floats
    /// past each 12-float row (ascending order overwrites them; the layout leaves slack after the last block).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackK<TOps, TVec>(float* k, nint ldk, int keys, int d, int mr, float* dst, bool exp2)
        where TOps : ISimd<TVec> where TVec : struct
    {
        int blocks = (keys + mr - 1) / mr;
        bool fast = Transpose.Available && mr <= 16;
        int dFast = fast ? d / 16 * 16 : 0;
        for (int b = 0; b < blocks; b++)
        {
            float* db = dst + (long)b * mr * d;
            int kr = Math.Min(mr, keys - b * mr);
            float* kb = k + b * mr * ldk;
            for (int c0 = 0; c0 < dFast; c0 += 16) Transpose.Block16(kb + c0, ldk, kr, db + c0 * mr, mr, 1f);
            for (int i = 0; i < kr; i++)
            {
                float* src = kb + i * ldk;
                float* dd = db + i;
                for (int c = dFast; c < d; c++) dd[c * mr] = src[c];
            }
            for (int i = kr; i < mr; i++)
                for (int c = dFast; c < d; c++) db[c * mr + i] = 0f;
            if (exp2) Exp2x<TOps, TVec>(db, mr * d);
        }
    }

    /// <summary>x ← e^{2x} in place.</summary>
    private static void Exp2x<TOps, TVec>(float* x, int n) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width, j = 0;
        for (; j + w <= n; j += w) { TVec v = TOps.Load(x + j); TOps.Store(TOps.Exp(TOps.Add(v, v)), x + j); }
        for (; j < n; j++) x[j] = MathF.Exp(2f * x[j]);
    }

    /// <summary>Qᵀ of one query tile: [d][nq], scaled; queries beyond <paramref name="rows"/> are zero. Optionally e^{2q}.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackQ<TOps, TVec>(float* q, nint ldq, int rows, int d, int nq, float* dst, float scale, bool exp2)
        where TOps : ISimd<TVec> where TVec : struct
    {
        int dFast = Transpose.Available && nq % 16 == 0 ? d / 16 * 16 : 0;
        for (int r0 = 0; r0 < nq && dFast > 0; r0 += 16)
        {
            int rr = Math.Clamp(rows - r0, 0, 16);
            for (int c0 = 0; c0 < dFast; c0 += 16) Transpose.Block16(q + r0 * ldq + c0, ldq, rr, dst + c0 * nq + r0, nq, scale);
        }
        for (int r = 0; r < rows; r++)
        {
            float* src = q + r * ldq;
            float* dd = dst + r;
            for (int c = dFast; c < d; c++) dd[c * nq] = src[c] * scale;
        }
        if (rows < nq)
            for (int c = dFast; c < d; c++)
                for (int r = rows; r < nq; r++) dst[c * nq + r] = 0f;
        if (exp2) Exp2x<TOps, TVec>(dst, d * nq);
    }

    /// <summary>Boolean and float masks (global [queryTokens, keyTokens] indices) applied to an Sᵀ tile.</summary>
    private static void ApplyMasks(in Args a, float* st, int nq, int qRow, int rows, int kCol, int cols)
    {
        for (int r = 0; r < rows; r++)
        {
            long g = (long)(qRow + r) * a.TotalK + kCol;
            if (a.FloatMask != null)
            {
                float* fm = a.FloatMask + g;
                for (int j = 0; j < cols; j++) st[j * nq + r] += fm[j];
            }
            if (a.BoolMask != null)
            {
                bool* bm = a.BoolMask + g;
                for (int j = 0; j < cols; j++) if (!bm[j]) st[j * nq + r] = float.NegativeInfinity;
            }
        }
    }

    /// <summary>
    /// Subtracts slope·|i − j| from an Sᵀ tile (query i = i0 + lane, key j = j0 + row, positions within the sequence);
    /// padding lanes get finite values that are never written out.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void DistancePass<TOps, TVec>(float* st, int cols, int j0, int i0, float* iota, float slope) where TOps : ISimd<TVec> where TVec : struct
    {
        int w = TOps.Width, nq = 2 * w;
        TVec q0v = TOps.Add(TOps.Load(iota), TOps.Broadcast(i0));
        TVec q1v = TOps.Add(TOps.Load(iota + w), TOps.Broadcast(i0));
        TVec sv = TOps.Broadcast(slope);
        for (int c = 0; c < cols; c++)
        {
            TVec jj = TOps.Broadcast(j0 + c);
            float* sr = st + c * nq;
            TOps.Store(TOps.Sub(TOps.Load(sr), TOps.Mul(sv, TOps.Abs(TOps.Sub(q0v, jj)))), sr);
            TOps.Store(TOps.Sub(TOps.Load(sr + w), TOps.Mul(sv, TOps.Abs(TOps.Sub(q1v, jj)))), sr + w);
        }
    }

    /// <summary>Copies the (single, whole-row) P tile into the weights output, dividing by the softmax sum when given.</summary>
    private static void WriteWeights(in Args a, float* st, int nq, int h, int qRow, int rows, int kCol, int cols, float* l)
    {
        for (int r = 0; r < rows; r++)
        {
            float f = l == null ? 1f : (l[r] > 0f ? 1f / l[r] : 0f);
            float* wr = a.Weights + ((long)h * a.TotalQ + qRow + r) * a.TotalK + kCol;
            for (int j = 0; j < cols; j++) wr[j] = st[j * nq + r] * f;
        }
    }

    /// <summary>How one additive term w·tanh(q + k) is accumulated.</summary>
    private interface ITanhSum
    {
        static abstract TVec Term<TOps, TVec>(TVec k, TVec q, TVec w, TVec acc) where TOps : ISimd<TVec> where TVec : struct;
    }

    /// <summary>Operands are e^{2k}, e^{2q} and −2w: tanh(q+k) = 1 − 2/(1 + e^{2k}e^{2q}); the constant Σw is added at the end. The reciprocal is the hardware estimate plus a Newton step.</summary>
    private struct FastTanhSum : ITanhSum
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TVec Term<TOps, TVec>(TVec k, TVec q, TVec w, TVec acc) where TOps : ISimd<TVec> where TVec : struct
            => TOps.Fma(w, TOps.Reciprocal(TOps.Fma(k, q, TOps.Broadcast(1f))), acc);
    }

    /// <summary>Operands are k, q and w: w·tanh(q + k) evaluated directly (any magnitude).</summary>
    private struct DirectTanhSum : ITanhSum
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TVec Term<TOps, TVec>(TVec k, TVec q, TVec w, TVec acc) where TOps : ISimd<TVec> where TVec : struct
            => TOps.Fma(w, VecMath.Tanh<TOps, TVec>(TOps.Add(k, q)), acc);
    }

    /// <summary>
    /// Additive Sᵀ rows for one packed key block ([d][mr], <paramref name="kr"/> real keys) against the query tile:
    /// four keys × two vectors of queries at a time, d-major, so the d products stay in registers.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AdditiveBlock<TOps, TVec, TSum>(float* kb, int mr, int kr, float* qt, int nq, int d, float* wv, float wsum, float* s)
        where TOps : ISimd<TVec> where TVec : struct where TSum : ITanhSum
    {
        int w = TOps.Width;
        TVec ws = TOps.Broadcast(wsum);
        for (int i0 = 0; i0 < kr; i0 += 4)
        {
            // rows past the block's real keys repeat row i0 and are not stored
            int i1 = i0 + 1 < kr ? i0 + 1 : i0, i2 = i0 + 2 < kr ? i0 + 2 : i0, i3 = i0 + 3 < kr ? i0 + 3 : i0;
            TVec a00 = TOps.Zero, a01 = TOps.Zero, a10 = TOps.Zero, a11 = TOps.Zero;
            TVec a20 = TOps.Zero, a21 = TOps.Zero, a30 = TOps.Zero, a31 = TOps.Zero;
            float* kc = kb;
            float* qc = qt;
            for (int dd = 0; dd < d; dd++)
            {
                TVec e0 = TOps.Load(qc), e1 = TOps.Load(qc + w);
                TVec wd = TOps.BroadcastFrom(wv + dd);
                TVec x = TOps.BroadcastFrom(kc + i0);
                a00 = TSum.Term<TOps, TVec>(x, e0, wd, a00); a01 = TSum.Term<TOps, TVec>(x, e1, wd, a01);
                x = TOps.BroadcastFrom(kc + i1);
                a10 = TSum.Term<TOps, TVec>(x, e0, wd, a10); a11 = TSum.Term<TOps, TVec>(x, e1, wd, a11);
                x = TOps.BroadcastFrom(kc + i2);
                a20 = TSum.Term<TOps, TVec>(x, e0, wd, a20); a21 = TSum.Term<TOps, TVec>(x, e1, wd, a21);
                x = TOps.BroadcastFrom(kc + i3);
                a30 = TSum.Term<TOps, TVec>(x, e0, wd, a30); a31 = TSum.Term<TOps, TVec>(x, e1, wd, a31);
                kc += mr;
                qc += nq;
            }
            float* sr = s + i0 * nq;
            TOps.Store(TOps.Add(a00, ws), sr); TOps.Store(TOps.Add(a01, ws), sr + w);
            if (i0 + 1 < kr) { TOps.Store(TOps.Add(a10, ws), sr + nq); TOps.Store(TOps.Add(a11, ws), sr + nq + w); }
            if (i0 + 2 < kr) { TOps.Store(TOps.Add(a20, ws), sr + 2 * nq); TOps.Store(TOps.Add(a21, ws), sr + 2 * nq + w); }
            if (i0 + 3 < kr) { TOps.Store(TOps.Add(a30, ws), sr + 3 * nq); TOps.Store(TOps.Add(a31, ws), sr + 3 * nq + w); }
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
