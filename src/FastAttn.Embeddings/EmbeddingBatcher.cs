using System.Collections.Concurrent;

namespace FastAttn.Embeddings;

/// <summary>Settings of an <see cref="EmbeddingBatcher"/>.</summary>
public sealed record BatchingOptions
{
    /// <summary>
    /// How long a batch may wait for more requests after its first one arrives (default 1 ms). It waits only while fewer
    /// requests are in it than in the previous batch — so a lone caller never waits, and under load a batch fills with
    /// the requests that are on their way.
    /// </summary>
    public TimeSpan MaxWait { get; init; } = TimeSpan.FromMilliseconds(1);
    /// <summary>Most tokens in one batch (one packed pass); a request larger than this runs alone.</summary>
    public int MaxBatchTokens { get; init; } = 4096;
    /// <summary>
    /// Batches of fewer tokens run on a one-thread session even when the embedder options ask for more threads; 0 (the
    /// default) = every batch uses every thread. A lone short sentence runs about 1.6× faster on two threads (0.89 against
    /// 1.40 ms for all-MiniLM-L6-v2), and the dispatcher runs one batch at a time, so the second thread would otherwise idle.
    /// Measured through the sample service at one connection, 64 against 0 alternated three times (2026-12-02): 338–392
    /// against 660–724 requests/s, p99 4.07–4.34 against 3.20–3.28 ms. A positive value suits a machine whose other work
    /// keeps every core busy, where waiting for a second thread to be scheduled can cost a short batch more than it gains
    /// (an earlier host, wrk on the same two cores: p99 1.98–2.26 ms with 64 against 2.43–3.29 ms with 0).
    /// </summary>
    public int ParallelFromTokens { get; init; }
    /// <summary>Most texts waiting; beyond it <see cref="EmbeddingBatcher.EncodeAsync(IReadOnlyList{string}, CancellationToken)"/> throws <see cref="InvalidOperationException"/> (back-pressure).</summary>
    public int MaxQueuedTexts { get; init; } = 100_000;
    /// <summary>
    /// A request that finds the batcher idle — nothing queued, no batch running, and the last batch held one request —
    /// runs at once on the caller's thread, which <see cref="EmbeddingBatcher.EncodeAsync(IReadOnlyList{string}, CancellationToken)"/>
    /// then blocks for the pass and returns completed (default true). This saves the hand-off to the dispatcher thread and
    /// back, which a lone request pays in full. Requests that arrive meanwhile queue as usual; the first batch of more than
    /// one request turns this off until load drops to one request per batch again. false = every request goes through
    /// the dispatcher thread.
    /// </summary>
    public bool RunLoneRequestsInline { get; init; } = true;
}

/// <summary>What one batch held, for metrics.</summary>
/// <param name="Requests">Requests coalesced.</param>
/// <param name="Texts">Texts (sequences) in the packed pass.</param>
/// <param name="Tokens">Tokens in the packed pass.</param>
/// <param name="Waited">Time the batch waited for more requests after its first.</param>
/// <param name="Ran">Time the packed pass took.</param>
public readonly record struct BatchInfo(int Requests, int Texts, int Tokens, TimeSpan Waited, TimeSpan Ran);

/// <summary>
/// Dynamic batching without padding: concurrent requests from any number of threads are coalesced into one packed
/// variable-length pass (each sequence attends only to itself), bounded by <see cref="BatchingOptions.MaxWait"/> and
/// <see cref="BatchingOptions.MaxBatchTokens"/>. Packing is exact, so a request's vectors are bit-identical to running it
/// alone. Texts are tokenized on the caller's thread; one dispatcher thread runs the passes on its own session (with
/// the session's threads), except that a lone request on an idle batcher runs on its caller's thread
/// (<see cref="BatchingOptions.RunLoneRequestsInline"/>). Thread-safe. <see cref="DisposeAsync"/> stops accepting requests, finishes the queued ones and
/// then stops.
/// </summary>
public sealed class EmbeddingBatcher : IAsyncDisposable, IDisposable
{
    private sealed class Request
    {
        public required int[] Ids;
        public required int[] Lengths;
        public required float[] Output;
        public readonly TaskCompletionSource<float[]> Done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public CancellationTokenRegistration Cancellation;
        public long Enqueued;
    }

