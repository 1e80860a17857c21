using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using FastAttn.Composition;
using FastAttn.Layers;

namespace FastAttn.Embeddings;

/// <summary>
/// A post-norm encoder layer whose feed-forward is a mixture of experts, as nomic-embed-text-v2-moe's odd layers
/// (<c>NomicMoELayer</c>): x₁ = norm₁(x + attention(x)); the router scores every expert (a bias-free product), a float32
/// softmax over all experts, the top k per token (not renormalised unless the config says so; ties to the lower expert);
/// each expert e runs its tokens through act(x₁·W1ₑᵀ)·W2ₑ; the weighted outputs are added per token in expert order, then
/// one shared bias; y = norm₂(x₁ + moe). Each expert's products run on the tokens routed to it only (gathered rows), so
/// the work is top-k of the experts', not all of them.
/// </summary>
internal sealed class MoeEncoderLayer : Block, IDisposable
{
    private readonly MultiHeadAttention _attn;
    private readonly LayerNorm _norm1, _norm2;
    private readonly Linear _router;
    private readonly Linear[] _up, _down;
    private readonly float[] _bias;
    private readonly int _h, _ff, _experts, _topK;
    private readonly bool _normalize;

    /// <param name="attention">The rotary self-attention and its output projection.</param>
    /// <param name="norm1">The norm after the attention's residual sum.</param>
    /// <param name="norm2">The norm after the experts' residual sum.</param>
    /// <param name="router">The router, <c>[experts, h]</c>, no bias.</param>
    /// <param name="up">Per expert, <c>[ff, h]</c> with the activation in its epilogue.</param>
    /// <param name="down">Per expert, <c>[h, ff]</c> (W2ₑ transposed: its code applies W2ₑ <c>[ff, h]</c> untransposed).</param>
    /// <param name="bias">The one bias added after the experts' weighted sum, <c>[h]</c>.</param>
    /// <param name="topK">Experts per token.</param>
    /// <param name="normalize">Divide the top-k weights by their sum (<c>moe_normalize_expert_weights</c>).</param>
    public MoeEncoderLayer(MultiHeadAttention attention, LayerNorm norm1, LayerNorm norm2, Linear router, Linear[] up, Linear[] down, float[] bias, int topK, bool normalize)
    {
        _attn = attention; _norm1 = norm1; _norm2 = norm2; _router = router; _up = up; _down = down; _bias = bias;
        _h = attention.DModel; _ff = up[0].OutFeatures; _experts = up.Length; _topK = topK; _normalize = normalize;
        if (router.OutFeatures != _experts || down.Length != _experts || bias.Length != _h || topK < 1 || topK > _experts)
            throw new ArgumentException("the router, the experts, the bias and top-k do not agree.");
    }

    public long WeightBytes => _attn.WeightBytes + _router.WeightBytes + _up.Sum(l => l.WeightBytes) + _down.Sum(l => l.WeightBytes) + 4L * (_h + 4 * _h);
    public override int InputWidth => _h;
    public override int OutputWidth => _h;

    private long ProductScratch(int rows) => Math.Max(_router.ScratchSize(rows), Math.Max(_up.Max(l => l.ScratchSize(rows)), _down.Max(l => l.ScratchSize(rows))));

    // x1 [T, h] | then either the attention's scratch, or: logits [T, E] | choice [T, k] | weight [T, k] | rows [T] |
    // gathered [T, h] | hidden [T, ff] | expert out [T, h] | the products' scratch
    private long MoeScratch(int t) => (long)t * _experts + 2L * t * _topK + t + 2L * t * _h + (long)t * _ff + ProductScratch(t);

    public override long ScratchSize(int maxTokens) => (long)maxTokens * _h + Math.Max(_attn.ScratchSize(maxTokens), MoeScratch(maxTokens));

    public override long WorkerScratchSize(int maxTokens) => Math.Max(_attn.WorkerScratchSize(maxTokens),
        Math.Max(_router.WorkerScratchSize(maxTokens), Math.Max(_up.Max(l => l.WorkerScratchSize(maxTokens)), _down.Max(l => l.WorkerScratchSize(maxTokens)))));

    public override void Validate(Batch batch) => _attn.Validate(batch);

