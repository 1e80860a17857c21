using FastAttn.Composition;
using FastAttn.Kernels;
using FastAttn.Threading;

namespace FastAttn.Layers;

/// <summary>
/// Multi-head attention like PyTorch's <c>nn.MultiheadAttention</c> (batch-first, no dropout): Q/K/V input projections
/// (one packed <c>[3·dModel, dModel]</c> <c>in_proj_weight</c>, or separate <c>q/k/v_proj_weight</c> with key and value
/// widths <c>kdim</c>/<c>vdim</c>), optional biases, the fused attention kernel, and the output projection. Self-attention
/// runs as a block (one GEMM for all three projections); cross-attention (queries from one sequence, keys and values from
/// another) through <see cref="ForwardCross"/>, which projects each from its own segment of the same packed weight (no
/// second copy). Immutable; the output projection can fuse a residual add. A self-attention sequence of one token under
/// softmax over dot-product scores (no distance or relative bias, no explicit mask) outputs exactly out_proj(v) when its
/// score is finite for sure — the one key's weight is 1 — and skips q, k and the score when every sequence of the call
/// has one token; alone or packed with others, the bits are the same.
/// </summary>
public sealed class MultiHeadAttention : Block, IDisposable
{
    // kdim = vdim = dModel: one projection packed in three segments (q, k, v), each on a panel boundary.
    // Otherwise three separate projections.
    private readonly Linear? _inProj, _qProj, _kProj, _vProj;
    private readonly Linear _outProj;
    private readonly AttentionSettings _settings;
    private readonly Rope? _rope;
    private readonly IsaPath _isa = Isa.Current;
    // one-key sequences (OneKeyBounds): ‖W_q‖_F·‖x‖ + ‖b_q‖ bounds ‖q‖ for input row x (likewise k), so a row whose
    // bound keeps |scale·q_h·k_h| far from overflow has a finite score in every head
    private readonly bool _oneKey;
    private readonly double _qWeightNorm, _qBiasNorm, _kWeightNorm, _kBiasNorm, _scoreScale;

    /// <summary>Model width (embed_dim).</summary>
    public int DModel { get; }
    /// <summary>Key input width (kdim).</summary>
    public int KeyWidth { get; }
    /// <summary>Value input width (vdim).</summary>
    public int ValueWidth { get; }
    /// <summary>Heads.</summary>
    public int Heads { get; }
    /// <summary>Head width.</summary>
    public int HeadDim => DModel / Heads;
    /// <summary>Bytes of the projections' weights as stored.</summary>
    public long WeightBytes => (_inProj?.WeightBytes ?? 0) + (_qProj?.WeightBytes ?? 0) + (_kProj?.WeightBytes ?? 0) + (_vProj?.WeightBytes ?? 0) + _outProj.WeightBytes;
    /// <summary>How the input projections are stored and computed.</summary>
    public Kernels.Precision InputProjectionPrecision => (_inProj ?? _qProj)!.Precision;
    /// <summary>How the output projection is stored and computed.</summary>
    public Kernels.Precision OutputProjectionPrecision => _outProj.Precision;
    /// <summary>The score, normaliser and mask settings.</summary>
    public AttentionSettings Settings => _settings;
    /// <inheritdoc/>
    public override int InputWidth => DModel;
    /// <inheritdoc/>
    public override int OutputWidth => DModel;

    /// <summary>Builds the layer from PyTorch-layout weights with a packed <c>in_proj_weight</c> <c>[3·dModel, dModel]</c>.</summary>
    /// <exception cref="ArgumentException">Shapes do not match, heads does not divide dModel, or the settings do not fit.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is below 1.</exception>
    public MultiHeadAttention(int dModel, int heads, ReadOnlySpan<float> inProjWeight, ReadOnlySpan<float> inProjBias,
        ReadOnlySpan<float> outProjWeight, ReadOnlySpan<float> outProjBias, AttentionSettings? settings = null, Rope? rope = null)
        : this(dModel, heads, inProjWeight, inProjBias, outProjWeight, outProjBias, settings, rope, Precision.F32, Precision.F32) { }

