using FastAttn.Composition;
using FastAttn.Kernels;
using FastAttn.Threading;

namespace FastAttn.Layers;

/// <summary>
/// One transformer encoder layer like PyTorch's <c>nn.TransformerEncoderLayer</c> (batch-first, eval mode), also a BERT
/// layer: post-norm x = norm1(x + attn(x)); x = norm2(x + ff(x)), or pre-norm (<c>norm_first</c>)
/// x = x + attn(norm1(x)); x = x + ff(norm2(x)). Residual adds are fused into the projections' epilogues.
/// </summary>
public sealed unsafe class EncoderBlock : Block, IDisposable, IRowLocalTail
{
    /// <summary>Self-attention.</summary>
    public MultiHeadAttention Attention { get; }
    /// <summary>Feed-forward.</summary>
    public FeedForward FeedForward { get; }
    /// <summary>First norm.</summary>
    public LayerNorm Norm1 { get; }
    /// <summary>Second norm.</summary>
    public LayerNorm Norm2 { get; }
    /// <summary>Bytes of the block's weights as stored (projections, feed-forward, the two norms).</summary>
    public long WeightBytes => Attention.WeightBytes + FeedForward.WeightBytes + 4L * 2 * (Norm1.Width + Norm2.Width);
    /// <summary>Pre-norm when true.</summary>
    public bool NormFirst { get; }
    /// <inheritdoc/>
    public override int InputWidth => Attention.DModel;
    /// <inheritdoc/>
    public override int OutputWidth => Attention.DModel;

    /// <summary>Assembles a block from its parts.</summary>
    /// <exception cref="ArgumentNullException">A part is null.</exception>
    /// <exception cref="ArgumentException">The parts' widths differ.</exception>
    public EncoderBlock(MultiHeadAttention attention, FeedForward feedForward, LayerNorm norm1, LayerNorm norm2, bool normFirst)
    {
        Attention = attention ?? throw new ArgumentNullException(nameof(attention));
        FeedForward = feedForward ?? throw new ArgumentNullException(nameof(feedForward));
        Norm1 = norm1 ?? throw new ArgumentNullException(nameof(norm1));
        Norm2 = norm2 ?? throw new ArgumentNullException(nameof(norm2));
        NormFirst = normFirst;
        // every precision computes a row alike in any row block (int8 quantizes A per row), so the tail keeps the bits
        _rowLocalTail = attention.OutProj.WeightBytes + feedForward.WeightBytes <= RowLocalTailBytes;
        if (feedForward.InputWidth != attention.DModel || feedForward.OutputWidth != attention.DModel || norm1.Width != attention.DModel || norm2.Width != attention.DModel)
            ThrowHelper.Argument(nameof(feedForward), "all parts of an encoder block must have width dModel.");
    }

    /// <summary>
    /// Weight bytes as stored (output projection and feed-forward; int8 and bf16 count their own size) up to which the part after the attention runs row-local on
    /// several threads: each thread takes a share of the rows through the output projection, the norms and both
    /// feed-forward products in one parallel region, so it reads all of those weights (from its cache at this size) but
    /// no row crosses between cores. Raised from 8 MB (measured on an Intel Xeon host) on the AMD EPYC (Zen 5) host, 2
    /// threads, perf/ab.sh alternated in one process, 16 MB against 8: (512, 8 × 64, 2048) (9.4 MB) at 48 / 64 / 200 / 512
    /// tokens 1.086 / 1.005 / 1.050 / 1.019×, (768, 12 × 64, 1536) (11.8 MB) at 40 / 64 / 128 1.015 / 0.995 / 1.013×,
    /// (768, 48 × 16, 1536) at 200 1.022×, (1024, 16 × 64, 1024) (12.6 MB) at 64 / 128 1.005 / 1.050×, (640, 10 × 64,
    /// 2560) (14.7 MB) at 100 / 300 0.993–1.025 / 1.034×. Beyond it the duplicated weight reads cost more than the rows
    /// that cross: (768, 24 × 32, 3072) (21 MB) at 64 tokens 0.931× (128: 1.046×), (1024, 8 × 128, 2048) at 512 0.991×,
    /// (1024, 16 × 64, 4096) at 200 0.996×.
    /// </summary>
    internal const long RowLocalTailBytes = 16 << 20;

    /// <summary>True when the weights allow the row-local tail (at most <see cref="RowLocalTailBytes"/> as stored).</summary>
    private readonly bool _rowLocalTail;

