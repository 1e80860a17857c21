using FastAttn.Composition;
using FastAttn.IO;
using FastAttn.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Parity.Tests;

/// <summary>Bare nn.MultiheadAttention, nn.Linear and nn.LayerNorm modules, saved with a prefix, loaded by name.</summary>
public sealed class ModuleParityTests(Xunit.Abstractions.ITestOutputHelper output) : IDisposable
{
    static ModuleParityTests() { torch.set_num_threads(1); torch.set_grad_enabled(false); }

    private readonly List<string> _dirs = [];

    /// <summary>Removes the test's files (xUnit disposes each test's instance after the test; open files are disposed by then).</summary>
    public void Dispose()
    {
        foreach (string d in _dirs)
            try { Directory.Delete(d, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    private string Save(torch.nn.Module m, string prefix)
    {
        string dir = Directory.CreateTempSubdirectory("fastattn-mod-").FullName;
        _dirs.Add(dir);
        string path = Path.Combine(dir, "m.safetensors");
        SafeTensorsWriter.Write(path, m.state_dict().Select(kv =>
            new SafeTensorsWriter.Entry(prefix + kv.Key, kv.Value.contiguous().data<float>().ToArray(), kv.Value.shape)));
        return path;
    }

    private static double Rel(float[] a, float[] r)
    {
        double w = 0, m = 0;
        for (int i = 0; i < r.Length; i++) { w = Math.Max(w, Math.Abs(a[i] - r[i])); m = Math.Max(m, Math.Abs(r[i])); }
        return w / m;
    }

    [Theory]
    [InlineData(64, 4, 0, 0, 9, 13)]       // packed in_proj_weight, cross lengths
    [InlineData(48, 3, 20, 20, 7, 11)]     // kdim = vdim ≠ embed_dim: q/k/v_proj_weight (libtorch's C++ MHA needs key and value of one shape)
    public void MultiheadAttention_MatchesLibtorch(int e, int heads, int kdim, int vdim, int tq, int tk)
    {
        torch.manual_seed(5);
        using var mha = torch.nn.MultiheadAttention(e, heads, kdim: kdim == 0 ? null : kdim, vdim: vdim == 0 ? null : vdim);
        mha.eval();
        string path = Save(mha, "model.attn.");
        using var file = SafeTensorsFile.Open(path);
        using var ours = TorchModels.LoadMultiheadAttention(file, heads, "model.attn");
        int kw = kdim == 0 ? e : kdim, vw = vdim == 0 ? e : vdim;
        var rnd = new Random(3);
        float[] R(int n) => Enumerable.Range(0, n).Select(_ => (float)(rnd.NextDouble() * 2 - 1)).ToArray();
        float[] q = R(tq * e), k = R(tk * kw), v = R(tk * vw), y = new float[tq * e];
        ours.ForwardCross(q, tq, k, v, tk, y, new float[ours.CrossScratchSize(tq, tk)]);
        using var tq_ = torch.tensor(q, [tq, 1, e]);
        using var tk_ = torch.tensor(k, [tk, 1, kw]);
        using var tv_ = torch.tensor(v, [tk, 1, vw]);
        var (ty, tw) = mha.call(tq_, tk_, tv_, null, false, null);
        using var _ = ty; tw?.Dispose();
        double rel = Rel(y, ty.data<float>().ToArray());
        output.WriteLine($"MultiheadAttention e={e} heads={heads} kdim={kw} vdim={vw}: {rel:E2}");
        Assert.True(rel <= 1e-5, $"{rel:E2}");
    }

    [Fact]
    public void LinearAndLayerNorm_MatchLibtorch()
    {
        torch.manual_seed(6);
        using var lin = torch.nn.Linear(37, 19);
        using var ln = torch.nn.LayerNorm(19);
        using (torch.no_grad()) { ln.weight!.add_(torch.randn(19) * 0.2); ln.bias!.add_(torch.randn(19) * 0.2); }
        using var file1 = SafeTensorsFile.Open(Save(lin, "head."));
        using var file2 = SafeTensorsFile.Open(Save(ln, ""));
        using var ourLin = TorchModels.LoadLinear(file1, "head");
        var ourLn = TorchModels.LoadLayerNorm(file2);
        float[] x = Enumerable.Range(0, 5 * 37).Select(i => MathF.Cos(i * 0.3f)).ToArray(), y = new float[5 * 19], z = new float[5 * 19];
        ourLin.Forward(x, 5, y, new float[ourLin.ScratchSize(5)]);
        ourLn.Forward(y, 5, z);
        using var tx = torch.tensor(x, [5, 37]);
        using var ty = lin.call(tx);
        using var tz = ln.call(ty);
        double r1 = Rel(y, ty.data<float>().ToArray()), r2 = Rel(z, tz.data<float>().ToArray());
        output.WriteLine($"Linear {r1:E2}, LayerNorm {r2:E2}");
        Assert.True(r1 <= 1e-5 && r2 <= 1e-5);
    }
}
