using FastAttn.Embeddings;
using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Parity.Tests;

/// <summary>
/// MPNet's relative position buckets as libtorch computes them — Hugging Face's <c>relative_position_bucket</c> written with
/// the same tensor operations (float32 log, division and product, truncation to long) — against FastAttn's, for every
/// distance of a 600-token sequence. The truncation makes float32 rounding matter at the bucket boundaries (e.g. 64).
/// </summary>
public class MpnetBucketParityTests
{
    static MpnetBucketParityTests() { torch.set_num_threads(1); torch.set_grad_enabled(false); }

    [Fact]
    public void Buckets_EqualLibtorchs()
    {
        using var scope = torch.NewDisposeScope();
        var relative = torch.arange(-600, 601, dtype: ScalarType.Int64);
        var n = -relative;
        const int half = 16, maxExact = 8, maxDistance = 128;
        var ret = (n < 0).to(ScalarType.Int64) * half;
        n = torch.abs(n);
        var small = n < maxExact;
        var large = maxExact + (torch.log(n.to(ScalarType.Float32) / maxExact) / Math.Log((double)maxDistance / maxExact) * (half - maxExact)).to(ScalarType.Int64);
        large = torch.minimum(large, torch.full_like(large, half - 1));
        ret += torch.where(small, n, large);
        var expect = ret.data<long>().ToArray();
        for (int d = -600; d <= 600; d++)
            Assert.True(expect[d + 600] == BertModel.MpnetBucket(d), $"distance {d}: libtorch bucket {expect[d + 600]}, FastAttn {BertModel.MpnetBucket(d)}");
    }
}
