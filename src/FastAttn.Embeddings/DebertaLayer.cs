using System.Numerics.Tensors;
using FastAttn.Composition;
using FastAttn.Kernels;
using FastAttn.Layers;

namespace FastAttn.Embeddings;

/// <summary>
/// DeBERTa-v2/v3's relative positions, as Hugging Face's modeling_deberta_v2 defines them: the distance i − j of query i
/// and key j, bucketed (exact up to half the bucket count, logarithmic beyond, up to the largest relative position), then
/// offset by the span and clamped into the relative embedding table's 2·span rows.
/// </summary>
internal sealed record DebertaRelative(int Span, int Buckets, int MaxRelativePositions, bool C2P, bool P2C, bool ShareAttKey, bool NormRelEmbeddings)
{
    /// <summary>1 + one per disentangled term: the scores are divided by √(head width · this).</summary>
    public int ScaleFactor => 1 + (C2P ? 1 : 0) + (P2C ? 1 : 0);

    /// <summary>make_log_bucket_position(δ): δ itself within half the buckets, else sign · (⌈log(|δ|/mid) / log((max − 1)/mid) · (mid − 1)⌉ + mid), in float32 as PyTorch computes it.</summary>
    public int Bucket(int delta)
    {
        if (Buckets <= 0) return delta;
        int mid = Buckets / 2;
        int abs = Math.Abs(delta);
        if (abs <= mid) return delta;
        float logPos = MathF.Ceiling(MathF.Log(abs / (float)mid) / MathF.Log((float)((MaxRelativePositions - 1) / (double)mid)) * (mid - 1)) + mid;
        // (a bucket past the table is clamped to its last row anyway: bounded here so the conversion cannot overflow)
        return Math.Sign(delta) * (int)Math.Min(logPos, 1 << 24);
    }

    /// <summary>The row of the relative table for distance δ = i − j: clamp(bucket(δ) + span, 0, 2·span − 1).</summary>
    public int Row(int delta) => Math.Clamp(Bucket(delta) + Span, 0, 2 * Span - 1);
}

/// <summary>
/// One DeBERTa-v2/v3 encoder layer: disentangled self-attention — scores = (q_i·k_j + q_i·kr[r(i−j)] + k_j·qr[r(i−j)]) /
/// √(d·(1 + terms)), where kr and qr are the key and query projections of the layer-normalised relative embeddings
/// (computed once at load) — then BERT's post-norm output, feed-forward and norms. Packed sequences attend within
/// themselves. The attention runs per sequence and head as dense products (FastAttn's GEMM): the relative terms are
/// products with the table rows the sequence reaches, gathered per distance.
/// </summary>
internal sealed class DebertaLayer : Block, IDisposable
{
    private readonly Linear _qkv, _out;
    private readonly FeedForward _ffn;
    private readonly LayerNorm _norm1, _norm2;
    private readonly float[] _posKey, _posQuery;       // [2·span, hidden]: kr and qr (empty when the term is off)
    private readonly int[] _rows;                       // distance δ + (maxTokens − 1) → table row
    private readonly DebertaRelative _rel;
    private readonly int _h, _heads, _d, _maxTokens;

    public LayerNorm Norm1 => _norm1;
    public long WeightBytes => _qkv.WeightBytes + _out.WeightBytes + _ffn.WeightBytes + 4L * (_posKey.Length + _posQuery.Length + 4 * _h);
    public override int InputWidth => _h;
    public override int OutputWidth => _h;

    public DebertaLayer(int hidden, int heads, Linear qkv, Linear outProj, FeedForward ffn, LayerNorm norm1, LayerNorm norm2,
        float[] posKey, float[] posQuery, DebertaRelative rel, int maxTokens)
    {
        _h = hidden; _heads = heads; _d = hidden / heads; _maxTokens = maxTokens;
        _qkv = qkv; _out = outProj; _ffn = ffn; _norm1 = norm1; _norm2 = norm2;
        _posKey = posKey; _posQuery = posQuery; _rel = rel;
        _rows = new int[2 * maxTokens - 1];
        for (int k = 0; k < _rows.Length; k++) _rows[k] = rel.Row(k - (maxTokens - 1));
    }

