namespace FastAttn.Kernels;

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
