using FastAttn.Composition;
using FastAttn.Kernels;
using FastAttn.Layers;

namespace FastAttn.IO;

/// <summary>
/// What a PyTorch <c>state_dict</c> does not carry about an encoder: heads, norm placement, activation, eps, the
/// key prefix of the module inside a bigger model, and the attention mask mode. Defaults are PyTorch's.
/// </summary>
public sealed record TorchEncoderOptions
{
    /// <summary>Attention heads (nhead); required.</summary>
    public int Heads { get; init; }
    /// <summary>Pre-norm (<c>norm_first=True</c>).</summary>
    public bool NormFirst { get; init; }
    /// <summary>Feed-forward activation (ReLU or exact GELU, like PyTorch's "relu"/"gelu").</summary>
    public Activation Activation { get; init; } = Activation.Relu;
    /// <summary>LayerNorm ε (<c>layer_norm_eps</c>).</summary>
    public float Eps { get; init; } = 1e-5f;
    /// <summary>Key prefix of the module in the file, e.g. <c>"encoder."</c> (a trailing dot is added when missing).</summary>
    public string Prefix { get; init; } = "";
    /// <summary>Causal self-attention (a square causal <c>src_mask</c>, <c>is_causal=True</c>).</summary>
    public bool Causal { get; init; }
    /// <summary>Per-head distance bias slopes added to every layer's attention scores (see <see cref="AttentionSettings.DistanceSlopes"/>); null = none.</summary>
    public float[]? DistanceSlopes { get; init; }
}

/// <summary>
/// The architecture a safetensors file may carry about its encoder, in <c>__metadata__["fastattn.encoder"]</c> as JSON:
/// <c>{"heads": 12, "norm_first": false, "activation": "relu"|"gelu", "eps": 1e-5, "prefix": "encoder.", "causal": false,
/// "distance_slopes": [...]}</c> (every field but heads optional). Files that say how they were built need no hand-given
/// architecture, and a contradicting one is rejected.
/// </summary>
public static class EncoderMetadata
{
    /// <summary>The metadata key.</summary>
    public const string Key = "fastattn.encoder";

    /// <summary>The options the file's metadata describes, or null when it has none.</summary>
    /// <exception cref="InvalidDataException">The entry is present but malformed.</exception>
    public static TorchEncoderOptions? Read(SafeTensorsFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        if (!file.Metadata.TryGetValue(Key, out var json)) return null;
        try
        {
            using var doc = System.Text.Json.JsonDocument.Parse(json, new System.Text.Json.JsonDocumentOptions { MaxDepth = 4 });
            var r = doc.RootElement;
            if (r.ValueKind != System.Text.Json.JsonValueKind.Object || !r.TryGetProperty("heads", out var h) || !h.TryGetInt32(out int heads) || heads < 1)
                throw new InvalidDataException("'heads' must be a positive integer");
            var o = new TorchEncoderOptions { Heads = heads };
            if (r.TryGetProperty("norm_first", out var nf)) o = o with { NormFirst = nf.GetBoolean() };
            if (r.TryGetProperty("activation", out var act))
                o = o with { Activation = act.GetString() switch { "relu" => Activation.Relu, "gelu" => Activation.Gelu, "gelu_tanh" => Activation.GeluTanh, var x => throw new InvalidDataException($"activation '{x}' is not relu, gelu or gelu_tanh") } };
            if (r.TryGetProperty("eps", out var eps))
            {
                float e = eps.GetSingle();
                if (!(e >= 0) || float.IsInfinity(e)) throw new InvalidDataException($"eps {e} is not finite and ≥ 0");
                o = o with { Eps = e };
            }
            if (r.TryGetProperty("prefix", out var p)) o = o with { Prefix = p.GetString() ?? "" };
            if (r.TryGetProperty("causal", out var c)) o = o with { Causal = c.GetBoolean() };
            if (r.TryGetProperty("distance_slopes", out var ds) && ds.ValueKind != System.Text.Json.JsonValueKind.Null)
            {
                var slopes = ds.EnumerateArray().Select(x => x.GetSingle()).ToArray();
                if (slopes.Length != heads || !slopes.All(float.IsFinite)) throw new InvalidDataException("distance_slopes must hold one finite slope per head");
                o = o with { DistanceSlopes = slopes };
            }
            return o;
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or FormatException or InvalidDataException)
        {
            throw new InvalidDataException($"safetensors file '{file.Path}': metadata '{Key}' is not a valid encoder description: {e.Message}.", e);
        }
    }

