namespace FastAttn.IO;

/// <summary>
/// Named tensors to load a model from: a safetensors file, or the initializers of an ONNX file mapped to parameter names.
/// Loaders (<see cref="TorchModels"/>, the BERT loader) read through this, so one loader serves every source.
/// </summary>
public interface ITensorSource
{
    /// <summary>How messages name the source (a path, usually).</summary>
    string Name { get; }
    /// <summary>Every tensor name.</summary>
    IEnumerable<string> TensorNames { get; }
    /// <summary>The shape of tensor <paramref name="name"/>, or false when there is none.</summary>
    bool TryGetShape(string name, out long[] shape);
    /// <summary>Reads tensor <paramref name="name"/> as float32 into <paramref name="destination"/> (its element count).</summary>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    /// <exception cref="ArgumentException">destination does not have the tensor's element count.</exception>
    void ReadFloat32(string name, Span<float> destination);
}