    private readonly EmbeddingSession _session;
    private readonly EmbeddingSession? _single; // one thread, for short batches (when _session has more)
    private readonly TextTokenizer _tokenizer;
    private readonly int _vocabSize;
    private readonly ConcurrentQueue<Request> _queue = new();
    private readonly SemaphoreSlim _signal = new(0);
    private readonly Thread _dispatcher;
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _queuedTexts, _lastBatchRequests = 1;
    private volatile bool _closing;
    private readonly object _gate = new();
    private readonly object _running = new(); // held while a pass runs (dispatcher or inline caller); DisposeAsync takes it to free the sessions
    private int[] _ids = new int[256], _lengths = new int[16];
    private float[] _vectors = [];

    /// <summary>The batching settings.</summary>
    public BatchingOptions Batching { get; }
    /// <summary>Length of one embedding.</summary>
    public int Dimension => _session.Dimension;
    /// <summary>Texts waiting for a batch right now.</summary>
    public int QueuedTexts => Volatile.Read(ref _queuedTexts);
    /// <summary>
    /// Called after every batch (metrics), on the dispatcher thread or on the caller's thread of a request run inline; it
    /// should be quick, as the next batch waits for it, and what it throws is ignored. A <see cref="Dispose"/> there returns
    /// at once and disposes the batcher after the pass; a request it makes (<see cref="EncodeAsync(string, CancellationToken)"/>
    /// and the like) runs at once on its thread and returns completed — it is not reported to the hook.
    /// </summary>
    public Action<BatchInfo>? OnBatch { get; set; }

    /// <summary>A batcher running <paramref name="model"/> with its own session (the embedder settings apply: pooling, normalisation, threads).</summary>
    /// <exception cref="ArgumentException">The options do not fit the model.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A batching limit is out of range.</exception>
    public EmbeddingBatcher(BertModel model, TextTokenizer tokenizer, SentenceEmbedderOptions? options = null, BatchingOptions? batching = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        _tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        _vocabSize = model.Config.VocabSize;
        Batching = batching ?? new BatchingOptions();
        if (Batching.MaxWait < TimeSpan.Zero || Batching.MaxWait > TimeSpan.FromSeconds(1)) throw new ArgumentOutOfRangeException(nameof(batching), Batching.MaxWait, "MaxWait must be 0..1 s.");
        if (Batching.MaxQueuedTexts < 1) throw new ArgumentOutOfRangeException(nameof(batching), Batching.MaxQueuedTexts, "MaxQueuedTexts must be at least 1.");
        options ??= new SentenceEmbedderOptions();
        // open: the model's positions, or one batch's tokens when fewer (as EmbeddingSession reads it: a long-context model —
        // Qwen3's 32,768 positions, ModernBERT's 8,192 — must not refuse the default batch size)
        int maxText = options.MaxTokensPerText == 0 ? Math.Min(model.Embeddings.MaxPositions, Batching.MaxBatchTokens) : options.MaxTokensPerText;
        if (Batching.MaxBatchTokens < maxText) throw new ArgumentOutOfRangeException(nameof(batching), Batching.MaxBatchTokens, $"MaxBatchTokens must hold the longest text ({maxText} tokens).");
        if (Batching.ParallelFromTokens < 0) throw new ArgumentOutOfRangeException(nameof(batching), Batching.ParallelFromTokens, "ParallelFromTokens must not be negative.");
        _session = new EmbeddingSession(model, tokenizer, options with { MaxBatchTokens = Batching.MaxBatchTokens });
        _session.Encode("warm up");
        if (options.Threads > 1 && Batching.ParallelFromTokens > 0)
        {
            _single = new EmbeddingSession(model, tokenizer, options with { Threads = 1, MaxBatchTokens = Math.Max(maxText, Math.Min(Batching.ParallelFromTokens, Batching.MaxBatchTokens)) });
            _single.Encode("warm up");
        }
        _dispatcher = new Thread(Dispatch) { IsBackground = true, Name = "FastAttn batcher" };
        _dispatcher.Start();
    }

