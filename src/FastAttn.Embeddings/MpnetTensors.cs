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
internal sealed class MpnetTensors : ITensorSource
{
    /// <summary>Rows of the position table before the first position (MPNet's padding index 1, plus one).</summary>
    public const int PositionOffset = 2;

    private readonly ITensorSource _source;
    private readonly Dictionary<string, string> _toSource = new(StringComparer.Ordinal);
    private readonly string _typeName, _positionName;
    private readonly int _hidden;

    /// <summary>True when <paramref name="s"/> holds MPNet's names (under <c>mpnet.</c> or bare).</summary>
    public static bool Detect(ITensorSource s) =>
        s.TryGetShape("mpnet.embeddings.word_embeddings.weight", out _)
        || (s.TryGetShape("embeddings.word_embeddings.weight", out _) && s.TryGetShape("encoder.layer.0.attention.attn.q.weight", out _));

    public MpnetTensors(ITensorSource source)
    {
        _source = source;
        bool wrapped = source.TryGetShape("mpnet.embeddings.word_embeddings.weight", out var word);
        if (!wrapped) source.TryGetShape("embeddings.word_embeddings.weight", out word);
        _hidden = word is { Length: 2 } && word[1] is > 0 and <= int.MaxValue ? (int)word[1] : 1;
        string from = wrapped ? "mpnet." : "", to = wrapped ? "bert." : "";
        bool pooler = source.TensorNames.Any(n => n == from + "pooler.dense.weight");
        foreach (var n in source.TensorNames) _toSource[Rename(n, from, to, pooler)] = n;
        _typeName = to + "embeddings.token_type_embeddings.weight";
        _positionName = to + "embeddings.position_embeddings.weight";
    }

    private static string Rename(string n, string from, string to, bool pooler)
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
    }

    public string Name => _source.Name;

    public IEnumerable<string> TensorNames => _toSource.Keys.Append(_typeName);

    public bool TryGetShape(string name, out long[] shape)
    {
        if (name == _typeName) { shape = [1, _hidden]; return true; }
        if (!_toSource.TryGetValue(name, out var n) || !_source.TryGetShape(n, out shape)) { shape = []; return false; }
        if (name == _positionName && shape is [var rows, var cols]) shape = [Math.Max(rows - PositionOffset, 0), cols];
        return true;
    }

    public void ReadFloat32(string name, Span<float> destination)
    {
        if (name == _typeName)
        {
            if (destination.Length != _hidden) throw new ArgumentException($"'{name}' has {_hidden} elements; destination {destination.Length}.", nameof(destination));
            destination.Clear();
            return;
        }
        if (!_toSource.TryGetValue(name, out var n)) throw new KeyNotFoundException($"no tensor '{name}' in '{Name}'.");
        if (name != _positionName) { _source.ReadFloat32(n, destination); return; }
        // the table without its first PositionOffset rows
        var whole = new float[destination.Length + PositionOffset * _hidden];
        _source.ReadFloat32(n, whole);
        whole.AsSpan(PositionOffset * _hidden).CopyTo(destination);
    }
}
