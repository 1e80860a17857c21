using FastAttn.TestSupport;
using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Parity.Tests;

/// <summary>
/// A small Qwen3 (Qwen3-Embedding's form: grouped key/value heads, a head width of its own, RoPE base 1,000,000, no biases)
/// against the same model written with libtorch's operations as transformers' modeling_qwen3 runs it: embed_tokens; per
/// layer the RMS norm as Qwen3RMSNorm computes it (mean of squares, rsqrt, then the weight), q/k/v_proj, q_norm and k_norm
/// over each head, rotate-half RoPE from the float32 inv_freq, repeat_kv, scaled_dot_product_attention with is_causal,
/// o_proj and the residual, then down_proj(silu(gate_proj) ⊙ up_proj) and the residual; the final norm. Sequences of 17
/// to 700 tokens, alone and packed.
/// </summary>
public class Qwen3TorchParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    static Qwen3TorchParityTests() { torch.set_num_threads(1); torch.set_grad_enabled(false); }

    private const int H = 64, Heads = 4, KvHeads = 2, D = 32, Ff = 160, Vocab = 128, Layers = 3;
    private const double Theta = 1_000_000, Eps = 1e-6;

    private static TorchModelComparison.Weights Weights()
    {
        var w = new TorchModelComparison.Weights(29);
        var Add = w.Add;
        Qwen3Layout.Tensors("model.", Layers, Vocab, H, Heads, KvHeads, D, Ff, (name, part, shape) => Add(name, part switch
        {
            Qwen3Layout.Part.Embedding => 1f, Qwen3Layout.Part.Output or Qwen3Layout.Part.Down => 0.1f, _ => 0.2f,
        }, part == Qwen3Layout.Part.Norm ? 1 : 0, shape));
        return w;
    }

    private static float[] Torch(TorchModelComparison.Weights w, int[] ids)
    {
        using var scope = torch.NewDisposeScope();
        int t = ids.Length;
        Tensor Rms(Tensor x, string name) => w.T(name + ".weight") * (x * torch.rsqrt(x.pow(2).mean([-1L], keepdim: true) + Eps));
        var x = w.T("model.embed_tokens.weight").index_select(0, torch.tensor(ids.Select(i => (long)i).ToArray()));
        var (cos, sin) = TorchModelComparison.RopeTables(t, D, Theta);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"model.layers.{l}.";
            var n = Rms(x, p + "input_layernorm");
            var q = Rms(torch.nn.functional.linear(n, w.T(p + "self_attn.q_proj.weight")).view(1, t, Heads, D), p + "self_attn.q_norm").transpose(1, 2);
            var k = Rms(torch.nn.functional.linear(n, w.T(p + "self_attn.k_proj.weight")).view(1, t, KvHeads, D), p + "self_attn.k_norm").transpose(1, 2);
            var v = torch.nn.functional.linear(n, w.T(p + "self_attn.v_proj.weight")).view(1, t, KvHeads, D).transpose(1, 2);
            q = TorchModelComparison.Rotate(q, cos, sin);
            k = TorchModelComparison.Rotate(k, cos, sin);
            // repeat_kv: query head h reads key/value head h / (Heads / KvHeads)
            k = k.repeat_interleave(Heads / KvHeads, 1);
            v = v.repeat_interleave(Heads / KvHeads, 1);
            var o = torch.nn.functional.scaled_dot_product_attention(q, k, v, null, 0.0, true).transpose(1, 2).contiguous().view(t, Heads * D);
            x = x + torch.nn.functional.linear(o, w.T(p + "self_attn.o_proj.weight"));
            var n2 = Rms(x, p + "post_attention_layernorm");
            var y = torch.nn.functional.silu(torch.nn.functional.linear(n2, w.T(p + "mlp.gate_proj.weight"))) * torch.nn.functional.linear(n2, w.T(p + "mlp.up_proj.weight"));
            x = x + torch.nn.functional.linear(y, w.T(p + "mlp.down_proj.weight"));
        }
        return Rms(x, "model.norm").contiguous().data<float>().ToArray();
    }

    [Fact]
    public void States_MatchLibtorch_AloneAndPacked()
    {
        var w = Weights();
        TorchModelComparison.StatesMatch(w, $$"""
                {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": {{H}}, "num_attention_heads": {{Heads}}, "num_key_value_heads": {{KvHeads}},
                 "head_dim": {{D}}, "num_hidden_layers": {{Layers}}, "intermediate_size": {{Ff}}, "hidden_act": "silu", "rms_norm_eps": {{Eps}},
                 "max_position_embeddings": 32768, "rope_theta": {{Theta}}, "rope_scaling": null, "attention_bias": false, "use_sliding_window": false,
                 "tie_word_embeddings": true, "vocab_size": {{Vocab}}}
                """, H, Vocab, 17, [300, 17, 700], ids => Torch(w, ids), output);
    }
}
