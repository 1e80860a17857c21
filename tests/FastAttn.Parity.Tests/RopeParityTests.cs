using FastAttn.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Parity.Tests;

/// <summary>
/// The rotary tables ModernBERT, NomicBERT and GTE (with its fixed NTK factor) use, as libtorch computes them in their Python code — inv_freq = 1 /
/// base^(arange(0, d, 2) / d) in float32, the angles position · inv_freq as a float32 outer product, cos and sin in
/// float32 — against FastAttn's float32-angle RoPE, read back by rotating unit pairs (a, b) = (1, 0): a′ = cos, b′ = sin.
/// At 8,000 positions the angle's own float32 rounding is ~5·10⁻⁴ rad, so an angle computed differently (exactly, or
/// with another rounding of inv_freq) shows at this tolerance.
/// </summary>
public class RopeParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    static RopeParityTests() { torch.set_num_threads(1); torch.set_grad_enabled(false); }

    [Theory]
    [InlineData(64, 160000.0, 8192, 1.0)]   // ModernBERT's global layers
    [InlineData(64, 10000.0, 8192, 1.0)]    // ModernBERT's local layers
    [InlineData(64, 1000.0, 8192, 1.0)]     // nomic-embed-text-v1.5
    [InlineData(128, 500000.0, 4096, 1.0)]
    [InlineData(8, 300.0, 2048, 1.0)]
    [InlineData(64, 500000.0, 8192, 2.0)]   // gte-base-en-v1.5 (fixed NTK, factor 2)
    [InlineData(64, 160000.0, 8192, 8.0)]   // a larger NTK factor
    [InlineData(128, 10000.0, 4096, 3.0)]
    public void Tables_EqualLibtorchs(int headDim, double theta, int positions, double ntk)
    {
        using var scope = torch.NewDisposeScope();
        // GTE's NTKScalingRotaryEmbedding: base · factor, then inv_freq / factor ** (2 / dim) (a Python float)
        var pow = torch.pow(torch.tensor(theta * ntk, dtype: ScalarType.Float32), torch.arange(0, headDim, 2, dtype: ScalarType.Int64).to(ScalarType.Float32) / headDim);
        var invFreq = 1.0 / pow;
        if (ntk != 1) invFreq = invFreq / Math.Pow(ntk, 2.0 / headDim);
        // libtorch's vectorised float32 pow is not always correctly rounded (1 ulp off for 2 of the 64 exponents of base
        // 30,000); FastAttn's is. Such a pair's angle drifts apart by position · Δinv_freq — its own allowance below.
        float[] torchPow = pow.data<float>().ToArray(), torchInv = invFreq.data<float>().ToArray();
        var allowance = new double[headDim / 2];
        int offUlp = 0;
        for (int i = 0; i < headDim / 2; i++)
        {
            float e = (float)(2 * i) / headDim, rounded = (float)Math.Pow((float)(theta * ntk), e);
            if (rounded == torchPow[i]) continue;
            offUlp++;
            float inv = 1f / rounded;
            if (ntk != 1) inv /= (float)Math.Pow(ntk, 2.0 / headDim);
            allowance[i] = (positions - 1) * (double)Math.Abs(inv - torchInv[i]);
        }
        var t = torch.arange(positions, dtype: ScalarType.Float32);
        var freqs = torch.outer(t, invFreq.to(ScalarType.Float32));
        float[] cos = torch.cos(freqs).data<float>().ToArray(), sin = torch.sin(freqs).data<float>().ToArray();

        var rope = new Rope(headDim, positions, theta, float32Angles: true, ntkFactor: ntk);
        int half = headDim / 2;
        var x = new float[positions * headDim];
        for (int p = 0; p < positions; p++) for (int i = 0; i < half; i++) x[p * headDim + i] = 1f;
        rope.Apply(x, positions, headDim, 0, 1);
        double worst = 0, worstOff = 0;
        bool ok = true;
        for (int p = 0; p < positions; p++)
            for (int i = 0; i < half; i++)
            {
                double dc = Math.Abs(x[p * headDim + i] - cos[p * half + i]), ds = Math.Abs(x[p * headDim + half + i] - sin[p * half + i]);
                if (allowance[i] == 0) worst = Math.Max(worst, Math.Max(dc, ds)); else worstOff = Math.Max(worstOff, Math.Max(dc, ds));
                // float32 cos/sin of the same float32 angle agree to about an ulp (2^-24 near 1)
                ok &= Math.Max(dc, ds) <= 4e-7 + allowance[i];
            }
        output.WriteLine($"max |Δ| {worst:E2} over the pairs whose pow libtorch rounds correctly; {offUlp} pair(s) 1 ulp off in libtorch's pow: max |Δ| {worstOff:E2}");
        Assert.True(ok, $"max |Δ| = {worst:E2} (pairs with libtorch's pow correctly rounded) / {worstOff:E2} (the {offUlp} others) against libtorch's tables");
        Assert.True(offUlp <= 2, $"{offUlp} of {half} frequencies differ from libtorch's pow");
    }

    /// <summary>The exact angles (the public constructor's) differ from libtorch's float32 ones far along a sequence: the check above has teeth.</summary>
    [Fact]
    public void ExactAngles_DifferFarAlong()
    {
        using var scope = torch.NewDisposeScope();
        const int headDim = 64, positions = 8192;
        var invFreq = 1.0 / torch.pow(torch.tensor(160000.0, dtype: ScalarType.Float32), torch.arange(0, headDim, 2, dtype: ScalarType.Int64).to(ScalarType.Float32) / headDim);
        var freqs = torch.outer(torch.arange(positions, dtype: ScalarType.Float32), invFreq.to(ScalarType.Float32));
        float[] cos = torch.cos(freqs).data<float>().ToArray();
        var rope = new Rope(headDim, positions, 160000.0);
        var x = new float[positions * headDim];
        for (int p = 0; p < positions; p++) for (int i = 0; i < headDim / 2; i++) x[p * headDim + i] = 1f;
        rope.Apply(x, positions, headDim, 0, 1);
        double worst = 0;
        for (int p = 0; p < positions; p++) for (int i = 0; i < headDim / 2; i++) worst = Math.Max(worst, Math.Abs(x[p * headDim + i] - cos[p * (headDim / 2) + i]));
        Assert.True(worst > 1e-5, $"max |Δ| = {worst:E2}");
    }
}
