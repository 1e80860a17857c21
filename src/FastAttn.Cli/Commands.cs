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
        var precision = new Option<string?>("--precision") { Description = "f32 (default), int8 (int8 weights and activations, int32 accumulation) or bf16 (bfloat16 weights) for the linear layers; attention stays FP32." };
        var run = new Command("run", "Run a PyTorch-trained encoder (safetensors) on a .npy input.")
            { model, heads, normFirst, activation, eps, prefix, threads, causal, lengths, keyValid, input, outputFile, precision };
        run.SetAction(r => CliApp.Guard("run", error, () => ModelCommands.Run(new ModelCommands.RunOptions(
            r.GetValue(model)!, r.GetValue(input)!, r.GetValue(outputFile)!, r.GetValue(heads),
            Given(r, normFirst) ? r.GetValue(normFirst) : null, r.GetValue(activation), r.GetValue(eps), r.GetValue(prefix),
            r.GetValue(threads), Given(r, causal) ? r.GetValue(causal) : null, r.GetValue(lengths), r.GetValue(keyValid), r.GetValue(precision)))));
        root.Subcommands.Add(run);

        var modelsDir = new Option<string?>("--models") { Description = "Folder holding fc.safetensors and attention.safetensors (default: the bundled models)." };
        var tagText = new Argument<string[]>("text") { Description = "Text to tag (one or more sentences; quotes optional).", Arity = ArgumentArity.ZeroOrMore };
        var tagFile = new Option<string?>("--file") { Description = "Tag a UTF-8 file instead, one sentence per line; '-' reads standard input." };
        var tagModel = new Option<string>("--model") { Description = "attention, fc, or a path to a tagger .safetensors file.", DefaultValueFactory = _ => "attention" };
        var tag = new Command("tag", "Part-of-speech tag English text (UD tokenization, 17 UPOS tags) with the bundled self-attention tagger.") { tagText, tagFile, tagModel, modelsDir, precision };
        tag.SetAction(r => CliApp.Guard("tag", error, () =>
        {
            var words = r.GetValue(tagText) ?? [];
            return TagCommands.Tag(words.Length == 0 ? null : string.Join(' ', words), r.GetValue(tagFile), r.GetValue(tagModel)!, r.GetValue(modelsDir), output, stdin, r.GetValue(precision));
        }));
        root.Subcommands.Add(tag);

        var conllu = new Option<string>("--conllu") { Description = "A CoNLL-U file (e.g. en_ewt-ud-test.conllu).", Required = true };
        var eval = new Command("eval", "UPOS accuracy of the FC-only and the self-attention tagger on a CoNLL-U file.") { conllu, modelsDir, precision };
        eval.SetAction(r => CliApp.Guard("eval", error, () => TagCommands.Eval(r.GetValue(conllu)!, r.GetValue(modelsDir), output, r.GetValue(precision))));
        root.Subcommands.Add(eval);

        var eModel = new Option<string>("--model") { Description = "A BERT-family model: .safetensors (config.json beside it), a folder, or .onnx.", Required = true };
        var eVocab = new Option<string?>("--vocab") { Description = "The WordPiece vocabulary (default: vocab.txt beside the model)." };
        var ePooling = new Option<string>("--pooling") { Description = "auto (what a sentence-transformers model folder states, else mean), mean, cls, pooler, max, mean-sqrt-len, weighted-mean or last.", DefaultValueFactory = _ => "auto" };
        var eHeads = new Option<int?>("--heads") { Description = "Attention heads, when neither config.json nor the ONNX graph states them." };
        var eThreads = new Option<int>("--threads") { Description = "Threads (1 to the processor count).", DefaultValueFactory = _ => 1 };
        var eMax = new Option<int>("--max-tokens") { Description = "Longest text in word pieces (default: the folder's max_seq_length, else the model's positions, 512); longer texts are truncated." };
        var eNormalize = new Option<bool>("--normalize") { Description = "Scale every vector to unit length (also the default when the model folder's pipeline normalises)." };
        var eText = new Argument<string[]>("text") { Description = "Text to embed (quotes optional).", Arity = ArgumentArity.ZeroOrMore };
        var eFile = new Option<string?>("--file") { Description = "Embed each line of a UTF-8 file instead; '-' reads standard input." };
        var eOutput = new Option<string?>("--output") { Description = "Write the vectors as float32 .npy [texts, dim] instead of printing them." };
        var eDims = new Option<int>("--dimensions") { Description = "Keep the first N values of every vector (Matryoshka truncation; 0 = all); with normalisation the cut vector is scaled to unit length." };
        var ePrompt = new Option<string?>("--prompt") { Description = "A prompt of the model folder (config_sentence_transformers.json), by name, before every text — for search, before the query. Without --prompt and --document-prompt the folder's default prompt (if any) is used; with either, a side not named gets none." };
        var sDocPrompt = new Option<string?>("--document-prompt") { Description = "search: a prompt of the model folder, by name, before every corpus line (see --prompt)." };
        var eAdapter = new Option<string?>("--adapter") { Description = "A LoRA adapter of the model to merge in (jina-embeddings-v3: retrieval.query, retrieval.passage, separation, classification, text-matching); its task instruction is put before every text, as the model's encode(task=...) does." };
        var embed = new Command("embed", "Sentence embeddings with a BERT-family model (e.g. all-MiniLM-L6-v2): one vector per text, in input order.")
            { eModel, eVocab, ePooling, eHeads, eThreads, eMax, eNormalize, eText, eFile, eOutput, precision, eAdapter, eDims, ePrompt };
        EmbedCommands.ModelOptions ModelOf(ParseResult r) => new(r.GetValue(eModel)!, r.GetValue(eVocab), r.GetValue(ePooling)!, r.GetValue(eHeads), r.GetValue(eThreads), r.GetValue(eMax), r.GetValue(precision))
            { Dimensions = r.GetValue(eDims), Prompt = r.GetValue(ePrompt) };
        embed.SetAction(r => CliApp.Guard("embed", error, () =>
        {
            var words = r.GetValue(eText) ?? [];
            return EmbedCommands.Embed(ModelOf(r) with { Adapter = r.GetValue(eAdapter) }, words.Length == 0 ? null : string.Join(' ', words), r.GetValue(eFile), r.GetValue(eNormalize), r.GetValue(eOutput), output, stdin);
        }));
        root.Subcommands.Add(embed);

        var sQuery = new Argument<string[]>("query") { Description = "What to look for (quotes optional).", Arity = ArgumentArity.OneOrMore };
        var sCorpus = new Option<string>("--corpus") { Description = "A UTF-8 file, one document per line ('-' = standard input).", Required = true };
        var sTop = new Option<int>("--top") { Description = "How many lines to show.", DefaultValueFactory = _ => 5 };
        var search = new Command("search", "Semantic search: the lines of a corpus most similar to a query, with cosine scores.")
            { eModel, eVocab, ePooling, eHeads, eThreads, eMax, sCorpus, sTop, sQuery, precision, eDims, ePrompt, sDocPrompt };
        search.SetAction(r => CliApp.Guard("search", error, () =>
            EmbedCommands.Search(ModelOf(r) with { DocumentPrompt = r.GetValue(sDocPrompt) }, string.Join(' ', r.GetValue(sQuery)!), r.GetValue(sCorpus)!, r.GetValue(sTop), output, stdin)));
        root.Subcommands.Add(search);

        var rank = new Command("rank", "Rerank with a cross-encoder (a BERT sequence classifier): the corpus lines by the model's score for (query, line), highest first.")
            { eModel, eVocab, eThreads, eMax, sCorpus, sTop, sQuery, precision };
        rank.SetAction(r => CliApp.Guard("rank", error, () =>
            EmbedCommands.Rank(ModelOf(r), string.Join(' ', r.GetValue(sQuery)!), r.GetValue(sCorpus)!, r.GetValue(sTop), output, stdin)));
        root.Subcommands.Add(rank);

        var demo = new Command("demo", "The tutorial's story: FC-only vs self-attention POS tagging on ambiguous sentences, accuracy, latency.") { modelsDir };
        demo.SetAction(r => CliApp.Guard("demo", error, () => TagCommands.Demo(r.GetValue(modelsDir), output)));
        root.Subcommands.Add(demo);
        return root;
    }

    /// <summary>True when the option was written on the command line (not its default).</summary>
    private static bool Given<T>(ParseResult r, Option<T> o) => r.GetResult(o) is { Implicit: false };
}
