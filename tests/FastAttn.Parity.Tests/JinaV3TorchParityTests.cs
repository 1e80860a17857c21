using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Parity.Tests;

/// <summary>
/// A small jina-embeddings-v3 (its settings: rotary base 20,000, LoRA rank 4 and alpha 1 on every embedding and linear
/// weight, five adapters) against the same model written with libtorch's operations as its code runs it with a task: each
/// weight through LoRAParametrization.lora_forward (W + matmul(B[t], A[t]) · alpha/rank; an embedding's factors swapped),
/// word + token-type embeddings and emb_ln, then per layer mixer.Wqkv, rotate-half RoPE from float32 inv_freq/outer/cos/sin,
/// scaled_dot_product_attention, out_proj, norm1(x + attn), fc2(gelu(fc1(x))), norm2(x + mlp); sequences of 17 to 700
/// tokens, alone and packed, with the retrieval.passage adapter.
/// </summary>
public class JinaV3TorchParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    static JinaV3TorchParityTests() { torch.set_num_threads(1); torch.set_grad_enabled(false); }

    private const int H = 64, Heads = 4, D = H / Heads, Ff = 128, Vocab = 128, Layers = 3, Rank = 4, Tasks = 5, Task = 1;
    private const double Theta = 20000, Alpha = 1;

    private static TorchModelComparison.Weights Weights()
    {
        var w = new TorchModelComparison.Weights(77);
        var Add = w.Add;
        void Lora(string name, long rows, long cols, float scale, bool embedding)
        {
            Add(name + ".parametrizations.weight.original", scale, 0, rows, cols);
            // trained adapters are small against the weight; 0.5 each keeps B·A at a few percent of W
            if (embedding) { Add(name + ".parametrizations.weight.0.lora_A", 0.5f, 0, Tasks, rows, Rank); Add(name + ".parametrizations.weight.0.lora_B", 0.5f, 0, Tasks, Rank, cols); }
            else { Add(name + ".parametrizations.weight.0.lora_A", 0.5f, 0, Tasks, Rank, cols); Add(name + ".parametrizations.weight.0.lora_B", 0.05f, 0, Tasks, rows, Rank); }
        }
        Lora("roberta.embeddings.word_embeddings", Vocab, H, 1f, true);
        Lora("roberta.embeddings.token_type_embeddings", 1, H, 0.5f, true);
        Add("roberta.emb_ln.weight", 0.2f, 1, H); Add("roberta.emb_ln.bias", 0.1f, 0, H);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"roberta.encoder.layers.{l}.";
            Lora(p + "mixer.Wqkv", 3 * H, H, 0.25f, false); Add(p + "mixer.Wqkv.bias", 0.1f, 0, 3 * H);
            Lora(p + "mixer.out_proj", H, H, 0.15f, false); Add(p + "mixer.out_proj.bias", 0.1f, 0, H);
            Add(p + "norm1.weight", 0.2f, 1, H); Add(p + "norm1.bias", 0.1f, 0, H);
            Lora(p + "mlp.fc1", Ff, H, 0.2f, false); Add(p + "mlp.fc1.bias", 0.1f, 0, Ff);
            Lora(p + "mlp.fc2", H, Ff, 0.1f, false); Add(p + "mlp.fc2.bias", 0.1f, 0, H);
            Add(p + "norm2.weight", 0.2f, 1, H); Add(p + "norm2.bias", 0.1f, 0, H);
        }
        return w;
    }

    /// <summary>LoRAParametrization.lora_forward for task <see cref="Task"/>.</summary>
    private static Tensor Merged(TorchModelComparison.Weights w, string name, bool embedding)
    {
        var x = w.T(name + ".parametrizations.weight.original");
        var a = w.T(name + ".parametrizations.weight.0.lora_A")[Task];
        var b = w.T(name + ".parametrizations.weight.0.lora_B")[Task];
        return x + torch.matmul(embedding ? a : b, embedding ? b : a).view(x.shape) * (Alpha / Rank);
    }

    private static float[] Torch(TorchModelComparison.Weights w, int[] ids)
    {
        using var scope = torch.NewDisposeScope();
        int t = ids.Length;
        Tensor Ln(Tensor x, string name) => torch.nn.functional.layer_norm(x, [H], w.T(name + ".weight"), w.T(name + ".bias"), 1e-5);
        Tensor Lin(Tensor x, string name) => torch.nn.functional.linear(x, Merged(w, name, false), w.T(name + ".bias"));
        var x = Merged(w, "roberta.embeddings.word_embeddings", true).index_select(0, torch.tensor(ids.Select(i => (long)i).ToArray()))
            + Merged(w, "roberta.embeddings.token_type_embeddings", true)[0];
        x = Ln(x, "roberta.emb_ln");
        var (cos, sin) = TorchModelComparison.RopeTables(t, D, Theta);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"roberta.encoder.layers.{l}.";
            var qkv = Lin(x, p + "mixer.Wqkv").view(1, t, 3, Heads, D);
            var q = qkv.select(2, 0).transpose(1, 2);
            var k = qkv.select(2, 1).transpose(1, 2);
            var v = qkv.select(2, 2).transpose(1, 2);
            q = TorchModelComparison.Rotate(q, cos, sin);
            k = TorchModelComparison.Rotate(k, cos, sin);
            var o = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).contiguous().view(t, H);
            x = Ln(x + Lin(o, p + "mixer.out_proj"), p + "norm1");
            x = Ln(x + Lin(torch.nn.functional.gelu(Lin(x, p + "mlp.fc1")), p + "mlp.fc2"), p + "norm2");
        }
        return x.contiguous().data<float>().ToArray();
    }

    [Fact]
    public void States_MatchLibtorch_AloneAndPacked()
    {
        var w = Weights();
        TorchModelComparison.StatesMatch(w, $$"""
                {"model_type": "xlm-roberta", "hidden_size": {{H}}, "num_attention_heads": {{Heads}}, "num_hidden_layers": {{Layers}}, "intermediate_size": {{Ff}},
                 "hidden_act": "gelu", "layer_norm_eps": 1e-05, "max_position_embeddings": 8194, "type_vocab_size": 1, "vocab_size": {{Vocab}}, "pad_token_id": 1,
                 "position_embedding_type": "rotary", "rotary_emb_base": {{Theta}}, "lora_rank": {{Rank}}, "lora_alpha": {{Alpha}},
                 "lora_adaptations": ["retrieval.query", "retrieval.passage", "separation", "classification", "text-matching"]}
                """, H, Vocab, 17, [300, 17, 700], ids => Torch(w, ids), output, new FastAttn.Embeddings.BertLoadOptions { Adapter = "retrieval.passage" });
    }
}
