using FastAttn.Kernels;

namespace FastAttn.Layers;

/// <summary>Score, normaliser and mask settings a <see cref="MultiHeadAttention"/> layer applies on every call.</summary>
public sealed record AttentionSettings
{
    /// <summary>Score function.</summary>
    public ScoreKind Score { get; init; }
    /// <summary>Dot-product scale (null = 1/√headDim).</summary>
    public float? Scale { get; init; }
    /// <summary>Soft cap (0 = off).</summary>
    public float SoftCap { get; init; }
    /// <summary>Normaliser.</summary>
    public Normalizer Normalizer { get; init; }
    /// <summary>Sigmoid bias (null = −ln L).</summary>
    public float? SigmoidBias { get; init; }
    /// <summary>Causal mask.</summary>
    public CausalMode Causal { get; init; }
    /// <summary>Sliding window: query i sees keys j with |i − j| ≤ Window within its sequence; 0 = none (see <see cref="AttentionOptions.Window"/>).</summary>
    public int Window { get; init; }
    /// <summary>Additive score weights <c>[heads, headDim]</c> when <see cref="Score"/> is additive.</summary>
    public float[]? AdditiveWeights { get; init; }
    /// <summary>Distance bias per head: −slope·|i − j| added to the scores (ALiBi-style, symmetric); null = none.</summary>
    public float[]? DistanceSlopes { get; init; }
    /// <summary>
    /// Relative position bias per head, <c>[heads, 2·span − 1]</c>: entry (j − i) + span − 1 of head h is added to head h's
    /// scores of query position i and key position j (MPNet's bucketed bias, expanded); null = none. Sequences may be at
    /// most <see cref="RelativeBiasSpan"/> long.
    /// </summary>
    public float[]? RelativeBias { get; init; }
    /// <summary>The longest sequence <see cref="RelativeBias"/> covers.</summary>
    public int RelativeBiasSpan { get; init; }
}
