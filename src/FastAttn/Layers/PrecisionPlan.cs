using FastAttn.Kernels;

namespace FastAttn.Layers;

/// <summary>
/// Which <see cref="Precision"/> each linear layer of a model is built in: a default, and overrides by layer name so a
/// sensitive layer can stay FP32. A name is the layer's key prefix in the weight file (PyTorch or Hugging Face names, e.g.
/// <c>layers.3.linear2</c> or <c>encoder.layer.5.output.dense</c>); an override applies to the layer of that name and to
/// every layer under it (<c>encoder.layer.5</c> covers all of layer 5); the longest matching override wins. Immutable.
/// </summary>
public sealed class PrecisionPlan
{
    private readonly KeyValuePair<string, Precision>[] _overrides;

    /// <summary>Every layer in FP32.</summary>
    public static PrecisionPlan F32 { get; } = new(Precision.F32);

    /// <summary>The precision of layers without an override.</summary>
    public Precision Default { get; }

    /// <summary>The overrides, by layer name.</summary>
    public IReadOnlyList<KeyValuePair<string, Precision>> Overrides => _overrides;

    /// <summary>A plan with <paramref name="defaultPrecision"/> for every layer.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The precision is unknown.</exception>
    public PrecisionPlan(Precision defaultPrecision) : this(defaultPrecision, []) { }

    private PrecisionPlan(Precision defaultPrecision, KeyValuePair<string, Precision>[] overrides)
    {
        Check(defaultPrecision, nameof(defaultPrecision));
        Default = defaultPrecision;
        _overrides = overrides;
    }

    /// <summary>This plan with layer <paramref name="layer"/> (and the layers under it) in <paramref name="precision"/>.</summary>
    /// <exception cref="ArgumentException">The name is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The precision is unknown.</exception>
    public PrecisionPlan With(string layer, Precision precision)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(layer);
        Check(precision, nameof(precision));
        layer = layer.TrimEnd('.');
        var list = _overrides.Where(o => o.Key != layer).Append(new(layer, precision)).ToArray();
        return new PrecisionPlan(Default, list);
    }

    /// <summary>The precision of layer <paramref name="layer"/>: the longest override that names it or a parent of it, else the default.</summary>
    public Precision For(string layer)
    {
        ArgumentNullException.ThrowIfNull(layer);
        Precision p = Default;
        int best = -1;
        foreach (var (name, precision) in _overrides)
        {
            bool match = layer.Length == name.Length ? layer == name
                : layer.Length > name.Length && layer[name.Length] == '.' && layer.StartsWith(name, StringComparison.Ordinal);
            if (match && name.Length > best) { best = name.Length; p = precision; }
        }
        return p;
    }

    /// <summary>A plan with <paramref name="precision"/> for every layer.</summary>
    public static implicit operator PrecisionPlan(Precision precision) => precision == Precision.F32 ? F32 : new(precision);

    /// <summary>Parses <c>f32</c>, <c>int8</c> or <c>bf16</c> (case-insensitive; also the enum names).</summary>
    /// <exception cref="ArgumentException">Not one of those.</exception>
    public static Precision ParsePrecision(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return text.Trim().ToLowerInvariant() switch
        {
            "f32" or "fp32" or "float32" => Precision.F32,
            "int8" or "i8" => Precision.Int8,
            "bf16" or "bf16weights" or "bfloat16" => Precision.BF16Weights,
            _ => throw new ArgumentException($"unknown precision '{text}'; use f32, int8 or bf16.", nameof(text)),
        };
    }

    /// <inheritdoc/>
    public override string ToString() =>
        _overrides.Length == 0 ? Default.ToString() : $"{Default} ({string.Join(", ", _overrides.Select(o => $"{o.Key}={o.Value}"))})";

    private static void Check(Precision p, string name)
    {
        if ((uint)p > (uint)Precision.BF16Weights) ThrowHelper.OutOfRange(name, p, "Unknown precision.");
    }
}
