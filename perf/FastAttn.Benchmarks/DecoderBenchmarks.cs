using FastAttn.TestSupport;
using BenchmarkDotNet.Attributes;
using FastAttn.Embeddings;
using FastAttn.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Benchmarks;

/// <summary>
/// Qwen3-Embedding-0.6B's layer (hidden 1024, 16 query heads and 8 key/value heads of 128, SwiGLU 3072, RMS norms, per-head
/// q/k norms, RoPE base 1,000,000, causal), four of them with random weights, one sequence of 16, 128 or 512 tokens,
/// last_hidden_state: FastAttn (safetensors + config.json through BertModel and EmbeddingSession) against libtorch running
/// the same model with the operations transformers' modeling_qwen3 uses on its sdpa path (RMS norm as Qwen3RMSNorm,
/// float32 RoPE tables, repeat_kv, causal scaled_dot_product_attention, SiLU gate). No ONNX export of Qwen3 is read, so
/// ONNX Runtime is not in this suite. Outputs are checked to agree before timing.
/// </summary>
[MemoryDiagnoser]
public class DecoderBenchmarks
{
    [Params(16, 128, 512)]
    public int Tokens = 16;

    [Params(1, 2)]
    public int Threads = 1;

    private const int H = 1024, Heads = 16, KvHeads = 8, D = 128, Ff = 3072, Layers = 4, Vocab = 2048;
    private const double Theta = 1_000_000, Eps = 1e-6;

    private BertModel? _model;
    private EmbeddingSession? _session;
    private int[] _ids = [], _lengths = [];
    private float[] _out = [];
    private string _dir = "";
    private readonly Dictionary<string, Tensor> _w = [];
    private Tensor? _tids, _cos, _sin;

    /// <summary>Nominal work: the five products per layer and the causal attention's half of 4·tokens²·heads·headDim.</summary>
    public double Flops => Layers * (2.0 * Tokens * H * (Heads * D + 2.0 * KvHeads * D + Heads * D + 3.0 * Ff) + 2.0 * Tokens * Tokens * Heads * D);

    [GlobalSetup]
    public void Setup()
    {
        _dir = Path.Combine(Path.GetTempPath(), $"fastattn-decoder-{Environment.ProcessId}");
        Directory.CreateDirectory(_dir);
        var rnd = new Random(7);
        var entries = new List<SafeTensorsWriter.Entry>();
        void Add(string name, float scale, float offset, params long[] shape)
        {
            long n = shape.Aggregate(1L, (a, b) => a * b);
            var d = new float[n];
            for (long i = 0; i < n; i++) d[i] = offset + (float)(rnd.NextDouble() * 2 - 1) * scale;
            entries.Add(new SafeTensorsWriter.Entry(name, d, shape));
            _w[name] = torch.tensor(d, shape);
        }
        Qwen3Layout.Tensors("", Layers, Vocab, H, Heads, KvHeads, D, Ff, (name, part, shape) => Add(name, part switch
        {
            Qwen3Layout.Part.Embedding => 1f, Qwen3Layout.Part.Norm => 0.1f, Qwen3Layout.Part.Down => 0.02f, _ => 0.03f,
        }, part == Qwen3Layout.Part.Norm ? 1 : 0, shape));
        SafeTensorsWriter.Write(Path.Combine(_dir, "model.safetensors"), entries);
        File.WriteAllText(Path.Combine(_dir, "config.json"), $$"""
            {"model_type": "qwen3", "hidden_size": {{H}}, "num_attention_heads": {{Heads}}, "num_key_value_heads": {{KvHeads}}, "head_dim": {{D}},
             "num_hidden_layers": {{Layers}}, "intermediate_size": {{Ff}}, "hidden_act": "silu", "rms_norm_eps": {{Eps}}, "rope_theta": {{Theta}},
             "max_position_embeddings": 32768, "vocab_size": {{Vocab}}, "attention_bias": false}
            """);
        _model = BertModel.Load(_dir);
        _session = new EmbeddingSession(_model, null, new SentenceEmbedderOptions { Threads = Threads, MaxBatchTokens = 512, MaxTokensPerText = 512 });
        _ids = [.. Enumerable.Range(0, Tokens).Select(i => 3 + (i * 37) % (Vocab - 3))];
        _lengths = [Tokens];
        _out = new float[Tokens * H];
        TorchPeer.Init(Threads);
        _tids = torch.tensor(_ids.Select(i => (long)i).ToArray());
        // the float32 RoPE tables as transformers builds them
        var inv = 1.0 / torch.pow(torch.tensor(Theta, dtype: ScalarType.Float32), torch.arange(0, D, 2, dtype: ScalarType.Int64).to(ScalarType.Float32) / D);
        var freqs = torch.outer(torch.arange(Tokens, dtype: ScalarType.Float32), inv);
        var emb = torch.cat([freqs, freqs], -1);
        _cos = emb.cos(); _sin = emb.sin();
        FastAttn();
        using (torch.inference_mode())
        using (var scope = torch.NewDisposeScope())
        {
            var y = Forward().data<float>().ToArray();
            double max = 0, big = 0;
            for (int i = 0; i < y.Length; i++) { max = Math.Max(max, Math.Abs(y[i] - _out[i])); big = Math.Max(big, Math.Abs(y[i])); }
            if (!(max <= 1e-4 * big)) throw new InvalidOperationException($"libtorch differs from FastAttn by {max} (max |y| {big}) at {Tokens} tokens.");
            Console.WriteLine($"// libtorch agrees with FastAttn at {Tokens} tokens, {Threads} thread(s): max |diff| = {max:E2} against max |y| {big:E2}");
        }
    }

