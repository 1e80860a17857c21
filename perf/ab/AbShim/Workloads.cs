using FastAttn.Kernels;
using FastAttn.Layers;

namespace FastAttn.Ab;

/// <summary>
/// One workload from a text spec, built on whichever FastAttn this assembly was compiled and loaded against (only
/// public API that has long been stable, so the same source builds against earlier commits).
/// </summary>
public static class Workloads
{
    /// <summary>
    /// "d,heads,ff,tokens,pre|post,gelu|relu,threads[,causal]": one encoder layer (session call); "heads,tokens,headWidth":
    /// attention alone on one thread; "gM,K,N": y = x·Wᵀ on one thread. Returns the call and its nominal flops.
    /// </summary>
    public static (Action Run, double Flops) Make(string spec)
    {
        var f = spec.TrimStart('g').Split(',');
        var rnd = new Random(5);
        float[] R(int n, double s) { var a = new float[n]; for (int i = 0; i < n; i++) a[i] = (float)((rnd.NextDouble() * 2 - 1) * s); return a; }
        if (spec.StartsWith('g') && f.Length == 3)
        {
            int m = int.Parse(f[0]), k = int.Parse(f[1]), n = int.Parse(f[2]);
            var w = new PackedWeight(R(n * k, 1 / Math.Sqrt(k)), n, k);
            var x = R(m * k, 1); var y = new float[m * n]; var scratch = new float[Gemm.LinearScratchSize(m, k)];
            return (() => Gemm.Linear(x, m, w, y, scratch), 2.0 * m * k * n);
        }
        if (f.Length == 3)
        {
            int heads = int.Parse(f[0]), t = int.Parse(f[1]), hd = int.Parse(f[2]), dm = heads * hd;
            var q = R(t * dm, 1); var k = R(t * dm, 1); var v = R(t * dm, 1); var o = new float[t * dm];
            var options = new AttentionOptions { Heads = heads, HeadDim = hd };
            var scratch = new float[Attention.ScratchSize(options, t)];
            return (() => Attention.Forward(q, t, k, v, t, o, scratch, options), 4.0 * t * t * dm);
        }
        if (f.Length is not (7 or 8) || (f.Length == 8 && f[7] != "causal"))
            throw new ArgumentException($"'{spec}': expected d,heads,ff,tokens,pre|post,gelu|relu,threads[,causal] or heads,tokens,headWidth or gM,K,N.");
        int d = int.Parse(f[0]), h = int.Parse(f[1]), ff = int.Parse(f[2]), tokens = int.Parse(f[3]), threads = int.Parse(f[6]);
        bool pre = f[4] == "pre";
        var act = f[5] == "gelu" ? Activation.Gelu : Activation.Relu;
        double sd = 1 / Math.Sqrt(d), sf = 1 / Math.Sqrt(ff);
        float[] Gain() => R(d, 0.2).Select(g => 1 + g).ToArray();
        var layer = new EncoderLayerWeights(R(3 * d * d, sd), R(3 * d, 0.1), R(d * d, sd), R(d, 0.1), R(ff * d, sd), R(ff, 0.1),
            R(d * ff, sf), R(d, 0.1), Gain(), R(d, 0.1), Gain(), R(d, 0.1));
        var settings = new AttentionSettings { Causal = f.Length == 8 ? CausalMode.TopLeft : CausalMode.None };
        var stack = TransformerEncoder.FromWeights(d, h, ff, [layer], act, pre, 1e-5f, settings);
        var input = R(tokens * d, 1); var output = new float[tokens * d];
        var session = stack.CreateSession(tokens, threads);
        return (() => session.Run(input, output), 2.0 * tokens * d * (4 * d + 2 * ff) + 4.0 * tokens * tokens * d);
    }
}
