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
/// One ModernBERT encoder layer (Hugging Face's <c>ModernBertEncoderLayer</c>), pre-norm:
/// x₁ = x + Wo(attention(RoPE(Wqkv · attn_norm(x)))), y = x₁ + Wo'(act(Wi_in · n) ⊙ (Wi_gate · n)) with n = mlp_norm(x₁).
/// The first layer has no attention norm (identity). Local layers attend within a sliding window (the attention kernel's
/// <see cref="AttentionOptions.Window"/>, so their cost grows with the window, not the sequence) with their own RoPE base.
/// The GLU's two halves are two products, the activation fused into the first's epilogue.
/// </summary>
internal sealed unsafe class ModernBertLayer : Block, IDisposable, IRowLocalTail
{
    private readonly LayerNorm? _attnNorm;
    private readonly MultiHeadAttention _attn;
    private readonly LayerNorm _mlpNorm;
    private readonly Linear _wiInput, _wiGate, _wo;
    private readonly int _h, _ff;

    public ModernBertLayer(LayerNorm? attnNorm, MultiHeadAttention attention, LayerNorm mlpNorm, Linear wiInput, Linear wiGate, Linear wo)
    {
        _attnNorm = attnNorm; _attn = attention; _mlpNorm = mlpNorm; _wiInput = wiInput; _wiGate = wiGate; _wo = wo;
        _h = attention.DModel; _ff = wiInput.OutFeatures;
        _rowLocalTail = attention.OutProj.WeightBytes + wiInput.WeightBytes + wiGate.WeightBytes + wo.WeightBytes <= EncoderBlock.RowLocalTailBytes;
    }

    /// <summary>
    /// True when the weights after the attention are small enough (as <see cref="EncoderBlock"/> decides) for the row-local
    /// tail: on several threads, each takes its share of the rows through the output projection, the norm and the GLU in
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
    public long WeightBytes => _attn.WeightBytes + _wiInput.WeightBytes + _wiGate.WeightBytes + _wo.WeightBytes + 4L * 2 * _h * (_attnNorm != null ? 2 : 1);
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
        int t = batch.Tokens, h = _h, ff = _ff;
        var pool = batch.Pool;
        Span<float> n = scratch.Slice(0, t * h), x1 = scratch.Slice(t * h, t * h), work = scratch.Slice(2 * t * h);
        ReadOnlySpan<float> a = input;
        if (_attnNorm != null) { _attnNorm.ForwardCore(input, t, n, pool); a = n; }
        if (UseRowLocalTail(t, pool))
        {
            _attn.AttendCore(a, batch, work, default, default);
            int p = _attn.QkvWidth;
            RowLocalTailJob.Run(this, pool!, input, output, x1, work.Slice(t * p, t * h), work.Slice(t * (p + h)), TailScratch(t), t);
            return;
        }
        _attn.SelfCore(a, x1, batch, work, input, default, default);
        _mlpNorm.ForwardCore(x1, t, n, pool);
        Span<float> u = work.Slice(0, t * ff), g = work.Slice(t * ff, t * ff), rest = work.Slice(2 * t * ff);
        _wiInput.ForwardCore(n, t, u, rest, default, pool);
        _wiGate.ForwardCore(n, t, g, rest, default, pool);
        TensorPrimitives.Multiply(u, g, u);
        _wo.ForwardCore(u, t, output, rest, x1, pool);
    }

    /// <summary>Rows [r0, r1) from the heads' output to the layer's output on one thread: x₁ = x + Wo·attn, y = x₁ + Wo'(act(Wi_in·n) ⊙ Wi_gate·n).</summary>
    IsaPath IRowLocalTail.TailIsa => _wo.Weight.Isa;

    void IRowLocalTail.Tail(float* x, float* y, float* x1, float* attn, int r0, int r1, Span<float> scratch)
    {
        int h = _h, ff = _ff, rows = r1 - r0;
        long off = (long)r0 * h, len = (long)rows * h;
        var x1r = new Span<float>(x1 + off, (int)len);
        Span<float> n = scratch.Slice(0, rows * h), u = scratch.Slice(rows * h, rows * ff), g = scratch.Slice(rows * h + rows * ff, rows * ff);
        Span<float> rest = scratch.Slice(rows * h + 2 * rows * ff);
        _attn.OutProj.ForwardCore(new ReadOnlySpan<float>(attn + off, (int)len), rows, x1r, rest, new ReadOnlySpan<float>(x + off, (int)len), null);
        _mlpNorm.ForwardCore(x1r, rows, n, null);
        _wiInput.ForwardCore(n, rows, u, rest, default, null);
        _wiGate.ForwardCore(n, rows, g, rest, default, null);
        TensorPrimitives.Multiply(u, g, u);
        _wo.ForwardCore(u, rows, new Span<float>(y + off, (int)len), rest, x1r, null);
    }

    public void Dispose()
    {
        _attn.Dispose(); _wiInput.Dispose(); _wiGate.Dispose(); _wo.Dispose();
    }
}
