using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Parity.Tests;

/// <summary>
/// A small ModernBERT against the same model written with libtorch's operations as transformers' modeling_modernbert
/// runs it on a CPU (the sdpa path): LayerNorms without bias, Wqkv, rotate-half RoPE from float32 inv_freq/outer/cos/sin
/// (a base for global, another for local layers), scaled_dot_product_attention with the sliding-window band as a boolean
/// mask on the local layers, the GLU (gelu(input) ⊙ gate), a final norm — on sequences long enough that the window and the
/// float32 angles both matter (300 tokens: most keys outside every local query's ±16), alone and packed with others.
/// </summary>
public class ModernBertTorchParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    static ModernBertTorchParityTests() { torch.set_num_threads(1); torch.set_grad_enabled(false); }

    private const int H = 64, Heads = 4, D = H / Heads, Ff = 96, Vocab = 100, Local = 32, MaxPos = 1024;
    private static readonly bool[] Global = [true, false, false, true, false];
    private const double GlobalTheta = 160000, LocalTheta = 10000;

    private static TorchModelComparison.Weights Weights()
    {
        var w = new TorchModelComparison.Weights(77);
        var Add = w.Add;
        Add("model.embeddings.tok_embeddings.weight", 1f, 0, Vocab, H);
        Add("model.embeddings.norm.weight", 0.2f, 1, H);
        for (int l = 0; l < Global.Length; l++)
        {
            string p = $"model.layers.{l}.";
            if (l > 0) Add(p + "attn_norm.weight", 0.2f, 1, H);
            Add(p + "attn.Wqkv.weight", 0.25f, 0, 3 * H, H);
            Add(p + "attn.Wo.weight", 0.15f, 0, H, H);
            Add(p + "mlp_norm.weight", 0.2f, 1, H);
            Add(p + "mlp.Wi.weight", 0.2f, 0, 2 * Ff, H);
            Add(p + "mlp.Wo.weight", 0.15f, 0, H, Ff);
        }
        Add("model.final_norm.weight", 0.2f, 1, H);
        return w;
    }

    /// <summary>last_hidden_state of one sequence, [t, H], from libtorch's operations.</summary>
    private static float[] Torch(TorchModelComparison.Weights w, int[] ids)
    {
        using var scope = torch.NewDisposeScope();
        int t = ids.Length;
        Tensor Ln(Tensor x, string name) => torch.nn.functional.layer_norm(x, [H], w.T(name + ".weight"), null, 1e-5);
        var x = w.T("model.embeddings.tok_embeddings.weight").index_select(0, torch.tensor(ids.Select(i => (long)i).ToArray()));
        x = Ln(x, "model.embeddings.norm");
        (Tensor Cos, Tensor Sin) Rope(double theta) => TorchModelComparison.RopeTables(t, D, theta);
        var distance = (torch.arange(t).unsqueeze(0) - torch.arange(t).unsqueeze(1)).abs();
        var band = distance <= Local / 2;                                    // [t, t], true = may attend
        for (int l = 0; l < Global.Length; l++)
        {
            string p = $"model.layers.{l}.";
            var a = l == 0 ? x : Ln(x, p + "attn_norm");
            var qkv = torch.nn.functional.linear(a, w.T(p + "attn.Wqkv.weight")).view(1, t, 3, Heads, D);
            var q = qkv.select(2, 0).transpose(1, 2);                       // [1, heads, t, D]
            var k = qkv.select(2, 1).transpose(1, 2);
            var v = qkv.select(2, 2).transpose(1, 2);
            var (cos, sin) = Rope(Global[l] ? GlobalTheta : LocalTheta);
            q = TorchModelComparison.Rotate(q, cos, sin);
            k = TorchModelComparison.Rotate(k, cos, sin);
            var o = Global[l] ? torch.nn.functional.scaled_dot_product_attention(q, k, v)
                : torch.nn.functional.scaled_dot_product_attention(q, k, v, band);
            o = o.transpose(1, 2).contiguous().view(t, H);
            x = x + torch.nn.functional.linear(o, w.T(p + "attn.Wo.weight"));
            var wi = torch.nn.functional.linear(Ln(x, p + "mlp_norm"), w.T(p + "mlp.Wi.weight"));
            var input = wi.narrow(-1, 0, Ff);
            var gate = wi.narrow(-1, Ff, Ff);
            x = x + torch.nn.functional.linear(torch.nn.functional.gelu(input) * gate, w.T(p + "mlp.Wo.weight"));
        }
        x = Ln(x, "model.final_norm");
        return x.contiguous().data<float>().ToArray();
    }

    [Fact]
    public void States_MatchLibtorch_AloneAndPacked()
    {
        var w = Weights();
        TorchModelComparison.StatesMatch(w, $$"""
                {"model_type": "modernbert", "hidden_size": {{H}}, "num_attention_heads": {{Heads}}, "num_hidden_layers": {{Global.Length}}, "intermediate_size": {{Ff}},
                 "hidden_activation": "gelu", "norm_eps": 1e-5, "norm_bias": false, "attention_bias": false, "mlp_bias": false, "max_position_embeddings": {{MaxPos}},
                 "vocab_size": {{Vocab}}, "local_attention": {{Local}}, "global_attn_every_n_layers": 3, "global_rope_theta": {{GlobalTheta}}, "local_rope_theta": {{LocalTheta}}}
                """, H, Vocab, 3, [300, 17, 640], ids => Torch(w, ids), output);
    }
}