    /// <summary>The metadata entry describing <paramref name="o"/> (for writers).</summary>
    public static string Write(TorchEncoderOptions o)
    {
        ArgumentNullException.ThrowIfNull(o);
        string act = o.Activation switch
        {
            Activation.Relu => "relu", Activation.Gelu => "gelu", Activation.GeluTanh => "gelu_tanh",
            _ => throw new ArgumentException($"activation {o.Activation} cannot be described.", nameof(o)),
        };
        var ms = new MemoryStream();
        using (var w = new System.Text.Json.Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteNumber("heads", o.Heads);
            w.WriteBoolean("norm_first", o.NormFirst);
            w.WriteString("activation", act);
            w.WriteNumber("eps", o.Eps);
            w.WriteString("prefix", o.Prefix);
            w.WriteBoolean("causal", o.Causal);
            if (o.DistanceSlopes != null)
            {
                w.WriteStartArray("distance_slopes");
                foreach (float f in o.DistanceSlopes) w.WriteNumberValue(f);
                w.WriteEndArray();
            }
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(ms.ToArray());
    }
}

/// <summary>
/// Builds FastAttn layers from PyTorch <c>state_dict</c> names in a safetensors file: <c>nn.TransformerEncoder</c>
/// (<c>layers.N.…</c>, optional final <c>norm.*</c>), a single <c>nn.TransformerEncoderLayer</c>, a bare
/// <c>nn.MultiheadAttention</c>, <c>nn.Linear</c> and <c>nn.LayerNorm</c>. Missing, extra or mis-shaped tensors
/// raise <see cref="InvalidDataException"/> listing all of them.
/// </summary>
public static class TorchModels
{
    private static string Norm(string prefix) => prefix.Length == 0 || prefix.EndsWith('.') ? prefix : prefix + ".";

    /// <summary>Options are API input: wrong ones are the caller's mistake (ArgumentException), checked before the file is read.</summary>
    private static void CheckOptions(TorchEncoderOptions o)
    {
        ArgumentNullException.ThrowIfNull(o);
        ThrowHelper.Positive(o.Heads, "options.Heads");
        if (o.Prefix is null) throw new ArgumentNullException("options.Prefix");
        CheckEps(o.Eps, "options.Eps");
        if ((uint)o.Activation > (uint)Activation.Sigmoid) ThrowHelper.OutOfRange("options.Activation", o.Activation, "Unknown activation.");
        if (o.DistanceSlopes != null)
        {
            if (o.DistanceSlopes.Length != o.Heads)
                ThrowHelper.Argument("options.DistanceSlopes", $"'options.DistanceSlopes' has {o.DistanceSlopes.Length} elements; expected one per head = {o.Heads}.");
            foreach (float sl in o.DistanceSlopes)
                if (!float.IsFinite(sl)) ThrowHelper.Argument("options.DistanceSlopes", "'options.DistanceSlopes' must be finite.");
        }
    }

    internal static void CheckEps(float eps, string name)
    {
        if (!(eps >= 0) || float.IsInfinity(eps)) ThrowHelper.OutOfRange(name, eps, $"'{name}' must be finite and at least 0; it is {eps}.");
    }

    /// <summary>A layer index as PyTorch writes it: decimal digits, no sign, no leading zero ("0", "1", … "12").</summary>
    private static bool TryLayerIndex(ReadOnlySpan<char> s, out int index)
    {
        index = -1;
        if (s.IsEmpty || s.Length > 9 || (s.Length > 1 && s[0] == '0')) return false;
        int v = 0;
        foreach (char c in s) { if (!char.IsAsciiDigit(c)) return false; v = v * 10 + (c - '0'); }
        index = v;
        return true;
    }

