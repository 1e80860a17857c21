using FastAttn.IO;

namespace FastAttn.Embeddings;

/// <summary>
/// A checkpoint of a BERT-like family seen under BERT's tensor names (each family says how its names map), plus the one
/// token type whose embedding is zero that families without token types need (<c>P.embeddings.token_type_embeddings.weight</c>,
/// [1, hidden]).
/// </summary>
internal abstract class RenamedBertTensors : ITensorSource
{
    protected readonly ITensorSource Source;
    private readonly Dictionary<string, string> _toSource = new(StringComparer.Ordinal);
    private readonly string? _typeName;
    protected readonly int Hidden;

    /// <param name="source">The checkpoint.</param>
    /// <param name="from">The family's prefix in the checkpoint (<c>distilbert.</c>, <c>mpnet.</c>), or "" when bare.</param>
    /// <param name="rename">BERT's name of a checkpoint name (from, to = <c>bert.</c> or "").</param>
    /// <param name="zeroTokenType">Add the zero token-type table (for a family without token types).</param>
    protected RenamedBertTensors(ITensorSource source, string from, Func<string, string, string, string> rename, bool zeroTokenType = true)
    {
        Source = source;
        source.TryGetShape(from + "embeddings.word_embeddings.weight", out var word);
        Hidden = word is { Length: 2 } && word[1] is > 0 and <= int.MaxValue ? (int)word[1] : 1;
        string to = from.Length > 0 ? "bert." : "";
        foreach (var n in source.TensorNames) _toSource[rename(n, from, to)] = n;
        _typeName = zeroTokenType ? to + "embeddings.token_type_embeddings.weight" : null;
    }

    public string Name => Source.Name;

    public IEnumerable<string> TensorNames => _typeName == null ? _toSource.Keys : _toSource.Keys.Append(_typeName);

    public bool TryGetShape(string name, out long[] shape)
    {
        if (_typeName != null && name == _typeName) { shape = [1, Hidden]; return true; }
        if (_toSource.TryGetValue(name, out var n)) return Source.TryGetShape(n, out shape);
        shape = [];
        return false;
    }

    public void ReadFloat32(string name, Span<float> destination)
    {
        if (_typeName != null && name == _typeName)
        {
            if (destination.Length != Hidden) throw new ArgumentException($"'{name}' has {Hidden} elements; destination {destination.Length}.", nameof(destination));
            destination.Clear();
            return;
        }
        Source.ReadFloat32(SourceName(name), destination);
    }

    /// <summary>
    /// The masked-LM head (<c>lm_head.*</c>, ignored: under <c>cls.</c>) and the sequence-classification head of MPNet and
    /// RoBERTa (dense + tanh on the first token, then <c>out_proj</c> — BERT's pooler and classifier; read as the pooler only
    /// when the checkpoint has no pooler of its own); null for any other name.
    /// </summary>
    protected static string? ClassificationHead(string n, string to, bool pooler)
    {
        if (n.StartsWith("lm_head.", StringComparison.Ordinal)) return "cls." + n;
        if (!pooler && n.StartsWith("classifier.dense.", StringComparison.Ordinal)) return to + "pooler.dense." + n["classifier.dense.".Length..];
        if (n.StartsWith("classifier.out_proj.", StringComparison.Ordinal)) return "classifier." + n["classifier.out_proj.".Length..];
        return null;
    }

    /// <summary>The checkpoint's name of BERT's name <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    protected string SourceName(string name) =>
        _toSource.TryGetValue(name, out var n) ? n : throw new KeyNotFoundException($"no tensor '{name}' in '{Name}'.");
}
