namespace FastAttn.Embeddings;

/// <summary>
/// jina-embeddings-v3's settings beyond XLM-RoBERTa's fields (<c>model_type</c> "xlm-roberta" with
/// <c>position_embedding_type</c> "rotary", jinaai/xlm-roberta-flash-implementation): the RoPE base, and the LoRA
/// adapters — their names in index order (<c>lora_adaptations</c>), rank, alpha, and each task's instruction prefix.
/// </summary>
internal sealed record JinaV3Settings(double Theta, string[] Adaptations, int Rank, double Alpha, IReadOnlyDictionary<string, string> Instructions)
{
    /// <summary>LoRA's scaling of B·A: alpha / rank.</summary>
    public double Scaling => Alpha / Rank;
}