    /// <summary>As above, with the input and output projections stored and computed in the given precisions (attention itself stays FP32).</summary>
    /// <exception cref="ArgumentException">Shapes do not match, heads does not divide dModel, or the settings do not fit.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is below 1, or a precision is unknown.</exception>
    public MultiHeadAttention(int dModel, int heads, ReadOnlySpan<float> inProjWeight, ReadOnlySpan<float> inProjBias,
        ReadOnlySpan<float> outProjWeight, ReadOnlySpan<float> outProjBias, AttentionSettings? settings, Rope? rope, Precision inProj, Precision outProj)
    {
        Check(dModel, heads, settings, rope);
        DModel = dModel; Heads = heads; KeyWidth = dModel; ValueWidth = dModel;
        _settings = settings ?? new AttentionSettings();
        _rope = rope;
        ThrowHelper.ExactLength(inProjWeight.Length, 3L * dModel * dModel, nameof(inProjWeight), $"[3*dModel, dModel] = [{3 * dModel}, {dModel}]");
        if (!inProjBias.IsEmpty) ThrowHelper.ExactLength(inProjBias.Length, 3L * dModel, nameof(inProjBias), $"3*dModel = {3 * dModel}");
        ThrowHelper.ExactLength(outProjWeight.Length, (long)dModel * dModel, nameof(outProjWeight), $"[dModel, dModel] = [{dModel}, {dModel}]");
        if (!outProjBias.IsEmpty) ThrowHelper.ExactLength(outProjBias.Length, dModel, nameof(outProjBias), "dModel");
        _inProj = new Linear(inProjWeight, 3 * dModel, dModel, inProjBias, Activation.None, [dModel, dModel, dModel], inProj);
        int dd = dModel * dModel;
        (_oneKey, _qWeightNorm, _qBiasNorm, _kWeightNorm, _kBiasNorm, _scoreScale) = OneKeyBounds(inProjWeight[..dd], inProjWeight.Slice(dd, dd), inProjBias, dModel, heads, _settings);
        try { _outProj = new Linear(outProjWeight, dModel, dModel, outProjBias, Activation.None, outProj); }
        catch { _inProj.Dispose(); throw; }
    }

    /// <summary>
    /// Builds the layer from separate projections like PyTorch with <c>kdim</c>/<c>vdim</c>: <c>q_proj_weight</c>
    /// <c>[dModel, dModel]</c>, <c>k_proj_weight</c> <c>[dModel, keyWidth]</c>, <c>v_proj_weight</c>
    /// <c>[dModel, valueWidth]</c>, an optional packed <c>in_proj_bias</c> <c>[3·dModel]</c>, and the output projection.
    /// When keyWidth = valueWidth = dModel the three are packed into one projection for self-attention.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes do not match, heads does not divide dModel, or the settings do not fit.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is below 1.</exception>
    public MultiHeadAttention(int dModel, int heads, ReadOnlySpan<float> qProjWeight, ReadOnlySpan<float> kProjWeight, ReadOnlySpan<float> vProjWeight,
        ReadOnlySpan<float> inProjBias, ReadOnlySpan<float> outProjWeight, ReadOnlySpan<float> outProjBias, int keyWidth = 0, int valueWidth = 0,
        AttentionSettings? settings = null, Rope? rope = null)
        : this(dModel, heads, qProjWeight, kProjWeight, vProjWeight, inProjBias, outProjWeight, outProjBias, keyWidth, valueWidth, settings, rope, Precision.F32, Precision.F32) { }

    /// <summary>As above, with the input projections and the output projection stored and computed in the given precisions (attention itself stays FP32).</summary>
    /// <exception cref="ArgumentException">Shapes do not match, heads does not divide dModel, or the settings do not fit.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is below 1, or a precision is unknown.</exception>
    public MultiHeadAttention(int dModel, int heads, ReadOnlySpan<float> qProjWeight, ReadOnlySpan<float> kProjWeight, ReadOnlySpan<float> vProjWeight,
        ReadOnlySpan<float> inProjBias, ReadOnlySpan<float> outProjWeight, ReadOnlySpan<float> outProjBias, int keyWidth, int valueWidth,
        AttentionSettings? settings, Rope? rope, Precision inProj, Precision outProj)
    {
        Check(dModel, heads, settings, rope);
        keyWidth = keyWidth == 0 ? dModel : keyWidth;
        valueWidth = valueWidth == 0 ? dModel : valueWidth;
        ThrowHelper.Positive(keyWidth, nameof(keyWidth));
        ThrowHelper.Positive(valueWidth, nameof(valueWidth));
        DModel = dModel; Heads = heads; KeyWidth = keyWidth; ValueWidth = valueWidth;
        _settings = settings ?? new AttentionSettings();
        _rope = rope;
        ThrowHelper.ExactLength(qProjWeight.Length, (long)dModel * dModel, nameof(qProjWeight), $"[dModel, dModel] = [{dModel}, {dModel}]");
        ThrowHelper.ExactLength(kProjWeight.Length, (long)dModel * keyWidth, nameof(kProjWeight), $"[dModel, keyWidth] = [{dModel}, {keyWidth}]");
        ThrowHelper.ExactLength(vProjWeight.Length, (long)dModel * valueWidth, nameof(vProjWeight), $"[dModel, valueWidth] = [{dModel}, {valueWidth}]");
        if (!inProjBias.IsEmpty) ThrowHelper.ExactLength(inProjBias.Length, 3L * dModel, nameof(inProjBias), $"3*dModel = {3 * dModel}");
        ThrowHelper.ExactLength(outProjWeight.Length, (long)dModel * dModel, nameof(outProjWeight), $"[dModel, dModel] = [{dModel}, {dModel}]");
        if (!outProjBias.IsEmpty) ThrowHelper.ExactLength(outProjBias.Length, dModel, nameof(outProjBias), "dModel");
        if (keyWidth == dModel && valueWidth == dModel)
        {
            // one packed projection (a transient copy to lay the three side by side; only the packed panels are kept)
            var packed = new float[3 * dModel * dModel];
            qProjWeight.CopyTo(packed);
            kProjWeight.CopyTo(packed.AsSpan(dModel * dModel));
            vProjWeight.CopyTo(packed.AsSpan(2 * dModel * dModel));
            _inProj = new Linear(packed, 3 * dModel, dModel, inProjBias, Activation.None, [dModel, dModel, dModel], inProj);
            (_oneKey, _qWeightNorm, _qBiasNorm, _kWeightNorm, _kBiasNorm, _scoreScale) = OneKeyBounds(qProjWeight, kProjWeight, inProjBias, dModel, heads, _settings);
        }
        else
        {
            int e = dModel;
            _qProj = new Linear(qProjWeight, e, e, inProjBias.IsEmpty ? default : inProjBias.Slice(0, e), Activation.None, inProj);
            _kProj = new Linear(kProjWeight, e, keyWidth, inProjBias.IsEmpty ? default : inProjBias.Slice(e, e), Activation.None, inProj);
            _vProj = new Linear(vProjWeight, e, valueWidth, inProjBias.IsEmpty ? default : inProjBias.Slice(2 * e, e), Activation.None, inProj);
        }
        _outProj = new Linear(outProjWeight, dModel, dModel, outProjBias, Activation.None, outProj);
    }

