using BenchmarkDotNet.Attributes;
using FastAttn.IO;
using FastAttn.Tagging;
using PosTagTraining;
using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Benchmarks;

/// <summary>
/// The bundled POS taggers on one 20-token sentence, one thread: FastAttn from raw text (tokenizer, features, network,
/// argmax) and from words, against the same model (same file) run by libtorch through TorchSharp from precomputed
/// feature ids (so libtorch is not charged for tokenizing or feature lookup).
/// </summary>
public class TaggerBenchmarks
{
    [Params("attention", "fc")]
    public string Model = "attention";

    public const string Sentence = "The committee said on Monday that it wouldn't approve the new budget until the mayor explains the cuts.";

    private PosTagModel? _model;
    private PosTagger? _tagger;
    private TaggerNet? _net;
    private Tensor? _ids;
    private readonly Range[] _tokens = new Range[64];
    private readonly int[] _tags = new int[64];
    private string[] _words = [];
    private readonly long[] _torchTags = new long[64];

    [GlobalSetup]
    public void Setup()
    {
        torch.set_num_threads(1);
        string path = Path.Combine(Report.RepoRoot(), "models", "pos", Model + ".safetensors");
        _model = PosTagModel.Load(path);
        _tagger = _model.CreateTagger();
        _words = EnglishTokenizer.Tokenize(Sentence);
        if (_words.Length != 20) throw new InvalidOperationException($"the benchmark sentence has {_words.Length} tokens, not 20");
        _net = TaggerNet.Load(path, _model);
        int F = FeatureVocabulary.Count;
        var ids = new long[_words.Length * F];
        var row = new int[F];
        for (int i = 0; i < _words.Length; i++)
        {
            _model.Vocabulary.Extract(_words[i], row);
            for (int f = 0; f < F; f++) ids[i * F + f] = row[f];
        }
        _ids = tensor(ids, [_words.Length, 1, F]);
        // the two agree before anything is timed
        FastAttnText();
        Torch();
        for (int i = 0; i < _words.Length; i++)
            if (_tags[i] != _torchTags[i]) throw new InvalidOperationException($"{Model}: FastAttn and libtorch disagree on token {i}");
        Console.WriteLine($"// {Model}: {string.Join(' ', _words.Select((w, i) => w + "/" + _model.Tags[_tags[i]]))}");
    }

    [GlobalCleanup]
    public void Cleanup() { _tagger?.Dispose(); _model?.Dispose(); _net?.Dispose(); _ids?.Dispose(); }

    [Benchmark(Baseline = true, Description = "FastAttn Tag(text, spans): tokenize + features + network"), BenchmarkCategory("Tagger")]
    public int FastAttnText() => _tagger!.Tag(Sentence, _tokens, _tags);

    [Benchmark(Description = "FastAttn TagWords(words): features + network"), BenchmarkCategory("Tagger")]
    public void FastAttnWords() => _tagger!.TagWords(_words, _tags);

    [Benchmark(Description = "libtorch TaggerNet (feature ids precomputed)"), BenchmarkCategory("Tagger")]
    public void Torch()
    {
        using var mode = torch.inference_mode();
        using var logits = _net!.call(_ids!, null);
        using var pred = logits.argmax(-1);
        pred.data<long>().CopyTo(_torchTags, 0);
    }
}
