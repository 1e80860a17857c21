using FastAttn.Kernels;

namespace FastAttn.IO;

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
    /// <exception cref="ArgumentNullException"><paramref name="o"/> is null.</exception>
    /// <exception cref="ArgumentException">The activation is not one the entry can name (relu, gelu, gelu_tanh).</exception>
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
