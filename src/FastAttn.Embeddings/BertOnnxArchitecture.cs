using FastAttn.Kernels;
using FastAttn.Onnx;

namespace FastAttn.Embeddings;

/// <summary>
/// What an ONNX export of a BERT says about its architecture beyond its weights: the attention heads (from the shape a
/// projection is reshaped into, [batch, tokens, heads, head width], or else from the 1/√(head width) scale of the scores),
/// the LayerNorm ε (the constant added to the variance before its square root), and the feed-forward activation (an Erf
/// node is exact GELU; the constant 0.044715 is the tanh form).
/// </summary>
internal sealed class BertOnnxArchitecture
{
    public int? Heads { get; private init; }
    public string HeadsEvidence { get; private init; } = "";
    public float? Eps { get; private init; }
    public Activation? Activation { get; private init; }
    /// <summary>
    /// RoBERTa's padding index when the graph numbers positions as RoBERTa does — Equal(input ids, padding) → Not → CumSum
    /// (the export of <c>create_position_ids_from_input_ids</c>) — else null.
    /// </summary>
    public int? PaddingIdx { get; private init; }

    public static BertOnnxArchitecture Read(OnnxModelFile onnx)
    {
        int hidden = 0;
        foreach (var prefix in new[] { "", "bert.", "distilbert.", "roberta." })
            if (hidden == 0 && onnx.TryGetShape(prefix + "embeddings.word_embeddings.weight", out var w) && w.Length == 2) hidden = (int)w[1];
        var (heads, evidence) = FromFusedAttention(onnx);
        if (heads == null) (heads, evidence) = FromReshapes(onnx, hidden);
        if (heads == null) (heads, evidence) = FromScale(onnx, hidden);
        return new BertOnnxArchitecture { Heads = heads, HeadsEvidence = evidence, Eps = FindEps(onnx), Activation = FindActivation(onnx), PaddingIdx = FindPaddingIdx(onnx) };
    }

    /// <summary>The constant an input of the graph is compared with on the way to a CumSum (RoBERTa's position numbering).</summary>
    private static int? FindPaddingIdx(OnnxModelFile onnx)
    {
        foreach (var cumsum in onnx.Nodes)
        {
            if (cumsum.OpType != "CumSum" || cumsum.Inputs.Count < 1) continue;
            // walk back through casts and the Not to the Equal
            var n = onnx.ProducerOf(cumsum.Inputs[0]);
            for (int hops = 0; n != null && n.OpType is "Cast" or "Not" && n.Inputs.Count > 0 && hops < 8; hops++) n = onnx.ProducerOf(n.Inputs[0]);
            if (n is not { OpType: "Equal", Inputs.Count: 2 }) continue;
            for (int k = 0; k < 2; k++)
            {
                string other = n.Inputs[1 - k];
                var x = onnx.ProducerOf(other);
                while (x is { OpType: "Cast" } && x.Inputs.Count > 0) { other = x.Inputs[0]; x = onnx.ProducerOf(other); }
                if (onnx.Int64Constant(n.Inputs[k]) is [var c] && c is >= 0 and < 1 << 24 && onnx.GraphInputs.Contains(other)) return (int)c;
            }
        }
        return null;
    }

    /// <summary>ONNX Runtime's fused com.microsoft Attention nodes state the heads (<c>num_heads</c>).</summary>
    private static (int?, string) FromFusedAttention(OnnxModelFile onnx)
    {
        var heads = onnx.Nodes.Where(n => n.OpType is "Attention" or "QAttention" && n.Domain == "com.microsoft").Select(n => n.IntAttribute("num_heads")).Distinct().ToList();
        return heads is [long h] && h is > 0 and <= 1 << 16 ? ((int)h, $"num_heads of the fused Attention nodes") : (null, "");
    }

