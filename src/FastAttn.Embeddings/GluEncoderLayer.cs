using System.Numerics.Tensors;
using FastAttn.Composition;
using FastAttn.Kernels;
using FastAttn.Layers;

namespace FastAttn.Embeddings;

/// <summary>
/// ModernBERT's settings beyond BERT's fields: which layers attend globally, the local layers' window (keys within
/// <see cref="Window"/> positions on either side), the two RoPE bases, which linear layers and norms carry a bias, and the
/// classification head (pooling of the sequence, activation, bias; a token head when the architecture says so).
/// </summary>
internal sealed record ModernBertSettings(bool[] GlobalLayers, int Window, double GlobalTheta, double LocalTheta, bool NormBias, bool AttentionBias,
    bool MlpBias, bool MeanPooling, Activation ClassifierActivation, bool ClassifierBias, bool TokenHead);

/// <summary>
/// An encoder layer with rotary attention and a gated (GLU) feed-forward: y = Wo'(act(Wi_in · n) ⊙ (Wi_gate · n)), the
/// two halves as two products with the activation fused into the first's epilogue. Pre-norm as ModernBERT
/// (<c>ModernBertEncoderLayer</c>): x₁ = x + Wo(attention(norm₁(x))), y = x₁ + GLU(norm₂(x₁)), the first layer without
/// norm₁; or post-norm as NomicBERT (<c>NomicBertBlock</c>, nomic-embed-text): x₁ = norm₁(x + Wo(attention(x))),
/// y = norm₂(x₁ + GLU(x₁)). The attention applies the layer's RoPE and, for ModernBERT's local layers, a sliding window
/// (the attention kernel's <see cref="AttentionOptions.Window"/>: the cost grows with the window, not the sequence).
/// </summary>
internal sealed unsafe class GluEncoderLayer : Block, IDisposable, IRowLocalTail
{
    private readonly LayerNorm? _norm1;
    private readonly MultiHeadAttention _attn;
    private readonly LayerNorm _norm2;
    private readonly Linear _wiInput, _wiGate, _wo;
    private readonly bool _postNorm;
    private readonly int _h, _ff;

    /// <param name="attention">The rotary self-attention (and its output projection).</param>
    /// <param name="norm1">Pre-norm: before the attention (null: none, ModernBERT's first layer); post-norm: after the attention's residual sum.</param>
    /// <param name="norm2">Pre-norm: before the feed-forward; post-norm: after its residual sum.</param>
    /// <param name="wiInput">The activated half (its activation in the epilogue).</param>
    /// <param name="wiGate">The other half, multiplied in.</param>
    /// <param name="wo">The feed-forward's output projection.</param>
    /// <param name="postNorm">Post-norm (NomicBERT) rather than pre-norm (ModernBERT).</param>
    public GluEncoderLayer(LayerNorm? norm1, MultiHeadAttention attention, LayerNorm norm2, Linear wiInput, Linear wiGate, Linear wo, bool postNorm)
    {
        if (postNorm && norm1 == null) throw new ArgumentNullException(nameof(norm1), "a post-norm layer has both norms.");
        _norm1 = norm1; _attn = attention; _norm2 = norm2; _wiInput = wiInput; _wiGate = wiGate; _wo = wo; _postNorm = postNorm;
        _h = attention.DModel; _ff = wiInput.OutFeatures;
        _rowLocalTail = attention.OutProj.WeightBytes + wiInput.WeightBytes + wiGate.WeightBytes + wo.WeightBytes <= EncoderBlock.RowLocalTailBytes;
    }

    /// <summary>
    /// True when the weights after the attention are small enough (as <see cref="EncoderBlock"/> decides) for the row-local
    /// tail: on several threads, each takes its share of the rows through the output projection, the norms and the GLU in
    /// one parallel region instead of five split products (measured 12 % of a 6-layer width-384 model at 128 tokens on 2 threads).
    /// </summary>
    private readonly bool _rowLocalTail;

    private bool UseRowLocalTail(int tokens, Threading.WorkerPool? pool) =>
        _rowLocalTail && pool != null && pool.Threads > 1 && tokens >= 2 * GemmCore.TileRows(_wo.Weight.Isa) * pool.Threads;

    /// <summary>One thread's scratch for a block of tail rows: normed rows, the GLU's two halves, the products' scratch.</summary>
    private long TailScratch(int maxTokens)
    {
        int rows = Math.Min(maxTokens, EncoderBlock.TailBlockRows);
        return (long)rows * _h + 2L * rows * _ff + Math.Max(Math.Max(_attn.OutProj.ScratchSize(rows), _wo.ScratchSize(rows)), Math.Max(_wiInput.ScratchSize(rows), _wiGate.ScratchSize(rows)));
    }

    public bool IsGlobal => _attn.Settings.Window == 0;
    public long WeightBytes => _attn.WeightBytes + _wiInput.WeightBytes + _wiGate.WeightBytes + _wo.WeightBytes + 4L * 2 * _h * (_norm1 != null ? 2 : 1);
    public override int InputWidth => _h;
    public override int OutputWidth => _h;

