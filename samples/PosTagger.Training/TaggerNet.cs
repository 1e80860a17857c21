using FastAttn.Tagging;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PosTagTraining;

/// <summary>
/// Summed feature embeddings → (attention model) + positions → nn.TransformerEncoder (post-norm, ReLU) → classifier,
/// or (FC model) → ReLU fully connected layers → classifier. Sequence-first tensors: ids [T, B, features].
/// </summary>
public sealed class TaggerNet : nn.Module<Tensor, Tensor?, Tensor>
{
    private readonly ModuleList<Embedding> emb;
    private readonly nn.Module? encoder; // nn.TransformerEncoder, or EncoderLayers when the attention has a distance bias
    private readonly ModuleList<Linear>? fc;
    private readonly Linear classifier;
    private readonly Dropout drop;
    private readonly Parameter? positions;
    public TaggerConfig Config { get; }
    public float WordDropout { get; set; }
    /// <summary>Word ids from here on were seen once in training (the vocabulary is sorted by frequency).</summary>
    public long SingletonStart { get; set; } = long.MaxValue;
    public float SingletonDropout { get; set; }
    /// <summary>Per-head slopes of a distance bias −slope·|i − j| added to the attention scores (null = none).</summary>
    public float[]? DistanceSlopes { get; }

    public TaggerNet(TaggerConfig c, FeatureVocabulary vocab, float[]? positionTable, double dropout, double embeddingStd, bool learnedPositions = false) : base("TaggerNet")
    {
        Config = c;
        emb = nn.ModuleList(Enumerable.Range(0, FeatureVocabulary.Count).Select(f => nn.Embedding(vocab.Size(f), c.DModel)).ToArray());
        if (c.Kind == "attention")
        {
            if (c.DistanceSlopes == null)
                encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(c.DModel, c.Heads, c.FfDim, dropout), c.Layers);
            else
            {
                // same parameter names as nn.TransformerEncoder: encoder.layers.N.…
                encoder = new EncoderLayers(nn.ModuleList(Enumerable.Range(0, c.Layers).Select(_ => new BiasedEncoderLayer(c.DModel, c.Heads, c.FfDim, dropout)).ToArray()));
            }
            DistanceSlopes = c.DistanceSlopes;
            positions = nn.Parameter(tensor(positionTable!, [c.MaxPositions, c.DModel]), requires_grad: learnedPositions);
            classifier = nn.Linear(c.DModel, UPos.Tags.Length);
        }
        else
        {
            fc = nn.ModuleList(Enumerable.Range(0, c.FcLayers).Select(i => nn.Linear(i == 0 ? c.DModel : c.Hidden, c.Hidden)).ToArray());
            classifier = nn.Linear(c.Hidden, UPos.Tags.Length);
        }
        drop = nn.Dropout(dropout);
        using (no_grad())
            foreach (var e in emb) nn.init.normal_(e.weight, 0, embeddingStd);
        RegisterComponents();
    }

    /// <summary>The model in a file written by this trainer, in eval mode, its weights copied from the file (for the parity test and the benchmark).</summary>
    public static TaggerNet Load(string path, PosTagModel model)
    {
        using var file = FastAttn.IO.SafeTensorsFile.Open(path);
        float[]? positions = model.Config.Kind == "attention" ? file.ReadFloat32("positions") : null;
        var net = new TaggerNet(model.Config, model.Vocabulary, positions, 0.0, 1.0);
        using (no_grad())
            foreach (var (name, p) in net.state_dict())
                p.copy_(tensor(file.ReadFloat32(name), p.shape));
        net.eval();
        return net;
    }

    /// <summary>ids [T, B, F] (int64), padding [B, T] (true = pad) → logits [T, B, tags].</summary>
    public override Tensor forward(Tensor ids, Tensor? padding)
    {
        using var scope = NewDisposeScope();
        Tensor x = null!;
        for (int f = 0; f < FeatureVocabulary.Count; f++)
        {
            var col = ids.select(2, f);
            if (f == 0 && training && (WordDropout > 0 || SingletonDropout > 0))
            {
                // any word becomes unknown with probability WordDropout; a word seen once in training, with SingletonDropout
                var drop = rand(col.shape) < WordDropout;
                if (SingletonDropout > 0) drop = drop.logical_or(col.ge(SingletonStart).logical_and(rand(col.shape) < SingletonDropout));
                col = col.masked_fill(drop, 0);
            }
            var e = emb[f].call(col);
            x = f == 0 ? e : x + e;
        }
        if (encoder != null)
        {
            long t = ids.shape[0];
            x = x + positions!.narrow(0, 0, t).unsqueeze(1);
            x = drop.call(x);
            Tensor? bias = null;
            if (DistanceSlopes != null)
            {
                // ALiBi-style distance bias per head: −slope·|i − j|, [B·heads, T, T] batch-major as MultiheadAttention expects
                // positions from an array, not arange(t): TorchSharp turns arange's bounds into Scalar objects that nothing keeps
                // alive during the native call, and a collection on another thread can free one under it (a parity run failed
                // in libtorch's Scalar::toFloat that way)
                var idx = tensor(Enumerable.Range(0, (int)t).Select(i => (float)i).ToArray());
                var dist = (idx.unsqueeze(1) - idx.unsqueeze(0)).abs();
                var slopes = tensor(DistanceSlopes).reshape(-1, 1, 1);
                long b = ids.shape[1], h = DistanceSlopes.Length;
                bias = (-slopes * dist.unsqueeze(0)).unsqueeze(0).expand(b, h, t, t);
                if (padding is not null)
                    bias = bias.masked_fill(padding.reshape(b, 1, 1, t), float.NegativeInfinity);
                foreach (var layer in ((EncoderLayers)encoder!).Items) x = layer.call(x, bias);
            }
            else x = ((TransformerEncoder)encoder!).call(x, null!, padding!);
        }
        else
        {
            x = drop.call(x);
            foreach (var l in fc!) x = drop.call(nn.functional.relu(l.call(x)));
        }
        return classifier.call(x).MoveToOuterDisposeScope();
    }
}

/// <summary>Holds the biased layers under the name "encoder" so parameters are called encoder.layers.N.… like nn.TransformerEncoder's.</summary>
public sealed class EncoderLayers : nn.Module
{
    private readonly ModuleList<BiasedEncoderLayer> layers;
    public EncoderLayers(ModuleList<BiasedEncoderLayer> l) : base("EncoderLayers") { layers = l; RegisterComponents(); }
    public IEnumerable<BiasedEncoderLayer> Items => layers;
}
