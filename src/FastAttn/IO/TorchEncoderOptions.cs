using FastAttn.Kernels;

namespace FastAttn.IO;

/// <summary>
/// What a PyTorch <c>state_dict</c> does not carry about an encoder: heads, norm placement, activation, eps, the
/// key prefix of the module inside a bigger model, and the attention mask mode. Defaults are PyTorch's.
/// </summary>
public sealed record TorchEncoderOptions
{
    /// <summary>Attention heads (nhead); required.</summary>
    public int Heads { get; init; }
    /// <summary>Pre-norm (<c>norm_first=True</c>).</summary>
    public bool NormFirst { get; init; }
    /// <summary>Feed-forward activation (ReLU or exact GELU, like PyTorch's "relu"/"gelu").</summary>
    public Activation Activation { get; init; } = Activation.Relu;
    /// <summary>LayerNorm ε (<c>layer_norm_eps</c>).</summary>
    public float Eps { get; init; } = 1e-5f;
    /// <summary>Key prefix of the module in the file, e.g. <c>"encoder."</c> (a trailing dot is added when missing).</summary>
    public string Prefix { get; init; } = "";
    /// <summary>Causal self-attention (a square causal <c>src_mask</c>, <c>is_causal=True</c>).</summary>
    public bool Causal { get; init; }
    /// <summary>Per-head distance bias slopes added to every layer's attention scores (see <see cref="Layers.AttentionSettings.DistanceSlopes"/>); null = none.</summary>
    public float[]? DistanceSlopes { get; init; }
    /// <summary>
    /// The precision of each linear layer (null = FP32), by file name: <c>layers.N.self_attn.in_proj</c>,
    /// <c>layers.N.self_attn.out_proj</c>, <c>layers.N.linear1</c>, <c>layers.N.linear2</c> (under <see cref="Prefix"/>).
    /// </summary>
    public Layers.PrecisionPlan? Precision { get; init; }
}
