using FastAttn.Composition;
using FastAttn.Kernels;

namespace FastAttn.Layers;

/// <summary>Builders for common stacks: a few lines each on top of the blocks.</summary>
public static class TransformerEncoder
{
    /// <summary>
    /// An encoder like PyTorch's <c>nn.TransformerEncoder</c> from given weights: one <see cref="EncoderBlock"/> per entry of
    /// <paramref name="layers"/>, and a final LayerNorm when <paramref name="finalNorm"/> is given (weight, bias).
    /// </summary>
    /// <exception cref="ArgumentException">A weight has the wrong size, heads does not divide dModel, or the list is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is below 1, eps is negative or not finite.</exception>
    public static Stack FromWeights(int dModel, int heads, int ffDim, IReadOnlyList<EncoderLayerWeights> layers, Activation activation = Activation.Relu,
        bool normFirst = false, float eps = 1e-5f, AttentionSettings? attention = null, (float[] Weight, float[] Bias)? finalNorm = null,
        PrecisionPlan? precision = null)
    {
        var plan = precision ?? PrecisionPlan.F32;
        ArgumentNullException.ThrowIfNull(layers);
        if (layers.Count == 0) ThrowHelper.Argument(nameof(layers), "an encoder needs at least one layer.");
        var blocks = new List<IBlock>(layers.Count + 1);
        try
        {
            for (int i = 0; i < layers.Count; i++)
            {
                var w = layers[i];
                ArgumentNullException.ThrowIfNull(w, nameof(layers));
                string name = $"layers.{i}.";
                var mha = new MultiHeadAttention(dModel, heads, w.InProjWeight, w.InProjBias, w.OutProjWeight, w.OutProjBias, attention, null,
                    plan.For(name + "self_attn.in_proj"), plan.For(name + "self_attn.out_proj"));
                blocks.Add(mha);
                var ff = new FeedForward(dModel, ffDim, w.Linear1Weight, w.Linear1Bias, w.Linear2Weight, w.Linear2Bias, activation,
                    plan.For(name + "linear1"), plan.For(name + "linear2"));
                blocks[^1] = new EncoderBlock(mha, ff, new LayerNorm(dModel, w.Norm1Weight, w.Norm1Bias, eps), new LayerNorm(dModel, w.Norm2Weight, w.Norm2Bias, eps), normFirst);
            }
            if (finalNorm is { } fn) blocks.Add(new NormBlock(new LayerNorm(dModel, fn.Weight, fn.Bias, eps)));
            return new Stack([.. blocks]);
        }
        catch
        {
            foreach (var b in blocks) (b as IDisposable)?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// An encoder of <paramref name="layers"/> blocks like PyTorch's <c>nn.TransformerEncoder</c>, with random weights
    /// (seeded) — for benchmarks and tests; build from real weights with <see cref="FromWeights"/> or the IO loaders.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is below 1 or the weights would not fit in one array.</exception>
    /// <exception cref="ArgumentException">heads does not divide dModel.</exception>
    public static Stack Create(int layers, int dModel, int heads, int ffDim, Activation activation = Activation.Relu,
        bool normFirst = false, float eps = 1e-5f, int seed = 0, AttentionSettings? attention = null, PrecisionPlan? precision = null)
    {
        ThrowHelper.Positive(layers, nameof(layers));
        if (layers > Array.MaxLength) ThrowHelper.OutOfRange(nameof(layers), layers, $"at most {Array.MaxLength} layers.");
        ThrowHelper.Positive(dModel, nameof(dModel));
        ThrowHelper.Positive(heads, nameof(heads));
        ThrowHelper.Positive(ffDim, nameof(ffDim));
        if (dModel % heads != 0) ThrowHelper.Argument(nameof(heads), $"'heads' = {heads} must divide dModel = {dModel}.");
        if (3L * dModel * dModel > Array.MaxLength || (long)ffDim * dModel > Array.MaxLength)
            ThrowHelper.OutOfRange(nameof(dModel), dModel, $"dModel = {dModel} with ffDim = {ffDim} gives weight matrices larger than one array can hold.");
        var rnd = new Random(seed);
        float[] R(int n, double scale) { var a = new float[n]; for (int i = 0; i < n; i++) a[i] = (float)((rnd.NextDouble() * 2 - 1) * scale); return a; }
        float[] Gamma(int n) { var a = R(n, 0.2); for (int i = 0; i < n; i++) a[i] += 1; return a; }
        double sd = 1 / Math.Sqrt(dModel), sf = 1 / Math.Sqrt(ffDim);
        var weights = new EncoderLayerWeights[layers];
        for (int l = 0; l < layers; l++)
        {
            // drawn in this order so that a seed gives the same weights as before the builder took weights
            var inW = R(3 * dModel * dModel, sd); var inB = R(3 * dModel, 0.1); var outW = R(dModel * dModel, sd); var outB = R(dModel, 0.1);
            var w1 = R(ffDim * dModel, sd); var b1 = R(ffDim, 0.1); var w2 = R(dModel * ffDim, sf); var b2 = R(dModel, 0.1);
            var g1 = Gamma(dModel); var be1 = R(dModel, 0.1); var g2 = Gamma(dModel); var be2 = R(dModel, 0.1);
            weights[l] = new EncoderLayerWeights(inW, inB, outW, outB, w1, b1, w2, b2, g1, be1, g2, be2);
        }
        return FromWeights(dModel, heads, ffDim, weights, activation, normFirst, eps, attention, null, precision);
    }
}
