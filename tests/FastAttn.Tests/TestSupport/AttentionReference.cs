using FastAttn.Kernels;

namespace FastAttn.Tests;

/// <summary>The attention formulas, in double precision, one (sequence, head, query) at a time.</summary>
internal sealed class AttentionCase
{
    public int Heads = 2, KvHeads = 2, D = 8, Dv = 8;
    public int[] QLens = [7], KLens = [7];
    public int[]? Valid;
    public ScoreKind Score;
    public float? Scale;
    public float SoftCap;
    public Normalizer Norm;
    public float? SigmoidBias;
    public CausalMode Causal;
    public int Window;
    public bool[]? BoolMask;
    public float[]? FloatMask;
    public float[]? Slopes;
    public float[]? RelBias;
    public int RelSpan;
    public float[] Q = [], K = [], V = [], W = [];
    public int TotalQ => QLens.Sum();
    public int TotalK => KLens.Sum();
    public bool Packed;

    public void Fill(int seed, float scale = 1f)
    {
        Q = Reference.Random(TotalQ * Heads * D, seed, scale);
        K = Reference.Random(TotalK * KvHeads * D, seed + 1, scale);
        V = Reference.Random(TotalK * KvHeads * Dv, seed + 2);
        W = Reference.Random(Heads * D, seed + 3);
    }

    public AttentionOptions Options() => new()
    {
        Heads = Heads, KvHeads = KvHeads, HeadDim = D, ValueHeadDim = Dv, Score = Score, Scale = Scale,
        AdditiveWeights = Score == ScoreKind.Additive ? W : default, SoftCap = SoftCap, Normalizer = Norm,
        SigmoidBias = SigmoidBias, Causal = Causal, Window = Window,
        SequenceLengths = Packed ? QLens : default, KeySequenceLengths = Packed ? KLens : default,
        KeyValidLengths = Valid, BoolMask = BoolMask, FloatMask = FloatMask, DistanceSlopes = Slopes,
        RelativeBias = RelBias, RelativeBiasSpan = RelSpan,
    };

    public float[] Run(float[]? weights = null)
    {
        var o = Options();
        if (weights != null) o.WeightsOut = weights;
        float[] outp = new float[TotalQ * Heads * Dv];
        Array.Fill(outp, float.NaN);
        float[] scratch = new float[Attention.ScratchSize(o, TotalK)];
        Attention.Forward(Q, TotalQ, K, V, TotalK, outp, scratch, o);
        return outp;
    }

