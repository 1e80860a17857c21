using FastAttn.Composition;
using FastAttn.IO;
using FastAttn.Kernels;
using FastAttn.Layers;
using FastAttn.Onnx;

namespace FastAttn.Embeddings;

/// <summary>What sits on top of a BERT encoder in a task checkpoint.</summary>
public enum BertHead
{
    /// <summary>None: the encoder (and its pooler, when the checkpoint has one).</summary>
    None = 0,
    /// <summary><c>classifier</c> on the pooled output (BertForSequenceClassification).</summary>
    Sequence = 1,
    /// <summary><c>classifier</c> on every token (BertForTokenClassification); part of <see cref="BertModel.Encoder"/>.</summary>
    Token = 2,
}

/// <summary>Options for <see cref="BertModel.Load(string, BertLoadOptions?)"/> when the files do not say everything.</summary>
public sealed record BertLoadOptions
{
    /// <summary>Attention heads, when neither a <c>config.json</c> nor the ONNX graph states them (must agree when they do).</summary>
    public int? Heads { get; init; }
    /// <summary>A <c>config.json</c> to use instead of the one beside the model.</summary>
    public string? ConfigPath { get; init; }
    /// <summary>
    /// The precision of each linear layer (null = FP32), by Hugging Face name without a <c>bert.</c> prefix:
    /// <c>encoder.layer.N.attention.self</c> (query, key and value, one packed projection),
    /// <c>encoder.layer.N.attention.output.dense</c>, <c>encoder.layer.N.intermediate.dense</c>,
    /// <c>encoder.layer.N.output.dense</c>, <c>pooler.dense</c>, <c>classifier</c>, <c>embeddings.word_embeddings</c> (the word
    /// table: int8 rows with a per-row scale, or bf16); <c>encoder.layer.N</c> covers a whole layer. Position and token-type
    /// tables, LayerNorms and attention stay FP32.
    /// </summary>
    public PrecisionPlan? Precision { get; init; }
    /// <summary>
    /// The LoRA adapter to merge into the weights at load, by name (jina-embeddings-v3: "retrieval.query",
    /// "retrieval.passage", "separation", "classification", "text-matching"; see <see cref="BertConfig.Adapters"/>), as
    /// the model's own <c>encode(task=…)</c> applies it; null = the base weights (its <c>encode</c> without a task). The
    /// task's instruction prefix (<see cref="BertConfig.AdapterInstruction"/>) is part of the text the caller passes.
    /// </summary>
    public string? Adapter { get; init; }
}

/// <summary>
/// A BERT-family encoder (Hugging Face <c>BertModel</c>) on FastAttn's composer: <see cref="BertEmbeddings"/>, then
/// <see cref="BertConfig.NumHiddenLayers"/> post-norm <see cref="EncoderBlock"/>s (q/k/v packed into one projection,
/// exact-GELU feed-forward, LayerNorm ε from the config), the optional pooler (dense + tanh on each sequence's first
/// token) and an optional <c>classifier</c> head. Loaded from Hugging Face safetensors with <c>config.json</c>, or from an
/// ONNX export (weights matched through the graph; see <see cref="OnnxModelFile"/>). Immutable and shareable; run it with
/// an <see cref="EmbeddingSession"/> or a <see cref="SentenceEmbedder"/>.
/// </summary>
public sealed class BertModel : IDisposable
{
    /// <summary>The architecture.</summary>
    public BertConfig Config { get; }
    /// <summary>Embeddings and encoder layers (and a token-classification head): input <c>[tokens, 2]</c> (id, type) → <c>[tokens, hidden]</c>.</summary>
    public Stack Encoder { get; }
    /// <summary>The pooler (<c>pooler.dense</c>, tanh), or null when the checkpoint has none.</summary>
    public Linear? Pooler { get; }
    /// <summary>The sequence-classification head on the pooled output, or null.</summary>
    public Linear? Classifier { get; }
    /// <summary>The task head, if any.</summary>
    public BertHead Head { get; }
    /// <summary>Where the weights and the architecture came from (e.g. "model.onnx; heads from the graph's reshape constants").</summary>
    public string Source { get; }
    /// <summary>The embeddings block (the first block of <see cref="Encoder"/>).</summary>
    public BertEmbeddings Embeddings => (BertEmbeddings)Encoder.Blocks[0];
    /// <summary>Bytes of every weight as stored (embedding tables, packed linear layers, norms, pooler and classifier).</summary>
    public long WeightBytes => Embeddings.WeightBytes + Encoder.Blocks.OfType<EncoderBlock>().Sum(b => b.WeightBytes) + Encoder.Blocks.OfType<DebertaLayer>().Sum(b => b.WeightBytes)
        + Encoder.Blocks.OfType<GluEncoderLayer>().Sum(b => b.WeightBytes) + Encoder.Blocks.OfType<DecoderLayer>().Sum(b => b.WeightBytes) + Encoder.Blocks.OfType<MoeEncoderLayer>().Sum(b => b.WeightBytes) + Encoder.Blocks.OfType<NormBlock>().Sum(b => 8L * b.InputWidth)
        + Encoder.Blocks.OfType<LinearBlock>().Sum(b => b.Linear.WeightBytes) + (Pooler?.WeightBytes ?? 0) + (Classifier?.WeightBytes ?? 0);
    /// <summary>Width of the encoder's output (the hidden size, or the classes of a token head).</summary>
    public int OutputWidth => Encoder.OutputWidth;

    /// <summary>A LayerNorm after the pooler (ModernBERT's classification head: dense, activation, norm), or null.</summary>
    internal LayerNorm? PoolerNorm { get; }
    /// <summary>The pooler reads each sequence's mean token state instead of its first (ModernBERT's <c>classifier_pooling</c> "mean").</summary>
    internal bool PoolerMean { get; }

    private BertModel(BertConfig config, Stack encoder, Linear? pooler, Linear? classifier, BertHead head, string source, LayerNorm? poolerNorm = null, bool poolerMean = false)
    {
        Config = config; Encoder = encoder; Pooler = pooler; Classifier = classifier; Head = head; Source = source; PoolerNorm = poolerNorm; PoolerMean = poolerMean;
    }

