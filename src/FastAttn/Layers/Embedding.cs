namespace FastAttn.Layers;

/// <summary>Token embedding lookup: ids → rows of a <c>[vocab, width]</c> table.</summary>
public sealed class Embedding
{
    private readonly float[] _table;
    /// <summary>Rows in the table.</summary>
    public int Vocabulary { get; }
    /// <summary>Width of a row.</summary>
    public int Width { get; }

    /// <summary>The table <c>[Vocabulary, Width]</c> (read-only view).</summary>
    public ReadOnlySpan<float> Table => _table;

    /// <summary>Builds the lookup from a <c>[vocabulary, width]</c> table (copied).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is below 1.</exception>
    /// <exception cref="ArgumentException">The table does not hold vocabulary × width elements.</exception>
    public Embedding(ReadOnlySpan<float> table, int vocabulary, int width)
    {
        ThrowHelper.Positive(vocabulary, nameof(vocabulary));
        ThrowHelper.Positive(width, nameof(width));
        ThrowHelper.ExactLength(table.Length, (long)vocabulary * width, nameof(table), $"vocabulary*width = {vocabulary}*{width}");
        _table = table.ToArray();
        Vocabulary = vocabulary; Width = width;
    }

    /// <summary>Writes the rows of <paramref name="ids"/> into output <c>[ids.Length, Width]</c>, or adds them when <paramref name="accumulate"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An id is outside the vocabulary (checked before anything is written).</exception>
    /// <exception cref="ArgumentException">output is shorter than ids × width.</exception>
    public void Lookup(ReadOnlySpan<int> ids, Span<float> output, bool accumulate = false)
    {
        ThrowHelper.Length(output.Length, (long)ids.Length * Width, nameof(output), $"ids*width = {ids.Length}*{Width}");
        for (int i = 0; i < ids.Length; i++)
            if ((uint)ids[i] >= (uint)Vocabulary) ThrowHelper.OutOfRange(nameof(ids), ids[i], $"'ids'[{i}] = {ids[i]} is outside 0..{Vocabulary - 1}.");
        for (int i = 0; i < ids.Length; i++)
        {
            var row = _table.AsSpan(ids[i] * Width, Width);
            var dst = output.Slice(i * Width, Width);
            if (accumulate) System.Numerics.Tensors.TensorPrimitives.Add(dst, row, dst); else row.CopyTo(dst);
        }
    }
}