    /// <summary>The embedding of one text, computed in the next batch.</summary>
    /// <exception cref="ObjectDisposedException">The batcher is shutting down.</exception>
    /// <exception cref="InvalidOperationException">The queue is full.</exception>
    /// <exception cref="OperationCanceledException">Cancelled before its batch ran.</exception>
    public Task<float[]> EncodeAsync(string text, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(text);
        return EncodeAsync([text], cancellation);
    }

    /// <summary>The embeddings of <paramref name="texts"/> (<c>[texts, Dimension]</c>, row-major), computed in the next batch.</summary>
    /// <exception cref="ArgumentException">A text is null, or there are none.</exception>
    /// <exception cref="ObjectDisposedException">The batcher is shutting down.</exception>
    /// <exception cref="InvalidOperationException">The queue is full.</exception>
    /// <exception cref="OperationCanceledException">Cancelled before its batch ran (the task is cancelled).</exception>
    public Task<float[]> EncodeAsync(IReadOnlyList<string> texts, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(texts);
        if (texts.Count == 0) throw new ArgumentException("no texts.", nameof(texts));
        ObjectDisposedException.ThrowIf(_closing, this);
        if (cancellation.IsCancellationRequested) return Task.FromCanceled<float[]>(cancellation);
        // tokenize here, on the caller's thread, so the dispatcher only runs the network
        var encoded = new int[texts.Count][];
        for (int i = 0; i < texts.Count; i++)
        {
            if (texts[i] is null) throw new ArgumentException($"text {i} is null.", nameof(texts));
            encoded[i] = _session.FitToLimit(_tokenizer.Encode(_session.Prompted(texts[i])));
        }
        return Submit(encoded, cancellation);
    }

    /// <summary>
    /// The embeddings of texts already tokenized, each as <see cref="TextTokenizer.Encode(string)"/> gives it
    /// (<c>[CLS] … [SEP]</c>; a longer one is cut to the model's limit as a text would be) — for a caller that tokenizes
    /// anyway, e.g. to check a request's size first. The ids are checked here, so a bad one fails this call only.
    /// </summary>
    /// <exception cref="ArgumentException">A list is null or empty, there are none, or an id is outside the model's vocabulary.</exception>
    /// <exception cref="ObjectDisposedException">The batcher is shutting down.</exception>
    /// <exception cref="InvalidOperationException">The queue is full.</exception>
    /// <exception cref="OperationCanceledException">Cancelled before its batch ran (the task is cancelled).</exception>
    public Task<float[]> EncodeIdsAsync(IReadOnlyList<int[]> tokenIds, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(tokenIds);
        if (tokenIds.Count == 0) throw new ArgumentException("no texts.", nameof(tokenIds));
        ObjectDisposedException.ThrowIf(_closing, this);
        if (cancellation.IsCancellationRequested) return Task.FromCanceled<float[]>(cancellation);
        int vocab = _vocabSize;
        var encoded = new int[tokenIds.Count][];
        for (int i = 0; i < tokenIds.Count; i++)
        {
            if (tokenIds[i] is not { Length: > 0 } given) throw new ArgumentException($"text {i} has no ids.", nameof(tokenIds));
            // checked in a copy of our own, so a caller changing its array meanwhile cannot put a bad id into a shared batch
            var ids = (int[])given.Clone();
            foreach (int id in ids)
                if ((uint)id >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(tokenIds), id, $"text {i}: id {id} is outside the vocabulary (0..{vocab - 1}).");
            encoded[i] = _session.FitToLimit(ids);
        }
        return Submit(encoded, cancellation);
    }

