namespace FastAttn.Layers;

/// <summary>
/// The weights of one <c>nn.TransformerEncoderLayer</c> in PyTorch's layout (row-major <c>[out, in]</c> matrices; biases
/// may be null). <see cref="TransformerEncoder.FromWeights"/> builds an encoder from a list of them.
/// </summary>
public sealed record EncoderLayerWeights(
    float[] InProjWeight, float[]? InProjBias, float[] OutProjWeight, float[]? OutProjBias,
    float[] Linear1Weight, float[]? Linear1Bias, float[] Linear2Weight, float[]? Linear2Bias,
    float[] Norm1Weight, float[] Norm1Bias, float[] Norm2Weight, float[] Norm2Bias);
