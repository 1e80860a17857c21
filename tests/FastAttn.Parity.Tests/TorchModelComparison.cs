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
    /// Rotary tables for positions 0 … <paramref name="t"/> − 1 and head width <paramref name="d"/> as the rotary models'
    /// Python code builds them in float32: inv_freq = 1 / base^(arange(0, d, 2) / d), the outer product with the positions,
    /// cat(freqs, freqs), cos and sin — each <c>[t, d]</c>, in the caller's dispose scope.
    /// </summary>
    public static (Tensor Cos, Tensor Sin) RopeTables(int t, int d, double theta)
    {
        var inv = 1.0 / torch.pow(torch.tensor(theta, dtype: ScalarType.Float32), torch.arange(0, d, 2, dtype: ScalarType.Int64).to(ScalarType.Float32) / d);
        var freqs = torch.outer(torch.arange(t, dtype: ScalarType.Float32), inv);
        var emb = torch.cat([freqs, freqs], -1);
        return (emb.cos(), emb.sin());
    }

    /// <summary>Rotate-half RoPE (GPT-NeoX pairing i ↔ i + d/2) of <paramref name="x"/> <c>[…, t, d]</c>: x·cos + rotate_half(x)·sin.</summary>
    public static Tensor Rotate(Tensor x, Tensor cos, Tensor sin)
    {
        long half = x.shape[^1] / 2;
        return x * cos + torch.cat([-x.narrow(-1, half, half), x.narrow(-1, 0, half)], -1) * sin;
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