    // n [T, h] | x1 [T, h] | then either the attention's scratch, or input [T, ff] | gate [T, ff] | the products' scratch
    // (tail: the attention's q|k|v and heads' output, then the caller's tail scratch)
    public override long ScratchSize(int maxTokens)
    {
        long work = Math.Max(_attn.ScratchSize(maxTokens),
            2L * maxTokens * _ff + Math.Max(Math.Max(_wiInput.ScratchSize(maxTokens), _wiGate.ScratchSize(maxTokens)), _wo.ScratchSize(maxTokens)));
        if (_rowLocalTail) work = Math.Max(work, (long)maxTokens * (_attn.QkvWidth + _h) + TailScratch(maxTokens));
        return 2L * maxTokens * _h + work;
    }

    public override long WorkerScratchSize(int maxTokens)
    {
        long m = Math.Max(_attn.WorkerScratchSize(maxTokens),
            Math.Max(Math.Max(_wiInput.WorkerScratchSize(maxTokens), _wiGate.WorkerScratchSize(maxTokens)), _wo.WorkerScratchSize(maxTokens)));
        return _rowLocalTail ? Math.Max(m, TailScratch(maxTokens)) : m;
    }

    public override void Validate(Batch batch) => _attn.Validate(batch);

    protected internal override void ForwardCore(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
    {
        int t = batch.Tokens, h = _h;
        var pool = batch.Pool;
        Span<float> n = scratch.Slice(0, t * h), x1 = scratch.Slice(t * h, t * h), work = scratch.Slice(2 * t * h);
        ReadOnlySpan<float> a = input;
        if (!_postNorm && _norm1 != null) { _norm1.ForwardCore(input, t, n, pool); a = n; }
        if (UseRowLocalTail(t, pool))
        {
            _attn.AttendCore(a, batch, work, default, default);
            int p = _attn.QkvWidth;
            RowLocalTailJob.Run(this, pool!, input, output, x1, work.Slice(t * p, t * h), work.Slice(t * (p + h)), TailScratch(t), t);
            return;
        }
        _attn.SelfCore(a, x1, batch, work, input, default, default);          // x1 = x + attention
        if (_postNorm) _norm1!.ForwardCore(x1, t, x1, pool);
        else _norm2.ForwardCore(x1, t, n, pool);
        Glu(_postNorm ? x1 : n, x1, output, t, work, pool);
        if (_postNorm) _norm2.ForwardCore(output, t, output, pool);
    }

    /// <summary>y = residual + Wo'(act(Wi_in · n) ⊙ (Wi_gate · n)) for <paramref name="rows"/> rows; the halves and the products' scratch in <paramref name="work"/>.</summary>
    private void Glu(ReadOnlySpan<float> n, ReadOnlySpan<float> residual, Span<float> y, int rows, Span<float> work, Threading.WorkerPool? pool)
    {
        int ff = _ff;
        Span<float> u = work.Slice(0, rows * ff), g = work.Slice(rows * ff, rows * ff), rest = work.Slice(2 * rows * ff);
        _wiInput.ForwardCore(n, rows, u, rest, default, pool);
        _wiGate.ForwardCore(n, rows, g, rest, default, pool);
        TensorPrimitives.Multiply(u, g, u);
        _wo.ForwardCore(u, rows, y, rest, residual, pool);
    }

    IsaPath IRowLocalTail.TailIsa => _wo.Weight.Isa;

    /// <summary>Rows [r0, r1) from the heads' output to the layer's output on one thread (the same steps as the split products, row by row).</summary>
    void IRowLocalTail.Tail(float* x, float* y, float* x1, float* attn, int r0, int r1, Span<float> scratch)
    {
        int h = _h, rows = r1 - r0;
        long off = (long)r0 * h, len = (long)rows * h;
        var x1r = new Span<float>(x1 + off, (int)len);
        var yr = new Span<float>(y + off, (int)len);
        Span<float> n = scratch.Slice(0, rows * h), rest = scratch.Slice(rows * h);
        _attn.OutProj.ForwardCore(new ReadOnlySpan<float>(attn + off, (int)len), rows, x1r, rest, new ReadOnlySpan<float>(x + off, (int)len), null);
        if (_postNorm) _norm1!.ForwardCore(x1r, rows, x1r, null);
        else _norm2.ForwardCore(x1r, rows, n, null);
        Glu(_postNorm ? x1r : n, x1r, yr, rows, rest, null);
        if (_postNorm) _norm2.ForwardCore(yr, rows, yr, null);
    }

    public void Dispose()
    {
        _attn.Dispose(); _wiInput.Dispose(); _wiGate.Dispose(); _wo.Dispose();
    }
}

/// <summary>
/// NomicBERT's settings beyond BERT's fields: the RoPE base, which products carry a bias, whether the checkpoint has token
/// types, whether the positions were capped at the trained length (dynamic NTK scaling beyond it is not run), whether the
/// feed-forward is gated (v1/v1.5) or plain (v2), and the mixture of experts of nomic-embed-text-v2-moe: every
/// <see cref="MoeEveryN"/>-th layer from the second (0 = none) routes each token to <see cref="TopK"/> of
/// <see cref="Experts"/> expert MLPs.
/// </summary>
internal sealed record NomicSettings(double Theta, bool QkvBias, bool Fc1Bias, bool Fc2Bias, bool TokenTypes, bool CappedAtTrained,
    bool Gated = true, int MoeEveryN = 0, int Experts = 0, int TopK = 0, bool NormalizeExpertWeights = false)
{
    /// <summary>Whether layer <paramref name="i"/> is a mixture-of-experts layer (its code: i mod every_n == 1).</summary>
    public bool IsMoeLayer(int i) => MoeEveryN > 0 && i % MoeEveryN == 1;
}
