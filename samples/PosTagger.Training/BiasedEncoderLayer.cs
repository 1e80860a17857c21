using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PosTagTraining;

/// <summary>The packed q/k/v projection of an attention layer, named like nn.MultiheadAttention's parameters.</summary>
public sealed class PackedSelfAttention : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly Parameter in_proj_weight, in_proj_bias;
    private readonly Linear out_proj;
    private readonly int _heads;
    private readonly double _dropout;

    public PackedSelfAttention(int d, int heads, double dropout) : base("PackedSelfAttention")
    {
        _heads = heads; _dropout = dropout;
        in_proj_weight = nn.Parameter(empty(3 * d, d));
        in_proj_bias = nn.Parameter(zeros(3 * d));
        out_proj = nn.Linear(d, d);
        nn.init.xavier_uniform_(in_proj_weight);
        using (no_grad()) out_proj.bias!.zero_();
        RegisterComponents();
    }

    /// <summary>x [T, B, d], bias [B, heads, T, T] added to the scaled scores → [T, B, d].</summary>
    public override Tensor forward(Tensor x, Tensor bias)
    {
        long t = x.shape[0], b = x.shape[1], d = x.shape[2], hd = d / _heads;
        var qkv = nn.functional.linear(x, in_proj_weight, in_proj_bias);            // [T, B, 3d]
        var parts = qkv.reshape(t, b, 3, _heads, hd).permute(2, 1, 3, 0, 4);         // [3, B, H, T, hd]
        var o = nn.functional.scaled_dot_product_attention(parts[0], parts[1], parts[2], bias, training ? _dropout : 0.0);
        return out_proj.call(o.permute(2, 0, 1, 3).reshape(t, b, d));
    }
}

/// <summary>
/// A post-norm, ReLU encoder layer with the parameter names of nn.TransformerEncoderLayer (so FastAttn loads it as
/// one), whose attention takes a per-head additive bias (libtorch's C++ MultiheadAttention rejects per-head masks).
/// </summary>
public sealed class BiasedEncoderLayer : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly PackedSelfAttention self_attn;
    private readonly Linear linear1, linear2;
    private readonly LayerNorm norm1, norm2;
    private readonly Dropout dropout, dropout1, dropout2;

    public BiasedEncoderLayer(int d, int heads, int ff, double p) : base("BiasedEncoderLayer")
    {
        self_attn = new PackedSelfAttention(d, heads, p);
        linear1 = nn.Linear(d, ff);
        linear2 = nn.Linear(ff, d);
        norm1 = nn.LayerNorm(d);
        norm2 = nn.LayerNorm(d);
        dropout = nn.Dropout(p); dropout1 = nn.Dropout(p); dropout2 = nn.Dropout(p);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor bias)
    {
        var h = norm1.call(x + dropout1.call(self_attn.call(x, bias)));
        return norm2.call(h + dropout2.call(linear2.call(dropout.call(nn.functional.relu(linear1.call(h))))));
    }
}
