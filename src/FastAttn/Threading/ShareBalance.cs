namespace FastAttn.Threading;

/// <summary>
/// Speed-weighted static shares for a job whose items are the threads' shares (one item a thread, cut before the run: the
/// row-local tail, the layer by rows, a product's rows or panels when each thread takes one share). The two CPUs of a
/// machine do not run equally fast — on the AMD EPYC host the FMA peak read 228 GFLOP/s on one vCPU and 234 on the other in
/// the same seconds, and a layer's shares took 3–16 % longer on one thread than on the other (medians over a loop; which
/// thread varied from process to process, and between products of one layer) — so with equal shares the faster thread
/// waits for the slower one at the end of every region.
/// <para>
/// Each run times every share on its own thread (two timestamps an item). Times are summed over <see cref="Window"/> runs
/// with the same cut (a run in which one thread ran two shares — it took over a late thread's item —, or one share took
/// over twice as long as another — a thread the OS held back —, is left out); then each weight moves half of the way
/// towards the weight that would have made the summed times equal (weight × mean time ÷ its time, for a time that grows
/// with the share), unless every share's summed time is within <see cref="DeadBand"/> of the mean, and stays within [1/<see cref="MaxSkew"/>,
/// <see cref="MaxSkew"/>]. The next runs' edges fall where the running weight reaches each share's part. Every row and
/// panel is computed alike in any share, so the cut changes no bit.
/// </para>
/// Kept by the job object (one per pool, so it follows whichever CPUs the pool's threads are on); not thread-safe: the
/// pool's one caller prepares and updates it around each run, the items only read the weights and write their own slots.
/// </summary>
internal sealed class ShareBalance
{
    /// <summary>Measurements set this to compare with equal shares (every job then cuts evenly and nothing is learnt).</summary>
    internal static bool Disabled;

    /// <summary>Largest weight against the mean (and smallest, its reciprocal) a share can get.</summary>
    internal const double MaxSkew = 1.25;

    /// <summary>Runs whose times are summed before the weights move.</summary>
    internal const int Window = 8;

    /// <summary>How far the weights move towards the window's equalising weights.</summary>
    internal const double Rate = 0.5;

    /// <summary>
    /// Smallest difference between a share's summed time and the mean (against the mean) that moves the weights: under it
    /// the cut stays, so noise does not shift it. 3 %, not 1 %: one step of a weighted cut is 2 rows, 3 % of a 64-row share,
    /// so a smaller difference cannot be cut finer anyway (in-process alternation, 2 threads, even minutes: 1 % 0.972–1.028,
    /// 3 % 0.981–1.006 against equal shares, within the ±2 % those runs vary by).
    /// </summary>
    internal const double DeadBand = 0.03;

    private double[] _weight = [];
    private double[] _cumulative = [];
    private long[] _ticks = [];
    private long[] _sum = [];
    private int[] _worker = [];
    private int _count, _runs;
    /// <summary>Whether this run's cut is weighted: fixed by <see cref="Prepare"/> (and <see cref="SetWeights"/>), so every item of a run sees the same cut.</summary>
    private bool _weighted;

    /// <summary>Sets up <paramref name="shares"/> shares for the next run (equal weights when the count changed); allocates only when it grows.</summary>
    public void Prepare(int shares)
    {
        if (_weight.Length < shares)
        {
            int n = Math.Max(shares, 2);
            _weight = new double[n]; _cumulative = new double[n + 1]; _ticks = new long[n]; _sum = new long[n]; _worker = new int[n];
            _count = 0;
        }
        if (shares != _count)
        {
            _count = shares;
            _runs = 0;
            for (int i = 0; i < shares; i++) { _weight[i] = 1.0; _sum[i] = 0; }
            Cumulate();
        }
        for (int i = 0; i < shares; i++) { _ticks[i] = 0; _worker[i] = -1; }
        _weighted = false;
        if (!Disabled) for (int i = 0; i < shares; i++) if (_weight[i] != 1.0) _weighted = true;
    }

    /// <summary>Back to equal weights (a slot taken over by products of another shape).</summary>
    public void Reset() => _count = 0;

    /// <summary>True when this run's cut is the equal one (every weight 1, or balancing off when the run was prepared).</summary>
    public bool Even => !_weighted;

    /// <summary>The part of the total before share <paramref name="share"/> (0 for the first, 1 past the last) in this run's cut.</summary>
    public double Before(int share) => _weighted ? _cumulative[share] : (double)share / _count;

    /// <summary>Records share <paramref name="share"/>'s run on thread <paramref name="worker"/>: <paramref name="ticks"/> Stopwatch ticks.</summary>
    public void Record(int share, int worker, long ticks)
    {
        _ticks[share] = Math.Max(ticks, 1);
        _worker[share] = worker;
    }

    /// <summary>After a run: adds its times to the window and, once the window is full, moves the weights (see the class remarks).</summary>
    public void Update()
    {
        if (Disabled || _count < 2) return;
        long least = long.MaxValue, most = 0;
        for (int i = 0; i < _count; i++)
        {
            if (_worker[i] < 0) return;
            for (int j = 0; j < i; j++) if (_worker[j] == _worker[i]) return;
            least = Math.Min(least, _ticks[i]);
            most = Math.Max(most, _ticks[i]);
        }
        if (most > 2 * least) return;
        for (int i = 0; i < _count; i++) _sum[i] += _ticks[i];
        if (++_runs < Window) return;
        _runs = 0;
        double mean = 0;
        for (int i = 0; i < _count; i++) mean += _sum[i];
        mean /= _count;
        bool move = false;
        for (int i = 0; i < _count; i++)
            if (Math.Abs(mean / _sum[i] - 1) >= DeadBand) move = true;
        if (move)
        {
            double total = 0;
            for (int i = 0; i < _count; i++)
            {
                double target = _weight[i] * mean / _sum[i];
                _weight[i] += Rate * (target - _weight[i]);
                total += _weight[i];
            }
            // scaled to average 1, then bounded (the cut divides by the sum, so it need not stay exactly the count)
            for (int i = 0; i < _count; i++) _weight[i] = Math.Clamp(_weight[i] * _count / total, 1 / MaxSkew, MaxSkew);
            Cumulate();
        }
        for (int i = 0; i < _count; i++) _sum[i] = 0;
    }

    private void Cumulate()
    {
        double sum = 0, total = 0;
        for (int i = 0; i < _count; i++) total += _weight[i];
        for (int i = 0; i < _count; i++) { _cumulative[i] = sum / total; sum += _weight[i]; }
        _cumulative[_count] = 1.0;
    }

    /// <summary>Current weight of share <paramref name="share"/> (tests).</summary>
    internal double Weight(int share) => _weight[share];

    /// <summary>Sets the weights (tests: a skewed cut without waiting for the timings); they are scaled to average 1.</summary>
    internal void SetWeights(ReadOnlySpan<double> weights)
    {
        Prepare(weights.Length);
        double total = 0;
        foreach (double w in weights) total += w;
        for (int i = 0; i < _count; i++) _weight[i] = weights[i] * _count / total;
        Cumulate();
        _weighted = true;
    }
}
