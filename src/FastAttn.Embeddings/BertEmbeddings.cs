using System.Numerics.Tensors;
using FastAttn.Composition;
using FastAttn.Layers;

namespace FastAttn.Embeddings;

/// <summary>
/// BERT's embeddings as the first block of a stack: word + position + token-type embeddings, then LayerNorm. Input row
/// t holds two numbers, the token id and the token-type id (as floats: exact below 2²⁴); positions restart at 0 for every
/// sequence of a packed batch. Ids are data and are checked (an id outside its table throws before anything is written).
/// RoBERTa and MPNet number positions after a padding index: their first position is row <see cref="PositionOffset"/> of
/// the table, and a token whose id is the padding index takes row <see cref="PaddingId"/> without advancing the count.
/// </summary>
public sealed class BertEmbeddings : Block
{
    private readonly float[] _word, _position, _type;
    private readonly sbyte[]? _wordInt8;     // Precision.Int8: per-row symmetric int8 rows
    private readonly float[]? _wordScale;    //   and their scales
    private readonly ushort[]? _wordBf16;    // Precision.BF16Weights: bfloat16 rows
    private readonly LayerNorm? _norm;
    private readonly int _width, _positionOffset, _paddingId;

    /// <summary>Vocabulary size.</summary>
    public int Vocabulary { get; }
    /// <summary>Positions a sequence can take: the position table's rows after <see cref="PositionOffset"/> (the longest sequence).</summary>
    public int MaxPositions { get; }
    /// <summary>Row of the position table a sequence's first token takes: 0, or RoBERTa's and MPNet's padding index + 1.</summary>
    public int PositionOffset => _positionOffset;
    /// <summary>The padding id whose tokens take position row <see cref="PaddingId"/> and do not advance the count (RoBERTa, MPNet), or −1.</summary>
    public int PaddingId => _paddingId;
    /// <summary>Token types.</summary>
    public int TokenTypes { get; }
    /// <summary>How the word table is stored (the position and token-type tables are FP32).</summary>
    public Kernels.Precision WordPrecision { get; }
    /// <summary>Bytes of the three tables and the norm.</summary>
    public long WeightBytes => (_wordInt8 != null ? _wordInt8.Length + 4L * _wordScale!.Length : _wordBf16 != null ? 2L * _wordBf16.Length : 4L * _word.Length)
        + 4L * (_position.Length + _type.Length + (_norm != null ? 2 * _width : 0));
    /// <summary>The LayerNorm applied to the sum; null for a decoder model's embeddings (Qwen3), which enter its first layer unnormalised.</summary>
    public LayerNorm? Norm => _norm;
    /// <inheritdoc/>
    public override int InputWidth => 2;
    /// <inheritdoc/>
    public override int OutputWidth => _width;

    /// <summary>Builds the block from its tables (copied): word <c>[vocabulary, width]</c>, position <c>[maxPositions, width]</c>, token type <c>[types, width]</c>.</summary>
    /// <exception cref="ArgumentException">A table is not a positive multiple of the width, or the norm's width differs.</exception>
    /// <exception cref="ArgumentNullException">A table or the norm is null.</exception>
    public BertEmbeddings(ReadOnlySpan<float> word, ReadOnlySpan<float> position, ReadOnlySpan<float> tokenType, LayerNorm norm)
        : this(word, position, tokenType, norm, Kernels.Precision.F32) { }

    /// <summary>
    /// As above, with the word table (the largest: vocabulary × width) stored in <paramref name="wordPrecision"/>: int8 rows
    /// with a per-row scale (max |row| / 127), or bfloat16; rows are widened to FP32 as they are read.
    /// </summary>
    /// <exception cref="ArgumentException">A table is not a positive multiple of the width, or the norm's width differs.</exception>
    /// <exception cref="ArgumentNullException">A table or the norm is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The precision is unknown.</exception>
    public BertEmbeddings(ReadOnlySpan<float> word, ReadOnlySpan<float> position, ReadOnlySpan<float> tokenType, LayerNorm norm, Kernels.Precision wordPrecision)
        : this(word, position, tokenType, norm, wordPrecision, -1) { }

    /// <summary>
    /// As above, numbering positions as RoBERTa and MPNet do when <paramref name="paddingId"/> ≥ 0: a sequence's first
    /// position is row <paramref name="paddingId"/> + 1 of the position table, and a token whose id is
    /// <paramref name="paddingId"/> takes row <paramref name="paddingId"/> without advancing the count.
    /// </summary>
    /// <exception cref="ArgumentException">A table is not a positive multiple of the width, the norm's width differs, or the padding id leaves no position or is outside the vocabulary.</exception>
    /// <exception cref="ArgumentNullException">A table or the norm is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The precision is unknown.</exception>
    public BertEmbeddings(ReadOnlySpan<float> word, ReadOnlySpan<float> position, ReadOnlySpan<float> tokenType, LayerNorm norm, Kernels.Precision wordPrecision, int paddingId)
        : this(word, position, tokenType, norm, wordPrecision, paddingId, 0) { }

