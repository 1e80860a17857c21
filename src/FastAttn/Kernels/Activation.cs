namespace FastAttn.Kernels;

/// <summary>Element-wise activation applied in a GEMM epilogue or a layer.</summary>
public enum Activation
{
    /// <summary>Identity.</summary>
    None = 0,
    /// <summary>max(x, 0).</summary>
    Relu = 1,
    /// <summary>Exact GELU: 0.5·x·(1 + erf(x/√2)) (PyTorch's default <c>gelu</c>).</summary>
    Gelu = 2,
    /// <summary>tanh-approximated GELU (PyTorch's <c>gelu(approximate='tanh')</c>).</summary>
    GeluTanh = 3,
    /// <summary>tanh(x).</summary>
    Tanh = 4,
    /// <summary>1/(1+e^(−x)).</summary>
    Sigmoid = 5,
    /// <summary>SiLU (swish): x/(1+e^(−x)) (PyTorch's <c>silu</c>; the gate of SwiGLU feed-forwards).</summary>
    Silu = 6,
}
