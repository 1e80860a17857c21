using System.Text;
using FastAttn.Embeddings;
using FastAttn.IO;
using FastAttn.Tests.IO;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// JSON may escape half a surrogate pair ("\ud800"); System.Text.Json then parses the document but throws
/// InvalidOperationException when the string is read. Every JSON file FastAttn reads must turn that into its
/// InvalidDataException (a data error), found while adding the Unigram tokenizer.
/// </summary>
public class LoneSurrogateTests
{
    private const string Lone = "\\ud800";

    [Fact]
    public void ConfigJson() =>
        Assert.Throws<InvalidDataException>(() => BertConfig.FromJson($$"""{"model_type": "{{Lone}}", "hidden_size": 8}"""));

    [Fact]
    public void ConfigJson_AsAPropertyName() =>
        Assert.Throws<InvalidDataException>(() => BertConfig.FromJson($$"""{"{{Lone}}": 1, "hidden_size": 8}"""));

    [Fact]
    public void SentenceTransformersModules()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("modules.json"), $$"""[{"idx": 0, "name": "0", "path": "{{Lone}}", "type": "sentence_transformers.models.Transformer"}]""");
        Assert.Throws<InvalidDataException>(() => SentenceTransformersConfig.Read(dir.Path));
    }

    [Fact]
    public void TokenizerConfig()
    {
        using var dir = new TempDir();
        File.WriteAllLines(dir.File("vocab.txt"), ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"]);
        File.WriteAllText(dir.File("tokenizer_config.json"), $$"""{"cls_token": "{{Lone}}"}""");
        Assert.Throws<InvalidDataException>(() => BertWordPieceTokenizer.FromVocabFile(dir.File("vocab.txt")));
    }

    [Fact]
    public void SafeTensorsHeader()
    {
        string header = "{\"" + Lone + "\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}";
        var h = Encoding.UTF8.GetBytes(header);
        var bytes = BitConverter.GetBytes((long)h.Length).Concat(h).Concat(new byte[4]).ToArray();
        Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Load(bytes));
    }
}
