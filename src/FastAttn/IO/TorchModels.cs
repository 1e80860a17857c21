using FastAttn.Composition;
using FastAttn.Kernels;
using FastAttn.Layers;

namespace FastAttn.IO;

/// <summary>
/// Builds FastAttn layers from PyTorch <c>state_dict</c> names: <c>nn.TransformerEncoder</c> (<c>layers.N.…</c>, optional
/// final <c>norm.*</c>), a single <c>nn.TransformerEncoderLayer</c>, a bare <c>nn.MultiheadAttention</c>, <c>nn.Linear</c>
/// and <c>nn.LayerNorm</c>. Each module's names are written once, in its loader below, relative to the module
/// (<see cref="TensorReader.Pp"/>). Missing, unexpected and mis-shaped tensors raise one <see cref="InvalidDataException"/>
/// listing all of them; options are API input and raise <see cref="ArgumentException"/>.
/// </summary>
public static class TorchModels
{
    /// <summary>The largest model width, head width or hidden width a file may declare.</summary>
    private const long MaxWidth = 1 << 20;

    /// <summary>Options are API input: wrong ones are the caller's mistake (ArgumentException), checked before the file is read.</summary>
    private static void CheckOptions(TorchEncoderOptions o)
    {
        ArgumentNullException.ThrowIfNull(o);
        ThrowHelper.Positive(o.Heads, "options.Heads");
        if (o.Prefix is null) throw new ArgumentNullException("options.Prefix");
        CheckEps(o.Eps, "options.Eps");
        if ((uint)o.Activation > (uint)Activation.Silu) ThrowHelper.OutOfRange("options.Activation", o.Activation, "Unknown activation.");
        if (o.DistanceSlopes != null)
        {
            if (o.DistanceSlopes.Length != o.Heads)
                ThrowHelper.Argument("options.DistanceSlopes", $"'options.DistanceSlopes' has {o.DistanceSlopes.Length} elements; expected one per head = {o.Heads}.");
            foreach (float sl in o.DistanceSlopes)
                if (!float.IsFinite(sl)) ThrowHelper.Argument("options.DistanceSlopes", "'options.DistanceSlopes' must be finite.");
        }
    }

    internal static void CheckEps(float eps, string name) => ThrowHelper.Eps(eps, name);

    /// <summary>A layer index as PyTorch writes it: decimal digits, no sign, no leading zero ("0", "1", … "12").</summary>
    internal static bool TryLayerIndex(ReadOnlySpan<char> s, out int index)
    {
        index = -1;
        if (s.IsEmpty || s.Length > 9 || (s.Length > 1 && s[0] == '0')) return false;
        int v = 0;
        foreach (char c in s) { if (!char.IsAsciiDigit(c)) return false; v = v * 10 + (c - '0'); }
        index = v;
        return true;
    }

    /// <summary>
    /// How many consecutive layers <c>{prefix}{container}.0.</c>, <c>.1.</c>, … the source has (by the presence of
    /// <paramref name="probe"/> under each).
    /// </summary>
    internal static int CountLayers(ITensorSource source, string prefix, string container, string probe)
    {
        int n = 0;
        while (source.TryGetShape($"{prefix}{container}.{n}.{probe}", out _)) n++;
        return n;
    }

    /// <summary>A width from a shape entry, when it is plausible (1..2²⁰).</summary>
    internal static bool Width(long[]? shape, int dim, out int width)
    {
        width = 0;
        if (shape == null || shape.Length <= dim || shape[dim] < 1 || shape[dim] > MaxWidth) return false;
        width = (int)shape[dim];
        return true;
    }

    /// <summary>
    /// Loads <c>nn.TransformerEncoder</c> (names <c>layers.N.…</c>, and <c>norm.*</c> when the encoder has a final
    /// norm) or, when there is no <c>layers.0.</c>, a single <c>nn.TransformerEncoderLayer</c>.
    /// </summary>
    /// <exception cref="ArgumentException">The options are invalid.</exception>
    /// <exception cref="InvalidDataException">Tensors are missing, unexpected or mis-shaped.</exception>
    public static Stack LoadTransformerEncoder(ITensorSource source, TorchEncoderOptions options)
    {
        ArgumentNullException.ThrowIfNull(source);
        CheckOptions(options);
        string prefix = Norm(options.Prefix);
        if (!source.TryGetShape(prefix + "layers.0.self_attn.in_proj_weight", out _))
            return new Stack(LoadEncoderLayer(source, options, prefix));
        int layers = CountLayers(source, prefix, "layers", "self_attn.in_proj_weight");
        return TensorReader.Load(source, prefix, "the model", vb =>
        {
            var blocks = new List<IBlock>();
            for (int i = 0; i < layers; i++) blocks.Add(EncoderLayer(vb.Pp($"layers.{i}"), options)!);
            var norm = vb.Pp("norm");
            if (norm.Has("weight") || norm.Has("bias")) blocks.Add(new NormBlock(LayerNormOf(norm, options.Eps, WidthOf(vb.Pp("layers.0")))!));
            return vb.Checking ? null : new Stack([.. blocks]);
        });
    }