    /// <summary>
    /// As above; with <paramref name="positionsWithoutTable"/> &gt; 0 there is no position table (<paramref name="position"/>
    /// empty: the positions enter later, as RoPE in ModernBERT's attention) and sequences may be that long.
    /// </summary>
    internal BertEmbeddings(ReadOnlySpan<float> word, ReadOnlySpan<float> position, ReadOnlySpan<float> tokenType, LayerNorm? norm, Kernels.Precision wordPrecision, int paddingId,
        int positionsWithoutTable)
    {
        if ((uint)wordPrecision > (uint)Kernels.Precision.BF16Weights) throw new ArgumentOutOfRangeException(nameof(wordPrecision), wordPrecision, "Unknown precision.");
        WordPrecision = wordPrecision;
        // no norm: a decoder's (Qwen3's) embeddings enter the first layer as they are; the width is the token-type row's
        if (norm == null && positionsWithoutTable <= 0) throw new ArgumentNullException(nameof(norm));
        _norm = norm;
        _width = norm?.Width ?? tokenType.Length;
        int Rows(ReadOnlySpan<float> t, string name)
        {
            if (t.Length == 0 || t.Length % _width != 0) ThrowHelper.Argument(name, $"'{name}' has {t.Length} elements, not a positive multiple of the width {_width}.");
            return t.Length / _width;
        }
        Vocabulary = Rows(word, nameof(word));
        bool table = positionsWithoutTable <= 0;
        if (!table && (!position.IsEmpty || paddingId != -1)) ThrowHelper.Argument(nameof(position), "a model without a position table has neither position rows nor a padding id.");
        int positionRows = table ? Rows(position, nameof(position)) : positionsWithoutTable;
        TokenTypes = Rows(tokenType, nameof(tokenType));
        if (Vocabulary >= 1 << 24) ThrowHelper.Argument(nameof(word), "ids travel as floats and must stay below 2^24.");
        if (paddingId < -1 || paddingId >= Vocabulary || paddingId + 1 >= positionRows)
            ThrowHelper.Argument(nameof(paddingId), $"padding id {paddingId} is not −1 or a vocabulary id below the position table's {positionRows} rows less one.");
        _paddingId = paddingId;
        _positionOffset = paddingId + 1;
        MaxPositions = positionRows - _positionOffset;
        _position = position.ToArray(); _type = tokenType.ToArray();
        _word = [];
        switch (wordPrecision)
        {
            case Kernels.Precision.Int8:
                _wordInt8 = new sbyte[word.Length];
                _wordScale = new float[Vocabulary];
                for (int r = 0; r < Vocabulary; r++)
                {
                    var row = word.Slice(r * _width, _width);
                    float amax = TensorPrimitives.MaxMagnitude(row);
                    // a row holding NaN or ±∞ is stored as zeros with a NaN scale: it reads back as NaN (not a silent 0)
                    bool finite = float.IsFinite(amax);
                    amax = finite ? Math.Abs(amax) : 0f;
                    float inv = amax > 0 && float.IsFinite(127f / amax) ? 127f / amax : 0f;
                    _wordScale[r] = !finite ? float.NaN : inv == 0 ? 0f : amax / 127f;
                    for (int i = 0; i < _width; i++) _wordInt8[r * _width + i] = (sbyte)Math.Clamp((int)MathF.Round(row[i] * inv), -127, 127);
                }
                break;
            case Kernels.Precision.BF16Weights:
                _wordBf16 = new ushort[word.Length];
                for (int i = 0; i < word.Length; i++) _wordBf16[i] = Kernels.PackedWeight.ToBf16(word[i]);
                break;
            default:
                _word = word.ToArray();
                break;
        }
    }

    /// <summary>Writes word row <paramref name="id"/> as FP32 into <paramref name="dst"/>.</summary>
    private void WordRow(int id, Span<float> dst)
    {
        int w = _width;
        if (_wordInt8 != null)
        {
            TensorPrimitives.ConvertChecked<sbyte, float>(_wordInt8.AsSpan(id * w, w), dst);
            TensorPrimitives.Multiply(dst, _wordScale![id], dst);
        }
        else if (_wordBf16 != null)
        {
            var src = _wordBf16.AsSpan(id * w, w);
            for (int i = 0; i < w; i++) dst[i] = Kernels.PackedWeight.FromBf16(src[i]);
        }
        else _word.AsSpan(id * w, w).CopyTo(dst);
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
            int len = batch.Length(s), p = _positionOffset;
            for (int i = 0; i < len; i++)
            {
                int t = t0 + i, id = (int)input[2 * t];
                var dst = output.Slice(t * w, w);
                WordRow(id, dst);
                TensorPrimitives.Add(dst, _type.AsSpan((int)input[2 * t + 1] * w, w), dst);
                // RoBERTa/MPNet: a padding token takes the padding row and is not counted (cumsum of non-padding tokens)
                int row = id == _paddingId ? _paddingId : p++;
                if (_position.Length != 0) TensorPrimitives.Add(dst, _position.AsSpan(row * w, w), dst);
            }
            t0 += len;
        }
        _norm?.ForwardCore(output, tokens, output, batch.Pool);
    }
}
