using System.Numerics.Tensors;
using FastAttn.Composition;
using FastAttn.Kernels;
using FastAttn.Layers;

namespace FastAttn.Embeddings;

/// <summary>
/// Qwen3's (and Qwen2's) settings beyond BERT's fields: the head width (Qwen3's its own, Qwen2's hidden / heads), the
/// key/value heads (grouped-query attention), the RoPE base, whether q/k/v/o carry biases (Qwen2: q/k/v always, o never),
/// and whether queries and keys are RMS-normed per head (Qwen3) or not (Qwen2).
/// </summary>
internal sealed record Qwen3Settings(int HeadDim, int KvHeads, double Theta, bool AttentionBias, bool QkNorm = true, bool Qwen2 = false);

/// <summary>
/// Gemma 3's settings beyond BERT's fields (the text model of EmbeddingGemma): the head width and key/value heads, the
/// RoPE bases of the global and the sliding-window layers, which layers slide, the window as the attention kernel takes it
/// (a key within <see cref="Window"/> positions of the query; for bidirectional attention transformers' |i − j| &lt;
/// sliding_window / 2 + 1, for causal attention i − j &lt; sliding_window), whether attention is bidirectional
/// (<c>use_bidirectional_attention</c>, EmbeddingGemma) or causal, the score scale 1/√query_pre_attn_scalar, the scores'
/// tanh soft cap (0: none) and whether q/k/v/o carry biases.
/// </summary>
internal sealed record Gemma3Settings(int HeadDim, int KvHeads, double GlobalTheta, double LocalTheta, bool[] SlidingLayers, int Window,
    bool Bidirectional, double QueryPreAttnScalar, double SoftCap, bool AttentionBias);

/// <summary>The attention of one decoder layer: causal or bidirectional, a window (0: none), the score scale (null: 1/√head width), a soft cap (0: none).</summary>
internal readonly record struct DecoderAttention(bool Causal, int Window = 0, float? Scale = null, float SoftCap = 0);

/// <summary>
/// A decoder layer as Qwen3 has it (transformers' <c>Qwen3DecoderLayer</c>) — or Gemma 3's, with an RMS norm on each
/// branch's output before its residual sum, a window, a scale of its own and bidirectional attention when configured —
/// run over a packed batch:
/// x₁ = x + Wo·attention(q, k, v) with n = rms₁(x), q = rope(rms_q(Wq·n)) per head, k = rope(rms_k(Wk·n)) per key/value head,
/// v = Wv·n, causal within each sequence, each group of query heads sharing one key/value head; then
/// y = x₁ + W_down(silu(W_gate·n₂) ⊙ (W_up·n₂)) with n₂ = rms₂(x₁). q, k and v come from one packed product; the gate's
/// activation is fused into its product's epilogue.
/// </summary>
internal sealed unsafe class DecoderLayer : Block, IDisposable
{
    private readonly RmsNorm _norm1, _norm2;
    private readonly RmsNorm? _qNorm, _kNorm;
    private readonly RmsNorm? _postAttnNorm, _postFfnNorm;
    private readonly DecoderAttention _shape;
    private readonly Linear _qkv, _o, _gate, _up, _down;
    private readonly Rope _rope;
    private readonly int _h, _heads, _kvHeads, _hd, _ff;
    private readonly IsaPath _isa = Isa.Current;

