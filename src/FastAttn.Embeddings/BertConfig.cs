using System.Text.Json;
using FastAttn.Kernels;

namespace FastAttn.Embeddings;

/// <summary>
/// The architecture of a BERT-family encoder, as Hugging Face's <c>BertConfig</c> states it in <c>config.json</c>
/// (<c>hidden_size</c>, <c>num_attention_heads</c>, …). Every field is checked when read.
/// </summary>
public sealed record BertConfig
{
    /// <summary>Width of every token's hidden state (<c>hidden_size</c>).</summary>
    public int HiddenSize { get; init; }
    /// <summary>Attention heads (<c>num_attention_heads</c>).</summary>
    public int NumAttentionHeads { get; init; }
    /// <summary>Encoder layers (<c>num_hidden_layers</c>).</summary>
    public int NumHiddenLayers { get; init; }
    /// <summary>Width of the feed-forward layer (<c>intermediate_size</c>).</summary>
    public int IntermediateSize { get; init; }
    /// <summary>The feed-forward activation (<c>hidden_act</c>: "gelu" is the exact erf form; "gelu_new" and "gelu_pytorch_tanh" the tanh form).</summary>
    public Activation HiddenAct { get; init; } = Activation.Gelu;
    /// <summary>LayerNorm ε (<c>layer_norm_eps</c>, 1e-12 in BERT).</summary>
    public float LayerNormEps { get; init; } = 1e-12f;
    /// <summary>Rows of the position table (<c>max_position_embeddings</c>): the longest sequence.</summary>
    public int MaxPositionEmbeddings { get; init; } = 512;
    /// <summary>Token types (<c>type_vocab_size</c>).</summary>
    public int TypeVocabSize { get; init; } = 2;
    /// <summary>Vocabulary size (<c>vocab_size</c>).</summary>
    public int VocabSize { get; init; }
    /// <summary>
    /// The family the checkpoint's names follow: "bert" (BERT, MiniLM, most sentence-transformers models), "distilbert"
    /// (DistilBERT: no token types, its layer names, a ReLU <c>pre_classifier</c> where BERT has its tanh pooler) or "mpnet"
    /// (MPNet, e.g. all-mpnet-base-v2: no token types, positions from 2, a relative position bias in every layer) or
    /// "electra" (ELECTRA's discriminator: BERT's layers, embeddings possibly narrower and projected, a GELU classification head)
    /// or "roberta", "xlm-roberta", "camembert" (RoBERTa and its multilingual kin, e.g. multilingual-e5-base, bge-m3,
    /// paraphrase-multilingual-mpnet-base-v2: BERT's layers under <c>roberta.</c>, positions numbered after the padding index,
    /// one token type).
    /// </summary>
    public string ModelType { get; init; } = "bert";
    /// <summary>The pooler's activation: tanh (BERT's pooler, MPNet's classification head), ReLU (DistilBERT's <c>pre_classifier</c>) or GELU (ELECTRA's classification head).</summary>
    public Activation PoolerActivation { get; init; } = Activation.Tanh;
    /// <summary>
    /// MPNet's relative position buckets (<c>relative_attention_num_buckets</c>, 32): rows of
    /// <c>encoder.relative_attention_bias.weight</c>, one learned bias per head and bucket of the distance j − i, added to
    /// every layer's scores. 0 for BERT and DistilBERT.
    /// </summary>
    public int RelativeAttentionNumBuckets { get; init; }
    /// <summary>
    /// Width of the embeddings (<c>embedding_size</c>; ELECTRA's small models embed narrower than their hidden states and
    /// project up with <c>embeddings_project</c>); 0 = <see cref="HiddenSize"/>.
    /// </summary>
    public int EmbeddingSize { get; init; }

    /// <summary>
    /// RoBERTa's and MPNet's padding index (RoBERTa: <c>pad_token_id</c>; MPNet: 1, fixed in its code): positions are
    /// numbered from <c>PaddingIdx + 1</c>, and a token with this id takes position row <c>PaddingIdx</c> without advancing
    /// the count, as Hugging Face's <c>create_position_ids_from_input_ids</c> numbers them. −1: the family's default (1 for
    /// RoBERTa and MPNet; none for BERT, DistilBERT and ELECTRA, whose positions are 0, 1, 2, … for every token).
    /// </summary>
    public int PaddingIdx { get; init; } = -1;

    /// <summary>The padding index in force (see <see cref="PaddingIdx"/>), −1 for none.</summary>
    internal int PositionPadding => PaddingIdx >= 0 || !(IsRoberta || ModelType == "mpnet") ? PaddingIdx : 1;

    /// <summary>DeBERTa-v2/v3's relative attention (<c>model_type</c> "deberta-v2"), else null.</summary>
    internal DebertaRelative? Deberta { get; init; }

    /// <summary>DeBERTa: whether absolute position embeddings are added to the input (<c>position_biased_input</c>; v3: no).</summary>
    internal bool PositionBiasedInput { get; init; } = true;

    /// <summary>NomicBERT's settings (<c>model_type</c> "nomic_bert"), else null.</summary>
    internal NomicSettings? Nomic { get; init; }

    /// <summary>ModernBERT's settings (<c>model_type</c> "modernbert"), else null.</summary>
    internal ModernBertSettings? ModernBert { get; init; }

    /// <summary>JinaBERT's settings (<c>model_type</c> "bert" with <c>position_embedding_type</c> "alibi"), else null.</summary>
    internal JinaSettings? Jina { get; init; }

    /// <summary>GTE's settings (<c>model_type</c> "new", or "gte" as snowflake-arctic-embed-m-v2.0's copy of the code names it), else null.</summary>
    internal GteSettings? Gte { get; init; }

    /// <summary>jina-embeddings-v3's settings (<c>model_type</c> "xlm-roberta" with rotary positions and LoRA adapters), else null.</summary>
    internal JinaV3Settings? JinaV3 { get; init; }

    /// <summary>Qwen3's settings (<c>model_type</c> "qwen3", the decoder of Qwen3-Embedding), else null.</summary>
    internal Qwen3Settings? Qwen3 { get; init; }

    /// <summary>Gemma 3's settings (<c>model_type</c> "gemma3_text", the text model of EmbeddingGemma), else null.</summary>
    internal Gemma3Settings? Gemma3 { get; init; }

    /// <summary>A decoder-only model with causal attention (its sentence vector is the last token's state).</summary>
    internal bool IsDecoder => Qwen3 != null || Gemma3 is { Bidirectional: false };

    /// <summary>
    /// The LoRA adapters the checkpoint carries, in index order (jina-embeddings-v3: retrieval.query, retrieval.passage,
    /// separation, classification, text-matching); empty for every other model. Choose one with
    /// <see cref="BertLoadOptions.Adapter"/>.
    /// </summary>
    public IReadOnlyList<string> Adapters => JinaV3?.Adaptations ?? [];

    /// <summary>The instruction the model's own <c>encode</c> puts before every text of adapter <paramref name="adapter"/> (jina-embeddings-v3's <c>task_instructions</c>), or null.</summary>
    public string? AdapterInstruction(string adapter) => JinaV3 != null && JinaV3.Instructions.TryGetValue(adapter, out var i) ? i : null;

    /// <summary>Whether absolute positions come from a table (not for DeBERTa-v3's unbiased input nor JinaBERT's ALiBi).</summary>
    internal bool HasPositionTable => PositionBiasedInput && Jina == null;

    /// <summary>True for the RoBERTa family's model types.</summary>
    internal bool IsRoberta => ModelType is "roberta" or "xlm-roberta" or "camembert";

    /// <summary>Rows of the position table before the first position (0, or <see cref="PaddingIdx"/> + 1).</summary>
    internal int PositionOffset => PositionPadding + 1;

    /// <summary>The embedding width in force.</summary>
    internal int EmbeddingWidth => EmbeddingSize == 0 ? HiddenSize : EmbeddingSize;