    /// <summary>
    /// Whether the settings let a one-token sequence skip its scores (softmax over dot-product scores with no distance or
    /// relative bias: the one key's weight is exactly 1 whenever its score is finite), and the norms that bound the score.
    /// </summary>
    private static (bool, double, double, double, double, double) OneKeyBounds(ReadOnlySpan<float> qWeight, ReadOnlySpan<float> kWeight,
        ReadOnlySpan<float> bias, int dModel, int heads, AttentionSettings s)
    {
        bool on = s.Score == ScoreKind.Dot && s.Normalizer == Normalizer.Softmax && s.DistanceSlopes == null && s.RelativeBias == null;
        double qb = bias.IsEmpty ? 0 : Norm(bias[..dModel]), kb = bias.IsEmpty ? 0 : Norm(bias.Slice(dModel, dModel));
        return (on, Norm(qWeight), qb, Norm(kWeight), kb, Math.Abs(s.Scale ?? 1.0 / Math.Sqrt(dModel / heads)));

        static double Norm(ReadOnlySpan<float> x)
        {
            double sum = 0;
            foreach (float v in x) sum += (double)v * v;
            return Math.Sqrt(sum);      // NaN or ∞ when a value is: no row then passes OneKeyScoreFinite
        }
    }

    /// <summary>
    /// The largest |score| (and |q|, |k| element) the one-key rule accepts from the bounds: far below float's 3.4·10³⁸ (and
    /// the softmax's base-2 form, s·log₂e), so rounding in the projections, the scale and a soft cap cannot reach overflow.
    /// </summary>
    private const double OneKeyScoreLimit = 1e30;

    /// <summary>
    /// True when every head's score of input row <paramref name="x"/> with itself is finite for sure: by Cauchy–Schwarz
    /// |q_h·k_h| ≤ ‖q‖·‖k‖ ≤ (‖W_q‖_F‖x‖ + ‖b_q‖)(‖W_k‖_F‖x‖ + ‖b_k‖). False for a non-finite row (NaN compares false).
    /// </summary>
    private bool OneKeyScoreFinite(ReadOnlySpan<float> x)
    {
        double n = Math.Sqrt(System.Numerics.Tensors.TensorPrimitives.SumOfSquares(x)); // float overflow gives ∞: rejected
        double bq = _qWeightNorm * n + _qBiasNorm, bk = _kWeightNorm * n + _kBiasNorm;
        return bq * Math.Max(1, _scoreScale) <= OneKeyScoreLimit && bk <= OneKeyScoreLimit && bq * bk * _scoreScale <= OneKeyScoreLimit;
    }

    /// <summary>
    /// Whether this call's sequences that have one token may take their heads' output straight from v: the layer's
    /// settings allow it (<see cref="OneKeyBounds"/>) and no explicit mask could hide the key.
    /// </summary>
    private bool OneKeyCall(ReadOnlySpan<bool> boolMask, ReadOnlySpan<float> floatMask) => _oneKey && boolMask.IsEmpty && floatMask.IsEmpty;

    /// <summary>Whether sequence <paramref name="s"/>'s one key is visible (not cut by the key padding lengths).</summary>
    private static bool KeyVisible(Batch batch, int s) => batch.KeyValidLengths.IsEmpty || batch.KeyValidLengths[s] >= 1;

    /// <summary>Calls on this thread whose sequences all had one token and skipped q, k and the scores (tests check the path ran).</summary>
    [ThreadStatic] internal static int OneKeyRuns;

