using FastAttn.IO;

namespace FastAttn.Embeddings;

/// <summary>
/// An MPNet checkpoint (sentence-transformers' all-mpnet-base-v2 and its kin) seen under BERT's tensor names, so the BERT
/// loader reads it: <c>mpnet.</c> → <c>bert.</c>, <c>attention.attn.q/k/v</c> → <c>attention.self.query/key/value</c>,
/// <c>attention.attn.o</c> → <c>attention.output.dense</c>, <c>attention.LayerNorm</c> → <c>attention.output.LayerNorm</c>;
/// the masked-LM head (<c>lm_head.*</c>) ignored; the sequence-classification head (<c>classifier.dense</c>, tanh,
/// <c>classifier.out_proj</c>) read as BERT's pooler and classifier, which compute the same; one token type whose embedding
/// is zero (MPNet has none). MPNet numbers positions from 2 (its padding index 1, plus one): the position table is read
/// whole, and the embeddings start at its row 2 (<see cref="BertConfig.PaddingIdx"/>).
/// <c>encoder.relative_attention_bias.weight</c> keeps its name.
/// </summary>
internal sealed class MpnetTensors : RenamedBertTensors
{
    /// <summary>True when <paramref name="s"/> holds MPNet's names (under <c>mpnet.</c> or bare).</summary>
    public static bool Detect(ITensorSource s) =>
        s.TryGetShape("mpnet.embeddings.word_embeddings.weight", out _)
        || (s.TryGetShape("embeddings.word_embeddings.weight", out _) && s.TryGetShape("encoder.layer.0.attention.attn.q.weight", out _));

    public MpnetTensors(ITensorSource source) : this(source, source.TryGetShape("mpnet.embeddings.word_embeddings.weight", out _) ? "mpnet." : "") { }

    private MpnetTensors(ITensorSource source, string from)
        : base(source, from, RenameWith(source.TensorNames.Contains(from + "pooler.dense.weight"))) { }

    private static Func<string, string, string, string> RenameWith(bool pooler) => (n, from, to) =>
    {
        if (ClassificationHead(n, to, pooler) is { } head) return head;
        if (!n.StartsWith(from, StringComparison.Ordinal)) return n;
        string r = n[from.Length..];
        if (r.StartsWith("encoder.layer.", StringComparison.Ordinal))
            r = r.Replace(".attention.attn.q.", ".attention.self.query.", StringComparison.Ordinal)
                 .Replace(".attention.attn.k.", ".attention.self.key.", StringComparison.Ordinal)
                 .Replace(".attention.attn.v.", ".attention.self.value.", StringComparison.Ordinal)
                 .Replace(".attention.attn.o.", ".attention.output.dense.", StringComparison.Ordinal)
                 .Replace(".attention.LayerNorm.", ".attention.output.LayerNorm.", StringComparison.Ordinal);
        return to + r;
    };
}

/// <summary>
/// A RoBERTa-family checkpoint (RoBERTa, XLM-RoBERTa, CamemBERT: multilingual-e5-base, bge-m3, the XLM-R rerankers, …) seen
/// under BERT's tensor names: its layers already carry them; <c>roberta.</c> → <c>bert.</c>; the masked-LM head
/// (<c>lm_head.*</c>) ignored; the sequence-classification head (<c>classifier.dense</c>, tanh, <c>classifier.out_proj</c>)
/// read as BERT's pooler and classifier. Its one token type is in the checkpoint. Positions are numbered after the padding
/// index (<see cref="BertConfig.PaddingIdx"/>): the table is read whole.
/// </summary>
internal sealed class RobertaTensors : RenamedBertTensors
{
    /// <summary>True when <paramref name="s"/> holds RoBERTa's names under <c>roberta.</c> (bare ones are BERT's; config.json tells them apart).</summary>
    public static bool Detect(ITensorSource s) => s.TryGetShape("roberta.embeddings.word_embeddings.weight", out _);

    public RobertaTensors(ITensorSource source) : this(source, Detect(source) ? "roberta." : "") { }

    private RobertaTensors(ITensorSource source, string from)
        : base(source, from, RenameWith(source.TensorNames.Contains(from + "pooler.dense.weight")), zeroTokenType: false) { }

    private static Func<string, string, string, string> RenameWith(bool pooler) => (n, from, to) =>
        ClassificationHead(n, to, pooler) ?? (n.StartsWith(from, StringComparison.Ordinal) ? to + n[from.Length..] : n);
}

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