    private Task<float[]> Submit(int[][] encoded, CancellationToken cancellation)
    {
        // a request made by OnBatch (this thread is reporting a pass of this batcher and holds _running): queued, it would
        // be run by the dispatcher after the hook returns — and a hook waiting for its answer (task.Result) would never
        // return. It runs here and now instead (the pass is over, its session free); such a run is not reported to OnBatch.
        if (ReferenceEquals(_reporting, this)) return RunInline(encoded, report: false);
        if (Batching.RunLoneRequestsInline && Volatile.Read(ref _lastBatchRequests) == 1 && _queue.IsEmpty && Monitor.TryEnter(_running))
        {
            try { return RunInline(encoded); }
            finally { Monitor.Exit(_running); }
        }
        int count = encoded.Length;
        var r = new Request
        {
            Ids = [.. encoded.SelectMany(e => e)], Lengths = [.. encoded.Select(e => e.Length)],
            Output = new float[count * Dimension], Enqueued = System.Diagnostics.Stopwatch.GetTimestamp(),
        };
        if (Interlocked.Add(ref _queuedTexts, count) > Batching.MaxQueuedTexts)
        {
            Interlocked.Add(ref _queuedTexts, -count);
            throw new InvalidOperationException($"the batcher's queue is full ({Batching.MaxQueuedTexts} texts); try again later.");
        }
        lock (_gate)
        {
            // under the lock that DisposeAsync takes to close: a request is either queued before the stop signal, or refused
            if (_closing)
            {
                Interlocked.Add(ref _queuedTexts, -count);
                throw new ObjectDisposedException(nameof(EmbeddingBatcher));
            }
            if (cancellation.CanBeCanceled)
                r.Cancellation = cancellation.Register(static o => ((Request)o!).Done.TrySetCanceled(), r);
            _queue.Enqueue(r);
            _signal.Release();
        }
        return r.Done.Task;
    }

    private Task<float[]> RunInline(int[][] encoded, bool report = true)
    {
        // DisposeAsync sets _closing before the dispatcher's last pass and before it frees the sessions under _running
        if (_closing) throw new ObjectDisposedException(nameof(EmbeddingBatcher));
        int n = 0;
        var lengths = new int[encoded.Length];
        for (int i = 0; i < encoded.Length; i++) n += lengths[i] = encoded[i].Length;
        int[] ids = encoded.Length == 1 ? encoded[0] : [.. encoded.SelectMany(e => e)];
        var output = new float[encoded.Length * Dimension];
        long began = System.Diagnostics.Stopwatch.GetTimestamp();
        try
        {
            SessionFor(n).EncodeIds(ids, lengths, output);
        }
        catch (Exception e) { return Task.FromException<float[]>(e); }
        var ran = System.Diagnostics.Stopwatch.GetElapsedTime(began);
        if (report) Report(new BatchInfo(1, encoded.Length, n, TimeSpan.Zero, ran));
        return Task.FromResult(output);
    }

    /// <summary>The session a pass of <paramref name="tokens"/> tokens runs on: the one-thread session below <see cref="BatchingOptions.ParallelFromTokens"/>.</summary>
    private EmbeddingSession SessionFor(int tokens) => _single != null && tokens < Batching.ParallelFromTokens ? _single : _session;

    /// <summary>Calls <see cref="OnBatch"/>; metrics must not fail a request or stop the batcher.</summary>
    private void Report(BatchInfo info)
    {
        var outer = _reporting;
        _reporting = this;
        try { OnBatch?.Invoke(info); } catch { /* ignored */ }
        finally { _reporting = outer; }
    }

    /// <summary>The batcher whose <see cref="OnBatch"/> this thread is running (null when none).</summary>
    [ThreadStatic] private static EmbeddingBatcher? _reporting;

    private readonly List<Request> _batch = [];

    private void Dispatch()
    {
        while (true)
        {
            _signal.Wait();
            Monitor.Enter(_running); // an inline caller may be running a pass; what queues meanwhile joins this batch
            try { if (!Gather()) break; }
            finally { Monitor.Exit(_running); }
        }
        _stopped.TrySetResult();
    }

