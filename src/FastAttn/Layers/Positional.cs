using FastAttn.Composition;

namespace FastAttn.Layers;

/// <summary>Token embedding lookup: ids → rows of a <c>[vocab, width]</c> table.</summary>
public sealed class Embedding
{
    private readonly float[] _table;
    /// <summary>Rows in the table.</summary>
    public int Vocabulary { get; }
    /// <summary>Width of a row.</summary>
    public int Width { get; }

    /// <summary>Builds the lookup from a <c>[vocabulary, width]</c> table.</summary>
    public Embedding(ReadOnlySpan<float> table, int vocabulary, int width)
    {
        ThrowHelper.Positive(vocabulary, nameof(vocabulary));
        ThrowHelper.Positive(width, nameof(width));
        ThrowHelper.ExactLength(table.Length, (long)vocabulary * width, nameof(table), $"vocabulary*width = {vocabulary}*{width}");
        _table = table.ToArray();
        Vocabulary = vocabulary; Width = width;
    }

    /// <summary>Writes the rows of <paramref name="ids"/> into output <c>[ids.Length, Width]</c>, or adds them when <paramref name="accumulate"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An id is outside the vocabulary.</exception>
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

/// <summary>
/// Per-token feature embeddings summed, as the first block of a stack: token t's input row holds one id per
/// table (as floats, exact below 2²⁴), and its output is table₀[id₀] + table₁[id₁] + … (added in that order).
/// The word, affix and shape features of a tagger; PyTorch's sum of several <c>nn.Embedding</c> lookups.
/// </summary>
public sealed class EmbeddingSum : IBlock
{
    private readonly float[][] _tables;
    private readonly int[] _rows;
    /// <inheritdoc/>
    public int InputWidth => _tables.Length;
    /// <inheritdoc/>
    public int OutputWidth { get; }
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
        OutputWidth = width;
    }

    /// <summary>Table <paramref name="table"/>, <c>[rows, width]</c>.</summary>
    public ReadOnlySpan<float> Table(int table) => _tables[table];

    /// <inheritdoc/>
    public long ScratchSize(int maxTokens) => 0;

