using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
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
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="table"/> is not in [0, <see cref="Block.InputWidth"/>).</exception>
    public int Rows(int table) => _rows[CheckTable(table)];

    private int CheckTable(int table) => (uint)table < (uint)_tables.Length ? table
        : throw new ArgumentOutOfRangeException(nameof(table), table, $"tables are 0..{_tables.Length - 1}.");

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

    // column j of the row token t picks from table f (ids checked by the caller: no bounds check here)
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref float Row(ReadOnlySpan<float> input, int t, int f, int j)
        => ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_tables[f]), (int)input[t * _tables.Length + f] * _width + j);

    /// <summary>Table <paramref name="table"/>, <c>[rows, width]</c>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="table"/> is not in [0, <see cref="Block.InputWidth"/>).</exception>
    public ReadOnlySpan<float> Table(int table) => _tables[CheckTable(table)];

    /// <inheritdoc/>
    public override long ScratchSize(int maxTokens) => 0;

    /// <inheritdoc/>
    /// <remarks>The ids are data: each is checked to be an integer row of its table before anything is written
    /// (<see cref="ArgumentOutOfRangeException"/> otherwise), also on the session's unchecked path.</remarks>
    protected internal override void ForwardCore(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
    {
        int n = _tables.Length, w = OutputWidth, tokens = batch.Tokens;
        for (int t = 0; t < tokens; t++)
            for (int f = 0; f < n; f++)
            {
                float id = input[t * n + f];
                if (!(id >= 0 && id < _rows[f]) || id != MathF.Floor(id))
                    ThrowHelper.OutOfRange(nameof(input), id, $"token {t}: id {id} is not a row of table {f} (0..{_rows[f] - 1}).");
            }
        // a vector of columns summed over every table in a register (tables added in order, as documented), then stored:
        // one pass over the output instead of one per table. The ids were checked above, so every row read is in its table.
        int vw = Vector<float>.Count;
        ref float o0 = ref MemoryMarshal.GetReference(output);
        for (int t = 0; t < tokens; t++)
        {
            int j = 0;
            for (; j + 4 * vw <= w; j += 4 * vw)
            {
                // four vectors of a row at a time: independent sums, each row read in one contiguous piece
                ref float r0 = ref Row(input, t, 0, j);
                var a0 = Vector.LoadUnsafe(ref r0);
                var a1 = Vector.LoadUnsafe(ref r0, (nuint)vw);
                var a2 = Vector.LoadUnsafe(ref r0, (nuint)(2 * vw));
                var a3 = Vector.LoadUnsafe(ref r0, (nuint)(3 * vw));
                for (int f = 1; f < n; f++)
                {
                    ref float rf = ref Row(input, t, f, j);
                    a0 += Vector.LoadUnsafe(ref rf);
                    a1 += Vector.LoadUnsafe(ref rf, (nuint)vw);
                    a2 += Vector.LoadUnsafe(ref rf, (nuint)(2 * vw));
                    a3 += Vector.LoadUnsafe(ref rf, (nuint)(3 * vw));
                }
                nuint d0 = (nuint)(t * w + j);
                Vector.StoreUnsafe(a0, ref o0, d0);
                Vector.StoreUnsafe(a1, ref o0, d0 + (nuint)vw);
                Vector.StoreUnsafe(a2, ref o0, d0 + (nuint)(2 * vw));
                Vector.StoreUnsafe(a3, ref o0, d0 + (nuint)(3 * vw));
            }
            for (; j + vw <= w; j += vw)
            {
                var acc = Vector.LoadUnsafe(ref Row(input, t, 0, j));
                for (int f = 1; f < n; f++) acc += Vector.LoadUnsafe(ref Row(input, t, f, j));
                Vector.StoreUnsafe(acc, ref o0, (nuint)(t * w + j));
            }
            for (; j < w; j++)
            {
                float acc = Row(input, t, 0, j);
                for (int f = 1; f < n; f++) acc += Row(input, t, f, j);
                output[t * w + j] = acc;
            }
        }
    }
}
