using System.Text;
using FastAttn.IO;
using FastAttn.Tagging;

namespace FastAttn.Fuzz;

/// <summary>
/// One fuzz target per parser. A target returns normally for input it accepts or rejects the documented way
/// (<see cref="InvalidDataException"/> for files); any other exception, a hang or a crash is a finding. Targets also
/// check what they can of the result (token ranges, tensor sizes), so a silently wrong answer is a finding too.
/// The same functions run the committed corpus and every finding in the normal test run (FuzzRegressionTests).
/// </summary>
public static class Targets
{
    public static readonly string[] Names = ["safetensors", "npy", "conllu", "tokenizer", "onnx", "wordpiece", "stconfig", "tokjson", "vocab", "charsmap", "unigram", "bpe", "config", "tokconfig"];

    public static void Run(string target, ReadOnlySpan<byte> input)
    {
        switch (target)
        {
            case "safetensors": SafeTensors(input); break;
            case "npy": NpyFile(input); break;
            case "conllu": Conllu(input); break;
            case "tokenizer": Tokenizer(input); break;
            case "onnx": Onnx(input); break;
            case "wordpiece": WordPiece(input); break;
            case "stconfig": SentenceTransformersFolder(input); break;
            case "tokjson": TokenizerJson(input); break;
            case "vocab": VocabTxt(input); break;
            case "charsmap": CharsMap(input); break;
            case "unigram": Unigram(input); break;
            case "bpe": Bpe(input); break;
            case "config": Config(input); break;
            case "tokconfig": TokenizerConfig(input); break;
            default: throw new ArgumentException($"unknown fuzz target '{target}'; targets: {string.Join(", ", Names)}.");
        }
    }

    public static void SafeTensors(ReadOnlySpan<byte> input)
    {
        SafeTensorsFile? f = null, g = null;
        try { f = SafeTensorsFile.Load(input, "fuzz"); }
        catch (InvalidDataException) { }
        // the same bytes from a stream that cannot tell its length (read as far as the header says): the same verdict and tensors
        try { g = SafeTensorsFile.Load(new UnsizedStream(input.ToArray()), "fuzz"); }
        catch (InvalidDataException) { }
        using (g)
        {
            Check((f == null) == (g == null), "a stream without a length and memory disagree");
            if (f != null) Check(f.Tensors.SequenceEqual(g!.Tensors, SameTensor.Instance), "a stream without a length gives other tensors");
        }
        if (f == null) return;
        using (f)
        {
            long total = 0;
            foreach (var t in f.Tensors)
            {
                Check(t.Begin >= 0 && t.End >= t.Begin && t.End <= input.Length, "tensor range outside the input");
                if (t.Elements > 1 << 20) continue;
                var data = f.ReadFloat32(t.Name);
                Check(data.Length == t.Elements, "element count");
                total += t.End - t.Begin;
            }
            foreach (var kv in f.Metadata) Check(kv.Key != null && kv.Value != null, "null metadata");
        }
    }

    private sealed class SameTensor : IEqualityComparer<SafeTensorInfo>
    {
        public static readonly SameTensor Instance = new();
        public bool Equals(SafeTensorInfo? a, SafeTensorInfo? b) =>
            a!.Name == b!.Name && a.DType == b.DType && a.Begin == b.Begin && a.End == b.End && a.Shape.SequenceEqual(b.Shape);
        public int GetHashCode(SafeTensorInfo t) => t.Name.GetHashCode();
    }

    public static void NpyFile(ReadOnlySpan<byte> input)
    {
        try
        {
            var (shape, data) = Npy.Read(input, "fuzz");
            long n = 1;
            foreach (long d in shape) { Check(d >= 0, "negative dimension"); n *= d; }
            Check(n == data.Length, "shape does not match the data");
        }
        catch (InvalidDataException) { }
    }

    public static void Conllu(ReadOnlySpan<byte> input)
    {
        try
        {
            string text = Utf8Text.Decode(input, "fuzz");
            foreach (var s in ConllU.Parse(text, "fuzz"))
            {
                Check(s.Words.Length == s.Tags.Length && s.Words.Length > 0, "sentence shape");
                foreach (var w in s.Words) Check(w.Length > 0 && !w.Contains('\t'), "word");
            }
        }
        catch (InvalidDataException) { }
    }

    private static readonly Lazy<FeatureVocabulary> Vocabulary = new(() => FeatureVocabulary.Build(["the", "saw", "a", "I", "saw", "the"], 1, 1));

