using System.Text;
using FastAttn.Embeddings;
using FastAttn.IO;
using FastAttn.Tests.IO;
using static FastAttn.Tests.Embeddings.BertModelTests;

namespace FastAttn.Tests.Embeddings;

/// <summary>
/// Sequence classification and cross-encoding: text pairs as BERT takes them (types 0 and 1, Hugging Face's longest-first
/// cut), the tiny BERT with a pooler and a 2-logit classifier against the double-precision reference, packed pairs equal
/// to pairs alone, and misuse refused.
/// </summary>
public sealed class CrossEncoderTests : IDisposable
{
    private const int Classes = 2;
    private readonly TempDir _dir = new();
    private readonly Dictionary<string, (float[] Data, long[] Shape)> _w;

    /// <summary>BertModelTests' checkpoint with a two-class classifier on its pooler.</summary>
    internal static Dictionary<string, (float[] Data, long[] Shape)> PairCheckpoint()
    {
        var w = Checkpoint(seed: 5);
        w["classifier.weight"] = (FastAttn.Tests.Reference.Random(Classes * H, 77, 0.3f), [Classes, H]);
        w["classifier.bias"] = (FastAttn.Tests.Reference.Random(Classes, 78, 0.1f), [Classes]);
        return w;
    }

    public CrossEncoderTests()
    {
        _w = PairCheckpoint();
        Write(_dir, _w);
        File.WriteAllText(_dir.File("vocab.txt"), string.Join('\n', TokenizerRulesTests.Vocab[..Vocab]) + "\n");
    }

    public void Dispose() => _dir.Dispose();

    /// <summary>The logits from the formulas: BERT with token types, tanh pooler on [CLS], then the classifier.</summary>
    private double[] RefLogits(int[] ids, int[] types)
    {
        var hs = RefBert(_w, "", ids, types);
        var pooled = Layers.LayerTests.Lin(hs[..H], 1, _w["pooler.dense.weight"].Data, _w["pooler.dense.bias"].Data, H, H).Select(Math.Tanh).ToArray();
        return Layers.LayerTests.Lin(pooled, 1, _w["classifier.weight"].Data, _w["classifier.bias"].Data, Classes, H);
    }

    private static string Words(int n) => string.Join(' ', Enumerable.Repeat("the", n));   // n word pieces

    [Theory]
    // room for 7 pieces (MaxTokens 10): the cases Hugging Face's tokenizers library states for its longest-first cut
    [InlineData(0, 8, 0, 7)]
    [InlineData(2, 2, 2, 2)]
    [InlineData(2, 8, 2, 5)]
    [InlineData(4, 4, 3, 4)]
    [InlineData(4, 8, 3, 4)]
    [InlineData(8, 2, 5, 2)]
    [InlineData(8, 4, 4, 3)]
    [InlineData(8, 8, 3, 4)]
    [InlineData(8, 0, 7, 0)]
    public void EncodePair_TypesAndLongestFirstCut(int n1, int n2, int k1, int k2)
    {
        var tok = TokenizerRulesTests.Tokenizer(max: 10);
        var ids = tok.EncodePair(Words(n1), Words(n2), out var types);
        Assert.Equal(k1 + k2 + 3, ids.Length);
        Assert.Equal(tok.ClsId, ids[0]);
        Assert.Equal(tok.SepId, ids[k1 + 1]);
        Assert.Equal(tok.SepId, ids[^1]);
        Assert.Equal(Enumerable.Repeat(0, k1 + 2).Concat(Enumerable.Repeat(1, k2 + 1)), types);
    }

    [Fact]
    public void Logits_MatchTheReference_PackedAndAlone_AndAllocateNothing()
    {
        using var model = BertModel.Load(_dir.Path);
        Assert.Equal(BertHead.Sequence, model.Head);
        var tok = BertWordPieceTokenizer.FromVocabFile(_dir.File("vocab.txt"));
        using var session = new EmbeddingSession(model, tok);
        Assert.Equal(Classes, session.Classes);
        (string, string)[] pairs = [("the cafe", "owner paid for books"), ("hello", "world"), ("", "x"), ("a don t", ""), (Words(9), Words(9))];
        var packed = new float[pairs.Length * Classes];
        session.ClassifyPairs(pairs, packed);
        for (int i = 0; i < pairs.Length; i++)
        {
            var ids = tok.EncodePair(pairs[i].Item1, pairs[i].Item2, Math.Min(tok.Options.MaxTokens, MaxPos), out var types);
            Assert.True(ids.Length <= MaxPos);
            AssertClose(RefLogits(ids, types), packed.AsSpan(i * Classes, Classes), $"pair {i}");
            var alone = new float[Classes];
            session.ClassifyPairs([pairs[i]], alone);
            Assert.Equal(alone, packed.AsSpan(i * Classes, Classes).ToArray());
        }
        // the id path allocates nothing; types matter (all 0 gives other logits)
        var pid = tok.EncodePair("the cafe", "owner paid", out var ptypes);
        var o = new float[Classes];
        Assert.Equal(0, FastAttn.Tests.Reference.SteadyStateAllocations(() => session.ClassifyIds(pid, ptypes, [pid.Length], o)));
        var zeros = new float[Classes];
        session.ClassifyIds(pid, default, [pid.Length], zeros);
        Assert.NotEqual(o, zeros);
        AssertClose(RefLogits(pid, new int[pid.Length]), zeros, "types all 0");
    }