    /// <summary>Reshape targets ending in [heads, headDim] with heads·headDim = hidden; the most frequent pair wins.</summary>
    private static (int?, string) FromReshapes(OnnxModelFile onnx, int hidden)
    {
        var votes = new Dictionary<int, int>();
        foreach (var n in onnx.Nodes)
        {
            if (n.OpType != "Reshape" || n.Inputs.Count < 2) continue;
            long[]? shape = onnx.Int64Constant(n.Inputs[1]);
            if (shape == null && onnx.ProducerOf(n.Inputs[1]) is { OpType: "Concat" } concat && concat.Inputs.Count >= 2)
            {
                // the usual torch export: Concat(batch, tokens, [heads], [headDim]) — the last two are constants
                var a = onnx.Int64Constant(concat.Inputs[^2]);
                var b = onnx.Int64Constant(concat.Inputs[^1]);
                if (a is [var h] && b is [var d]) shape = [-1, -1, h, d];
            }
            if (shape is not { Length: 4 }) continue;
            long heads = shape[2], dim = shape[3];
            if (heads is > 0 and <= 1 << 16 && dim is > 0 and <= 1 << 16 && (hidden == 0 || heads * dim == hidden)) votes[(int)heads] = votes.GetValueOrDefault((int)heads) + 1;
        }
        if (votes.Count == 0) return (null, "");
        var best = votes.MaxBy(kv => kv.Value);
        return (best.Key, $"reshape constants ({best.Value} reshapes into {best.Key} heads)");
    }

    /// <summary>The scores' scale: Div by √d or Mul by 1/√d right after the Q·Kᵀ MatMul.</summary>
    private static (int?, string) FromScale(OnnxModelFile onnx, int hidden)
    {
        if (hidden == 0) return (null, "");
        foreach (var n in onnx.Nodes)
        {
            if (n.OpType is not ("Div" or "Mul") || n.Inputs.Count != 2) continue;
            if (onnx.ProducerOf(n.Inputs[0])?.OpType != "MatMul") continue;
            if (onnx.FloatScalar(n.Inputs[1]) is not float c || !(c > 0)) continue;
            double d = n.OpType == "Div" ? c * (double)c : 1 / (c * (double)c);
            long dim = (long)Math.Round(d);
            if (dim > 0 && Math.Abs(d - dim) < 1e-3 * dim && hidden % dim == 0) return ((int)(hidden / dim), "attention scale 1/√headDim");
        }
        return (null, "");
    }

    private static float? FindEps(OnnxModelFile onnx)
    {
        foreach (var n in onnx.Nodes)
        {
            if (n.OpType == "LayerNormalization") return n.FloatAttribute("epsilon") ?? 1e-5f;
            // ONNX Runtime's fused LayerNorms (their schemas' default ε is 10⁻¹²)
            if (n.Domain == "com.microsoft" && n.OpType is "SkipLayerNormalization" or "EmbedLayerNormalization") return n.FloatAttribute("epsilon") ?? 1e-12f;
            // x − mean, squared, averaged, + ε, square root
            if (n.OpType != "Add" || n.Inputs.Count != 2 || n.Outputs.Count == 0) continue;
            if (onnx.ProducerOf(n.Inputs[0])?.OpType != "ReduceMean") continue;
            if (!onnx.ConsumersOf(n.Outputs[0]).Any(c => c.OpType == "Sqrt")) continue;
            if (onnx.FloatScalar(n.Inputs[1]) is float eps) return eps;
        }
        return null;
    }

    private static Activation? FindActivation(OnnxModelFile onnx)
    {
        // ONNX Runtime's optimiser fuses the exact GELU into Gelu or BiasGelu (with the bias add), the tanh form into FastGelu
        if (onnx.Nodes.Any(n => n.OpType == "Erf" || (n.OpType == "Gelu" && n.Domain is "" or "com.microsoft" && (n.StringAttribute("approximate") ?? "none") == "none")
            || (n.OpType == "BiasGelu" && n.Domain == "com.microsoft"))) return Kernels.Activation.Gelu;
        if (onnx.Nodes.Any(n => n.OpType == "FastGelu" || (n.OpType == "Gelu" && n.Domain is "" && n.StringAttribute("approximate") == "tanh") || (n.OpType == "Mul" && n.Inputs.Any(i => onnx.FloatScalar(i) is float f && MathF.Abs(f - 0.044715f) < 1e-7f))))
            return Kernels.Activation.GeluTanh;
        if (onnx.Nodes.Any(n => n.OpType == "Relu")) return Kernels.Activation.Relu;
        return null;
    }
}
