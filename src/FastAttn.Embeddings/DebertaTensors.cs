using FastAttn.IO;

namespace FastAttn.Embeddings;

/// <summary>
/// A DeBERTa-v2/v3 checkpoint seen under BERT's tensor names: <c>deberta.</c> → <c>bert.</c>, the sequence-classification
/// head's <c>pooler.dense</c> (at the root) read as BERT's pooler, the masked-LM heads ignored, a zero token type when the
/// model has none. The attention's own names (<c>query_proj</c>, <c>key_proj</c>, <c>value_proj</c>, <c>pos_*_proj</c>,
/// <c>encoder.rel_embeddings</c>, <c>encoder.LayerNorm</c>) are read by <see cref="BertModel"/>'s DeBERTa layers.
/// </summary>
internal sealed class DebertaTensors : RenamedBertTensors
{
    /// <summary>True when <paramref name="s"/> holds DeBERTa-v2's names (under <c>deberta.</c>, or bare with its relative embeddings).</summary>
    public static bool Detect(ITensorSource s) =>
        s.TryGetShape("deberta.embeddings.word_embeddings.weight", out _) || s.TryGetShape("encoder.rel_embeddings.weight", out _);

    public DebertaTensors(ITensorSource source) : this(source, source.TryGetShape("deberta.embeddings.word_embeddings.weight", out _) ? "deberta." : "") { }

    private DebertaTensors(ITensorSource source, string from)
        : base(source, from, Rename, zeroTokenType: !source.TryGetShape(from + "embeddings.token_type_embeddings.weight", out _)) { }

    private static string Rename(string n, string from, string to)
    {
        if (n.StartsWith("lm_predictions.", StringComparison.Ordinal) || n.StartsWith("mask_predictions.", StringComparison.Ordinal) || n.StartsWith("cls.", StringComparison.Ordinal)) return "cls." + n;
        if (from.Length > 0 && n.StartsWith("pooler.dense.", StringComparison.Ordinal)) return to + n;     // ContextPooler: at the root, beside deberta.
        return n.StartsWith(from, StringComparison.Ordinal) ? to + n[from.Length..] : n;
    }
}
