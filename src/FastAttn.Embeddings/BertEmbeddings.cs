using System.Numerics.Tensors;
using FastAttn.Composition;
using FastAttn.Layers;

namespace FastAttn.Embeddings;

/// <summary>
/// BERT's embeddings as the first block of a stack: word + position + token-type embeddings, then LayerNorm. Input row
/// t holds two numbers, the token id and the token-type id (as floats: exact below 2²⁴); positions restart at 0 for every
/// sequence of a packed batch. Ids are data and are checked (an id outside its table throws before anything is written).
/// </summary>
public sealed class BertEmbeddings : Block
{
    private readonly float[] _word, _position, _type;
    private readonly LayerNorm _norm;
    private readonly int _width;

    /// <summary>Vocabulary size.</summary>
    public int Vocabulary { get; }
    /// <summary>Rows of the position table: the longest sequence.</summary>
    public int MaxPositions { get; }
    /// <summary>Token types.</summary>
    public int TokenTypes { get; }
    /// <summary>The LayerNorm applied to the sum.</summary>
    public LayerNorm Norm => _norm;
    /// <inheritdoc/>
    public override int InputWidth => 2;
    /// <inheritdoc/>
    public override int OutputWidth => _width;

    /// <summary>Builds the block from its tables (copied): word <c>[vocabulary, width]</c>, position <c>[maxPositions, width]</c>, token type <c>[types, width]</c>.</summary>
    /// <exception cref="ArgumentException">A table is not a positive multiple of the width, or the norm's width differs.</exception>
    /// <exception cref="ArgumentNullException">A table or the norm is null.</exception>
    public BertEmbeddings(ReadOnlySpan<float> word, ReadOnlySpan<float> position, ReadOnlySpan<float> tokenType, LayerNorm norm)
    {
        _norm = norm ?? throw new ArgumentNullException(nameof(norm));
        _width = norm.Width;
        int Rows(ReadOnlySpan<float> t, string name)
        {
            if (t.Length == 0 || t.Length % _width != 0) ThrowHelper.Argument(name, $"'{name}' has {t.Length} elements, not a positive multiple of the width {_width}.");
            return t.Length / _width;
        }
        Vocabulary = Rows(word, nameof(word));
        MaxPositions = Rows(position, nameof(position));
        TokenTypes = Rows(tokenType, nameof(tokenType));
        if (Vocabulary >= 1 << 24) ThrowHelper.Argument(nameof(word), "ids travel as floats and must stay below 2^24.");
        _word = word.ToArray(); _position = position.ToArray(); _type = tokenType.ToArray();
    }

    /// <inheritdoc/>
    public override long ScratchSize(int maxTokens) => 0;

    /// <inheritdoc/>
    public override void Validate(Batch batch)
    {
        if (batch.LongestSequence > MaxPositions)
            ThrowHelper.Argument("sequenceLengths", $"a sequence of {batch.LongestSequence} tokens is longer than the model's {MaxPositions} positions; truncate it.");
    }

    /// <inheritdoc/>
    /// <remarks>Token and type ids are checked here (also on a session's unchecked path): <see cref="ArgumentOutOfRangeException"/> before anything is written.</remarks>
    protected internal override void ForwardCore(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
    {
        int tokens = batch.Tokens, w = _width;
        for (int t = 0; t < tokens; t++)
        {
            float id = input[2 * t], type = input[2 * t + 1];
            if (!(id >= 0 && id < Vocabulary) || id != MathF.Floor(id))
                ThrowHelper.OutOfRange("input", id, $"token {t}: id {id} is not in the vocabulary (0..{Vocabulary - 1}).");
            if (!(type >= 0 && type < TokenTypes) || type != MathF.Floor(type))
                ThrowHelper.OutOfRange("input", type, $"token {t}: token type {type} is not 0..{TokenTypes - 1}.");
        }
        int t0 = 0;
        for (int s = 0; s < batch.Count; s++)
        {
            int len = batch.Length(s);
            for (int p = 0; p < len; p++)
            {
                int t = t0 + p;
                var dst = output.Slice(t * w, w);
                TensorPrimitives.Add(_word.AsSpan((int)input[2 * t] * w, w), _type.AsSpan((int)input[2 * t + 1] * w, w), dst);
                TensorPrimitives.Add(dst, _position.AsSpan(p * w, w), dst);
            }
            t0 += len;
        }
        _norm.ForwardCore(output, tokens, output, batch.Pool);
    }
}
