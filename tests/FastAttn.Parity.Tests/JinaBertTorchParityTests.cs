using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Parity.Tests;

/// <summary>
/// A small JinaBERT (jina-embeddings-v2's form: GEGLU, ALiBi, post-norm, 6 heads — not a power of two) against the same
/// model written with libtorch's operations as its code runs it: word + token-type embeddings and LayerNorm; per layer
/// query/key/value, the ALiBi tensor built as its encoder builds it (|j − i| of two aranges times −slopes, float32), the
/// scores through scaled_dot_product_attention with that tensor as the additive mask, the output dense and LayerNorm, then
/// gated_layers, GELU(first half) ⊙ second half, wo, layernorm of the sum; sequences of 17 to 700 tokens, alone and packed.
/// </summary>
public class JinaBertTorchParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    static JinaBertTorchParityTests() { torch.set_num_threads(1); torch.set_grad_enabled(false); }

    private const int H = 96, Heads = 6, D = H / Heads, Ff = 128, Vocab = 128, Layers = 3;

    private static TorchModelComparison.Weights Weights()
    {
        var w = new TorchModelComparison.Weights(57);
        var Add = w.Add;
        Add("embeddings.word_embeddings.weight", 1f, 0, Vocab, H);
        Add("embeddings.token_type_embeddings.weight", 0.5f, 0, 2, H);
        Add("embeddings.LayerNorm.weight", 0.2f, 1, H); Add("embeddings.LayerNorm.bias", 0.1f, 0, H);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"encoder.layer.{l}.";
            foreach (var m in new[] { "attention.self.query", "attention.self.key", "attention.self.value" })
            { Add(p + m + ".weight", 0.2f, 0, H, H); Add(p + m + ".bias", 0.1f, 0, H); }
            Add(p + "attention.output.dense.weight", 0.12f, 0, H, H); Add(p + "attention.output.dense.bias", 0.1f, 0, H);
            Add(p + "attention.output.LayerNorm.weight", 0.2f, 1, H); Add(p + "attention.output.LayerNorm.bias", 0.1f, 0, H);
            Add(p + "mlp.gated_layers.weight", 0.2f, 0, 2 * Ff, H);
            Add(p + "mlp.wo.weight", 0.1f, 0, H, Ff); Add(p + "mlp.wo.bias", 0.1f, 0, H);
            Add(p + "mlp.layernorm.weight", 0.2f, 1, H); Add(p + "mlp.layernorm.bias", 0.1f, 0, H);
        }
        Add("pooler.dense.weight", 0.1f, 0, H, H); Add("pooler.dense.bias", 0.1f, 0, H);
        return w;
    }

    /// <summary>The slopes as its <c>_get_alibi_head_slopes</c> returns them (Python floats) for 6 heads: 4's, then every other of 8's.</summary>
    private static double[] Slopes()
    {
        double[] Pow2(int n) { double s = Math.Pow(2, -Math.Pow(2, -(Math.Log2(n) - 3))); return [.. Enumerable.Range(0, n).Select(i => s * Math.Pow(s, i))]; }
        return [.. Pow2(4), .. Pow2(8).Where((_, i) => i % 2 == 0).Take(Heads - 4)];
    }

    private static float[] Torch(TorchModelComparison.Weights w, int[] ids)
    {
        using var scope = torch.NewDisposeScope();
        int t = ids.Length;
        Tensor Ln(Tensor x, string name) => torch.nn.functional.layer_norm(x, [H], w.T(name + ".weight"), w.T(name + ".bias"), 1e-12);
        Tensor Lin(Tensor x, string name, bool bias = true) => torch.nn.functional.linear(x, w.T(name + ".weight"), bias ? w.T(name + ".bias") : null);
        var x = w.T("embeddings.word_embeddings.weight").index_select(0, torch.tensor(ids.Select(i => (long)i).ToArray()))
            + w.T("embeddings.token_type_embeddings.weight")[0];
        x = Ln(x, "embeddings.LayerNorm");
        var rel = torch.abs(torch.arange(t).unsqueeze(0) - torch.arange(t).unsqueeze(1)).unsqueeze(0).expand(Heads, -1, -1);
        var slopes = torch.tensor(Slopes().Select(s => (float)s).ToArray()) * -1;
        var alibi = (slopes.unsqueeze(1).unsqueeze(1) * rel).unsqueeze(0);
        Tensor Heads4(Tensor v) => v.view(1, t, Heads, D).transpose(1, 2);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"encoder.layer.{l}.";
            var q = Heads4(Lin(x, p + "attention.self.query"));
            var k = Heads4(Lin(x, p + "attention.self.key"));
            var v = Heads4(Lin(x, p + "attention.self.value"));
            var o = torch.nn.functional.scaled_dot_product_attention(q, k, v, alibi).transpose(1, 2).contiguous().view(t, H);
            x = Ln(Lin(o, p + "attention.output.dense") + x, p + "attention.output.LayerNorm");
            var g = Lin(x, p + "mlp.gated_layers", bias: false);
            var y = torch.nn.functional.gelu(g.narrow(-1, 0, Ff)) * g.narrow(-1, Ff, Ff);
            x = Ln(Lin(y, p + "mlp.wo") + x, p + "mlp.layernorm");
        }
        return x.contiguous().data<float>().ToArray();
    }

    [Fact]
    public void States_MatchLibtorch_AloneAndPacked()
    {
        var w = Weights();
        TorchModelComparison.StatesMatch(w, $$"""
                {"architectures": ["JinaBertForMaskedLM"], "model_type": "bert", "hidden_size": {{H}}, "num_attention_heads": {{Heads}}, "num_hidden_layers": {{Layers}},
                 "intermediate_size": {{Ff}}, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "max_position_embeddings": 8192, "type_vocab_size": 2,
                 "vocab_size": {{Vocab}}, "position_embedding_type": "alibi", "feed_forward_type": "geglu", "emb_pooler": "mean"}
                """, H, Vocab, 9, [300, 17, 700], ids => Torch(w, ids), output);
    }
}