    public static void Tokenizer(ReadOnlySpan<byte> input)
    {
        // any text: invalid bytes become U+FFFD here (the tokenizer never sees bytes)
        string text = Encoding.UTF8.GetString(input);
        int n = EnglishTokenizer.Count(text);
        var ranges = new Range[n];
        Check(EnglishTokenizer.Tokenize(text, ranges) == n, "count differs between passes");
        int prev = 0;
        Span<int> ids = stackalloc int[FeatureVocabulary.Count];
        foreach (var r in ranges)
        {
            var (start, length) = r.GetOffsetAndLength(text.Length);
            Check(length > 0 && start >= prev, "tokens must be non-empty, in order, not overlapping");
            for (int i = prev; i < start; i++) Check(char.IsWhiteSpace(text[i]), "a non-space character belongs to no token");
            for (int i = start; i < start + length; i++) Check(!char.IsWhiteSpace(text[i]), "a token holds white space");
            Vocabulary.Value.Extract(text.AsSpan(start, length), ids);
            prev = start + length;
        }
        for (int i = prev; i < text.Length; i++) Check(char.IsWhiteSpace(text[i]), "a non-space character belongs to no token");
    }

    // the same input as a file (in a folder of its own, so external data can only name the file itself)
    private static readonly Lazy<string> OnnxPath = new(() =>
    {
        string dir = Path.Combine(Path.GetTempPath(), $"fastattn-fuzz-onnx-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        return Path.Combine(dir, "fuzz.onnx");
    });

    public static void Onnx(ReadOnlySpan<byte> input)
    {
        FastAttn.Onnx.OnnxModelFile f;
        // opened from its path the tensors' bytes are read from the file at the offsets a wire scan finds (not copied by
        // the parser): it must fail only with InvalidDataException, and read what the parse from memory reads
        File.WriteAllBytes(OnnxPath.Value, input.ToArray());
        FastAttn.Onnx.OnnxModelFile? opened;
        try { opened = FastAttn.Onnx.OnnxModelFile.Open(OnnxPath.Value); }
        catch (InvalidDataException) { opened = null; }
        try { f = FastAttn.Onnx.OnnxModelFile.Load(input, "fuzz"); }
        catch (InvalidDataException) { return; }
        Check(opened != null, "a model parsed from memory failed to open from its file");
        Check(f.TensorNames.Order().SequenceEqual(opened!.TensorNames.Order()), "opened from its file, a model lists other parameters");
        foreach (var name in f.TensorNames)
        {
            Check(f.TryGetShape(name, out var shape), "a listed parameter has no shape");
            Check(opened.TryGetShape(name, out var openedShape) && shape.SequenceEqual(openedShape), "opened from its file, a parameter has another shape");
            long n = shape.Aggregate(1L, (a, b) => a * b);
            if (n > 1 << 20) continue;
            var x = new float[n];
            var y = new float[n];
            f.ReadFloat32(name, x);
            opened.ReadFloat32(name, y);
            Check(x.AsSpan().SequenceEqual(y), "opened from its file, a parameter reads other values"); // float.Equals: NaN equals NaN
        }
        // the BERT loader's view of the graph, and a load attempt (which may only fail with InvalidDataException)
        try { using var m = FastAttn.Embeddings.BertModel.Load(f, new FastAttn.Embeddings.BertConfig { HiddenSize = 4, NumAttentionHeads = 2, NumHiddenLayers = 1, IntermediateSize = 8, VocabSize = 10, MaxPositionEmbeddings = 8 }); }
        catch (InvalidDataException) { }
        // and the architecture read from the graph alone, as a model file without config.json is loaded
        try { using var m = FastAttn.Embeddings.BertModel.LoadOnnx(f, null, "config.json", null, "fuzz.onnx"); }
        catch (InvalidDataException) { }
    }

    private static readonly Lazy<FastAttn.Embeddings.BertWordPieceTokenizer> Bert = new(() => FastAttn.Embeddings.BertWordPieceTokenizer.FromVocab(
        new MemoryStream(Encoding.UTF8.GetBytes("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n##s\na\n##b\ncafe\n!\n,\n$\n中\n##e\ne\n")), new FastAttn.Embeddings.BertTokenizerOptions { MaxTokens = 64 }));

    public static void WordPiece(ReadOnlySpan<byte> input)
    {
        string text = Encoding.UTF8.GetString(input);
        var t = Bert.Value;
        var ids = t.Encode(text, out bool truncated);
        Check(ids.Length >= 2 && ids.Length <= 64 && ids[0] == t.ClsId && ids[^1] == t.SepId, "[CLS] … [SEP] within MaxTokens");
        foreach (int id in ids) Check((uint)id < (uint)t.VocabularySize, "an id outside the vocabulary");
        Check(!truncated || ids.Length == 64, "truncated but shorter than MaxTokens");
        foreach (var w in t.PreTokenize(text)) Check(w.Length > 0 && !w.Any(char.IsWhiteSpace), "a pre-token is empty or holds white space");
    }

    /// <summary>
    /// A sentence-transformers folder: the input split at NUL bytes into modules.json, the Pooling config (served for every
    /// path ending in config.json outside a Dense module), sentence_bert_config.json, a Dense module's config.json and its
    /// model.safetensors; an absent or empty part is no such file. Accepted Dense modules must chain.
    /// </summary>
    public static void SentenceTransformersFolder(ReadOnlySpan<byte> input)
    {
        var parts = new List<byte[]>();
        int start = 0;
        for (int i = 0; i <= input.Length && parts.Count < 5; i++)
            if (i == input.Length || (input[i] == 0 && parts.Count < 4)) { parts.Add(input[start..i].ToArray()); start = i + 1; }
        byte[]? Part(int i) => i < parts.Count && parts[i].Length > 0 ? parts[i] : null;
        var asked = new List<string>();
        FastAttn.Embeddings.SentenceTransformersConfig? c;
        try
        {
            c = FastAttn.Embeddings.SentenceTransformersConfig.ReadFiles(path =>
            {
                asked.Add(path);
                return path == "modules.json" ? Part(0) : path.EndsWith("sentence_bert_config.json", StringComparison.Ordinal) ? Part(2)
                    : path.Contains("Dense", StringComparison.Ordinal) && path.EndsWith("config.json", StringComparison.Ordinal) ? Part(3)
                    : path.EndsWith("model.safetensors", StringComparison.Ordinal) ? Part(4)
                    : path.EndsWith("config.json", StringComparison.Ordinal) ? Part(1) : null;
            }, "fuzz");
        }
        catch (InvalidDataException) { return; }
        foreach (var p in asked) Check(!p.Split('/', '\\').Contains("..") && !Path.IsPathRooted(p), "a file outside the model folder was asked for");
        if (c == null) { Check(Part(0) == null && Part(2) == null, "files present but no configuration"); return; }
        // every single sentence-transformers pooling mode is read (mean, CLS, max, mean over √length, weighted mean, last token); never BERT's pooler
        Check(Enum.IsDefined(c.Pooling) && c.Pooling != FastAttn.Embeddings.Pooling.Pooler, "a pooling sentence-transformers does not have");
        Check(c.MaxSeqLength is null or >= 3, "max_seq_length below 3");
        Check(c.Dimension is null or > 0, "a dimension below 1");
        for (int i = 0; i < c.Dense.Count; i++)
            Check(c.Dense[i].InFeatures == (i == 0 ? c.Dimension ?? c.Dense[0].InFeatures : c.Dense[i - 1].OutFeatures), "Dense modules that do not chain");
    }

    /// <summary>Hugging Face's tokenizer.json of a BERT: read, then one fixed text encoded and its ids checked.</summary>
    public static void TokenizerJson(ReadOnlySpan<byte> input)
    {
        FastAttn.Embeddings.BertWordPieceTokenizer t;
        try { t = FastAttn.Embeddings.BertWordPieceTokenizer.FromTokenizerJson(input.ToArray(), new FastAttn.Embeddings.BertTokenizerOptions { MaxTokens = 64 }, "fuzz"); }
        catch (InvalidDataException) { return; }
        var ids = t.Encode("The café's naïve owner paid $3,000.50 for 12 books — 中文 ¿qué?");
        Check(ids.Length >= 2 && ids.Length <= 64 && ids[0] == t.ClsId && ids[^1] == t.SepId, "[CLS] … [SEP] within MaxTokens");
        foreach (int id in ids) Check((uint)id < (uint)t.VocabularySize, "an id outside the vocabulary");
    }

    /// <summary>A vocab.txt: read, then one fixed text encoded and its ids checked.</summary>
    public static void VocabTxt(ReadOnlySpan<byte> input)
    {
        FastAttn.Embeddings.BertWordPieceTokenizer t;
        try { t = FastAttn.Embeddings.BertWordPieceTokenizer.FromVocab(new MemoryStream(input.ToArray()), new FastAttn.Embeddings.BertTokenizerOptions { MaxTokens = 64 }, "fuzz"); }
        catch (InvalidDataException) { return; }
        var ids = t.Encode("The café's naïve owner paid $3,000.50 for 12 books — 中文 ¿qué? unaffable");
        Check(ids.Length >= 2 && ids.Length <= 64 && ids[0] == t.ClsId && ids[^1] == t.SepId, "[CLS] … [SEP] within MaxTokens");
        foreach (int id in ids) Check((uint)id < (uint)t.VocabularySize, "an id outside the vocabulary");
    }

    /// <summary>
    /// A SentencePiece precompiled_charsmap (the bytes a tokenizer.json carries in base64: a Darts double-array trie and
    /// its replacement strings): read, then a fixed multilingual text and the input itself (as UTF-8) normalised.
    /// </summary>
    public static void CharsMap(ReadOnlySpan<byte> input)
    {
        FastAttn.Embeddings.PrecompiledCharsMap m;
        try { m = FastAttn.Embeddings.PrecompiledCharsMap.Parse(input.ToArray(), "fuzz"); }
        catch (InvalidDataException) { return; }
        foreach (var text in new[] { Multilingual, Encoding.UTF8.GetString(input) })
        {
            var n = m.Normalize(text);
            Check(n != null, "null normalisation");
        }
    }

    /// <summary>A SentencePiece Unigram tokenizer.json: read, then a fixed multilingual text and a pair encoded and their ids checked.</summary>
    public static void Unigram(ReadOnlySpan<byte> input)
    {
        FastAttn.Embeddings.UnigramTokenizer t;
        try { t = FastAttn.Embeddings.UnigramTokenizer.FromTokenizerJson(input.ToArray(), 64, "fuzz"); }
        catch (InvalidDataException) { return; }
        int[] ids;
        try { ids = t.Encode(Multilingual); }
        catch (InvalidOperationException) { return; }       // a model without an unknown token meets a character it cannot spell (documented)
        Check(ids.Length <= 64, "more ids than MaxTokens");
        foreach (int id in ids) Check((uint)id < (uint)t.VocabularySize, "an id outside the vocabulary");
        var pair = t.EncodePair("héllo <mask> wörld", "second ▁text", out var types);
        Check(pair.Length <= 64 && types.Length == pair.Length, "pair within MaxTokens, one type per id");
        foreach (int id in pair) Check((uint)id < (uint)t.VocabularySize, "an id outside the vocabulary (pair)");
    }

    /// <summary>A BPE tokenizer.json (byte-level or SentencePiece-style): read, then a fixed multilingual text and a pair encoded and their ids checked.</summary>
    public static void Bpe(ReadOnlySpan<byte> input)
    {
        FastAttn.Embeddings.BpeTokenizer t;
        try { t = FastAttn.Embeddings.BpeTokenizer.FromTokenizerJson(input.ToArray(), 64, "fuzz"); }
        catch (InvalidDataException) { return; }
        var ids = t.Encode(Multilingual + " don't  stop\n\nme 123abc");
        Check(ids.Length <= 64, "more ids than MaxTokens");
        foreach (int id in ids) Check((uint)id < (uint)t.VocabularySize, "an id outside the vocabulary");
        var pair = t.EncodePair("héllo <mask> wörld", "it's ▁text", out var types);
        Check(pair.Length <= 64 && types.Length == pair.Length, "pair within MaxTokens, one type per id");
        foreach (int id in pair) Check((uint)id < (uint)t.VocabularySize, "an id outside the vocabulary (pair)");
    }

    /// <summary>
    /// A tokenizer_config.json as the Llama/Gemma framing reads it: only <see cref="InvalidDataException"/>; a framing it
    /// returns must hold the text once (a pair each text once) and ask only for its bos/eos tokens.
    /// </summary>
    public static void TokenizerConfig(ReadOnlySpan<byte> input)
    {
        FastAttn.Embeddings.TokenizerParts.SpecialFraming? f;
        try { f = FastAttn.Embeddings.TokenizerParts.SpecialFraming.Parse(input.ToArray(), "fuzz"); }
        catch (InvalidDataException) { return; }
        if (f == null) return;
        var asked = new List<string>();
        var (single, pair) = f.Templates(t => { asked.Add(t); return asked.Count; });
        Check(single.Count(p => p.Id == -1) == 1 && pair.Count(p => p.Id == -1) == 1 && pair.Count(p => p.Id == -2) == 1 && !single.Any(p => p.Id == -2),
            "a framing without the text once");
        Check(asked.All(t => t == f.Bos || t == f.Eos) && single.Length == 1 + (f.AddBos ? 1 : 0) + (f.AddEos ? 1 : 0), "a framing with other tokens");
    }

    /// <summary>
    /// A model's config.json (every family: BERT, DistilBERT, MPNet, ELECTRA, RoBERTa, DeBERTa-v2, ModernBERT, NomicBERT, JinaBERT, GTE, jina-embeddings-v3, Qwen3, Gemma 3): read; an
    /// accepted config must pass its own validation, DeBERTa's relative rows must stay inside the table for any distance,
    /// ModernBERT's and GTE's RoPE must rotate finitely and JinaBERT's ALiBi slopes be finite and positive.
    /// </summary>
    public static void Config(ReadOnlySpan<byte> input)
    {
        FastAttn.Embeddings.BertConfig c;
        try { c = FastAttn.Embeddings.BertConfig.FromJson(Encoding.UTF8.GetString(input), "fuzz"); }
        catch (InvalidDataException) { return; }
        c.Validate("fuzz");
        Check(c.PositionRows > 0 && c.PositionOffset >= 0 && c.PositionOffset < c.MaxPositionEmbeddings, "positions after the padding rows");
        if (c.Deberta is { } rel)
            foreach (int d in new[] { 0, 1, -1, rel.Span, -rel.Span, c.MaxPositionEmbeddings - 1, 1 - c.MaxPositionEmbeddings, int.MaxValue / 4, int.MinValue / 4 })
                Check(rel.Row(d) >= 0 && rel.Row(d) < 2 * rel.Span, "a relative row outside the table");
        if (c.Nomic is { } nb)
        {
            Check((!nb.Gated || c.IntermediateSize % 256 == 0) && c.MaxPositionEmbeddings > 0, "NomicBERT's rounded width or positions");
            Check(nb.MoeEveryN == 0 || (!nb.Gated && nb.TopK >= 1 && nb.TopK <= nb.Experts), "NomicBERT's experts");
            var rope = new FastAttn.Layers.Rope(c.HiddenSize / c.NumAttentionHeads, Math.Min(c.MaxPositionEmbeddings, 4096), nb.Theta);
            Check(rope.MaxPositions > 0, "a RoPE table");
        }
        if (c.Gte is { } gte)
        {
            // the NTK-scaled RoPE must rotate finitely at the last position a sequence can take
            int d = c.HiddenSize / c.NumAttentionHeads, last = Math.Min(c.MaxPositionEmbeddings, 4096);
            var rope = new FastAttn.Layers.Rope(d, last, gte.Theta, true, gte.NtkFactor);
            var x = new float[last * d];
            Array.Fill(x, 1f);
            rope.Apply(x, last, d, 0, 1);
            Check(Array.TrueForAll(x, float.IsFinite) && c.TypeVocabSize >= 1, "GTE's RoPE rotation or token types");
        }
        if (c.Qwen3 is { } q3)
        {
            // Qwen3: whole groups of query heads per key/value head, and a RoPE over its own head width that rotates finitely
            Check(c.NumAttentionHeads % q3.KvHeads == 0 && q3.HeadDim % 2 == 0 && c.TypeVocabSize == 1 && c.IsDecoder, "Qwen3's heads or head width");
            var rope = new FastAttn.Layers.Rope(q3.HeadDim, Math.Min(c.MaxPositionEmbeddings, 4096), q3.Theta, true);
            var x = new float[rope.MaxPositions * rope.HeadDim];
            Array.Fill(x, 1f);
            rope.Apply(x, rope.MaxPositions, rope.HeadDim, 0, 1);
            Check(Array.TrueForAll(x, float.IsFinite), "Qwen3's RoPE rotation");
        }
        if (c.Gemma3 is { } g3)
        {
            // Gemma 3: whole groups of query heads, one layer type per layer, a window inside the positions, both RoPE bases rotating finitely
            Check(c.NumAttentionHeads % g3.KvHeads == 0 && g3.HeadDim % 2 == 0 && g3.SlidingLayers.Length == c.NumHiddenLayers && g3.Window >= 0
                && c.IsDecoder == !g3.Bidirectional, "Gemma 3's heads, layer types or window");
            foreach (double theta in new[] { g3.GlobalTheta, g3.LocalTheta })
            {
                var rope = new FastAttn.Layers.Rope(g3.HeadDim, Math.Min(c.MaxPositionEmbeddings, 4096), theta, true);
                var x = new float[rope.MaxPositions * rope.HeadDim];
                Array.Fill(x, 1f);
                rope.Apply(x, rope.MaxPositions, rope.HeadDim, 0, 1);
                Check(Array.TrueForAll(x, float.IsFinite), "Gemma 3's RoPE rotation");
            }
        }
        if (c.JinaV3 is { } j3)
        {
            // jina-embeddings-v3: distinct adapter names, a usable rank, instructions only for listed adapters, a RoPE that rotates finitely
            Check(j3.Adaptations.Distinct().Count() == j3.Adaptations.Length && j3.Rank >= 1 && double.IsFinite(j3.Scaling) && c.Adapters.Count == j3.Adaptations.Length
                && j3.Instructions.Keys.All(k => j3.Adaptations.Contains(k)), "jina-embeddings-v3's adapters");
            var rope = new FastAttn.Layers.Rope(c.HiddenSize / c.NumAttentionHeads, Math.Min(c.MaxPositionEmbeddings, 4096), j3.Theta, true);
            var x = new float[rope.MaxPositions * rope.HeadDim];
            Array.Fill(x, 1f);
            rope.Apply(x, rope.MaxPositions, rope.HeadDim, 0, 1);
            Check(Array.TrueForAll(x, float.IsFinite), "jina-embeddings-v3's RoPE rotation");
        }
        if (c.Jina != null)
        {
            // ALiBi's slopes: one per head, finite and in (0, 1], for any head count a config may give
            var slopes = FastAttn.Embeddings.JinaSettings.AlibiSlopes(c.NumAttentionHeads);
            Check(slopes.Length == c.NumAttentionHeads && Array.TrueForAll(slopes, v => v > 0 && v <= 1) && !c.HasPositionTable && c.ModelType == "bert", "JinaBERT's slopes or positions");
        }
        if (c.ModernBert is { } mb)
        {
            Check(mb.GlobalLayers.Length == c.NumHiddenLayers && mb.Window >= 0, "ModernBERT's layer types or window");
            // both RoPE bases must give finite rotations at the last position a sequence can take (built from a short table, grown to it)
            foreach (double theta in new[] { mb.GlobalTheta, mb.LocalTheta })
            {
                int d = c.HiddenSize / c.NumAttentionHeads, last = Math.Min(c.MaxPositionEmbeddings, 4096);
                var rope = new FastAttn.Layers.Rope(d, last, theta);
                var x = new float[last * d];
                Array.Fill(x, 1f);
                rope.Apply(x, last, d, 0, 1);
                Check(Array.TrueForAll(x, float.IsFinite), "a RoPE rotation that is not finite");
            }
        }
    }

    private const string Multilingual = "The café's naïve owner paid $3,000.50 for 12 books — 中文 ¿qué?  Ｈｅｌｌｏ\tｗｏｒｌｄ <mask> ﬁ ① ｶﾞ 한국어 e\u0301 🙂 \u200d";

    private static void Check(bool ok, string what)
    {
        if (!ok) throw new FuzzFindingException(what);
    }
}

/// <summary>A target's own check failed: a silently wrong answer.</summary>
public sealed class FuzzFindingException(string message) : Exception(message);

/// <summary>
/// A stream over bytes that can tell neither its length nor seek (a pipe, a network stream); endless zeros after the bytes
/// when asked. Also the tests' stand-in for such streams (this file is compiled into them).
/// </summary>
internal sealed class UnsizedStream(byte[] bytes, bool thenZeros = false) : Stream
{
    /// <summary>Bytes handed out so far.</summary>
    public long Consumed { get; private set; }
    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override int Read(byte[] buffer, int offset, int count)
    {
        int n = Consumed < bytes.Length ? (int)Math.Min(count, bytes.Length - Consumed) : thenZeros ? count : 0;
        if (Consumed < bytes.Length) Array.Copy(bytes, Consumed, buffer, offset, n); else Array.Clear(buffer, offset, n);
        Consumed += n;
        return n;
    }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