    /// <summary>Reference output, α, and a per-element error bound (see the comment inside).</summary>
    public (double[] Out, double[] Alpha, double[] Tol) Expected()
    {
        int tq = TotalQ, tk = TotalK;
        var outp = new double[tq * Heads * Dv];
        var alpha = new double[Heads * tq * tk];
        var tol = new double[outp.Length];
        const double u = 1.0 / (1 << 24);
        int group = Heads / KvHeads;
        int q0 = 0, k0 = 0;
        for (int s = 0; s < QLens.Length; s++)
        {
            int lq = QLens[s], lk = KLens[s];
            int valid = Valid?[s] ?? lk;
            int shift = Causal == CausalMode.BottomRight ? lk - lq : 0;
            for (int h = 0; h < Heads; h++)
            {
                int kh = h / group;
                for (int i = 0; i < lq; i++)
                {
                    var sc = new double[lk];
                    var err = new double[lk];
                    var vis = new bool[lk];
                    for (int j = 0; j < lk; j++)
                    {
                        int gi = q0 + i, gj = k0 + j;
                        vis[j] = j < valid && (Causal == CausalMode.None || j <= i + shift) && (Window == 0 || Math.Abs(i - j) <= Window) && (BoolMask == null || BoolMask[gi * tk + gj]);
                        double acc = 0, abs = 0;
                        for (int d = 0; d < D; d++)
                        {
                            double qd = Q[gi * Heads * D + h * D + d], kd = K[gj * KvHeads * D + kh * D + d];
                            double t = Score == ScoreKind.Dot ? qd * kd : W[h * D + d] * Math.Tanh(qd + kd);
                            acc += t; abs += Math.Abs(t);
                        }
                        double scale = Score == ScoreKind.Dot ? (Scale ?? 1.0 / Math.Sqrt(D)) : 1.0;
                        double x = acc * scale;
                        // float32 score error: a length-D dot product (γ_D Σ|terms|), plus a few ulp of the result.
                        // Additive scores are summed as Σw − 2Σ w_d/(1 + e^{2q}e^{2k}): D terms of size ≤ |w_d|, each
                        // with a few ulp from the exponentials, so γ_{D+8} Σ|w_d| bounds them.
                        err[j] = Score == ScoreKind.Additive
                            ? (D + 8) * u * W.Skip(h * D).Take(D).Sum(Math.Abs) + 8 * u * Math.Abs(x)
                            : (D + 4) * u * abs * scale + 8 * u * Math.Abs(x);
                        if (SoftCap > 0) x = SoftCap * Math.Tanh(x / SoftCap);
                        if (FloatMask != null) { x += FloatMask[gi * tk + gj]; err[j] += 4 * u * Math.Abs(x); }
                        if (Slopes != null) { x -= Slopes[h] * (double)Math.Abs(i - j); err[j] += 4 * u * Math.Abs(x); }
                        if (RelBias != null) { x += RelBias[h * (2 * RelSpan - 1) + (j - i) + RelSpan - 1]; err[j] += 4 * u * Math.Abs(x); }
                        if (double.IsNegativeInfinity(x)) vis[j] = false;
                        sc[j] = x;
                    }
                    var a = new double[lk];
                    if (Norm == Normalizer.Softmax)
                    {
                        double m = double.NegativeInfinity;
                        for (int j = 0; j < lk; j++) if (vis[j]) m = Math.Max(m, sc[j]);
                        double sum = 0;
                        for (int j = 0; j < lk; j++) if (vis[j]) { a[j] = Math.Exp(sc[j] - m); sum += a[j]; }
                        for (int j = 0; j < lk; j++) if (sum > 0) a[j] /= sum;
                    }
                    else if (Norm == Normalizer.Relu)
                    {
                        for (int j = 0; j < lk; j++) if (vis[j]) a[j] = Math.Max(sc[j], 0) / valid;
                    }
                    else
                    {
                        double b = SigmoidBias ?? -Math.Log(valid);
                        for (int j = 0; j < lk; j++) if (vis[j]) a[j] = 1 / (1 + Math.Exp(-(sc[j] + b)));
                    }
                    double maxErr = 0;
                    for (int j = 0; j < lk; j++) if (vis[j]) maxErr = Math.Max(maxErr, err[j]);
                    for (int j = 0; j < lk; j++) alpha[((long)h * tq + q0 + i) * tk + k0 + j] = a[j];
                    for (int c = 0; c < Dv; c++)
                    {
                        double acc = 0, absAv = 0, maxV = 0;
                        for (int j = 0; j < lk; j++)
                        {
                            double vj = V[(k0 + j) * KvHeads * Dv + kh * Dv + c];
                            acc += a[j] * vj;
                            absAv += Math.Abs(a[j] * vj);
                            if (vis[j]) maxV = Math.Max(maxV, Math.Abs(vj));
                        }
                        outp[(q0 + i) * Heads * Dv + h * Dv + c] = acc;
                        // A score error δ changes softmax/sigmoid weights by a relative ≤ 2δ (and ReLU weights by an
                        // absolute δ/L); the weighted sum then errs by ≤ (2δ + float ops) Σ|α v| (+ δ·max|v| for ReLU);
                        // the P·V product adds γ_L Σ|α v|.
                        double t = (2 * maxErr + (lk + 16) * u + 4e-7) * absAv + 1e-6;
                        if (Norm == Normalizer.Relu) t += maxErr * maxV;
                        tol[(q0 + i) * Heads * Dv + h * Dv + c] = t;
                    }
                }
            }
            q0 += lq; k0 += lk;
        }
        return (outp, alpha, tol);
    }
}
