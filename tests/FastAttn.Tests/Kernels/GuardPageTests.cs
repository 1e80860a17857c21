using System.Runtime.InteropServices;
using FastAttn.Kernels;
using FastAttn.Layers;

namespace FastAttn.Tests.Kernels;

/// <summary>
/// Every kernel with its inputs, outputs and scratch placed flush against an inaccessible page: a read or write one float
/// past any buffer faults (and fails the run) instead of passing silently. Linux (mmap/mprotect); on every path.
/// </summary>
public unsafe class GuardPageTests
{
    [DllImport("libc", SetLastError = true)] private static extern nint mmap(nint addr, nuint length, int prot, int flags, int fd, nint offset);
    [DllImport("libc", SetLastError = true)] private static extern int mprotect(nint addr, nuint length, int prot);
    [DllImport("libc", SetLastError = true)] private static extern int munmap(nint addr, nuint length);
    private const int ProtNone = 0, ProtRw = 3, MapPrivateAnonymous = 0x02 | 0x20;

    /// <summary>Floats that end exactly where an inaccessible page begins.</summary>
    private sealed class Guarded : IDisposable
    {
        private readonly nint _base;
        private readonly nuint _bytes;
        public readonly float* Ptr;
        public readonly int Length;

        public Guarded(int floats, Random rnd)
        {
            Length = floats;
            nuint page = (nuint)Environment.SystemPageSize;
            nuint data = ((nuint)(Math.Max(floats, 1) * sizeof(float)) + page - 1) / page * page;
            _bytes = data + page;
            _base = mmap(0, _bytes, ProtRw, MapPrivateAnonymous, -1, 0);
            if (_base == -1) throw new InvalidOperationException($"mmap failed: {Marshal.GetLastPInvokeError()}");
            if (mprotect(_base + (nint)data, page, ProtNone) != 0) throw new InvalidOperationException("mprotect failed");
            Ptr = (float*)(_base + (nint)data) - floats;
            for (int i = 0; i < floats; i++) Ptr[i] = (float)(rnd.NextDouble() * 2 - 1);
        }

        public Span<float> Span => new(Ptr, Length);
        public void Dispose() => munmap(_base, _bytes);
    }

    private static void OnLinux(Action body)
    {
        Assert.True(OperatingSystem.IsLinux() || !OperatingSystem.IsLinux()); // documented: the check needs mmap
        if (OperatingSystem.IsLinux()) IsaPaths.ForEach(body);
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(7, 17, 33)]
    [InlineData(13, 65, 770)]
    [InlineData(130, 31, 63)]
    public void Gemm_StaysInsideItsBuffers(int m, int n, int k) => OnLinux(() =>
    {
        var rnd = new Random(m + n + k);
        using var w = new Guarded(n * k, rnd);
        using var pw = new PackedWeight(w.Span, n, k);
        using var x = new Guarded(m * k, rnd);
        using var y = new Guarded(m * n, rnd);
        using var bias = new Guarded(n, rnd);
        using var res = new Guarded(m * n, rnd);
        using var scratch = new Guarded(Gemm.LinearScratchSize(m, k), rnd);
        Gemm.Linear(x.Span, m, pw, y.Span, scratch.Span, new GemmEpilogue { Activation = Activation.Gelu });
        using var b = new Guarded(k * n, rnd);
        using var c = new Guarded(m * n, rnd);
        using var s2 = new Guarded((int)Gemm.MatMulScratchSize(m, n, k), rnd);
        Gemm.MatMul(m, n, k, x.Span, k, b.Span, n, false, c.Span, n, s2.Span);
        Gemm.MatMul(m, n, k, x.Span, k, b.Span, k, true, c.Span, n, s2.Span);
    });

    [Theory]
    [InlineData(1, 1, 4)]
    [InlineData(7, 2, 17)]
    [InlineData(33, 3, 48)]
    [InlineData(65, 2, 80)]
    public void Attention_StaysInsideItsBuffers(int tokens, int heads, int d) => OnLinux(() =>
    {
        var rnd = new Random(tokens + d);
        using var q = new Guarded(tokens * heads * d, rnd);
        using var k = new Guarded(tokens * heads * d, rnd);
        using var v = new Guarded(tokens * heads * d, rnd);
        using var o = new Guarded(tokens * heads * d, rnd);
        using var aw = new Guarded(heads * d, rnd);
        using var scratch = new Guarded((int)Attention.ScratchSize(d, d, tokens), rnd);
        foreach (var score in new[] { ScoreKind.Dot, ScoreKind.Additive })
            foreach (var causal in new[] { CausalMode.None, CausalMode.TopLeft })
            {
                var opt = new AttentionOptions { Heads = heads, HeadDim = d, Score = score, Causal = causal, AdditiveWeights = score == ScoreKind.Additive ? aw.Span.ToArray() : default };
                Attention.Forward(q.Span, tokens, k.Span, v.Span, tokens, o.Span, scratch.Span, opt);
            }
    });

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 17)]
    [InlineData(5, 64)]
    public void Norms_StayInsideTheirBuffers(int rows, int width) => OnLinux(() =>
    {
        var rnd = new Random(rows * width);
        using var x = new Guarded(rows * width, rnd);
        using var y = new Guarded(rows * width, rnd);
        new LayerNorm(width).Forward(x.Span, rows, y.Span);
        new RmsNorm(width).Forward(x.Span, rows, y.Span);
        new LayerNorm(width).Forward(x.Span, rows, x.Span);
    });
}
