using FastAttn.Embeddings;
using FastAttn.Kernels;
using FastAttn.Tests.IO;
using static FastAttn.Tests.Layers.LayerTests;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// nomic-embed-text-v2-moe (NomicBERT with a plain GELU feed-forward and a mixture of experts on every other layer): the
/// router's float32 softmax over all experts, the top k per token (weights not renormalised unless the config says so),
/// each expert act(x·W1ₑᵀ)·W2ₑ on its tokens, the weighted sum plus one shared bias, post-norm. A tiny model with random
/// weights against a double-precision one written here from the formulas of its NomicRouter/NomicExperts/NomicBertBlock,
/// with and without renormalised weights, and the plain (no experts) v2 form, on every ISA path, packed and alone.
/// </summary>
public class NomicMoeTests
{
    private const int H = 24, Heads = 3, Layers = 4, Vocab = 50, Ff = 32, Experts = 4, TopK = 2;

    public sealed record Setting(string Name, int EveryN, bool Normalize, string Prefix)
    {
        public override string ToString() => Name;
    }

    public static readonly Setting V2Moe = new("v2-moe", 2, false, "");
    public static readonly Setting Normalized = new("normalized", 2, true, "bert.");
    public static readonly Setting Plain = new("plain", 0, false, "");

    public static TheoryData<Setting> Settings => [V2Moe, Normalized, Plain];

    private static bool Moe(Setting st, int layer) => st.EveryN > 0 && layer % st.EveryN == 1;

    private static Dictionary<string, (float[] Data, long[] Shape)> Checkpoint(Setting st)
    {
        var t = new Dictionary<string, (float[], long[])>();
        int s = 5100;
        string p = st.Prefix;
        void Add(string name, float scale, params long[] shape) => BertModelTests.AddRandom(t, name, scale, s++, shape);
        Add(p + "embeddings.word_embeddings.weight", 0.5f, Vocab, H);
        Add(p + "embeddings.token_type_embeddings.weight", 0.5f, 1, H);
        Add(p + "emb_ln.weight", 0.2f, H); Add(p + "emb_ln.bias", 0.1f, H);
        for (int l = 0; l < Layers; l++)
        {
            string q = $"{p}encoder.layers.{l}.";
            Add(q + "attn.Wqkv.weight", 0.4f, 3 * H, H); Add(q + "attn.Wqkv.bias", 0.1f, 3 * H);
            Add(q + "attn.out_proj.weight", 0.3f, H, H); Add(q + "attn.out_proj.bias", 0.1f, H);
            if (Moe(st, l))
            {
                // a router of large weights spreads the softmax, so the top two are far from ties
                Add(q + "mlp.router.layer.weight", 1.5f, Experts, H);
                Add(q + "mlp.experts.mlp.w1", 0.3f, Experts * Ff, H);
                Add(q + "mlp.experts.mlp.w2", 0.3f, Experts * Ff, H);
                Add(q + "mlp.experts.bias", 0.2f, H);
            }
            else
            {
                Add(q + "mlp.fc1.weight", 0.3f, Ff, H); Add(q + "mlp.fc1.bias", 0.1f, Ff);
                Add(q + "mlp.fc2.weight", 0.2f, H, Ff); Add(q + "mlp.fc2.bias", 0.1f, H);
            }
            Add(q + "norm1.weight", 0.2f, H); Add(q + "norm1.bias", 0.1f, H);
            Add(q + "norm2.weight", 0.2f, H); Add(q + "norm2.bias", 0.1f, H);
        }
        return t;
    }

    private static string ConfigJson(Setting st) => $$"""
        {"architectures": ["NomicBertModel"], "model_type": "nomic_bert", "activation_function": "gelu", "n_embd": {{H}}, "n_head": {{Heads}}, "n_layer": {{Layers}},
         "n_inner": {{Ff}}, "vocab_size": {{Vocab}}, "type_vocab_size": 1, "n_positions": 2048, "layer_norm_epsilon": 1e-05, "rotary_emb_base": 10000,
         "rotary_emb_fraction": 1.0, "rotary_emb_interleaved": false, "prenorm": false, "causal": false, "qkv_proj_bias": true, "mlp_fc1_bias": true,
         "mlp_fc2_bias": true, "moe_every_n_layers": {{st.EveryN}}, "num_experts": {{Experts}}, "moe_top_k": {{TopK}}, "moe_normalize_expert_weights": {{(st.Normalize ? "true" : "false")}},
         "expert_choice_router": false, "moe_impl": "megablocks", "pad_vocab_size_multiple": 1}
        """;

