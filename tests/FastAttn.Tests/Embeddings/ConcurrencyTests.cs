using System.Text;
using FastAttn.Composition;
using FastAttn.Embeddings;
using FastAttn.Layers;
using FastAttn.Tagging;
using FastAttn.Tests.IO;
using FastAttn.Tests.Threading;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// The thread-safe entries for servers — <see cref="EmbeddingBatcher"/>, <see cref="SentenceEmbedder"/>,
/// <see cref="SessionPool"/>, <see cref="PosTagModel.Tag"/> — under many concurrent callers: every answer equals the
/// answer of the same request alone, to the bit.
/// </summary>
public sealed class ConcurrencyTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly BertModel _model;
    private readonly BertWordPieceTokenizer _tokenizer;
    private static readonly string[] Words = "the cafe naive owner paid $ 3 , 000 . for books ! hello world here new x xy a don t".Split(' ');

    public ConcurrencyTests()
    {
        BertModelTests.Write(_dir, BertModelTests.Checkpoint());
        _model = BertModel.Load(_dir.Path);
        // the tiny model knows 50 ids: the first 50 entries of the rules test's vocabulary
        _tokenizer = BertWordPieceTokenizer.FromVocab(new MemoryStream(Encoding.UTF8.GetBytes(string.Join('\n', TokenizerRulesTests.Vocab[..BertModelTests.Vocab]) + "\n")));
    }

    public void Dispose() { _model.Dispose(); _dir.Dispose(); }

    private static string[] Texts(int count, int seed)
    {
        var rnd = new Random(seed);
        // 0 to 20 words: some are cut at the model's 16 positions
        return Enumerable.Range(0, count).Select(_ => string.Join(' ', Enumerable.Range(0, rnd.Next(0, 21)).Select(_ => Words[rnd.Next(Words.Length)]))).ToArray();
    }

    private float[] Alone(EmbeddingSession session, string text)
    {
        var v = new float[session.Dimension];
        session.Encode([text], v);
        return v;
    }

    /// <summary>Ids outside the vocabulary, empty or missing lists: refused by the call itself (no task to await).</summary>
    private void AssertBadIdsRefusedOnTheCaller(Func<IReadOnlyList<int[]>, Task<float[]>> encodeIds)
    {
        int vocab = _model.Config.VocabSize;
        Assert.Throws<ArgumentOutOfRangeException>(() => { _ = encodeIds([[_tokenizer.ClsId, vocab, _tokenizer.SepId]]); });
        Assert.Throws<ArgumentOutOfRangeException>(() => { _ = encodeIds([[_tokenizer.ClsId, _tokenizer.SepId], [-1]]); });
        Assert.Throws<ArgumentException>(() => { _ = encodeIds([[_tokenizer.ClsId], []]); });
        Assert.Throws<ArgumentException>(() => { _ = encodeIds([null!]); });
        Assert.Throws<ArgumentException>(() => { _ = encodeIds([]); });
        Assert.Throws<ArgumentNullException>(() => { _ = encodeIds(null!); });
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Batcher_ConcurrentRequests_AreCoalesced_AndEachEqualsItsAnswerAlone(bool inline)
    {
        var options = new SentenceEmbedderOptions { Normalize = true };
        using var alone = new EmbeddingSession(_model, _tokenizer, options);
        var batches = new List<BatchInfo>();
        // the first pass is held until every other request has been submitted, so they must queue and coalesce
        using var gate = new ManualResetEventSlim();
        await using var batcher = new EmbeddingBatcher(_model, _tokenizer, options, new BatchingOptions { MaxWait = TimeSpan.FromMilliseconds(2), MaxBatchTokens = 64, RunLoneRequestsInline = inline })
        {
            OnBatch = b => { lock (batches) batches.Add(b); gate.Wait(TimeSpan.FromSeconds(30)); },
        };
        var requests = Enumerable.Range(0, 400).Select(i => Texts(1 + i % 3, i)).ToArray();
        int submitted = 0;
        // many threads submitting at once (a request run inline holds its caller in EncodeAsync until the gate opens)
        var results = requests.Select(r => Task.Run(() => { var t = batcher.EncodeAsync(r); Interlocked.Increment(ref submitted); return t; })).ToArray();
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (Volatile.Read(ref submitted) < requests.Length - 1 && DateTime.UtcNow < deadline) Thread.Sleep(1);
        gate.Set();
        var answers = await Task.WhenAll(results);
        int d = batcher.Dimension;
        for (int i = 0; i < requests.Length; i++)
            for (int t = 0; t < requests[i].Length; t++)
                Assert.Equal(Alone(alone, requests[i][t]), answers[i].AsSpan(t * d, d).ToArray());
        lock (batches)
        {
            Assert.Equal(requests.Length, batches.Sum(b => b.Requests));
            Assert.Contains(batches, b => b.Requests > 1);                  // coalesced
            Assert.All(batches, b => Assert.True(b.Tokens <= 64 || b.Requests == 1, $"a batch of {b.Tokens} tokens"));
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Batcher_ALoneCaller_DoesNotWaitForCompany(bool inline)
    {
        var batches = new List<BatchInfo>();
        // the longest wait allowed: a lone caller that waited would show it in every batch
        await using var batcher = new EmbeddingBatcher(_model, _tokenizer, null, new BatchingOptions { MaxWait = TimeSpan.FromSeconds(1), MaxBatchTokens = 64, RunLoneRequestsInline = inline })
        {
            OnBatch = b => { lock (batches) batches.Add(b); },
        };
        var texts = Texts(20, 5);
        foreach (var t in texts) await batcher.EncodeAsync(t);
        lock (batches)
        {
            Assert.Equal(texts.Length, batches.Count);
            Assert.All(batches, b => Assert.True(b.Waited < TimeSpan.FromMilliseconds(500), $"a lone request waited {b.Waited}"));
        }
    }

    [Fact]
    public async Task Batcher_ALoneRequest_RunsOnItsCallersThread_WithTheSameAnswer()
    {
        var options = new SentenceEmbedderOptions { Normalize = true, Threads = 2 };
        using var alone = new EmbeddingSession(_model, _tokenizer, options with { Threads = 1 });
        var threads = new List<int>();
        await using var batcher = new EmbeddingBatcher(_model, _tokenizer, options, new BatchingOptions { MaxWait = TimeSpan.FromMilliseconds(2), MaxBatchTokens = 64, ParallelFromTokens = 8 })
        {
            OnBatch = b => { lock (threads) threads.Add(Environment.CurrentManagedThreadId); },
        };
        // short (one-thread session) and long (two-thread session) requests of one and two texts: each is complete when
        // EncodeAsync returns, computed on this thread
        foreach (var texts in Enumerable.Range(0, 30).Select(i => Texts(1 + i % 2, 100 + i)))
        {
            var task = batcher.EncodeAsync(texts);
            Assert.True(task.IsCompletedSuccessfully, "a lone request on an idle batcher was queued");
            var got = await task;
            for (int t = 0; t < texts.Length; t++)
                Assert.Equal(Alone(alone, texts[t]), got.AsSpan(t * batcher.Dimension, batcher.Dimension).ToArray());
        }
        lock (threads)
        {
            Assert.Equal(30, threads.Count);
            Assert.All(threads, id => Assert.Equal(Environment.CurrentManagedThreadId, id));
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Batcher_EncodeIds_EqualsEncodingTheTexts_AndBadIdsFailOnlyTheirCall(bool inline)
    {
        var options = new SentenceEmbedderOptions { Normalize = true };
        using var alone = new EmbeddingSession(_model, _tokenizer, options);
        await using var batcher = new EmbeddingBatcher(_model, _tokenizer, options, new BatchingOptions { MaxBatchTokens = 64, RunLoneRequestsInline = inline });
        // texts tokenized by the caller (some longer than the model's 16 positions: cut as texts are), alone and concurrently
        var requests = Enumerable.Range(0, 60).Select(i => Texts(1 + i % 3, 300 + i)).ToArray();
        var answers = await Task.WhenAll(requests.Select(r => Task.Run(() => batcher.EncodeIdsAsync(r.Select(t => _tokenizer.Encode(t)).ToArray()))));
        int d = batcher.Dimension;
        for (int i = 0; i < requests.Length; i++)
            for (int t = 0; t < requests[i].Length; t++)
                Assert.Equal(Alone(alone, requests[i][t]), answers[i].AsSpan(t * d, d).ToArray());
        Assert.Contains(requests.SelectMany(r => r), t => _tokenizer.Encode(t).Length > 16);
        // bad ids: refused on the caller's thread before anything is queued; the batcher serves the next request
        AssertBadIdsRefusedOnTheCaller(ids => batcher.EncodeIdsAsync(ids));
        Assert.Equal(0, batcher.QueuedTexts);
        Assert.Equal(Alone(alone, "hello world"), await batcher.EncodeIdsAsync([_tokenizer.Encode("hello world")]));
    }

    [Fact]
    public async Task Batcher_DisposeAsync_WaitsForAnInlinePassInFlight()
    {
        using var alone = new EmbeddingSession(_model, _tokenizer);
        for (int rep = 0; rep < 20; rep++)
        {
            using var entered = new ManualResetEventSlim();
            using var gate = new ManualResetEventSlim();
            var batcher = new EmbeddingBatcher(_model, _tokenizer)
            {
                OnBatch = _ => { entered.Set(); gate.Wait(TimeSpan.FromSeconds(30)); },
            };
            var request = Task.Run(() => batcher.EncodeAsync("the owner paid"));
            Assert.True(entered.Wait(TimeSpan.FromSeconds(30)));
            var disposing = batcher.DisposeAsync().AsTask();
            await Task.Delay(5);
            Assert.False(disposing.IsCompleted, "DisposeAsync returned while a pass was running on a caller's thread");
            Assert.Throws<ObjectDisposedException>(() => { _ = batcher.EncodeAsync("late"); });
            gate.Set();
            await disposing;
            Assert.Equal(Alone(alone, "the owner paid"), await request);
        }
    }

    [Fact]
    public async Task Batcher_DisposeAsync_FinishesEveryQueuedRequest_ThenRefuses()
    {
        var texts = Texts(30, 7);
        using var alone = new EmbeddingSession(_model, _tokenizer);
        var want = texts.Select(t => Alone(alone, t)).ToArray();
        for (int rep = 0; rep < MisuseStressTests.Repetitions; rep++)
        {
            // queued, not run on this thread: nothing may be left behind by DisposeAsync
            var batcher = new EmbeddingBatcher(_model, _tokenizer, null, new BatchingOptions { MaxBatchTokens = 32, RunLoneRequestsInline = false });
            var pending = texts.Select(t => batcher.EncodeAsync(t)).ToArray();
            await batcher.DisposeAsync();
            for (int i = 0; i < texts.Length; i++)
            {
                Assert.True(pending[i].IsCompletedSuccessfully, $"request {i} was not finished by DisposeAsync");
                Assert.Equal(want[i], await pending[i]);
            }
            Assert.Throws<ObjectDisposedException>(() => { _ = batcher.EncodeAsync("late"); });
            await batcher.DisposeAsync(); // twice is fine
        }
    }

    [Fact]
    public async Task Batcher_DisposedWhileRequestsArrive_EachIsServedOrRefused_NoneHangs()
    {
        using var alone = new EmbeddingSession(_model, _tokenizer);
        var texts = Texts(20, 13);
        var want = texts.Select(t => Alone(alone, t)).ToArray();
        for (int rep = 0; rep < MisuseStressTests.Repetitions; rep++)
        {
            var batcher = new EmbeddingBatcher(_model, _tokenizer);
            var accepted = SubmitWhile(batcher, texts, () => batcher.Dispose());
            foreach (var (i, task) in accepted)
            {
                Assert.True(await Task.WhenAny(task, Task.Delay(TimeSpan.FromSeconds(30))) == task, "an accepted request was never answered");
                Assert.Equal(want[i], await task);
            }
        }
    }

    /// <summary>Submits every text to <paramref name="batcher"/> on one thread while <paramref name="other"/> runs on another; the requests it accepted.</summary>
    private static List<(int Index, Task<float[]> Task)> SubmitWhile(EmbeddingBatcher batcher, string[] texts, Action other)
    {
        var accepted = new List<(int Index, Task<float[]> Task)>();
        MisuseStressTests.Race(() =>
        {
            for (int i = 0; i < texts.Length; i++)
            {
                try { accepted.Add((i, batcher.EncodeAsync(texts[i]))); }
                catch (ObjectDisposedException) { }
            }
        }, other);
        return accepted;
    }

    /// <summary>
    /// The model disposed under a batcher with requests queued and arriving: each request gets its vector or
    /// <see cref="ObjectDisposedException"/> (none is left unanswered by the batching loop), and later requests too.
    /// </summary>
    [Fact]
    public async Task Batcher_ItsModelDisposedWhileRequestsRun_EachIsServedOrRefused_NoneHangs()
    {
        var texts = Texts(20, 17);
        float[][] want;
        using (var alone = new EmbeddingSession(_model, _tokenizer)) want = texts.Select(t => Alone(alone, t)).ToArray();
        for (int rep = 0; rep < MisuseStressTests.Repetitions / 2; rep++)
        {
            var model = BertModel.Load(_dir.Path);
            await using var batcher = new EmbeddingBatcher(model, _tokenizer, null, new BatchingOptions { MaxBatchTokens = 48, RunLoneRequestsInline = rep % 2 == 0 });
            var accepted = SubmitWhile(batcher, texts, () => model.Dispose());
            foreach (var (i, task) in accepted)
            {
                Assert.True(await Task.WhenAny(task, Task.Delay(TimeSpan.FromSeconds(30))) == task, "an accepted request was never answered");
                try { Assert.Equal(want[i], await task); }
                catch (ObjectDisposedException) { }
            }
            var late = batcher.EncodeAsync(texts[0]);
            Assert.True(await Task.WhenAny(late, Task.Delay(TimeSpan.FromSeconds(30))) == late, "a request after the model's disposal was never answered");
            await Assert.ThrowsAsync<ObjectDisposedException>(() => late);
        }
    }

    /// <summary>
    /// OnBatch disposing its own batcher (a metrics hook deciding to shut down), on the dispatcher thread and on an inline
    /// caller's, with Dispose or blocking on DisposeAsync's task: the disposal waited for the pass that was running the hook
    /// (for ever); now the pass's requests get their vectors, the batcher is disposed right after, and later requests are
    /// refused.
    /// </summary>
    [Theory]
    [InlineData(true, false)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    [InlineData(false, true)]
    public async Task Batcher_DisposedByItsOwnOnBatch_ThePassFinishes_ThenItIsDisposed(bool inline, bool waitingForDisposeAsync)
    {
        using var alone = new EmbeddingSession(_model, _tokenizer);
        var want = Alone(alone, "the owner paid");
        for (int rep = 0; rep < 20; rep++)
        {
            var batcher = new EmbeddingBatcher(_model, _tokenizer, null, new BatchingOptions { RunLoneRequestsInline = inline });
#pragma warning disable xUnit1031 // a hook blocking on DisposeAsync's task is the misuse under test
            if (waitingForDisposeAsync) batcher.OnBatch = _ => batcher.DisposeAsync().AsTask().Wait();
#pragma warning restore xUnit1031
            else batcher.OnBatch = _ => batcher.Dispose();
            Assert.Equal(want, await batcher.EncodeAsync("the owner paid").WaitAsync(TimeSpan.FromSeconds(30)));
            for (long t0 = Environment.TickCount64; Environment.TickCount64 - t0 < 30_000;)
            {
                try { _ = batcher.EncodeAsync("late"); }
                catch (ObjectDisposedException) { break; }
                await Task.Delay(1);
            }
            Assert.Throws<ObjectDisposedException>(() => { _ = batcher.EncodeAsync("late"); });
            await batcher.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        }
    }

    /// <summary>
    /// OnBatch making a request of its own batcher and waiting for it (a hook computing a probe vector, say): queued, the
    /// request waited for the dispatcher, which was the thread running the hook — for ever. Now it runs at once on the
    /// hook's thread (dispatcher or inline caller), its answer equals the text's alone, and the batcher goes on serving.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Batcher_OnBatchWaitingForItsOwnRequest_GetsItsAnswer(bool inline)
    {
        using var alone = new EmbeddingSession(_model, _tokenizer);
        var probe = Alone(alone, "hello world");
        var texts = Texts(20, 11);
        await using var batcher = new EmbeddingBatcher(_model, _tokenizer, null, new BatchingOptions { RunLoneRequestsInline = inline });
        var seen = new List<float[]>();
        int reported = 0;
        batcher.OnBatch = _ =>
        {
            Interlocked.Increment(ref reported);
#pragma warning disable xUnit1031 // the blocking wait inside the hook is the misuse under test
            var t = batcher.EncodeAsync("hello world");
            bool done = t.Wait(TimeSpan.FromSeconds(30));
#pragma warning restore xUnit1031
            lock (seen) seen.Add(done ? t.Result : []);
        };
        var answers = await Task.WhenAll(texts.Select(t => Task.Run(() => batcher.EncodeAsync(t)))).WaitAsync(TimeSpan.FromSeconds(60));
        for (int i = 0; i < texts.Length; i++) Assert.Equal(Alone(alone, texts[i]), answers[i]);
        lock (seen)
        {
            Assert.Equal(Volatile.Read(ref reported), seen.Count); // the hook's own requests were not reported to it
            Assert.InRange(seen.Count, 1, texts.Length);
            Assert.All(seen, v => Assert.Equal(probe, v));
        }
    }

    [Fact]
    public async Task Batcher_Cancellation_AndAFullQueue_EndInTheirExceptions()
    {
        using var alone = new EmbeddingSession(_model, _tokenizer);
        // the first pass is held until every request has been submitted: the queue of 8 must fill
        using var gate = new ManualResetEventSlim();
        await using var batcher = new EmbeddingBatcher(_model, _tokenizer, null, new BatchingOptions { MaxBatchTokens = 16, MaxQueuedTexts = 8, RunLoneRequestsInline = false })
        {
            OnBatch = _ => gate.Wait(TimeSpan.FromSeconds(30)),
        };
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => batcher.EncodeAsync("the owner", cancelled.Token));
        // many at once against a queue of 8: each request is served right, or refused at once with InvalidOperationException
        var texts = Texts(200, 9);
        int refused = 0;
        var served = new List<(string Text, Task<float[]> Task)>();
        using var cts = new CancellationTokenSource();
        for (int i = 0; i < texts.Length; i++)
        {
            try { served.Add((texts[i], batcher.EncodeAsync(texts[i], i % 4 == 3 ? cts.Token : default))); }
            catch (InvalidOperationException e) { Assert.Contains("queue is full", e.Message); refused++; }
            if (i == 100) cts.Cancel(); // two of the queued ones (3 and 7) are cancellable
        }
        gate.Set();
        foreach (var (text, task) in served)
        {
            try { Assert.Equal(Alone(alone, text), await task); }
            catch (OperationCanceledException) { Assert.True(task.IsCanceled); }
        }
        Assert.True(refused > 0, "the queue never filled");
        Assert.Equal(Alone(alone, "still works"), await batcher.EncodeAsync("still works"));
        await Assert.ThrowsAsync<ArgumentException>(() => batcher.EncodeAsync(Array.Empty<string>()));
        await Assert.ThrowsAsync<ArgumentException>(() => batcher.EncodeAsync(new string[] { "a", null! }));
    }

    [Fact]
    public void EmbeddingSession_TwoCallers_OneIsRight_TheOtherIsToldOneCallerAtATime()
    {
        using var session = new EmbeddingSession(_model, _tokenizer, new SentenceEmbedderOptions { Threads = 2 });
        var texts = Texts(64, 17);
        var want = new float[texts.Length * session.Dimension];
        session.Encode(texts, want);
        for (int rep = 0; rep < MisuseStressTests.Repetitions; rep++)
        {
            float[] a = new float[want.Length], b = new float[want.Length];
            var (ea, eb) = MisuseStressTests.Race(() => session.Encode(texts, a), () => session.Encode(texts, b));
            foreach (var (e, r) in new[] { (ea, a), (eb, b) })
                if (e == null) Assert.Equal(want, r);
                else Assert.Contains("one caller at a time", Assert.IsType<InvalidOperationException>(e).Message);
        }
    }

    [Fact]
    public async Task SentenceEmbedder_ManyThreads_SameAnswers_SyncAndAsync()
    {
        using var embedder = new SentenceEmbedder(_model, _tokenizer, new SentenceEmbedderOptions { MaxSessions = 3 });
        var texts = Texts(300, 11);
        var want = texts.Select(embedder.Encode).ToArray();
        var got = new float[texts.Length][];
        Parallel.For(0, texts.Length, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i => got[i] = embedder.Encode(texts[i]));
        Assert.Equal(want, got);
        var asyncGot = await Task.WhenAll(texts.Select(t => Task.Run(() => embedder.EncodeAsync(t))));
        Assert.Equal(want, asyncGot);
        var many = await embedder.EncodeAsync(texts[..5]);
        for (int i = 0; i < 5; i++) Assert.Equal(want[i], many.AsSpan(i * embedder.Dimension, embedder.Dimension).ToArray());
    }

    [Fact]
    public async Task SentenceEmbedder_EncodeIds_EqualsEncodingTheTexts_BadIdsRefusedOnTheCaller()
    {
        using var embedder = new SentenceEmbedder(_model, _tokenizer, new SentenceEmbedderOptions { MaxSessions = 2 });
        int d = embedder.Dimension;
        // texts tokenized by the caller, some past the model's 16 positions (cut as texts are), one to three per call
        var requests = Enumerable.Range(0, 40).Select(i => Texts(1 + i % 3, 500 + i)).ToArray();
        Assert.Contains(requests.SelectMany(r => r), t => _tokenizer.Encode(t).Length > 16);
        var answers = await Task.WhenAll(requests.Select(r => Task.Run(() => embedder.EncodeIdsAsync(r.Select(t => _tokenizer.Encode(t)).ToArray()))));
        for (int i = 0; i < requests.Length; i++)
            Assert.Equal(await embedder.EncodeAsync(requests[i]), answers[i]);
        AssertBadIdsRefusedOnTheCaller(ids => embedder.EncodeIdsAsync(ids));
        Assert.Equal(embedder.Encode("hello world"), await embedder.EncodeIdsAsync([_tokenizer.Encode("hello world")]));
        Assert.Equal(d, (await embedder.EncodeIdsAsync([_tokenizer.Encode("x")])).Length);
        embedder.Dispose();
        await Assert.ThrowsAsync<ObjectDisposedException>(() => embedder.EncodeIdsAsync([_tokenizer.Encode("x")]));
    }

    /// <summary>Each text's vector from an embedder of the shared model, one call per text.</summary>
    private float[][] EmbeddedOneByOne(string[] texts)
    {
        using var e0 = new SentenceEmbedder(_model, _tokenizer);
        return texts.Select(e0.Encode).ToArray();
    }

    /// <summary>
    /// A server disposing its embedder at shutdown while requests are in flight (sessions on 2 threads, so worker pools and
    /// their native scratch are in use): each call gives the right vector or <see cref="ObjectDisposedException"/>, none
    /// hangs, and later calls are refused; the model it did not own still works.
    /// </summary>
    [Fact]
    public async Task SentenceEmbedder_DisposedWhileCallsRun_TheyFinishOrThrowObjectDisposed()
    {
        var texts = Texts(6, 31);
        var want = EmbeddedOneByOne(texts);
        for (int rep = 0; rep < MisuseStressTests.Repetitions; rep++)
        {
            var embedder = new SentenceEmbedder(_model, _tokenizer, new SentenceEmbedderOptions { Threads = 2, MaxSessions = 2 });
            await MisuseStressTests.CallersThenDispose(3, rep, async c =>
            {
                for (int i = 0; i < texts.Length; i++)
                {
                    int k = (i + c) % texts.Length;
                    try { Assert.Equal(want[k], c == 2 ? await embedder.EncodeAsync(texts[k]) : embedder.Encode(texts[k])); }
                    catch (ObjectDisposedException) { }
                }
            }, embedder.Dispose);
            Assert.Throws<ObjectDisposedException>(() => embedder.Encode("x"));
        }
        using var again = new SentenceEmbedder(_model, _tokenizer);
        Assert.Equal(want[0], again.Encode(texts[0]));
    }

    /// <summary>
    /// The model itself disposed while embedders that share it run on 2 threads (its packed weights are native memory
    /// the kernels read): every call gives the right vector or <see cref="ObjectDisposedException"/>, none hangs or
    /// reads freed memory, and a call after the dispose is refused.
    /// </summary>
    [Fact]
    public async Task BertModel_DisposedWhileEmbeddersUseIt_CallsFinishOrThrowObjectDisposed()
    {
        var texts = Texts(6, 37);
        var want = EmbeddedOneByOne(texts);
        for (int rep = 0; rep < MisuseStressTests.Repetitions; rep++)
        {
            var model = BertModel.Load(_dir.Path);
            using var embedder = new SentenceEmbedder(model, _tokenizer, new SentenceEmbedderOptions { Threads = 2, MaxSessions = 2 });
            using var session = new EmbeddingSession(model, _tokenizer, new SentenceEmbedderOptions { Threads = 2 });
            await MisuseStressTests.CallersThenDispose(3, rep, c =>
            {
                var v = new float[session.Dimension];
                for (int i = 0; i < texts.Length; i++)
                {
                    int k = (i + c) % texts.Length;
                    try
                    {
                        if (c == 2) { session.Encode([texts[k]], v); Assert.Equal(want[k], v); }
                        else Assert.Equal(want[k], embedder.Encode(texts[k]));
                    }
                    catch (ObjectDisposedException) { }
                }
                return Task.CompletedTask;
            }, model.Dispose);
            Assert.Throws<ObjectDisposedException>(() => embedder.Encode(texts[0]));
            Assert.Throws<ObjectDisposedException>(() => session.Encode([texts[0]], new float[session.Dimension]));
        }
    }

    private sealed class Item : IDisposable
    {
        public int Disposed;
        public void Dispose() => Interlocked.Increment(ref Disposed);
    }

    [Fact]
    public void LeasePool_TheInitialObject_IsLeasedToOneCaller_AndDisposedWithThePool_EvenUnused()
    {
        for (int rep = 0; rep < MisuseStressTests.Repetitions; rep++)
        {
            var initial = new Item();
            // a slow factory: two callers renting at once overlap in it (where a flag-in-the-factory pool handed out the initial twice)
            using var pool = new LeasePool<Item>(() => { Thread.Sleep(2); return new Item(); }, 2, initial);
            Assert.Equal(1, pool.Created);
            Item? a = null, b = null;
            using var hold = new Barrier(2);
            var (ea, eb) = MisuseStressTests.Race(
                () => { using var l = pool.Rent(); a = l.Value; hold.SignalAndWait(); },
                () => { using var l = pool.Rent(); b = l.Value; hold.SignalAndWait(); });
            Assert.Null(ea); Assert.Null(eb);
            Assert.NotSame(a, b);
            Assert.True(ReferenceEquals(a, initial) || ReferenceEquals(b, initial));
            Assert.Equal(2, pool.Created);
        }
        var unused = new Item();
        new LeasePool<Item>(() => new Item(), 3, unused).Dispose();
        Assert.Equal(1, unused.Disposed);
        Assert.Throws<ArgumentNullException>(() => new LeasePool<Item>(() => new Item(), 1, null!));
    }

    /// <summary>
    /// Callers waiting for an object (synchronously and asynchronously) when the pool is disposed: the returned lease frees
    /// its slot, so each waiter wakes and ends in <see cref="ObjectDisposedException"/> — the pool did not release a
    /// returned object's slot once disposed, and every waiter then waited for ever (a server disposing its embedder at
    /// shutdown with more requests than sessions hung).
    /// </summary>
    [Fact]
    public async Task LeasePool_CallersWaitingWhenItIsDisposed_AreRefused_WhenTheLeaseComesBack()
    {
        for (int rep = 0; rep < MisuseStressTests.Repetitions; rep++)
        {
            var pool = new LeasePool<Item>(() => new Item(), 1);
            var lease = pool.Rent();
            var held = lease.Value;
            int started = 0;
            var sync = Enumerable.Range(0, 3).Select(_ => Task.Run(() => { Interlocked.Increment(ref started); using var l = pool.Rent(); })).ToArray();
            var async = Enumerable.Range(0, 3).Select(_ => Task.Run(async () => { Interlocked.Increment(ref started); using var l = await pool.RentAsync(); })).ToArray();
            while (Volatile.Read(ref started) < 6) Thread.Yield();
            if (rep % 2 == 1) Thread.Sleep(1);   // the waiters inside the wait, or still on their way to it
            pool.Dispose();
            Assert.Equal(0, held.Disposed);     // leased: disposed when it comes back
            lease.Dispose();
            foreach (var t in sync.Concat(async))
                await Assert.ThrowsAsync<ObjectDisposedException>(() => t.WaitAsync(TimeSpan.FromSeconds(30)));
            Assert.Equal(1, held.Disposed);
            Assert.Equal(1, pool.Created);
        }
    }

    /// <summary>A factory that leases from its own pool: refused with a clear exception (with one slot it waited for itself), and the pool still works.</summary>
    [Fact]
    public async Task LeasePool_AFactoryLeasingFromItsOwnPool_IsRefused_NotLeftWaitingForItself()
    {
        LeasePool<Item>? pool = null;
        int calls = 0;
        pool = new LeasePool<Item>(() =>
        {
            if (Interlocked.Increment(ref calls) == 1) { using var inner = pool!.Rent(); }
            else if (calls == 2) { using var inner = pool!.RentAsync().AsTask().GetAwaiter().GetResult(); }
            return new Item();
        }, 1);
        var e1 = await Task.Run(() => Assert.Throws<InvalidOperationException>(() => pool.Rent())).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Contains("factory", e1.Message);
        var e2 = await Task.Run(() => Assert.Throws<InvalidOperationException>(() => pool.Rent())).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Contains("factory", e2.Message);
        using (var l = pool.Rent()) Assert.NotNull(l.Value);   // the slots the failed creations took are free again
        using (var l = await pool.RentAsync()) Assert.NotNull(l.Value);
        Assert.Equal(1, pool.Created);
        pool.Dispose();
    }

    /// <summary>
    /// A factory returning null: the caller got a lease of null (a NullReferenceException later, in its own code), the null
    /// went back idle, and the pool's Dispose then threw NullReferenceException. Now the rent is refused with
    /// InvalidOperationException, the slot is free again, and the pool serves and disposes normally.
    /// </summary>
    [Fact]
    public async Task LeasePool_AFactoryReturningNull_IsRefused_AndThePoolStaysUsable()
    {
        int calls = 0;
        var pool = new LeasePool<Item>(() => Interlocked.Increment(ref calls) <= 2 ? null! : new Item(), 1);
        Assert.Contains("returned null", Assert.Throws<InvalidOperationException>(() => pool.Rent()).Message);
        Assert.Contains("returned null", (await Assert.ThrowsAsync<InvalidOperationException>(() => pool.RentAsync().AsTask())).Message);
        Assert.Equal(1, pool.Available);
        Item item;
        using (var l = pool.Rent()) item = l.Value;
        Assert.NotNull(item);
        Assert.Equal(1, pool.Created);
        pool.Dispose();
        Assert.Equal(1, item.Disposed);
    }

    [Fact]
    public void SentenceEmbedder_CrossEncoder_SessionPool_TheFirstCallersAtOnce_EachGetTheirOwnSession()
    {
        // the warmed-up session used to be handed out by a flag in the pool's factory: two first callers creating at once
        // could both get it (one then failed "one caller at a time"); each pool now starts with it idle
        var pairModelDir = new TempDir();
        try
        {
            BertModelTests.Write(pairModelDir, CrossEncoderTests.PairCheckpoint());
            using var pairModel = BertModel.Load(pairModelDir.Path);
            using var enc = TransformerEncoder.Create(layers: 1, dModel: 16, heads: 2, ffDim: 32, seed: 3);
            var x = Reference.Random(5 * 16, 1);
            float[] wantEmbed = new SentenceEmbedder(_model, _tokenizer).Encode("the cafe owner"), wantRun = new float[x.Length];
            using (var p0 = new SessionPool(enc, 8)) p0.Run(x, wantRun);
            float[] wantPair;
            using (var c0 = new CrossEncoder(pairModel, _tokenizer)) wantPair = c0.Logits("the cafe", "owner paid");
            for (int rep = 0; rep < MisuseStressTests.Repetitions; rep++)
            {
                using var embedder = new SentenceEmbedder(_model, _tokenizer, new SentenceEmbedderOptions { MaxSessions = 2 });
                var (e1, e2) = MisuseStressTests.Race(() => Assert.Equal(wantEmbed, embedder.Encode("the cafe owner")), () => Assert.Equal(wantEmbed, embedder.Encode("the cafe owner")));
                Assert.Null(e1); Assert.Null(e2);
                using var ce = new CrossEncoder(pairModel, _tokenizer, new SentenceEmbedderOptions { MaxSessions = 2 });
                (e1, e2) = MisuseStressTests.Race(() => Assert.Equal(wantPair, ce.Logits("the cafe", "owner paid")), () => Assert.Equal(wantPair, ce.Logits("the cafe", "owner paid")));
                Assert.Null(e1); Assert.Null(e2);
                using var pool = new SessionPool(enc, 8, capacity: 2);
                float[] y1 = new float[x.Length], y2 = new float[x.Length];
                (e1, e2) = MisuseStressTests.Race(() => pool.Run(x, y1), () => pool.Run(x, y2));
                Assert.Null(e1); Assert.Null(e2);
                Assert.Equal(wantRun, y1); Assert.Equal(wantRun, y2);
            }
        }
        finally { pairModelDir.Dispose(); }
    }

    [Fact]
    public async Task SessionPool_ManyThreads_SameAnswers_BoundedSessions()
    {
        using var enc = TransformerEncoder.Create(layers: 2, dModel: 32, heads: 4, ffDim: 64, seed: 5);
        using var pool = new SessionPool(enc, maxTokens: 40, capacity: 3);
        var inputs = Enumerable.Range(0, 200).Select(i => Reference.Random((1 + i % 40) * 32, i)).ToArray();
        var want = inputs.Select(x => { var y = new float[x.Length]; pool.Run(x, y); return y; }).ToArray();
        var got = new float[inputs.Length][];
        Parallel.For(0, inputs.Length, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i => { got[i] = new float[inputs[i].Length]; pool.Run(inputs[i], got[i]); });
        Assert.Equal(want, got);
        var asyncGot = await Task.WhenAll(inputs.Select(async x => { var y = new float[x.Length]; await pool.RunAsync(x, y); return y; }));
        Assert.Equal(want, asyncGot);
        Assert.Equal(3, pool.Capacity);
        pool.Dispose();
        Assert.Throws<ObjectDisposedException>(() => pool.Run(inputs[0], new float[inputs[0].Length]));
    }

    [Fact]
    public async Task PosTagModel_Tag_ManyThreads_SameAnswers()
    {
        using var model = PosTagModel.LoadBundled("attention");
        model.WarmUp();
        var rnd = new Random(3);
        string[] words = "I saw a saw . the old man the boat ; time flies like an arrow , and fruit flies like a banana !".Split(' ');
        var texts = Enumerable.Range(0, 1000).Select(_ => string.Join(' ', Enumerable.Range(0, rnd.Next(1, 30)).Select(_ => words[rnd.Next(words.Length)]))).ToArray();
        var want = texts.Select(model.Tag).ToArray();
        var got = new TaggedToken[texts.Length][];
        Parallel.For(0, texts.Length, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i => got[i] = model.Tag(texts[i]));
        for (int i = 0; i < texts.Length; i++) Assert.Equal(want[i], got[i]);
        var asyncGot = await Task.WhenAll(texts.Take(200).Select(t => Task.Run(() => model.TagAsync(t))));
        for (int i = 0; i < asyncGot.Length; i++) Assert.Equal(want[i], asyncGot[i]);
    }
}
