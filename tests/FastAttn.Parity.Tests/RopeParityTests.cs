using FastAttn.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Parity.Tests;

/// <summary>
/// The rotary tables ModernBERT and NomicBERT use, as libtorch computes them in their Python code — inv_freq = 1 /
/// base^(arange(0, d, 2) / d) in float32, the angles position · inv_freq as a float32 outer product, cos and sin in
/// float32 — against FastAttn's float32-angle RoPE, read back by rotating unit pairs (a, b) = (1, 0): a′ = cos, b′ = sin.
/// At 8,000 positions the angle's own float32 rounding is ~5·10⁻⁴ rad, so an angle computed differently (exactly, or
/// with another rounding of inv_freq) shows at this tolerance.
/// </summary>
public class RopeParityTests
{
    static RopeParityTests() { torch.set_num_threads(1); torch.set_grad_enabled(false); }

    [Theory]
    [InlineData(64, 160000.0, 8192)]   // ModernBERT's global layers
    [InlineData(64, 10000.0, 8192)]    // ModernBERT's local layers
    [InlineData(64, 1000.0, 8192)]     // nomic-embed-text-v1.5
    [InlineData(128, 500000.0, 4096)]
    [InlineData(8, 300.0, 2048)]
    public void Tables_EqualLibtorchs(int headDim, double theta, int positions)
    {
        using var scope = torch.NewDisposeScope();
        var invFreq = 1.0 / torch.pow(torch.tensor(theta, dtype: ScalarType.Float32), torch.arange(0, headDim, 2, dtype: ScalarType.Int64).to(ScalarType.Float32) / headDim);
        var t = torch.arange(positions, dtype: ScalarType.Float32);
        var freqs = torch.outer(t, invFreq.to(ScalarType.Float32));
        float[] cos = torch.cos(freqs).data<float>().ToArray(), sin = torch.sin(freqs).data<float>().ToArray();

        var rope = new Rope(headDim, positions, theta, float32Angles: true);
        int half = headDim / 2;
        var x = new float[positions * headDim];
        for (int p = 0; p < positions; p++) for (int i = 0; i < half; i++) x[p * headDim + i] = 1f;
        rope.Apply(x, positions, headDim, 0, 1);
        double worst = 0;
        for (int p = 0; p < positions; p++)
            for (int i = 0; i < half; i++)
            {
                worst = Math.Max(worst, Math.Abs(x[p * headDim + i] - cos[p * half + i]));
                worst = Math.Max(worst, Math.Abs(x[p * headDim + half + i] - sin[p * half + i]));
            }
        // float32 cos/sin of the same float32 angle agree to about an ulp (2^-24 near 1)
        Assert.True(worst <= 4e-7, $"max |Δ| = {worst:E2} against libtorch's tables");
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
