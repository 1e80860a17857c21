using System.Net;
using System.Net.Http.Headers;

namespace FastAttn.Service.Tests;

/// <summary>Every kind of bad request gets a problem-details 400, 413 or 415 — and the service answers the next good one unchanged.</summary>
public sealed class BadInputTests(SmallLimitsService service) : IClassFixture<SmallLimitsService>
{
    private readonly HttpClient _client = service.Client;

    private static ByteArrayContent Bytes(byte[] body, string type = "application/json")
    {
        var c = new ByteArrayContent(body);
        c.Headers.ContentType = new MediaTypeHeaderValue(type);
        return c;
    }

    private async Task StillServes()
    {
        var v = await Http.Embed(_client, "still fine");
        Assert.Equal(384, v[0].Length);
        Assert.NotEmpty(await Http.Tag(_client, "still fine"));
    }

    [Theory]
    [InlineData("{", "not JSON")]
    [InlineData("", "not JSON")]
    [InlineData("null", "null")]
    [InlineData("[]", "not JSON")]
    [InlineData("{}", "'texts'")]
    [InlineData("{\"texts\":[]}", "'texts'")]
    [InlineData("{\"texts\":null}", "'texts'")]
    [InlineData("{\"texts\":[null]}", "'texts'")]
    [InlineData("{\"texts\":\"one\"}", "not JSON")]
    [InlineData("{\"texts\":[1]}", "not JSON")]
    [InlineData("{\"texts\":[\"a\"]} trailing", "not JSON")]
    [InlineData("{\"texts\":[\"\\ud800\"]}", "not JSON")] // a lone surrogate escape is not a string .NET accepts
    [InlineData("{\"texts\":[\"a\"],\"texts\":[\"b\"]}", "Duplicate property 'texts'")] // ambiguous: not read as its last value
    public async Task Embed_rejects_a_bad_body_with_400(string body, string detail)
    {
        using var r = await _client.PostAsync("/embed", Http.Json(body));
        Assert.Contains(detail, await Http.Problem(r, 400));
        await StillServes();
    }

    [Theory]
    [InlineData("/embed")]
    [InlineData("/tag")]
    public async Task Invalid_utf8_gets_400(string path)
    {
        byte[] body = path == "/embed" ? [.. "{\"texts\":[\""u8, 0xC3, 0x28, .. "\"]}"u8] : [.. "{\"text\":\""u8, 0xFF, 0xFE, .. "\"}"u8];
        using var r = await _client.PostAsync(path, Bytes(body));
        Assert.Contains("UTF-8", await Http.Problem(r, 400));
        await StillServes();
    }

    [Theory]
    [InlineData("/embed", "text/plain")]
    [InlineData("/tag", "application/x-www-form-urlencoded")]
    public async Task A_body_that_is_not_json_gets_415(string path, string type)
    {
        using var r = await _client.PostAsync(path, Bytes("{\"text\":\"x\"}"u8.ToArray(), type));
        await Http.Problem(r, 415);
    }

    [Fact]
    public async Task Too_many_texts_get_413()
    {
        using var r = await _client.PostAsync("/embed", Http.Json(System.Text.Json.JsonSerializer.Serialize(new { texts = Enumerable.Repeat("a", SmallLimitsService.MaxTexts + 1) })));
        Assert.Contains($"at most {SmallLimitsService.MaxTexts}", await Http.Problem(r, 413));
        await StillServes();
    }

    [Fact]
    public async Task Too_many_tokens_get_413()
    {
        // two texts of 40 words: 84 word pieces with [CLS] and [SEP], over the 64 allowed
        string text = string.Join(' ', Enumerable.Repeat("word", 40));
        using var r = await _client.PostAsync("/embed", Http.Json(System.Text.Json.JsonSerializer.Serialize(new { texts = new[] { text, text } })));
        Assert.Contains("84 word pieces", await Http.Problem(r, 413));
        await StillServes();
    }

    [Fact]
    public async Task A_body_over_the_limit_gets_413_whether_declared_or_streamed()
    {
        byte[] big = System.Text.Encoding.UTF8.GetBytes(System.Text.Json.JsonSerializer.Serialize(new { texts = new[] { new string('a', SmallLimitsService.MaxBodyBytes) } }));
        using (var r = await _client.PostAsync("/embed", Bytes(big)))
            await Http.Problem(r, 413);
        // no Content-Length: the limit holds while the body streams in
        var streamed = new StreamContent(new MemoryStream(big));
        streamed.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        using (var req = new HttpRequestMessage(HttpMethod.Post, "/tag") { Content = streamed })
        {
            req.Headers.TransferEncodingChunked = true;
            using var r = await _client.SendAsync(req);
            await Http.Problem(r, 413);
        }
        await StillServes();
    }

    [Theory]
    [InlineData("{}")]
    [InlineData("{\"text\":null}")]
    [InlineData("{\"text\":[\"a\"]}")]
    [InlineData("{\"text\":")]
    [InlineData("null")]
    [InlineData("{\"text\":\"a\",\"text\":\"b\"}")]
    public async Task Tag_rejects_a_bad_body_with_400(string body)
    {
        using var r = await _client.PostAsync("/tag", Http.Json(body));
        await Http.Problem(r, 400);
        await StillServes();
    }

    [Fact]
    public async Task A_tag_text_over_the_limit_gets_413()
    {
        using var r = await _client.PostAsync("/tag", Http.Json(System.Text.Json.JsonSerializer.Serialize(new { text = new string('a', SmallLimitsService.MaxTagChars + 1) })));
        Assert.Contains($"at most {SmallLimitsService.MaxTagChars}", await Http.Problem(r, 413));
        await StillServes();
    }

    [Fact]
    public async Task Requests_at_the_limits_are_served()
    {
        var v = await Http.Embed(_client, Enumerable.Repeat("fine", SmallLimitsService.MaxTexts).ToArray());
        Assert.Equal(SmallLimitsService.MaxTexts, v.Length);
        Assert.NotEmpty(await Http.Tag(_client, new string('a', SmallLimitsService.MaxTagChars)));
    }
}
