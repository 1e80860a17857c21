using FastAttn.Composition;
using FastAttn.IO;
using FastAttn.Kernels;
using FastAttn.Layers;

namespace FastAttn.Cli;

/// <summary>The model commands: run a safetensors encoder on a .npy input, and describe a model file.</summary>
public static class ModelCommands
{
    /// <summary>Options of <c>fastattn run</c>.</summary>
    public sealed record RunOptions(string Model, string Input, string Output, int Heads, bool NormFirst = false, string Activation = "relu",
        float Eps = 1e-5f, string Prefix = "", int Threads = 1, bool Causal = false, string? Lengths = null, string? KeyValid = null);

    private static Activation ParseActivation(string a) => a.ToLowerInvariant() switch
    {
        "relu" => Kernels.Activation.Relu,
        "gelu" => Kernels.Activation.Gelu,
        _ => throw new ArgumentException($"--activation must be relu or gelu; it is '{a}'."),
    };

    private static int[] ParseList(string? s, string option)
    {
        if (string.IsNullOrWhiteSpace(s)) return [];
        try { return s.Split(',', StringSplitOptions.TrimEntries).Select(int.Parse).ToArray(); }
        catch (FormatException) { throw new ArgumentException($"{option} must be comma-separated integers, e.g. 5,9,3; it is '{s}'."); }
    }

    /// <summary>Loads the model, runs the input through it and writes the output; returns the exit code.</summary>
    public static int Run(RunOptions o, TextWriter err)
    {
        try
        {
            var (shape, x) = Npy.Read(o.Input);
            using var file = SafeTensorsFile.Open(o.Model);
            using var model = TorchModels.LoadTransformerEncoder(file, new TorchEncoderOptions
            {
                Heads = o.Heads, NormFirst = o.NormFirst, Activation = ParseActivation(o.Activation), Eps = o.Eps, Prefix = o.Prefix, Causal = o.Causal,
            });
            if (shape.Length != 2 || shape[1] != model.InputWidth)
                throw new InvalidDataException($"npy file '{o.Input}': shape ({string.Join(", ", shape)}); expected (tokens, {model.InputWidth}).");
            int tokens = (int)shape[0];
            if (tokens < 1) throw new InvalidDataException($"npy file '{o.Input}' has no tokens.");
            int[] lengths = ParseList(o.Lengths, "--lengths"), valid = ParseList(o.KeyValid, "--key-valid");
            using var session = model.CreateSession(tokens, o.Threads);
            var y = new float[tokens * model.OutputWidth];
            session.Run(x, y, lengths, valid);
            Npy.Write(o.Output, y, tokens, model.OutputWidth);
            return 0;
        }
        catch (Exception e) when (e is InvalidDataException or ArgumentException or FileNotFoundException or IOException)
        {
            err.WriteLine($"fastattn run: {e.Message}");
            return 2;
        }
    }

    /// <summary>Prints the CPU features and, given a model file, its tensors and the layers FastAttn builds from it.</summary>
    public static int Info(string? model, int heads, string prefix, TextWriter outw, TextWriter err)
    {
        outw.WriteLine($"CPU: {Isa.Describe()}");
        if (model == null) return 0;
        try
        {
            using var file = SafeTensorsFile.Open(model);
            outw.WriteLine($"{model}: {file.Tensors.Count} tensors, {file.Tensors.Sum(t => t.Elements):N0} parameters");
            foreach (var kv in file.Metadata) outw.WriteLine($"  metadata {kv.Key} = {kv.Value}");
            foreach (var t in file.Tensors) outw.WriteLine($"  {t.Name,-48} {t.DType,-5} [{string.Join(", ", t.Shape)}]");
            if (heads > 0)
            {
                using var stack = TorchModels.LoadTransformerEncoder(file, new TorchEncoderOptions { Heads = heads, Prefix = prefix });
                outw.WriteLine($"encoder: {stack.Blocks.Count} blocks, width {stack.InputWidth}");
                foreach (var b in stack.Blocks)
                    outw.WriteLine(b is EncoderBlock e
                        ? $"  EncoderBlock d={e.Attention.DModel} heads={e.Attention.Heads} headDim={e.Attention.HeadDim} ff={e.FeedForward.OutputWidth}"
                        : $"  {b.GetType().Name} width {b.InputWidth}");
            }
            return 0;
        }
        catch (Exception e) when (e is InvalidDataException or ArgumentException or FileNotFoundException or IOException)
        {
            err.WriteLine($"fastattn info: {e.Message}");
            return 2;
        }
    }
}