    /// <summary>Positions a sequence can take: the table's rows after <see cref="PositionOffset"/>.</summary>
    internal int PositionRows => MaxPositionEmbeddings - PositionOffset;

    /// <summary>Throws unless every field is in range.</summary>
    /// <exception cref="InvalidDataException">A field is out of range, or heads do not divide the hidden size.</exception>
    public void Validate(string source)
    {
        void Need(bool ok, string what) { if (!ok) throw new InvalidDataException($"{source}: {what}."); }
        Need(HiddenSize is > 0 and <= 1 << 16, $"hidden_size {HiddenSize} is out of range");
        Need(NumAttentionHeads is > 0 and <= 1024, $"num_attention_heads {NumAttentionHeads} is out of range");
        Need(HiddenSize % NumAttentionHeads == 0 || Qwen3 != null || Gemma3 != null, $"num_attention_heads {NumAttentionHeads} does not divide hidden_size {HiddenSize}");
        Need(NumHiddenLayers is > 0 and <= 1024, $"num_hidden_layers {NumHiddenLayers} is out of range");
        Need(IntermediateSize is > 0 and <= 1 << 20, $"intermediate_size {IntermediateSize} is out of range");
        Need(float.IsFinite(LayerNormEps) && LayerNormEps >= 0, $"layer_norm_eps {LayerNormEps} is not finite and ≥ 0");
        Need(MaxPositionEmbeddings is > 0 and <= 1 << 20, $"max_position_embeddings {MaxPositionEmbeddings} is out of range");
        Need(TypeVocabSize is > 0 and <= 1 << 16, $"type_vocab_size {TypeVocabSize} is out of range");
        Need(VocabSize is > 0 and < 1 << 24, $"vocab_size {VocabSize} is out of range (ids travel as floats, exact below 2^24)");
        Need(HiddenAct is Activation.Gelu or Activation.GeluTanh or Activation.Relu or Activation.Silu || (Nomic is { Gated: true } && HiddenAct == Activation.Sigmoid), $"hidden_act {HiddenAct} is not supported");
        Need(ModelType is "bert" or "distilbert" or "mpnet" or "electra" or "deberta-v2" or "modernbert" or "nomic_bert" or "new" or "gte" or "qwen3" or "qwen2" or "gemma3_text" || IsRoberta, $"model_type '{ModelType}' is not bert, distilbert, mpnet, electra, roberta, xlm-roberta, camembert, deberta-v2, modernbert, nomic_bert, new, gte, qwen3, qwen2 or gemma3_text");
        Need((ModelType is "qwen3" or "qwen2") == (Qwen3 != null), "Qwen3's settings belong to model_type qwen3 or qwen2 only");
        Need((ModelType == "gemma3_text") == (Gemma3 != null), "Gemma 3's settings belong to model_type gemma3_text only");
        if (Gemma3 is { } g3)
        {
            Need(g3.HeadDim is >= 2 and <= 1024 && g3.HeadDim % 2 == 0, $"head_dim {g3.HeadDim} is not an even width from 2 to 1024 (RoPE rotates pairs)");
            Need(g3.KvHeads is >= 1 and <= 1024 && NumAttentionHeads % g3.KvHeads == 0, $"num_key_value_heads {g3.KvHeads} does not divide num_attention_heads {NumAttentionHeads}");
            Need((long)NumAttentionHeads * g3.HeadDim <= 1 << 16, $"num_attention_heads × head_dim = {(long)NumAttentionHeads * g3.HeadDim} is out of range");
            Need(g3.GlobalTheta is >= 1 and <= float.MaxValue && g3.LocalTheta is >= 1 and <= float.MaxValue, $"a RoPE base ({g3.GlobalTheta}, {g3.LocalTheta}) is below 1 or not finite in float32");
            Need(g3.SlidingLayers.Length == NumHiddenLayers, $"layer_types has {g3.SlidingLayers.Length} entries for {NumHiddenLayers} layers");
            Need(g3.Window is >= 0 and <= 1 << 20, $"sliding_window gives a window of {g3.Window}, out of range");
            Need(g3.QueryPreAttnScalar is > 0 and <= float.MaxValue, $"query_pre_attn_scalar {g3.QueryPreAttnScalar} is not positive and finite");
            Need(g3.SoftCap is >= 0 and <= float.MaxValue, $"attn_logit_softcapping {g3.SoftCap} is negative or not finite");
        }
        if (Qwen3 is { } q3)
        {
            Need(q3.HeadDim is >= 2 and <= 1024 && q3.HeadDim % 2 == 0, $"head_dim {q3.HeadDim} is not an even width from 2 to 1024 (RoPE rotates pairs)");
            Need(q3.KvHeads is >= 1 and <= 1024 && NumAttentionHeads % q3.KvHeads == 0, $"num_key_value_heads {q3.KvHeads} does not divide num_attention_heads {NumAttentionHeads}");
            Need((long)NumAttentionHeads * q3.HeadDim <= 1 << 16, $"num_attention_heads × head_dim = {(long)NumAttentionHeads * q3.HeadDim} is out of range");
            Need(q3.Theta is >= 1 and <= float.MaxValue, $"rope_theta {q3.Theta} is below 1 or not finite in float32");
        }
        Need((ModelType is "new" or "gte") == (Gte != null), "GTE's settings belong to model_type new or gte only");
        if (Gte is { } gte)
        {
            Need(gte.Theta is >= 1 and <= float.MaxValue && gte.NtkFactor is >= 1 and <= 1 << 20 && gte.Theta * gte.NtkFactor <= float.MaxValue,
                $"rope_theta {gte.Theta} or the NTK factor {gte.NtkFactor} is out of range (a base ≥ 1, finite in float32)");
            Need(HiddenSize / NumAttentionHeads % 2 == 0, $"the head width {HiddenSize / NumAttentionHeads} is odd (RoPE rotates pairs)");
        }
        Need((ModelType == "nomic_bert") == (Nomic != null), "NomicBERT's settings belong to model_type nomic_bert only");
        if (Nomic is { } nb)
        {
            Need(nb.Theta is >= 1 and <= float.MaxValue, $"rotary_emb_base {nb.Theta} is below 1 or not finite in float32");
            Need(HiddenSize / NumAttentionHeads % 2 == 0, $"the head width {HiddenSize / NumAttentionHeads} is odd (RoPE rotates pairs)");
        }
        Need((ModelType == "modernbert") == (ModernBert != null), "ModernBERT's settings belong to model_type modernbert only");
        if (ModernBert is { } mb)
        {
            Need(mb.GlobalLayers.Length == NumHiddenLayers, $"layer_types has {mb.GlobalLayers.Length} entries for {NumHiddenLayers} layers");
            Need(mb.Window is >= 0 and <= 1 << 20, $"local_attention {2 * mb.Window} is out of range");
            Need(mb.GlobalTheta is >= 1 and <= float.MaxValue && mb.LocalTheta is >= 1 and <= float.MaxValue, $"a RoPE base ({mb.GlobalTheta}, {mb.LocalTheta}) is below 1 or not finite in float32");
            Need(HiddenSize / NumAttentionHeads % 2 == 0, $"the head width {HiddenSize / NumAttentionHeads} is odd (RoPE rotates pairs)");
        }
        Need(Jina == null || ModelType == "bert", "JinaBERT's settings (ALiBi) belong to model_type bert only");
        Need(JinaV3 == null || ModelType == "xlm-roberta", "jina-embeddings-v3's settings (rotary, LoRA) belong to model_type xlm-roberta only");
        if (JinaV3 is { } j3)
        {
            Need(j3.Theta is >= 1 and <= float.MaxValue, $"rotary_emb_base {j3.Theta} is below 1 or not finite in float32");
            Need(HiddenSize / NumAttentionHeads % 2 == 0, $"the head width {HiddenSize / NumAttentionHeads} is odd (RoPE rotates pairs)");
        }
        Need((ModelType == "deberta-v2") == (Deberta != null), "DeBERTa-v2's relative attention settings belong to model_type deberta-v2 only");
        if (Deberta is { } rel)
            Need(rel.Span is > 0 and <= 1 << 16 && rel.MaxRelativePositions is > 1 and <= 1 << 20 && (rel.Buckets <= 0 || (rel.Buckets >= 2 && rel.MaxRelativePositions > rel.Buckets / 2 + 1)),
                $"DeBERTa's relative positions (position_buckets {rel.Buckets}, max_relative_positions {rel.MaxRelativePositions}) are out of range");
        Need(EmbeddingSize is >= 0 and <= 1 << 16 && (EmbeddingSize == 0 || EmbeddingSize == HiddenSize || ModelType == "electra"),
            $"embedding_size {EmbeddingSize} is not supported (a projected embedding is ELECTRA's)");
        Need(ModelType == "mpnet" ? RelativeAttentionNumBuckets is >= 32 and <= 1 << 16 : RelativeAttentionNumBuckets == 0,
            $"relative_attention_num_buckets {RelativeAttentionNumBuckets} is not supported (MPNet: at least the 32 its bucket function uses; others: none)");
        Need(PaddingIdx >= -1 && (ModelType == "mpnet" ? PositionPadding == 1 : IsRoberta ? PositionPadding < VocabSize : PaddingIdx == -1),
            $"padding index {PaddingIdx} is not supported (RoBERTa: a vocabulary id; MPNet: 1; others: none)");
        Need(PositionRows > 0, $"max_position_embeddings {MaxPositionEmbeddings} leaves no position after the padding index {PositionPadding}");
        Need(PoolerActivation is Activation.Tanh or Activation.Relu or Activation.Gelu or Activation.GeluTanh, $"pooler activation {PoolerActivation} is not tanh, ReLU or GELU");
    }

