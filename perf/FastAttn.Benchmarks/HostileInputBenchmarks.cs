using System.Buffers.Binary;
using System.Text;
using BenchmarkDotNet.Attributes;
using FastAttn.IO;
using FastAttn.Tagging;

namespace FastAttn.Benchmarks;

/// <summary>
/// Linear time on hostile input (issue 13): 1 MB of ordinary text against 1 MB of the audit's adversarial patterns, for
/// the English tokenizer, the BERT WordPiece, SentencePiece Unigram and byte-level BPE tokenizers (GPT-2's and Qwen2's pre-tokenisation) and the CoNLL-U reader, and a safetensors header of many tiny entries. Compare the medians of
/// one method across inputs: a quadratic path would take minutes on 1 MB instead of milliseconds.
/// </summary>
public class HostileInputBenchmarks
{
    [Params("ordinary", "quote-pairs", "apostrophes", "lt-url", "random-marks", "one-chunk", "space-runs", "digits")]
    public string Input = "ordinary";

    private string _text = "", _conllu = "";
    private byte[] _header = [];
    // all-MiniLM-L6-v2's vocabulary, no truncation: the whole megabyte goes through basic rules and WordPiece
    private FastAttn.Embeddings.BertWordPieceTokenizer? _wordPiece;
    // a Unigram tokenizer.json as XLM-RoBERTa's is laid out (charsmap + Replace + Metaspace) over a 50,500-piece vocabulary
    // built from the same word pieces (as UnigramParityTests builds it); no truncation
    private FastAttn.Embeddings.UnigramTokenizer? _unigram;
    // a byte-level BPE tokenizer.json as RoBERTa's is laid out, its merges built from the same word pieces (as BpeParityTests builds them)
    private FastAttn.Embeddings.BpeTokenizer? _bpe;
    // the same merges laid out as Qwen2/Qwen3's tokenizer.json is (NFC, Split by Qwen2's pattern, the byte alphabet, end-of-text template)
    private FastAttn.Embeddings.BpeTokenizer? _qwen;

    private static string Mb(string unit) => new StringBuilder(1 << 20).Insert(0, unit, (1 << 20) / unit.Length).ToString();

