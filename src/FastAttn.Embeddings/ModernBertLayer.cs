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
internal sealed class ModernBertLayer : Block, IDisposable
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
    }

    public bool IsGlobal => _attn.Settings.Window == 0;
    public long WeightBytes => _attn.WeightBytes + _wiInput.WeightBytes + _wiGate.WeightBytes + _wo.WeightBytes + 4L * 2 * _h * (_attnNorm != null ? 2 : 1);
    public override int InputWidth => _h;
    public override int OutputWidth => _h;

    // n [T, h] | x1 [T, h] | then either the attention's scratch, or input [T, ff] | gate [T, ff] | the products' scratch
    public override long ScratchSize(int maxTokens) => 2L * maxTokens * _h + Math.Max(_attn.ScratchSize(maxTokens),
        2L * maxTokens * _ff + Math.Max(Math.Max(_wiInput.ScratchSize(maxTokens), _wiGate.ScratchSize(maxTokens)), _wo.ScratchSize(maxTokens)));

    public override long WorkerScratchSize(int maxTokens) => Math.Max(_attn.WorkerScratchSize(maxTokens),
        Math.Max(Math.Max(_wiInput.WorkerScratchSize(maxTokens), _wiGate.WorkerScratchSize(maxTokens)), _wo.WorkerScratchSize(maxTokens)));

    public override void Validate(Batch batch) => _attn.Validate(batch);

    protected internal override void ForwardCore(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
    {
        int t = batch.Tokens, h = _h, ff = _ff;
        var pool = batch.Pool;
        Span<float> n = scratch.Slice(0, t * h), x1 = scratch.Slice(t * h, t * h), work = scratch.Slice(2 * t * h);
        ReadOnlySpan<float> a = input;
        if (_attnNorm != null) { _attnNorm.ForwardCore(input, t, n, pool); a = n; }
        _attn.SelfCore(a, x1, batch, work, input, default, default);
        _mlpNorm.ForwardCore(x1, t, n, pool);
        Span<float> u = work.Slice(0, t * ff), g = work.Slice(t * ff, t * ff), rest = work.Slice(2 * t * ff);
        _wiInput.ForwardCore(n, t, u, rest, default, pool);
        _wiGate.ForwardCore(n, t, g, rest, default, pool);
        TensorPrimitives.Multiply(u, g, u);
        _wo.ForwardCore(u, t, output, rest, x1, pool);
    }

    public void Dispose()
    {
        _attn.Dispose(); _wiInput.Dispose(); _wiGate.Dispose(); _wo.Dispose();
    }
}
