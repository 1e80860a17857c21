using FastAttn.Embeddings;
using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Parity.Tests;

/// <summary>
/// DeBERTa-v2/v3's relative position buckets as libtorch computes them — Hugging Face's <c>make_log_bucket_position</c>
/// written with the same tensor operations (int64 distances divided into float32, float32 log of the distance and of the
/// scalar tensor (max − 1)/mid, ceil) — against FastAttn's, for every distance of a 1,200-token sequence, in the v3
/// models' setting (256 buckets over 512 positions) and two others. The ceiling makes float32 rounding matter where the
/// ratio of logarithms is an integer (e.g. |δ| = max − 1).
/// </summary>
public class DebertaBucketParityTests
{
    static DebertaBucketParityTests() { torch.set_num_threads(1); torch.set_grad_enabled(false); }

    [Theory]
    [InlineData(256, 512)]
    [InlineData(8, 32)]
    [InlineData(64, 1024)]
    public void Buckets_EqualLibtorchs(int buckets, int maxPosition)
    {
        using var scope = torch.NewDisposeScope();
        var rel = torch.arange(-1200, 1201, dtype: ScalarType.Int64);
        var sign = torch.sign(rel);
        int mid = buckets / 2;
        var absPos = torch.where((rel < mid) & (rel > -mid), torch.tensor(mid - 1, dtype: ScalarType.Int64), torch.abs(rel));
        var logPos = torch.ceil(torch.log(absPos / mid) / torch.log(torch.tensor((maxPosition - 1) / (double)mid, dtype: ScalarType.Float32)) * (mid - 1)) + mid;
        var bucket = torch.where(absPos <= mid, rel.to(logPos.dtype), logPos * sign).to(ScalarType.Int64);
        var expect = bucket.data<long>().ToArray();
        var fa = new DebertaRelative(buckets, buckets, maxPosition, true, true, true, true);
        for (int d = -1200; d <= 1200; d++)
            Assert.True(expect[d + 1200] == fa.Bucket(d), $"distance {d}: libtorch bucket {expect[d + 1200]}, FastAttn {fa.Bucket(d)}");
    }
}