    private static Tensor Rotate(Tensor x, Tensor cos, Tensor sin)
    {
        long half = x.shape[^1] / 2;
        return x * cos + torch.cat([-x.narrow(-1, half, half), x.narrow(-1, 0, half)], -1) * sin;
    }

    private Tensor Forward()
    {
        int t = Tokens;
        Tensor Rms(Tensor x, string name) => _w[name + ".weight"] * (x * torch.rsqrt(x.pow(2).mean([-1L], keepdim: true) + Eps));
        var x = _w["embed_tokens.weight"].index_select(0, _tids!);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"layers.{l}.";
            var n = Rms(x, p + "input_layernorm");
            var q = Rms(torch.nn.functional.linear(n, _w[p + "self_attn.q_proj.weight"]).view(1, t, Heads, D), p + "self_attn.q_norm").transpose(1, 2);
            var k = Rms(torch.nn.functional.linear(n, _w[p + "self_attn.k_proj.weight"]).view(1, t, KvHeads, D), p + "self_attn.k_norm").transpose(1, 2);
            var v = torch.nn.functional.linear(n, _w[p + "self_attn.v_proj.weight"]).view(1, t, KvHeads, D).transpose(1, 2);
            q = Rotate(q, _cos!, _sin!);
            k = Rotate(k, _cos!, _sin!).repeat_interleave(Heads / KvHeads, 1);
            v = v.repeat_interleave(Heads / KvHeads, 1);
            var o = torch.nn.functional.scaled_dot_product_attention(q, k, v, null, 0.0, true).transpose(1, 2).contiguous().view(t, Heads * D);
            x = x + torch.nn.functional.linear(o, _w[p + "self_attn.o_proj.weight"]);
            var n2 = Rms(x, p + "post_attention_layernorm");
            x = x + torch.nn.functional.linear(torch.nn.functional.silu(torch.nn.functional.linear(n2, _w[p + "mlp.gate_proj.weight"])) * torch.nn.functional.linear(n2, _w[p + "mlp.up_proj.weight"]),
                _w[p + "mlp.down_proj.weight"]);
        }
        return Rms(x, "norm");
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _session?.Dispose();
        _model?.Dispose();
        foreach (var t in _w.Values) t.Dispose();
        _w.Clear();
        _tids?.Dispose(); _cos?.Dispose(); _sin?.Dispose();
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    [Benchmark(Baseline = true, Description = "FastAttn: last_hidden_state")]
    public float FastAttn()
    {
        _session!.HiddenStates(_ids, _lengths, _out);
        return _out[0];
    }

    [Benchmark(Description = "libtorch: modeling_qwen3's operations (sdpa)")]
    public void Torch()
    {
        using var mode = torch.inference_mode();
        using var scope = torch.NewDisposeScope();
        Forward();
    }
}
