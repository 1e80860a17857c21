namespace FastAttn.Tests.Embeddings;

/// <summary>The rotary models' attention in double precision (ModernBERT's and NomicBERT's references share it).</summary>
internal static class RotaryReference
{
    /// <summary>
    /// Rotate-half RoPE on the q and k columns of packed <c>[t, 3·width]</c> q|k|v rows: pair (k, k + d/2) of every head
    /// turned by position·θ^(−2k/d), the position being the row's index, exact angles; with a fixed NTK factor f the base
    /// is θ·f and every frequency is divided by f^(2/d) (GTE's NTKScalingRotaryEmbedding).
    /// </summary>
    public static void Rotate(double[] qkv, int t, int width, int heads, double theta, double ntk = 1)
    {
        int d = width / heads;
        for (int i = 0; i < t; i++)
            for (int part = 0; part < 2; part++)
                for (int h = 0; h < heads; h++)
                    for (int k = 0; k < d / 2; k++)
                    {
                        double ang = i * Math.Pow(theta * ntk, -2.0 * k / d) / Math.Pow(ntk, 2.0 / d), c = Math.Cos(ang), sn = Math.Sin(ang);
                        int o = i * 3 * width + part * width + h * d + k;
                        double u = qkv[o], v = qkv[o + d / 2];
                        qkv[o] = u * c - v * sn;
                        qkv[o + d / 2] = v * c + u * sn;
                    }
    }

    /// <summary>Softmax attention (scale 1/√d) over packed q|k|v rows, each query seeing the keys within <paramref name="window"/> positions.</summary>
    public static double[] Attend(double[] qkv, int t, int width, int heads, int window = int.MaxValue)
    {
        int d = width / heads;
        var ctx = new double[t * width];
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < t; i++)
            {
                var sc = new double[t];
                for (int j = 0; j < t; j++)
                {
                    if (Math.Abs(i - j) > window) { sc[j] = double.NegativeInfinity; continue; }
                    double dot = 0;
                    for (int k = 0; k < d; k++) dot += qkv[i * 3 * width + h * d + k] * qkv[j * 3 * width + width + h * d + k];
                    sc[j] = dot / Math.Sqrt(d);
                }
                double m = sc.Max(), sum = 0;
                for (int j = 0; j < t; j++) { sc[j] = Math.Exp(sc[j] - m); sum += sc[j]; }
                for (int k = 0; k < d; k++)
                {
                    double acc = 0;
                    for (int j = 0; j < t; j++) acc += sc[j] / sum * qkv[j * 3 * width + 2 * width + h * d + k];
                    ctx[i * width + h * d + k] = acc;
                }
            }
        return ctx;
    }
}
