using FastAttn.Kernels;
using FastAttn.Layers;

namespace FastAttn.Embeddings;

/// <summary>
/// A sentence-transformers <c>Dense</c> module: y = act(W·x + b) on the pooled sentence vector, before any
/// normalisation (LaBSE: 768 → 768 tanh; distiluse-base-multilingual-cased: 768 → 512 tanh). Read from a model folder's
/// module folder (<c>config.json</c> with <c>in_features</c>, <c>out_features</c>, <c>bias</c>,
/// <c>activation_function</c>; the weights <c>linear.weight</c> and <c>linear.bias</c> in <c>model.safetensors</c>).
/// Immutable; shared by every session that uses it.
/// </summary>
public sealed class DenseModule
{
    /// <summary>Width of the vector it takes.</summary>
    public int InFeatures { get; }
    /// <summary>Width of the vector it gives.</summary>
    public int OutFeatures { get; }
    /// <summary>The activation after the product: none (<c>Identity</c>), tanh, ReLU or GELU.</summary>
    public Activation Activation { get; }
    internal Linear Linear { get; }

    /// <summary>A module of <paramref name="weight"/> <c>[outFeatures, inFeatures]</c> (PyTorch's layout) and an optional bias.</summary>
    /// <exception cref="ArgumentException">A size does not match, or the activation is not one a Dense module uses.</exception>
    public DenseModule(ReadOnlySpan<float> weight, int outFeatures, int inFeatures, ReadOnlySpan<float> bias, Activation activation)
    {
        if (activation is not (Activation.None or Activation.Tanh or Activation.Relu or Activation.Gelu))
            throw new ArgumentException($"activation {activation} is not one a Dense module uses (none, tanh, ReLU, GELU).", nameof(activation));
        Linear = new Linear(weight, outFeatures, inFeatures, bias, activation);
        InFeatures = inFeatures; OutFeatures = outFeatures; Activation = activation;
    }

    /// <summary>PyTorch's activation class names as sentence-transformers writes them (<c>torch.nn.modules.activation.Tanh</c>, …).</summary>
    internal static Activation? ParseActivation(string name) => name[(name.LastIndexOf('.') + 1)..] switch
    {
        "Identity" => Activation.None,
        "Tanh" => Activation.Tanh,
        "ReLU" => Activation.Relu,
        "GELU" => Activation.Gelu,
        _ => null,
    };
}
