using FastAttn.Composition;

namespace FastAttn.Layers;

/// <summary>
/// Adds a position table to every sequence (positions restart at 0 for each sequence of a packed batch):
/// the sinusoidal encoding of "Attention Is All You Need" or a learned table.
/// </summary>
public sealed class PositionalEncoding : Block
{
    private readonly float[] _table;
    /// <summary>Longest sequence the table covers.</summary>
    public int MaxPositions { get; }
    private readonly int _width;
    /// <inheritdoc/>
    public override int InputWidth => _width;
    /// <inheritdoc/>
    public override int OutputWidth => _width;
    /// <summary>The table <c>[MaxPositions, width]</c> (read-only view).</summary>
    public ReadOnlySpan<float> Table => _table;

    private PositionalEncoding(float[] table, int maxPositions, int width) { _table = table; MaxPositions = maxPositions; _width = width; }

    /// <summary>PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(…).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is below 1, or the table would not fit in one array.</exception>
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

    /// <summary>A learned table <c>[maxPositions, width]</c> (copied).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is below 1.</exception>
    /// <exception cref="ArgumentException">The table does not hold maxPositions × width elements.</exception>
    public static PositionalEncoding Learned(ReadOnlySpan<float> table, int maxPositions, int width)
    {
        ThrowHelper.Positive(maxPositions, nameof(maxPositions));
        ThrowHelper.Positive(width, nameof(width));
        ThrowHelper.ExactLength(table.Length, (long)maxPositions * width, nameof(table), $"maxPositions*width = {maxPositions}*{width}");
        return new PositionalEncoding(table.ToArray(), maxPositions, width);
    }

    /// <inheritdoc/>
    public override long ScratchSize(int maxTokens) => 0;

    /// <inheritdoc/>
    public override void Validate(Batch batch)
    {
        int longest = batch.LongestSequence;
        if (longest > MaxPositions)
            ThrowHelper.Argument("sequenceLengths", $"a sequence of {longest} tokens is longer than the {MaxPositions} positions the encoding covers.");
    }

    /// <inheritdoc/>
    protected internal override void ForwardCore(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
    {
        int w = InputWidth, t0 = 0;
        for (int s = 0; s < batch.Count; s++)
        {
            int len = batch.Length(s);
            System.Numerics.Tensors.TensorPrimitives.Add(input.Slice(t0 * w, len * w), _table.AsSpan(0, len * w), output.Slice(t0 * w, len * w));
            t0 += len;
        }
    }
}
