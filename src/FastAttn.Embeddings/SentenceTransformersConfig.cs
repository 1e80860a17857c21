using System.Text.Json;

namespace FastAttn.Embeddings;

/// <summary>
/// What a sentence-transformers model folder says about turning token states into a sentence vector: its
/// <c>modules.json</c> (the pipeline: Transformer → Pooling → optional Normalize), the Pooling module's
/// <c>config.json</c> (which pooling) and <c>sentence_bert_config.json</c> (<c>max_seq_length</c>). all-MiniLM-L6-v2 says
/// mean pooling, normalised, 256 word pieces; bge, e5-style and arctic-embed models say CLS pooling. Without these files
/// a folder says nothing, and <see cref="Read"/> returns null.
/// </summary>
public sealed record SentenceTransformersConfig
{
    /// <summary>The pooling the Pooling module names (one mode; several concatenated are refused when read).</summary>
    public Pooling Pooling { get; init; } = Pooling.Mean;
    /// <summary>True when the pipeline ends in a Normalize module (unit-length vectors).</summary>
    public bool Normalize { get; init; }
    /// <summary><c>max_seq_length</c>: the longest text in word pieces, [CLS] and [SEP] included; null when not stated.</summary>
    public int? MaxSeqLength { get; init; }
    /// <summary>The Pooling module's <c>word_embedding_dimension</c> (must equal the model's hidden size); null when not stated.</summary>
    public int? Dimension { get; init; }
    /// <summary>The Transformer module's folder relative to the model folder ("" for the folder itself, as most models have it).</summary>
    public string TransformerPath { get; init; } = "";
    /// <summary>The Dense modules after pooling, in order (none for most models; LaBSE and distiluse have one).</summary>
    public IReadOnlyList<DenseModule> Dense { get; init; } = [];
    /// <summary>The prompts <c>config_sentence_transformers.json</c> names (e.g. "query" → "search_query: "); empty when none.</summary>
    public IReadOnlyDictionary<string, string> Prompts { get; init; } = System.Collections.ObjectModel.ReadOnlyDictionary<string, string>.Empty;
    /// <summary>The prompt sentence-transformers puts before every text unless told otherwise (<c>default_prompt_name</c>), or null.</summary>
    public string? DefaultPromptName { get; init; }

    /// <summary>Configuration files larger than this are refused (they are a few hundred bytes).</summary>
    private const long MaxFileBytes = 1 << 20;

    /// <summary>
    /// Reads the sentence-transformers files of <paramref name="folder"/>: <c>modules.json</c> when present (else a
    /// lone <c>1_Pooling/config.json</c>) and <c>sentence_bert_config.json</c>. Null when the folder has none of them.
    /// </summary>
    /// <exception cref="InvalidDataException">A file is not valid JSON or not of the expected form; a module path leaves the
    /// folder; the pipeline has a module FastAttn does not run (Dense, LayerNorm, …) or no Pooling module; the pooling
    /// mode is not mean or CLS alone; max_seq_length is not an integer ≥ 3.</exception>
    /// <exception cref="IOException">A file cannot be read.</exception>
    public static SentenceTransformersConfig? Read(string folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        return ReadFiles(relative =>
        {
            string path = Path.Combine(folder, relative);
            if (!File.Exists(path)) return null;
            return FastAttn.IO.BoundedFile.ReadAllBytes(path, MaxFileBytes, "a sentence-transformers configuration file");
        }, folder);
    }

    /// <summary>
    /// As <see cref="Read(string)"/>, with the files' bytes from <paramref name="file"/> (a path relative to the model
    /// folder, '/'-separated → the bytes, or null when there is no such file); <paramref name="folder"/> names them in messages.
    /// </summary>
    internal static SentenceTransformersConfig? ReadFiles(Func<string, byte[]?> file, string folder)
    {
        // System.Text.Json throws InvalidOperationException when a string read escapes half a surrogate pair ("\ud800")
        try { return ReadFilesUnchecked(file, folder); }
        catch (InvalidOperationException e) { throw new InvalidDataException($"{folder}: a sentence-transformers file holds a string with a lone surrogate ({e.Message})", e); }
    }