    /// <summary>Tensors a loader expects (name → shape), checked against the file in one pass.</summary>
    private sealed class Expect(SafeTensorsFile file, string prefix)
    {
        private readonly Dictionary<string, long[]> _want = new();
        private readonly List<string> _optional = new();
        public string Prefix { get; } = prefix;
        public void Need(string name, params long[] shape) => _want[Prefix + name] = shape;
        public void Maybe(string name, params long[] shape) { _want[Prefix + name] = shape; _optional.Add(Prefix + name); }

        public void Check(bool rejectExtra)
        {
            var msg = Problems(rejectExtra);
            if (msg.Count > 0)
                throw new InvalidDataException($"safetensors file '{file.Path}' does not match the model (prefix '{Prefix}'): {string.Join(" | ", msg)}.");
        }

        /// <summary>"missing: …", "mis-shaped: …", "unexpected: …" lines (empty when the file matches).</summary>
        public List<string> Problems(bool rejectExtra)
        {
            var missing = new List<string>();
            var wrong = new List<string>();
            foreach (var (name, shape) in _want)
            {
                if (!file.Contains(name)) { if (!_optional.Contains(name)) missing.Add(name); continue; }
                var got = file.Info(name).Shape;
                if (!got.SequenceEqual(shape)) wrong.Add($"{name} is [{string.Join(", ", got)}], expected [{string.Join(", ", shape)}]");
            }
            var extra = rejectExtra
                ? file.Tensors.Select(t => t.Name).Where(n => n.StartsWith(Prefix, StringComparison.Ordinal) && !_want.ContainsKey(n)).ToList()
                : new List<string>();
            var msg = new List<string>();
            if (missing.Count > 0) msg.Add("missing: " + string.Join(", ", missing));
            if (wrong.Count > 0) msg.Add("mis-shaped: " + string.Join("; ", wrong));
            if (extra.Count > 0) msg.Add("unexpected: " + string.Join(", ", extra));
            return msg;
        }

        public float[] Get(string name) => file.ReadFloat32(Prefix + name);
        public float[] GetOrEmpty(string name) => file.Contains(Prefix + name) ? file.ReadFloat32(Prefix + name) : [];
    }

    /// <summary>Width of the model: the second dimension of <c>{prefix}self_attn.in_proj_weight</c> or <c>{prefix}in_proj_weight</c>.</summary>
    private static int ModelWidth(SafeTensorsFile file, string name)
    {
        if (!file.Contains(name)) throw new InvalidDataException($"safetensors file '{file.Path}' does not match the model: missing: {name}.");
        var s = file.Info(name).Shape;
        if (s.Length != 2 || s[0] != 3 * s[1] || s[1] <= 0 || s[1] > 1 << 20)
            throw new InvalidDataException($"safetensors file '{file.Path}': {name} is [{string.Join(", ", s)}], expected [3*d, d].");
        return (int)s[1];
    }

