using BenchmarkDotNet.Attributes;
using FastAttn.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Benchmarks;

/// <summary>
/// Attention alone on projected Q, K, V (batch 1): FastAttn's fused kernel against libtorch's
/// scaled_dot_product_attention, single thread. Shape is heads×tokens×headDim plus a variant.
/// </summary>
[MemoryDiagnoser]
public class AttentionBenchmarks
{
    [Params("12x128x64", "8x32x64", "12x512x64", "8x2048x64", "12x128x64-causal", "12x128x64-additive", "12x128x64-relu")]
    public string Shape = "12x128x64";

    public int H, T, D;
    public string Variant = "";
    private float[] _q = [], _k = [], _v = [], _o = [], _w = [], _scratch = [];
    private Tensor? _tq, _tk, _tv;

    public void ParseShape()
    {
        var parts = Shape.Split('-');
        var p = parts[0].Split('x').Select(int.Parse).ToArray();
        (H, T, D) = (p[0], p[1], p[2]);
        Variant = parts.Length > 1 ? parts[1] : "";
    }

    /// <summary>Q·Kᵀ and P·V (causal counts half); the additive variant counts the same work for comparison.</summary>
    public double Flops => 4.0 * H * T * T * D * (Variant == "causal" ? 0.5 : 1);

    private AttentionOptions Options() => new()
    {
        Heads = H, HeadDim = D,
        Causal = Variant == "causal" ? CausalMode.TopLeft : CausalMode.None,
        Score = Variant == "additive" ? ScoreKind.Additive : ScoreKind.Dot,
        AdditiveWeights = Variant == "additive" ? _w : default,
        Normalizer = Variant == "relu" ? Normalizer.Relu : Normalizer.Softmax,
    };

    [GlobalSetup]
    public void Setup()
    {
        ParseShape();
        var rnd = new Random(7);
        float[] R(int n) { var a = new float[n]; for (int i = 0; i < n; i++) a[i] = (float)(rnd.NextDouble() * 2 - 1); return a; }
        _q = R(T * H * D); _k = R(T * H * D); _v = R(T * H * D); _w = R(H * D);
        _o = new float[T * H * D];
        _scratch = new float[Attention.ScratchSize(D, D, T)];
        TorchPeer.Init(1);
        // libtorch wants [batch, heads, tokens, headDim]
        _tq = torch.tensor(_q, [1, T, H, D]).transpose(1, 2).contiguous();
        _tk = torch.tensor(_k, [1, T, H, D]).transpose(1, 2).contiguous();
        _tv = torch.tensor(_v, [1, T, H, D]).transpose(1, 2).contiguous();
    }

    [GlobalCleanup]
    public void Cleanup() { _tq?.Dispose(); _tk?.Dispose(); _tv?.Dispose(); }

    [Benchmark(Baseline = true, Description = "FastAttn Attention.Forward")]
    public void FastAttn() => Attention.Forward(_q, T, _k, _v, T, _o, _scratch, Options());

    [Benchmark(Description = "libtorch scaled_dot_product_attention")]
    public void Torch()
    {
        if (Variant == "additive" || Variant == "relu")
        {
            // libtorch has no fused kernel for these: the equivalent composition.
            using var s = Variant == "relu"
                ? torch.nn.functional.relu(torch.matmul(_tq!, _tk!.transpose(-2, -1)) * (1.0 / Math.Sqrt(D))) * (1.0 / T)
                : torch.tanh(_tq!.unsqueeze(3) + _tk!.unsqueeze(2)).sum(-1);
            using var r = torch.matmul(s, _tv!);
            return;
        }
        using var o = torch.nn.functional.scaled_dot_product_attention(_tq!, _tk!, _tv!, is_casual: Variant == "causal");
    }
}