    private static void Check(int dModel, int heads, AttentionSettings? settings, Rope? rope)
    {
        ThrowHelper.Positive(dModel, nameof(dModel));
        ThrowHelper.Positive(heads, nameof(heads));
        if (dModel % heads != 0) ThrowHelper.Argument(nameof(heads), $"'heads' = {heads} must divide dModel = {dModel}.");
        if (settings != null)
        {
            if ((uint)settings.Score > (uint)ScoreKind.Additive) ThrowHelper.Argument(nameof(settings), "unknown score kind.");
            if ((uint)settings.Normalizer > (uint)Normalizer.Sigmoid) ThrowHelper.Argument(nameof(settings), "unknown normalizer.");
            if ((uint)settings.Causal > (uint)CausalMode.BottomRight) ThrowHelper.Argument(nameof(settings), "unknown causal mode.");
            if (settings.Window < 0) ThrowHelper.Argument(nameof(settings), "Window must be 0 (none) or a positive distance.");
            if (settings.Scale is float sc && !float.IsFinite(sc)) ThrowHelper.Argument(nameof(settings), "Scale must be finite.");
            if (!(settings.SoftCap >= 0) || float.IsInfinity(settings.SoftCap)) ThrowHelper.Argument(nameof(settings), "SoftCap must be finite and ≥ 0.");
            if (settings.Score == ScoreKind.Additive && settings.AdditiveWeights?.Length != dModel)
                ThrowHelper.Argument(nameof(settings), $"additive scores need AdditiveWeights of heads*headDim = {dModel} elements.");
            if (settings.DistanceSlopes is { } sl && (sl.Length != heads || sl.Any(x => !float.IsFinite(x))))
                ThrowHelper.Argument(nameof(settings), $"DistanceSlopes needs one finite slope per head ({heads}); it has {sl.Length}.");
            if (settings.RelativeBias is { } rb && (settings.RelativeBiasSpan is < 1 or > 1 << 20 || rb.Length != (long)heads * (2 * settings.RelativeBiasSpan - 1) || rb.Any(x => !float.IsFinite(x))))
                ThrowHelper.Argument(nameof(settings), $"RelativeBias needs heads*(2*RelativeBiasSpan-1) finite values ({heads}*(2*{settings.RelativeBiasSpan}-1)); it has {rb.Length}.");
        }
        if (rope != null && rope.HeadDim != dModel / heads) ThrowHelper.Argument(nameof(rope), $"RoPE head width {rope.HeadDim} differs from headDim {dModel / heads}.");
    }

    /// <summary>Columns of the packed q|k|v projection output (3·dModel, plus padding between segments).</summary>
    internal int QkvWidth => _inProj?.Weight.PackedOutFeatures ?? 3 * DModel;

    private long AttnScratch(int maxKeys) => Attention.ScratchSize(_isa, HeadDim, HeadDim, maxKeys);

    // scratch sizes are asked on every checked call: no allocation here
    private long ProjScratch(int rows)
    {
        long m = _outProj.ScratchSize(rows);
        if (_inProj != null) m = Math.Max(m, _inProj.ScratchSize(rows));
        if (_qProj != null) m = Math.Max(m, Math.Max(_qProj.ScratchSize(rows), Math.Max(_kProj!.ScratchSize(rows), _vProj!.ScratchSize(rows))));
        return m;
    }

    /// <inheritdoc/>
    public override long ScratchSize(int maxTokens) => (long)maxTokens * (QkvWidth + DModel) + Math.Max(AttnScratch(maxTokens), ProjScratch(maxTokens));

    /// <inheritdoc/>
    public override long WorkerScratchSize(int maxTokens)
    {
        long m = Math.Max(AttnScratch(maxTokens), _outProj.WorkerScratchSize(maxTokens));
        if (_inProj != null) m = Math.Max(m, _inProj.WorkerScratchSize(maxTokens));
        if (_qProj != null) m = Math.Max(m, Math.Max(_qProj.WorkerScratchSize(maxTokens), Math.Max(_kProj!.WorkerScratchSize(maxTokens), _vProj!.WorkerScratchSize(maxTokens))));
        return m;
    }

    /// <summary>Scratch floats for <see cref="ForwardCross"/> with up to the given query and key tokens.</summary>
    public long CrossScratchSize(int maxQueryTokens, int maxKeyTokens) =>
        ((long)maxQueryTokens * 2 + (long)maxKeyTokens * 2) * DModel
        + Math.Max(AttnScratch(maxKeyTokens), ProjScratch(Math.Max(maxQueryTokens, maxKeyTokens)));

    /// <inheritdoc/>
    public override void Validate(Batch batch)
    {
        if (KeyWidth != DModel || ValueWidth != DModel)
            ThrowHelper.Argument("input", $"self-attention needs kdim = vdim = dModel = {DModel}; this layer has kdim {KeyWidth}, vdim {ValueWidth} (use ForwardCross).");
        _rope?.CheckPositions(batch.LongestSequence);
    }