    /// <summary>
    /// Loads <c>nn.TransformerEncoder</c> (names <c>layers.N.…</c>, and <c>norm.*</c> when the encoder has a final
    /// norm) or, when there is no <c>layers.0.</c>, a single <c>nn.TransformerEncoderLayer</c>.
    /// </summary>
    /// <exception cref="InvalidDataException">Tensors are missing, unexpected or mis-shaped.</exception>
    public static Stack LoadTransformerEncoder(SafeTensorsFile file, TorchEncoderOptions options)
    {
        ArgumentNullException.ThrowIfNull(file);
        CheckOptions(options);
        string prefix = Norm(options.Prefix);
        if (!file.Contains(prefix + "layers.0.self_attn.in_proj_weight"))
            return new Stack(LoadEncoderLayer(file, options, prefix, rejectExtra: true));
        int layers = 0;
        while (file.Contains($"{prefix}layers.{layers}.self_attn.in_proj_weight")) layers++;
        // every problem of every layer in one message, before anything is built
        int d = ModelWidth(file, prefix + "layers.0.self_attn.in_proj_weight");
        var problems = new List<string>();
        for (int i = 0; i < layers; i++) problems.AddRange(LayerExpect(file, options, $"{prefix}layers.{i}.").Problems(rejectExtra: false));
        var extra = file.Tensors.Select(t => t.Name)
            .Where(n => n.StartsWith(prefix, StringComparison.Ordinal) && !IsLayerName(n[prefix.Length..], layers) && n != prefix + "norm.weight" && n != prefix + "norm.bias").ToList();
        if (extra.Count > 0) problems.Add("unexpected: " + string.Join(", ", extra));
        if (file.Contains(prefix + "norm.weight") != file.Contains(prefix + "norm.bias"))
            problems.Add("missing: " + (file.Contains(prefix + "norm.weight") ? prefix + "norm.bias" : prefix + "norm.weight"));
        else if (file.Contains(prefix + "norm.weight") && (!file.Info(prefix + "norm.weight").Shape.SequenceEqual([(long)d]) || !file.Info(prefix + "norm.bias").Shape.SequenceEqual([(long)d])))
            problems.Add($"mis-shaped: {prefix}norm.weight/bias, expected [{d}]");
        if (problems.Count > 0)
            throw new InvalidDataException($"safetensors file '{file.Path}' does not match the model (prefix '{prefix}'): {string.Join(" | ", problems)}.");
        var blocks = new List<IBlock>();
        for (int i = 0; i < layers; i++) blocks.Add(LoadEncoderLayer(file, options, $"{prefix}layers.{i}.", rejectExtra: false));
        if (file.Contains(prefix + "norm.weight"))
            blocks.Add(new NormBlock(LoadLayerNorm(file, prefix + "norm", options.Eps)));
        return new Stack(blocks.ToArray());
    }

    private static readonly string[] LayerNames =
    [
        "self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight", "self_attn.out_proj.bias",
        "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias", "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias",
    ];

    private static bool IsLayerName(string rest, int layers)
    {
        if (!rest.StartsWith("layers.", StringComparison.Ordinal)) return false;
        int dot = rest.IndexOf('.', 7);
        return dot > 7 && TryLayerIndex(rest.AsSpan(7, dot - 7), out int i) && i < layers && LayerNames.Contains(rest[(dot + 1)..]);
    }

    /// <summary>Loads one <c>nn.TransformerEncoderLayer</c> whose names start with <paramref name="prefix"/>.</summary>
    public static EncoderBlock LoadEncoderLayer(SafeTensorsFile file, TorchEncoderOptions options, string prefix, bool rejectExtra = true)
    {
        ArgumentNullException.ThrowIfNull(file);
        CheckOptions(options);
        ArgumentNullException.ThrowIfNull(prefix);
        prefix = Norm(prefix);
        var e = LayerExpect(file, options, prefix);
        e.Check(rejectExtra);
        int d = ModelWidth(file, prefix + "self_attn.in_proj_weight"), ff = (int)file.Info(prefix + "linear1.weight").Shape[0];
        var settings = new AttentionSettings { Causal = options.Causal ? CausalMode.TopLeft : CausalMode.None, DistanceSlopes = options.DistanceSlopes };
        var mha = new MultiHeadAttention(d, options.Heads, e.Get("self_attn.in_proj_weight"), e.GetOrEmpty("self_attn.in_proj_bias"),
            e.Get("self_attn.out_proj.weight"), e.GetOrEmpty("self_attn.out_proj.bias"), settings);
        var ffn = new FeedForward(d, ff, e.Get("linear1.weight"), e.GetOrEmpty("linear1.bias"), e.Get("linear2.weight"), e.GetOrEmpty("linear2.bias"), options.Activation);
        return new EncoderBlock(mha, ffn, new LayerNorm(d, e.Get("norm1.weight"), e.Get("norm1.bias"), options.Eps),
            new LayerNorm(d, e.Get("norm2.weight"), e.Get("norm2.bias"), options.Eps), options.NormFirst);
    }