    [GlobalSetup]
    public void Setup()
    {
        var rnd = new Random(13);
        const string marks = "'\"’‘“”<>()[]{}.,;:!?-/@$%#`…&*_=+\\|~^ aZ09";
        _text = Input switch
        {
            "ordinary" => Mb("The committee said on Monday that it wouldn't approve the new budget until Mr. Smith explains the cuts. "),
            "quote-pairs" => "Hello " + Mb("'\"") + " world",
            "apostrophes" => Mb("'’"),
            "lt-url" => Mb("<") + "a@b.c",
            "random-marks" => new string(Enumerable.Range(0, 1 << 20).Select(_ => marks[rnd.Next(marks.Length)]).ToArray()),
            // white space with line breaks scattered in it (the Split patterns' \s*[\r\n]+ and \s+(?!\S) alternatives), and one run of digits
            "space-runs" => Mb("   \t  \n \r\n\u3000  \u00A0 \n      x"),
            "digits" => Mb("1234567890"),
            _ => Mb("x"),
        };
        _conllu = Input == "ordinary"
            ? Mb("1\tThe\tthe\tDET\tDT\t_\t2\tdet\t_\t_\n2\tdog\tdog\tNOUN\tNN\t_\t0\troot\t_\t_\n\n")
            : Mb("# text = " + _text[..Math.Min(40, _text.Length)].Replace('\n', ' ') + "\n1\tx\tx\tX\tX\t_\t0\t_\t_\t_\n");
        var sb = new StringBuilder("{");
        for (int i = 0; sb.Length < 1 << 20; i++) sb.Append(i == 0 ? "" : ",").Append($"\"t{i}\":{{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}");
        sb.Append('}');
        var h = Encoding.UTF8.GetBytes(sb.ToString());
        _header = new byte[8 + h.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(_header, (ulong)h.Length);
        h.CopyTo(_header, 8);
        _wordPiece = FastAttn.Embeddings.BertWordPieceTokenizer.FromVocabFile(FastAttn.TestSupport.MiniLmPackage.Files.Vocab,
            new FastAttn.Embeddings.BertTokenizerOptions { MaxTokens = int.MaxValue });
        string json = Path.Combine(Path.GetTempPath(), $"fastattn-unigram-{Environment.ProcessId}.json");
        FastAttn.TestSupport.UnigramFiles.TokenizerJson(json, FastAttn.TestSupport.UnigramFiles.PiecesFromWordPiece(File.ReadLines(FastAttn.TestSupport.MiniLmPackage.Files.Vocab), []),
            new FastAttn.TestSupport.UnigramFiles.Settings
            {
                Normalizer = FastAttn.TestSupport.UnigramFiles.XlmrNormalizer(FastAttn.TestSupport.UnigramFiles.CharsMap(FastAttn.TestSupport.UnigramFiles.NfkcLikeRules())),
                PreTokenizer = FastAttn.TestSupport.UnigramFiles.Metaspace(),
            });
        _unigram = FastAttn.Embeddings.UnigramTokenizer.FromTokenizerJson(json, int.MaxValue);
        var words = File.ReadLines(FastAttn.TestSupport.MiniLmPackage.Files.Vocab).Where(l => l.Length > 0 && !l.StartsWith('[')).Take(12_000)
            .SelectMany(l => l.StartsWith("##", StringComparison.Ordinal) ? [FastAttn.TestSupport.BpeFiles.ByteLevel(l[2..])] : new[] { FastAttn.TestSupport.BpeFiles.ByteLevel(" " + l), FastAttn.TestSupport.BpeFiles.ByteLevel(l) });
        var bpeModel = FastAttn.TestSupport.BpeFiles.Build(FastAttn.TestSupport.BpeFiles.ByteChars.Select(c => c.ToString()), words);
        FastAttn.TestSupport.BpeFiles.TokenizerJson(json, bpeModel, new FastAttn.TestSupport.BpeFiles.Settings { PreTokenizer = FastAttn.TestSupport.BpeFiles.ByteLevelPre() });
        _bpe = FastAttn.Embeddings.BpeTokenizer.FromTokenizerJson(json, int.MaxValue);
        FastAttn.TestSupport.BpeFiles.TokenizerJson(json, bpeModel, new FastAttn.TestSupport.BpeFiles.Settings
        {
            Normalizer = w => { w.WriteStartObject(); w.WriteString("type", "NFC"); w.WriteEndObject(); },
            PreTokenizer = FastAttn.TestSupport.BpeFiles.DecoderPre(FastAttn.TestSupport.BpeFiles.Qwen2Regex), PostProcessor = "eos", TupleMerges = true,
        });
        _qwen = FastAttn.Embeddings.BpeTokenizer.FromTokenizerJson(json, int.MaxValue);
        File.Delete(json);
    }

    [Benchmark(Description = "BpeTokenizer.Encode (byte-level), 1 MB")]
    public int Bpe() => _bpe!.Encode(_text).Length;

    [Benchmark(Description = "BpeTokenizer.Encode (Qwen2's Split), 1 MB")]
    public int Qwen() => _qwen!.Encode(_text).Length;

    [Benchmark(Description = "UnigramTokenizer.Encode, 1 MB")]
    public int Unigram() => _unigram!.Encode(_text).Length;

    [Benchmark(Description = "BertWordPieceTokenizer.Encode, 1 MB")]
    public int WordPiece() => _wordPiece!.Encode(_text).Length;

    [Benchmark(Baseline = true, Description = "EnglishTokenizer.Count, 1 MB")]
    public int Tokenize() => EnglishTokenizer.Count(_text);

    [Benchmark(Description = "ConllU.Parse, 1 MB")]
    public int Conllu() => ConllU.Parse(_conllu).Count;

    [Benchmark(Description = "safetensors header of 1 MB (tiny entries)")]
    public int Header()
    {
        using var f = SafeTensorsFile.Load(_header);
        return f.Tensors.Count;
    }
}