    /// <param name="norm1">The RMS norm before the attention (<c>input_layernorm</c>).</param>
    /// <param name="qkv">q|k|v packed in three segments: heads·headDim, kvHeads·headDim, kvHeads·headDim rows.</param>
    /// <param name="qNorm">The RMS norm over each query head (<c>q_norm</c>, headDim wide); null: none (Qwen2).</param>
    /// <param name="kNorm">The RMS norm over each key head (<c>k_norm</c>); null with <paramref name="qNorm"/>.</param>
    /// <param name="rope">The rotation of queries and keys.</param>
    /// <param name="o">The output projection (heads·headDim → hidden).</param>
    /// <param name="heads">Query heads.</param>
    /// <param name="kvHeads">Key/value heads (dividing the query heads).</param>
    /// <param name="norm2">The RMS norm before the feed-forward (<c>post_attention_layernorm</c>).</param>
    /// <param name="gate">The activated half (SiLU in its epilogue).</param>
    /// <param name="up">The half multiplied in.</param>
    /// <param name="down">The feed-forward's output projection.</param>
    /// <param name="shape">Causal or bidirectional, window, scale, soft cap.</param>
    /// <param name="postAttnNorm">Gemma's sandwich: an RMS norm of the attention's output before its residual sum (null: none, Qwen3).</param>
    /// <param name="postFfnNorm">The same for the feed-forward's output.</param>
    public DecoderLayer(RmsNorm norm1, Linear qkv, RmsNorm? qNorm, RmsNorm? kNorm, Rope rope, Linear o, int heads, int kvHeads, RmsNorm norm2,
        Linear gate, Linear up, Linear down, DecoderAttention shape, RmsNorm? postAttnNorm = null, RmsNorm? postFfnNorm = null)
    {
        _norm1 = norm1; _qkv = qkv; _qNorm = qNorm; _kNorm = kNorm; _rope = rope; _o = o; _norm2 = norm2; _gate = gate; _up = up; _down = down;
        _shape = shape; _postAttnNorm = postAttnNorm; _postFfnNorm = postFfnNorm;
        _h = norm1.Width; _heads = heads; _kvHeads = kvHeads; _hd = rope.HeadDim; _ff = gate.OutFeatures;
        if (heads % kvHeads != 0 || (qNorm == null) != (kNorm == null) || (qNorm != null && (qNorm.Width != _hd || kNorm!.Width != _hd)) || qkv.Weight.SegmentRows(0) != heads * _hd || qkv.Weight.SegmentRows(1) != kvHeads * _hd
            || o.InFeatures != heads * _hd || o.OutFeatures != _h || down.OutFeatures != _h || up.OutFeatures != _ff || down.InFeatures != _ff)
            throw new ArgumentException("the decoder layer's parts do not fit together.");
    }

    public long WeightBytes => _qkv.WeightBytes + _o.WeightBytes + _gate.WeightBytes + _up.WeightBytes + _down.WeightBytes
        + 4L * ((_postAttnNorm != null ? 4 : 2) * _h + 2 * _hd);
    private bool Sandwich => _postAttnNorm != null;
    public override int InputWidth => _h;
    public override int OutputWidth => _h;

    private int QkvWidth => _qkv.Weight.PackedOutFeatures;
    private long AttnScratch(int maxKeys) => Attention.ScratchSize(_isa, _hd, _hd, maxKeys);

    // n [T, h] | x1 [T, h] | (sandwich: a branch's output [T, h]) | then either q|k|v [T, p], the heads' output [T, heads·hd]
    // and the attention's or products' scratch, or gate [T, ff] | up [T, ff] | the products' scratch
    public override long ScratchSize(int maxTokens)
    {
        long attn = (long)maxTokens * (QkvWidth + _heads * _hd) + Math.Max(AttnScratch(maxTokens), Math.Max(_qkv.ScratchSize(maxTokens), _o.ScratchSize(maxTokens)));
        long glu = 2L * maxTokens * _ff + Math.Max(Math.Max(_gate.ScratchSize(maxTokens), _up.ScratchSize(maxTokens)), _down.ScratchSize(maxTokens));
        return (Sandwich ? 3L : 2L) * maxTokens * _h + Math.Max(attn, glu);
    }

    public override long WorkerScratchSize(int maxTokens) =>
        Math.Max(Math.Max(AttnScratch(maxTokens), Math.Max(_qkv.WorkerScratchSize(maxTokens), _o.WorkerScratchSize(maxTokens))),
            Math.Max(Math.Max(_gate.WorkerScratchSize(maxTokens), _up.WorkerScratchSize(maxTokens)), _down.WorkerScratchSize(maxTokens)));

