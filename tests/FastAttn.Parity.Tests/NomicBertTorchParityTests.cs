using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Parity.Tests;

/// <summary>
/// A small NomicBERT (nomic-embed-text-v1.5's settings: no biases, SwiGLU, RoPE base 1,000, two token types) against
/// the same model written with libtorch's operations as its remote code runs it: word + token-type embeddings and
/// emb_ln, then per layer Wqkv, rotate-half RoPE from float32 inv_freq/outer/cos/sin, scaled_dot_product_attention,
/// out_proj, norm1(x + attn), fc2(fc11(x) ⊙ silu(fc12(x))), norm2(x + mlp); sequences of 17 to 700 tokens, alone and packed.
/// </summary>
public class NomicBertTorchParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    static NomicBertTorchParityTests() { torch.set_num_threads(1); torch.set_grad_enabled(false); }

    private const int H = 64, Heads = 4, D = H / Heads, Ff = 256, Vocab = 128, Layers = 3;
    private const double Theta = 1000;

    private static TorchModelComparison.Weights Weights()
    {
        var w = new TorchModelComparison.Weights(91);
        var Add = w.Add;
        Add("embeddings.word_embeddings.weight", 1f, 0, Vocab, H);
        Add("embeddings.token_type_embeddings.weight", 0.5f, 0, 2, H);
        Add("emb_ln.weight", 0.2f, 1, H); Add("emb_ln.bias", 0.1f, 0, H);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"encoder.layers.{l}.";
            Add(p + "attn.Wqkv.weight", 0.25f, 0, 3 * H, H);
            Add(p + "attn.out_proj.weight", 0.15f, 0, H, H);
            Add(p + "mlp.fc11.weight", 0.2f, 0, Ff, H);
            Add(p + "mlp.fc12.weight", 0.2f, 0, Ff, H);
            Add(p + "mlp.fc2.weight", 0.1f, 0, H, Ff);
            Add(p + "norm1.weight", 0.2f, 1, H); Add(p + "norm1.bias", 0.1f, 0, H);
            Add(p + "norm2.weight", 0.2f, 1, H); Add(p + "norm2.bias", 0.1f, 0, H);
        }
        return w;
    }

    private static float[] Torch(TorchModelComparison.Weights w, int[] ids)
    {
        using var scope = torch.NewDisposeScope();
        int t = ids.Length;
        Tensor Ln(Tensor x, string name) => torch.nn.functional.layer_norm(x, [H], w.T(name + ".weight"), w.T(name + ".bias"), 1e-12);
        var x = w.T("embeddings.word_embeddings.weight").index_select(0, torch.tensor(ids.Select(i => (long)i).ToArray()))
            + w.T("embeddings.token_type_embeddings.weight")[0];
        x = Ln(x, "emb_ln");
        var (cos, sin) = TorchModelComparison.RopeTables(t, D, Theta);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"encoder.layers.{l}.";
            var qkv = torch.nn.functional.linear(x, w.T(p + "attn.Wqkv.weight")).view(1, t, 3, Heads, D);
            var q = qkv.select(2, 0).transpose(1, 2);
            var k = qkv.select(2, 1).transpose(1, 2);
            var v = qkv.select(2, 2).transpose(1, 2);
            q = TorchModelComparison.Rotate(q, cos, sin);
            k = TorchModelComparison.Rotate(k, cos, sin);
            var o = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).contiguous().view(t, H);
            x = Ln(x + torch.nn.functional.linear(o, w.T(p + "attn.out_proj.weight")), p + "norm1");
            var y = torch.nn.functional.linear(x, w.T(p + "mlp.fc11.weight")) * torch.nn.functional.silu(torch.nn.functional.linear(x, w.T(p + "mlp.fc12.weight")));
            x = Ln(x + torch.nn.functional.linear(y, w.T(p + "mlp.fc2.weight")), p + "norm2");
        }
        return x.contiguous().data<float>().ToArray();
    }

    [Fact]
    public void States_MatchLibtorch_AloneAndPacked()
    {
        var w = Weights();
        TorchModelComparison.StatesMatch(w, $$"""
                {"model_type": "nomic_bert", "n_embd": {{H}}, "n_head": {{Heads}}, "n_layer": {{Layers}}, "n_inner": {{Ff}}, "vocab_size": {{Vocab}}, "type_vocab_size": 2,
                 "n_positions": 1024, "layer_norm_epsilon": 1e-12, "activation_function": "swiglu", "rotary_emb_base": {{Theta}}, "rotary_emb_fraction": 1.0,
                 "qkv_proj_bias": false, "mlp_fc1_bias": false, "mlp_fc2_bias": false, "prenorm": false, "causal": false}
                """, H, Vocab, 5, [300, 17, 700], ids => Torch(w, ids), output);
    }
}
