using FastAttn.Embeddings;
using FastAttn.Onnx.Proto;
using FastAttn.TestSupport;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using OnnxNode = FastAttn.Onnx.Proto.OnnxNode;

namespace FastAttn.Parity.Tests;

/// <summary>What the tests that rewrite all-MiniLM-L6-v2's graph (quantised forms) share.</summary>
internal static class OnnxRewrite
{
    /// <summary>
    /// all-MiniLM-L6-v2's file, parsed twice — the graph a quantised form is written into and its FP32 twin, whose weights
    /// become the dequantised values — with each one's initializers by name.
    /// </summary>
    public static (byte[] Bytes, OnnxModel Quantised, OnnxModel Twin, Dictionary<string, OnnxTensor> Inits, Dictionary<string, OnnxTensor> TwinInits) MiniLmTwins()
    {
        var bytes = File.ReadAllBytes(MiniLmPackage.Files.Model);
        var q = OnnxModel.Parser.ParseFrom(bytes);
        var d = OnnxModel.Parser.ParseFrom(bytes);
        return (bytes, q, d, q.Graph.Initializer.ToDictionary(t => t.Name), d.Graph.Initializer.ToDictionary(t => t.Name));
    }

    /// <summary>
    /// Replaces <paramref name="model"/>'s nodes by <paramref name="nodes"/>, keeps only the initializers they read, declares
    /// the com.microsoft domain when a node uses it, and writes the model to <paramref name="path"/>.
    /// </summary>
    public static void Save(OnnxModel model, List<OnnxNode> nodes, string path)
    {
        var used = nodes.SelectMany(n => n.Input).ToHashSet();
        var kept = model.Graph.Initializer.Where(t => used.Contains(t.Name)).ToList();
        model.Graph.Initializer.Clear();
        model.Graph.Initializer.AddRange(kept);
        model.Graph.Node.Clear();
        model.Graph.Node.AddRange(nodes);
        if (nodes.Any(n => n.Domain == "com.microsoft") && !model.OpsetImport.Any(o => o.Domain == "com.microsoft"))
            model.OpsetImport.Add(new OnnxOpset { Domain = "com.microsoft", Version = 1 });
        File.WriteAllBytes(path, model.ToByteArray());
    }

    /// <summary>
    /// FastAttn's run of a quantised file (<paramref name="session"/>) against ONNX Runtime on <paramref name="texts"/>: the
    /// worst max|Δ|/max|ref| against ONNX Runtime on the dequantised FP32 twin, the worst mean-pooled cosine with ONNX
    /// Runtime's int8 run of the quantised file, and each run's worst cosine with the unquantised model.
    /// </summary>
    public static (double Worst, double CosineWithInt8, double MineToOriginal, double Int8ToOriginal) CompareQuantised(
        SentenceEmbedder embedder, EmbeddingSession session, InferenceSession fp32Twin, InferenceSession int8, InferenceSession original, IEnumerable<string> texts)
    {
        int h = embedder.Model.Config.HiddenSize;
        double worst = 0, worstCosInt8 = 1, mineToOriginal = 1, int8ToOriginal = 1;
        foreach (var s in texts)
        {
            var ids = embedder.Tokenizer.Encode(s);
            var mine = new float[ids.Length * h];
            session.HiddenStates(ids, [ids.Length], mine);
            var reference = MiniLmParityTests.Ort(fp32Twin, ids);
            double mr = reference.Max(MathF.Abs), md = 0;
            for (int i = 0; i < mine.Length; i++) md = Math.Max(md, Math.Abs(mine[i] - reference[i]));
            worst = Math.Max(worst, md / mr);
            var q = Mean(MiniLmParityTests.Ort(int8, ids), ids.Length, h);
            var o = Mean(MiniLmParityTests.Ort(original, ids), ids.Length, h);
            var m = Mean(mine, ids.Length, h);
            worstCosInt8 = Math.Min(worstCosInt8, Vectors.Cosine(m, q));
            mineToOriginal = Math.Min(mineToOriginal, Vectors.Cosine(m, o));
            int8ToOriginal = Math.Min(int8ToOriginal, Vectors.Cosine(q, o));
        }
        return (worst, worstCosInt8, mineToOriginal, int8ToOriginal);
    }

    /// <summary>The mean over tokens of [tokens, h] hidden states.</summary>
    public static float[] Mean(float[] hidden, int tokens, int h)
    {
        var v = new float[h];
        for (int t = 0; t < tokens; t++) for (int c = 0; c < h; c++) v[c] += hidden[t * h + c] / tokens;
        return v;
    }
}
