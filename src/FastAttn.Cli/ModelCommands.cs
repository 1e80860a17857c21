using System.Globalization;
using FastAttn.Composition;
using FastAttn.IO;
using FastAttn.Kernels;
using FastAttn.Layers;
using FastAttn.Tagging;

namespace FastAttn.Cli;

/// <summary>The model commands: run a safetensors encoder on a .npy input, and describe a model file.</summary>
public static class ModelCommands
{
    /// <summary>Options of <c>fastattn run</c>; a null architecture field was not given on the command line.</summary>
    public sealed record RunOptions(string Model, string Input, string Output, int? Heads = null, bool? NormFirst = null, string? Activation = null,
        float? Eps = null, string? Prefix = null, int Threads = 1, bool? Causal = null, string? Lengths = null, string? KeyValid = null, string? Precision = null);

    private static Activation ParseActivation(string a) => a.ToLowerInvariant() switch
    {
        "relu" => Kernels.Activation.Relu,
        "gelu" => Kernels.Activation.Gelu,
        _ => throw new CliInputException($"--activation must be relu or gelu; it is '{a}'."),
    };

    private static int[] ParseList(string? s, string option)
    {
        if (string.IsNullOrWhiteSpace(s)) return [];
        var parts = s.Split(',', StringSplitOptions.TrimEntries);
        var r = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out r[i]))
                throw new CliInputException($"{option} must be comma-separated non-negative integers below 2^31, e.g. 5,9,3; '{Clip(parts[i])}' is not.");
        return r;
    }

    /// <summary>
    /// The architecture the file states (its <c>fastattn.encoder</c> metadata, or a tagger's <c>fastattn.tagger</c>), and
    /// where that came from; null when the file says nothing.
    /// </summary>
    public static (TorchEncoderOptions Options, string Source)? ArchitectureOf(SafeTensorsFile file)
    {
        if (EncoderMetadata.Read(file) is { } o) return (o, $"the file's '{EncoderMetadata.Key}' metadata");
        if (file.Metadata.ContainsKey("fastattn.tagger"))
        {
            var cfg = PosTagModel.ReadConfig(file);
            if (cfg.Kind == "attention")
                return (new TorchEncoderOptions { Heads = cfg.Heads, Eps = cfg.Eps, Prefix = "encoder.", DistanceSlopes = cfg.DistanceSlopes }, "the tagger's 'fastattn.tagger' metadata");
        }
        return null;
    }

    /// <summary>
    /// Merges the command line with what the file states: a flag that contradicts the file is an error; without a
    /// statement in the file, --heads is required.
    /// </summary>
    public static TorchEncoderOptions Resolve(SafeTensorsFile file, int? heads, bool? normFirst, string? activation, float? eps, string? prefix, bool? causal)
    {
        var act = activation == null ? (Activation?)null : ParseActivation(activation);
        if (ArchitectureOf(file) is not { } arch)
        {
            if (heads == null) throw new CliInputException($"'{file.Path}' does not say how many attention heads it has (no '{EncoderMetadata.Key}' metadata); pass --heads.");
            return new TorchEncoderOptions
            {
                Heads = heads.Value, NormFirst = normFirst ?? false, Activation = act ?? Kernels.Activation.Relu, Eps = eps ?? 1e-5f,
                Prefix = prefix ?? "", Causal = causal ?? false,
            };
        }
        var (o, source) = arch;
        void Check<T>(string flag, T? given, T stated) where T : struct
        {
            if (given is { } g && !g.Equals(stated)) throw new CliInputException($"{flag} {Show(g)} contradicts {source}, which says {Show(stated)}; leave the flag out.");
        }
        Check("--heads", heads, o.Heads);
        Check("--norm-first", normFirst, o.NormFirst);
        Check("--activation", act, o.Activation);
        Check("--eps", eps, o.Eps);
        Check("--causal", causal, o.Causal);
        if (prefix != null && Norm(prefix) != Norm(o.Prefix)) throw new CliInputException($"--prefix '{prefix}' contradicts {source}, which says '{o.Prefix}'; leave the flag out.");
        return o;
    }

    private static string Norm(string p) => p.Length == 0 || p.EndsWith('.') ? p : p + ".";
    private static string Show(object v) => v switch { float f => f.ToString("R", CultureInfo.InvariantCulture), bool b => b ? "true" : "false", Activation a => a.ToString().ToLowerInvariant(), _ => v.ToString() ?? "" };

    /// <summary>Loads the model, runs the input through it and writes the output (atomically); returns the exit code.</summary>
    public static int Run(RunOptions o)
    {
        int[] lengths = ParseList(o.Lengths, "--lengths"), valid = ParseList(o.KeyValid, "--key-valid");
        if (o.Threads < 1 || o.Threads > Environment.ProcessorCount) throw new CliInputException($"--threads must be between 1 and {Environment.ProcessorCount}; it is {o.Threads}.");
        var precision = CliInputException.ParsePrecision(o.Precision);
        using var file = SafeTensorsFile.Open(o.Model);
        var options = Resolve(file, o.Heads, o.NormFirst, o.Activation, o.Eps, o.Prefix, o.Causal) with { Precision = precision };
        using var model = TorchModels.LoadTransformerEncoder(file, options);
        var (shape, x) = Npy.Read(o.Input);
        if (shape.Length != 2 || shape[1] != model.InputWidth)
            throw new InvalidDataException($"npy file '{o.Input}': shape ({string.Join(", ", shape)}); expected (tokens, {model.InputWidth}).");
        if (shape[0] < 1) throw new InvalidDataException($"npy file '{o.Input}' has no tokens.");
        int tokens = (int)shape[0];
        using var session = model.CreateSession(tokens, o.Threads);
        var y = new float[(long)tokens * model.OutputWidth];
        session.Run(x, y, lengths, valid);
        Npy.Write(o.Output, y, tokens, model.OutputWidth);
        return 0;
    }

    /// <summary>Prints the CPU features and, given a model file, its tensors and the layers FastAttn builds from it.</summary>
    public static int Info(string? model, int? heads, string? prefix, TextWriter outw)
    {
        outw.WriteLine($"CPU: {Isa.Describe()}");
        if (model == null) return 0;
        using var file = SafeTensorsFile.Open(model);
        outw.WriteLine($"{model}: {file.Tensors.Count} tensors, {file.Tensors.Sum(t => t.Elements):N0} parameters");
        foreach (var kv in file.Metadata) outw.WriteLine($"  metadata {kv.Key} = {Clip(kv.Value, 100)}");
        foreach (var t in file.Tensors) outw.WriteLine($"  {t.Name,-48} {t.DType,-5} [{string.Join(", ", t.Shape)}]");
        var arch = ArchitectureOf(file);
        if (heads != null || arch != null)
        {
            var options = Resolve(file, heads, null, null, null, prefix, null);
            using var stack = TorchModels.LoadTransformerEncoder(file, options);
            outw.WriteLine($"encoder ({(arch is { } a ? "architecture from " + a.Source : "heads from --heads")}): {stack.Blocks.Count} blocks, width {stack.InputWidth}");
            foreach (var b in stack.Blocks)
                outw.WriteLine(b is EncoderBlock e
                    ? $"  EncoderBlock d={e.Attention.DModel} heads={e.Attention.Heads} headDim={e.Attention.HeadDim} ff={e.FeedForward.HiddenWidth} {(e.NormFirst ? "pre-norm" : "post-norm")}"
                    : $"  {b.GetType().Name} width {b.InputWidth}");
        }
        return 0;
    }

    private static string Clip(string s, int max = 40) => s.Length <= max ? s : $"{s[..max]}… ({s.Length:N0} characters)";
}
