using FastAttn.Kernels;

namespace FastAttn.Tests.Kernels;

/// <summary>
/// A value row holding NaN or ±∞ reaches exactly the queries that give its key a nonzero weight: masked keys (causal, a
/// boolean mask, key padding) contribute nothing, whatever the vector width groups into one tile (issue 13, item 9).
/// </summary>
public class AttentionNonFiniteTests
{
    [Theory]
    [InlineData(1, 5, float.NaN)]
    [InlineData(7, 3, float.PositiveInfinity)]
    [InlineData(33, 20, float.NaN)]
    [InlineData(65, 64, float.NegativeInfinity)]
    [InlineData(130, 0, float.NaN)]
    public void MaskedNonFiniteValues_DoNotLeak(int tokens, int badKey, float bad)
    {
        IsaPaths.ForEach(() =>
        {
            if (badKey >= tokens) badKey = tokens - 1;
            const int heads = 2, d = 8;
            var q = Reference.Random(tokens * heads * d, 1);
            var k = Reference.Random(tokens * heads * d, 2);
            var v = Reference.Random(tokens * heads * d, 3);
            var vBad = (float[])v.Clone();
            vBad[badKey * heads * d + 3] = bad;                  // head 0's value of key badKey
            vBad[badKey * heads * d + d + 1] = bad;              // head 1's
            var clean = new float[tokens * heads * d];
            var got = new float[tokens * heads * d];
            var scratch = new float[Attention.ScratchSize(d, d, tokens)];
            var mask = new bool[tokens * tokens];
            for (int i = 0; i < tokens; i++) for (int j = 0; j < tokens; j++) mask[i * tokens + j] = (i + j) % 3 != 0 || i == j;
            foreach (var mode in new[] { "causal", "bool", "padding" })
            {
                var o = new AttentionOptions { Heads = heads, HeadDim = d };
                if (mode == "causal") o.Causal = CausalMode.TopLeft;
                if (mode == "bool") o.BoolMask = mask;
                int valid = Math.Max(1, badKey);
                if (mode == "padding") o.KeyValidLengths = new[] { valid };
                Attention.Forward(q, tokens, k, v, tokens, clean, scratch, o);
                Attention.Forward(q, tokens, k, vBad, tokens, got, scratch, o);
                for (int i = 0; i < tokens; i++)
                {
                    bool sees = mode switch
                    {
                        "causal" => badKey <= i,
                        "bool" => mask[i * tokens + badKey],
                        _ => badKey < valid,
                    };
                    for (int c = 0; c < heads * d; c++)
                    {
                        float g = got[i * heads * d + c];
                        if (!sees) Assert.True(g == clean[i * heads * d + c], $"{mode}: query {i} does not see key {badKey} but column {c} is {g}, not {clean[i * heads * d + c]}");
                    }
                    if (sees)
                    {
                        // the query's weight on the key is positive (softmax of finite scores), so the bad value shows
                        Assert.False(float.IsFinite(got[i * heads * d + 3]), $"{mode}: query {i} sees key {badKey}; column 3 is {got[i * heads * d + 3]}");
                    }
                }
            }
        });
    }
}
