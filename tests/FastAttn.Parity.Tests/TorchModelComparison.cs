using FastAttn.Embeddings;
using FastAttn.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Parity.Tests;

/// <summary>
/// What the libtorch comparisons of whole models share: random named weights, the model folder written and loaded, and
/// last_hidden_state of several sequences — packed into one pass and each alone — held against libtorch's.
/// </summary>
internal static class TorchModelComparison
{
    public sealed class Weights(int seed)
    {
        private readonly Random _rnd = new(seed);
        public readonly Dictionary<string, (float[] Data, long[] Shape)> All = [];

        /// <summary>A tensor of offset + uniform(−scale, scale) values.</summary>
        public void Add(string name, float scale, float offset, params long[] shape)
        {
            long n = shape.Aggregate(1L, (a, b) => a * b);
            All[name] = (Enumerable.Range(0, (int)n).Select(_ => offset + (float)(_rnd.NextDouble() * 2 - 1) * scale).ToArray(), shape);
        }

        /// <summary>The tensor as libtorch's, in the caller's dispose scope.</summary>
        public Tensor T(string name) => torch.tensor(All[name].Data, All[name].Shape);
    }

    /// <summary>
    /// Writes <paramref name="w"/> and <paramref name="configJson"/> as a model folder, loads it, runs sequences of
    /// <paramref name="lengths"/> random ids packed and alone, and asserts each within 2·10⁻⁵ of its largest value of
    /// <paramref name="torch"/>'s states ([tokens, width]); every sequence's figures are written to the test output.
    /// </summary>
    public static void StatesMatch(Weights w, string configJson, int width, int vocab, int seed, int[] lengths, Func<int[], float[]> torch, Xunit.Abstractions.ITestOutputHelper output,
        BertLoadOptions? load = null)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"fastattn-torch-parity-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), w.All.Select(kv => new SafeTensorsWriter.Entry(kv.Key, kv.Value.Data, kv.Value.Shape)));
            File.WriteAllText(Path.Combine(dir, "config.json"), configJson);
            using var model = BertModel.Load(dir, load);
            int max = lengths.Max();
            using var session = new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxBatchTokens = Math.Max(max, 1024), MaxTokensPerText = max });
            var rnd = new Random(seed);
            int[][] seqs = [.. lengths.Select(n => Enumerable.Range(0, n).Select(_ => rnd.Next(vocab)).ToArray())];
            int[] ids = [.. seqs.SelectMany(s => s)];
            var packed = new float[ids.Length * width];
            session.HiddenStates(ids, lengths, packed);
            var report = new List<string>();
            bool ok = true;
            for (int s = 0, t0 = 0; s < seqs.Length; t0 += seqs[s].Length, s++)
            {
                var expect = torch(seqs[s]);
                var alone = new float[seqs[s].Length * width];
                session.HiddenStates(seqs[s], [seqs[s].Length], alone);
                double maxRef = expect.Max(Math.Abs), worstAlone = 0, worstPacked = 0;
                for (int i = 0; i < expect.Length; i++)
                {
                    worstAlone = Math.Max(worstAlone, Math.Abs(alone[i] - expect[i]));
                    worstPacked = Math.Max(worstPacked, Math.Abs(packed[t0 * width + i] - expect[i]));
                }
                report.Add($"sequence of {seqs[s].Length}: max|Δ| alone {worstAlone:E2}, packed {worstPacked:E2}, max|ref| {maxRef:E2}");
                ok &= worstAlone <= 2e-5 * maxRef && worstPacked <= 2e-5 * maxRef;
            }
            output.WriteLine(string.Join("\n", report));
            Assert.True(ok, string.Join("; ", report));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
