namespace FastAttn.Kernels;

/// <summary>Causal masking and, when query and key lengths differ, its alignment.</summary>
public enum CausalMode
{
    /// <summary>Every query sees every key.</summary>
    None = 0,
    /// <summary>Query i sees keys j ≤ i (PyTorch's <c>is_causal</c>).</summary>
    TopLeft = 1,
    /// <summary>Query i sees keys j ≤ i + (keys − queries) (ONNX; incremental decoding).</summary>
    BottomRight = 2,
}