    /// <summary>
    /// Rows a thread takes through the row-local tail at a time: its share goes in blocks of at most this many, so the
    /// feed-forward's hidden rows stay in its cache and its scratch does not grow with the token count.
    /// </summary>
    internal const int TailBlockRows = 96;

    /// <summary>
    /// Register tiles of rows per thread from which a layer whose whole forward can go by rows (one sequence, q|k|v weight
    /// of at most <see cref="MultiHeadAttention.RowsProjectionBytes"/>: <see cref="RowLocalLayerJob"/>) does so; the tail
    /// alone after a split attention keeps two. Was two for both: from 24 to 47 tokens on 2 threads such layers ran their
    /// products split by weight panels, each product's input crossing between the cores. perf/ab.sh, 2 threads, AMD EPYC
    /// (Zen 5), one against two: (96, 3 × 32, 192) at 24 / 40 (pre-norm GELU) tokens 1.060 / 1.479×, (96, 1 × 96, 384) causal
    /// at 36 1.438×, (128, 4 × 32, 512) pre-norm at 28 1.277×, (256, 8 × 32, 1024) at 40 1.224×, (256, 4 × 64, 512) causal at
    /// 33 1.185×, (256, 4 × 64, 1024) at 44 1.225×, (320, 5 × 64, 1280) at 44 1.076×, (320, 20 × 16, 640) at 26 1.126×, (384,
    /// 12 × 32, 1536) at 24 / 30 / 36 / 46 1.100–1.156 / 1.100–1.191 / 1.026 / 1.103–1.119×, (384, 16 × 24, 1536) at 32 / 47
    /// 1.042 / 1.082×, (384, 12 × 32 or 6 × 64, 1536) at 40 0.987–1.043×
    /// (0.90–0.94× before its 20-row shares were even: <see cref="GemmCore.RowShare(int, int, int, int)"/>), (384, 8 × 48, 768)
    /// causal at 24 1.176×; (512, 8 × 64, 2048) at 40 (tail alone, unchanged) 1.014×. Fewer rows than a tile (6 a thread)
    /// measured 0.43–1.21× (mostly slower), so one tile it is.
    /// </summary>
    internal const int RowLocalLayerTiles = 1;

    /// <summary>Scratch floats one thread needs for the row-local tail (one block of rows).</summary>
    private long TailScratch(int maxTokens)
    {
        int rows = Math.Min(maxTokens, TailBlockRows);
        return Math.Max(Attention.OutProj.ScratchSize(rows), FeedForward.ScratchSize(rows));
    }

    /// <inheritdoc/>
    public override long ScratchSize(int maxTokens)
    {
        long work = Math.Max(Attention.ScratchSize(maxTokens), FeedForward.ScratchSize(maxTokens));
        if (_rowLocalTail) work = Math.Max(work, (long)maxTokens * (Attention.QkvWidth + InputWidth) + RowLocalLayerScratch(maxTokens));
        return (long)maxTokens * InputWidth + work;
    }

    /// <inheritdoc/>
    public override long WorkerScratchSize(int maxTokens)
    {
        long m = Math.Max(Attention.WorkerScratchSize(maxTokens), FeedForward.WorkerScratchSize(maxTokens));
        return _rowLocalTail ? Math.Max(m, RowLocalLayerScratch(maxTokens)) : m;
    }

    /// <summary>Scratch floats one thread needs to take rows of a call of <paramref name="tokens"/> through the whole layer (<see cref="RowLocalLayerJob"/>) or its tail.</summary>
    private long RowLocalLayerScratch(int tokens) => Math.Max(TailScratch(tokens), Attention.CanAttendRows(1) ? Attention.RowsScratchSize(tokens, tokens) : 0);

    /// <summary>Tests and measurements set this on the calling thread to keep the attention off the row split (to compare both paths).</summary>
    [ThreadStatic] internal static bool NoRowLocalLayer;

    /// <summary>Calls on this thread that ran the whole layer by rows (<see cref="RowLocalLayerJob"/>; tests check the path ran).</summary>
    [ThreadStatic] internal static int RowLocalLayerRuns;

    /// <summary>
    /// True when this call runs the part after the attention row-local: small weights, several threads, and at least
    /// <paramref name="tilesPerThread"/> register tiles of rows per thread (fewer rows go better split by weight panels;
    /// two for the tail alone, <see cref="RowLocalLayerTiles"/> for the whole layer by rows).
    /// </summary>
    private bool UseRowLocalTail(int tokens, WorkerPool? pool, int tilesPerThread = 2) =>
        _rowLocalTail && pool != null && pool.Threads > 1 && tokens >= tilesPerThread * GemmCore.TileRows(Attention.OutProj.Weight.Isa) * pool.Threads;