    /// <summary>The tensors one encoder layer needs (the width from in_proj_weight, ff from linear1.weight).</summary>
    private static Expect LayerExpect(SafeTensorsFile file, TorchEncoderOptions options, string prefix)
    {
        int d = ModelWidth(file, prefix + "self_attn.in_proj_weight");
        if (d % options.Heads != 0) throw new InvalidDataException($"safetensors file '{file.Path}': heads = {options.Heads} does not divide the model width {d}.");
        long ff = -1;
        if (file.Contains(prefix + "linear1.weight"))
        {
            var l1 = file.Info(prefix + "linear1.weight").Shape;
            if (l1.Length == 2 && l1[0] > 0 && l1[0] <= 1 << 22) ff = l1[0];
        }
        var e = new Expect(file, prefix);
        e.Need("self_attn.in_proj_weight", 3 * d, d); e.Maybe("self_attn.in_proj_bias", 3 * d);
        e.Need("self_attn.out_proj.weight", d, d); e.Maybe("self_attn.out_proj.bias", d);
        e.Need("linear1.weight", ff, d); e.Maybe("linear1.bias", ff);
        e.Need("linear2.weight", d, ff); e.Maybe("linear2.bias", d);
        e.Need("norm1.weight", d); e.Need("norm1.bias", d); e.Need("norm2.weight", d); e.Need("norm2.bias", d);
        return e;
    }

    /// <summary>Loads a bare <c>nn.MultiheadAttention</c> (packed <c>in_proj_weight</c>, or <c>q/k/v_proj_weight</c> with kdim/vdim).</summary>
    public static MultiHeadAttention LoadMultiheadAttention(SafeTensorsFile file, int heads, string prefix = "", AttentionSettings? settings = null)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(prefix);
        ThrowHelper.Positive(heads, nameof(heads));
        prefix = Norm(prefix);
        if (file.Contains(prefix + "in_proj_weight"))
        {
            int d = ModelWidth(file, prefix + "in_proj_weight");
            if (d % heads != 0) throw new InvalidDataException($"safetensors file '{file.Path}': heads = {heads} does not divide the model width {d}.");
            var e = new Expect(file, prefix);
            e.Need("in_proj_weight", 3 * d, d); e.Maybe("in_proj_bias", 3 * d);
            e.Need("out_proj.weight", d, d); e.Maybe("out_proj.bias", d);
            e.Check(rejectExtra: true);
            return new MultiHeadAttention(d, heads, e.Get("in_proj_weight"), e.GetOrEmpty("in_proj_bias"), e.Get("out_proj.weight"), e.GetOrEmpty("out_proj.bias"), settings);
        }
        if (!file.Contains(prefix + "q_proj_weight"))
            throw new InvalidDataException($"safetensors file '{file.Path}' does not match nn.MultiheadAttention (prefix '{prefix}'): missing: {prefix}in_proj_weight or {prefix}q_proj_weight.");
        var q = file.Info(prefix + "q_proj_weight").Shape;
        if (q.Length != 2 || q[0] != q[1] || q[0] <= 0 || q[0] > 1 << 20) throw new InvalidDataException($"safetensors file '{file.Path}': {prefix}q_proj_weight is [{string.Join(", ", q)}], expected [d, d].");
        int dm = (int)q[0];
        if (dm % heads != 0) throw new InvalidDataException($"safetensors file '{file.Path}': heads = {heads} does not divide the model width {dm}.");
        long kd = file.Contains(prefix + "k_proj_weight") ? file.Info(prefix + "k_proj_weight").Shape.LastOrDefault() : dm;
        long vd = file.Contains(prefix + "v_proj_weight") ? file.Info(prefix + "v_proj_weight").Shape.LastOrDefault() : dm;
        if (kd is <= 0 or > 1 << 20 || vd is <= 0 or > 1 << 20)
            throw new InvalidDataException($"safetensors file '{file.Path}': {prefix}k_proj_weight / v_proj_weight widths {kd} / {vd} must be between 1 and {1 << 20}.");
        var x = new Expect(file, prefix);
        x.Need("q_proj_weight", dm, dm); x.Need("k_proj_weight", dm, kd); x.Need("v_proj_weight", dm, vd); x.Maybe("in_proj_bias", 3 * dm);
        x.Need("out_proj.weight", dm, dm); x.Maybe("out_proj.bias", dm);
        x.Check(rejectExtra: true);
        return new MultiHeadAttention(dm, heads, x.Get("q_proj_weight"), x.Get("k_proj_weight"), x.Get("v_proj_weight"), x.GetOrEmpty("in_proj_bias"),
            x.Get("out_proj.weight"), x.GetOrEmpty("out_proj.bias"), (int)kd, (int)vd, settings);
    }

