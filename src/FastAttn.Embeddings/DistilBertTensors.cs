using FastAttn.IO;

namespace FastAttn.Embeddings;

/// <summary>
/// A DistilBERT checkpoint seen under BERT's tensor names, so the BERT loader reads it unchanged: <c>transformer.layer.N</c>
/// → <c>encoder.layer.N</c>, <c>q_lin/k_lin/v_lin/out_lin</c> → <c>query/key/value/output.dense</c>,
/// <c>sa_layer_norm</c>/<c>output_layer_norm</c> → the two LayerNorms, <c>ffn.lin1/lin2</c> → the feed-forward,
/// <c>pre_classifier</c> → the pooler (ReLU, see <see cref="BertConfig.PoolerActivation"/>), the masked-LM head
/// (<c>vocab_*</c>) → ignored; and one token type whose embedding is zero (DistilBERT has none).
/// </summary>
internal sealed class DistilBertTensors : RenamedBertTensors
{
    /// <summary>True when <paramref name="s"/> holds DistilBERT's names (under <c>distilbert.</c> or bare).</summary>
    public static bool Detect(ITensorSource s) =>
        s.TryGetShape("distilbert.embeddings.word_embeddings.weight", out _)
        || (s.TryGetShape("embeddings.word_embeddings.weight", out _) && s.TryGetShape("transformer.layer.0.attention.q_lin.weight", out _));

    public DistilBertTensors(ITensorSource source)
        : base(source, source.TryGetShape("distilbert.embeddings.word_embeddings.weight", out _) ? "distilbert." : "", Rename) { }

    private static string Rename(string n, string from, string to)
    {
        if (n.StartsWith("vocab_", StringComparison.Ordinal)) return "cls." + n;                     // the masked-LM head: ignored
        if (n.StartsWith("pre_classifier.", StringComparison.Ordinal)) return to + "pooler.dense." + n["pre_classifier.".Length..];
        if (!n.StartsWith(from, StringComparison.Ordinal)) return n;                                  // classifier, or unknown: as is
        string r = n[from.Length..];
        if (r.StartsWith("transformer.layer.", StringComparison.Ordinal))
        {
            r = "encoder.layer." + r["transformer.layer.".Length..];
            r = r.Replace(".attention.q_lin.", ".attention.self.query.", StringComparison.Ordinal)
                 .Replace(".attention.k_lin.", ".attention.self.key.", StringComparison.Ordinal)
                 .Replace(".attention.v_lin.", ".attention.self.value.", StringComparison.Ordinal)
                 .Replace(".attention.out_lin.", ".attention.output.dense.", StringComparison.Ordinal)
                 .Replace(".sa_layer_norm.", ".attention.output.LayerNorm.", StringComparison.Ordinal)
                 .Replace(".ffn.lin1.", ".intermediate.dense.", StringComparison.Ordinal)
                 .Replace(".ffn.lin2.", ".output.dense.", StringComparison.Ordinal)
                 .Replace(".output_layer_norm.", ".output.LayerNorm.", StringComparison.Ordinal);
        }
        return to + r;
    }
}
