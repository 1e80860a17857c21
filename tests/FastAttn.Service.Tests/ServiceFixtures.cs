using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;

namespace FastAttn.Service.Tests;

/// <summary>The service with its default settings (all-MiniLM-L6-v2 from the package, batching on), shared by a test class.</summary>
public sealed class DefaultService : IAsyncLifetime
{
    public WebApplicationFactory<Program> Factory { get; private set; } = null!;
    public HttpClient Client { get; private set; } = null!;

    public Task InitializeAsync()
    {
        Factory = new WebApplicationFactory<Program>();
        Client = Factory.CreateClient();
        return Task.CompletedTask;
    }

    public async Task DisposeAsync() => await Factory.DisposeAsync();
}

/// <summary>The service with small limits, so every 413 is cheap to reach.</summary>
public sealed class SmallLimitsService : IAsyncLifetime
{
    public const int MaxTexts = 4, MaxBodyBytes = 2048, MaxTokens = 64, MaxTagChars = 100;
    public WebApplicationFactory<Program> Factory { get; private set; } = null!;
    public HttpClient Client { get; private set; } = null!;

    public Task InitializeAsync()
    {
        Factory = new WebApplicationFactory<Program>().WithWebHostBuilder(b => b
            .UseSetting("FastAttn:MaxTexts", $"{MaxTexts}")
            .UseSetting("FastAttn:MaxBodyBytes", $"{MaxBodyBytes}")
            .UseSetting("FastAttn:MaxTokensPerRequest", $"{MaxTokens}")
            .UseSetting("FastAttn:MaxTagChars", $"{MaxTagChars}"));
        Client = Factory.CreateClient();
        return Task.CompletedTask;
    }

    public async Task DisposeAsync() => await Factory.DisposeAsync();
}

internal static class Http
{
    public static StringContent Json(string body) => new(body, System.Text.Encoding.UTF8, "application/json");

    public static async Task<float[][]> Embed(HttpClient client, params string[] texts)
    {
        using var r = await client.PostAsJsonAsync("/embed", new { texts });
        Assert.Equal(System.Net.HttpStatusCode.OK, r.StatusCode);
        using var doc = JsonDocument.Parse(await r.Content.ReadAsStringAsync());
        return doc.RootElement.GetProperty("vectors").EnumerateArray()
            .Select(v => v.EnumerateArray().Select(x => x.GetSingle()).ToArray()).ToArray();
    }

    public static async Task<(string Word, string Tag, int Start, int End)[]> Tag(HttpClient client, string text)
    {
        using var r = await client.PostAsJsonAsync("/tag", new { text });
        Assert.Equal(System.Net.HttpStatusCode.OK, r.StatusCode);
        using var doc = JsonDocument.Parse(await r.Content.ReadAsStringAsync());
        return doc.RootElement.GetProperty("tokens").EnumerateArray()
            .Select(t => (t.GetProperty("word").GetString()!, t.GetProperty("tag").GetString()!, t.GetProperty("start").GetInt32(), t.GetProperty("end").GetInt32()))
            .ToArray();
    }

    /// <summary>Asserts a problem-details answer with <paramref name="status"/>; returns its detail.</summary>
    public static async Task<string> Problem(HttpResponseMessage r, int status)
    {
        string body = await r.Content.ReadAsStringAsync();
        Assert.True((int)r.StatusCode == status, $"expected {status}, got {(int)r.StatusCode}: {body}");
        Assert.Equal("application/problem+json", r.Content.Headers.ContentType?.MediaType);
        using var doc = JsonDocument.Parse(body);
        Assert.Equal(status, doc.RootElement.GetProperty("status").GetInt32());
        return doc.RootElement.GetProperty("detail").GetString()!;
    }
}