    /// <inheritdoc/>
    protected internal override void ForwardCore(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
        => SelfCore(input, output, batch, scratch, default, default, default);

    /// <summary>
    /// Self-attention over input with optional masks; output = out_proj(attention) [+ residual]. Everything is checked
    /// before anything is written.
    /// </summary>
    /// <exception cref="ArgumentException">A span does not match its shape, the lengths do not add up, or a mask has the wrong size.</exception>
    public void Forward(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch, ReadOnlySpan<float> residual,
        ReadOnlySpan<bool> boolMask = default, ReadOnlySpan<float> floatMask = default)
    {
        batch.Check();
        Validate(batch);
        int t = batch.Tokens, d = DModel;
        ThrowHelper.Length(input.Length, (long)t * d, nameof(input), $"tokens*dModel = {t}*{d}");
        ThrowHelper.Length(output.Length, (long)t * d, nameof(output), $"tokens*dModel = {t}*{d}");
        ThrowHelper.Length(scratch.Length, ScratchSize(t), nameof(scratch), $"ScratchSize({t})");
        if (!residual.IsEmpty) ThrowHelper.Length(residual.Length, (long)t * d, nameof(residual), $"tokens*dModel = {t}*{d}");
        ReadOnlySpan<float> o = output;
        ThrowHelper.NoOverlap(o, input, nameof(output), nameof(input));
        ThrowHelper.NoOverlap(o, residual, nameof(output), nameof(residual));
        ThrowHelper.NoOverlap<float>(scratch, input, nameof(scratch), nameof(input));
        ThrowHelper.NoOverlap(scratch, o, nameof(scratch), nameof(output));
        var call = Call(batch.SequenceLengths, default, batch.KeyValidLengths, boolMask, floatMask);
        Attention.Validate(_isa, t, t, scratch[..(t * d)], scratch, call);
        batch.Pool?.EnsureWorkerScratch(WorkerScratchSize(t));
        SelfCore(input, output, batch, scratch, residual, boolMask, floatMask);
    }

    /// <summary>The unchecked self-attention core (blocks composed of this layer call it with a residual).</summary>
    internal void SelfCore(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch, ReadOnlySpan<float> residual,
        ReadOnlySpan<bool> boolMask, ReadOnlySpan<float> floatMask)
    {
        int tokens = batch.Tokens, p = QkvWidth;
        AttendCore(input, batch, scratch, boolMask, floatMask);
        _outProj.ForwardCore(scratch.Slice(tokens * p, tokens * DModel), tokens, output, scratch.Slice(tokens * (p + DModel)), residual, batch.Pool);
    }

    /// <summary>The output projection (the row-local part after the attention itself).</summary>
    internal Linear OutProj => _outProj;

    /// <summary>
    /// Self-attention without the output projection: the heads' outputs <c>[tokens, dModel]</c> are left in
    /// scratch[tokens·QkvWidth, tokens·(QkvWidth + dModel)); the projections' q|k|v before them are dead after the call.
    /// </summary>
    internal void AttendCore(ReadOnlySpan<float> input, Batch batch, Span<float> scratch, ReadOnlySpan<bool> boolMask, ReadOnlySpan<float> floatMask)
    {
        int d = DModel, tokens = batch.Tokens, p = QkvWidth;
        Span<float> qkv = scratch.Slice(0, tokens * p);
        Span<float> attn = scratch.Slice(tokens * p, tokens * d);
        Span<float> work = scratch.Slice(tokens * (p + d));
        var pool = batch.Pool;
        bool oneKey = OneKeyCall(boolMask, floatMask);
        if (oneKey && tokens == batch.Count && OneTokenRowsFinite(input, batch))
        {
            // every sequence is one token: softmax over one finite score is exactly 1, so each head's output is its v
            // (exactly what the kernel's output is replaced by below in a batch mixing lengths); q and k are not needed
            OneKeyRuns++;
            _inProj!.ForwardSegmentCore(input, tokens, 2, attn, work, pool);
            return;
        }
        Span<int> edges = stackalloc int[pool == null ? 1 : pool.Threads + 1];
        bool byHeads = SplitByHeads(batch, tokens, edges);
        if (byHeads) { _inProj!.ForwardHeadSharesCore(input, tokens, qkv, work, pool!, edges); HeadSplitRuns++; }
        else _inProj!.ForwardCore(input, tokens, qkv, work, default, pool);
        int kCol = _inProj.Weight.SegmentColumn(1), vCol = _inProj.Weight.SegmentColumn(2);
        if (_rope != null)
        {
            _rope.ApplyCore(qkv, tokens, p, 0, Heads, batch.SequenceLengths);
            _rope.ApplyCore(qkv, tokens, p, kCol, Heads, batch.SequenceLengths);
        }
        var call = Call(batch.SequenceLengths, default, batch.KeyValidLengths, boolMask, floatMask);
        call.QStride = p; call.KStride = p; call.VStride = p;
        call.AffineGroups = byHeads;
        Attention.ForwardCore(_isa, qkv, tokens, qkv.Slice(kCol), qkv.Slice(vCol), tokens, attn, work, call, pool);
        if (oneKey && batch.Count > 1)
        {
            // one-token sequences among longer ones get exactly v, as they would alone (packing keeps a request's bits)
            for (int s = 0, r = 0; s < batch.Count; r += batch.Length(s), s++)
                if (batch.Length(s) == 1 && KeyVisible(batch, s) && OneKeyScoreFinite(input.Slice(r * d, d)))
                    qkv.Slice(r * p + vCol, d).CopyTo(attn.Slice(r * d, d));
        }
    }

    /// <summary>Whether every row (each a one-token sequence) has its key visible and a finite score for sure.</summary>
    private bool OneTokenRowsFinite(ReadOnlySpan<float> input, Batch batch)
    {
        int d = DModel;
        for (int r = 0; r < batch.Tokens; r++)
            if (!KeyVisible(batch, r) || !OneKeyScoreFinite(input.Slice(r * d, d))) return false;
        return true;
    }

    /// <summary>
    /// Whether a layer may run this attention's rows apart on its threads (<see cref="ProjectRowsCore"/>, then
    /// <see cref="AttendRowsCore"/>): one sequence, one packed q|k|v product of at most <see cref="RowsProjectionBytes"/>,
    /// no RoPE.
    /// </summary>
    internal bool CanAttendRows(int sequences) => _inProj != null && _rope == null && sequences <= 1 && _inProj.WeightBytes <= RowsProjectionBytes;

    /// <summary>
    /// The largest q|k|v weight (as stored) a layer runs by rows on several threads: each thread then reads all of it
    /// instead of its share of the panels. Measured on 2 threads of an AMD EPYC (Zen 5), rows against the split product and
    /// attention, alternated in one process: (96, 3 × 32, 192) at 128 tokens 92.5–105 against 98–115 µs, (96, 6 × 16, 384)
    /// at 64 tokens 71–84 against 88–92, (96, 1 × 96, 192) at 512 1.02–1.03×, (320, 10 × 32, 1280) at 128 1.04–1.05×,
    /// (320, 5 × 64, 640) causal at 200 1.02×, (384, 12 × 32, 1536) at 128 1.01× (1.7 MB), (96, 2 × 48, 384) at 200 0.99–1.00×;
    /// (512, 16 × 32, 1024) causal at 128 (3 MB) 0.98×.
    /// </summary>
    internal const long RowsProjectionBytes = 2 << 20;

    /// <summary>Scratch floats one thread needs for <see cref="ProjectRowsCore"/> over up to <paramref name="rows"/> rows and <see cref="AttendRowsCore"/> over <paramref name="tokens"/> keys.</summary>
    internal long RowsScratchSize(int rows, int tokens) =>
        Math.Max(_inProj!.ScratchSize(Math.Max(rows, 1)), (long)tokens * (QkvWidth - _inProj.Weight.SegmentColumn(1)) + Attention.ScratchSize(_isa, Call(default, default, default, default, default), tokens));

    /// <summary>Rows [r0, r1) of the q|k|v product into their rows of <paramref name="qkv"/> (<c>[tokens, QkvWidth]</c>), on the calling thread.</summary>
    internal void ProjectRowsCore(ReadOnlySpan<float> input, int r0, int r1, Span<float> qkv, Span<float> scratch)
    {
        int d = DModel, p = QkvWidth, m = r1 - r0;
        if (m > 0) _inProj!.ForwardCore(input.Slice(r0 * d, m * d), m, qkv.Slice(r0 * p, m * p), scratch, default, null);
    }

    /// <summary>
    /// The heads' outputs for query rows [r0, r1) into their rows of <paramref name="attn"/> (<c>[tokens, dModel]</c>), every
    /// head, on the calling thread, from a q|k|v product all of whose rows are done; <paramref name="valid"/> keys (−1: all).
    /// </summary>
    internal void AttendRowsCore(ReadOnlySpan<float> qkv, int tokens, int valid, Span<float> attn, Span<float> scratch, int r0, int r1)
    {
        int p = QkvWidth;
        int kCol = _inProj!.Weight.SegmentColumn(1), vCol = _inProj.Weight.SegmentColumn(2);
        Span<int> kv = stackalloc int[1];
        kv[0] = valid;
        var call = Call(default, default, valid < 0 ? default : kv, default, default);
        // every row's k|v copied first into this thread's scratch: the other threads' rows come over in one sequential
        // stream instead of the packing's strided reads from another core's cache
        int kvw = p - kCol;
        Span<float> kvCopy = scratch.Slice(0, tokens * kvw);
        // only the rows the attention reads: the valid keys and, under a causal mask with dot-product scores, none past
        // these queries' last row (a layer's keys are its queries: no corner shift); additive scores choose their tanh form
        // from every valid key first, so they get them all
        int copied = valid < 0 ? tokens : Math.Min(valid, tokens);
        if (_settings.Causal != CausalMode.None && _settings.Score != ScoreKind.Additive) copied = Math.Min(copied, r1);
        for (int r = 0; r < copied; r++) qkv.Slice(r * p + kCol, kvw).CopyTo(kvCopy.Slice(r * kvw, kvw));
        call.QStride = p; call.KStride = kvw; call.VStride = kvw;
        Attention.ForwardRowsCore(_isa, qkv, tokens, kvCopy, kvCopy.Slice(vCol - kCol), attn, scratch.Slice(tokens * kvw), call, r0, r1);
    }

    /// <summary>Calls on this thread that split their q|k|v product by heads (tests check the path ran).</summary>
    [ThreadStatic] internal static int HeadSplitRuns;

    /// <summary>
    /// Whether this call's q|k|v product goes over the pool by heads — thread w projecting the q, k and v columns of the heads
    /// it then attends to, so the attention reads rows its own core wrote — and if so thread w's panels in each segment,
    /// [edges[w], edges[w + 1]). Only where the attention splits by heads alone (one sequence, enough heads for the
    /// threads: see <see cref="Attention.SplitsByGroups"/>), the product would be split anyway, the thread boundaries fall on
    /// panel boundaries, and nothing rewrites q or k in between (no RoPE). Measured on 2 threads of an AMD EPYC (Zen 5):
    /// the split product reads its rows from the other core's cache in the attention otherwise — a (768, 12 heads) layer's
    /// attention at 128 tokens ran 1.42× faster on two threads than on one, against 1.74× on inputs no thread had written.
    /// Same bits either way (every output element is computed as on one thread).
    /// </summary>
    private bool SplitByHeads(Batch batch, int tokens, Span<int> edges)
    {
        var pool = batch.Pool;
        if (pool == null || pool.Threads < 2 || _inProj == null || _rope != null || _inProj.Precision == Precision.Int8) return false;
        // one sequence, and heads that share out evenly: with 5 heads on 2 threads the product's 2 : 3 split cost more than
        // the local reads saved ((320, 5 × 64) causal layer at 200 tokens: 1.04× slower)
        if (batch.SequenceLengths.Length > 1 || Heads % pool.Threads != 0) return false;
        var w = _inProj.Weight;
        int nr = w.PanelWidth, dh = HeadDim, threads = pool.Threads;
        if (w.Segments != 3 || w.SegmentColumn(1) % nr != 0) return false;
        int segPanels = w.SegmentColumn(1) / nr;
        if (w.SegmentColumn(2) != 2 * w.SegmentColumn(1)) return false;
        int valid = batch.KeyValidLengths.IsEmpty ? tokens : Math.Min(tokens, batch.KeyValidLengths[0]);
        if (!Attention.SplitsByGroups(_isa, Heads, Heads, dh, dh, tokens, valid, _settings.Window, _settings.Causal, threads)) return false;
        int panels = 3 * segPanels, rowTiles = (tokens + GemmCore.TileRows(_isa) - 1) / GemmCore.TileRows(_isa);
        if (!GemmCore.PlanSplit(threads, 2.0 * tokens * 3 * DModel * DModel, w.SizeInBytes, panels, rowTiles, out _, out _)) return false;
        for (int t = 0; t <= threads; t++)
        {
            // the pool's affine block of the attention's items (one per head): heads [t·H/T, (t+1)·H/T)
            long col = (long)t * Heads / threads * dh;
            if (t == threads) edges[t] = segPanels;
            else if (col % nr != 0) return false;
            else edges[t] = (int)(col / nr);
        }
        return true;
    }

    /// <summary>
    /// Cross-attention: queries from <paramref name="query"/> <c>[queryTokens, dModel]</c>, keys and values from
    /// <paramref name="key"/> <c>[keyTokens, kdim]</c> and <paramref name="value"/> <c>[keyTokens, vdim]</c>; output
    /// <c>[queryTokens, dModel]</c>. For packed batches give both length lists (sequence s of the queries attends
    /// to sequence s of the keys). RoPE, when set, rotates queries and keys by their own positions.
    /// </summary>
    /// <exception cref="ArgumentException">A span does not match its shape, lengths do not add up, scratch is short, or the output overlaps an input.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A token count is below 1.</exception>
    public void ForwardCross(ReadOnlySpan<float> query, int queryTokens, ReadOnlySpan<float> key, ReadOnlySpan<float> value, int keyTokens,
        Span<float> output, Span<float> scratch, ReadOnlySpan<int> queryLengths = default, ReadOnlySpan<int> keyLengths = default,
        ReadOnlySpan<int> keyValidLengths = default, ReadOnlySpan<bool> boolMask = default, ReadOnlySpan<float> floatMask = default,
        ReadOnlySpan<float> residual = default, WorkerPool? pool = null)
    {
        int d = DModel;
        ThrowHelper.Positive(queryTokens, nameof(queryTokens));
        ThrowHelper.Positive(keyTokens, nameof(keyTokens));
        ThrowHelper.Length(query.Length, (long)queryTokens * d, nameof(query), $"[queryTokens, dModel] = [{queryTokens}, {d}]");
        ThrowHelper.Length(key.Length, (long)keyTokens * KeyWidth, nameof(key), $"[keyTokens, kdim] = [{keyTokens}, {KeyWidth}]");
        ThrowHelper.Length(value.Length, (long)keyTokens * ValueWidth, nameof(value), $"[keyTokens, vdim] = [{keyTokens}, {ValueWidth}]");
        ThrowHelper.Length(output.Length, (long)queryTokens * d, nameof(output), $"[queryTokens, dModel] = [{queryTokens}, {d}]");
        if (!residual.IsEmpty) ThrowHelper.Length(residual.Length, (long)queryTokens * d, nameof(residual), $"[queryTokens, dModel] = [{queryTokens}, {d}]");
        if (queryLengths.IsEmpty != keyLengths.IsEmpty)
            ThrowHelper.Argument(nameof(keyLengths), "'queryLengths' and 'keyLengths' must be given together for a packed batch.");
        if (!queryLengths.IsEmpty && queryLengths.Length != keyLengths.Length)
            ThrowHelper.Argument(nameof(keyLengths), $"'keyLengths' has {keyLengths.Length} sequences; 'queryLengths' has {queryLengths.Length}.");
        ReadOnlySpan<float> o = output;
        ThrowHelper.NoOverlap(o, query, nameof(output), nameof(query));
        ThrowHelper.NoOverlap(o, key, nameof(output), nameof(key));
        ThrowHelper.NoOverlap(o, value, nameof(output), nameof(value));
        ThrowHelper.NoOverlap(o, residual, nameof(output), nameof(residual));
        ThrowHelper.NoOverlap(scratch, o, nameof(scratch), nameof(output));
        ThrowHelper.NoOverlap<float>(scratch, query, nameof(scratch), nameof(query));
        ThrowHelper.NoOverlap<float>(scratch, key, nameof(scratch), nameof(key));
        ThrowHelper.NoOverlap<float>(scratch, value, nameof(scratch), nameof(value));
        if (_rope != null)
        {
            int lq = queryTokens, lk = keyTokens;
            if (!queryLengths.IsEmpty) { lq = 0; foreach (int l in queryLengths) lq = Math.Max(lq, l); lk = 0; foreach (int l in keyLengths) lk = Math.Max(lk, l); }
            _rope.CheckPositions(Math.Max(lq, lk));
        }
        ThrowHelper.Length(scratch.Length, CrossScratchSize(queryTokens, keyTokens), nameof(scratch), $"CrossScratchSize({queryTokens}, {keyTokens})");
        Span<float> q = scratch.Slice(0, queryTokens * d);
        Span<float> k = scratch.Slice(queryTokens * d, keyTokens * d);
        Span<float> v = scratch.Slice((queryTokens + keyTokens) * d, keyTokens * d);
        Span<float> attn = scratch.Slice((queryTokens + 2 * keyTokens) * d, queryTokens * d);
        Span<float> work = scratch.Slice((2 * queryTokens + 2 * keyTokens) * d);
        // the attention kernel validates lengths and masks before anything is written to output
        var call = Call(queryLengths, keyLengths, keyValidLengths, boolMask, floatMask);
        Attention.Validate(_isa, queryTokens, keyTokens, attn, work, call);
        pool?.EnsureWorkerScratch(WorkerScratchSize(Math.Max(queryTokens, keyTokens)));
        if (_inProj != null)
        {
            // the packed projection's segments: q from the queries, k and v from the keys and values
            _inProj.ForwardSegmentCore(query, queryTokens, 0, q, work, pool);
            _inProj.ForwardSegmentCore(key, keyTokens, 1, k, work, pool);
            _inProj.ForwardSegmentCore(value, keyTokens, 2, v, work, pool);
        }
        else
        {
            _qProj!.ForwardCore(query, queryTokens, q, work, default, pool);
            _kProj!.ForwardCore(key, keyTokens, k, work, default, pool);
            _vProj!.ForwardCore(value, keyTokens, v, work, default, pool);
        }
        if (_rope != null)
        {
            _rope.ApplyCore(q, queryTokens, d, 0, Heads, queryLengths);
            _rope.ApplyCore(k, keyTokens, d, 0, Heads, keyLengths);
        }
        Attention.ForwardCore(_isa, q, queryTokens, k, v, keyTokens, attn, work, call, pool);
        _outProj.ForwardCore(attn, queryTokens, output, work, residual, pool);
    }

    private AttentionCall Call(ReadOnlySpan<int> queryLengths, ReadOnlySpan<int> keyLengths, ReadOnlySpan<int> keyValid,
        ReadOnlySpan<bool> boolMask, ReadOnlySpan<float> floatMask) => new()
    {
        Heads = Heads, HeadDim = HeadDim, Score = _settings.Score, Scale = _settings.Scale, SoftCap = _settings.SoftCap,
        Normalizer = _settings.Normalizer, SigmoidBias = _settings.SigmoidBias, Causal = _settings.Causal, Window = _settings.Window,
        AdditiveWeights = _settings.AdditiveWeights, DistanceSlopes = _settings.DistanceSlopes,
        RelativeBias = _settings.RelativeBias, RelativeBiasSpan = _settings.RelativeBias == null ? 0 : _settings.RelativeBiasSpan,
        SequenceLengths = queryLengths.Length > 1 || !keyLengths.IsEmpty ? queryLengths : default,
        KeySequenceLengths = keyLengths, KeyValidLengths = keyValid, BoolMask = boolMask, FloatMask = floatMask,
    };

    /// <inheritdoc/>
    public void Dispose()
    {
        _inProj?.Dispose(); _qProj?.Dispose(); _kProj?.Dispose(); _vProj?.Dispose(); _outProj.Dispose();
    }
}