    public override void Validate(Batch batch) => _rope.CheckPositions(batch.LongestSequence);

    protected internal override void ForwardCore(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
    {
        int t = batch.Tokens, h = _h, p = QkvWidth, aw = _heads * _hd, kw = _kvHeads * _hd;
        var pool = batch.Pool;
        Span<float> n = scratch.Slice(0, t * h), x1 = scratch.Slice(t * h, t * h);
        Span<float> branch = Sandwich ? scratch.Slice(2 * t * h, t * h) : default, work = scratch.Slice((Sandwich ? 3 : 2) * t * h);
        Span<float> qkv = work.Slice(0, t * p), attn = work.Slice(t * p, t * aw), rest = work.Slice(t * (p + aw));
        _norm1.ForwardCore(input, t, n, pool);
        _qkv.ForwardCore(n, t, qkv, rest, default, pool);
        int kCol = _qkv.Weight.SegmentColumn(1), vCol = _qkv.Weight.SegmentColumn(2);
        // q_norm and k_norm: an RMS norm over each head's width, before the rotation
        for (int i = 0; i < t && _qNorm != null; i++)
        {
            var q = qkv.Slice(i * p, aw);
            _qNorm.ForwardCore(q, _heads, q, null);
            var k = qkv.Slice(i * p + kCol, kw);
            _kNorm!.ForwardCore(k, _kvHeads, k, null);
        }
        _rope.ApplyCore(qkv, t, p, 0, _heads, batch.SequenceLengths);
        _rope.ApplyCore(qkv, t, p, kCol, _kvHeads, batch.SequenceLengths);
        var call = new AttentionCall
        {
            Heads = _heads, KvHeads = _kvHeads, HeadDim = _hd, Causal = _shape.Causal ? CausalMode.TopLeft : CausalMode.None, Window = _shape.Window,
            Scale = _shape.Scale, SoftCap = _shape.SoftCap,
            SequenceLengths = batch.SequenceLengths.Length > 1 ? batch.SequenceLengths : default, KeyValidLengths = batch.KeyValidLengths,
            QStride = p, KStride = p, VStride = p,
        };
        Attention.ForwardCore(_isa, qkv, t, qkv.Slice(kCol), qkv.Slice(vCol), t, attn, rest, call, pool);
        if (Sandwich)
        {
            _o.ForwardCore(attn, t, branch, rest, default, pool);           // x1 = x + rms(Wo·attention)
            _postAttnNorm!.ForwardCore(branch, t, branch, pool);
            TensorPrimitives.Add(input, branch, x1);
        }
        else _o.ForwardCore(attn, t, x1, rest, input, pool);                // x1 = x + Wo·attention
        _norm2.ForwardCore(x1, t, n, pool);
        int ff = _ff;
        Span<float> g = work.Slice(0, t * ff), u = work.Slice(t * ff, t * ff), rest2 = work.Slice(2 * t * ff);
        _gate.ForwardCore(n, t, g, rest2, default, pool);
        _up.ForwardCore(n, t, u, rest2, default, pool);
        TensorPrimitives.Multiply(g, u, g);
        if (Sandwich)
        {
            _down.ForwardCore(g, t, branch, rest2, default, pool);          // y = x1 + rms(W_down(act(gate) ⊙ up))
            _postFfnNorm!.ForwardCore(branch, t, branch, pool);
            TensorPrimitives.Add(x1, branch, output);
        }
        else _down.ForwardCore(g, t, output, rest2, x1, pool);              // y = x1 + W_down(act(gate) ⊙ up)
    }

    public void Dispose()
    {
        _qkv.Dispose(); _o.Dispose(); _gate.Dispose(); _up.Dispose(); _down.Dispose();
    }
}
