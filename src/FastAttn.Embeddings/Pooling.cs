namespace FastAttn.Embeddings;

/// <summary>How the token states of a sequence become one vector.</summary>
public enum Pooling
{
    /// <summary>The mean over the sequence's tokens ([CLS] and [SEP] included, as sentence-transformers does over the attention mask).</summary>
    Mean = 0,
    /// <summary>The first token's state ([CLS]).</summary>
    Cls = 1,
    /// <summary>The model's pooler: tanh(W·[CLS] + b) (BERT's <c>pooler_output</c>; needs a checkpoint with <c>pooler.dense</c>).</summary>
    Pooler = 2,
    /// <summary>The largest value of each feature over the sequence's tokens (sentence-transformers' <c>pooling_mode_max_tokens</c>).</summary>
    Max = 3,
    /// <summary>The sum over the sequence's tokens divided by √tokens (<c>pooling_mode_mean_sqrt_len_tokens</c>).</summary>
    MeanSqrtLength = 4,
    /// <summary>The mean with token i (from 1) weighted by i, later tokens counting more (<c>pooling_mode_weightedmean_tokens</c>).</summary>
    WeightedMean = 5,
    /// <summary>The last token's state (<c>pooling_mode_lasttoken</c>).</summary>
    LastToken = 6,
}

/// <summary>Settings of a <see cref="SentenceEmbedder"/> (and of the sessions it leases).</summary>
public sealed record SentenceEmbedderOptions
{
    /// <summary>Pooling; null (the default): what the model folder's sentence-transformers Pooling module names when
    /// <see cref="SentenceEmbedder.Load"/> finds one (see <see cref="SentenceTransformersConfig"/>), else mean.</summary>
    public Pooling? Pooling { get; init; }
    /// <summary>Scale every vector to unit length, so a dot product is the cosine similarity; null (the default): when the
    /// model folder's sentence-transformers pipeline ends in a Normalize module, else off.</summary>
    public bool? Normalize { get; init; }
    /// <summary>Longest text in word pieces, [CLS] and [SEP] included; 0 = the model folder's <c>max_seq_length</c> when
    /// <see cref="SentenceEmbedder.Load"/> finds one (cut to the model's positions), else the model's positions (512 for
    /// BERT, 8,192 for ModernBERT) or <see cref="MaxBatchTokens"/> when that is fewer. Longer texts are truncated.
    /// (sentence-transformers runs all-MiniLM-L6-v2 with 256.)</summary>
    public int MaxTokensPerText { get; init; }
    /// <summary>Tokens one forward pass takes (a batch of more is run in several packed passes); sizes a session's buffers.</summary>
    public int MaxBatchTokens { get; init; } = 8192;
    /// <summary>Threads of each session (1 to the processor count).</summary>
    public int Threads { get; init; } = 1;
    /// <summary>Sessions a <see cref="SentenceEmbedder"/> keeps for concurrent callers (default: the processor count).</summary>
    public int MaxSessions { get; init; }
    /// <summary>Dense modules applied in order to the pooled vector, before normalisation; null (the default): those of the
    /// model folder's sentence-transformers pipeline when <see cref="SentenceEmbedder.Load"/> finds one, else none.</summary>
    public IReadOnlyList<DenseModule>? Dense { get; init; }
    /// <summary>
    /// Keep only the first this many values of every vector (Matryoshka truncation, sentence-transformers'
    /// <c>truncate_dim</c>: nomic-embed-text-v1.5, jina-embeddings-v3, mxbai-embed-large, arctic-embed-v1.5/v2, …); 0 (the
    /// default) keeps them all. Applied after pooling and the Dense modules; with <see cref="Normalize"/> on, the truncated
    /// vector is scaled to unit length (sentence-transformers cuts after its Normalize module, leaving a shorter vector —
    /// the cosine similarity is the same either way).
    /// </summary>
    public int Dimensions { get; init; }
    /// <summary>
    /// Text put before every text the text paths take (<c>Encode</c> of strings), as sentence-transformers puts a prompt
    /// ("search_query: ", "query: ", an instruction); its tokens are part of the text, counted and pooled with it. Null (the
    /// default): the model folder's default prompt when <see cref="SentenceEmbedder.Load"/> finds one
    /// (<c>config_sentence_transformers.json</c>'s <c>default_prompt_name</c>), else none; "" = none. The id paths take
    /// their ids as given.
    /// </summary>
    public string? Prompt { get; init; }
}
