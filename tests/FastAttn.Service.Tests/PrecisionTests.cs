using System.Net.Http.Json;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using FastAttn.Embeddings;
using FastAttn.TestSupport;

namespace FastAttn.Service.Tests;

/// <summary><c>--Precision bf16|int8</c>: the service loads the model's linear layers in that precision.</summary>
public sealed class PrecisionTests
{
    [Theory]
    [InlineData("bf16", 0.9999)]   // the README's MiniLM accuracy table: cosine mean 0.999991, min 0.999967 (353 texts)
    [InlineData("int8", 0.99)]     // mean 0.99814, min 0.99113
    public async Task Embed_in_reduced_precision_stays_close_to_fp32_and_differs_from_it(string precision, double minCosine)
    {
        await using var factory = new WebApplicationFactory<Program>().WithWebHostBuilder(b => b.UseSetting("FastAttn:Precision", precision));
        using var client = factory.CreateClient();
        using var fp32 = SentenceEmbedder.Load(MiniLmPackage.Folder, options: new SentenceEmbedderOptions { Normalize = true });
        string[] texts = ["I saw a saw.", "The city committee approved the new budget on Monday.", "Café naïve — 東京 ☃"];
        var got = await Http.Embed(client, texts);
        var want = fp32.Encode(texts);
        bool anyDifferent = false;
        for (int i = 0; i < texts.Length; i++)
        {
            double dot = 0;
            for (int c = 0; c < got[i].Length; c++) dot += (double)got[i][c] * want[i][c]; // both unit length
            Assert.True(dot >= minCosine, $"{precision}: text {i} has cosine {dot:F6} with FP32 (< {minCosine})");
            anyDifferent |= !got[i].AsSpan().SequenceEqual(want[i]);
        }
        Assert.True(anyDifferent, $"{precision}: the vectors equal FP32's to the bit — the setting did not take effect");
    }
}

/// <summary><c>--Model DIR</c> of a sentence-transformers folder: the service pools as the folder says (here CLS).</summary>
public sealed class ModelFolderTests
{
    /// <summary>all-MiniLM-L6-v2's model.onnx and vocab.txt into <paramref name="dir"/>, the start of every folder below.</summary>
    private static void CopyMiniLm(string dir)
    {
        File.Copy(MiniLmPackage.Files.Model, Path.Combine(dir, "model.onnx"));
        File.Copy(MiniLmPackage.Files.Vocab, Path.Combine(dir, "vocab.txt"));
    }

    [Fact]
    public async Task A_sentence_transformers_folder_sets_the_pooling()
    {
        // all-MiniLM-L6-v2's files with a Pooling module that names [CLS]: the vectors must be the CLS ones, not the mean
        string dir = Directory.CreateTempSubdirectory("fastattn-service-st-").FullName;
        try
        {
            CopyMiniLm(dir);
            File.WriteAllText(Path.Combine(dir, "modules.json"), """
                [{"path": "", "type": "sentence_transformers.models.Transformer"}, {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
                """);
            Directory.CreateDirectory(Path.Combine(dir, "1_Pooling"));
            File.WriteAllText(Path.Combine(dir, "1_Pooling", "config.json"), """{"word_embedding_dimension": 384, "pooling_mode_cls_token": true}""");
            await using var factory = new WebApplicationFactory<Program>().WithWebHostBuilder(b => b.UseSetting("FastAttn:Model", dir));
            using var client = factory.CreateClient();
            string[] texts = ["I saw a saw.", "The city committee approved the new budget on Monday."];
            var got = await Http.Embed(client, texts);
            using var cls = SentenceEmbedder.Load(MiniLmPackage.Folder, options: new SentenceEmbedderOptions { Pooling = Pooling.Cls, Normalize = true });
            using var mean = SentenceEmbedder.Load(MiniLmPackage.Folder, options: new SentenceEmbedderOptions { Pooling = Pooling.Mean, Normalize = true });
            for (int i = 0; i < texts.Length; i++)
            {
                Assert.Equal(cls.Encode(texts[i]), got[i]);
                Assert.NotEqual(mean.Encode(texts[i]), got[i]);
            }
        }
        finally { try { Directory.Delete(dir, true); } catch (IOException) { } }
    }

    [Fact]
    public async Task A_folders_default_prompt_is_put_before_every_text()
    {
        // config_sentence_transformers.json naming a default prompt: sentence-transformers puts it before every text, so does the service
        string dir = Directory.CreateTempSubdirectory("fastattn-service-prompt-").FullName;
        try
        {
            CopyMiniLm(dir);
            File.WriteAllText(Path.Combine(dir, "config_sentence_transformers.json"), """{"prompts": {"query": "query: "}, "default_prompt_name": "query"}""");
            await using var factory = new WebApplicationFactory<Program>().WithWebHostBuilder(b => b.UseSetting("FastAttn:Model", dir));
            using var client = factory.CreateClient();
            string[] texts = ["I saw a saw.", "The city committee approved the new budget on Monday."];
            var got = await Http.Embed(client, texts);
            using var plain = SentenceEmbedder.Load(MiniLmPackage.Folder, options: new SentenceEmbedderOptions { Normalize = true, Prompt = "" });
            for (int i = 0; i < texts.Length; i++)
            {
                Assert.Equal(plain.Encode("query: " + texts[i]), got[i]);
                Assert.NotEqual(plain.Encode(texts[i]), got[i]);
            }
        }
        finally { try { Directory.Delete(dir, true); } catch (IOException) { } }
    }