    /// <summary>
    /// Loads a model from <paramref name="path"/>: a <c>.safetensors</c> file (with <c>config.json</c> beside it), a folder
    /// (<c>model.safetensors</c>, <c>model.onnx</c> or <c>onnx/model.onnx</c>, and <c>config.json</c>), or an <c>.onnx</c>
    /// file (heads from the graph, or from a <c>config.json</c> beside it).
    /// </summary>
    /// <exception cref="InvalidDataException">A file is malformed, tensors are missing, unexpected or mis-shaped (all listed), or the architecture cannot be determined (the message says what to pass).</exception>
    /// <exception cref="FileNotFoundException">The model file is not there.</exception>
    /// <exception cref="IOException">A file cannot be read.</exception>
    /// <exception cref="ArgumentException">The options contradict the files.</exception>
    public static BertModel Load(string path, BertLoadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        options ??= new BertLoadOptions();
        if (options.Heads is int h0 && h0 < 1) throw new ArgumentOutOfRangeException(nameof(options), h0, "Heads must be at least 1.");
        string file = path;
        string? configDir = null;
        if (Directory.Exists(path))
        {
            // Hugging Face's layouts: the weights beside config.json, or an ONNX export in onnx/ below it
            string st = System.IO.Path.Combine(path, "model.safetensors"), ox = System.IO.Path.Combine(path, "model.onnx"), sub = System.IO.Path.Combine(path, "onnx", "model.onnx");
            file = File.Exists(st) ? st : File.Exists(ox) ? ox : File.Exists(sub) ? sub
                : throw new FileNotFoundException($"folder '{path}' holds neither model.safetensors, model.onnx nor onnx/model.onnx.", st);
            configDir = path;
        }
        else if (!File.Exists(path)) throw new FileNotFoundException($"model file '{path}' not found.", path);
        string configPath = options.ConfigPath ?? System.IO.Path.Combine(configDir ?? ModelFolder(file), "config.json");
        BertConfig? config = File.Exists(configPath) ? BertConfig.FromJsonFile(configPath) : null;
        if (options.ConfigPath != null && config == null) throw new FileNotFoundException($"config '{options.ConfigPath}' not found.", options.ConfigPath);
        if (file.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase))
        {
            if (options.Adapter != null) throw new ArgumentException($"Adapter '{options.Adapter}': LoRA adapters are read from a PyTorch checkpoint (model.safetensors), not from an ONNX export.", nameof(options));
            return LoadOnnx(OnnxModelFile.Open(file), config, configPath, options.Heads, file, options.Precision);
        }
        using var safetensors = SafeTensorsFile.Open(file);
        var (c, s) = Resolve(safetensors, config, configPath, null, options.Heads, file);
        return Load(safetensors, c, s, options.Precision, options.Adapter);
    }

    /// <summary>
    /// The folder a model file's companions (config.json, the vocabulary, sentence-transformers files) are looked for in: its
    /// own, or — for a file in Hugging Face's <c>onnx/</c> subfolder (<c>onnx/model_O2.onnx</c>, …) with no config.json
    /// beside it — the repository folder above.
    /// </summary>
    internal static string ModelFolder(string file)
    {
        string dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(file))!;
        return System.IO.Path.GetFileName(dir) == "onnx" && !File.Exists(System.IO.Path.Combine(dir, "config.json")) && System.IO.Path.GetDirectoryName(dir) is { } up
            && File.Exists(System.IO.Path.Combine(up, "config.json")) ? up : dir;
    }

    /// <summary>A parsed ONNX graph as a model: the architecture from <paramref name="config"/>, else from the graph and <paramref name="heads"/>.</summary>
    internal static BertModel LoadOnnx(OnnxModelFile onnx, BertConfig? config, string configPath, int? heads, string file, PrecisionPlan? precision = null)
    {
        var graph = BertOnnxArchitecture.Read(onnx);
        var (cfg, source) = Resolve(onnx, config, configPath, graph, heads, file);
        return Load(onnx, cfg, source, precision);
    }

    /// <summary>
    /// The architecture: config.json when there is one (checked against the tensors and the graph); otherwise what the
    /// tensors and the ONNX graph say, with the heads from the graph or the caller.
    /// </summary>
    private static (BertConfig, string) Resolve(ITensorSource src, BertConfig? config, string configPath, BertOnnxArchitecture? graph, int? heads, string file)
    {
        string name = System.IO.Path.GetFileName(file);
        if (config == null && IsQwen3(src))
            throw new InvalidDataException($"'{file}' is a decoder checkpoint (Qwen2, Qwen3, Gemma 3): its head width, key/value heads and RoPE bases are only in its config.json; put it beside the model.");
        if (config == null && IsModernBert(src))
            throw new InvalidDataException($"'{file}' is a ModernBERT checkpoint: its attention settings (local_attention, layer_types, RoPE bases) are only in its config.json; put it beside the model.");
        if (config == null && IsNomic(src))
            throw new InvalidDataException($"'{file}' is a NomicBERT checkpoint: its rotary base and feed-forward kind are only in its config.json; put it beside the model.");
        if (config == null && IsJinaV3(src))
            throw new InvalidDataException($"'{file}' is a jina-embeddings-v3 checkpoint (mixer.Wqkv): its rotary base and LoRA adapters are only in its config.json; put it beside the model.");
        if (config == null && IsGte(src))
            throw new InvalidDataException($"'{file}' is a GTE checkpoint (the \"new\" architecture: mlp.up_gate_proj): its RoPE base and scaling are only in its config.json; put it beside the model.");
        if (config == null && IsJina(src))
            throw new InvalidDataException($"'{file}' is a JinaBERT checkpoint (mlp.gated_layers): its ALiBi attention and feed-forward kind are only in its config.json; put it beside the model.");
        if (DebertaTensors.Detect(src) && config == null)
            throw new InvalidDataException($"'{file}' is a DeBERTa-v2 checkpoint: its attention settings (pos_att_type, position_buckets, …) are only in its config.json; put it beside the model.");
        bool distil = DistilBertTensors.Detect(src), mpnet = !distil && MpnetTensors.Detect(src), electra = !distil && !mpnet && ElectraTensors.Detect(src);
        // RoBERTa: by its prefix, or (bare names, no config) by the graph's positions counted after a padding id
        bool roberta = !distil && !mpnet && !electra && (RobertaTensors.Detect(src) || (config == null ? graph?.PaddingIdx != null : config.IsRoberta));
        if (distil) src = new DistilBertTensors(src);
        if (mpnet) src = new MpnetTensors(src);
        if (electra) src = new ElectraTensors(src);
        if (roberta) src = new RobertaTensors(src);
        if (config != null)
        {
            if (heads is int h && h != config.NumAttentionHeads)
                throw new ArgumentException($"heads = {h} contradicts {configPath}, which says {config.NumAttentionHeads}; leave it out.");
            if (graph?.Heads is int gh && gh != config.NumAttentionHeads)
                throw new InvalidDataException($"{configPath} says {config.NumAttentionHeads} heads; the ONNX graph of '{file}' reshapes into {gh}.");
            return (config, $"{name} with {System.IO.Path.GetFileName(configPath)}");
        }
        string prefix = src.TryGetShape("bert.embeddings.word_embeddings.weight", out _) ? "bert." : "";
        long[] Shape(string n)
        {
            if (!src.TryGetShape(prefix + n, out var s))
                throw new InvalidDataException($"'{src.Name}' has no tensor '{prefix}{n}', so its architecture cannot be read from it; put its config.json beside it.");
            if (s.Length != 2 || s[0] is < 1 or > int.MaxValue || s[1] is < 1 or > int.MaxValue)
                throw new InvalidDataException($"tensor '{prefix}{n}' of '{src.Name}' has shape [{string.Join(", ", s)}], not [rows, columns].");
            return s;
        }
        var word = Shape("embeddings.word_embeddings.weight");
        var pos = Shape("embeddings.position_embeddings.weight");
        var type = Shape("embeddings.token_type_embeddings.weight");
        var inter = Shape("encoder.layer.0.intermediate.dense.weight");
        long hidden = electra ? Shape("encoder.layer.0.attention.self.query.weight")[0] : word[1];
        int layers = TorchModels.CountLayers(src, prefix, "encoder.layer", "attention.output.dense.bias");
        string headSource;
        int nHeads;
        if (graph?.Heads is null && heads is null && mpnet && src.TryGetShape(prefix + "encoder.relative_attention_bias.weight", out var rb) && rb is [_, > 0 and <= 1024])
        { nHeads = (int)rb[1]; headSource = "heads from the relative position bias table's columns"; }
        else if (graph?.Heads is int g) { nHeads = g; headSource = $"heads from the graph's {graph.HeadsEvidence}"; if (heads is int h2 && h2 != g) throw new ArgumentException($"heads = {h2} contradicts the ONNX graph, which reshapes into {g} heads."); }
        else if (heads is int h3) { nHeads = h3; headSource = "heads as given"; }
        else throw new InvalidDataException($"the number of attention heads of '{file}' cannot be determined: it is not in the file{(graph != null ? " (no reshape into heads found in the graph)" : "")} and there is no config.json beside it; put the model's config.json beside it or pass the heads (--heads N).");
        var cfg = new BertConfig
        {
            HiddenSize = (int)hidden, EmbeddingSize = electra ? (int)word[1] : 0, VocabSize = (int)word[0], MaxPositionEmbeddings = (int)pos[0], TypeVocabSize = (int)type[0],
            IntermediateSize = (int)inter[0], NumHiddenLayers = layers, NumAttentionHeads = nHeads,
            HiddenAct = graph?.Activation ?? Activation.Gelu, LayerNormEps = graph?.Eps ?? (mpnet || roberta ? 1e-5f : 1e-12f),
            ModelType = distil ? "distilbert" : mpnet ? "mpnet" : electra ? "electra" : roberta ? "roberta" : "bert",
            PaddingIdx = mpnet ? 1 : roberta ? graph?.PaddingIdx ?? 1 : -1,
            PoolerActivation = distil ? Activation.Relu : electra ? Activation.Gelu : Activation.Tanh,
            RelativeAttentionNumBuckets = mpnet ? (int)Shape("encoder.relative_attention_bias.weight")[0] : 0,
        };
        cfg.Validate(src.Name);
        string defaultEps = mpnet || roberta ? "1e-5" : "1e-12";
        string rest = graph == null ? $"GELU and ε {defaultEps} assumed ({(mpnet ? "MPNet" : roberta ? "RoBERTa" : "BERT")}'s)" : $"{(graph.Activation == null ? "GELU assumed" : "activation from the graph")}, {(graph.Eps == null ? $"ε {defaultEps} assumed" : "ε from the graph")}";
        return (cfg, $"{name}; {headSource}; {rest}");
    }

    /// <summary>
    /// Builds a model from named tensors (Hugging Face <c>BertModel</c> names, optionally under <c>bert.</c> with a root
    /// <c>classifier</c>) and an architecture. Pretraining heads (<c>cls.*</c>) and buffers (<c>position_ids</c>,
    /// <c>token_type_ids</c>) are ignored; any other tensor that is not used is reported.
    /// </summary>
    /// <exception cref="InvalidDataException">Tensors are missing, unexpected or mis-shaped (all listed in one message).</exception>
    public static BertModel Load(ITensorSource source, BertConfig config, string? description = null)
        => Load(source, config, description, null);

    /// <summary>As above, with each linear layer in the precision <paramref name="precision"/> gives it (see <see cref="BertLoadOptions.Precision"/>).</summary>
    /// <exception cref="InvalidDataException">Tensors are missing, unexpected or mis-shaped (all listed in one message).</exception>
    public static BertModel Load(ITensorSource source, BertConfig config, string? description, PrecisionPlan? precision)
        => Load(source, config, description, precision, null);

    /// <summary>As above, with a LoRA adapter merged into the weights (see <see cref="BertLoadOptions.Adapter"/>).</summary>
    internal static BertModel Load(ITensorSource source, BertConfig config, string? description, PrecisionPlan? precision, string? adapter)
    {
        var plan = precision ?? PrecisionPlan.F32;
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate(source.Name);
        if (adapter != null && !config.Adapters.Contains(adapter))
            throw new ArgumentException(config.Adapters.Count == 0 ? $"Adapter '{adapter}': this model has no LoRA adapters."
                : $"Adapter '{adapter}' is not one of the model's: {string.Join(", ", config.Adapters)}.", nameof(adapter));
        if (config.Qwen3 != null)
        {
            if (source is OnnxModelFile) throw new InvalidDataException($"'{source.Name}': {(config.Qwen3.Qwen2 ? "Qwen2" : "Qwen3")} is loaded from its PyTorch checkpoint (model.safetensors), not from an ONNX export.");
            return LoadQwen3(source, config, config.Qwen3, description, plan);
        }
        if (config.Gemma3 != null)
        {
            if (source is OnnxModelFile) throw new InvalidDataException($"'{source.Name}': Gemma 3 is loaded from its PyTorch checkpoint (model.safetensors), not from an ONNX export.");
            return LoadGemma3(source, config, config.Gemma3, description, plan);
        }
        if (IsQwen3(source))
            throw new InvalidDataException($"'{source.Name}': the tensors are a decoder's (layers.0.self_attn.q_proj) but the config says model_type '{config.ModelType}'.");
        if (config.JinaV3 != null)
        {
            if (source is OnnxModelFile) throw new InvalidDataException($"'{source.Name}': jina-embeddings-v3 is loaded from its PyTorch checkpoint (model.safetensors), not from an ONNX export.");
            return LoadJinaV3(source, config, config.JinaV3, adapter, description, plan);
        }
        if (IsJinaV3(source))
            throw new InvalidDataException($"'{source.Name}': the tensors are jina-embeddings-v3's (mixer.Wqkv) but the config says model_type '{config.ModelType}' without rotary positions.");
        if (config.Deberta != null && source is OnnxModelFile)
            throw new InvalidDataException($"'{source.Name}': DeBERTa is loaded from its PyTorch checkpoint (model.safetensors), not from an ONNX export.");
        if (config.ModernBert != null)
        {
            if (source is OnnxModelFile) throw new InvalidDataException($"'{source.Name}': ModernBERT is loaded from its PyTorch checkpoint (model.safetensors), not from an ONNX export.");
            return LoadModernBert(source, config, config.ModernBert, description, plan);
        }
        if (IsModernBert(source))
            throw new InvalidDataException($"'{source.Name}': the tensors are ModernBERT's but the config says model_type '{config.ModelType}'.");
        if (config.Nomic != null)
        {
            if (source is OnnxModelFile) throw new InvalidDataException($"'{source.Name}': NomicBERT is loaded from its PyTorch checkpoint (model.safetensors), not from an ONNX export.");
            return LoadNomic(source, config, config.Nomic, description, plan);
        }
        if (IsNomic(source))
            throw new InvalidDataException($"'{source.Name}': the tensors are NomicBERT's but the config says model_type '{config.ModelType}'.");
        if (config.Gte != null)
        {
            if (source is OnnxModelFile) throw new InvalidDataException($"'{source.Name}': GTE's \"new\" architecture is loaded from its PyTorch checkpoint (model.safetensors), not from an ONNX export.");
            return LoadGte(source, config, config.Gte, description, plan);
        }
        if (IsGte(source))
            throw new InvalidDataException($"'{source.Name}': the tensors are GTE's \"new\" architecture (mlp.up_gate_proj) but the config says model_type '{config.ModelType}'.");
        if (config.Jina != null && source is OnnxModelFile)
            throw new InvalidDataException($"'{source.Name}': JinaBERT is loaded from its PyTorch checkpoint (model.safetensors), not from an ONNX export.");
        if (config.Jina is not { Glu: not null } && IsJina(source))
            throw new InvalidDataException($"'{source.Name}': the tensors are JinaBERT's GLU layers (mlp.gated_layers) but the config says {(config.Jina == null ? "no ALiBi (position_embedding_type alibi)" : "feed_forward_type original")}.");
        // DistilBERT's and MPNet's names are read as BERT's (their layers are BERT's post-norm layers)
        if (source is not DistilBertTensors && DistilBertTensors.Detect(source)) source = new DistilBertTensors(source);
        if (source is not MpnetTensors && source is not DistilBertTensors && MpnetTensors.Detect(source)) source = new MpnetTensors(source);
        if (source is not RenamedBertTensors && (config.ModelType == "electra" || ElectraTensors.Detect(source))) source = new ElectraTensors(source);
        if (source is not RenamedBertTensors && (config.IsRoberta || RobertaTensors.Detect(source))) source = new RobertaTensors(source);
        if (source is not RenamedBertTensors && (config.Deberta != null || DebertaTensors.Detect(source))) source = new DebertaTensors(source);
        if ((config.Deberta != null) != source is DebertaTensors)
            throw new InvalidDataException($"'{source.Name}': the config says model_type '{config.ModelType}' but the tensors are {(source is DebertaTensors ? "DeBERTa's" : "not DeBERTa's")}.");

        if (config.IsRoberta != source is RobertaTensors)
            throw new InvalidDataException($"'{source.Name}': the config says model_type '{config.ModelType}' but the tensors are {(source is RobertaTensors ? "RoBERTa's" : "not RoBERTa's")}.");
        if ((config.ModelType == "electra") != source is ElectraTensors)
            throw new InvalidDataException($"'{source.Name}': the config says model_type '{config.ModelType}' but the tensors are {(source is ElectraTensors ? "ELECTRA's" : "not ELECTRA's")}.");
        if ((config.ModelType == "mpnet") != source is MpnetTensors)
            throw new InvalidDataException($"'{source.Name}': the config says model_type '{config.ModelType}' but the tensors are {(source is MpnetTensors ? "MPNet's" : "not MPNet's")}.");
        bool wrapped = source.TryGetShape("bert.embeddings.word_embeddings.weight", out _);
        return TensorReader.Load(source, "", "a BERT model", vb =>
        {
            foreach (var n in source.TensorNames)
                if (n.StartsWith("cls.", StringComparison.Ordinal)) vb.Ignore(n);
            var bert = wrapped ? vb.Pp("bert") : vb;
            int h = config.HiddenSize, ff = config.IntermediateSize, e = config.EmbeddingWidth;
            var emb = bert.Pp("embeddings");
            emb.Ignore("position_ids");
            emb.Ignore("token_type_ids");
            var word = emb.Pp("word_embeddings").Get("weight", config.VocabSize, e);
            // DeBERTa-v3 adds no absolute positions (a checkpoint may still carry the table: ignored), nor does JinaBERT (ALiBi)
            float[] pos;
            if (config.HasPositionTable) pos = emb.Pp("position_embeddings").Get("weight", config.MaxPositionEmbeddings, e);
            else { emb.Ignore("position_embeddings.weight"); pos = []; }
            var type = emb.Pp("token_type_embeddings").Get("weight", config.TypeVocabSize, e);
            var embNorm = Norm(emb.Pp("LayerNorm"), e, config.LayerNormEps);
            // ELECTRA's narrower embeddings, projected to the hidden width
            var proj = bert.Pp("embeddings_project");
            float[]? projW = e != h || proj.Has("weight") ? proj.Get("weight", h, e) : null, projB = projW != null ? proj.Maybe("bias", h) : null;
            // MPNet: one relative position bias for all layers, expanded from its buckets to every distance a sequence can have
            AttentionSettings? settings = null;
            if (config.ModelType == "mpnet")
            {
                var buckets = bert.Pp("encoder").Pp("relative_attention_bias").Get("weight", config.RelativeAttentionNumBuckets, config.NumAttentionHeads);
                if (!vb.Checking) settings = new AttentionSettings { RelativeBias = MpnetRelativeBias(buckets, config.NumAttentionHeads, config.PositionRows), RelativeBiasSpan = config.PositionRows };
            }
            // JinaBERT: ALiBi, the same slopes in every layer
            if (config.Jina != null) settings = new AttentionSettings { DistanceSlopes = JinaSettings.AlibiSlopes(config.NumAttentionHeads) };
            var layers = new Block?[config.NumHiddenLayers];
            if (config.Deberta is { } rel)
            {
                // the relative embeddings, layer-normalised once (norm_rel_ebd), shared by every layer
                var enc = bert.Pp("encoder");
                var relTable = enc.Pp("rel_embeddings").Get("weight", 2L * rel.Span, h);
                var relNorm = rel.NormRelEmbeddings ? Norm(enc.Pp("LayerNorm"), h, config.LayerNormEps) : null;
                if (!vb.Checking && relNorm != null) relNorm.Forward(relTable.ToArray(), 2 * rel.Span, relTable);
                for (int i = 0; i < layers.Length; i++) layers[i] = DebertaBlock(bert.Pp($"encoder.layer.{i}"), config, plan, $"encoder.layer.{i}.", rel, relTable, vb.Checking);
            }
            else if (config.Jina is { Glu: { } glu })
                for (int i = 0; i < layers.Length; i++) layers[i] = JinaGluLayer(bert.Pp($"encoder.layer.{i}"), config, glu, plan, $"encoder.layer.{i}.", settings!);
            else
                for (int i = 0; i < layers.Length; i++) layers[i] = Layer(bert.Pp($"encoder.layer.{i}"), config, plan, $"encoder.layer.{i}.", settings);
            var poolerVb = bert.Pp("pooler").Pp("dense");
            bool hasPooler = poolerVb.Has("weight");
            float[]? pw = hasPooler ? poolerVb.Get("weight", h, h) : null, pb = hasPooler ? poolerVb.Maybe("bias", h) : null;
            var (cw, cb) = ReadClassifier(vb, h);
            if (vb.Checking) return null;
            var blocks = new List<IBlock> { new BertEmbeddings(word, pos, type, embNorm!, plan.For("embeddings.word_embeddings"), config.PositionPadding,
                config.HasPositionTable ? 0 : config.MaxPositionEmbeddings) };
            if (projW != null) blocks.Add(new LinearBlock(new Linear(projW, h, e, projB, Activation.None, plan.For("embeddings_project"))));
            blocks.AddRange(layers!);
            var (pooler, classifier, head) = PoolerAndHead(blocks, pw, pb, config.PoolerActivation, cw, cb, h, plan);
            return new BertModel(config, new Stack([.. blocks]), pooler, classifier, head, description ?? source.Name);
        });
    }

    /// <summary>
    /// ModernBERT (Hugging Face's <c>ModernBertModel</c> names, optionally under <c>model.</c> with a root <c>head</c> and
    /// <c>classifier</c>): <c>embeddings.tok_embeddings</c> and <c>embeddings.norm</c>; per layer <c>attn_norm</c> (not in
    /// the first), <c>attn.Wqkv</c>, <c>attn.Wo</c>, <c>mlp_norm</c>, <c>mlp.Wi</c> (the GLU's input rows, then its gate
    /// rows), <c>mlp.Wo</c>; <c>final_norm</c>. The masked-LM head (<c>head</c>, <c>decoder</c>) is ignored when there is no
    /// classifier. Biases and norm biases as the config says.
    /// </summary>
    private static BertModel LoadModernBert(ITensorSource source, BertConfig config, ModernBertSettings mb, string? description, PrecisionPlan plan)
    {
        bool wrapped = source.TryGetShape("model.embeddings.tok_embeddings.weight", out _);
        return TensorReader.Load(source, "", "a ModernBERT model", vb =>
        {
            var m = wrapped ? vb.Pp("model") : vb;
            int h = config.HiddenSize, ff = config.IntermediateSize, heads = config.NumAttentionHeads, d = h / heads;
            float eps = config.LayerNormEps;
            LayerNorm? Ln(TensorReader r)
            {
                var g = r.Get("weight", h);
                var b = mb.NormBias ? r.Get("bias", h) : new float[h];
                return r.Checking ? null : new LayerNorm(h, g, b, eps);
            }
            var word = m.Pp("embeddings").Pp("tok_embeddings").Get("weight", config.VocabSize, h);
            var embNorm = Ln(m.Pp("embeddings").Pp("norm"));
            var layerParts = new List<(LayerNorm? An, float[] Qkv, float[]? QkvB, float[] O, float[]? OB, LayerNorm? Mn, float[] Wi, float[]? WiB, float[] Wo, float[]? WoB)>();
            for (int i = 0; i < config.NumHiddenLayers; i++)
            {
                var l = m.Pp($"layers.{i}");
                var an = i == 0 ? null : Ln(l.Pp("attn_norm"));
                var at = l.Pp("attn");
                layerParts.Add((an, at.Pp("Wqkv").Get("weight", 3L * h, h), mb.AttentionBias ? at.Pp("Wqkv").Get("bias", 3L * h) : null,
                    at.Pp("Wo").Get("weight", h, h), mb.AttentionBias ? at.Pp("Wo").Get("bias", h) : null,
                    Ln(l.Pp("mlp_norm")), l.Pp("mlp").Pp("Wi").Get("weight", 2L * ff, h), mb.MlpBias ? l.Pp("mlp").Pp("Wi").Get("bias", 2L * ff) : null,
                    l.Pp("mlp").Pp("Wo").Get("weight", h, ff), mb.MlpBias ? l.Pp("mlp").Pp("Wo").Get("bias", h) : null));
            }
            var finalNorm = Ln(m.Pp("final_norm"));
            // the classification head (root names): dense, activation, norm, then classifier; without a classifier the head is the masked-LM one
            bool hasClassifier = vb.Pp("classifier").Shape("weight") != null;
            var (cw, cb) = ReadClassifier(vb, h);
            float[]? hw = null, hb = null;
            LayerNorm? headNorm = null;
            if (hasClassifier)
            {
                var hd = vb.Pp("head");
                hw = hd.Pp("dense").Get("weight", h, h);
                hb = mb.ClassifierBias ? hd.Pp("dense").Get("bias", h) : null;
                headNorm = Ln(hd.Pp("norm"));
            }
            else
                foreach (var n in source.TensorNames)
                    if (n.StartsWith("head.", StringComparison.Ordinal) || n.StartsWith("decoder.", StringComparison.Ordinal)) vb.Ignore(n);
            if (vb.Checking) return null;

            var globalRope = new Rope(d, config.MaxPositionEmbeddings, mb.GlobalTheta, float32Angles: true);
            var localRope = new Rope(d, config.MaxPositionEmbeddings, mb.LocalTheta, float32Angles: true);
            var blocks = new List<IBlock> { new BertEmbeddings(word, default, new float[h], embNorm!, plan.For("embeddings.word_embeddings"), -1, config.MaxPositionEmbeddings) };
            for (int i = 0; i < layerParts.Count; i++)
            {
                var p = layerParts[i];
                string name = $"encoder.layer.{i}.";
                bool global = mb.GlobalLayers[i];
                var settings = new AttentionSettings { Window = global ? 0 : mb.Window };
                var attn = new MultiHeadAttention(h, heads, p.Qkv, p.QkvB ?? default, p.O, p.OB ?? default, settings, global ? globalRope : localRope,
                    plan.For(name + "attention.self"), plan.For(name + "attention.output.dense"));
                var wiIn = new Linear(p.Wi.AsSpan(0, ff * h), ff, h, p.WiB is null ? default : p.WiB.AsSpan(0, ff), config.HiddenAct, plan.For(name + "intermediate.dense"));
                var wiGate = new Linear(p.Wi.AsSpan(ff * h, ff * h), ff, h, p.WiB is null ? default : p.WiB.AsSpan(ff, ff), Activation.None, plan.For(name + "intermediate.dense"));
                var wo = new Linear(p.Wo, h, ff, p.WoB ?? default, Activation.None, plan.For(name + "output.dense"));
                blocks.Add(new GluEncoderLayer(p.An, attn, p.Mn!, wiIn, wiGate, wo, postNorm: false));
            }
            blocks.Add(new NormBlock(finalNorm!));
            Linear? pooler = null, classifier = null;
            var head = BertHead.None;
            if (cw != null)
            {
                var dense = new Linear(hw!, h, h, hb ?? default, mb.ClassifierActivation, plan.For("pooler.dense"));
                var lin = new Linear(cw, cw.Length / h, h, cb, Activation.None, plan.For("classifier"));
                if (mb.TokenHead)
                {
                    blocks.Add(new LinearBlock(dense));
                    blocks.Add(new NormBlock(headNorm!));
                    blocks.Add(new LinearBlock(lin));
                    head = BertHead.Token;
                    headNorm = null;
                }
                else { pooler = dense; classifier = lin; head = BertHead.Sequence; }
            }
            return new BertModel(config, new Stack([.. blocks]), pooler, classifier, head, description ?? source.Name, headNorm, mb.MeanPooling);
        });
    }

    /// <summary>
    /// NomicBERT (nomic-embed-text; the names of its remote code's <c>NomicBertModel</c>, optionally under <c>bert.</c>):
    /// <c>embeddings.word_embeddings</c>, <c>embeddings.token_type_embeddings</c>, <c>emb_ln</c>; per layer
    /// <c>encoder.layers.N.attn.Wqkv</c>, <c>attn.out_proj</c>, then <c>mlp.fc11</c> (multiplied in), <c>mlp.fc12</c> (through the
    /// gate's activation) and <c>mlp.fc2</c> (gated), or <c>mlp.fc1</c> and <c>mlp.fc2</c> (plain), or on a mixture-of-experts
    /// layer <c>mlp.router.layer</c>, <c>mlp.experts.mlp.w1</c>/<c>w2</c> (<c>[experts·ff, h]</c> each) and <c>mlp.experts.bias</c>;
    /// <c>norm1</c>, <c>norm2</c> (post-norm); an optional tanh <c>pooler.dense</c>. Pretraining heads (<c>cls.*</c>) are ignored.
    /// </summary>
    private static BertModel LoadNomic(ITensorSource source, BertConfig config, NomicSettings nb, string? description, PrecisionPlan plan)
    {
        bool wrapped = source.TryGetShape("bert.emb_ln.weight", out _);
        return TensorReader.Load(source, "", "a NomicBERT model", vb =>
        {
            foreach (var n in source.TensorNames)
                if (n.StartsWith("cls.", StringComparison.Ordinal)) vb.Ignore(n);
            var m = wrapped ? vb.Pp("bert") : vb;
            int h = config.HiddenSize, ff = config.IntermediateSize, heads = config.NumAttentionHeads, d = h / heads;
            var word = m.Pp("embeddings").Pp("word_embeddings").Get("weight", config.VocabSize, h);
            var type = nb.TokenTypes ? m.Pp("embeddings").Pp("token_type_embeddings").Get("weight", config.TypeVocabSize, h) : new float[h];
            var embNorm = Norm(m.Pp("emb_ln"), h, config.LayerNormEps);
            // per layer: the attention, the norms and the feed-forward's tensors — gated (fc11, fc12, fc2), plain (fc1, fc2)
            // or, on nomic-embed-text-v2-moe's odd layers, the experts (router.layer, experts.mlp.w1/w2, experts.bias)
            var parts = new List<(float[] Qkv, float[]? QkvB, float[] O, float[]? OB, float[][] Ff, float[]?[] Bias, LayerNorm? N1, LayerNorm? N2, bool Moe)>();
            for (int i = 0; i < config.NumHiddenLayers; i++)
            {
                var l = m.Pp($"encoder.layers.{i}");
                var at = l.Pp("attn");
                var mlp = l.Pp("mlp");
                bool moe = nb.IsMoeLayer(i);
                float[][] w; float[]?[] bias;
                if (moe)
                {
                    var ex = mlp.Pp("experts");
                    w = [mlp.Pp("router").Pp("layer").Get("weight", nb.Experts, h), ex.Pp("mlp").Get("w1", (long)nb.Experts * ff, h), ex.Pp("mlp").Get("w2", (long)nb.Experts * ff, h)];
                    bias = [ex.Get("bias", h)];
                }
                else if (nb.Gated)
                {
                    w = [mlp.Pp("fc11").Get("weight", ff, h), mlp.Pp("fc12").Get("weight", ff, h), mlp.Pp("fc2").Get("weight", h, ff)];
                    bias = [nb.Fc1Bias ? mlp.Pp("fc11").Get("bias", ff) : null, nb.Fc1Bias ? mlp.Pp("fc12").Get("bias", ff) : null, nb.Fc2Bias ? mlp.Pp("fc2").Get("bias", h) : null];
                }
                else
                {
                    w = [mlp.Pp("fc1").Get("weight", ff, h), mlp.Pp("fc2").Get("weight", h, ff)];
                    bias = [nb.Fc1Bias ? mlp.Pp("fc1").Get("bias", ff) : null, nb.Fc2Bias ? mlp.Pp("fc2").Get("bias", h) : null];
                }
                parts.Add((at.Pp("Wqkv").Get("weight", 3L * h, h), nb.QkvBias ? at.Pp("Wqkv").Get("bias", 3L * h) : null,
                    at.Pp("out_proj").Get("weight", h, h), nb.QkvBias ? at.Pp("out_proj").Get("bias", h) : null,
                    w, bias, Norm(l.Pp("norm1"), h, config.LayerNormEps), Norm(l.Pp("norm2"), h, config.LayerNormEps), moe));
            }
            var poolerVb = m.Pp("pooler").Pp("dense");
            bool hasPooler = poolerVb.Has("weight");
            float[]? pw = hasPooler ? poolerVb.Get("weight", h, h) : null, pb = hasPooler ? poolerVb.Maybe("bias", h) : null;
            if (vb.Checking) return null;

            var rope = new Rope(d, config.MaxPositionEmbeddings, nb.Theta, float32Angles: true);
            var blocks = new List<IBlock> { new BertEmbeddings(word, default, type, embNorm!, plan.For("embeddings.word_embeddings"), -1, config.MaxPositionEmbeddings) };
            for (int i = 0; i < parts.Count; i++)
            {
                var p = parts[i];
                string name = $"encoder.layer.{i}.";
                var attn = new MultiHeadAttention(h, heads, p.Qkv, p.QkvB ?? default, p.O, p.OB ?? default, new AttentionSettings(), rope,
                    plan.For(name + "attention.self"), plan.For(name + "attention.output.dense"));
                if (p.Moe)
                {
                    // expert e owns rows e·ff … (e+1)·ff of w1 and w2, both [ff, h]: w1 applied transposed (a Linear as stored), w2 not (transposed here)
                    var up = new Linear[nb.Experts];
                    var down = new Linear[nb.Experts];
                    var w2t = new float[(long)h * ff];
                    for (int x = 0; x < nb.Experts; x++)
                    {
                        up[x] = new Linear(p.Ff[1].AsSpan(x * ff * h, ff * h), ff, h, default, config.HiddenAct, plan.For(name + "intermediate.dense"));
                        for (int f = 0; f < ff; f++) for (int c = 0; c < h; c++) w2t[(long)c * ff + f] = p.Ff[2][((long)x * ff + f) * h + c];
                        down[x] = new Linear(w2t, h, ff, default, Activation.None, plan.For(name + "output.dense"));
                    }
                    var router = new Linear(p.Ff[0], nb.Experts, h, default, Activation.None, Kernels.Precision.F32);
                    blocks.Add(new MoeEncoderLayer(attn, p.N1!, p.N2!, router, up, down, p.Bias[0]!, nb.TopK, nb.NormalizeExpertWeights));
                }
                else if (nb.Gated)
                {
                    // fc11(x) ⊙ act(fc12(x)): fc12 is the activated half
                    var activated = new Linear(p.Ff[1], ff, h, p.Bias[1] ?? default, config.HiddenAct, plan.For(name + "intermediate.dense"));
                    var multiplied = new Linear(p.Ff[0], ff, h, p.Bias[0] ?? default, Activation.None, plan.For(name + "intermediate.dense"));
                    var fc2 = new Linear(p.Ff[2], h, ff, p.Bias[2] ?? default, Activation.None, plan.For(name + "output.dense"));
                    blocks.Add(new GluEncoderLayer(p.N1!, attn, p.N2!, activated, multiplied, fc2, postNorm: true));
                }
                else
                {
                    var ffn = new FeedForward(h, ff, p.Ff[0], p.Bias[0] ?? default, p.Ff[1], p.Bias[1] ?? default, config.HiddenAct, plan.For(name + "intermediate.dense"), plan.For(name + "output.dense"));
                    blocks.Add(new EncoderBlock(attn, ffn, p.N1!, p.N2!, normFirst: false));
                }
            }
            Linear? pooler = hasPooler ? new Linear(pw, h, h, pb, Activation.Tanh, plan.For("pooler.dense")) : null;
            return new BertModel(config, new Stack([.. blocks]), pooler, null, BertHead.None, description ?? source.Name);
        });
    }

    /// <summary>
    /// GTE's "new" architecture (Alibaba-NLP/new-impl's <c>NewModel</c> names, optionally under <c>new.</c> with a root
    /// <c>classifier</c>): <c>embeddings.word_embeddings</c>, <c>embeddings.token_type_embeddings</c> (when the config has
    /// token types), <c>embeddings.LayerNorm</c>; per layer <c>attention.qkv_proj</c> (or <c>q_proj</c>/<c>k_proj</c>/<c>v_proj</c>
    /// when <c>pack_qkv</c> is false), rotary positions, <c>attention.o_proj</c>, <c>attn_ln</c> (post-norm),
    /// <c>mlp.up_gate_proj</c> (no bias: the "up" rows, then the gate rows), act(gate) ⊙ up, <c>mlp.down_proj</c>, <c>mlp_ln</c>;
    /// an optional tanh <c>pooler.dense</c>. The masked-LM head (<c>lm_head.*</c>) is ignored.
    /// </summary>
    private static BertModel LoadGte(ITensorSource source, BertConfig config, GteSettings gte, string? description, PrecisionPlan plan)
    {
        bool wrapped = source.TryGetShape("new.embeddings.word_embeddings.weight", out _);
        return TensorReader.Load(source, "", "a GTE model", vb =>
        {
            foreach (var n in source.TensorNames)
                if (n.StartsWith("lm_head.", StringComparison.Ordinal)) vb.Ignore(n);
            var m = wrapped ? vb.Pp("new") : vb;
            int h = config.HiddenSize, ff = config.IntermediateSize, heads = config.NumAttentionHeads, d = h / heads;
            var emb = m.Pp("embeddings");
            emb.Ignore("position_ids");
            var word = emb.Pp("word_embeddings").Get("weight", config.VocabSize, h);
            var type = gte.TokenTypes ? emb.Pp("token_type_embeddings").Get("weight", config.TypeVocabSize, h) : new float[h];
            var embNorm = Norm(emb.Pp("LayerNorm"), h, config.LayerNormEps);
            var parts = new List<(float[] Qkv, float[] QkvB, float[] O, float[] OB, float[] UpGate, float[] Down, float[] DownB, LayerNorm? N1, LayerNorm? N2)>();
            for (int i = 0; i < config.NumHiddenLayers; i++)
            {
                var l = m.Pp($"encoder.layer.{i}");
                var at = l.Pp("attention");
                float[] qkv, qkvB;
                if (gte.PackedQkv) { qkv = at.Pp("qkv_proj").Get("weight", 3L * h, h); qkvB = at.Pp("qkv_proj").Get("bias", 3L * h); }
                else
                {
                    qkv = [.. at.Pp("q_proj").Get("weight", h, h), .. at.Pp("k_proj").Get("weight", h, h), .. at.Pp("v_proj").Get("weight", h, h)];
                    qkvB = [.. at.Pp("q_proj").Get("bias", h), .. at.Pp("k_proj").Get("bias", h), .. at.Pp("v_proj").Get("bias", h)];
                }
                var mlp = l.Pp("mlp");
                parts.Add((qkv, qkvB, at.Pp("o_proj").Get("weight", h, h), at.Pp("o_proj").Get("bias", h),
                    mlp.Pp("up_gate_proj").Get("weight", 2L * ff, h), mlp.Pp("down_proj").Get("weight", h, ff), mlp.Pp("down_proj").Get("bias", h),
                    Norm(l.Pp("attn_ln"), h, config.LayerNormEps), Norm(l.Pp("mlp_ln"), h, config.LayerNormEps)));
            }
            var poolerVb = m.Pp("pooler").Pp("dense");
            bool hasPooler = poolerVb.Has("weight");
            float[]? pw = hasPooler ? poolerVb.Get("weight", h, h) : null, pb = hasPooler ? poolerVb.Maybe("bias", h) : null;
            var (cw, cb) = ReadClassifier(vb, h);
            if (vb.Checking) return null;

            var rope = new Rope(d, config.MaxPositionEmbeddings, gte.Theta, float32Angles: true, ntkFactor: gte.NtkFactor);
            var blocks = new List<IBlock> { new BertEmbeddings(word, default, type, embNorm!, plan.For("embeddings.word_embeddings"), -1, config.MaxPositionEmbeddings) };
            for (int i = 0; i < parts.Count; i++)
            {
                var p = parts[i];
                string name = $"encoder.layer.{i}.";
                var attn = new MultiHeadAttention(h, heads, p.Qkv, p.QkvB, p.O, p.OB, new AttentionSettings(), rope,
                    plan.For(name + "attention.self"), plan.For(name + "attention.output.dense"));
                // act(gate) ⊙ up: the gate is the second half of up_gate_proj's rows
                var activated = new Linear(p.UpGate.AsSpan(ff * h, ff * h), ff, h, default, config.HiddenAct, plan.For(name + "intermediate.dense"));
                var multiplied = new Linear(p.UpGate.AsSpan(0, ff * h), ff, h, default, Activation.None, plan.For(name + "intermediate.dense"));
                var down = new Linear(p.Down, h, ff, p.DownB, Activation.None, plan.For(name + "output.dense"));
                blocks.Add(new GluEncoderLayer(p.N1!, attn, p.N2!, activated, multiplied, down, postNorm: true));
            }
            var (pooler, classifier, head) = PoolerAndHead(blocks, pw, pb, Activation.Tanh, cw, cb, h, plan);
            return new BertModel(config, new Stack([.. blocks]), pooler, classifier, head, description ?? source.Name);
        });
    }

    /// <summary>
    /// jina-embeddings-v3 (jinaai/xlm-roberta-flash-implementation's names, optionally under <c>roberta.</c>):
    /// <c>embeddings.word_embeddings</c>, <c>embeddings.token_type_embeddings</c>, <c>emb_ln</c>; per layer
    /// <c>encoder.layers.N.mixer.Wqkv</c> (rotary q and k), <c>mixer.out_proj</c>, <c>norm1</c>, <c>mlp.fc1</c>, <c>mlp.fc2</c>,
    /// <c>norm2</c> — post-norm; an optional tanh <c>pooler.dense</c>. Each embedding and linear weight is stored as
    /// <c>….parametrizations.weight.original</c> with its adapters' <c>….0.lora_A</c>/<c>lora_B</c> (one slice per adapter),
    /// or plainly as <c>….weight</c>; with an adapter chosen, W + (alpha/rank)·B·A (an embedding: A·B) is merged in once.
    /// </summary>
    private static BertModel LoadJinaV3(ITensorSource source, BertConfig config, JinaV3Settings j3, string? adapter, string? description, PrecisionPlan plan)
    {
        bool wrapped = source.TryGetShape("roberta.emb_ln.weight", out _);
        int task = adapter == null ? -1 : Array.IndexOf(j3.Adaptations, adapter);
        return TensorReader.Load(source, "", "a jina-embeddings-v3 model", vb =>
        {
            foreach (var n in source.TensorNames)
                if (n.StartsWith("lm_head.", StringComparison.Ordinal)) vb.Ignore(n);
            var m = wrapped ? vb.Pp("roberta") : vb;
            int h = config.HiddenSize, ff = config.IntermediateSize, heads = config.NumAttentionHeads, d = h / heads;
            float[] W(TensorReader r, long rows, long cols, bool embedding) => LoraWeight(r, rows, cols, embedding, j3, task);
            var emb = m.Pp("embeddings");
            emb.Ignore("position_ids");
            emb.Ignore("token_type_ids");
            var word = W(emb.Pp("word_embeddings"), config.VocabSize, h, true);
            var type = W(emb.Pp("token_type_embeddings"), config.TypeVocabSize, h, true);
            var embNorm = Norm(m.Pp("emb_ln"), h, config.LayerNormEps);
            var parts = new List<(float[] Qkv, float[] QkvB, float[] O, float[] OB, float[] F1, float[] F1B, float[] F2, float[] F2B, LayerNorm? N1, LayerNorm? N2)>();
            for (int i = 0; i < config.NumHiddenLayers; i++)
            {
                var l = m.Pp($"encoder.layers.{i}");
                var mx = l.Pp("mixer");
                var mlp = l.Pp("mlp");
                parts.Add((W(mx.Pp("Wqkv"), 3L * h, h, false), mx.Pp("Wqkv").Get("bias", 3L * h), W(mx.Pp("out_proj"), h, h, false), mx.Pp("out_proj").Get("bias", h),
                    W(mlp.Pp("fc1"), ff, h, false), mlp.Pp("fc1").Get("bias", ff), W(mlp.Pp("fc2"), h, ff, false), mlp.Pp("fc2").Get("bias", h),
                    Norm(l.Pp("norm1"), h, config.LayerNormEps), Norm(l.Pp("norm2"), h, config.LayerNormEps)));
            }
            var poolerVb = m.Pp("pooler").Pp("dense");
            bool hasPooler = poolerVb.Has("weight") || poolerVb.Has("parametrizations.weight.original");
            float[]? pw = hasPooler ? W(poolerVb, h, h, false) : null, pb = hasPooler ? poolerVb.Maybe("bias", h) : null;
            if (vb.Checking) return null;

            var rope = new Rope(d, config.MaxPositionEmbeddings, j3.Theta, float32Angles: true);
            var blocks = new List<IBlock> { new BertEmbeddings(word, default, type, embNorm!, plan.For("embeddings.word_embeddings"), -1, config.MaxPositionEmbeddings) };
            for (int i = 0; i < parts.Count; i++)
            {
                var p = parts[i];
                string name = $"encoder.layer.{i}.";
                var attn = new MultiHeadAttention(h, heads, p.Qkv, p.QkvB, p.O, p.OB, new AttentionSettings(), rope, plan.For(name + "attention.self"), plan.For(name + "attention.output.dense"));
                var ffn = new FeedForward(h, ff, p.F1, p.F1B, p.F2, p.F2B, config.HiddenAct, plan.For(name + "intermediate.dense"), plan.For(name + "output.dense"));
                blocks.Add(new EncoderBlock(attn, ffn, p.N1!, p.N2!, normFirst: false));
            }
            var (pooler, _, _) = PoolerAndHead(blocks, pw, pb, Activation.Tanh, null, null, h, plan);
            return new BertModel(config, new Stack([.. blocks]), pooler, null, BertHead.None, description ?? source.Name + (adapter != null ? $" (adapter {adapter})" : ""));
        });
    }

    /// <summary>
    /// A weight <c>[rows, cols]</c> stored plainly (<c>weight</c>) or as LoRA's parametrization: <c>parametrizations.weight.original</c>,
    /// <c>…0.lora_A</c> and <c>…0.lora_B</c> with one slice per adapter — a linear layer's A <c>[n, rank, cols]</c> and B
    /// <c>[n, rows, rank]</c> give W + s·B·A, an embedding's A <c>[n, rows, rank]</c> and B <c>[n, rank, cols]</c> give
    /// W + s·A·B (its code swaps the factors so the table's layout is kept). The product is formed in double precision,
    /// rounded to float32, scaled and added in float32 as libtorch's <c>lora_forward</c> does. Adapter −1: the original weight.
    /// </summary>
    private static float[] LoraWeight(TensorReader r, long rows, long cols, bool embedding, JinaV3Settings j3, int task)
    {
        if (r.Has("weight") || !r.Has("parametrizations.weight.original"))
        {
            if (task >= 0 && r.Has("weight")) r.Problem("an adapter was asked for, but the checkpoint's weights are plain (no LoRA parametrizations)");
            return r.Get("weight", rows, cols);
        }
        var p = r.Pp("parametrizations").Pp("weight");
        var w = p.Get("original", rows, cols);
        int n = j3.Adaptations.Length, k = j3.Rank;
        var a = embedding ? p.Pp("0").Get("lora_A", n, rows, k) : p.Pp("0").Get("lora_A", n, k, cols);
        var b = embedding ? p.Pp("0").Get("lora_B", n, k, cols) : p.Pp("0").Get("lora_B", n, rows, k);
        if (r.Checking || task < 0) return w;
        float s = (float)j3.Scaling;
        var merged = new float[w.Length];
        // rows are independent (each element its own sum): split over the cores — a 250,002-row table at rank 4 is 10⁹ products
        Parallel.For(0L, rows, i =>
        {
            for (long j = 0; j < cols; j++)
            {
                double acc = 0;
                for (int q = 0; q < k; q++)
                    acc += embedding
                        ? (double)a[(task * rows + i) * k + q] * b[((long)task * k + q) * cols + j]
                        : (double)b[(task * rows + i) * k + q] * a[((long)task * k + q) * cols + j];
                merged[i * cols + j] = w[i * cols + j] + (float)acc * s;
            }
        });
        return merged;
    }

    /// <summary>jina-embeddings-v3's names: <c>emb_ln</c> beside <c>encoder.layers.0.mixer.Wqkv</c>, optionally under <c>roberta.</c>.</summary>
    private static bool IsJinaV3(ITensorSource s) => s.TensorNames.Any(n => n.Contains("encoder.layers.0.mixer.Wqkv", StringComparison.Ordinal));

    /// <summary>
    /// Qwen3 (transformers' <c>Qwen3Model</c> names, optionally under <c>model.</c> as a <c>Qwen3ForCausalLM</c> checkpoint has
    /// them): <c>embed_tokens</c>; per layer <c>layers.N.input_layernorm</c>, <c>self_attn.q_proj/k_proj/v_proj/o_proj</c>
    /// (biases when the config says <c>attention_bias</c>), <c>self_attn.q_norm/k_norm</c>, <c>post_attention_layernorm</c>,
    /// <c>mlp.gate_proj/up_proj/down_proj</c>; <c>norm</c>. A language-model head (<c>lm_head</c>) is ignored. Weights of any
    /// stored float type (Qwen3-Embedding's are bfloat16) are widened to float32 unless the precision plan says otherwise.
    /// </summary>
    private static BertModel LoadQwen3(ITensorSource source, BertConfig config, Qwen3Settings q3, string? description, PrecisionPlan plan)
    {
        bool wrapped = source.TryGetShape("model.embed_tokens.weight", out _);
        return TensorReader.Load(source, "", q3.Qwen2 ? "a Qwen2 model" : "a Qwen3 model", vb =>
        {
            foreach (var n in source.TensorNames)
                if (n.StartsWith("lm_head.", StringComparison.Ordinal)) vb.Ignore(n);
            var m = wrapped ? vb.Pp("model") : vb;
            int h = config.HiddenSize, ff = config.IntermediateSize, heads = config.NumAttentionHeads, kv = q3.KvHeads, hd = q3.HeadDim;
            long qRows = (long)heads * hd, kRows = (long)kv * hd;
            float eps = config.LayerNormEps;
            // layer by layer: each layer's float32 copies are dropped once its products are packed, so a large model (Qwen3-Embedding-4B/8B
            // with a bf16 or int8 plan) needs its packed weights and one layer's floats, not every float at once
            var blocks = new List<IBlock>();
            var rope = vb.Checking ? null : new Rope(hd, config.MaxPositionEmbeddings, q3.Theta, float32Angles: true);
            var word = m.Pp("embed_tokens").Get("weight", config.VocabSize, h);
            if (!vb.Checking) blocks.Add(new BertEmbeddings(word, default, new float[h], null, plan.For("embeddings.word_embeddings"), -1, config.MaxPositionEmbeddings));
            word = null;
            for (int i = 0; i < config.NumHiddenLayers; i++)
            {
                var l = m.Pp($"layers.{i}");
                var t = DecoderTensors.Read(l, h, ff, qRows, kRows, hd, qkvBias: q3.AttentionBias || q3.Qwen2, oBias: q3.AttentionBias, q3.QkNorm, (r, w) => r.Get("weight", w));
                float[] n1 = l.Pp("input_layernorm").Get("weight", h), n2 = l.Pp("post_attention_layernorm").Get("weight", h);
                if (vb.Checking) continue;
                var (qkv, o, gate, up, down) = t.Products(h, ff, qRows, kRows, config.HiddenAct, plan, $"encoder.layer.{i}.");
                blocks.Add(new DecoderLayer(new RmsNorm(h, n1, eps), qkv, t.QNorm is null ? null : new RmsNorm(hd, t.QNorm, eps), t.KNorm is null ? null : new RmsNorm(hd, t.KNorm, eps),
                    rope!, o, heads, kv, new RmsNorm(h, n2, eps), gate, up, down, new DecoderAttention(Causal: true)));
            }
            var final = m.Pp("norm").Get("weight", h);
            if (vb.Checking) return null;
            blocks.Add(new NormBlock(new RmsNorm(h, final, eps)));
            return new BertModel(config, new Stack([.. blocks]), null, null, BertHead.None, description ?? source.Name);
        });
    }

    /// <summary>
    /// Gemma 3's text model (transformers' <c>Gemma3TextModel</c> names, optionally under <c>model.</c>; EmbeddingGemma's
    /// checkpoint): <c>embed_tokens</c>, scaled by √hidden (in float32) as <c>Gemma3TextScaledWordEmbedding</c> scales it;
    /// per layer <c>input_layernorm</c>, <c>self_attn.q_proj/k_proj/v_proj/o_proj</c>, <c>self_attn.q_norm/k_norm</c>,
    /// <c>post_attention_layernorm</c> (on the attention's output), <c>pre_feedforward_layernorm</c>,
    /// <c>mlp.gate_proj/up_proj/down_proj</c>, <c>post_feedforward_layernorm</c>; <c>norm</c>. Every RMS norm multiplies by
    /// 1 + weight (Gemma's), taken into the gain once at load. Sliding layers rotate with the local base, global ones with
    /// the global base.
    /// </summary>
    private static BertModel LoadGemma3(ITensorSource source, BertConfig config, Gemma3Settings g3, string? description, PrecisionPlan plan)
    {
        bool wrapped = source.TryGetShape("model.embed_tokens.weight", out _);
        return TensorReader.Load(source, "", "a Gemma 3 model", vb =>
        {
            foreach (var n in source.TensorNames)
                if (n.StartsWith("lm_head.", StringComparison.Ordinal)) vb.Ignore(n);
            var m = wrapped ? vb.Pp("model") : vb;
            int h = config.HiddenSize, ff = config.IntermediateSize, heads = config.NumAttentionHeads, kv = g3.KvHeads, hd = g3.HeadDim;
            long qRows = (long)heads * hd, kRows = (long)kv * hd;
            float eps = config.LayerNormEps;
            float[] Gain(TensorReader r, long width)
            {
                var w = r.Get("weight", width);
                for (int i = 0; i < w.Length; i++) w[i] = 1f + w[i];
                return w;
            }
            // layer by layer, as Qwen3's loader: one layer's float32 copies at a time
            var blocks = new List<IBlock>();
            Rope? globalRope = null, localRope = null;
            if (!vb.Checking)
            {
                globalRope = new Rope(hd, config.MaxPositionEmbeddings, g3.GlobalTheta, float32Angles: true);
                localRope = new Rope(hd, config.MaxPositionEmbeddings, g3.LocalTheta, float32Angles: true);
            }
            float attnScale = (float)(1 / Math.Sqrt(g3.QueryPreAttnScalar));
            var word = m.Pp("embed_tokens").Get("weight", config.VocabSize, h);
            if (!vb.Checking)
            {
                // the word table scaled once: the same float32 products as the embedding's output times √hidden
                System.Numerics.Tensors.TensorPrimitives.Multiply(word, (float)Math.Sqrt(h), word);
                blocks.Add(new BertEmbeddings(word, default, new float[h], null, plan.For("embeddings.word_embeddings"), -1, config.MaxPositionEmbeddings));
            }
            word = null;
            for (int i = 0; i < config.NumHiddenLayers; i++)
            {
                var l = m.Pp($"layers.{i}");
                var t = DecoderTensors.Read(l, h, ff, qRows, kRows, hd, qkvBias: g3.AttentionBias, oBias: g3.AttentionBias, qkNorm: true, Gain);
                float[] n1 = Gain(l.Pp("input_layernorm"), h), postAttn = Gain(l.Pp("post_attention_layernorm"), h);
                float[] n2 = Gain(l.Pp("pre_feedforward_layernorm"), h), postFfn = Gain(l.Pp("post_feedforward_layernorm"), h);
                if (vb.Checking) continue;
                bool slides = g3.SlidingLayers[i];
                var (qkv, o, gate, up, down) = t.Products(h, ff, qRows, kRows, config.HiddenAct, plan, $"encoder.layer.{i}.");
                var shape = new DecoderAttention(!g3.Bidirectional, slides ? g3.Window : 0, attnScale, (float)g3.SoftCap);
                blocks.Add(new DecoderLayer(new RmsNorm(h, n1, eps), qkv, new RmsNorm(hd, t.QNorm!, eps), new RmsNorm(hd, t.KNorm!, eps), slides ? localRope! : globalRope!, o, heads, kv,
                    new RmsNorm(h, n2, eps), gate, up, down, shape, new RmsNorm(h, postAttn, eps), new RmsNorm(h, postFfn, eps)));
            }
            var final = Gain(m.Pp("norm"), h);
            if (vb.Checking) return null;
            blocks.Add(new NormBlock(new RmsNorm(h, final, eps)));
            return new BertModel(config, new Stack([.. blocks]), null, null, BertHead.None, description ?? source.Name);
        });
    }

    /// <summary>
    /// One decoder layer's attention and feed-forward tensors (Qwen2, Qwen3, Gemma 3; relative to <c>layers.N</c>):
    /// <c>self_attn.q_proj/k_proj/v_proj</c> (packed here as q|k|v), <c>o_proj</c>, the optional biases and per-head
    /// <c>q_norm/k_norm</c>, <c>mlp.gate_proj/up_proj/down_proj</c>.
    /// </summary>
    private sealed record DecoderTensors(float[] Qkv, float[]? QkvBias, float[] O, float[]? OBias, float[]? QNorm, float[]? KNorm, float[] Gate, float[] Up, float[] Down)
    {
        /// <summary>Reads them from <paramref name="l"/>; <paramref name="norm"/> reads a norm's weight of the given width (Gemma: as its 1 + weight gain).</summary>
        public static DecoderTensors Read(TensorReader l, int h, int ff, long qRows, long kRows, int hd, bool qkvBias, bool oBias, bool qkNorm, Func<TensorReader, long, float[]> norm)
        {
            var at = l.Pp("self_attn");
            float[] Lin(string name, long rows, long cols) => at.Pp(name).Get("weight", rows, cols);
            float[]? Bias(string name, long rows, bool has) => has ? at.Pp(name).Get("bias", rows) : null;
            float[] q = Lin("q_proj", qRows, h), k = Lin("k_proj", kRows, h), v = Lin("v_proj", kRows, h);
            float[]? qb = Bias("q_proj", qRows, qkvBias), kb = Bias("k_proj", kRows, qkvBias), vb = Bias("v_proj", kRows, qkvBias);
            var mlp = l.Pp("mlp");
            return new([.. q, .. k, .. v], qkvBias ? [.. qb!, .. kb!, .. vb!] : null, Lin("o_proj", h, qRows), Bias("o_proj", h, oBias),
                qkNorm ? norm(at.Pp("q_norm"), hd) : null, qkNorm ? norm(at.Pp("k_norm"), hd) : null,
                mlp.Pp("gate_proj").Get("weight", ff, h), mlp.Pp("up_proj").Get("weight", ff, h), mlp.Pp("down_proj").Get("weight", h, ff));
        }

        /// <summary>The five products, under the precision plan's BERT names (<paramref name="name"/> = <c>encoder.layer.N.</c>); the gate's activation in its epilogue.</summary>
        public (Linear Qkv, Linear O, Linear Gate, Linear Up, Linear Down) Products(int h, int ff, long qRows, long kRows, Activation act, PrecisionPlan plan, string name) =>
            (new Linear(Qkv, (int)(qRows + 2 * kRows), h, QkvBias ?? default, Activation.None, [(int)qRows, (int)kRows, (int)kRows], plan.For(name + "attention.self")),
             new Linear(O, h, (int)qRows, OBias ?? default, Activation.None, plan.For(name + "attention.output.dense")),
             new Linear(Gate, ff, h, default, act, plan.For(name + "intermediate.dense")),
             new Linear(Up, ff, h, default, Activation.None, plan.For(name + "intermediate.dense")),
             new Linear(Down, h, ff, default, Activation.None, plan.For(name + "output.dense")));
    }

    /// <summary>A decoder's names (Qwen2, Qwen3, Gemma 3): <c>layers.0.self_attn.q_proj</c>, optionally under <c>model.</c>.</summary>
    private static bool IsQwen3(ITensorSource s) => s.TryGetShape("layers.0.self_attn.q_proj.weight", out _) || s.TryGetShape("model.layers.0.self_attn.q_proj.weight", out _);

    /// <summary>GTE's "new" names: <c>encoder.layer.0.mlp.up_gate_proj</c>, optionally under <c>new.</c>.</summary>
    private static bool IsGte(ITensorSource s) => s.TryGetShape("encoder.layer.0.mlp.up_gate_proj.weight", out _) || s.TryGetShape("new.encoder.layer.0.mlp.up_gate_proj.weight", out _);

    /// <summary>
    /// The pooler (when the checkpoint has one) and the root classifier: on the pooled output with a pooler (sequence
    /// classification), else on every token (a block appended to <paramref name="blocks"/>).
    /// </summary>
    private static (Linear? Pooler, Linear? Classifier, BertHead Head) PoolerAndHead(List<IBlock> blocks, float[]? pw, float[]? pb, Activation poolerAct,
        float[]? cw, float[]? cb, int h, PrecisionPlan plan)
    {
        Linear? pooler = pw != null ? new Linear(pw, h, h, pb, poolerAct, plan.For("pooler.dense")) : null;
        if (cw == null) return (pooler, null, BertHead.None);
        var lin = new Linear(cw, cw.Length / h, h, cb, Activation.None, plan.For("classifier"));
        if (pooler != null) return (pooler, lin, BertHead.Sequence);
        blocks.Add(new LinearBlock(lin));
        return (null, null, BertHead.Token);
    }

    /// <summary>
    /// The root <c>classifier</c> <c>[classes, hidden]</c> and its optional bias, or (null, null) without one; a weight of
    /// another shape is recorded as a problem.
    /// </summary>
    private static (float[]? Weight, float[]? Bias) ReadClassifier(TensorReader vb, int h)
    {
        var cls = vb.Pp("classifier");
        var cs = cls.Shape("weight");
        if (cs == null) return (null, null);
        if (cs.Length != 2 || cs[0] < 1 || cs[0] > 1 << 20)
        {
            cls.Get("weight", -1, h);
            vb.Problem($"classifier.weight is [{string.Join(", ", cs)}], expected [classes, {h}]");
            return (null, null);
        }
        return (cls.Get("weight", cs[0], h), cls.Maybe("bias", cs[0]));
    }

    /// <summary>ModernBERT's names: <c>embeddings.tok_embeddings</c>, optionally under <c>model.</c>.</summary>
    private static bool IsModernBert(ITensorSource s) => s.TryGetShape("model.embeddings.tok_embeddings.weight", out _) || s.TryGetShape("embeddings.tok_embeddings.weight", out _);

    /// <summary>NomicBERT's names: <c>emb_ln</c>, optionally under <c>bert.</c>.</summary>
    private static bool IsNomic(ITensorSource s) => s.TryGetShape("emb_ln.weight", out _) || s.TryGetShape("bert.emb_ln.weight", out _);

    private static LayerNorm? Norm(TensorReader vb, int h, float eps)
    {
        // older checkpoints name the LayerNorm parameters gamma and beta
        bool old = !vb.Has("weight") && vb.Has("gamma");
        var g = vb.Get(old ? "gamma" : "weight", h);
        var b = vb.Get(old ? "beta" : "bias", h);
        return vb.Checking ? null : new LayerNorm(h, g, b, eps);
    }

    /// <summary>
    /// One DeBERTa-v2 layer (relative to <c>encoder.layer.N</c>): <c>attention.self.query_proj/key_proj/value_proj</c>
    /// (and <c>pos_key_proj</c>/<c>pos_query_proj</c> unless the keys are shared), then BERT's output, feed-forward and norms.
    /// The relative table's key and query projections are computed here once, in double precision.
    /// </summary>
    private static DebertaLayer? DebertaBlock(TensorReader vb, BertConfig c, PrecisionPlan plan, string name, DebertaRelative rel, float[] relTable, bool checking)
    {
        int h = c.HiddenSize, ff = c.IntermediateSize, rows = 2 * rel.Span;
        var self = vb.Pp("attention").Pp("self");
        var qw = self.Pp("query_proj").Get("weight", h, h); var qb = self.Pp("query_proj").Get("bias", h);
        var kw = self.Pp("key_proj").Get("weight", h, h); var kb = self.Pp("key_proj").Get("bias", h);
        var vw = self.Pp("value_proj").Get("weight", h, h); var vbias = self.Pp("value_proj").Get("bias", h);
        float[] pkw = kw, pkb = kb, pqw = qw, pqb = qb;
        if (!rel.ShareAttKey)
        {
            if (rel.C2P) { pkw = self.Pp("pos_key_proj").Get("weight", h, h); pkb = self.Pp("pos_key_proj").Get("bias", h); }
            if (rel.P2C) { pqw = self.Pp("pos_query_proj").Get("weight", h, h); pqb = self.Pp("pos_query_proj").Get("bias", h); }
        }
        var att = vb.Pp("attention").Pp("output");
        var ow = att.Pp("dense").Get("weight", h, h); var ob = att.Pp("dense").Get("bias", h);
        var n1 = Norm(att.Pp("LayerNorm"), h, c.LayerNormEps);
        var iw = vb.Pp("intermediate").Pp("dense").Get("weight", ff, h); var ib = vb.Pp("intermediate").Pp("dense").Get("bias", ff);
        var fw = vb.Pp("output").Pp("dense").Get("weight", h, ff); var fb = vb.Pp("output").Pp("dense").Get("bias", h);
        var n2 = Norm(vb.Pp("output").Pp("LayerNorm"), h, c.LayerNormEps);
        if (checking) return null;
        static float[] Project(float[] table, int rows, float[] w, float[] b, int h)
        {
            var y = new float[rows * h];
            for (int r = 0; r < rows; r++)
                for (int o = 0; o < h; o++)
                {
                    double acc = b[o];
                    for (int i = 0; i < h; i++) acc += (double)table[r * h + i] * w[o * h + i];
                    y[r * h + o] = (float)acc;
                }
            return y;
        }
        var posKey = rel.C2P ? Project(relTable, rows, pkw, pkb, h) : [];
        var posQuery = rel.P2C ? Project(relTable, rows, pqw, pqb, h) : [];
        var qkvW = new float[3 * h * h];
        qw.CopyTo(qkvW, 0); kw.CopyTo(qkvW, h * h); vw.CopyTo(qkvW, 2 * h * h);
        var qkvB = new float[3 * h];
        qb.CopyTo(qkvB, 0); kb.CopyTo(qkvB, h); vbias.CopyTo(qkvB, 2 * h);
        return new DebertaLayer(h, c.NumAttentionHeads, new Linear(qkvW, 3 * h, h, qkvB, Activation.None, plan.For(name + "attention.self")),
            new Linear(ow, h, h, ob, Activation.None, plan.For(name + "attention.output.dense")),
            new FeedForward(h, ff, iw, ib, fw, fb, c.HiddenAct, plan.For(name + "intermediate.dense"), plan.For(name + "output.dense")),
            n1!, n2!, posKey, posQuery, rel, c.MaxPositionEmbeddings);
    }

    /// <summary>One BERT layer: the names of its tensors, relative to <c>encoder.layer.N</c>.</summary>
    private static EncoderBlock? Layer(TensorReader vb, BertConfig c, PrecisionPlan plan, string name, AttentionSettings? settings)
    {
        int h = c.HiddenSize, ff = c.IntermediateSize;
        var attention = ReadAttention(vb, h, c.LayerNormEps);
        var iw = vb.Pp("intermediate").Pp("dense").Get("weight", ff, h); var ib = vb.Pp("intermediate").Pp("dense").Get("bias", ff);
        var fw = vb.Pp("output").Pp("dense").Get("weight", h, ff); var fb = vb.Pp("output").Pp("dense").Get("bias", h);
        var n2 = Norm(vb.Pp("output").Pp("LayerNorm"), h, c.LayerNormEps);
        if (vb.Checking) return null;
        var ffn = new FeedForward(h, ff, iw, ib, fw, fb, c.HiddenAct, plan.For(name + "intermediate.dense"), plan.For(name + "output.dense"));
        // post-norm, like nn.TransformerEncoderLayer: x = LN(x + attn(x)); x = LN(x + ff(x))
        return new EncoderBlock(attention.Build(c, plan, name, settings), ffn, attention.Norm!, n2!, normFirst: false);
    }

    /// <summary>BERT's attention tensors, relative to <c>encoder.layer.N</c>: <c>attention.self.query/key/value</c>, <c>attention.output.dense</c> and its LayerNorm.</summary>
    private sealed record BertAttentionParts(float[] Q, float[] QB, float[] K, float[] KB, float[] V, float[] VB, float[] O, float[] OB, LayerNorm? Norm)
    {
        /// <summary>The attention with q/k/v packed into one projection.</summary>
        public MultiHeadAttention Build(BertConfig c, PrecisionPlan plan, string name, AttentionSettings? settings)
        {
            int h = c.HiddenSize;
            var inBias = new float[3 * h];
            QB.CopyTo(inBias, 0); KB.CopyTo(inBias, h); VB.CopyTo(inBias, 2 * h);
            return new MultiHeadAttention(h, c.NumAttentionHeads, Q, K, V, inBias, O, OB, 0, 0, settings, null,
                plan.For(name + "attention.self"), plan.For(name + "attention.output.dense"));
        }
    }

    private static BertAttentionParts ReadAttention(TensorReader vb, int h, float eps)
    {
        var att = vb.Pp("attention");
        var self = att.Pp("self");
        return new BertAttentionParts(self.Pp("query").Get("weight", h, h), self.Pp("query").Get("bias", h),
            self.Pp("key").Get("weight", h, h), self.Pp("key").Get("bias", h), self.Pp("value").Get("weight", h, h), self.Pp("value").Get("bias", h),
            att.Pp("output").Pp("dense").Get("weight", h, h), att.Pp("output").Pp("dense").Get("bias", h), Norm(att.Pp("output").Pp("LayerNorm"), h, eps));
    }

    /// <summary>
    /// One JinaBERT layer with a GLU feed-forward (relative to <c>encoder.layer.N</c>, its <c>JinaBertLayer</c>): BERT's
    /// attention and <c>attention.output</c> (post-norm), then <c>mlp.gated_layers</c> (no bias; twice the feed-forward's
    /// width), act(first half) ⊙ second half, <c>mlp.wo</c> and <c>mlp.layernorm</c> of the sum with the residual.
    /// </summary>
    private static GluEncoderLayer? JinaGluLayer(TensorReader vb, BertConfig c, Activation act, PrecisionPlan plan, string name, AttentionSettings settings)
    {
        int h = c.HiddenSize, ff = c.IntermediateSize;
        var attention = ReadAttention(vb, h, c.LayerNormEps);
        var mlp = vb.Pp("mlp");
        var gw = mlp.Pp("gated_layers").Get("weight", 2L * ff, h);
        var wo = mlp.Pp("wo").Get("weight", h, ff); var wob = mlp.Pp("wo").Get("bias", h);
        var n2 = Norm(mlp.Pp("layernorm"), h, c.LayerNormEps);
        if (vb.Checking) return null;
        var activated = new Linear(gw.AsSpan(0, ff * h), ff, h, default, act, plan.For(name + "intermediate.dense"));
        var multiplied = new Linear(gw.AsSpan(ff * h, ff * h), ff, h, default, Activation.None, plan.For(name + "intermediate.dense"));
        var down = new Linear(wo, h, ff, wob, Activation.None, plan.For(name + "output.dense"));
        return new GluEncoderLayer(attention.Norm!, attention.Build(c, plan, name, settings), n2!, activated, multiplied, down, postNorm: true);
    }

    /// <summary>JinaBERT's GLU layers: <c>encoder.layer.0.mlp.gated_layers</c>, optionally under <c>bert.</c>.</summary>
    private static bool IsJina(ITensorSource s) => s.TryGetShape("encoder.layer.0.mlp.gated_layers.weight", out _) || s.TryGetShape("bert.encoder.layer.0.mlp.gated_layers.weight", out _);

    /// <summary>
    /// MPNet's bias table <c>[buckets, heads]</c> expanded over the distances d = j − i of sequences up to
    /// <paramref name="span"/> long: <c>[heads, 2·span − 1]</c>, entry d + span − 1 (see <see cref="AttentionSettings.RelativeBias"/>).
    /// </summary>
    internal static float[] MpnetRelativeBias(float[] buckets, int heads, int span)
    {
        var t = new float[heads * (2 * span - 1)];
        for (int d = -(span - 1); d <= span - 1; d++)
        {
            int b = MpnetBucket(d);
            for (int hh = 0; hh < heads; hh++) t[hh * (2 * span - 1) + d + span - 1] = buckets[b * heads + hh];
        }
        return t;
    }

    /// <summary>
    /// MPNet's bucket of the distance j − i (Hugging Face's <c>relative_position_bucket</c>, 32 buckets, maximum distance
    /// 128): keys after the query use the upper 16; distances below 8 have a bucket each; longer ones share logarithmic
    /// buckets up to the last. Computed in float32 as PyTorch computes it, so the truncation agrees at the boundaries.
    /// </summary>
    internal static int MpnetBucket(int relative)
    {
        const int half = 16, maxExact = 8, maxDistance = 128;
        int ret = 0, n = -relative;
        if (n < 0) { ret = half; n = -n; }
        if (n < maxExact) return ret + n;
        float v = MathF.Log((float)n / maxExact) / (float)Math.Log((double)maxDistance / maxExact) * (half - maxExact);
        return ret + Math.Min(maxExact + (int)v, half - 1);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Encoder.Dispose();
        Pooler?.Dispose();
        Classifier?.Dispose();
    }
}