    public override void Validate(Batch batch)
    {
        if (batch.LongestSequence > _maxTokens)
            ThrowHelper.Argument("sequenceLengths", $"a sequence of {batch.LongestSequence} tokens is longer than the model's {_maxTokens} positions; truncate it.");
    }

    // qkv [T, 3h] | context [T, h] | x1 [T, h] | scores [L, L] | c2p [L, W] | p2c [L, W] | product scratch | layer scratch
    private long Products(int t) => (long)t * t + 2L * t * (2 * t)
        + Math.Max(Gemm.MatMulScratchSize(t, t, _d), Math.Max(Gemm.MatMulScratchSize(t, 2 * t, _d), Gemm.MatMulScratchSize(t, _d, t)));

    public override long ScratchSize(int maxTokens) =>
        (long)maxTokens * 5 * _h + Math.Max(Products(maxTokens), Math.Max(Math.Max(_qkv.ScratchSize(maxTokens), _out.ScratchSize(maxTokens)), _ffn.ScratchSize(maxTokens)));

    // a pool's workers each run whole heads: the products' scratch on every worker
    public override long WorkerScratchSize(int maxTokens) =>
        Math.Max(Products(maxTokens), Math.Max(Math.Max(_qkv.WorkerScratchSize(maxTokens), _out.WorkerScratchSize(maxTokens)), _ffn.WorkerScratchSize(maxTokens)));

    /// <summary>Sequences at least this long split their heads over the pool's threads (shorter ones: the dispatch costs more than the heads).</summary>
    private const int ParallelFrom = 24;

    protected internal override void ForwardCore(ReadOnlySpan<float> input, Span<float> output, Batch batch, Span<float> scratch)
    {
        int t = batch.Tokens, h = _h;
        var pool = batch.Pool;
        Span<float> qkv = scratch.Slice(0, 3 * t * h), ctx = scratch.Slice(3 * t * h, t * h), x1 = scratch.Slice(4 * t * h, t * h);
        Span<float> work = scratch.Slice(5 * t * h);
        _qkv.ForwardCore(input, t, qkv, work, default, pool);
        for (int s = 0, t0 = 0; s < batch.Count; t0 += batch.Length(s), s++)
        {
            int len = batch.Length(s);
            var seqQkv = qkv.Slice(t0 * 3 * h, len * 3 * h);
            var seqCtx = ctx.Slice(t0 * h, len * h);
            if (pool is { Threads: > 1 } && len >= ParallelFrom) AttendParallel(seqQkv, len, seqCtx, work, pool);
            else for (int head = 0; head < _heads; head++) AttendHead(seqQkv, len, head, seqCtx, work);
        }
        // post-norm: x1 = LN(x + out(ctx)); y = LN(x1 + ffn(x1))
        _out.ForwardCore(ctx, t, x1, work, input, pool);
        _norm1.ForwardCore(x1, t, x1, pool);
        _ffn.Core(x1, output, t, work, x1, pool);
        _norm2.ForwardCore(output, t, output, pool);
    }

    /// <summary>The heads of one sequence split over the pool's threads (worker 0, the caller, on the block's scratch; the others on theirs).</summary>
    private unsafe void AttendParallel(Span<float> qkv, int len, Span<float> ctx, Span<float> work, Threading.WorkerPool pool)
    {
        fixed (float* pq = qkv, pc = ctx, pw = work)
        {
            using var lease = pool.Acquire();
            var job = pool.Job<HeadsJob>();
            job.Layer = this; job.Pool = pool; job.Qkv = pq; job.Ctx = pc; job.Work0 = pw; job.Len = len;
            job.Products = (int)Products(len);
            pool.RunHeld(job, _heads);
            job.Layer = null; job.Pool = null;
        }
    }