    [Fact]
    public async Task A_request_names_one_of_the_folders_prompts()
    {
        // {"texts": [...], "prompt": "query"}: the named prompt before every text (instruction-tuned embedders — e5, Qwen3-Embedding,
        // EmbeddingGemma — take one for queries and another or none for documents); a name the folder lacks is a 400
        string dir = Directory.CreateTempSubdirectory("fastattn-service-named-prompt-").FullName;
        try
        {
            CopyMiniLm(dir);
            File.WriteAllText(Path.Combine(dir, "config_sentence_transformers.json"), """{"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": null}""");
            foreach (bool batching in new[] { true, false })
            {
                await using var factory = new WebApplicationFactory<Program>().WithWebHostBuilder(b => b.UseSetting("FastAttn:Model", dir).UseSetting("FastAttn:Batching", batching.ToString()));
                using var client = factory.CreateClient();
                string[] texts = ["I saw a saw.", "The city committee approved the new budget on Monday."];
                using var plain = SentenceEmbedder.Load(MiniLmPackage.Folder, options: new SentenceEmbedderOptions { Normalize = true, Prompt = "" });
                foreach (var (name, prefix) in new[] { ("query", "query: "), ("passage", "passage: ") })
                {
                    using var r = await client.PostAsJsonAsync("/embed", new { texts, prompt = name });
                    Assert.Equal(System.Net.HttpStatusCode.OK, r.StatusCode);
                    using var doc = System.Text.Json.JsonDocument.Parse(await r.Content.ReadAsStringAsync());
                    var got = doc.RootElement.GetProperty("vectors").EnumerateArray().Select(v => v.EnumerateArray().Select(x => x.GetSingle()).ToArray()).ToArray();
                    for (int i = 0; i < texts.Length; i++) Assert.Equal(plain.Encode(prefix + texts[i]), got[i]);
                }
                var none = await Http.Embed(client, texts);                                       // no default: the texts as they are
                for (int i = 0; i < texts.Length; i++) Assert.Equal(plain.Encode(texts[i]), none[i]);
                using var bad = await client.PostAsJsonAsync("/embed", new { texts, prompt = "document" });
                Assert.Equal(System.Net.HttpStatusCode.BadRequest, bad.StatusCode);
                Assert.Contains("query", await bad.Content.ReadAsStringAsync());
            }
            // the package's model names no prompts
            await using var package = new WebApplicationFactory<Program>();
            using var c2 = package.CreateClient();
            using var r2 = await c2.PostAsJsonAsync("/embed", new { texts = new[] { "a" }, prompt = "query" });
            Assert.Equal(System.Net.HttpStatusCode.BadRequest, r2.StatusCode);
        }
        finally { try { Directory.Delete(dir, true); } catch (IOException) { } }
    }

    [Fact]
    public async Task A_folder_with_only_tokenizer_json_is_served_with_it()
    {
        // an XLM-R or RoBERTa folder carries tokenizer.json and no vocab.txt: the service used to insist on vocab.txt
        string dir = Directory.CreateTempSubdirectory("fastattn-service-tj-").FullName;
        try
        {
            File.Copy(MiniLmPackage.Files.Model, Path.Combine(dir, "model.onnx"));
            var vocab = File.ReadAllLines(MiniLmPackage.Files.Vocab);
            var entries = string.Join(", ", vocab.Select((v, i) => $"{System.Text.Json.JsonSerializer.Serialize(v)}: {i}"));
            File.WriteAllText(Path.Combine(dir, "tokenizer.json"), "{\"model\": {\"type\": \"WordPiece\", \"unk_token\": \"[UNK]\", \"vocab\": {" + entries + "}}}");
            await using var factory = new WebApplicationFactory<Program>().WithWebHostBuilder(b => b.UseSetting("FastAttn:Model", dir));
            using var client = factory.CreateClient();
            string[] texts = ["i saw a saw.", "the city committee approved the new budget on monday."];
            var got = await Http.Embed(client, texts);
            using var library = SentenceEmbedder.Load(dir, options: new SentenceEmbedderOptions { Normalize = true });
            Assert.IsType<BertWordPieceTokenizer>(library.Tokenizer);
            for (int i = 0; i < texts.Length; i++) Assert.Equal(library.Encode(texts[i]), got[i]);
        }
        finally { try { Directory.Delete(dir, true); } catch (IOException) { } }
    }
}

/// <summary><c>--Dimensions N</c>: /embed returns the first N values of each vector, scaled to unit length.</summary>
public sealed class DimensionsTests
{
    [Fact]
    public async Task Embed_cuts_to_the_first_values_then_normalises()
    {
        await using var factory = new WebApplicationFactory<Program>().WithWebHostBuilder(b => b.UseSetting("FastAttn:Dimensions", "128"));
        using var client = factory.CreateClient();
        using var full = SentenceEmbedder.Load(MiniLmPackage.Folder, options: new SentenceEmbedderOptions { Normalize = false });
        string[] texts = ["I saw a saw.", "The city committee approved the new budget on Monday."];
        var got = await Http.Embed(client, texts);
        var want = full.Encode(texts);
        for (int i = 0; i < texts.Length; i++)
        {
            Assert.Equal(128, got[i].Length);
            double n = Math.Sqrt(want[i].Take(128).Sum(v => (double)v * v));
            for (int c = 0; c < 128; c++) Assert.True(Math.Abs(got[i][c] - want[i][c] / n) <= 1e-6, $"text {i}, value {c}: {got[i][c]} vs {want[i][c] / n}");
        }
    }

    [Fact]
    public void Options_refuse_a_negative_width_and_the_ort_backend_with_dimensions()
    {
        Assert.NotNull(new ServiceOptions { Dimensions = -1 }.Validate());
        Assert.NotNull(new ServiceOptions { Backend = "ort", Dimensions = 64 }.Validate());
        Assert.NotNull(new ServiceOptions { Backend = "ort", Adapter = "retrieval.query" }.Validate());
        Assert.Null(new ServiceOptions { Dimensions = 64 }.Validate());
    }
}
