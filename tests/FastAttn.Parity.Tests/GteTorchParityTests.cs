using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Parity.Tests;

/// <summary>
/// A small GTE "new" model (gte-base-en-v1.5's form: no token types, packed q/k/v, RoPE base 500,000 with the fixed NTK
/// factor 2, GELU) against the same model written with libtorch's operations as its modeling.py runs it: word embeddings
/// and LayerNorm; per layer qkv_proj, rotate-half RoPE from the NTK-scaled float32 inv_freq (base · factor, then divided by
/// factor^(2/dim)) and the float32 cos/sin cache, scaled_dot_product_attention, o_proj, attn_ln(x + attn), then
/// down_proj(gelu(gate) ⊙ up) with the gate the second half of up_gate_proj, mlp_ln(x + mlp); sequences of 17 to 700
/// tokens, alone and packed.
/// </summary>
public class GteTorchParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    static GteTorchParityTests() { torch.set_num_threads(1); torch.set_grad_enabled(false); }

    private const int H = 64, Heads = 4, D = H / Heads, Ff = 160, Vocab = 128, Layers = 3, MaxPositions = 1024;
    private const double Theta = 500000, Factor = 2;

    private static TorchModelComparison.Weights Weights()
    {
        var w = new TorchModelComparison.Weights(23);
        var Add = w.Add;
        Add("embeddings.word_embeddings.weight", 1f, 0, Vocab, H);
        Add("embeddings.LayerNorm.weight", 0.2f, 1, H); Add("embeddings.LayerNorm.bias", 0.1f, 0, H);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"encoder.layer.{l}.";
            Add(p + "attention.qkv_proj.weight", 0.25f, 0, 3 * H, H); Add(p + "attention.qkv_proj.bias", 0.1f, 0, 3 * H);
            Add(p + "attention.o_proj.weight", 0.15f, 0, H, H); Add(p + "attention.o_proj.bias", 0.1f, 0, H);
            Add(p + "attn_ln.weight", 0.2f, 1, H); Add(p + "attn_ln.bias", 0.1f, 0, H);
            Add(p + "mlp.up_gate_proj.weight", 0.2f, 0, 2 * Ff, H);
            Add(p + "mlp.down_proj.weight", 0.1f, 0, H, Ff); Add(p + "mlp.down_proj.bias", 0.1f, 0, H);
            Add(p + "mlp_ln.weight", 0.2f, 1, H); Add(p + "mlp_ln.bias", 0.1f, 0, H);
        }
        return w;
    }

    private static float[] Torch(TorchModelComparison.Weights w, int[] ids)
    {
        using var scope = torch.NewDisposeScope();
        int t = ids.Length;
        Tensor Ln(Tensor x, string name) => torch.nn.functional.layer_norm(x, [H], w.T(name + ".weight"), w.T(name + ".bias"), 1e-12);
        var x = w.T("embeddings.word_embeddings.weight").index_select(0, torch.tensor(ids.Select(i => (long)i).ToArray()));
        x = Ln(x, "embeddings.LayerNorm");
        // NTKScalingRotaryEmbedding's cache, built for max_position_embeddings · factor positions
        var inv = 1.0 / torch.pow(torch.tensor(Theta * Factor, dtype: ScalarType.Float32), torch.arange(0, D, 2, dtype: ScalarType.Int64).to(ScalarType.Float32) / D);
        inv = inv / Math.Pow(Factor, 2.0 / D);
        var freqs = torch.outer(torch.arange((int)(MaxPositions * Factor), dtype: ScalarType.Float32), inv);
        var emb = torch.cat([freqs, freqs], -1);
        var cos = emb.cos().narrow(0, 0, t);
        var sin = emb.sin().narrow(0, 0, t);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"encoder.layer.{l}.";
            var qkv = torch.nn.functional.linear(x, w.T(p + "attention.qkv_proj.weight"), w.T(p + "attention.qkv_proj.bias")).split(H, -1);
            Tensor Heads4(Tensor v) => v.view(1, t, Heads, D).transpose(1, 2);
            var q = Heads4(qkv[0]); var k = Heads4(qkv[1]); var v = Heads4(qkv[2]);
            q = TorchModelComparison.Rotate(q, cos, sin);
            k = TorchModelComparison.Rotate(k, cos, sin);
            var o = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).contiguous().view(t, H);
            x = Ln(x + torch.nn.functional.linear(o, w.T(p + "attention.o_proj.weight"), w.T(p + "attention.o_proj.bias")), p + "attn_ln");
            var ug = torch.nn.functional.linear(x, w.T(p + "mlp.up_gate_proj.weight"));
            var y = torch.nn.functional.gelu(ug.narrow(-1, Ff, Ff)) * ug.narrow(-1, 0, Ff);
            x = Ln(x + torch.nn.functional.linear(y, w.T(p + "mlp.down_proj.weight"), w.T(p + "mlp.down_proj.bias")), p + "mlp_ln");
        }
        return x.contiguous().data<float>().ToArray();
    }

    [Fact]
    public void States_MatchLibtorch_AloneAndPacked()
    {
        var w = Weights();
        TorchModelComparison.StatesMatch(w, $$"""
                {"architectures": ["NewModel"], "model_type": "new", "hidden_size": {{H}}, "num_attention_heads": {{Heads}}, "num_hidden_layers": {{Layers}},
                 "intermediate_size": {{Ff}}, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "layer_norm_type": "layer_norm", "max_position_embeddings": {{MaxPositions}},
                 "type_vocab_size": 0, "vocab_size": {{Vocab}}, "position_embedding_type": "rope", "rope_theta": {{Theta}}, "rope_scaling": {"factor": {{Factor}}, "type": "ntk"},
                 "pack_qkv": true, "logn_attention_scale": false}
                """, H, Vocab, 13, [300, 17, 700], ids => Torch(w, ids), output);
    }
}
