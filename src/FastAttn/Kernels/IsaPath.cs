namespace FastAttn.Kernels;

/// <summary>The instruction-set path the kernels run on.</summary>
public enum IsaPath
{
    /// <summary>Plain scalar code (no SIMD acceleration available or allowed).</summary>
    Scalar = 0,
    /// <summary>128-bit vectors (SSE/AVX or Arm AdvSimd).</summary>
    Vector128 = 1,
    /// <summary>256-bit vectors with FMA (AVX2 + FMA).</summary>
    Vector256 = 2,
    /// <summary>512-bit vectors (AVX-512F).</summary>
    Vector512 = 3,
}
