using FastAttn.IO;

namespace FastAttn.Embeddings;

/// <summary>
/// An ELECTRA checkpoint (the discriminator, e.g. the ms-marco ELECTRA cross-encoders) seen under BERT's tensor names: its
/// encoder layers already carry BERT's names; <c>electra.</c> → <c>bert.</c>, <c>embeddings_project</c> (when the embeddings
/// are narrower than the hidden states) kept; the sequence-classification head (<c>classifier.dense</c>, GELU,
/// <c>classifier.out_proj</c>) read as pooler + classifier with a GELU pooler; the pretraining heads
/// (<c>discriminator_predictions</c>, <c>generator_*</c>) ignored.
/// </summary>
internal sealed class ElectraTensors : RenamedBertTensors
{
    /// <summary>True when <paramref name="s"/> holds ELECTRA's names (under <c>electra.</c>, or bare with <c>embeddings_project</c>).</summary>
    public static bool Detect(ITensorSource s) =>
        s.TryGetShape("electra.embeddings.word_embeddings.weight", out _) || s.TryGetShape("embeddings_project.weight", out _);

    public ElectraTensors(ITensorSource source)
        : base(source, source.TryGetShape("electra.embeddings.word_embeddings.weight", out _) ? "electra." : "", Rename, zeroTokenType: false) { }

    private static string Rename(string n, string from, string to)
    {
        if (n.StartsWith("discriminator_predictions.", StringComparison.Ordinal) || n.StartsWith("generator_", StringComparison.Ordinal)) return "cls." + n;
        if (n.StartsWith("classifier.dense.", StringComparison.Ordinal)) return to + "pooler.dense." + n["classifier.dense.".Length..];
        if (n.StartsWith("classifier.out_proj.", StringComparison.Ordinal)) return "classifier." + n["classifier.out_proj.".Length..];
        return n.StartsWith(from, StringComparison.Ordinal) ? to + n[from.Length..] : n;
    }
}
