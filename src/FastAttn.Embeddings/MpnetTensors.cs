using FastAttn.IO;

namespace FastAttn.Embeddings;

/// <summary>
/// An MPNet checkpoint (sentence-transformers' all-mpnet-base-v2 and its kin) seen under BERT's tensor names, so the BERT
/// loader reads it: <c>mpnet.</c> → <c>bert.</c>, <c>attention.attn.q/k/v</c> → <c>attention.self.query/key/value</c>,
/// <c>attention.attn.o</c> → <c>attention.output.dense</c>, <c>attention.LayerNorm</c> → <c>attention.output.LayerNorm</c>;
/// the masked-LM head (<c>lm_head.*</c>) ignored; the sequence-classification head (<c>classifier.dense</c>, tanh,
/// <c>classifier.out_proj</c>) read as BERT's pooler and classifier, which compute the same; one token type whose embedding
/// is zero (MPNet has none). The position table loses its first two rows: MPNet numbers positions from 2 (its padding
/// index + 1), so FastAttn's position p is MPNet's p + 2. <c>encoder.relative_attention_bias.weight</c> keeps its name.
/// </summary>
internal sealed class MpnetTensors : RenamedBertTensors
{
    /// <summary>Rows of the position table before the first position (MPNet's padding index 1, plus one).</summary>
    public const int PositionOffset = 2;

    private readonly string _positionName;

    /// <summary>True when <paramref name="s"/> holds MPNet's names (under <c>mpnet.</c> or bare).</summary>
    public static bool Detect(ITensorSource s) =>
        s.TryGetShape("mpnet.embeddings.word_embeddings.weight", out _)
        || (s.TryGetShape("embeddings.word_embeddings.weight", out _) && s.TryGetShape("encoder.layer.0.attention.attn.q.weight", out _));

    public MpnetTensors(ITensorSource source) : this(source, source.TryGetShape("mpnet.embeddings.word_embeddings.weight", out _) ? "mpnet." : "") { }

    private MpnetTensors(ITensorSource source, string from)
        : base(source, from, RenameWith(source.TensorNames.Contains(from + "pooler.dense.weight")))
        => _positionName = (from.Length > 0 ? "bert." : "") + "embeddings.position_embeddings.weight";

    private static Func<string, string, string, string> RenameWith(bool pooler) => (n, from, to) =>
    {
        if (n.StartsWith("lm_head.", StringComparison.Ordinal)) return "cls." + n;                          // the masked-LM head: ignored
        // MPNetForSequenceClassification: dense + tanh on <s>, then out_proj — BERT's pooler and classifier (it has no pooler of its own)
        if (!pooler && n.StartsWith("classifier.dense.", StringComparison.Ordinal)) return to + "pooler.dense." + n["classifier.dense.".Length..];
        if (n.StartsWith("classifier.out_proj.", StringComparison.Ordinal)) return "classifier." + n["classifier.out_proj.".Length..];
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

    public override bool TryGetShape(string name, out long[] shape)
    {
        if (!base.TryGetShape(name, out shape)) return false;
        if (name == _positionName && shape is [var rows, var cols]) shape = [Math.Max(rows - PositionOffset, 0), cols];
        return true;
    }

    public override void ReadFloat32(string name, Span<float> destination)
    {
        if (name != _positionName) { base.ReadFloat32(name, destination); return; }
        // the table without its first PositionOffset rows
        var whole = new float[destination.Length + PositionOffset * Hidden];
        Source.ReadFloat32(SourceName(name), whole);
        whole.AsSpan(PositionOffset * Hidden).CopyTo(destination);
    }
}