    /// <summary>Reads a Hugging Face <c>config.json</c>.</summary>
    /// <exception cref="InvalidDataException">Not valid JSON, a field missing or out of range, or an unsupported activation or model type.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public static BertConfig FromJsonFile(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        return FromJson(FastAttn.IO.BoundedFile.ReadAllText(path, MaxJsonBytes, "a config.json"), path);
    }

    /// <summary>Largest config.json (or tokenizer configuration file) read: 16 MiB.</summary>
    internal const int MaxJsonBytes = 16 << 20;

    /// <summary>Reads the text of a Hugging Face <c>config.json</c>; <paramref name="source"/> names it in messages.</summary>
    /// <exception cref="InvalidDataException">Not valid JSON, a field missing or out of range, or an unsupported activation or model type.</exception>
    public static BertConfig FromJson(string json, string source = "config.json")
    {
        ArgumentNullException.ThrowIfNull(json);
        try
        {
            using var doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 16, AllowTrailingCommas = true });
            var r = doc.RootElement;
            if (r.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{source}: not a JSON object.");
            int Int(string name, int? fallback = null)
            {
                bool present = r.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null;
                if (present && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i)) return i;
                // absent (or null): the family's default; present but not an integer: refused, never silently replaced
                if (!present && fallback is int f) return f;
                throw new InvalidDataException($"{source}: '{name}' is missing or not an integer.");
            }
            // older configs have no model_type: DistilBERT's are told by its own field names
            string modelType = r.TryGetProperty("model_type", out var mt) && mt.ValueKind == JsonValueKind.String ? mt.GetString()!
                : !r.TryGetProperty("hidden_size", out _) && r.TryGetProperty("dim", out _) && r.TryGetProperty("n_heads", out _) ? "distilbert" : "bert";
            bool roberta = modelType is "roberta" or "xlm-roberta" or "camembert";
            if (modelType is not ("bert" or "distilbert" or "mpnet" or "electra" or "deberta-v2" or "modernbert" or "nomic_bert" or "new" or "gte" or "qwen3" or "qwen2" or "gemma3_text") && !roberta)
                throw new InvalidDataException($"{source}: model_type '{modelType}' is not a model FastAttn loads (bert, distilbert, mpnet, electra, roberta, xlm-roberta, camembert, deberta-v2, modernbert, nomic_bert, new, gte; qwen3 for Qwen3-Embedding, qwen2, gemma3_text for EmbeddingGemma).");
            if (modelType is "qwen3" or "qwen2") return ReadQwen3(r, Int, source, modelType == "qwen2");
            if (modelType == "gemma3_text") return ReadGemma3(r, Int, source);
            if (modelType == "nomic_bert") return ReadNomic(r, Int, source);
            if (modelType is "new" or "gte") return ReadGte(r, Int, source, modelType);
            if (modelType == "deberta-v2") return ReadDeberta(r, Int, source);
            if (modelType == "modernbert") return ReadModernBert(r, Int, source);
            if (modelType == "distilbert")
            {
                // DistilBERT's own field names; LayerNorm ε is fixed at 1e-12 in its code, and it has no token types
                var dact = Activation.Gelu;
                if (r.TryGetProperty("activation", out var da) && da.ValueKind == JsonValueKind.String) dact = ParseActivation(da.GetString()!, source);
                // sinusoidal_pos_embds: the table is written into position_embeddings.weight, which the checkpoint carries either way
                var d = new BertConfig
                {
                    ModelType = "distilbert", HiddenSize = Int("dim"), NumAttentionHeads = Int("n_heads"), NumHiddenLayers = Int("n_layers"),
                    IntermediateSize = Int("hidden_dim"), HiddenAct = dact, LayerNormEps = 1e-12f, MaxPositionEmbeddings = Int("max_position_embeddings", 512),
                    TypeVocabSize = 1, VocabSize = Int("vocab_size"), PoolerActivation = Activation.Relu,
                };
                d.Validate(source);
                return d;
            }
            // relative_key / relative_key_query add learned distance embeddings FastAttn does not compute: refuse, never run without them.
            // "alibi" is JinaBERT's (jina-embeddings-v2): no position table, a distance bias per head
            string posType = r.TryGetProperty("position_embedding_type", out var pet) && pet.ValueKind != JsonValueKind.Null
                ? pet.ValueKind == JsonValueKind.String ? pet.GetString()! : throw new InvalidDataException($"{source}: 'position_embedding_type' is not a string.")
                : "absolute";
            if (posType == "rotary" && modelType == "xlm-roberta") return ReadJinaV3(r, Int, source);
            if (posType != "absolute" && !(posType == "alibi" && modelType == "bert"))
                throw new InvalidDataException($"{source}: position_embedding_type '{posType}' is not supported (absolute; alibi for JinaBERT's model_type bert; rotary for jina-embeddings-v3's xlm-roberta).");
            JinaSettings? jina = posType == "alibi" ? ReadJina(r, source) : null;
            if (r.TryGetProperty("is_decoder", out var dec) && dec.ValueKind == JsonValueKind.True)
                throw new InvalidDataException($"{source}: is_decoder is true; FastAttn runs BERT as an encoder (bidirectional attention) only.");
            float eps = 1e-12f;
            if (r.TryGetProperty("layer_norm_eps", out var e) && e.ValueKind == JsonValueKind.Number) eps = (float)e.GetDouble();
            var act = Activation.Gelu;
            if (r.TryGetProperty("hidden_act", out var a) && a.ValueKind == JsonValueKind.String)
                act = ParseActivation(a.GetString()!, source);
            bool mpnet = modelType == "mpnet";
            var c = new BertConfig
            {
                HiddenSize = Int("hidden_size"), NumAttentionHeads = Int("num_attention_heads"), NumHiddenLayers = Int("num_hidden_layers"),
                IntermediateSize = Int("intermediate_size"), HiddenAct = act, LayerNormEps = eps,
                MaxPositionEmbeddings = Int("max_position_embeddings", mpnet || roberta ? 514 : 512), VocabSize = Int("vocab_size"),
                // MPNet has no token types (one zero embedding stands in); its relative bias has 32 buckets unless stated
                TypeVocabSize = mpnet ? 1 : Int("type_vocab_size", 2), ModelType = modelType,
                RelativeAttentionNumBuckets = mpnet ? Int("relative_attention_num_buckets", 32) : 0,
                // ELECTRA: embeddings of embedding_size, projected to hidden_size; its classification head's activation is GELU
                EmbeddingSize = modelType == "electra" ? Int("embedding_size", Int("hidden_size")) : 0,
                PoolerActivation = modelType == "electra" ? Activation.Gelu : Activation.Tanh,
                // RoBERTa numbers positions after its padding index (pad_token_id); MPNet's code fixes it at 1
                PaddingIdx = mpnet ? 1 : roberta ? Int("pad_token_id", 1) : -1,
                Jina = jina,
            };
            c.Validate(source);
            return c;
        }
        catch (JsonException ex) { throw new InvalidDataException($"{source}: not valid JSON: {ex.Message}", ex); }
        // System.Text.Json throws this when a string read escapes half a surrogate pair ("\ud800")
        catch (InvalidOperationException ex) { throw new InvalidDataException($"{source}: a string holds a lone surrogate ({ex.Message})", ex); }
    }

    /// <summary>
    /// DeBERTa-v2/v3 (<c>DebertaV2Config</c>): BERT's fields plus the disentangled attention's — <c>relative_attention</c>
    /// (required), <c>pos_att_type</c> (c2p, p2c), <c>position_buckets</c>, <c>max_relative_positions</c>,
    /// <c>norm_rel_ebd</c>, <c>share_att_key</c>, <c>position_biased_input</c>; its defaults where a field is absent
    /// (ε 1e-7, no token types, GELU pooler). Refused: the convolution of the v2 xlarge models (<c>conv_kernel_size</c>),
    /// a head width other than hidden / heads, embeddings narrower than the hidden states.
    /// </summary>
    private static BertConfig ReadDeberta(JsonElement r, Func<string, int?, int> Int, string source)
    {
        InvalidDataException Bad(string what) => new($"{source}: {what}.");
        bool Bool(string name, bool fallback) => JsonBool(r, name, fallback, source);
        string Str(string name, string fallback) => r.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()! : fallback;
        if (!Bool("relative_attention", false)) throw Bad("relative_attention is not true; FastAttn runs DeBERTa with its relative attention only");
        if (Int("conv_kernel_size", 0) != 0) throw Bad("conv_kernel_size is set: the convolution layer of DeBERTa-v2 xlarge/xxlarge is not run by FastAttn");
        int hidden = Int("hidden_size", null), heads = Int("num_attention_heads", null);
        if (heads > 0 && r.TryGetProperty("attention_head_size", out var ahs) && ahs.ValueKind == JsonValueKind.Number && (!ahs.TryGetInt32(out int hs) || hs * heads != hidden))
            throw Bad("attention_head_size is not hidden_size / num_attention_heads");
        if (Int("embedding_size", hidden) != hidden) throw Bad("embedding_size differs from hidden_size (a projected embedding), which FastAttn does not run for DeBERTa");
        // pos_att_type: a list ["p2c", "c2p"] or a string "p2c|c2p"
        var types = new List<string>();
        if (r.TryGetProperty("pos_att_type", out var pat))
        {
            if (pat.ValueKind == JsonValueKind.String) types.AddRange(pat.GetString()!.ToLowerInvariant().Split('|', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries));
            else if (pat.ValueKind == JsonValueKind.Array) foreach (var e in pat.EnumerateArray()) types.Add(e.ValueKind == JsonValueKind.String ? e.GetString()!.ToLowerInvariant() : throw Bad("pos_att_type holds a non-string"));
            else if (pat.ValueKind != JsonValueKind.Null) throw Bad("pos_att_type is not a list or a string");
        }
        foreach (var t in types) if (t is not ("c2p" or "p2c")) throw Bad($"pos_att_type '{t}' is not c2p or p2c");
        int maxPos = Int("max_position_embeddings", 512);
        int maxRel = Int("max_relative_positions", -1);
        if (maxRel < 1) maxRel = maxPos;
        int buckets = Int("position_buckets", -1);
        string norm = Str("norm_rel_ebd", "none").ToLowerInvariant();
        var normParts = norm.Split('|', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        foreach (var n in normParts) if (n is not ("layer_norm" or "none")) throw Bad($"norm_rel_ebd '{n}' is not layer_norm or none");
        var rel = new DebertaRelative(buckets > 0 ? buckets : maxRel, buckets, maxRel, types.Contains("c2p"), types.Contains("p2c"), Bool("share_att_key", false), normParts.Contains("layer_norm"));
        float eps = r.TryGetProperty("layer_norm_eps", out var e2) && e2.ValueKind == JsonValueKind.Number ? (float)e2.GetDouble() : 1e-7f;
        var c = new BertConfig
        {
            ModelType = "deberta-v2", HiddenSize = hidden, NumAttentionHeads = heads, NumHiddenLayers = Int("num_hidden_layers", null),
            IntermediateSize = Int("intermediate_size", null), VocabSize = Int("vocab_size", null), MaxPositionEmbeddings = maxPos,
            HiddenAct = r.TryGetProperty("hidden_act", out var a) && a.ValueKind == JsonValueKind.String ? ParseActivation(a.GetString()!, source) : Activation.Gelu,
            PoolerActivation = ParseActivation(Str("pooler_hidden_act", "gelu"), source), LayerNormEps = eps,
            // no token types (type_vocab_size 0): one zero embedding stands in
            TypeVocabSize = Math.Max(Int("type_vocab_size", 0), 1),
            Deberta = rel, PositionBiasedInput = Bool("position_biased_input", true),
        };
        c.Validate(source);
        return c;
    }

    /// <summary>
    /// ModernBERT (<c>ModernBertConfig</c>): <c>hidden_size</c>, <c>num_attention_heads</c>, <c>num_hidden_layers</c>,
    /// <c>intermediate_size</c> (the GLU's width: <c>Wi</c> has twice its rows), <c>hidden_activation</c>, <c>norm_eps</c>,
    /// <c>norm_bias</c>, <c>attention_bias</c>, <c>mlp_bias</c>, <c>max_position_embeddings</c>, <c>vocab_size</c>; which layers
    /// attend globally (<c>layer_types</c>, else every <c>global_attn_every_n_layers</c>-th from the first), the local
    /// layers' window (<c>local_attention</c>: a query sees half of it on each side), RoPE's bases (<c>rope_parameters</c>
    /// per layer type, or <c>global_rope_theta</c>/<c>local_rope_theta</c>); the classification head's
    /// <c>classifier_pooling</c>, <c>classifier_activation</c>, <c>classifier_bias</c>. Defaults are the config class's.
    /// Refused: a RoPE type other than the default (scaled RoPE), a head width set apart from hidden / heads.
    /// </summary>
    private static BertConfig ReadModernBert(JsonElement r, Func<string, int?, int> Int, string source)
    {
        InvalidDataException Bad(string what) => new($"{source}: {what}.");
        bool Bool(string name, bool fallback) => JsonBool(r, name, fallback, source);
        string Str(string name, string fallback) => !r.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null ? fallback
            : v.ValueKind == JsonValueKind.String ? v.GetString()! : throw Bad($"'{name}' is not a string");
        double Num(JsonElement o, string name, double fallback) => JsonNumber(o, name, fallback, source);
        int hidden = Int("hidden_size", 768), heads = Int("num_attention_heads", 12), layers = Int("num_hidden_layers", 22);
        if (r.TryGetProperty("head_dim", out var hd) && hd.ValueKind == JsonValueKind.Number && heads > 0 && (!hd.TryGetInt32(out int hw) || hw * heads != hidden))
            throw Bad("head_dim is not hidden_size / num_attention_heads");
        if (r.TryGetProperty("rope_scaling", out var rs) && rs.ValueKind != JsonValueKind.Null) throw Bad("rope_scaling is set: scaled RoPE is not run by FastAttn");
        double globalTheta = Num(r, "global_rope_theta", 160000), localTheta = Num(r, "local_rope_theta", 10000);
        if (r.TryGetProperty("rope_parameters", out var rp) && rp.ValueKind != JsonValueKind.Null)
        {
            if (rp.ValueKind != JsonValueKind.Object) throw Bad("rope_parameters is not an object");
            foreach (var (kind, isGlobal) in new[] { ("full_attention", true), ("sliding_attention", false) })
            {
                if (!rp.TryGetProperty(kind, out var p) || p.ValueKind == JsonValueKind.Null) continue;
                if (p.ValueKind != JsonValueKind.Object) throw Bad($"rope_parameters.{kind} is not an object");
                if (p.TryGetProperty("rope_type", out var rt) && rt.ValueKind != JsonValueKind.Null && !(rt.ValueKind == JsonValueKind.String && rt.GetString() == "default"))
                    throw Bad($"rope_parameters.{kind}.rope_type is not 'default': scaled RoPE is not run by FastAttn");
                if (isGlobal) globalTheta = Num(p, "rope_theta", globalTheta); else localTheta = Num(p, "rope_theta", localTheta);
            }
        }
        if (layers is < 1 or > 1024) throw Bad($"num_hidden_layers {layers} is out of range");
        var global = new bool[layers];
        if (r.TryGetProperty("layer_types", out var lt) && lt.ValueKind != JsonValueKind.Null)
        {
            if (lt.ValueKind != JsonValueKind.Array || lt.GetArrayLength() != layers) throw Bad($"layer_types is not a list of {layers} layer types");
            int i = 0;
            foreach (var e in lt.EnumerateArray())
                global[i++] = e.ValueKind == JsonValueKind.String && e.GetString() is "full_attention" ? true
                    : e.ValueKind == JsonValueKind.String && e.GetString() is "sliding_attention" ? false
                    : throw Bad($"layer_types[{i - 1}] is not full_attention or sliding_attention");
        }
        else
        {
            int every = Int("global_attn_every_n_layers", 3);
            if (every < 1) throw Bad($"global_attn_every_n_layers {every} is below 1");
            for (int i = 0; i < layers; i++) global[i] = i % every == 0;
        }
        int local = Int("local_attention", 128);
        if (local < 2) throw Bad($"local_attention {local} is below 2");
        string pooling = Str("classifier_pooling", "cls");
        if (pooling is not ("cls" or "mean")) throw Bad($"classifier_pooling '{pooling}' is not cls or mean");
        bool token = r.TryGetProperty("architectures", out var ar) && ar.ValueKind == JsonValueKind.Array
            && ar.EnumerateArray().Any(e => e.ValueKind == JsonValueKind.String && e.GetString()!.EndsWith("ForTokenClassification", StringComparison.Ordinal));
        var settings = new ModernBertSettings(global, local / 2, globalTheta, localTheta, Bool("norm_bias", false), Bool("attention_bias", false), Bool("mlp_bias", false),
            pooling == "mean", ParseActivation(Str("classifier_activation", "gelu"), source), Bool("classifier_bias", false), token);
        float eps = (float)Num(r, "norm_eps", 1e-5);
        var c = new BertConfig
        {
            ModelType = "modernbert", HiddenSize = hidden, NumAttentionHeads = heads, NumHiddenLayers = layers,
            IntermediateSize = Int("intermediate_size", 1152), VocabSize = Int("vocab_size", 50368), MaxPositionEmbeddings = Int("max_position_embeddings", 8192),
            HiddenAct = ParseActivation(Str("hidden_activation", "gelu"), source), LayerNormEps = eps,
            // no token types and no position table (RoPE): one zero token-type row stands in
            TypeVocabSize = 1, PoolerActivation = settings.ClassifierActivation,
            ModernBert = settings,
        };
        c.Validate(source);
        return c;
    }

    /// <summary>
    /// NomicBERT (nomic-embed-text-v1/v1.5/v2-moe, its <c>NomicBertConfig</c>, GPT-2's field names): <c>n_embd</c>, <c>n_head</c>,
    /// <c>n_layer</c>, <c>n_inner</c> (gated: rounded up to a multiple of 256 as its gated MLP does, default 8/3 of the width;
    /// plain: as given, default 4×), <c>vocab_size</c> (rounded up to <c>pad_vocab_size_multiple</c>), <c>type_vocab_size</c>,
    /// <c>layer_norm_epsilon</c>, <c>activation_function</c> (swiglu, geglu, glu: the gated feed-forward; gelu and its tanh
    /// forms: the plain one), <c>rotary_emb_base</c>, the biases (<c>qkv_proj_bias</c>, <c>mlp_fc1_bias</c>,
    /// <c>mlp_fc2_bias</c>), <c>n_positions</c>; the mixture of experts (<c>moe_every_n_layers</c>, <c>num_experts</c>,
    /// <c>moe_top_k</c>, <c>moe_normalize_expert_weights</c>). With <c>rotary_scaling_factor</c> set, sequences are limited
    /// to <c>max_trained_positions</c> (beyond them the model changes its RoPE base with the batch's length, dynamic NTK,
    /// which FastAttn does not run). Refused by name: prenorm, causal, parallel blocks, RMS norms, partial, interleaved or
    /// scaled rotary embeddings, expert-choice routing, experts with a gated MLP.
    /// </summary>
    private static BertConfig ReadNomic(JsonElement r, Func<string, int?, int> Int, string source)
    {
        InvalidDataException Bad(string what) => new($"{source}: {what}.");
        bool Bool(string name, bool fallback) => JsonBool(r, name, fallback, source);
        double Num(string name, double fallback) => JsonNumber(r, name, fallback, source);
        bool Set(string name) => r.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null;
        foreach (var (flag, what) in new[] { ("prenorm", "prenorm (its residual stream differs)"), ("causal", "causal attention"), ("parallel_block", "parallel blocks"),
                     ("use_rms_norm", "RMS norms"), ("rotary_emb_interleaved", "interleaved rotary embeddings") })
            if (Bool(flag, false)) throw Bad($"{flag} is true: {what} is not run by FastAttn");
        if (Set("rotary_emb_scale_base")) throw Bad("rotary_emb_scale_base is set: scaled rotary embeddings (xPos) are not run by FastAttn");
        if (Num("rotary_emb_fraction", 0) != 1.0) throw Bad("rotary_emb_fraction is not 1: FastAttn runs NomicBERT with rotary embeddings over the whole head");
        string act = r.TryGetProperty("activation_function", out var af) && af.ValueKind == JsonValueKind.String ? af.GetString()! : "gelu_new";
        // swiglu/geglu/glu: the gated MLP (v1, v1.5); gelu and its tanh forms: the plain fc1 → act → fc2 (v2)
        bool gated = act is "swiglu" or "geglu" or "glu";
        var gate = act switch
        {
            "swiglu" => Activation.Silu, "geglu" => Activation.Gelu, "glu" => Activation.Sigmoid,
            "gelu" => Activation.Gelu, "gelu_new" or "gelu_fast" or "gelu_pytorch_tanh" => Activation.GeluTanh,
            _ => throw Bad($"activation_function '{act}' is not swiglu, geglu, glu, gelu, gelu_new, gelu_fast or gelu_pytorch_tanh"),
        };
        int everyN = Int("moe_every_n_layers", 0), experts = 0, topK = 0;
        if (everyN < 0) throw Bad($"moe_every_n_layers {everyN} is negative");
        if (everyN > 0)
        {
            if (gated) throw Bad("a mixture of experts with a gated MLP is not run by FastAttn");
            if (Bool("expert_choice_router", false)) throw Bad("expert_choice_router is true: expert-choice routing is not run by FastAttn");
            if (Int("num_shared_experts", 0) != 0) throw Bad("num_shared_experts is set: shared experts are not run by FastAttn");
            if (Int("ffn_div", 1) != 1) throw Bad("ffn_div is not 1: divided expert widths are not run by FastAttn");
            experts = Int("num_experts", null);
            topK = Int("moe_top_k", null);
            if (experts is < 1 or > 1024 || topK < 1 || topK > experts) throw Bad($"num_experts {experts} or moe_top_k {topK} is out of range");
        }
        int hidden = Int("n_embd", 768), heads = Int("n_head", 12), layers = Int("n_layer", 12);
        if (hidden is < 1 or > 1 << 16) throw Bad($"n_embd {hidden} is out of range");
        int inner = Int("n_inner", gated ? (int)(8L * hidden / 3) : (int)Math.Min(4L * hidden, 1 << 21));
        if (inner is < 1 or > 1 << 20) throw Bad($"n_inner {inner} is out of range");
        if (gated) inner = (inner + 255) / 256 * 256;
        int vocab = Int("vocab_size", 50257), multiple = Int("pad_vocab_size_multiple", 1);
        if (multiple is < 1 or > 1 << 16 || vocab is < 1 or > 1 << 24) throw Bad($"vocab_size {vocab} or pad_vocab_size_multiple {multiple} is out of range");
        if (vocab % multiple != 0) vocab += multiple - vocab % multiple;
        int positions = Int("n_positions", 1024);
        bool ntk = Set("rotary_scaling_factor");
        if (ntk) positions = Math.Min(positions, Int("max_trained_positions", 2048));
        var c = new BertConfig
        {
            ModelType = "nomic_bert", HiddenSize = hidden, NumAttentionHeads = heads, NumHiddenLayers = layers, IntermediateSize = inner,
            VocabSize = vocab, MaxPositionEmbeddings = positions, TypeVocabSize = Math.Max(Int("type_vocab_size", 2), 1),
            LayerNormEps = (float)Num("layer_norm_epsilon", 1e-5), HiddenAct = gate,
            Nomic = new NomicSettings(Num("rotary_emb_base", 10000), Bool("qkv_proj_bias", true), Bool("mlp_fc1_bias", true), Bool("mlp_fc2_bias", true),
                Int("type_vocab_size", 2) > 0, ntk, gated, everyN, experts, topK, everyN > 0 && Bool("moe_normalize_expert_weights", false)),
        };
        c.Validate(source);
        return c;
    }

    /// <summary>
    /// JinaBERT (jina-embeddings-v2, the jina-reranker-v1 models; <c>JinaBertConfig</c>): BERT's fields with
    /// <c>position_embedding_type</c> "alibi" and <c>feed_forward_type</c> — "original" (BERT's feed-forward; the default),
    /// "geglu" or "reglu" (one bias-free product of twice the width: GELU or ReLU of its first half times its second half,
    /// then <c>wo</c> and a norm, as its <c>JinaBertGLUMLP</c>). Other kinds are refused, as its code refuses them.
    /// </summary>
    private static JinaSettings ReadJina(JsonElement r, string source)
    {
        string kind = !r.TryGetProperty("feed_forward_type", out var ft) || ft.ValueKind == JsonValueKind.Null ? "original"
            : ft.ValueKind == JsonValueKind.String ? ft.GetString()! : throw new InvalidDataException($"{source}: 'feed_forward_type' is not a string.");
        return new JinaSettings(kind switch
        {
            "original" => null,
            "geglu" => Activation.Gelu,
            "reglu" => Activation.Relu,
            _ => throw new InvalidDataException($"{source}: feed_forward_type '{kind}' is not original, geglu or reglu (JinaBERT's kinds)."),
        });
    }

    /// <summary>
    /// GTE's "new" architecture (<c>NewConfig</c> of Alibaba-NLP/new-impl: gte-base/large-en-v1.5, gte-multilingual-base,
    /// gte-multilingual-reranker-base): BERT's field names with its defaults (vocabulary 30,528, 2,048 positions, one token
    /// type, ε 1e-12, GELU), <c>rope_theta</c>, <c>rope_scaling</c> ({"type": "ntk", "factor": f}: fixed NTK scaling),
    /// <c>pack_qkv</c>, <c>type_vocab_size</c> (0: none). Refused by name: absolute positions, RMS norms, the logn attention
    /// scale, other RoPE scalings (mixed NTK included), a head width apart from hidden / heads, a partial rotary width
    /// (<c>rotary_emb_dim</c>). <c>model_type</c> "gte" (snowflake-arctic-embed-m-v2.0, whose remote code is a copy of this
    /// architecture under other class names; text-embeddings-inference reads both types with one config): the same
    /// fields, each required — that copy's defaults are not readable here, so none is assumed.
    /// </summary>
    private static BertConfig ReadGte(JsonElement r, Func<string, int?, int> IntOr, string source, string modelType)
    {
        bool strict = modelType == "gte";
        int Int(string name, int fallback) => IntOr(name, strict ? null : fallback);
        InvalidDataException Bad(string what) => new($"{source}: {what}.");
        bool Bool(string name, bool fallback) => JsonBool(r, name, fallback, source);
        string Str(string name, string fallback) => !r.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null
            ? (strict ? throw Bad($"'{name}' is missing (model_type gte: every field is required)") : fallback)
            : v.ValueKind == JsonValueKind.String ? v.GetString()! : throw Bad($"'{name}' is not a string");
        double Num(string name, double fallback) => strict && !(r.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number)
            ? throw Bad($"'{name}' is missing or not a number (model_type gte: every field is required)") : JsonNumber(r, name, fallback, source);
        if (Str("position_embedding_type", "rope") != "rope") throw Bad($"position_embedding_type '{Str("position_embedding_type", "rope")}' is not rope (FastAttn runs GTE's rotary form only)");
        if (Str("layer_norm_type", "layer_norm") != "layer_norm") throw Bad($"layer_norm_type '{Str("layer_norm_type", "layer_norm")}' is not layer_norm");
        if (Bool("logn_attention_scale", false)) throw Bad("logn_attention_scale is true: the length-dependent query scale is not run by FastAttn");
        double ntk = 1;
        if (r.TryGetProperty("rope_scaling", out var rs) && rs.ValueKind != JsonValueKind.Null)
        {
            if (rs.ValueKind != JsonValueKind.Object) throw Bad("rope_scaling is not an object");
            string type = rs.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "";
            if (type != "ntk") throw Bad($"rope_scaling type '{type}' is not ntk");
            if (rs.TryGetProperty("mixed_b", out var mb) && mb.ValueKind != JsonValueKind.Null) throw Bad("rope_scaling.mixed_b is set: mixed NTK scaling is not run by FastAttn");
            ntk = JsonNumber(rs, "factor", double.NaN, source);
            if (!(ntk >= 1 && ntk <= 1 << 20)) throw Bad($"rope_scaling.factor {ntk} is not in [1, 2^20]");
        }
        int hidden = Int("hidden_size", 768), heads = Int("num_attention_heads", 12), types = Int("type_vocab_size", 1);
        if (types is < 0 or > 1 << 16) throw Bad($"type_vocab_size {types} is out of range");
        if (heads > 0 && r.TryGetProperty("rotary_emb_dim", out var rd) && rd.ValueKind != JsonValueKind.Null && !(rd.TryGetInt32(out int rdim) && rdim * heads == hidden))
            throw Bad("rotary_emb_dim is not the head width: partial rotary embeddings are not run by FastAttn");
        var c = new BertConfig
        {
            ModelType = modelType, HiddenSize = hidden, NumAttentionHeads = heads, NumHiddenLayers = Int("num_hidden_layers", 12),
            IntermediateSize = Int("intermediate_size", 3072), VocabSize = Int("vocab_size", 30528), MaxPositionEmbeddings = Int("max_position_embeddings", 2048),
            TypeVocabSize = Math.Max(types, 1), LayerNormEps = (float)Num("layer_norm_eps", 1e-12),
            HiddenAct = ParseActivation(Str("hidden_act", "gelu"), source),
            Gte = new GteSettings(Num("rope_theta", 10000), ntk, Bool("pack_qkv", true), types > 0),
        };
        c.Validate(source);
        return c;
    }

    /// <summary>
    /// Qwen3 (transformers' <c>Qwen3Config</c>, the decoder of Qwen3-Embedding-0.6B/4B/8B) or Qwen2 (<c>Qwen2Config</c>: the
    /// same layer with q/k/v biases, an unbiased o, no per-head norms — the decoder of Qwen2-based embedders run as
    /// transformers runs them, causally), its defaults where a field is
    /// absent: grouped key/value heads (<c>num_key_value_heads</c>), a head width of its own (<c>head_dim</c>), RMS norms
    /// (<c>rms_norm_eps</c>), RoPE (<c>rope_theta</c>, or <c>rope_parameters</c> of type default), optional q/k/v/o biases
    /// (<c>attention_bias</c>). Refused: scaled RoPE (<c>rope_scaling</c> of any type but default), sliding-window layers.
    /// </summary>
    private static BertConfig ReadQwen3(JsonElement r, Func<string, int?, int> Int, string source, bool qwen2)
    {
        InvalidDataException Bad(string what) => new($"{source}: {what}.");
        bool Set(JsonElement o, string name, out JsonElement v) => o.TryGetProperty(name, out v) && v.ValueKind != JsonValueKind.Null;
        double theta = JsonNumber(r, "rope_theta", 10000, source);
        foreach (var key in new[] { "rope_scaling", "rope_parameters" })
            if (Set(r, key, out var rs))
            {
                if (rs.ValueKind != JsonValueKind.Object) throw Bad($"{key} is not an object");
                string type = Set(rs, "rope_type", out var t) || Set(rs, "type", out t) ? t.ValueKind == JsonValueKind.String ? t.GetString()! : throw Bad($"{key}'s type is not a string") : "default";
                if (type != "default") throw Bad($"{key} type '{type}' is not default: scaled RoPE is not run by FastAttn");
                if (Set(rs, "rope_theta", out _)) theta = JsonNumber(rs, "rope_theta", theta, source);
            }
        if (JsonBool(r, "use_sliding_window", false, source)) throw Bad("use_sliding_window is true: Qwen3's sliding-window layers are not run by FastAttn");
        // bidirectional Qwen embedders (is_causal false) come with remote code of their own: refused, never run causally
        if (!JsonBool(r, "is_causal", true, source)) throw Bad("is_causal is false: a bidirectional Qwen model (its own remote code) is not run by FastAttn");
        if (Set(r, "layer_types", out var lt))
        {
            if (lt.ValueKind != JsonValueKind.Array) throw Bad("layer_types is not an array");
            foreach (var l in lt.EnumerateArray())
                if (l.ValueKind != JsonValueKind.String || l.GetString() != "full_attention")
                    throw Bad($"layer_types holds '{(l.ValueKind == JsonValueKind.String ? l.GetString() : l.ValueKind.ToString())}': only full_attention layers are run by FastAttn");
        }
        int heads = Int("num_attention_heads", 32), hidden = Int("hidden_size", 4096);
        // Qwen2: q/k/v always biased, o never, no per-head norms, the head width hidden / heads unless stated
        var settings = qwen2
            ? new Qwen3Settings(Int("head_dim", heads > 0 && hidden % heads == 0 ? hidden / heads : 0), Int("num_key_value_heads", heads), theta, AttentionBias: false, QkNorm: false, Qwen2: true)
            : new Qwen3Settings(Int("head_dim", 128), Int("num_key_value_heads", heads), theta, JsonBool(r, "attention_bias", false, source));
        var c = new BertConfig
        {
            ModelType = qwen2 ? "qwen2" : "qwen3", HiddenSize = hidden, NumAttentionHeads = heads, NumHiddenLayers = Int("num_hidden_layers", 32),
            IntermediateSize = Int("intermediate_size", 22016), VocabSize = Int("vocab_size", 151936), MaxPositionEmbeddings = Int("max_position_embeddings", 32768),
            TypeVocabSize = 1, LayerNormEps = (float)JsonNumber(r, "rms_norm_eps", 1e-6, source),
            HiddenAct = ParseActivation(r.TryGetProperty("hidden_act", out var a) && a.ValueKind == JsonValueKind.String ? a.GetString()! : "silu", source),
            Qwen3 = settings,
        };
        c.Validate(source);
        return c;
    }

    /// <summary>
    /// Gemma 3's text model (transformers' <c>Gemma3TextConfig</c>; EmbeddingGemma with <c>use_bidirectional_attention</c>),
    /// its defaults where a field is absent: <c>head_dim</c>, <c>num_key_value_heads</c>, <c>hidden_activation</c>,
    /// <c>rms_norm_eps</c>, <c>query_pre_attn_scalar</c>, <c>attn_logit_softcapping</c>, <c>sliding_window</c> and the
    /// layers that use it (<c>layer_types</c>, else every <c>sliding_window_pattern</c>-th layer global), the RoPE bases
    /// (<c>rope_theta</c> and <c>rope_local_base_freq</c>, or <c>rope_parameters</c> per layer type). Refused: scaled RoPE.
    /// </summary>
    private static BertConfig ReadGemma3(JsonElement r, Func<string, int?, int> Int, string source)
    {
        InvalidDataException Bad(string what) => new($"{source}: {what}.");
        bool Set(JsonElement o, string name, out JsonElement v) => o.TryGetProperty(name, out v) && v.ValueKind != JsonValueKind.Null;
        double global = JsonNumber(r, "rope_theta", 1_000_000, source), local = JsonNumber(r, "rope_local_base_freq", 10_000, source);
        string RopeType(JsonElement o, string key) => Set(o, "rope_type", out var t) || Set(o, "type", out t)
            ? t.ValueKind == JsonValueKind.String ? t.GetString()! : throw Bad($"{key}'s type is not a string") : "default";
        if (Set(r, "rope_scaling", out var rs))
        {
            if (rs.ValueKind != JsonValueKind.Object) throw Bad("rope_scaling is not an object");
            if (RopeType(rs, "rope_scaling") != "default") throw Bad($"rope_scaling type '{RopeType(rs, "rope_scaling")}' is not default: scaled RoPE is not run by FastAttn");
        }
        if (Set(r, "rope_parameters", out var rp))
        {
            if (rp.ValueKind != JsonValueKind.Object) throw Bad("rope_parameters is not an object");
            foreach (var (key, isGlobal) in new[] { ("full_attention", true), ("sliding_attention", false) })
                if (Set(rp, key, out var part))
                {
                    if (part.ValueKind != JsonValueKind.Object) throw Bad($"rope_parameters.{key} is not an object");
                    if (RopeType(part, key) != "default") throw Bad($"rope_parameters.{key} type '{RopeType(part, key)}' is not default: scaled RoPE is not run by FastAttn");
                    double theta = JsonNumber(part, "rope_theta", isGlobal ? global : local, source);
                    if (isGlobal) global = theta; else local = theta;
                }
        }
        int layers = Int("num_hidden_layers", 26), heads = Int("num_attention_heads", 8);
        var sliding = new bool[Math.Clamp(layers, 0, 1 << 16)];
        if (Set(r, "layer_types", out var lt))
        {
            if (lt.ValueKind != JsonValueKind.Array) throw Bad("layer_types is not an array");
            if (lt.GetArrayLength() != sliding.Length) throw Bad($"layer_types has {lt.GetArrayLength()} entries for {layers} layers");
            int i = 0;
            foreach (var l in lt.EnumerateArray())
                sliding[i++] = (l.ValueKind == JsonValueKind.String ? l.GetString() : null) switch
                {
                    "sliding_attention" => true, "full_attention" => false,
                    var other => throw Bad($"layer_types holds '{other ?? l.ValueKind.ToString()}', not sliding_attention or full_attention"),
                };
        }
        else
        {
            int pattern = Int("sliding_window_pattern", 6);
            if (pattern < 1) throw Bad($"sliding_window_pattern {pattern} is below 1");
            for (int i = 0; i < sliding.Length; i++) sliding[i] = (i + 1) % pattern != 0;
        }
        bool bidirectional = JsonBool(r, "use_bidirectional_attention", false, source);
        // transformers keeps the window as sliding_window (causal: a key less than that far back) or, bidirectional, halves it:
        // |i - j| < sliding_window / 2 + 1; the kernel's window is the largest distance seen
        int window = 0;
        if (sliding.Any(x => x))
        {
            int w = Int("sliding_window", 4096);
            if (w < 1) throw Bad($"sliding_window {w} is below 1");
            window = bidirectional ? w / 2 : w - 1;
        }
        string act = r.TryGetProperty("hidden_activation", out var ha) && ha.ValueKind == JsonValueKind.String ? ha.GetString()!
            : r.TryGetProperty("hidden_act", out var a) && a.ValueKind == JsonValueKind.String ? a.GetString()! : "gelu_pytorch_tanh";
        var c = new BertConfig
        {
            ModelType = "gemma3_text", HiddenSize = Int("hidden_size", 2304), NumAttentionHeads = heads, NumHiddenLayers = layers,
            IntermediateSize = Int("intermediate_size", 9216), VocabSize = Int("vocab_size", 262208), MaxPositionEmbeddings = Int("max_position_embeddings", 131072),
            TypeVocabSize = 1, LayerNormEps = (float)JsonNumber(r, "rms_norm_eps", 1e-6, source), HiddenAct = ParseActivation(act, source),
            Gemma3 = new Gemma3Settings(Int("head_dim", 256), Int("num_key_value_heads", 4), global, local, sliding, window, bidirectional,
                JsonNumber(r, "query_pre_attn_scalar", 256, source), JsonNumber(r, "attn_logit_softcapping", 0, source), JsonBool(r, "attention_bias", false, source)),
        };
        c.Validate(source);
        return c;
    }

    /// <summary>
    /// jina-embeddings-v3 (jinaai/xlm-roberta-flash-implementation's <c>XLMRobertaFlashConfig</c>): XLM-RoBERTa's fields
    /// with <c>position_embedding_type</c> "rotary" and <c>rotary_emb_base</c>, and the LoRA adapters (<c>lora_adaptations</c>,
    /// <c>lora_rank</c>, <c>lora_alpha</c>, <c>task_instructions</c>); the MLP's GELU from <c>hidden_act</c>. Refused: partial,
    /// interleaved or xPos-scaled rotary embeddings, a name listed twice.
    /// </summary>
    private static BertConfig ReadJinaV3(JsonElement r, Func<string, int?, int> Int, string source)
    {
        InvalidDataException Bad(string what) => new($"{source}: {what}.");
        bool Set(string name) => r.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null;
        int hidden = Int("hidden_size", null), heads = Int("num_attention_heads", null);
        if (JsonBool(r, "rotary_emb_interleaved", false, source)) throw Bad("rotary_emb_interleaved is true: interleaved rotary embeddings are not run by FastAttn");
        if (Set("rotary_emb_scale_base")) throw Bad("rotary_emb_scale_base is set: scaled rotary embeddings (xPos) are not run by FastAttn");
        if (heads > 0 && r.TryGetProperty("rotary_emb_dim", out var rd) && rd.ValueKind != JsonValueKind.Null && !(rd.TryGetDouble(out double rdim) && rdim * heads == hidden))
            throw Bad("rotary_emb_dim is not the head width: partial rotary embeddings are not run by FastAttn");
        var names = new List<string>();
        if (r.TryGetProperty("lora_adaptations", out var la) && la.ValueKind != JsonValueKind.Null)
        {
            if (la.ValueKind != JsonValueKind.Array) throw Bad("lora_adaptations is not a list");
            foreach (var e in la.EnumerateArray())
            {
                if (e.ValueKind != JsonValueKind.String || string.IsNullOrEmpty(e.GetString())) throw Bad("lora_adaptations holds something other than a name");
                if (names.Contains(e.GetString()!)) throw Bad($"lora_adaptations names '{e.GetString()}' twice");
                names.Add(e.GetString()!);
            }
            if (names.Count > 64) throw Bad($"lora_adaptations has {names.Count} adapters (at most 64)");
        }
        var instructions = new Dictionary<string, string>(StringComparer.Ordinal);
        if (r.TryGetProperty("task_instructions", out var ti) && ti.ValueKind == JsonValueKind.Object)
            foreach (var p in ti.EnumerateObject())
                if (p.Value.ValueKind == JsonValueKind.String && names.Contains(p.Name)) instructions[p.Name] = p.Value.GetString()!;
        int rank = names.Count > 0 ? Int("lora_rank", null) : Int("lora_rank", 4);
        double alpha = JsonNumber(r, "lora_alpha", 1, source);
        if (rank is < 1 or > 256 || !double.IsFinite(alpha)) throw Bad($"lora_rank {rank} or lora_alpha {alpha} is out of range (rank 1 to 256: the merge costs rank products per weight)");
        float eps = r.TryGetProperty("layer_norm_eps", out var e2) && e2.ValueKind == JsonValueKind.Number ? (float)e2.GetDouble() : 1e-5f;
        var c = new BertConfig
        {
            ModelType = "xlm-roberta", HiddenSize = hidden, NumAttentionHeads = heads, NumHiddenLayers = Int("num_hidden_layers", null),
            IntermediateSize = Int("intermediate_size", null), VocabSize = Int("vocab_size", null), MaxPositionEmbeddings = Int("max_position_embeddings", 8194),
            TypeVocabSize = Math.Max(Int("type_vocab_size", 1), 1), LayerNormEps = eps, PaddingIdx = Int("pad_token_id", 1),
            HiddenAct = r.TryGetProperty("hidden_act", out var a) && a.ValueKind == JsonValueKind.String ? ParseActivation(a.GetString()!, source) : Activation.Gelu,
            JinaV3 = new JinaV3Settings(JsonNumber(r, "rotary_emb_base", 10000, source), [.. names], rank, alpha, instructions),
        };
        c.Validate(source);
        return c;
    }

    /// <summary>A true/false field (absent or null: <paramref name="fallback"/>; anything else refused).</summary>
    private static bool JsonBool(JsonElement o, string name, bool fallback, string source) => o.TryGetProperty(name, out var v) ? v.ValueKind switch
    {
        JsonValueKind.True => true, JsonValueKind.False => false, JsonValueKind.Null => fallback,
        _ => throw new InvalidDataException($"{source}: '{name}' is not true or false."),
    } : fallback;

    /// <summary>A number field (absent or null: <paramref name="fallback"/>; anything else refused).</summary>
    private static double JsonNumber(JsonElement o, string name, double fallback, string source) => !o.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null ? fallback
        : v.ValueKind == JsonValueKind.Number ? v.GetDouble() : throw new InvalidDataException($"{source}: '{name}' is not a number.");

    /// <summary>Hugging Face's activation names.</summary>
    /// <exception cref="InvalidDataException">An activation FastAttn does not run.</exception>
    public static Activation ParseActivation(string name, string source = "config.json") => name switch
    {
        "gelu" => Activation.Gelu,
        "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => Activation.GeluTanh,
        "relu" => Activation.Relu,
        "tanh" => Activation.Tanh,
        "silu" or "swish" => Activation.Silu,
        _ => throw new InvalidDataException($"{source}: hidden_act '{name}' is not supported (gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, silu, tanh)."),
    };
}
