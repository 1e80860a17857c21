using BenchmarkDotNet.Attributes;
using FastAttn.Embeddings;
using FastAttn.IO;

namespace FastAttn.Benchmarks;

/// <summary>
/// What each architecture's own parts cost on the same shape (6 layers, hidden 384, 6 heads of 64, feed-forward 1536 —
/// DeBERTa-v3-xsmall's width): BERT, RoBERTa (positions after the padding index: the same layers) and DeBERTa-v3
/// (disentangled attention: two more products per head over the relative table, the scores gathered per distance, no
/// fused attention kernel) and ModernBERT (pre-norm, RoPE, a GLU feed-forward of the same work — intermediate 1024, so
/// Wi has 2048 rows — and two of every three layers attending within ±64 tokens), JinaBERT (BERT's post-norm layers with
/// ALiBi — a distance bias per head on every score tile — and a GEGLU feed-forward of the same work) and GTE's "new"
/// architecture (post-norm, NTK-scaled RoPE, the same GLU), and Qwen3 (Qwen3-Embedding's decoder layer: pre-RMS-norm,
/// per-head q/k norms, RoPE, 3 key/value heads for the 6 query heads, causal attention, SwiGLU of intermediate 1024 — 8 %
/// less nominal work than BERT's layer from the smaller k/v projections, and half the attention scores), and Gemma 3 as
/// EmbeddingGemma runs it (the same products with four RMS norms per layer, bidirectional attention, five of six layers
/// within ±256 tokens), random weights, one sequence of 16, 128 or 512 tokens, last_hidden_state. No pretrained model of
/// the last seven is served here, so there is no peer to run them against; the ratio to BERT is the figure.
/// </summary>
public class ArchitectureBenchmarks
{
    [Params("bert", "roberta", "deberta-v3", "modernbert", "jina", "gte", "qwen3", "gemma3")]
    public string Arch = "bert";

    [Params(16, 128, 512)]
    public int Tokens = 16;

    [Params(1, 2)]
    public int Threads = 1;

    private const int H = 384, Heads = 6, Layers = 6, Ff = 1536, Vocab = 1000, MaxPos = 512;

    private BertModel? _model;
    private EmbeddingSession? _session;
    private int[] _ids = [], _lengths = [];
    private float[] _out = [];
    private string _dir = "";

    /// <summary>Nominal work: 2·tokens·(4H² + 2H·FF) per layer plus the attention's 4·tokens²·H (DeBERTa's relative products not counted).</summary>
    public double Flops => Layers * (2.0 * Tokens * (4.0 * H * H + 2.0 * H * Ff) + 4.0 * Tokens * Tokens * H);

