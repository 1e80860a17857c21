using System.Runtime.InteropServices;

namespace FastAttn.Threading;

/// <summary>
/// Keeps a pool's worker thread off the CPU its caller runs on (Linux only; elsewhere nothing is done). On a small
/// virtual machine the scheduler can put a worker on its waker's CPU and keep it there — a woken thread goes to its
/// previous CPU or the waker's, and idle-CPU search is skipped while the cache domain is busy — so both threads of a
/// 2-thread call share one CPU and the call runs at one-thread speed for whole stretches. A worker that finds itself on
/// its caller's CPU narrows its own affinity to the CPUs it is allowed — those of its start, or the mask someone else set
/// on it since — minus that one; the kernel moves it at once. Only the worker's own mask is touched (never the caller's
/// or another thread's), it always keeps every other allowed CPU, a mask set from outside is never widened, and nothing
/// is done when fewer than two CPUs are allowed. Turned off with the AppContext switch
/// <c>FastAttn.Threading.KeepWorkersOffCallerCpu</c> = false.
/// </summary>
internal static unsafe partial class CpuPlacement
{
    /// <summary>Words of a cpu_set_t (1,024 CPUs, glibc's size).</summary>
    private const int Words = 16;

    public static readonly bool Enabled =
        OperatingSystem.IsLinux() && (!AppContext.TryGetSwitch("FastAttn.Threading.KeepWorkersOffCallerCpu", out bool on) || on);

    [LibraryImport("libc", EntryPoint = "sched_getaffinity", SetLastError = true)]
    private static partial int SchedGetAffinity(int pid, nuint size, ulong* mask);

    [LibraryImport("libc", EntryPoint = "sched_setaffinity", SetLastError = true)]
    private static partial int SchedSetAffinity(int pid, nuint size, ulong* mask);

    [LibraryImport("libc", EntryPoint = "sched_getcpu")]
    [SuppressGCTransition]
    private static partial int SchedGetCpu();

    private static bool _noGetCpu = !OperatingSystem.IsLinux();

    /// <summary>
    /// The CPU the calling thread runs on now (glibc's sched_getcpu, a vDSO call). <see cref="Thread.GetCurrentProcessorId"/>
    /// caches its answer per thread for a number of calls, so right after a thread was woken or moved it can still name
    /// the old CPU; it is the fallback where sched_getcpu is missing.
    /// </summary>
    public static int CurrentCpu()
    {
        if (!_noGetCpu)
        {
            try
            {
                int c = SchedGetCpu();
                if (c >= 0) return c;
            }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
            _noGetCpu = true;
        }
        return Thread.GetCurrentProcessorId();
    }

    /// <summary>The calling thread's allowed CPUs, or null when unknown or fewer than two (then nothing is ever moved).</summary>
    public static ulong[]? AllowedOfThisThread()
    {
        if (!Enabled) return null;
        var mask = new ulong[Words];
        try
        {
            fixed (ulong* m = mask)
                if (SchedGetAffinity(0, Words * sizeof(ulong), m) != 0) return null;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return null; }
        int n = 0;
        foreach (ulong x in mask) n += System.Numerics.BitOperations.PopCount(x);
        return n >= 2 ? mask : null;
    }

    /// <summary>Sets the calling thread's affinity mask as given (tests use it to change a mask "from outside").</summary>
    internal static bool SetOnThisThread(ulong[] mask)
    {
        fixed (ulong* m = mask) return mask.Length == Words && SchedSetAffinity(0, Words * sizeof(ulong), m) == 0;
    }

    /// <summary>
    /// Narrows the calling thread's affinity to <paramref name="allowed"/> without <paramref name="cpu"/>; false when that
    /// leaves nothing or a call fails (the thread keeps its mask). <paramref name="lastSet"/> is the mask this thread set
    /// last (or its starting mask): when the thread's mask is no longer that — someone else changed it, e.g. with
    /// <c>taskset</c> — the current mask becomes the new <paramref name="allowed"/>, so a mask set from outside is never widened.
    /// </summary>
    public static bool AvoidOnThisThread(ulong[] allowed, ulong[] lastSet, int cpu)
    {
        if ((uint)cpu >= Words * 64) return false;
        ulong* cur = stackalloc ulong[Words], m = stackalloc ulong[Words];
        if (SchedGetAffinity(0, Words * sizeof(ulong), cur) != 0) return false;
        bool changed = false;
        for (int i = 0; i < Words; i++) changed |= cur[i] != lastSet[i];
        if (changed)
            for (int i = 0; i < Words; i++) allowed[i] = cur[i];
        bool any = false;
        for (int i = 0; i < Words; i++)
        {
            m[i] = allowed[i];
            if (i == cpu >> 6) m[i] &= ~(1UL << (cpu & 63));
            any |= m[i] != 0;
        }
        if (!any || SchedSetAffinity(0, Words * sizeof(ulong), m) != 0) return false;
        for (int i = 0; i < Words; i++) lastSet[i] = m[i];
        return true;
    }
}