    private static double[] RefStates(Dictionary<string, (float[] Data, long[] Shape)> w, Setting st, int[] ids)
    {
        float[] W(string n) => w[st.Prefix + n].Data;
        int t = ids.Length;
        var x = new double[t * H];
        for (int i = 0; i < t; i++)
            for (int c = 0; c < H; c++) x[i * H + c] = (double)W("embeddings.word_embeddings.weight")[ids[i] * H + c] + W("embeddings.token_type_embeddings.weight")[c];
        x = Ln(x, t, H, W("emb_ln.weight"), W("emb_ln.bias"), 1e-5);
        for (int l = 0; l < Layers; l++)
        {
            string q = $"encoder.layers.{l}.";
            var qkv = Lin(x, t, W(q + "attn.Wqkv.weight"), W(q + "attn.Wqkv.bias"), 3 * H, H);
            RotaryReference.Rotate(qkv, t, H, Heads, 10000);
            var o = Lin(RotaryReference.Attend(qkv, t, H, Heads), t, W(q + "attn.out_proj.weight"), W(q + "attn.out_proj.bias"), H, H);
            var x1 = Ln(x.Zip(o, (a, b) => a + b).ToArray(), t, H, W(q + "norm1.weight"), W(q + "norm1.bias"), 1e-5);
            double[] f;
            if (Moe(st, l))
            {
                f = new double[t * H];
                var logits = Lin(x1, t, W(q + "mlp.router.layer.weight"), new float[Experts], Experts, H);
                var w1 = W(q + "mlp.experts.mlp.w1");
                var w2 = W(q + "mlp.experts.mlp.w2");
                for (int i = 0; i < t; i++)
                {
                    var z = logits.AsSpan(i * Experts, Experts).ToArray();
                    double max = z.Max(), sum = z.Sum(v => Math.Exp(v - max));
                    var p = z.Select(v => Math.Exp(v - max) / sum).ToArray();
                    var top = Enumerable.Range(0, Experts).OrderByDescending(e => p[e]).ThenBy(e => e).Take(TopK).ToArray();
                    double norm = st.Normalize ? top.Sum(e => p[e]) : 1;
                    foreach (int e in top)
                    {
                        var hid = new double[Ff];
                        for (int k = 0; k < Ff; k++)
                        {
                            double acc = 0;
                            for (int c = 0; c < H; c++) acc += x1[i * H + c] * w1[(e * Ff + k) * H + c];
                            hid[k] = FastAttn.Tests.Reference.Act(acc, Activation.Gelu);
                        }
                        for (int c = 0; c < H; c++)
                        {
                            double acc = 0;
                            for (int k = 0; k < Ff; k++) acc += hid[k] * w2[(e * Ff + k) * H + c];
                            f[i * H + c] += p[e] / norm * acc;
                        }
                    }
                    for (int c = 0; c < H; c++) f[i * H + c] += W(q + "mlp.experts.bias")[c];
                }
            }
            else
            {
                var hid = Lin(x1, t, W(q + "mlp.fc1.weight"), W(q + "mlp.fc1.bias"), Ff, H).Select(v => FastAttn.Tests.Reference.Act(v, Activation.Gelu)).ToArray();
                f = Lin(hid, t, W(q + "mlp.fc2.weight"), W(q + "mlp.fc2.bias"), H, Ff);
            }
            x = Ln(x1.Zip(f, (a, b) => a + b).ToArray(), t, H, W(q + "norm2.weight"), W(q + "norm2.bias"), 1e-5);
        }
        return x;
    }

    private static readonly int[][] Sequences =
        [[0, 7, 11, 2], [0, 2], [0], [0, .. Enumerable.Range(0, 36).Select(i => 3 + (i * 7) % 45), 2], [0, 45, 5, 9, 9, 30, 12, 2], [.. Enumerable.Range(0, 29).Select(i => (i * 11) % Vocab)]];

    private static BertModel LoadModel(TempDir dir, Setting st)
    {
        BertModelTests.Write(dir, Checkpoint(st), config: false);
        File.WriteAllText(dir.File("config.json"), ConfigJson(st));
        return BertModel.Load(dir.Path);
    }

    [Theory]
    [MemberData(nameof(Settings))]
    public void States_MatchTheReference_PackedAndAlone(Setting st)
    {
        var w = Checkpoint(st);
        var expected = Sequences.Select(s => RefStates(w, st, s)).ToArray();
        IsaPaths.ForEach(() =>
        {
            using var dir = new TempDir();
            using var model = LoadModel(dir, st);
            Assert.Equal(st.EveryN > 0 ? 2 : 0, model.Encoder.Blocks.OfType<MoeEncoderLayer>().Count());
            BertModelTests.AssertStatesWithoutAllocation(model, new SentenceEmbedderOptions { MaxBatchTokens = 128, MaxTokensPerText = 40 }, Sequences, expected, H, st.ToString());
        });
    }

    [Fact]
    public void TwoThreads_SameBits_NoAllocations()
    {
        using var dir = new TempDir();
        using var model = LoadModel(dir, V2Moe);
        BertModelTests.AssertTwoThreadsSameBits(model, Sequences, H, 128);
    }

    [Fact]
    public void Config_RefusesWhatIsNotRun()
    {
        var ok = BertConfig.FromJson(ConfigJson(V2Moe));
        Assert.Equal((Ff, Activation.Gelu), (ok.IntermediateSize, ok.HiddenAct));
        BertModelTests.AssertEditsRefused(ConfigJson(V2Moe),
            ("\"expert_choice_router\": false", "\"expert_choice_router\": true"),
            ("\"moe_top_k\": 2", "\"moe_top_k\": 5"),
            ("\"moe_top_k\": 2", "\"moe_top_k\": 0"),
            ("\"activation_function\": \"gelu\"", "\"activation_function\": \"swiglu\""),     // experts with a gated MLP
            ("\"activation_function\": \"gelu\"", "\"activation_function\": \"mish\""),
            ("\"moe_every_n_layers\": 2", "\"moe_every_n_layers\": -1"),
            ("\"moe_impl\": \"megablocks\"", "\"moe_impl\": \"megablocks\", \"num_shared_experts\": 1"),
            ("\"moe_impl\": \"megablocks\"", "\"moe_impl\": \"megablocks\", \"ffn_div\": 2"));
        // the checkpoint must have the experts where the config puts them
        using var dir = new TempDir();
        BertModelTests.Write(dir, Checkpoint(Plain), config: false);
        File.WriteAllText(dir.File("config.json"), ConfigJson(V2Moe));
        Assert.Contains("mlp.router.layer.weight", Assert.Throws<InvalidDataException>(() => BertModel.Load(dir.Path)).Message);
    }
}
