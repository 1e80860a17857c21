using System.Runtime.InteropServices;

namespace FastAttn.Kernels;

/// <summary>
/// A weight matrix stored like PyTorch's <c>nn.Linear.weight</c> (<c>[outFeatures, inFeatures]</c>,
/// row-major), packed once into the GEMM microkernel's panel layout in 64-byte-aligned native memory.
/// Immutable after construction and safe to share across threads; dispose it when no call uses it.
/// </summary>
public sealed unsafe class PackedWeight : IDisposable
{
    private float* _data;

    /// <summary>Rows of the original weight (the output width N).</summary>
    public int OutFeatures { get; }
    /// <summary>Columns of the original weight (the reduction depth K).</summary>
    public int InFeatures { get; }
    /// <summary>Bytes of packed storage.</summary>
    public long SizeInBytes { get; }

    /// <summary>Packs <paramref name="weight"/> of shape <c>[outFeatures, inFeatures]</c>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is below 1.</exception>
    /// <exception cref="ArgumentException"><paramref name="weight"/> does not hold outFeatures × inFeatures elements.</exception>
    public PackedWeight(ReadOnlySpan<float> weight, int outFeatures, int inFeatures)
    {
        ThrowHelper.Positive(outFeatures, nameof(outFeatures));
        ThrowHelper.Positive(inFeatures, nameof(inFeatures));
        ThrowHelper.ExactLength(weight.Length, (long)outFeatures * inFeatures, nameof(weight),
            $"outFeatures*inFeatures = {outFeatures}*{inFeatures}");
        OutFeatures = outFeatures;
        InFeatures = inFeatures;
        long floats = GemmCore.PackedBSize(inFeatures, outFeatures);
        SizeInBytes = floats * sizeof(float);
        _data = (float*)NativeMemory.AlignedAlloc((nuint)SizeInBytes, 64);
        GC.AddMemoryPressure(SizeInBytes);
        fixed (float* w = weight)
        {
            // B(k, n) = W[n, k]: element (k, n) at w[k·1 + n·inFeatures].
            GemmCore.PackB(w, 1, inFeatures, inFeatures, outFeatures, _data);
        }
    }

    internal float* Data
    {
        get
        {
            if (_data == null) ThrowHelper.Disposed(nameof(PackedWeight));
            return _data;
        }
    }

    /// <summary>Frees the packed storage. Must not race with a call that uses this weight.</summary>
    public void Dispose()
    {
        Free();
        GC.SuppressFinalize(this);
    }

    private void Free()
    {
        float* p = _data;
        if (p == null) return;
        _data = null;
        NativeMemory.AlignedFree(p);
        GC.RemoveMemoryPressure(SizeInBytes);
    }

    /// <summary>Frees the storage if the owner forgot to dispose.</summary>
    ~PackedWeight() => Free();
}
