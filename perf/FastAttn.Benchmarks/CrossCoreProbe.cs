using System.Diagnostics;
using System.Runtime.InteropServices;
using FastAttn.Threading;

namespace FastAttn.Benchmarks;

/// <summary>
/// How far apart the machine's first two CPUs are now: the round trip of one cache line between two threads, each held on
/// one of the two CPUs for the probe (Linux; elsewhere NaN). A virtual machine's CPUs are the host's to place, and the
/// host here moves them: within one process the round trip read ~100–190 ns for minutes (most likely two cores sharing a
/// cache) and ~400–600 ns for minutes (most likely cores on different dies), and a 2-thread call whose threads hand rows
/// to each other pays for the lines it reads from the other core — (96, 3 × 32, 192) at 128 tokens: 80–93 µs on 2 threads
/// in the near phases, 100–140 µs in the far ones, against ~138 µs on one thread in both.
/// </summary>
internal static class CrossCoreProbe
{
    /// <summary>Round trips per measurement.</summary>
    private const int Trips = 20_000;

    /// <summary>A round trip above this is read as CPUs on different dies (the two phases above lie on either side of it).</summary>
    public const double FarNs = 300;

    [StructLayout(LayoutKind.Explicit, Size = 128)]
    private struct Line { [FieldOffset(64)] public int Value; }

    private static Line _line;

    /// <summary>
    /// The median of three measurements of the round trip (ns), once this process's threads are quiet; NaN when two CPUs
    /// cannot be told apart here (fewer than two allowed, not Linux, or the library's CPU placement switched off — the
    /// probe sets masks through it).
    /// </summary>
    public static double RoundTripNs()
    {
        Sweep.WaitQuiet(); // no peer's pool spinning on one of the two CPUs
        ulong[]? saved = CpuPlacement.AllowedOfThisThread();
        if (saved == null) return double.NaN;
        var cpus = new List<int>();
        for (int i = 0; i < saved.Length * 64 && cpus.Count < 2; i++)
            if ((saved[i / 64] >> (i % 64) & 1) != 0) cpus.Add(i);
        if (cpus.Count < 2) return double.NaN;
        try
        {
            if (!Pin(cpus[0], saved.Length)) return double.NaN;
            var runs = new double[3];
            for (int r = 0; r < runs.Length; r++) runs[r] = Measure(cpus[1], saved.Length);
            Array.Sort(runs);
            return runs[1];
        }
        finally
        {
            CpuPlacement.SetOnThisThread(saved);
        }
    }

    private static bool Pin(int cpu, int words)
    {
        var m = new ulong[words];
        m[cpu / 64] = 1UL << (cpu % 64);
        return CpuPlacement.SetOnThisThread(m);
    }

    /// <summary>One measurement: this thread writes odd values, a thread on <paramref name="otherCpu"/> answers with the next even one.</summary>
    private static double Measure(int otherCpu, int words)
    {
        Volatile.Write(ref _line.Value, 0);
        bool pinned = false;
        var partner = new Thread(() =>
        {
            pinned = Pin(otherCpu, words);
            Volatile.Write(ref _line.Value, -1); // ready
            var limit = Stopwatch.StartNew();
            for (int i = 0; i < Trips; i++)
            {
                while (Volatile.Read(ref _line.Value) != 2 * i + 1)
                    if (limit.ElapsedMilliseconds > 2000) return;
                Volatile.Write(ref _line.Value, 2 * i + 2);
            }
        }) { IsBackground = true };
        partner.Start();
        var wait = Stopwatch.StartNew();
        while (Volatile.Read(ref _line.Value) != -1)
            if (wait.ElapsedMilliseconds > 2000) return double.NaN;
        long t0 = Stopwatch.GetTimestamp();
        for (int i = 0; i < Trips; i++)
        {
            Volatile.Write(ref _line.Value, 2 * i + 1);
            while (Volatile.Read(ref _line.Value) != 2 * i + 2)
                if (Stopwatch.GetElapsedTime(t0).TotalMilliseconds > 2000) { partner.Join(); return double.NaN; }
        }
        double ns = Stopwatch.GetElapsedTime(t0).TotalNanoseconds / Trips;
        partner.Join();
        return pinned ? ns : double.NaN;
    }
}
