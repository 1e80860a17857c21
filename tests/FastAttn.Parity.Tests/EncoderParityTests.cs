using FastAttn.Cli;
using FastAttn.Composition;
using FastAttn.IO;
using FastAttn.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace FastAttn.Parity.Tests;

/// <summary>A pre-norm nn.TransformerEncoderLayer built from libtorch modules (TorchSharp's native layer is post-norm only).</summary>
internal sealed class PreNormLayer : torch.nn.Module<Tensor, Tensor?, Tensor?, Tensor>
{
    private readonly TorchSharp.Modules.MultiheadAttention self_attn;
    private readonly TorchSharp.Modules.Linear linear1, linear2;
    private readonly TorchSharp.Modules.LayerNorm norm1, norm2;
    private readonly bool _gelu;

    public PreNormLayer(int d, int heads, int ff, bool gelu) : base("PreNormLayer")
    {
        self_attn = torch.nn.MultiheadAttention(d, heads);
        linear1 = torch.nn.Linear(d, ff);
        linear2 = torch.nn.Linear(ff, d);
        norm1 = torch.nn.LayerNorm(d);
        norm2 = torch.nn.LayerNorm(d);
        _gelu = gelu;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor? attnMask, Tensor? keyPadding)
    {
        using var n1 = norm1.call(x);
        var (a, w) = self_attn.call(n1, n1, n1, keyPadding, false, attnMask);
        w?.Dispose();
        using var h = x + a;
        a.Dispose();
        using var n2 = norm2.call(h);
        using var f1 = linear1.call(n2);
        using var act = _gelu ? torch.nn.functional.gelu(f1) : torch.nn.functional.relu(f1);
        using var f2 = linear2.call(act);
        return h + f2;
    }
}

internal sealed class PreNormStack : torch.nn.Module<Tensor, Tensor?, Tensor?, Tensor>
{
    private readonly TorchSharp.Modules.ModuleList<PreNormLayer> layers;

    public PreNormStack(int n, int d, int heads, int ff, bool gelu) : base("PreNormStack")
    {
        layers = torch.nn.ModuleList(Enumerable.Range(0, n).Select(_ => new PreNormLayer(d, heads, ff, gelu)).ToArray());
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor? attnMask, Tensor? keyPadding)
    {
        Tensor cur = x.alias();
        foreach (var l in layers)
        {
            var next = l.call(cur, attnMask, keyPadding);
            cur.Dispose();
            cur = next;
        }
        return cur;
    }
}

public sealed record EncoderCase(int D, int Heads, int Ff, int Tokens, bool NormFirst, bool Gelu, bool KeyPadding, bool Causal, int Layers, int[]? Packed = null)
{
    public override string ToString() =>
        $"d={D} h={Heads} ff={Ff} T={(Packed == null ? Tokens.ToString() : string.Join("+", Packed))} {(NormFirst ? "pre" : "post")}-norm {(Gelu ? "gelu" : "relu")}"
        + $"{(KeyPadding ? " key-padding" : "")}{(Causal ? " causal" : "")} layers={Layers}";
}