    private static SentenceTransformersConfig? ReadFilesUnchecked(Func<string, byte[]?> file, string folder)
    {
        byte[]? modules = file("modules.json"), lonePooling = modules == null ? file("1_Pooling/config.json") : null, sbert = file("sentence_bert_config.json"),
            prompts = file("config_sentence_transformers.json");
        if (modules == null && lonePooling == null && sbert == null && prompts == null) return null;
        var c = new SentenceTransformersConfig();
        if (modules != null) c = ReadModules(file, folder, modules);
        else if (lonePooling != null) c = ReadPooling(Path.Combine(folder, "1_Pooling/config.json"), lonePooling, c);
        // sentence_bert_config.json sits beside modules.json, or in an older layout beside the transformer's files
        string sbertAt = "sentence_bert_config.json";
        if (sbert == null && c.TransformerPath.Length > 0) sbert = file(sbertAt = c.TransformerPath.TrimEnd('/', '\\') + "/sentence_bert_config.json");
        if (sbert != null) c = ReadSentenceBert(Path.Combine(folder, sbertAt), sbert, c);
        if (prompts != null) c = ReadPrompts(Path.Combine(folder, "config_sentence_transformers.json"), prompts, c);
        return c;
    }

    /// <summary>
    /// <paramref name="options"/> with this folder's settings where the options leave them open: pooling and
    /// normalisation where null, and <c>max_seq_length</c> (cut to <paramref name="model"/>'s positions) where
    /// <see cref="SentenceEmbedderOptions.MaxTokensPerText"/> is 0. Settings given win.
    /// </summary>
    /// <exception cref="InvalidDataException">The Pooling module's dimension is not the model's hidden size.</exception>
    public SentenceEmbedderOptions ApplyTo(SentenceEmbedderOptions options, BertModel model)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(model);
        if (Dimension is int d && d != model.Config.HiddenSize)
            throw new InvalidDataException($"the Pooling module's word_embedding_dimension {d} is not the model's hidden size {model.Config.HiddenSize}.");
        if (Dense.Count > 0 && Dense[0].InFeatures != model.Config.HiddenSize)
            throw new InvalidDataException($"the first Dense module takes {Dense[0].InFeatures} features; the model's hidden size is {model.Config.HiddenSize}.");
        return options with
        {
            Pooling = options.Pooling ?? Pooling,
            Normalize = options.Normalize ?? Normalize,
            Dense = options.Dense ?? Dense,
            MaxTokensPerText = options.MaxTokensPerText == 0 && MaxSeqLength is int m ? Math.Min(m, model.Embeddings.MaxPositions) : options.MaxTokensPerText,
            Prompt = options.Prompt ?? (DefaultPromptName is string n ? Prompts[n] : null),
        };
    }

    /// <summary><c>config_sentence_transformers.json</c>: its <c>prompts</c> (name → text) and <c>default_prompt_name</c>, which must name one of them.</summary>
    private static SentenceTransformersConfig ReadPrompts(string path, byte[] bytes, SentenceTransformersConfig c)
    {
        var root = Parse(path, bytes, out var doc);
        using (doc)
        {
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: not a JSON object.");
            var prompts = new Dictionary<string, string>(StringComparer.Ordinal);
            if (root.TryGetProperty("prompts", out var p) && p.ValueKind != JsonValueKind.Null)
            {
                if (p.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: prompts is not an object of names and texts.");
                foreach (var e in p.EnumerateObject())
                    prompts[e.Name] = e.Value.ValueKind == JsonValueKind.String ? e.Value.GetString()! : throw new InvalidDataException($"{path}: prompt '{e.Name}' is not a string.");
            }
            string? def = null;
            if (root.TryGetProperty("default_prompt_name", out var d) && d.ValueKind != JsonValueKind.Null)
            {
                def = d.ValueKind == JsonValueKind.String ? d.GetString()! : throw new InvalidDataException($"{path}: default_prompt_name is not a string.");
                if (!prompts.ContainsKey(def)) throw new InvalidDataException($"{path}: default_prompt_name '{def}' is not one of the prompts ({string.Join(", ", prompts.Keys)}).");
            }
            return c with { Prompts = prompts, DefaultPromptName = def };
        }
    }

    private static JsonElement Parse(string path, byte[] bytes, out JsonDocument doc)
    {
        if (bytes.Length > MaxFileBytes) throw new InvalidDataException($"{path}: {bytes.Length} bytes; a sentence-transformers configuration file is at most {MaxFileBytes} bytes.");
        // the JSON reader checks the structure, not the UTF-8 inside strings (that would throw later, when a string is read)
        if (!System.Text.Unicode.Utf8.IsValid(bytes)) throw new InvalidDataException($"{path}: not valid UTF-8.");
        try
        {
            doc = JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 8, AllowTrailingCommas = true });
            return doc.RootElement;
        }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not valid JSON: {e.Message}", e); }
    }

    private static SentenceTransformersConfig ReadModules(Func<string, byte[]?> file, string folder, byte[] bytes)
    {
        string path = Path.Combine(folder, "modules.json");
        var root = Parse(path, bytes, out var doc);
        using (doc)
        {
            if (root.ValueKind != JsonValueKind.Array) throw new InvalidDataException($"{path}: not a JSON array of modules.");
            var c = new SentenceTransformersConfig();
            bool transformer = false, pooling = false;
            int i = 0;
            foreach (var m in root.EnumerateArray())
            {
                string Str(string name) =>
                    m.ValueKind == JsonValueKind.Object && m.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()!
                    : throw new InvalidDataException($"{path}: module {i} has no '{name}' string.");
                string type = Str("type"), sub = m.TryGetProperty("path", out var p) && p.ValueKind == JsonValueKind.String ? p.GetString()! : "";
                CheckRelative(path, sub);
                // the class name after the last dot: sentence_transformers.models.Pooling, or a model's own subclass named alike
                string kind = type[(type.LastIndexOf('.') + 1)..];
                switch (kind)
                {
                    case "Transformer" when !transformer && !pooling:
                        transformer = true;
                        c = c with { TransformerPath = sub };
                        break;
                    case "Pooling" when transformer && !pooling:
                        pooling = true;
                        string config = (sub.Length == 0 ? "" : sub.TrimEnd('/', '\\') + "/") + "config.json";
                        c = ReadPooling(Path.Combine(folder, config), file(config)
                            ?? throw new InvalidDataException($"{Path.Combine(folder, config)}: the Pooling module's config.json is missing."), c);
                        break;
                    case "Dense" when pooling && !c.Normalize:
                        c = c with { Dense = [.. c.Dense, ReadDense(file, folder, sub, c.Dense.Count > 0 ? c.Dense[^1].OutFeatures : c.Dimension)] };
                        break;
                    case "Normalize" when pooling && !c.Normalize:
                        c = c with { Normalize = true };
                        break;
                    default:
                        throw new InvalidDataException($"{path}: module {i} ({type}) is not supported here: FastAttn runs Transformer → Pooling → Dense modules → optional Normalize.");
                }
                i++;
            }
            if (!pooling) throw new InvalidDataException($"{path}: the pipeline has no Pooling module, so it gives no sentence vector.");
            return c;
        }
    }

    /// <summary>
    /// A Dense module from its folder: <c>config.json</c> (<c>in_features</c>, <c>out_features</c>, <c>bias</c>,
    /// <c>activation_function</c>) and <c>model.safetensors</c> (<c>linear.weight</c> [out, in], <c>linear.bias</c>);
    /// <paramref name="width"/>, when known, is the width it must take.
    /// </summary>
    private static DenseModule ReadDense(Func<string, byte[]?> file, string folder, string sub, int? width)
    {
        string dir = sub.Length == 0 ? "" : sub.TrimEnd('/', '\\') + "/";
        string configPath = Path.Combine(folder, dir + "config.json");
        var root = Parse(configPath, file(dir + "config.json") ?? throw new InvalidDataException($"{configPath}: the Dense module's config.json is missing."), out var doc);
        int inF, outF;
        bool hasBias;
        Kernels.Activation act;
        using (doc)
        {
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{configPath}: not a JSON object.");
            int Int(string name) => root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int x) && x is > 0 and <= 1 << 16 ? x
                : throw new InvalidDataException($"{configPath}: '{name}' is not an integer from 1 to 65536.");
            inF = Int("in_features"); outF = Int("out_features");
            hasBias = !root.TryGetProperty("bias", out var b) || b.ValueKind switch
            {
                JsonValueKind.True => true, JsonValueKind.False => false,
                _ => throw new InvalidDataException($"{configPath}: 'bias' is not true or false."),
            };
            string actName = root.TryGetProperty("activation_function", out var a) && a.ValueKind == JsonValueKind.String ? a.GetString()! : "torch.nn.modules.activation.Tanh";
            act = DenseModule.ParseActivation(actName) ?? throw new InvalidDataException($"{configPath}: activation_function '{actName}' is not Identity, Tanh, ReLU or GELU.");
        }
        if (width is int w && w != inF) throw new InvalidDataException($"{configPath}: in_features {inF} does not take the previous module's {w} features.");
        string weightsPath = Path.Combine(folder, dir + "model.safetensors");
        var bytes = file(dir + "model.safetensors")
            ?? throw new InvalidDataException(file(dir + "pytorch_model.bin") != null
                ? $"{weightsPath}: the Dense module's weights are only in pytorch_model.bin (a pickle, which FastAttn does not read); save them as model.safetensors."
                : $"{weightsPath}: the Dense module's weights are missing.");
        using var st = IO.SafeTensorsFile.Load(bytes, weightsPath);
        float[] Tensor(string name, params long[] shape)
        {
            var t = st.Tensors.FirstOrDefault(x => x.Name == name) ?? throw new InvalidDataException($"{weightsPath}: no tensor '{name}'.");
            if (!t.Shape.SequenceEqual(shape)) throw new InvalidDataException($"{weightsPath}: '{name}' is [{string.Join(", ", t.Shape)}], expected [{string.Join(", ", shape)}].");
            return st.ReadFloat32(name);
        }
        var weight = Tensor("linear.weight", outF, inF);
        var bias = hasBias ? Tensor("linear.bias", outF) : null;
        foreach (var t in st.Tensors)
            if (t.Name is not ("linear.weight" or "linear.bias") || (t.Name == "linear.bias" && !hasBias))
                throw new InvalidDataException($"{weightsPath}: unexpected tensor '{t.Name}'.");
        return new DenseModule(weight, outF, inF, bias, act);
    }

    /// <summary>A module's path must name a folder inside the model folder.</summary>
    private static void CheckRelative(string path, string sub)
    {
        bool bad = Path.IsPathRooted(sub) || sub.IndexOfAny(Path.GetInvalidPathChars()) >= 0 || sub.Contains(':')
            || sub.Split('/', '\\').Any(s => s == "..");
        if (bad) throw new InvalidDataException($"{path}: module path '{sub}' leaves the model folder.");
    }

    private static SentenceTransformersConfig ReadPooling(string path, byte[] bytes, SentenceTransformersConfig c)
    {
        var root = Parse(path, bytes, out var doc);
        using (doc)
        {
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: not a JSON object.");
            var on = new List<string>();
            foreach (var mode in new[] { "cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken" })
            {
                if (!root.TryGetProperty("pooling_mode_" + mode, out var v)) continue;
                if (v.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw new InvalidDataException($"{path}: pooling_mode_{mode} is not true or false.");
                if (v.GetBoolean()) on.Add(mode);
            }
            Pooling pooling = on switch
            {
                ["cls_token"] => Pooling.Cls,
                ["mean_tokens"] => Pooling.Mean,
                ["max_tokens"] => Pooling.Max,
                ["mean_sqrt_len_tokens"] => Pooling.MeanSqrtLength,
                ["weightedmean_tokens"] => Pooling.WeightedMean,
                ["lasttoken"] => Pooling.LastToken,
                _ => throw new InvalidDataException($"{path}: pooling {(on.Count == 0 ? "none" : string.Join(" + ", on))} is not supported (one mode alone: cls_token, mean_tokens, max_tokens, mean_sqrt_len_tokens, weightedmean_tokens or lasttoken; several concatenated are not run)."),
            };
            // a prompt left out of the pooling (instruction models) is not run: FastAttn pools every token of the text
            if (root.TryGetProperty("include_prompt", out var ip) && ip.ValueKind == JsonValueKind.False)
                throw new InvalidDataException($"{path}: include_prompt is false (the prompt's tokens left out of the pooling), which FastAttn does not run.");
            int? dim = null;
            if (root.TryGetProperty("word_embedding_dimension", out var d))
                dim = d.ValueKind == JsonValueKind.Number && d.TryGetInt32(out int x) && x > 0 ? x
                    : throw new InvalidDataException($"{path}: word_embedding_dimension is not a positive integer.");
            return c with { Pooling = pooling, Dimension = dim };
        }
    }

    private static SentenceTransformersConfig ReadSentenceBert(string path, byte[] bytes, SentenceTransformersConfig c)
    {
        var root = Parse(path, bytes, out var doc);
        using (doc)
        {
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: not a JSON object.");
            if (!root.TryGetProperty("max_seq_length", out var v) || v.ValueKind == JsonValueKind.Null) return c;
            return v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int m) && m >= 3 ? c with { MaxSeqLength = m }
                : throw new InvalidDataException($"{path}: max_seq_length is not an integer of at least 3 ([CLS], one word piece, [SEP]).");
        }
    }
}
