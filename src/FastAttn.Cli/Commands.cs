using System.CommandLine;

namespace FastAttn.Cli;

/// <summary>The command tree of <c>fastattn</c>.</summary>
internal static class Commands
{
    public static RootCommand Build(TextWriter output, TextWriter error, Func<Stream> stdin)
    {
        var root = new RootCommand("FastAttn: allocation-free CPU self-attention and transformer encoders.");

        var seconds = new Option<double>("--seconds") { Description = "Total measuring time, in seconds.", DefaultValueFactory = _ => 20.0 };
        var bench = new Command("bench", "Quick (about 20 s), dependency-free FastAttn benchmark: µs, GFLOP/s and percent of the measured FMA peak.") { seconds };
        bench.SetAction(r => CliApp.Guard("bench", error, () =>
        {
            double s = r.GetValue(seconds);
            if (!(s > 0) || s > 3600) throw new CliInputException($"--seconds must be between 0 and 3600; it is {s}.");
            return QuickBench.Run(s, output);
        }));
        root.Subcommands.Add(bench);

        var infoModel = new Option<string?>("--model") { Description = "A safetensors file to describe." };
        var infoHeads = new Option<int?>("--heads") { Description = "With --model: build the encoder with this many heads (when the file does not say) and list its blocks." };
        var infoPrefix = new Option<string?>("--prefix") { Description = "Key prefix of the encoder in the file." };
        var info = new Command("info", "Print the CPU features in use and, with --model, the model's tensors and layers.") { infoModel, infoHeads, infoPrefix };
        info.SetAction(r => CliApp.Guard("info", error, () =>
            ModelCommands.Info(r.GetValue(infoModel), r.GetValue(infoHeads), r.GetValue(infoPrefix), output)));
        root.Subcommands.Add(info);

        var model = new Option<string>("--model") { Description = "safetensors file of an nn.TransformerEncoder / nn.TransformerEncoderLayer state_dict.", Required = true };
        var heads = new Option<int?>("--heads") { Description = "Attention heads (nhead); required unless the file says (its __metadata__)." };
        var normFirst = new Option<bool>("--norm-first") { Description = "Pre-norm layers (norm_first=True)." };
        var activation = new Option<string?>("--activation") { Description = "relu or gelu (default relu)." };
        var eps = new Option<float?>("--eps") { Description = "LayerNorm epsilon (default 1e-5)." };
        var prefix = new Option<string?>("--prefix") { Description = "Key prefix of the encoder in the file." };
        var threads = new Option<int>("--threads") { Description = "Threads (1 to the processor count).", DefaultValueFactory = _ => 1 };
        var causal = new Option<bool>("--causal") { Description = "Causal self-attention." };
        var lengths = new Option<string?>("--lengths") { Description = "Packed batch: sequence lengths, e.g. 5,9,3." };
        var keyValid = new Option<string?>("--key-valid") { Description = "Key padding: valid tokens per sequence, e.g. 4,9,2." };
        var input = new Option<string>("--input") { Description = "float32 .npy [tokens, dModel], C order.", Required = true };
        var outputFile = new Option<string>("--output") { Description = "Where to write the float32 .npy output.", Required = true };
        var run = new Command("run", "Run a PyTorch-trained encoder (safetensors) on a .npy input.")
            { model, heads, normFirst, activation, eps, prefix, threads, causal, lengths, keyValid, input, outputFile };
        run.SetAction(r => CliApp.Guard("run", error, () => ModelCommands.Run(new ModelCommands.RunOptions(
            r.GetValue(model)!, r.GetValue(input)!, r.GetValue(outputFile)!, r.GetValue(heads),
            Given(r, normFirst) ? r.GetValue(normFirst) : null, r.GetValue(activation), r.GetValue(eps), r.GetValue(prefix),
            r.GetValue(threads), Given(r, causal) ? r.GetValue(causal) : null, r.GetValue(lengths), r.GetValue(keyValid)))));
        root.Subcommands.Add(run);

        var modelsDir = new Option<string?>("--models") { Description = "Folder holding fc.safetensors and attention.safetensors (default: the bundled models)." };
        var tagText = new Argument<string[]>("text") { Description = "Text to tag (one or more sentences; quotes optional).", Arity = ArgumentArity.ZeroOrMore };
        var tagFile = new Option<string?>("--file") { Description = "Tag a UTF-8 file instead, one sentence per line; '-' reads standard input." };
        var tagModel = new Option<string>("--model") { Description = "attention, fc, or a path to a tagger .safetensors file.", DefaultValueFactory = _ => "attention" };
        var tag = new Command("tag", "Part-of-speech tag English text (UD tokenization, 17 UPOS tags) with the bundled self-attention tagger.") { tagText, tagFile, tagModel, modelsDir };
        tag.SetAction(r => CliApp.Guard("tag", error, () =>
        {
            var words = r.GetValue(tagText) ?? [];
            return TagCommands.Tag(words.Length == 0 ? null : string.Join(' ', words), r.GetValue(tagFile), r.GetValue(tagModel)!, r.GetValue(modelsDir), output, stdin);
        }));
        root.Subcommands.Add(tag);

        var conllu = new Option<string>("--conllu") { Description = "A CoNLL-U file (e.g. en_ewt-ud-test.conllu).", Required = true };
        var eval = new Command("eval", "UPOS accuracy of the FC-only and the self-attention tagger on a CoNLL-U file.") { conllu, modelsDir };
        eval.SetAction(r => CliApp.Guard("eval", error, () => TagCommands.Eval(r.GetValue(conllu)!, r.GetValue(modelsDir), output)));
        root.Subcommands.Add(eval);

        var demo = new Command("demo", "The tutorial's story: FC-only vs self-attention POS tagging on ambiguous sentences, accuracy, latency.") { modelsDir };
        demo.SetAction(r => CliApp.Guard("demo", error, () => TagCommands.Demo(r.GetValue(modelsDir), output)));
        root.Subcommands.Add(demo);
        return root;
    }

    /// <summary>True when the option was written on the command line (not its default).</summary>
    private static bool Given<T>(ParseResult r, Option<T> o) => r.GetResult(o) is { Implicit: false };
}