    protected internal override void ForwardCore(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
    {
        int t = batch.Tokens, h = _h, e = _experts, k = _topK, ff = _ff;
        var pool = batch.Pool;
        Span<float> x1 = scratch.Slice(0, t * h), work = scratch.Slice(t * h);
        _attn.SelfCore(input, x1, batch, work, input, default, default);          // x1 = x + attention
        _norm1.ForwardCore(x1, t, x1, pool);

        var logits = work.Slice(0, t * e);
        var choice = MemoryMarshal.Cast<float, int>(work.Slice(t * e, t * k));
        var weight = work.Slice(t * e + t * k, t * k);
        var rows = MemoryMarshal.Cast<float, int>(work.Slice(t * e + 2 * t * k, t));
        int at = t * e + 2 * t * k + t;
        var gathered = work.Slice(at, t * h); at += t * h;
        var hidden = work.Slice(at, t * ff); at += t * ff;
        var expertOut = work.Slice(at, t * h); at += t * h;
        var rest = work.Slice(at);

        _router.ForwardCore(x1, t, logits, rest, default, pool);
        for (int i = 0; i < t; i++) Route(logits.Slice(i * e, e), choice.Slice(i * k, k), weight.Slice(i * k, k));

        output.Slice(0, t * h).Clear();
        for (int x = 0; x < e; x++)
        {
            // the tokens routed to expert x, in token order (a token picks an expert at most once)
            int n = 0;
            for (int i = 0; i < t; i++)
                for (int j = 0; j < k; j++)
                    if (choice[i * k + j] == x) { rows[n++] = i * k + j; break; }
            if (n == 0) continue;
            for (int r = 0; r < n; r++) x1.Slice(rows[r] / k * h, h).CopyTo(gathered.Slice(r * h, h));
            _up[x].ForwardCore(gathered.Slice(0, n * h), n, hidden.Slice(0, n * ff), rest, default, pool);
            _down[x].ForwardCore(hidden.Slice(0, n * ff), n, expertOut.Slice(0, n * h), rest, default, pool);
            // weighted, then added to the token's sum: a product and a sum, each rounded, as its code scales then index_adds
            for (int r = 0; r < n; r++)
            {
                var o = output.Slice(rows[r] / k * h, h);
                var y = expertOut.Slice(r * h, h);
                TensorPrimitives.Multiply(y, weight[rows[r]], y);
                TensorPrimitives.Add(o, y, o);
            }
        }
        for (int i = 0; i < t; i++)
        {
            var o = output.Slice(i * h, h);
            TensorPrimitives.Add(o, _bias, o);
            TensorPrimitives.Add(o, x1.Slice(i * h, h), o);
        }
        _norm2.ForwardCore(output.Slice(0, t * h), t, output.Slice(0, t * h), pool);
    }

    /// <summary>Softmax over the experts (float32, max subtracted), then the top k — larger first, ties to the lower expert.</summary>
    private void Route(Span<float> logits, Span<int> choice, Span<float> weight)
    {
        float max = float.NegativeInfinity;
        foreach (float v in logits) max = Math.Max(max, v);
        float sum = 0;
        for (int i = 0; i < logits.Length; i++) { logits[i] = MathF.Exp(logits[i] - max); sum += logits[i]; }
        for (int i = 0; i < logits.Length; i++) logits[i] /= sum;
        float total = 0;
        // experts ≤ 1,024 (the config's bound): a mask of the chosen ones keeps the selection at k passes over the experts
        Span<bool> taken = stackalloc bool[logits.Length];
        for (int j = 0; j < choice.Length; j++)
        {
            int best = -1;
            for (int i = 0; i < logits.Length; i++)
                if (!taken[i] && (best < 0 || logits[i] > logits[best])) best = i;
            taken[best] = true;
            choice[j] = best;
            weight[j] = logits[best];
            total += logits[best];
        }
        if (_normalize) for (int j = 0; j < weight.Length; j++) weight[j] /= total;
    }

    public void Dispose()
    {
        _attn.Dispose(); _router.Dispose();
        foreach (var l in _up) l.Dispose();
        foreach (var l in _down) l.Dispose();
    }
}
