namespace FastAttn.Kernels;

/// <summary>How a layer stores its weights and computes its products. Attention itself always runs in FP32.</summary>
public enum Precision
{
    /// <summary>FP32 weights, FP32 products (the default; the reference for the others).</summary>
    F32 = 0,
    /// <summary>
    /// Symmetric per-output-channel int8 weights and activations quantized per row at run time (u8 with a zero point),
    /// int32 accumulation (AVX-VNNI where available), scales and the rest of the epilogue in FP32. About a quarter of
    /// the FP32 weight memory.
    /// </summary>
    Int8 = 1,
    /// <summary>
    /// bfloat16 weight storage (round to nearest even), widened to FP32 in the kernel; FP32 products. Half the weight memory
    /// and bandwidth; for calls bound by weight bandwidth (few tokens).
    /// </summary>
    BF16Weights = 2,
}