    /// <summary>Loads <c>nn.Linear</c> (<c>{prefix}.weight</c> [out, in], optional <c>{prefix}.bias</c>).</summary>
    public static Linear LoadLinear(SafeTensorsFile file, string prefix = "", Activation activation = Activation.None)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(prefix);
        prefix = Norm(prefix);
        if (!file.Contains(prefix + "weight")) throw new InvalidDataException($"safetensors file '{file.Path}' does not match nn.Linear (prefix '{prefix}'): missing: {prefix}weight.");
        var w = file.Info(prefix + "weight").Shape;
        if (w.Length != 2 || w[0] <= 0 || w[1] <= 0 || w[0] > 1 << 24 || w[1] > 1 << 24 || w[0] * w[1] > Array.MaxLength) throw new InvalidDataException($"safetensors file '{file.Path}': {prefix}weight is [{string.Join(", ", w)}], expected [out, in].");
        var e = new Expect(file, prefix);
        e.Need("weight", w[0], w[1]); e.Maybe("bias", w[0]);
        e.Check(rejectExtra: true);
        return new Linear(e.Get("weight"), (int)w[0], (int)w[1], e.GetOrEmpty("bias"), activation);
    }

    /// <summary>Loads <c>nn.LayerNorm</c> (<c>{prefix}.weight</c>, <c>{prefix}.bias</c>).</summary>
    public static LayerNorm LoadLayerNorm(SafeTensorsFile file, string prefix = "", float eps = 1e-5f)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(prefix);
        CheckEps(eps, nameof(eps));
        prefix = Norm(prefix);
        if (!file.Contains(prefix + "weight")) throw new InvalidDataException($"safetensors file '{file.Path}' does not match nn.LayerNorm (prefix '{prefix}'): missing: {prefix}weight.");
        var w = file.Info(prefix + "weight").Shape;
        if (w.Length != 1 || w[0] <= 0 || w[0] > 1 << 24) throw new InvalidDataException($"safetensors file '{file.Path}': {prefix}weight is [{string.Join(", ", w)}], expected [d].");
        var e = new Expect(file, prefix);
        e.Need("weight", w[0]); e.Need("bias", w[0]);
        e.Check(rejectExtra: false);
        return new LayerNorm((int)w[0], e.Get("weight"), e.Get("bias"), eps);
    }
}

/// <summary>A LayerNorm as a block (the final <c>norm</c> of an <c>nn.TransformerEncoder</c>).</summary>
public sealed class NormBlock(LayerNorm norm) : IBlock
{
    /// <summary>The norm.</summary>
    public LayerNorm Norm { get; } = norm;
    /// <inheritdoc/>
    public int InputWidth => Norm.Width;
    /// <inheritdoc/>
    public int OutputWidth => Norm.Width;
    /// <inheritdoc/>
    public long ScratchSize(int maxTokens) => 0;
    /// <inheritdoc/>
    public void Forward(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch) => Norm.Forward(input, batch.Tokens, output, batch.Pool);
}