    /// <summary>Loads one <c>nn.TransformerEncoderLayer</c> whose names start with <paramref name="prefix"/>.</summary>
    /// <exception cref="ArgumentException">The options are invalid.</exception>
    /// <exception cref="InvalidDataException">Tensors are missing, unexpected or mis-shaped.</exception>
    public static EncoderBlock LoadEncoderLayer(ITensorSource source, TorchEncoderOptions options, string prefix, bool rejectExtra = true)
    {
        ArgumentNullException.ThrowIfNull(source);
        CheckOptions(options);
        ArgumentNullException.ThrowIfNull(prefix);
        return TensorReader.Load(source, prefix, "nn.TransformerEncoderLayer", vb => EncoderLayer(vb, options), rejectExtra);
    }

    private static string Norm(string prefix) => prefix.Length == 0 || prefix.EndsWith('.') ? prefix : prefix + ".";

    /// <summary>The model width of an encoder layer: from its in_proj_weight [3d, d], else its norm1.weight [d].</summary>
    private static int WidthOf(TensorReader layer)
    {
        var s = layer.Shape("self_attn.in_proj_weight");
        if (Width(s, 1, out int d) && s!.Length == 2 && s[0] == 3L * d) return d;
        return Width(layer.Shape("norm1.weight"), 0, out d) ? d : -1;
    }

    /// <summary>One <c>nn.TransformerEncoderLayer</c>: the names of its tensors, relative to the layer.</summary>
    internal static EncoderBlock? EncoderLayer(TensorReader vb, TorchEncoderOptions o)
    {
        int d = WidthOf(vb);
        if (d < 1) { vb.Get("self_attn.in_proj_weight", -1, -1); vb.Problem($"the width of {vb.Prefix} cannot be found (self_attn.in_proj_weight [3d, d])"); return null; }
        if (d % o.Heads != 0) vb.Problem($"heads = {o.Heads} does not divide the model width {d} ({vb.Prefix})");
        int ff = Width(vb.Shape("linear1.weight"), 0, out int f) ? f : -1;
        var attention = vb.Pp("self_attn");
        var inW = attention.Get("in_proj_weight", 3L * d, d);
        var inB = attention.Maybe("in_proj_bias", 3L * d);
        var outW = attention.Pp("out_proj").Get("weight", d, d);
        var outB = attention.Pp("out_proj").Maybe("bias", d);
        var w1 = vb.Pp("linear1").Get("weight", ff, d);
        var b1 = vb.Pp("linear1").Maybe("bias", ff);
        var w2 = vb.Pp("linear2").Get("weight", d, ff);
        var b2 = vb.Pp("linear2").Maybe("bias", d);
        var n1 = LayerNormOf(vb.Pp("norm1"), o.Eps, d);
        var n2 = LayerNormOf(vb.Pp("norm2"), o.Eps, d);
        if (vb.Checking) return null;
        var settings = new AttentionSettings { Causal = o.Causal ? CausalMode.TopLeft : CausalMode.None, DistanceSlopes = o.DistanceSlopes };
        var plan = o.Precision ?? PrecisionPlan.F32;
        Precision P(string name) => plan.For(vb.Prefix + name);
        var mha = new MultiHeadAttention(d, o.Heads, inW, inB, outW, outB, settings, null, P("self_attn.in_proj"), P("self_attn.out_proj"));
        try
        {
            var ffn = new FeedForward(d, ff, w1, b1, w2, b2, o.Activation, P("linear1"), P("linear2"));
            return new EncoderBlock(mha, ffn, n1!, n2!, o.NormFirst);
        }
        catch { mha.Dispose(); throw; }
    }

    /// <summary><c>nn.LayerNorm</c>: <c>weight</c> and <c>bias</c> of width <paramref name="d"/> (−1: any).</summary>
    internal static LayerNorm? LayerNormOf(TensorReader vb, float eps, int d)
    {
        var w = vb.Get("weight", d);
        var b = vb.Get("bias", d);
        return vb.Checking ? null : new LayerNorm(w.Length, w, b, eps);
    }

    /// <summary><c>nn.Linear</c>: <c>weight</c> [out, in] and an optional <c>bias</c> [out].</summary>
    internal static Linear? LinearOf(TensorReader vb, Activation activation, long outFeatures = -1, long inFeatures = -1, Precision precision = Precision.F32)
    {
        var shape = vb.Shape("weight");
        if (!Width(shape, 0, out int o) || !Width(shape, 1, out int i) || shape!.Length != 2 || (long)o * i > Array.MaxLength)
        {
            vb.Get("weight", outFeatures, inFeatures);
            if (shape != null) vb.Problem($"{vb.Prefix}weight is [{string.Join(", ", shape)}], expected [out, in] with sizes 1..{MaxWidth}");
            return null;
        }
        var w = vb.Get("weight", outFeatures < 0 ? o : outFeatures, inFeatures < 0 ? i : inFeatures);
        var b = vb.Maybe("bias", outFeatures < 0 ? o : outFeatures);
        return vb.Checking ? null : new Linear(w, o, i, b, activation, precision);
    }

