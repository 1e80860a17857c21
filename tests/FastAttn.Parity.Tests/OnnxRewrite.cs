using FastAttn.Onnx.Proto;
using Google.Protobuf;
using OnnxNode = FastAttn.Onnx.Proto.OnnxNode;

namespace FastAttn.Parity.Tests;

/// <summary>What the tests that rewrite all-MiniLM-L6-v2's graph (quantised forms) share.</summary>
internal static class OnnxRewrite
{
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

    /// <summary>The mean over tokens of [tokens, h] hidden states.</summary>
    public static float[] Mean(float[] hidden, int tokens, int h)
    {
        var v = new float[h];
        for (int t = 0; t < tokens; t++) for (int c = 0; c < h; c++) v[c] += hidden[t * h + c] / tokens;
        return v;
    }
}