    private sealed unsafe class HeadsJob : Threading.IParallelWork
    {
        public DebertaLayer? Layer;
        public Threading.WorkerPool? Pool;
        public float* Qkv, Ctx, Work0;
        public int Len, Products;

        public void Execute(int head, int worker)
        {
            int h = Layer!._h;
            float* w = worker == 0 ? Work0 : Pool!.WorkerScratch(worker);
            Layer.AttendHead(new Span<float>(Qkv, Len * 3 * h), Len, head, new Span<float>(Ctx, Len * h), new Span<float>(w, Products));
        }
    }

    /// <summary>
    /// One head of one sequence of <paramref name="len"/> tokens: its q|k|v rows (stride 3h) in, the head's columns of the
    /// context (stride h) out; the scores and the relative products in <paramref name="work"/>.
    /// </summary>
    private unsafe void AttendHead(Span<float> qkv, int len, int head, Span<float> ctx, Span<float> work)
    {
        int h = _h, d = _d, ld = 3 * h;
        // the table rows this length reaches: r(δ) for δ = −(len−1) … len−1 is monotone, so a contiguous block [lo, hi]
        int lo = _rows[_maxTokens - 1 - (len - 1)], hi = _rows[_maxTokens - 1 + (len - 1)], w = hi - lo + 1;
        Span<float> scores = work.Slice(0, len * len);
        Span<float> c2p = work.Slice(len * len, len * w), p2c = work.Slice(len * len + len * w, len * w);
        Span<float> mm = work.Slice(len * len + 2 * len * w);
        float scale = 1f / MathF.Sqrt(d * (float)_rel.ScaleFactor);
        var q = qkv.Slice(head * d);
        var k = qkv.Slice(h + head * d);
        var v = qkv.Slice(2 * h + head * d);
        Gemm.MatMul(len, len, d, q, ld, k, ld, transposeB: true, scores, len, mm);
        if (_rel.C2P) Gemm.MatMul(len, w, d, q, ld, _posKey.AsSpan(lo * h + head * d), h, transposeB: true, c2p, w, mm);
        if (_rel.P2C) Gemm.MatMul(len, w, d, k, ld, _posQuery.AsSpan(lo * h + head * d), h, transposeB: true, p2c, w, mm);
        bool c2pOn = _rel.C2P, p2cOn = _rel.P2C;
        // the relative terms gathered per element (the rows a distance maps to are only piecewise contiguous): through
        // pointers, one loop per term set — the same sums in the same order as the indexed loop, without its bounds checks
        // (every index is inside: r ∈ [0, w) by the choice of lo and hi, j < len). At 512 tokens, 6 layers of width 384 on one
        // thread, the gather and softmax took 21.9 ms of 109 per call, 15.1 ms of 102 after (stopwatch around the loops).
        fixed (float* ps = scores, pc = c2p, pp = p2c)
        fixed (int* pr = _rows)
        {
            for (int i = 0; i < len; i++)
            {
                float* row = ps + (long)i * len, ci = pc + (long)i * w;
                int* ri = pr + (_maxTokens - 1 + i);                 // ri[−j] is r(i − j)
                if (c2pOn && p2cOn)
                    for (int j = 0; j < len; j++) { int r = ri[-j] - lo; row[j] = (row[j] + ci[r] + pp[(long)j * w + r]) * scale; }
                else if (c2pOn)
                    for (int j = 0; j < len; j++) { int r = ri[-j] - lo; row[j] = (row[j] + ci[r]) * scale; }
                else if (p2cOn)
                    for (int j = 0; j < len; j++) { int r = ri[-j] - lo; row[j] = (row[j] + pp[(long)j * w + r]) * scale; }
                else
                    for (int j = 0; j < len; j++) row[j] *= scale;
                var span = new Span<float>(row, len);
                TensorPrimitives.SoftMax(span, span);
            }
        }
        Gemm.MatMul(len, d, len, scores, len, v, ld, transposeB: false, ctx.Slice(head * d), h, mm);
    }

    public void Dispose()
    {
        _qkv.Dispose(); _out.Dispose(); _ffn.Dispose();
    }
}