    /// <inheritdoc/>
    public override void Validate(Batch batch) => Attention.Validate(batch);

    /// <inheritdoc/>
    protected internal override void ForwardCore(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
    {
        int tokens = batch.Tokens, n = tokens * InputWidth;
        Span<float> h = scratch.Slice(0, n);
        Span<float> work = scratch.Slice(n);
        var pool = batch.Pool;
        if (!NoRowLocalLayer && Attention.CanAttendRows(batch.Count) && UseRowLocalTail(tokens, pool, RowLocalLayerTiles))
        {
            // one sequence and a small q|k|v weight: the whole layer by rows (each thread its rows through the projection,
            // the attention over every head and the tail; only k and v cross between cores; same bits as one thread)
            RowLocalLayerRuns++;
            int p = Attention.QkvWidth, d = InputWidth;
            RowLocalLayerJob.Run(this, pool!, input, output, h, work.Slice(0, tokens * p), work.Slice(tokens * p, tokens * d),
                work.Slice(tokens * (p + d)), RowLocalLayerScratch(tokens), tokens, batch.KeyValidLengths.IsEmpty ? -1 : batch.KeyValidLengths[0]);
            return;
        }
        if (UseRowLocalTail(tokens, pool))
        {
            // the attention as usual, then one parallel region: each thread takes its rows through the output projection,
            // the norms and the feed-forward (every row is computed as in the split products, so the bits are the same)
            ReadOnlySpan<float> attnIn = input;
            if (NormFirst)
            {
                Norm1.ForwardCore(input, tokens, output, pool);                    // output = norm1(x)
                attnIn = output;
            }
            Attention.AttendCore(attnIn, batch, work, default, default);
            int p = Attention.QkvWidth, d = InputWidth;
            RowLocalTailJob.Run(this, pool!, input, output, h, work.Slice(tokens * p, tokens * d), work.Slice(tokens * (p + d)), TailScratch(tokens), tokens);
            return;
        }
        if (NormFirst)
        {
            Norm1.ForwardCore(input, tokens, output, pool);                        // output = norm1(x)
            Attention.SelfCore(output, h, batch, work, input, default, default);   // h = x + attn(norm1 x)
            Norm2.ForwardCore(h, tokens, output, pool);                            // output = norm2(h)
            FeedForward.Core(output, output, tokens, work, h, pool);               // output = h + ff(norm2 h)
        }
        else
        {
            Attention.SelfCore(input, h, batch, work, input, default, default);    // h = x + attn(x)
            Norm1.ForwardCore(h, tokens, h, pool);
            FeedForward.Core(h, output, tokens, work, h, pool);                    // output = h + ff(h)
            Norm2.ForwardCore(output, tokens, output, pool);
        }
    }

    /// <summary>Rows [r0, r1) from the attention's output to the block's output, on one thread (unchecked).</summary>
    IsaPath IRowLocalTail.TailIsa => Attention.OutProj.Weight.Isa;

    void IRowLocalTail.Tail(float* x, float* y, float* h, float* attn, int r0, int r1, Span<float> scratch)
    {
        int d = InputWidth, rows = r1 - r0;
        long off = (long)r0 * d, n = (long)rows * d;
        var xr = new ReadOnlySpan<float>(x + off, (int)n);
        var yr = new Span<float>(y + off, (int)n);
        var hr = new Span<float>(h + off, (int)n);
        Attention.OutProj.ForwardCore(new ReadOnlySpan<float>(attn + off, (int)n), rows, hr, scratch, xr, null); // h = x + out_proj(attn)
        if (NormFirst)
        {
            Norm2.ForwardCore(hr, rows, yr, null);                                 // y = norm2(h)
            FeedForward.Core(yr, yr, rows, scratch, hr, null);                     // y = h + ff(norm2 h)
        }
        else
        {
            Norm1.ForwardCore(hr, rows, hr, null);
            FeedForward.Core(hr, yr, rows, scratch, hr, null);                     // y = h + ff(h)
            Norm2.ForwardCore(yr, rows, yr, null);
        }
    }

    /// <inheritdoc/>
    public void Dispose() { Attention.Dispose(); FeedForward.Dispose(); }
}
