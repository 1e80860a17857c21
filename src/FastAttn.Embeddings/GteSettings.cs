namespace FastAttn.Embeddings;

/// <summary>
/// GTE's settings beyond BERT's fields (<c>model_type</c> "new": gte-base/large-en-v1.5, gte-multilingual-base and its
/// reranker, Alibaba-NLP's "new" architecture): the RoPE base and fixed NTK factor (1 = none), whether q/k/v are one packed
/// product (<c>qkv_proj</c>) or three, and whether the checkpoint has token types.
/// </summary>
internal sealed record GteSettings(double Theta, double NtkFactor, bool PackedQkv, bool TokenTypes);