    [GlobalSetup]
    public void Setup()
    {
        _dir = Path.Combine(Path.GetTempPath(), $"fastattn-arch-{Arch}-{Environment.ProcessId}");
        Directory.CreateDirectory(_dir);
        var rnd = new Random(5);
        var entries = new List<SafeTensorsWriter.Entry>();
        string p = Arch switch { "roberta" => "roberta.", "deberta-v3" => "deberta.", _ => "bert." };
        void Add(string name, params long[] shape)
        {
            long n = shape.Aggregate(1L, (a, b) => a * b);
            var d = new float[n];
            bool norm = name.EndsWith("LayerNorm.weight", StringComparison.Ordinal) || name.EndsWith("norm.weight", StringComparison.Ordinal);
            for (long i = 0; i < n; i++) d[i] = norm ? 1f + (float)(rnd.NextDouble() - 0.5) * 0.1f : (float)(rnd.NextDouble() - 0.5) * 0.1f;
            entries.Add(new SafeTensorsWriter.Entry(name, d, shape));
        }
        bool deberta = Arch == "deberta-v3";
        if (Arch == "modernbert")
        {
            Add("model.embeddings.tok_embeddings.weight", Vocab, H); Add("model.embeddings.norm.weight", H);
            for (int l = 0; l < Layers; l++)
            {
                string q = $"model.layers.{l}.";
                if (l > 0) Add(q + "attn_norm.weight", H);
                Add(q + "attn.Wqkv.weight", 3 * H, H); Add(q + "attn.Wo.weight", H, H); Add(q + "mlp_norm.weight", H);
                Add(q + "mlp.Wi.weight", 2 * 1024, H); Add(q + "mlp.Wo.weight", H, 1024);
            }
            Add("model.final_norm.weight", H);
        }
        else if (Arch == "qwen3" || Arch == "gemma3")
        {
            Add("embed_tokens.weight", Vocab, H);
            for (int l = 0; l < Layers; l++)
            {
                string q = $"layers.{l}.";
                if (Arch == "gemma3") { Add(q + "pre_feedforward_layernorm.weight", H); Add(q + "post_feedforward_layernorm.weight", H); }
                Add(q + "input_layernorm.weight", H);
                Add(q + "self_attn.q_proj.weight", H, H); Add(q + "self_attn.k_proj.weight", H / 2, H); Add(q + "self_attn.v_proj.weight", H / 2, H);
                Add(q + "self_attn.o_proj.weight", H, H); Add(q + "self_attn.q_norm.weight", H / Heads); Add(q + "self_attn.k_norm.weight", H / Heads);
                Add(q + "post_attention_layernorm.weight", H);
                Add(q + "mlp.gate_proj.weight", 1024, H); Add(q + "mlp.up_proj.weight", 1024, H); Add(q + "mlp.down_proj.weight", H, 1024);
            }
            Add("norm.weight", H);
        }
        else if (Arch == "jina" || Arch == "gte")
        {
            // the GLU of equal work: intermediate 1024, one bias-free product of 2048 rows
            Add("embeddings.word_embeddings.weight", Vocab, H); Add("embeddings.token_type_embeddings.weight", 2, H);
            Add("embeddings.LayerNorm.weight", H); Add("embeddings.LayerNorm.bias", H);
            for (int l = 0; l < Layers; l++)
            {
                string q = $"encoder.layer.{l}.";
                if (Arch == "jina")
                {
                    foreach (var m in new[] { "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense" }) { Add(q + m + ".weight", H, H); Add(q + m + ".bias", H); }
                    Add(q + "attention.output.LayerNorm.weight", H); Add(q + "attention.output.LayerNorm.bias", H);
                    Add(q + "mlp.gated_layers.weight", 2 * 1024, H); Add(q + "mlp.wo.weight", H, 1024); Add(q + "mlp.wo.bias", H);
                    Add(q + "mlp.layernorm.weight", H); Add(q + "mlp.layernorm.bias", H);
                }
                else
                {
                    Add(q + "attention.qkv_proj.weight", 3 * H, H); Add(q + "attention.qkv_proj.bias", 3 * H);
                    Add(q + "attention.o_proj.weight", H, H); Add(q + "attention.o_proj.bias", H);
                    Add(q + "attn_ln.weight", H); Add(q + "attn_ln.bias", H);
                    Add(q + "mlp.up_gate_proj.weight", 2 * 1024, H); Add(q + "mlp.down_proj.weight", H, 1024); Add(q + "mlp.down_proj.bias", H);
                    Add(q + "mlp_ln.weight", H); Add(q + "mlp_ln.bias", H);
                }
            }
        }
        else
        {
        Add(p + "embeddings.word_embeddings.weight", Vocab, H);
        if (!deberta) Add(p + "embeddings.position_embeddings.weight", Arch == "roberta" ? MaxPos + 2 : MaxPos, H);
        if (!deberta) Add(p + "embeddings.token_type_embeddings.weight", Arch == "roberta" ? 1 : 2, H);
        Add(p + "embeddings.LayerNorm.weight", H); Add(p + "embeddings.LayerNorm.bias", H);
        if (deberta) { Add(p + "encoder.rel_embeddings.weight", 512, H); Add(p + "encoder.LayerNorm.weight", H); Add(p + "encoder.LayerNorm.bias", H); }
        for (int l = 0; l < Layers; l++)
        {
            string q = $"{p}encoder.layer.{l}.";
            string[] proj = deberta ? ["attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj"] : ["attention.self.query", "attention.self.key", "attention.self.value"];
            foreach (var m in proj.Append("attention.output.dense")) { Add(q + m + ".weight", H, H); Add(q + m + ".bias", H); }
            Add(q + "attention.output.LayerNorm.weight", H); Add(q + "attention.output.LayerNorm.bias", H);
            Add(q + "intermediate.dense.weight", Ff, H); Add(q + "intermediate.dense.bias", Ff);
            Add(q + "output.dense.weight", H, Ff); Add(q + "output.dense.bias", H);
            Add(q + "output.LayerNorm.weight", H); Add(q + "output.LayerNorm.bias", H);
        }
        }
        SafeTensorsWriter.Write(Path.Combine(_dir, "model.safetensors"), entries);
        string common = $"\"hidden_size\": {H}, \"num_attention_heads\": {Heads}, \"num_hidden_layers\": {Layers}, \"intermediate_size\": {Ff}, \"hidden_act\": \"gelu\", \"vocab_size\": {Vocab}";
        File.WriteAllText(Path.Combine(_dir, "config.json"), Arch switch
        {
            "roberta" => $$"""{"model_type": "roberta", {{common}}, "max_position_embeddings": {{MaxPos + 2}}, "type_vocab_size": 1, "layer_norm_eps": 1e-5, "pad_token_id": 1}""",
            "deberta-v3" => $$"""{"model_type": "deberta-v2", {{common}}, "max_position_embeddings": {{MaxPos}}, "type_vocab_size": 0, "layer_norm_eps": 1e-7, "relative_attention": true, "pos_att_type": ["p2c", "c2p"], "position_buckets": 256, "max_relative_positions": -1, "norm_rel_ebd": "layer_norm", "share_att_key": true, "position_biased_input": false}""",
            "modernbert" => $$"""{"model_type": "modernbert", "hidden_size": {{H}}, "num_attention_heads": {{Heads}}, "num_hidden_layers": {{Layers}}, "intermediate_size": 1024, "hidden_activation": "gelu", "vocab_size": {{Vocab}}, "max_position_embeddings": 8192, "local_attention": 128, "global_attn_every_n_layers": 3}""",
            "jina" => $$"""{"model_type": "bert", "hidden_size": {{H}}, "num_attention_heads": {{Heads}}, "num_hidden_layers": {{Layers}}, "intermediate_size": 1024, "hidden_act": "gelu", "vocab_size": {{Vocab}}, "max_position_embeddings": 8192, "type_vocab_size": 2, "position_embedding_type": "alibi", "feed_forward_type": "geglu"}""",
            "gte" => $$"""{"model_type": "new", "hidden_size": {{H}}, "num_attention_heads": {{Heads}}, "num_hidden_layers": {{Layers}}, "intermediate_size": 1024, "hidden_act": "gelu", "vocab_size": {{Vocab}}, "max_position_embeddings": 8192, "type_vocab_size": 2, "rope_theta": 500000, "rope_scaling": {"type": "ntk", "factor": 2.0}, "pack_qkv": true}""",
            "gemma3" => $$"""{"model_type": "gemma3_text", "hidden_size": {{H}}, "num_attention_heads": {{Heads}}, "num_key_value_heads": {{Heads / 2}}, "head_dim": {{H / Heads}}, "num_hidden_layers": {{Layers}}, "intermediate_size": 1024, "hidden_activation": "gelu_pytorch_tanh", "vocab_size": {{Vocab}}, "max_position_embeddings": 2048, "rope_theta": 1000000, "rope_local_base_freq": 10000, "query_pre_attn_scalar": 64, "sliding_window": 512, "use_bidirectional_attention": true, "rms_norm_eps": 1e-6}""",
            "qwen3" => $$"""{"model_type": "qwen3", "hidden_size": {{H}}, "num_attention_heads": {{Heads}}, "num_key_value_heads": {{Heads / 2}}, "head_dim": {{H / Heads}}, "num_hidden_layers": {{Layers}}, "intermediate_size": 1024, "hidden_act": "silu", "vocab_size": {{Vocab}}, "max_position_embeddings": 32768, "rope_theta": 1000000, "rms_norm_eps": 1e-6}""",
            _ => $$"""{"model_type": "bert", {{common}}, "max_position_embeddings": {{MaxPos}}, "type_vocab_size": 2, "layer_norm_eps": 1e-12}""",
        });
        _model = BertModel.Load(_dir);
        _session = new EmbeddingSession(_model, null, new SentenceEmbedderOptions { Threads = Threads, MaxBatchTokens = 512, MaxTokensPerText = 512 });
        _ids = [.. Enumerable.Range(0, Tokens).Select(i => 3 + (i * 37) % (Vocab - 3))];
        _lengths = [Tokens];
        _out = new float[Tokens * H];
        _session.HiddenStates(_ids, _lengths, _out);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _session?.Dispose();
        _model?.Dispose();
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    [Benchmark(Description = "last_hidden_state, one sequence")]
    public float States()
    {
        _session!.HiddenStates(_ids, _lengths, _out);
        return _out[0];
    }
}
