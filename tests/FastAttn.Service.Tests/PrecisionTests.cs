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
