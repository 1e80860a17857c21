using System.Net;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using FastAttn.Embeddings;
using FastAttn.Tagging;
using FastAttn.TestSupport;

namespace FastAttn.Service.Tests;

/// <summary>Every endpoint against the in-process libraries it serves.</summary>
public sealed class EndpointTests(DefaultService service) : IClassFixture<DefaultService>
{
    private readonly HttpClient _client = service.Client;

    private static readonly Lazy<SentenceEmbedder> Reference = new(() => SentenceEmbedder.Load(MiniLmPackage.Folder, options:
        new SentenceEmbedderOptions { Normalize = true, Threads = Environment.ProcessorCount }));

    [Fact]
    public async Task Healthz_answers_ok()
    {
        using var r = await _client.GetAsync("/healthz");
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        Assert.Equal("ok", await r.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Embed_returns_the_in_process_vectors()
    {
        // an empty text, non-ASCII, and one longer than the model's 512 positions (truncated, as the library does)
        string[] texts = ["I saw a saw.", "", "Café naïve — 東京 ☃", string.Join(' ', Enumerable.Repeat("word", 700)), "The city committee approved the new budget."];
        var got = await Http.Embed(_client, texts);
        var want = Reference.Value.Encode(texts);
        Assert.Equal(texts.Length, got.Length);
        for (int i = 0; i < texts.Length; i++)
        {
            Assert.Equal(384, got[i].Length);
            // JSON carries floats in their shortest round-trip form, and packing is exact: equal to the bit
            Assert.Equal(want[i], got[i]);
        }
    }

    [Fact]
    public async Task Embed_without_batching_returns_the_same_vectors()
    {
        // the no-batching backend (a pool of sessions) encodes the ids tokenized once for the size check
        string[] texts = ["I saw a saw.", "", "Café naïve — 東京 ☃", string.Join(' ', Enumerable.Repeat("word", 700))];
        await using var factory = new WebApplicationFactory<Program>().WithWebHostBuilder(b => b.UseSetting("FastAttn:Batching", "false"));
        using var client = factory.CreateClient();
        var got = await Http.Embed(client, texts);
        var want = Reference.Value.Encode(texts);
        Assert.Equal(texts.Length, got.Length);
        for (int i = 0; i < texts.Length; i++) Assert.Equal(want[i], got[i]);
    }

    [Fact]
    public async Task Tag_returns_the_bundled_taggers_tags_and_spans()
    {
        const string text = "I saw a saw. Time flies like an arrow!";
        var got = await Http.Tag(_client, text);
        using var model = PosTagModel.LoadBundled("attention");
        var want = model.Tag(text);
        Assert.Equal(want.Length, got.Length);
        for (int i = 0; i < want.Length; i++)
        {
            Assert.Equal(want[i].Word, got[i].Word);
            Assert.Equal(want[i].Tag, got[i].Tag);
            Assert.Equal(text[want[i].Span], text[got[i].Start..got[i].End]);
        }
        Assert.Equal(["PRON", "VERB", "DET", "NOUN", "PUNCT"], got.Take(5).Select(t => t.Tag));
    }

    [Fact]
    public async Task Tag_accepts_empty_text()
    {
        var got = await Http.Tag(_client, "");
        Assert.Empty(got);
    }

    [Fact]
    public async Task Metrics_expose_latency_batches_queue_rss_and_gen2()
    {
        await Http.Embed(_client, "metrics, please");
        await Http.Tag(_client, "metrics, please");
        // the Prometheus exporter caches a scrape briefly; the instruments are there on the first one already
        string text = await _client.GetStringAsync("/metrics");
        foreach (var name in new[] { "fastattn_request_duration", "fastattn_batch_texts", "fastattn_batch_requests", "fastattn_queue_texts", "fastattn_process_rss", "fastattn_gc_gen2" })
            Assert.Contains(name, text);
        Assert.Contains("endpoint=\"embed\"", text);
        Assert.Contains("endpoint=\"tag\"", text);
    }

    [Fact]
    public async Task One_hundred_parallel_requests_equal_their_single_request_answers()
    {
        // 100 different requests (1–3 texts of varied length, and tags), first one at a time, then all at once
        var rnd = new Random(100);
        string[] words = "the a city river saw I we they run ran quickly blue house museum train late early on in".Split(' ');
        string Sentence() => string.Join(' ', Enumerable.Range(0, rnd.Next(1, 40)).Select(_ => words[rnd.Next(words.Length)])) + ".";
        var requests = Enumerable.Range(0, 100).Select(i => i % 4 == 3 ? ["tag", Sentence()] : new[] { "embed" }.Concat(Enumerable.Range(0, 1 + i % 3).Select(_ => Sentence())).ToArray()).ToArray();
        async Task<string> Send(string[] q)
        {
            using var r = q[0] == "tag" ? await _client.PostAsync("/tag", Http.Json(System.Text.Json.JsonSerializer.Serialize(new { text = q[1] })))
                                        : await _client.PostAsync("/embed", Http.Json(System.Text.Json.JsonSerializer.Serialize(new { texts = q[1..] })));
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            return await r.Content.ReadAsStringAsync();
        }
        var single = new string[requests.Length];
        for (int i = 0; i < requests.Length; i++) single[i] = await Send(requests[i]);
        var parallel = await Task.WhenAll(requests.Select(q => Task.Run(() => Send(q))));
        for (int i = 0; i < requests.Length; i++) Assert.True(single[i] == parallel[i], $"request {i} ({requests[i][0]}) answered differently in parallel");
    }

    [Fact]
    public async Task Unknown_routes_and_methods_get_404_and_405()
    {
        using var a = await _client.GetAsync("/nothing-here");
        Assert.Equal(HttpStatusCode.NotFound, a.StatusCode);
        using var b = await _client.GetAsync("/embed");
        Assert.Equal(HttpStatusCode.MethodNotAllowed, b.StatusCode);
    }
}