    [Fact]
    public async Task CrossEncoder_LoadsLogitsAndRanks_FromAnyThread()
    {
        using var ce = CrossEncoder.Load(_dir.Path);
        Assert.Equal(Classes, ce.Classes);
        string[] passages = ["the cafe owner", "books", "hello world here", "x"];
        var ranked = await ce.RankAsync("the cafe", passages);
        var all = ce.Logits(passages.Select(p => ("the cafe", p)).ToList());
        for (int i = 0; i < passages.Length; i++)
        {
            Assert.Equal(all[i * Classes], ranked[i]);
            Assert.Equal(all.AsSpan(i * Classes, Classes).ToArray(), ce.Logits("the cafe", passages[i]));
        }
        var results = new float[8][];
        Parallel.For(0, 8, i => results[i] = ce.Logits("the cafe", passages[i % passages.Length]));
        for (int i = 0; i < 8; i++) Assert.Equal(all.AsSpan(i % passages.Length * Classes, Classes).ToArray(), results[i]);
    }

    [Fact]
    public async Task Dispose_WhileCallsRun_TheyFinishOrThrowObjectDisposed()
    {
        using var model = BertModel.Load(_dir.Path);
        var tok = BertWordPieceTokenizer.FromVocabFile(_dir.File("vocab.txt"));
        float[] expect;
        using (var ce0 = new CrossEncoder(model, tok)) expect = ce0.Logits("the cafe", "owner paid");
        for (int rep = 0; rep < 100; rep++)
        {
            var ce = new CrossEncoder(model, tok, new SentenceEmbedderOptions { MaxSessions = 2 });
            using var start = new Barrier(3);
            var callers = Enumerable.Range(0, 2).Select(_ => Task.Run(() =>
            {
                start.SignalAndWait();
                try { Assert.Equal(expect, ce.Logits("the cafe", "owner paid")); }
                catch (ObjectDisposedException) { }
            })).ToArray();
            start.SignalAndWait();
            ce.Dispose();
            await Task.WhenAll(callers).WaitAsync(TimeSpan.FromSeconds(30));   // a hang fails with a TimeoutException
            Assert.Throws<ObjectDisposedException>(() => ce.Logits("a", "b"));
        }
        // the model the cross-encoders did not own still works
        using var again = new CrossEncoder(model, tok);
        Assert.Equal(expect, again.Logits("the cafe", "owner paid"));
    }

    [Fact]
    public async Task RankCommand_PrintsTheLinesByScore_AndRefusesAModelWithoutTheHead()
    {
        string corpus = _dir.File("passages.txt");
        string[] passages = ["the cafe owner", "books", "hello world here", "x"];
        File.WriteAllText(corpus, string.Join('\n', passages) + "\n\n");
        (int, string, string) Run(params string[] args)
        {
            var o = new StringWriter();
            var e = new StringWriter();
            int code = FastAttn.Cli.CliApp.Run(args, o, e, () => new MemoryStream());
            return (code, o.ToString(), e.ToString());
        }
        var (code, output, err) = Run("rank", "--model", _dir.Path, "--corpus", corpus, "--top", "3", "the", "cafe");
        Assert.True(code == 0, err);
        using var ce = CrossEncoder.Load(_dir.Path);
        var scores = await ce.RankAsync("the cafe", passages);
        var expect = Enumerable.Range(0, passages.Length).OrderByDescending(i => scores[i]).Take(3)
            .Select(i => $"{scores[i].ToString("F4", System.Globalization.CultureInfo.InvariantCulture)}  {passages[i]}");
        Assert.Equal(expect, output.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        // bad input: one line, exit 2
        using var plain = new TempDir();
        Write(plain, Checkpoint());
        File.WriteAllText(plain.File("vocab.txt"), string.Join('\n', TokenizerRulesTests.Vocab[..Vocab]) + "\n");
        foreach (var args in new[] { new[] { "rank", "--model", plain.Path, "--corpus", corpus, "q" }, ["rank", "--model", _dir.Path, "--corpus", corpus, "--top", "0", "q"] })
        {
            var (c2, o2, e2) = Run(args);
            Assert.Equal(2, c2);
            Assert.Empty(o2);
            Assert.Single(e2.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        }
    }

    [Fact]
    public void Misuse_IsRefusedBeforeRunning()
    {
        using var model = BertModel.Load(_dir.Path);
        var tok = BertWordPieceTokenizer.FromVocabFile(_dir.File("vocab.txt"));
        using var session = new EmbeddingSession(model, tok);
        int[] ids = [2, 7, 3, 9, 3];
        var o = new float[Classes];
        Assert.Throws<ArgumentOutOfRangeException>(() => session.ClassifyIds(ids, [0, 0, 0, 2, 1], [5], o));   // 2 token types
        Assert.Throws<ArgumentException>(() => session.ClassifyIds(ids, [0, 0, 0], [5], o));                  // types ≠ ids
        Assert.Throws<ArgumentException>(() => session.ClassifyIds(ids, default, [5], new float[3]));         // output
        Assert.Throws<ArgumentException>(() => session.ClassifyPairs([], o));
        Assert.Throws<ArgumentException>(() => session.ClassifyPairs([("a", null!)], o));
        // a model without the head: the session says so, the cross-encoder refuses it
        using var plain = new TempDir();
        Write(plain, Checkpoint());
        File.WriteAllText(plain.File("vocab.txt"), string.Join('\n', TokenizerRulesTests.Vocab[..Vocab]) + "\n");
        using var pm = BertModel.Load(plain.Path);
        using var ps = new EmbeddingSession(pm, tok);
        Assert.Equal(0, ps.Classes);
        Assert.Throws<InvalidOperationException>(() => ps.ClassifyIds(ids, default, [5], o));
        Assert.Contains("sequence-classification head", Assert.Throws<ArgumentException>(() => CrossEncoder.Load(plain.Path)).Message);
    }
}
