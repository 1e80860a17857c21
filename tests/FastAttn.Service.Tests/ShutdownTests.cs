using System.Net;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace FastAttn.Service.Tests;

/// <summary>Graceful shutdown over real Kestrel sockets: requests in flight when the host stops are answered, none fails.</summary>
public sealed class ShutdownTests
{
    [Fact]
    public async Task Stopping_the_host_drains_in_flight_requests()
    {
        var factory = new WebApplicationFactory<Program>();
        factory.UseKestrel(0);
        factory.StartServer();
        // a client of our own: the factory disposes the clients it created when it stops
        string address = factory.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        using var client = new HttpClient { BaseAddress = new Uri(address) };
        await Http.Embed(client, "warm up");
        string body = System.Text.Json.JsonSerializer.Serialize(new { texts = Enumerable.Repeat("A sentence long enough to keep the batcher busy for a while, twice over.", 8) });
        var inFlight = Enumerable.Range(0, 48).Select(_ => client.PostAsync("/embed", Http.Json(body))).ToArray();
        // stop while they run: Kestrel stops accepting, waits for these, then the batcher drains and is disposed
        await Task.Delay(20);
        long stopAt = System.Diagnostics.Stopwatch.GetTimestamp();
        var stopping = factory.DisposeAsync().AsTask();
        var answers = await Task.WhenAll(inFlight.Select(async t =>
        {
            try { using var r = await t; return ((int)r.StatusCode, System.Diagnostics.Stopwatch.GetTimestamp()); }
            catch (HttpRequestException) { return (-1, 0L); } // a connection refused after the listener closed: never sent
        }));
        await stopping;
        Assert.All(answers, a => Assert.True(a.Item1 is 200 or -1, $"status {a.Item1}"));
        // some were answered after the stop began: the drain, not luck
        Assert.Contains(answers, a => a.Item1 == 200 && a.Item2 > stopAt);
    }
}
