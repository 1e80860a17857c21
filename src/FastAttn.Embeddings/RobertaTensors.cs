using FastAttn.IO;

namespace FastAttn.Embeddings;

/// <summary>
/// A RoBERTa-family checkpoint (RoBERTa, XLM-RoBERTa, CamemBERT: multilingual-e5-base, bge-m3, the XLM-R rerankers, …) seen
/// under BERT's tensor names: its layers already carry them; <c>roberta.</c> → <c>bert.</c>; the masked-LM head
/// (<c>lm_head.*</c>) ignored; the sequence-classification head (<c>classifier.dense</c>, tanh, <c>classifier.out_proj</c>)
/// read as BERT's pooler and classifier. Its one token type is in the checkpoint. Positions are numbered after the padding
/// index (<see cref="BertConfig.PaddingIdx"/>): the table is read whole.
/// </summary>
internal sealed class RobertaTensors : RenamedBertTensors
{
    /// <summary>True when <paramref name="s"/> holds RoBERTa's names under <c>roberta.</c> (bare ones are BERT's; config.json tells them apart).</summary>
    public static bool Detect(ITensorSource s) => s.TryGetShape("roberta.embeddings.word_embeddings.weight", out _);

    public RobertaTensors(ITensorSource source) : this(source, Detect(source) ? "roberta." : "") { }

    private RobertaTensors(ITensorSource source, string from)
        : base(source, from, RenameWith(source.TensorNames.Contains(from + "pooler.dense.weight")), zeroTokenType: false) { }

    private static Func<string, string, string, string> RenameWith(bool pooler) => (n, from, to) =>
        ClassificationHead(n, to, pooler) ?? (n.StartsWith(from, StringComparison.Ordinal) ? to + n[from.Length..] : n);
}
