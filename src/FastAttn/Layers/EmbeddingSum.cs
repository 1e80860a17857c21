using FastAttn.Composition;

namespace FastAttn.Layers;

/// <summary>
/// Per-token feature embeddings summed, as the first block of a stack: token t's input row holds one id per
/// table (as floats, exact below 2²⁴), and its output is table₀[id₀] + table₁[id₁] + … (added in that order).
/// The word, affix and shape features of a tagger; PyTorch's sum of several <c>nn.Embedding</c> lookups.
/// </summary>
public sealed class EmbeddingSum : Block
{
    private readonly float[][] _tables;
    private readonly int[] _rows;
    private readonly int _width;
    /// <inheritdoc/>
    public override int InputWidth => _tables.Length;
    /// <inheritdoc/>
    public override int OutputWidth => _width;
    /// <summary>Rows of table <paramref name="table"/>.</summary>
    public int Rows(int table) => _rows[table];

    /// <summary>Builds the block from tables <c>[rows_i, width]</c> (row-major).</summary>
    /// <exception cref="ArgumentException">No tables, or a table whose length is not a positive multiple of width.</exception>
    public EmbeddingSum(IReadOnlyList<float[]> tables, int width)
    {
        ArgumentNullException.ThrowIfNull(tables);
        ThrowHelper.Positive(width, nameof(width));
        if (tables.Count == 0) ThrowHelper.Argument(nameof(tables), "at least one table is needed.");
        _tables = new float[tables.Count][];
        _rows = new int[tables.Count];
        for (int i = 0; i < tables.Count; i++)
        {
            var t = tables[i] ?? throw new ArgumentNullException(nameof(tables));
            if (t.Length == 0 || t.Length % width != 0) ThrowHelper.Argument(nameof(tables), $"table {i} has {t.Length} elements, not a positive multiple of width {width}.");
            _tables[i] = (float[])t.Clone();
            _rows[i] = t.Length / width;
        }
        _width = width;
    }

    /// <summary>Table <paramref name="table"/>, <c>[rows, width]</c>.</summary>
    public ReadOnlySpan<float> Table(int table) => _tables[table];

    /// <inheritdoc/>
    public override long ScratchSize(int maxTokens) => 0;

    /// <inheritdoc/>
    /// <remarks>The ids are data: each is checked to be an integer row of its table before anything is written
    /// (<see cref="ArgumentOutOfRangeException"/> otherwise), also on the session's unchecked path.</remarks>
    protected internal override void ForwardCore(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
    {
        int n = _tables.Length, w = OutputWidth, tokens = batch.Tokens;
        for (int i = 0; i < tokens * n; i++)
        {
            float id = input[i];
            if (!(id >= 0 && id < _rows[i % n]) || id != MathF.Floor(id))
                ThrowHelper.OutOfRange(nameof(input), id, $"token {i / n}: id {id} is not a row of table {i % n} (0..{_rows[i % n] - 1}).");
        }
        for (int t = 0; t < tokens; t++)
        {
            var dst = output.Slice(t * w, w);
            _tables[0].AsSpan((int)input[t * n] * w, w).CopyTo(dst);
            for (int f = 1; f < n; f++)
                System.Numerics.Tensors.TensorPrimitives.Add(dst, _tables[f].AsSpan((int)input[t * n + f] * w, w), dst);
        }
    }
}
