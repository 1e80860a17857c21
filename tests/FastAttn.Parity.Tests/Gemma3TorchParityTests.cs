using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Parity.Tests;

/// <summary>
/// A small Gemma 3 text model in EmbeddingGemma's form (bidirectional attention, one key/value head, head width 32 apart
/// from hidden / heads, sliding layers on a window, RoPE bases 10,000 local and 1,000,000 global) against the same model
/// written with libtorch's operations as transformers' modeling_gemma3 runs it: the embedding times √hidden as a float32
/// tensor; Gemma3RMSNorm (x·rsqrt(mean(x²) + ε), then · (1 + weight)); q/k/v_proj, q_norm and k_norm, rotate-half RoPE
/// from the float32 inv_freq of each layer type, repeat_kv, the eager attention (scores · query_pre_attn_scalar^−½,
/// softmax, · v) with, on the sliding layers, the boolean mask |i − j| &lt; sliding_window / 2 + 1 (the config's
/// window halved as Gemma3TextConfig does for bidirectional attention); post_attention_layernorm, the residual,
/// pre_feedforward_layernorm, down_proj(gelu_tanh(gate_proj) ⊙ up_proj), post_feedforward_layernorm, the residual; the
/// final norm. Sequences of 17 to 700 tokens (far beyond the window), alone and packed.
/// </summary>
public class Gemma3TorchParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    static Gemma3TorchParityTests() { torch.set_num_threads(1); torch.set_grad_enabled(false); }

    private const int H = 64, Heads = 3, KvHeads = 1, D = 32, Ff = 160, Vocab = 128, SlidingWindow = 64;
    private const double Eps = 1e-6, Qpas = 32;
    private static readonly bool[] Sliding = [true, true, false, true];

    private static TorchModelComparison.Weights Weights()
    {
        var w = new TorchModelComparison.Weights(31);
        var Add = w.Add;
        Add("embed_tokens.weight", 0.3f, 0, Vocab, H);
        for (int l = 0; l < Sliding.Length; l++)
        {
            string p = $"layers.{l}.";
            Add(p + "input_layernorm.weight", 0.3f, 0, H);
            Add(p + "self_attn.q_proj.weight", 0.2f, 0, Heads * D, H);
            Add(p + "self_attn.k_proj.weight", 0.2f, 0, KvHeads * D, H);
            Add(p + "self_attn.v_proj.weight", 0.2f, 0, KvHeads * D, H);
            Add(p + "self_attn.o_proj.weight", 0.1f, 0, H, Heads * D);
            Add(p + "self_attn.q_norm.weight", 0.3f, 0, D); Add(p + "self_attn.k_norm.weight", 0.3f, 0, D);
            Add(p + "post_attention_layernorm.weight", 0.3f, 0, H); Add(p + "pre_feedforward_layernorm.weight", 0.3f, 0, H);
            Add(p + "mlp.gate_proj.weight", 0.2f, 0, Ff, H); Add(p + "mlp.up_proj.weight", 0.2f, 0, Ff, H);
            Add(p + "mlp.down_proj.weight", 0.1f, 0, H, Ff);
            Add(p + "post_feedforward_layernorm.weight", 0.3f, 0, H);
        }
        Add("norm.weight", 0.3f, 0, H);
        return w;
    }

    private static float[] Torch(TorchModelComparison.Weights w, int[] ids)
    {
        using var scope = torch.NewDisposeScope();
        int t = ids.Length;
        Tensor Rms(Tensor x, string name) => x * torch.rsqrt(x.pow(2).mean([-1L], keepdim: true) + Eps) * (1.0 + w.T(name + ".weight"));
        var x = w.T("embed_tokens.weight").index_select(0, torch.tensor(ids.Select(i => (long)i).ToArray())) * torch.tensor(Math.Sqrt(H), dtype: ScalarType.Float32);
        var (cosG, sinG) = TorchModelComparison.RopeTables(t, D, 1_000_000);
        var (cosL, sinL) = TorchModelComparison.RopeTables(t, D, 10_000);
        var pos = torch.arange(t, dtype: ScalarType.Int64);
        var band = (pos.unsqueeze(1) - pos.unsqueeze(0)).abs() < SlidingWindow / 2 + 1;
        for (int l = 0; l < Sliding.Length; l++)
        {
            string p = $"layers.{l}.";
            var n = Rms(x, p + "input_layernorm");
            var q = Rms(torch.nn.functional.linear(n, w.T(p + "self_attn.q_proj.weight")).view(1, t, Heads, D), p + "self_attn.q_norm").transpose(1, 2);
            var k = Rms(torch.nn.functional.linear(n, w.T(p + "self_attn.k_proj.weight")).view(1, t, KvHeads, D), p + "self_attn.k_norm").transpose(1, 2);
            var v = torch.nn.functional.linear(n, w.T(p + "self_attn.v_proj.weight")).view(1, t, KvHeads, D).transpose(1, 2);
            var (cos, sin) = Sliding[l] ? (cosL, sinL) : (cosG, sinG);
            q = TorchModelComparison.Rotate(q, cos, sin);
            k = TorchModelComparison.Rotate(k, cos, sin);
            k = k.repeat_interleave(Heads / KvHeads, 1);
            v = v.repeat_interleave(Heads / KvHeads, 1);
            // eager_attention_forward: scores times the scaling, the sliding layers' mask, softmax in float32, times v
            var scores = torch.matmul(q, k.transpose(2, 3)) * Math.Pow(Qpas, -0.5);
            if (Sliding[l]) scores = scores.masked_fill(band.logical_not(), float.NegativeInfinity);
            var o = torch.matmul(torch.nn.functional.softmax(scores, -1), v).transpose(1, 2).contiguous().view(t, Heads * D);
            x = x + Rms(torch.nn.functional.linear(o, w.T(p + "self_attn.o_proj.weight")), p + "post_attention_layernorm");
            var n2 = Rms(x, p + "pre_feedforward_layernorm");
            var g = torch.nn.functional.linear(n2, w.T(p + "mlp.gate_proj.weight"));
            // gelu(approximate="tanh") as its formula
            var act = 0.5 * g * (1.0 + torch.tanh(Math.Sqrt(2 / Math.PI) * (g + 0.044715 * g.pow(3))));
            var y = act * torch.nn.functional.linear(n2, w.T(p + "mlp.up_proj.weight"));
            x = x + Rms(torch.nn.functional.linear(y, w.T(p + "mlp.down_proj.weight")), p + "post_feedforward_layernorm");
        }
        return Rms(x, "norm").contiguous().data<float>().ToArray();
    }

    [Fact]
    public void States_MatchLibtorch_AloneAndPacked()
    {
        var w = Weights();
        string types = string.Join(", ", Sliding.Select(s => s ? "\"sliding_attention\"" : "\"full_attention\""));
        TorchModelComparison.StatesMatch(w, $$"""
                {"architectures": ["Gemma3TextModel"], "model_type": "gemma3_text", "hidden_size": {{H}}, "num_attention_heads": {{Heads}}, "num_key_value_heads": {{KvHeads}},
                 "head_dim": {{D}}, "num_hidden_layers": {{Sliding.Length}}, "intermediate_size": {{Ff}}, "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": {{Eps}},
                 "max_position_embeddings": 2048, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "rope_scaling": null, "query_pre_attn_scalar": {{Qpas}},
                 "sliding_window": {{SlidingWindow}}, "layer_types": [{{types}}], "use_bidirectional_attention": true, "attn_logit_softcapping": null,
                 "attention_bias": false, "vocab_size": {{Vocab}}}
                """, H, Vocab, 19, [300, 17, 700], ids => Torch(w, ids), output);
    }
}