    /// <inheritdoc/>
    /// <exception cref="ArgumentOutOfRangeException">An id is not an integer row of its table (checked before anything is written).</exception>
    public void Forward(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
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

/// <summary>
/// Adds a position table to every sequence (positions restart at 0 for each sequence of a packed batch):
/// the sinusoidal encoding of "Attention Is All You Need" or a learned table.
/// </summary>
public sealed class PositionalEncoding : IBlock
{
    private readonly float[] _table;
    /// <summary>Longest sequence the table covers.</summary>
    public int MaxPositions { get; }
    /// <inheritdoc/>
    public int InputWidth { get; }
    /// <inheritdoc/>
    public int OutputWidth => InputWidth;

    private PositionalEncoding(float[] table, int maxPositions, int width) { _table = table; MaxPositions = maxPositions; InputWidth = width; }

    /// <summary>PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(…).</summary>
    public static PositionalEncoding Sinusoidal(int maxPositions, int width)
    {
        ThrowHelper.Positive(maxPositions, nameof(maxPositions));
        ThrowHelper.Positive(width, nameof(width));
        if ((long)maxPositions * width > Array.MaxLength)
            ThrowHelper.OutOfRange(nameof(maxPositions), maxPositions, $"a table of maxPositions*width = {maxPositions}*{width} floats is larger than one array can hold.");
        var t = new float[maxPositions * width];
        for (int p = 0; p < maxPositions; p++)
            for (int i = 0; i < width; i++)
            {
                double angle = p / Math.Pow(10000, 2 * (i / 2) / (double)width);
                t[p * width + i] = (float)(i % 2 == 0 ? Math.Sin(angle) : Math.Cos(angle));
            }
        return new PositionalEncoding(t, maxPositions, width);
    }

    /// <summary>A learned table <c>[maxPositions, width]</c>.</summary>
    public static PositionalEncoding Learned(ReadOnlySpan<float> table, int maxPositions, int width)
    {
        ThrowHelper.Positive(maxPositions, nameof(maxPositions));
        ThrowHelper.Positive(width, nameof(width));
        ThrowHelper.ExactLength(table.Length, (long)maxPositions * width, nameof(table), $"maxPositions*width = {maxPositions}*{width}");
        return new PositionalEncoding(table.ToArray(), maxPositions, width);
    }

    /// <inheritdoc/>
    public long ScratchSize(int maxTokens) => 0;

    /// <inheritdoc/>
    public void Validate(Batch batch)
    {
        int longest = batch.LongestSequence;
        if (longest > MaxPositions)
            ThrowHelper.Argument("sequenceLengths", $"a sequence of {longest} tokens is longer than the {MaxPositions} positions the encoding covers.");
    }

    /// <inheritdoc/>
    public void Forward(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
    {
        Validate(batch);
        int w = InputWidth, t0 = 0;
        for (int s = 0; s < batch.Count; s++)
        {
            int len = batch.Length(s);
            System.Numerics.Tensors.TensorPrimitives.Add(input.Slice(t0 * w, len * w), _table.AsSpan(0, len * w), output.Slice(t0 * w, len * w));
            t0 += len;
        }
    }
}

/// <summary>Rotary position embedding (RoPE, rotate-half pairing i ↔ i + headDim/2) applied to Q and K heads in place.</summary>
public sealed class Rope
{
    private readonly float[] _cos, _sin;
    /// <summary>Head width (even).</summary>
    public int HeadDim { get; }
    /// <summary>Longest sequence covered.</summary>
    public int MaxPositions { get; }

    /// <summary>θ_i = base^(−2i/headDim).</summary>
    public Rope(int headDim, int maxPositions, double theta = 10000)
    {
        ThrowHelper.Positive(headDim, nameof(headDim));
        if (headDim % 2 != 0) ThrowHelper.Argument(nameof(headDim), $"'headDim' must be even for RoPE; it is {headDim}.");
        ThrowHelper.Positive(maxPositions, nameof(maxPositions));
        if (!double.IsFinite(theta) || theta <= 0) ThrowHelper.OutOfRange(nameof(theta), theta, "'theta' must be finite and positive.");
        if ((long)maxPositions * (headDim / 2) > Array.MaxLength)
            ThrowHelper.OutOfRange(nameof(maxPositions), maxPositions, $"tables of maxPositions*headDim/2 = {maxPositions}*{headDim / 2} floats are larger than one array can hold.");
        HeadDim = headDim; MaxPositions = maxPositions;
        int half = headDim / 2;
        _cos = new float[maxPositions * half]; _sin = new float[maxPositions * half];
        for (int p = 0; p < maxPositions; p++)
            for (int i = 0; i < half; i++)
            {
                double a = p * Math.Pow(theta, -2.0 * i / headDim);
                _cos[p * half + i] = (float)Math.Cos(a); _sin[p * half + i] = (float)Math.Sin(a);
            }
    }

    /// <summary>Rotates heads of x <c>[tokens, stride]</c> (columns col0 .. col0 + heads·headDim) by position within each sequence.</summary>
    public void Apply(Span<float> x, int tokens, int stride, int col0, int heads, ReadOnlySpan<int> sequenceLengths)
    {
        int half = HeadDim / 2, t0 = 0, n = sequenceLengths.IsEmpty ? 1 : sequenceLengths.Length;
        for (int s = 0; s < n; s++)
        {
            int len = sequenceLengths.IsEmpty ? tokens : sequenceLengths[s];
            if (len > MaxPositions) ThrowHelper.Argument(nameof(sequenceLengths), $"a sequence of {len} tokens is longer than the {MaxPositions} RoPE positions.");
        }
        for (int s = 0; s < n; s++)
        {
            int len = sequenceLengths.IsEmpty ? tokens : sequenceLengths[s];
            for (int p = 0; p < len; p++)
            {
                var c = _cos.AsSpan(p * half, half);
                var sn = _sin.AsSpan(p * half, half);
                for (int h = 0; h < heads; h++)
                {
                    var row = x.Slice((t0 + p) * stride + col0 + h * HeadDim, HeadDim);
                    for (int i = 0; i < half; i++)
                    {
                        float a = row[i], b = row[i + half];
                        row[i] = a * c[i] - b * sn[i];
                        row[i + half] = b * c[i] + a * sn[i];
                    }
                }
            }
            t0 += len;
        }
    }
}
