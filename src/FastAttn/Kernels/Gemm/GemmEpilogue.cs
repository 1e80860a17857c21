namespace FastAttn.Kernels;

/// <summary>
/// What happens to each output element after the product: out = act(alpha·(A·B) [+ C] + bias) [+ residual]. A plain
/// value: build it once (bias and residual as arrays or memory) and reuse it for every call.
/// </summary>
public struct GemmEpilogue
{
    private float _alpha;
    private bool _alphaSet;

    /// <summary>Multiplier on the product (1 unless set, also for <c>default</c>).</summary>
    public float Alpha
    {
        readonly get => _alphaSet ? _alpha : 1f;
        set { _alpha = value; _alphaSet = true; }
    }
    /// <summary>Add the product to what the output already holds.</summary>
    public bool Accumulate { get; set; }
    /// <summary>Per-column bias of length N, or empty for none.</summary>
    public ReadOnlyMemory<float> Bias { get; set; }
    /// <summary>Activation applied after bias.</summary>
    public Activation Activation { get; set; }
    /// <summary>M×N residual (row stride <see cref="ResidualStride"/>) added after the activation, or empty.</summary>
    public ReadOnlyMemory<float> Residual { get; set; }
    /// <summary>Row stride of <see cref="Residual"/>; 0 means N.</summary>
    public int ResidualStride { get; set; }
}