    /// <summary>Loads a bare <c>nn.MultiheadAttention</c> (packed <c>in_proj_weight</c>, or <c>q/k/v_proj_weight</c> with kdim/vdim).</summary>
    /// <exception cref="ArgumentException">heads is below 1, or the settings do not fit.</exception>
    /// <exception cref="InvalidDataException">Tensors are missing, unexpected or mis-shaped, or heads does not divide the width.</exception>
    public static MultiHeadAttention LoadMultiheadAttention(ITensorSource source, int heads, string prefix = "", AttentionSettings? settings = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(prefix);
        ThrowHelper.Positive(heads, nameof(heads));
        return TensorReader.Load(source, prefix, "nn.MultiheadAttention", vb =>
        {
            bool packed = vb.Has("in_proj_weight");
            var q = vb.Shape(packed ? "in_proj_weight" : "q_proj_weight");
            if (!Width(q, q?.Length == 2 ? 1 : 0, out int d))
            {
                vb.Get(packed ? "in_proj_weight" : "q_proj_weight", -1, -1);
                if (q != null) vb.Problem($"{vb.Prefix}{(packed ? "in_proj_weight" : "q_proj_weight")} is [{string.Join(", ", q)}], expected [3d, d] or [d, d]");
                return null;
            }
            if (d % heads != 0) vb.Problem($"heads = {heads} does not divide the model width {d}");
            var outW = vb.Pp("out_proj").Get("weight", d, d);
            var outB = vb.Pp("out_proj").Maybe("bias", d);
            var inB = vb.Maybe("in_proj_bias", 3L * d);
            if (packed)
            {
                var inW = vb.Get("in_proj_weight", 3L * d, d);
                return vb.Checking ? null : new MultiHeadAttention(d, heads, inW, inB, outW, outB, settings);
            }
            int kd = Width(vb.Shape("k_proj_weight"), 1, out int kw) ? kw : -1, vd = Width(vb.Shape("v_proj_weight"), 1, out int vw) ? vw : -1;
            if (vb.Shape("k_proj_weight") is { } ks && kd < 0) vb.Problem($"{vb.Prefix}k_proj_weight is [{string.Join(", ", ks)}]: its width must be 1..{MaxWidth}");
            if (vb.Shape("v_proj_weight") is { } vs && vd < 0) vb.Problem($"{vb.Prefix}v_proj_weight is [{string.Join(", ", vs)}]: its width must be 1..{MaxWidth}");
            var qw = vb.Get("q_proj_weight", d, d);
            var kwt = vb.Get("k_proj_weight", d, kd);
            var vwt = vb.Get("v_proj_weight", d, vd);
            return vb.Checking ? null : new MultiHeadAttention(d, heads, qw, kwt, vwt, inB, outW, outB, kd, vd, settings);
        });
    }

    /// <summary>Loads <c>nn.Linear</c> (<c>{prefix}.weight</c> [out, in], optional <c>{prefix}.bias</c>).</summary>
    /// <exception cref="InvalidDataException">Tensors are missing, unexpected or mis-shaped.</exception>
    public static Linear LoadLinear(ITensorSource source, string prefix = "", Activation activation = Activation.None)
        => LoadLinear(source, prefix, activation, Precision.F32);

    /// <summary>As above, with the weight stored and the product computed in <paramref name="precision"/>.</summary>
    /// <exception cref="InvalidDataException">Tensors are missing, unexpected or mis-shaped.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The activation or precision is unknown.</exception>
    public static Linear LoadLinear(ITensorSource source, string prefix, Activation activation, Precision precision)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(prefix);
        if ((uint)activation > (uint)Activation.Silu) ThrowHelper.OutOfRange(nameof(activation), activation, "Unknown activation.");
        if ((uint)precision > (uint)Precision.BF16Weights) ThrowHelper.OutOfRange(nameof(precision), precision, "Unknown precision.");
        return TensorReader.Load(source, prefix, "nn.Linear", vb => LinearOf(vb, activation, -1, -1, precision));
    }

    /// <summary>Loads <c>nn.LayerNorm</c> (<c>{prefix}.weight</c>, <c>{prefix}.bias</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException">eps is negative or not finite.</exception>
    /// <exception cref="InvalidDataException">Tensors are missing or mis-shaped.</exception>
    public static LayerNorm LoadLayerNorm(ITensorSource source, string prefix = "", float eps = 1e-5f)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(prefix);
        CheckEps(eps, nameof(eps));
        return TensorReader.Load(source, prefix, "nn.LayerNorm", vb =>
        {
            int d = Width(vb.Shape("weight"), 0, out int w) ? w : -1;
            return LayerNormOf(vb, eps, d);
        }, rejectUnexpected: false);
    }
}
