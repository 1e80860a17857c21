namespace FastAttn.TestSupport;

/// <summary>
/// Qwen3's checkpoint tensors in one order (embedding; per layer the input norm, q/k/v/o projections, per-head q/k norms,
/// the post-attention norm, gate/up/down; the final norm), for the tests and benchmarks that write a random Qwen3: each
/// caller draws every tensor's values in this order, so its random stream — and its figures — do not depend on who lists them.
/// </summary>
internal static class Qwen3Layout
{
    /// <summary>What a tensor is, so a caller can pick its scale (norm gains are drawn around 1).</summary>
    internal enum Part { Embedding, Norm, Qkv, Output, GateUp, Down }

    /// <summary>Calls <paramref name="add"/>(name, part, shape) for each tensor; names start with <paramref name="prefix"/> ("" or "model.").</summary>
    public static void Tensors(string prefix, int layers, long vocab, long hidden, long heads, long kvHeads, long headDim, long ff, Action<string, Part, long[]> add)
    {
        add(prefix + "embed_tokens.weight", Part.Embedding, [vocab, hidden]);
        for (int l = 0; l < layers; l++)
        {
            string p = $"{prefix}layers.{l}.";
            add(p + "input_layernorm.weight", Part.Norm, [hidden]);
            add(p + "self_attn.q_proj.weight", Part.Qkv, [heads * headDim, hidden]);
            add(p + "self_attn.k_proj.weight", Part.Qkv, [kvHeads * headDim, hidden]);
            add(p + "self_attn.v_proj.weight", Part.Qkv, [kvHeads * headDim, hidden]);
            add(p + "self_attn.o_proj.weight", Part.Output, [hidden, heads * headDim]);
            add(p + "self_attn.q_norm.weight", Part.Norm, [headDim]);
            add(p + "self_attn.k_norm.weight", Part.Norm, [headDim]);
            add(p + "post_attention_layernorm.weight", Part.Norm, [hidden]);
            add(p + "mlp.gate_proj.weight", Part.GateUp, [ff, hidden]);
            add(p + "mlp.up_proj.weight", Part.GateUp, [ff, hidden]);
            add(p + "mlp.down_proj.weight", Part.Down, [hidden, ff]);
        }
        add(prefix + "norm.weight", Part.Norm, [hidden]);
    }
}
