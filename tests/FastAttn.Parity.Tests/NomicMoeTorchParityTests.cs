using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Parity.Tests;

/// <summary>
/// A small nomic-embed-text-v2-moe (its settings: plain GELU feed-forward, 8 experts with top 2 on every other layer from
/// the second, weights not renormalised, one token type) against the same model written with libtorch's operations as its
/// code runs it: emb_ln, per layer Wqkv with rotate-half RoPE, scaled_dot_product_attention, out_proj, norm1(x + attn);
/// then fc2(gelu(fc1)) or the experts — router.layer, softmax(dtype=float32), topk, each expert's tokens through
/// gelu(x·w1ₑᵀ)·w2ₑ scaled by their weight and index_add_-ed in expert order, plus the bias — and norm2(x + mlp);
/// sequences of 17 to 700 tokens, alone and packed.
/// </summary>
public class NomicMoeTorchParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    static NomicMoeTorchParityTests() { torch.set_num_threads(1); torch.set_grad_enabled(false); }

    private const int H = 64, Heads = 4, D = H / Heads, Ff = 128, Vocab = 128, Layers = 4, Experts = 8, TopK = 2;

    private static bool Moe(int l) => l % 2 == 1;

    private static TorchModelComparison.Weights Weights()
    {
        var w = new TorchModelComparison.Weights(31);
        var Add = w.Add;
        Add("embeddings.word_embeddings.weight", 1f, 0, Vocab, H);
        Add("embeddings.token_type_embeddings.weight", 0.5f, 0, 1, H);
        Add("emb_ln.weight", 0.2f, 1, H); Add("emb_ln.bias", 0.1f, 0, H);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"encoder.layers.{l}.";
            Add(p + "attn.Wqkv.weight", 0.25f, 0, 3 * H, H); Add(p + "attn.Wqkv.bias", 0.1f, 0, 3 * H);
            Add(p + "attn.out_proj.weight", 0.15f, 0, H, H); Add(p + "attn.out_proj.bias", 0.1f, 0, H);
            if (Moe(l))
            {
                Add(p + "mlp.router.layer.weight", 0.6f, 0, Experts, H);
                Add(p + "mlp.experts.mlp.w1", 0.2f, 0, Experts * Ff, H);
                Add(p + "mlp.experts.mlp.w2", 0.1f, 0, Experts * Ff, H);
                Add(p + "mlp.experts.bias", 0.1f, 0, H);
            }
            else
            {
                Add(p + "mlp.fc1.weight", 0.2f, 0, Ff, H); Add(p + "mlp.fc1.bias", 0.1f, 0, Ff);
                Add(p + "mlp.fc2.weight", 0.1f, 0, H, Ff); Add(p + "mlp.fc2.bias", 0.1f, 0, H);
            }
            Add(p + "norm1.weight", 0.2f, 1, H); Add(p + "norm1.bias", 0.1f, 0, H);
            Add(p + "norm2.weight", 0.2f, 1, H); Add(p + "norm2.bias", 0.1f, 0, H);
        }
        return w;
    }

    private static float[] Torch(TorchModelComparison.Weights w, int[] ids)
    {
        using var scope = torch.NewDisposeScope();
        int t = ids.Length;
        Tensor Ln(Tensor x, string name) => torch.nn.functional.layer_norm(x, [H], w.T(name + ".weight"), w.T(name + ".bias"), 1e-5);
        Tensor Lin(Tensor x, string name) => torch.nn.functional.linear(x, w.T(name + ".weight"), w.T(name + ".bias"));
        var x = w.T("embeddings.word_embeddings.weight").index_select(0, torch.tensor(ids.Select(i => (long)i).ToArray()))
            + w.T("embeddings.token_type_embeddings.weight")[0];
        x = Ln(x, "emb_ln");
        var (cos, sin) = TorchModelComparison.RopeTables(t, D, 10000.0);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"encoder.layers.{l}.";
            var qkv = Lin(x, p + "attn.Wqkv").view(1, t, 3, Heads, D);
            var q = qkv.select(2, 0).transpose(1, 2);
            var k = qkv.select(2, 1).transpose(1, 2);
            var v = qkv.select(2, 2).transpose(1, 2);
            q = TorchModelComparison.Rotate(q, cos, sin);
            k = TorchModelComparison.Rotate(k, cos, sin);
            var o = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).contiguous().view(t, H);
            x = Ln(Lin(o, p + "attn.out_proj") + x, p + "norm1");
            Tensor f;
            if (Moe(l))
            {
                var weights = torch.nn.functional.linear(x, w.T(p + "mlp.router.layer.weight")).softmax(-1, ScalarType.Float32);
                var (topW, topE) = torch.topk(weights, TopK, dim: -1);
                var w1 = w.T(p + "mlp.experts.mlp.w1").view(Experts, Ff, H);
                var w2 = w.T(p + "mlp.experts.mlp.w2").view(Experts, Ff, H);
                var outT = torch.zeros_like(x);
                long[] te = topE.data<long>().ToArray();
                float[] tw = topW.data<float>().ToArray();
                for (int e = 0; e < Experts; e++)
                {
                    var tokens = new List<long>();
                    var ws = new List<float>();
                    for (int i = 0; i < t; i++)
                        for (int j = 0; j < TopK; j++)
                            if (te[i * TopK + j] == e) { tokens.Add(i); ws.Add(tw[i * TopK + j]); }
                    if (tokens.Count == 0) continue;
                    var idx = torch.tensor(tokens.ToArray());
                    var y = torch.nn.functional.gelu(x.index_select(0, idx).matmul(w1[e].t())).matmul(w2[e]) * torch.tensor(ws.ToArray()).unsqueeze(1);
                    outT.index_add_(0, idx, y, 1);
                }
                f = outT + w.T(p + "mlp.experts.bias");
            }
            else f = Lin(torch.nn.functional.gelu(Lin(x, p + "mlp.fc1")), p + "mlp.fc2");
            x = Ln(f + x, p + "norm2");
        }
        return x.contiguous().data<float>().ToArray();
    }

    [Fact]
    public void States_MatchLibtorch_AloneAndPacked()
    {
        var w = Weights();
        TorchModelComparison.StatesMatch(w, $$"""
                {"model_type": "nomic_bert", "activation_function": "gelu", "n_embd": {{H}}, "n_head": {{Heads}}, "n_layer": {{Layers}}, "n_inner": {{Ff}},
                 "vocab_size": {{Vocab}}, "type_vocab_size": 1, "n_positions": 2048, "layer_norm_epsilon": 1e-05, "rotary_emb_base": 10000, "rotary_emb_fraction": 1.0,
                 "prenorm": false, "causal": false, "qkv_proj_bias": true, "mlp_fc1_bias": true, "mlp_fc2_bias": true,
                 "moe_every_n_layers": 2, "num_experts": {{Experts}}, "moe_top_k": {{TopK}}, "moe_normalize_expert_weights": false, "expert_choice_router": false}
                """, H, Vocab, 29, [300, 17, 700], ids => Torch(w, ids), output);
    }
}