public class EncoderParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    static EncoderParityTests() { torch.set_num_threads(1); torch.set_grad_enabled(false); }

    // Every value of every axis of the grid appears (dModel 64/256/384/768; heads 1/4/12; ffDim d and 4d; tokens
    // 1/7/128/300; post/pre-norm; ReLU/GELU; with and without key padding and causal masks; 1 and 6 layers; packed).
    public static TheoryData<EncoderCase> Grid() =>
    [
        new(64, 1, 64, 1, false, false, false, false, 1),
        new(64, 4, 256, 7, true, true, true, false, 1),
        new(256, 4, 1024, 128, false, true, false, true, 1),
        new(256, 1, 256, 300, true, false, true, true, 1),
        new(384, 12, 1536, 7, false, false, true, false, 6),
        new(384, 4, 384, 128, true, true, false, true, 1),
        new(768, 12, 3072, 128, false, false, false, false, 1),
        new(768, 4, 768, 1, true, false, false, false, 6),
        new(64, 4, 256, 300, false, true, false, false, 6),
        new(768, 12, 3072, 300, true, true, true, false, 1),
        new(256, 4, 1024, 0, false, false, false, false, 1, [5, 40, 17]),
        new(384, 12, 1536, 0, true, true, false, true, 6, [1, 7, 30]),
    ];

    /// <summary>Random libtorch modules → their state_dict (PyTorch names).</summary>
    private static (torch.nn.Module Module, Func<Tensor, Tensor?, Tensor?, Tensor> Forward, List<SafeTensorsWriter.Entry> State) Build(EncoderCase c)
    {
        torch.manual_seed(c.D * 31 + c.Layers * 7 + c.Tokens);
        torch.nn.Module m;
        Func<Tensor, Tensor?, Tensor?, Tensor> fwd;
        if (c.NormFirst)
        {
            if (c.Layers == 1) { var l = new PreNormLayer(c.D, c.Heads, c.Ff, c.Gelu); m = l; fwd = (x, a, k) => l.call(x, a, k); }
            else { var s = new PreNormStack(c.Layers, c.D, c.Heads, c.Ff, c.Gelu); m = s; fwd = (x, a, k) => s.call(x, a, k); }
        }
        else
        {
            var act = c.Gelu ? torch.nn.Activations.GELU : torch.nn.Activations.ReLU;
            var layer = torch.nn.TransformerEncoderLayer(c.D, c.Heads, c.Ff, 0.0, act);
            if (c.Layers == 1) { m = layer; fwd = (x, a, k) => layer.call(x, a, k); }
            else { var enc = torch.nn.TransformerEncoder(layer, c.Layers); m = enc; fwd = (x, a, k) => enc.call(x, a, k); }
        }
        m.eval();
        // make the norms' affine parameters non-trivial, as after training
        foreach (var (name, p) in m.named_parameters())
            if (name.Contains("norm")) using (torch.no_grad()) p.add_(torch.randn(p.shape) * 0.1);
        var state = m.state_dict().Select(kv => new SafeTensorsWriter.Entry(kv.Key, kv.Value.contiguous().data<float>().ToArray(), kv.Value.shape)).ToList();
        return (m, fwd, state);
    }

    [Theory]
    [MemberData(nameof(Grid))]
    public void Encoder_MatchesLibtorch(EncoderCase c)
    {
        var (module, forward, state) = Build(c);
        using var _ = module;
        string dir = Directory.CreateTempSubdirectory("fastattn-parity-").FullName;
        try
        {
            string path = Path.Combine(dir, "encoder.safetensors");
            SafeTensorsWriter.Write(path, state);
            using var file = SafeTensorsFile.Open(path);
            using var model = TorchModels.LoadTransformerEncoder(file, new TorchEncoderOptions
            {
                Heads = c.Heads, NormFirst = c.NormFirst, Activation = c.Gelu ? Activation.Gelu : Activation.Relu, Causal = c.Causal,
            });
            Assert.Equal(c.Layers, model.Blocks.Count);
            int[] lens = c.Packed ?? [c.Tokens];
            int total = lens.Sum();
            var rnd = new Random(c.D + total);
            float[] x = Enumerable.Range(0, total * c.D).Select(_ => (float)(rnd.NextDouble() * 2 - 1)).ToArray();
            int[] valid = lens.Select(l => c.KeyPadding ? Math.Max(1, l - l / 3) : l).ToArray();
            using var session = model.CreateSession(total);
            float[] y = new float[total * c.D];
            if (c.Packed != null || c.KeyPadding) session.Run(x, y, c.Packed ?? default, c.KeyPadding ? valid : default);
            else session.Run(x, y);

            double worst = 0, maxRef = 0;
            int t0 = 0;
            for (int s = 0; s < lens.Length; s++)
            {
                int len = lens[s];
                using var tx = torch.tensor(x.AsSpan(t0 * c.D, len * c.D).ToArray(), [len, 1, c.D]);
                using var causal = c.Causal ? torch.triu(torch.full(len, len, float.NegativeInfinity), 1) : null;
                using var pad = c.KeyPadding ? torch.arange(len).ge(valid[s]).reshape(1, len) : null;
                using var ty = forward(tx, causal, pad);
                float[] r = ty.data<float>().ToArray();
                // padded query rows are not compared (their outputs are meaningless)
                for (int i = 0; i < valid[s] * c.D; i++)
                {
                    worst = Math.Max(worst, Math.Abs(y[t0 * c.D + i] - r[i]));
                    maxRef = Math.Max(maxRef, Math.Abs(r[i]));
                }
                t0 += len;
            }
            double rel = worst / maxRef;
            output.WriteLine($"{c}: max|FastAttn − libtorch| / max|libtorch| = {rel:E2} ({rel / c.Layers:E2} per layer)");
            Assert.True(rel <= 1e-5 * c.Layers, $"{c}: relative error {rel:E2} exceeds 1e-5 per layer");
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void CliRun_ReadsSafetensorsAndNpy_WritesTheSameAnswer()
    {
        var c = new EncoderCase(64, 4, 128, 9, false, true, false, false, 2);
        var (module, forward, state) = Build(c);
        using var _ = module;
        string dir = Directory.CreateTempSubdirectory("fastattn-cli-").FullName;
        try
        {
            string model = Path.Combine(dir, "m.safetensors"), input = Path.Combine(dir, "x.npy"), outp = Path.Combine(dir, "y.npy");
            SafeTensorsWriter.Write(model, state.Select(e => e with { Name = "encoder." + e.Name }));
            float[] x = Enumerable.Range(0, 9 * 64).Select(i => MathF.Sin(i * 0.37f)).ToArray();
            Npy.Write(input, x, 9, 64);
            var err = new StringWriter();
            int code = CliApp.Run(["run", "--model", model, "--input", input, "--output", outp, "--heads", "4", "--activation", "gelu", "--prefix", "encoder", "--lengths", "4,5"], TextWriter.Null, err);
            Assert.True(code == 0, err.ToString());
            var (shape, y) = Npy.Read(outp);
            Assert.Equal(new long[] { 9, 64 }, shape);
            // each sequence of the packed input against libtorch alone
            int t0 = 0;
            foreach (int len in new[] { 4, 5 })
            {
                using var tx = torch.tensor(x.AsSpan(t0 * 64, len * 64).ToArray(), [len, 1, 64]);
                using var ty = forward(tx, null, null);
                float[] r = ty.data<float>().ToArray();
                for (int i = 0; i < r.Length; i++) Assert.True(Math.Abs(y[t0 * 64 + i] - r[i]) <= 1e-5 * 2 * 4, $"row {t0 + i / 64}: {y[t0 * 64 + i]} vs {r[i]}");
                t0 += len;
            }
            // errors are reported, not thrown
            err = new StringWriter();
            Assert.Equal(2, CliApp.Run(["run", "--model", model, "--input", input, "--output", outp, "--heads", "4", "--prefix", "nope"], TextWriter.Null, err));
            Assert.Contains("missing", err.ToString());
            err = new StringWriter();
            Assert.Equal(2, CliApp.Run(["run", "--model", model, "--input", input, "--output", outp, "--heads", "5", "--prefix", "encoder"], TextWriter.Null, err));
            Assert.Contains("does not divide", err.ToString());
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void MissingExtraAndMisshapedTensors_AreListed()
    {
        var c = new EncoderCase(32, 2, 64, 3, false, false, false, false, 2);
        var (module, _, state) = Build(c);
        using var __ = module;
        string dir = Directory.CreateTempSubdirectory("fastattn-map-").FullName;
        try
        {
            string path = Path.Combine(dir, "m.safetensors");
            var broken = state.Where(e => e.Name != "layers.1.linear2.weight").ToList();
            broken.Add(new SafeTensorsWriter.Entry("layers.0.surprise", [1f], [1]));
            int i = broken.FindIndex(e => e.Name == "layers.0.norm1.bias");
            broken[i] = broken[i] with { Data = new float[33], Shape = [33] };
            SafeTensorsWriter.Write(path, broken);
            using var file = SafeTensorsFile.Open(path);
            var ex = Assert.Throws<InvalidDataException>(() => TorchModels.LoadTransformerEncoder(file, new TorchEncoderOptions { Heads = 2 }));
            output.WriteLine(ex.Message);
            Assert.Contains("layers.1.linear2.weight", ex.Message);
            Assert.Contains("layers.0.norm1.bias is [33]", ex.Message);
        }
        finally { Directory.Delete(dir, true); }
    }
}
