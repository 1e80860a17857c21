namespace FastAttn.Kernels;

/// <summary>How a query and a key are turned into a score.</summary>
public enum ScoreKind
{
    /// <summary>s = scale · q·k (scale 1/√headDim unless <see cref="AttentionOptions.Scale"/> is set; 1 for unscaled).</summary>
    Dot = 0,
    /// <summary>s = Σ_d w_d · tanh(q_d + k_d) with a learned vector w per head (Bahdanau / Keras AdditiveAttention).</summary>
    Additive = 1,
}
