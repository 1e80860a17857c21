using System.Net.Http.Json;
using FastAttn.Embeddings;
using FastAttn.IO;
using FastAttn.TestSupport;
using Microsoft.AspNetCore.Mvc.Testing;

namespace FastAttn.Service.Tests;

/// <summary>
/// The service with a decoder model (a tiny Qwen3-Embedding-style folder: safetensors, config.json, a byte-level BPE
/// tokenizer.json with Qwen2's Split and the end-of-text template, last-token pooling, normalisation, a query prompt):
/// /embed with and without the named prompt equals the library's SentenceEmbedder on the same folder, batched or not.
/// </summary>
public class DecoderModelTests
{
    private const int H = 24, Heads = 4, KvHeads = 2, HeadDim = 8, Layers = 2, Ff = 40;

    private static string WriteFolder()
    {
        string dir = Directory.CreateTempSubdirectory("fastattn-service-qwen3-").FullName;
        var words = "the cafe owner paid for books hello world here what is capital of china a query Instruct Given web search".Split(' ');
        var bpe = BpeFiles.Build(BpeFiles.ByteChars.Select(c => c.ToString()), words.SelectMany(w => new[] { BpeFiles.ByteLevel(" " + w), BpeFiles.ByteLevel(w) }));
        int vocab = bpe.Vocab.Count + 1;
        BpeFiles.TokenizerJson(Path.Combine(dir, "tokenizer.json"), bpe, new BpeFiles.Settings
        {
            Normalizer = w => { w.WriteStartObject(); w.WriteString("type", "NFC"); w.WriteEndObject(); },
            PreTokenizer = BpeFiles.DecoderPre(BpeFiles.Qwen2Regex), PostProcessor = "eos", TupleMerges = true,
        });
        var rnd = new Random(17);
        var entries = new List<SafeTensorsWriter.Entry>();
        void Add(string name, float scale, float offset, params long[] shape)
        {
            long n = shape.Aggregate(1L, (a, b) => a * b);
            entries.Add(new(name, [.. Enumerable.Range(0, (int)n).Select(_ => offset + (float)(rnd.NextDouble() * 2 - 1) * scale)], shape));
        }
        Qwen3Layout.Tensors("", Layers, vocab, H, Heads, KvHeads, HeadDim, Ff, (name, part, shape) => Add(name, part switch
        {
            Qwen3Layout.Part.Embedding => 0.5f, Qwen3Layout.Part.Qkv => 0.4f, Qwen3Layout.Part.Output or Qwen3Layout.Part.GateUp => 0.3f, _ => 0.2f,
        }, part == Qwen3Layout.Part.Norm ? 1 : 0, shape));
        SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), entries);
        File.WriteAllText(Path.Combine(dir, "config.json"), $$"""
            {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": {{H}}, "num_attention_heads": {{Heads}}, "num_key_value_heads": {{KvHeads}},
             "head_dim": {{HeadDim}}, "num_hidden_layers": {{Layers}}, "intermediate_size": {{Ff}}, "hidden_act": "silu", "rms_norm_eps": 1e-06,
             "rope_theta": 1000000, "max_position_embeddings": 32768, "vocab_size": {{vocab}}, "attention_bias": false, "use_sliding_window": false}
            """);
        File.WriteAllText(Path.Combine(dir, "modules.json"), """
            [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
             {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
             {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
            """);
        Directory.CreateDirectory(Path.Combine(dir, "1_Pooling"));
        File.WriteAllText(Path.Combine(dir, "1_Pooling", "config.json"), $$"""
            {"word_embedding_dimension": {{H}}, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": false, "pooling_mode_max_tokens": false,
             "pooling_mode_mean_sqrt_len_tokens": false, "pooling_mode_weightedmean_tokens": false, "pooling_mode_lasttoken": true, "include_prompt": true}
            """);
        File.WriteAllText(Path.Combine(dir, "config_sentence_transformers.json"), """
            {"prompts": {"query": "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:", "document": ""}, "default_prompt_name": null}
            """);
        return dir;
    }

    [Fact]
    public async Task A_Qwen3_Embedding_folder_is_served_with_its_prompts()
    {
        string dir = WriteFolder();
        try
        {
            using var library = SentenceEmbedder.Load(dir);
            Assert.Equal(Pooling.LastToken, library.Options.Pooling);
            using var queries = SentenceEmbedder.Load(dir, options: new SentenceEmbedderOptions { Prompt = library.Prompts["query"] });
            string[] texts = ["what is the capital of china", "hello world here", "the cafe owner paid for books"];
            foreach (bool batching in new[] { true, false })
            {
                await using var factory = new WebApplicationFactory<Program>().WithWebHostBuilder(b => b.UseSetting("FastAttn:Model", dir).UseSetting("FastAttn:Batching", batching.ToString()));
                using var client = factory.CreateClient();
                var plain = await Http.Embed(client, texts);
                using var r = await client.PostAsJsonAsync("/embed", new { texts, prompt = "query" });
                Assert.Equal(System.Net.HttpStatusCode.OK, r.StatusCode);
                using var doc = System.Text.Json.JsonDocument.Parse(await r.Content.ReadAsStringAsync());
                var prompted = doc.RootElement.GetProperty("vectors").EnumerateArray().Select(v => v.EnumerateArray().Select(x => x.GetSingle()).ToArray()).ToArray();
                for (int i = 0; i < texts.Length; i++)
                {
                    Assert.Equal(library.Encode(texts[i]), plain[i]);
                    Assert.Equal(queries.Encode(texts[i]), prompted[i]);
                    Assert.NotEqual(plain[i], prompted[i]);
                }
            }
        }
        finally { if (Environment.GetEnvironmentVariable("KEEP") == null) try { Directory.Delete(dir, true); } catch (IOException) { } }
    }
}
