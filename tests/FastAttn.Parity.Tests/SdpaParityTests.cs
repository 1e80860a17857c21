using FastAttn.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Parity.Tests;

/// <summary>
/// FastAttn's attention kernel against libtorch's scaled_dot_product_attention itself. TorchSharp 0.107 binds
/// neither SDPA's <c>scale</c> nor <c>enable_gqa</c>: a given scale s is passed by pre-scaling q by s·√d (SDPA then
/// applies 1/√d), and grouped-query attention by repeat_interleave of the key/value heads, which is what
/// enable_gqa computes.
/// </summary>
public class SdpaParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    static SdpaParityTests() { torch.set_num_threads(1); torch.set_grad_enabled(false); }

    public enum MaskKind { None, Bool, Float, Causal }

    [Theory]
    [InlineData(4, 4, 7, 7, 64, MaskKind.None, false, false)]
    [InlineData(8, 2, 33, 65, 64, MaskKind.Bool, false, true)]      // GQA via enable_gqa, cross lengths, bool mask
    [InlineData(12, 12, 128, 128, 64, MaskKind.Causal, false, false)]
    [InlineData(6, 1, 50, 300, 32, MaskKind.Float, true, true)]     // multi-query, float mask, explicit scale
    [InlineData(2, 2, 1, 200, 80, MaskKind.None, true, false)]
    [InlineData(4, 2, 65, 65, 128, MaskKind.Causal, true, true)]
    public void Sdpa_MatchesLibtorch(int heads, int kvHeads, int lq, int lk, int d, MaskKind mask, bool explicitScale, bool groupedHeads)
    {
        var rnd = new Random(heads * 1000 + lq + lk + d);
        float[] R(int n) => Enumerable.Range(0, n).Select(_ => (float)(rnd.NextDouble() * 2 - 1)).ToArray();
        float[] q = R(lq * heads * d), k = R(lk * kvHeads * d), v = R(lk * kvHeads * d);
        float? scale = explicitScale ? 0.3f : null;
        bool[]? bm = null;
        float[]? fm = null;
        if (mask == MaskKind.Bool)
        {
            bm = Enumerable.Range(0, lq * lk).Select(_ => rnd.NextDouble() < 0.7).ToArray();
            for (int i = 0; i < lq; i++) bm[i * lk] = true; // every row sees a key: libtorch gives NaN for empty rows
        }
        if (mask == MaskKind.Float) fm = Enumerable.Range(0, lq * lk).Select(_ => (float)(rnd.NextDouble() * 4 - 2)).ToArray();
        // ours: [tokens, heads*d]
        float[] outp = new float[lq * heads * d];
        var o = new AttentionOptions
        {
            Heads = heads, KvHeads = kvHeads, HeadDim = d, Scale = scale, BoolMask = bm, FloatMask = fm,
            Causal = mask == MaskKind.Causal ? CausalMode.TopLeft : CausalMode.None,
        };
        Attention.Forward(q, lq, k, v, lk, outp, new float[Attention.ScratchSize(o, lk)], o);
        // libtorch: [1, heads, tokens, d]; key/value heads repeated for grouped-query cases
        using var tq0 = torch.tensor(q, [1, lq, heads, d]).transpose(1, 2);
        using var tq = scale is float sc ? tq0 * (sc * MathF.Sqrt(d)) : tq0.alias();
        using var tk0 = torch.tensor(k, [1, lk, kvHeads, d]).transpose(1, 2);
        using var tv0 = torch.tensor(v, [1, lk, kvHeads, d]).transpose(1, 2);
        using var tk = tk0.repeat_interleave(heads / kvHeads, 1);
        using var tv = tv0.repeat_interleave(heads / kvHeads, 1);
        using var tm = bm != null ? torch.tensor(bm, [lq, lk]) : fm != null ? torch.tensor(fm, [lq, lk]) : null;
        using var ty = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, tm, 0.0, mask == MaskKind.Causal);
        using var tyt = ty.transpose(1, 2).contiguous();
        float[] r = tyt.data<float>().ToArray();
        double worst = 0, maxRef = 0;
        for (int i = 0; i < r.Length; i++) { worst = Math.Max(worst, Math.Abs(outp[i] - r[i])); maxRef = Math.Max(maxRef, Math.Abs(r[i])); }
        double rel = worst / maxRef;
        output.WriteLine($"heads {heads}/{kvHeads} lq {lq} lk {lk} d {d} {mask} scale {scale?.ToString() ?? "default"} grouped {groupedHeads}: max rel error {rel:E2}");
        Assert.True(rel <= 1e-5, $"relative error {rel:E2}");
    }
}
