using FastAttn.Threading;

namespace FastAttn.Kernels;

/// <summary>How the row norms split themselves over a pool's threads: contiguous row blocks.</summary>
internal static unsafe partial class Norms
{
    /// <summary>Below this many element operations a norm runs on the calling thread only.</summary>
    private const double ParallelWork = 2e6;

    /// <summary>LayerNorm (beta non-null) or RmsNorm (<paramref name="rms"/>) of rows, split over the pool when large enough.</summary>
    public static void Run(IsaPath isa, float* x, float* y, int rows, int width, float* gamma, float* beta, float eps, bool rms, WorkerPool? pool)
    {
        if (pool != null && pool.Threads > 1 && 8.0 * rows * width >= ParallelWork && rows >= 2)
        {
            using var lease = pool.Acquire();
            var job = pool.Job<NormJob>();
            job.Set(isa, x, y, rows, width, gamma, beta, eps, rms, Math.Min(pool.Threads, rows));
            pool.RunHeld(job, job.Chunks);
            return;
        }
        if (rms) RmsNorm(isa, x, y, rows, width, gamma, eps);
        else LayerNorm(isa, x, y, rows, width, gamma, beta, eps);
    }

    /// <summary>One split norm; reused by its pool.</summary>
    internal sealed class NormJob : IParallelWork
    {
        private IsaPath _isa;
        private float* _x, _y, _gamma, _beta;
        private int _rows, _width;
        private float _eps;
        private bool _rms;
        public int Chunks;

        public void Set(IsaPath isa, float* x, float* y, int rows, int width, float* gamma, float* beta, float eps, bool rms, int chunks)
        {
            _isa = isa; _x = x; _y = y; _rows = rows; _width = width; _gamma = gamma; _beta = beta; _eps = eps; _rms = rms; Chunks = chunks;
        }

        public void Execute(int item, int worker)
        {
            int r0 = (int)((long)item * _rows / Chunks), r1 = (int)((long)(item + 1) * _rows / Chunks);
            nint off = (nint)r0 * _width;
            if (_rms) RmsNorm(_isa, _x + off, _y + off, r1 - r0, _width, _gamma, _eps);
            else LayerNorm(_isa, _x + off, _y + off, r1 - r0, _width, _gamma, _beta, _eps);
        }
    }
}
