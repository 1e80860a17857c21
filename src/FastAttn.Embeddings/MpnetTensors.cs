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