    /// <summary>Takes the next batch off the queue and runs it; false on the stop signal.</summary>
    private bool Gather()
    {
        var batch = _batch;
        if (!_queue.TryDequeue(out var first)) return !_closing; // else the stop signal
        batch.Clear();
        batch.Add(first);
        int tokens = first.Ids.Length;
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        var deadline = start + (long)(Batching.MaxWait.TotalSeconds * System.Diagnostics.Stopwatch.Frequency);
        // gather: whatever is queued, and — while the batch is smaller than the last one — what arrives before the deadline
        while (true)
        {
            while (_queue.TryPeek(out var next) && tokens + next.Ids.Length <= Batching.MaxBatchTokens && _signal.Wait(0))
            {
                _queue.TryDequeue(out next);
                batch.Add(next!);
                tokens += next!.Ids.Length;
            }
            long now = System.Diagnostics.Stopwatch.GetTimestamp();
            if (batch.Count >= _lastBatchRequests || now >= deadline || !_queue.IsEmpty || _closing) break;
            var left = TimeSpan.FromSeconds((double)(deadline - now) / System.Diagnostics.Stopwatch.Frequency);
            if (!_signal.Wait(left)) break;
            _signal.Release(); // the wait consumed a signal that belongs to the request now queued
        }
        var waited = System.Diagnostics.Stopwatch.GetElapsedTime(start);
        Volatile.Write(ref _lastBatchRequests, Math.Max(1, batch.Count));
        Run(batch, tokens, waited);
        return true;
    }

    private void Run(List<Request> batch, int tokens, TimeSpan waited)
    {
        // requests cancelled while queued are dropped here
        int texts = 0, n = 0, live = 0;
        foreach (var r in batch)
        {
            Interlocked.Add(ref _queuedTexts, -r.Lengths.Length);
            r.Cancellation.Dispose();
            if (r.Done.Task.IsCompleted) continue;
            live++;
            texts += r.Lengths.Length;
            n += r.Ids.Length;
        }
        if (live == 0) return;
        if (_ids.Length < n) _ids = new int[Math.Max(n, 2 * _ids.Length)];
        if (_lengths.Length < texts) _lengths = new int[Math.Max(texts, 2 * _lengths.Length)];
        if (_vectors.Length < texts * Dimension) _vectors = new float[Math.Max(texts * Dimension, 2 * _vectors.Length)];
        int t = 0, s = 0;
        foreach (var r in batch)
        {
            if (r.Done.Task.IsCompleted) continue;
            r.Ids.CopyTo(_ids, t); t += r.Ids.Length;
            r.Lengths.CopyTo(_lengths, s); s += r.Lengths.Length;
        }
        long began = System.Diagnostics.Stopwatch.GetTimestamp();
        try
        {
            SessionFor(n).EncodeIds(_ids.AsSpan(0, n), _lengths.AsSpan(0, texts), _vectors.AsSpan(0, texts * Dimension));
        }
        catch (Exception e)
        {
            foreach (var r in batch) r.Done.TrySetException(e);
            return;
        }
        var ran = System.Diagnostics.Stopwatch.GetElapsedTime(began);
        int v = 0;
        foreach (var r in batch)
        {
            if (r.Done.Task.IsCompleted) continue;
            _vectors.AsSpan(v * Dimension, r.Output.Length).CopyTo(r.Output);
            v += r.Lengths.Length;
            r.Done.TrySetResult(r.Output);
        }
        Report(new BatchInfo(live, texts, n, waited, ran));
    }

    /// <summary>
    /// Stops accepting requests, finishes every queued one, then stops the dispatcher and its session. Called from this
    /// batcher's <see cref="OnBatch"/>, whose pass the disposal waits for, it starts the disposal and returns completed (a
    /// hook blocking on the task waited for ever).
    /// </summary>
    public ValueTask DisposeAsync()
    {
        if (ReferenceEquals(_reporting, this)) { _ = Task.Run(() => DisposeCoreAsync().AsTask()); return default; }
        return DisposeCoreAsync();
    }

    private async ValueTask DisposeCoreAsync()
    {
        bool first;
        lock (_gate)
        {
            first = !_closing;
            _closing = true;
            if (first) _signal.Release(); // wakes the dispatcher; the queue drains before the stop signal is seen
        }
        await _stopped.Task.ConfigureAwait(false);
        if (first)
            lock (_running) { _session.Dispose(); _single?.Dispose(); } // after an inline pass in flight
    }

    /// <summary>
    /// As <see cref="DisposeAsync"/>, blocking. Called from this batcher's <see cref="OnBatch"/>, whose pass the disposal
    /// waits for, it starts the disposal and returns (blocking there waited for ever).
    /// </summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();
}
