using FastAttn.Onnx.Proto;
using Google.Protobuf;

namespace FastAttn.Fuzz;

/// <summary>Writes the small ONNX seed files of the corpus (run once; the files are committed).</summary>
public static class Seeds
{
    private static OnnxTensor Floats(string name, int n, params long[] dims)
    {
        var data = Enumerable.Range(0, n).Select(i => (float)(i % 7 - 3) / 4).ToArray();
        var t = new OnnxTensor { Name = name, DataType = 1, RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan())) };
        t.Dims.AddRange(dims);
        return t;
    }

    private static Onnx.Proto.OnnxNode Node(string op, string[] inputs, string output, long? transB = null)
    {
        var n = new Onnx.Proto.OnnxNode { OpType = op };
        n.Input.AddRange(inputs);
        n.Output.Add(output);
        if (transB != null) n.Attribute.Add(new OnnxAttribute { Name = "transB", I = transB.Value, Type = 2 });
        return n;
    }

    public static void Write(string dir)
    {
        Directory.CreateDirectory(dir);
        // a linear layer exported as MatMul + Add with a named bias, and one as Gemm(transB)
        var g = new OnnxGraph();
        g.Initializer.Add(Floats("5", 6, 3, 2));
        g.Initializer.Add(Floats("l.bias", 2, 2));
        g.Initializer.Add(Floats("m.weight", 4, 2, 2));
        g.Initializer.Add(Floats("m.bias", 2, 2));
        g.Node.Add(Node("MatMul", ["x", "5"], "y"));
        g.Node.Add(Node("Add", ["l.bias", "y"], "z"));
        g.Node.Add(Node("Gemm", ["z", "m.weight", "m.bias"], "out", transB: 1));
        g.Input.Add(new OnnxValueInfo { Name = "x" });
        g.Output.Add(new OnnxValueInfo { Name = "out" });
        var m = new OnnxModel { IrVersion = 7, ProducerName = "seed", Graph = g };
        m.OpsetImport.Add(new OnnxOpset { Domain = "", Version = 13 });
        File.WriteAllBytes(Path.Combine(dir, "linear.onnx"), m.ToByteArray());
        // a minimal BERT: embeddings, one layer, reshape constants for 2 heads (hidden 4, ff 8, vocab 10, 8 positions)
        var b = new OnnxGraph();
        void F(string name, params long[] dims) => b.Initializer.Add(Floats(name, (int)dims.Aggregate(1L, (x, y) => x * y), dims));
        F("embeddings.word_embeddings.weight", 10, 4); F("embeddings.position_embeddings.weight", 8, 4); F("embeddings.token_type_embeddings.weight", 2, 4);
        F("embeddings.LayerNorm.weight", 4); F("embeddings.LayerNorm.bias", 4);
        int k = 100;
        string Lin(string input, string prefix, long o, long i)
        {
            string w = (k++).ToString();
            F(w, i, o); F(prefix + ".bias", o);
            b.Node.Add(Node("MatMul", [input, w], w + "_mm"));
            b.Node.Add(Node("Add", [prefix + ".bias", w + "_mm"], w + "_out"));
            return w + "_out";
        }
        string p = "encoder.layer.0.";
        string q = Lin("h", p + "attention.self.query", 4, 4); Lin("h", p + "attention.self.key", 4, 4); Lin("h", p + "attention.self.value", 4, 4);
        var heads = new OnnxTensor { Name = "heads", DataType = 7, RawData = ByteString.CopyFrom(BitConverter.GetBytes(2L)) }; heads.Dims.Add(1);
        var dim = new OnnxTensor { Name = "dim", DataType = 7, RawData = ByteString.CopyFrom(BitConverter.GetBytes(2L)) }; dim.Dims.Add(1);
        b.Initializer.Add(heads); b.Initializer.Add(dim);
        b.Node.Add(Node("Concat", ["s0", "s1", "heads", "dim"], "shape"));
        b.Node.Add(Node("Reshape", [q, "shape"], "qh"));
        Lin("a", p + "attention.output.dense", 4, 4);
        F(p + "attention.output.LayerNorm.weight", 4); F(p + "attention.output.LayerNorm.bias", 4);
        string inter = Lin("x1", p + "intermediate.dense", 8, 4);
        b.Node.Add(Node("Erf", [inter], "erf"));
        Lin("e", p + "output.dense", 4, 8);
        F(p + "output.LayerNorm.weight", 4); F(p + "output.LayerNorm.bias", 4);
        var bm = new OnnxModel { IrVersion = 7, ProducerName = "seed", Graph = b };
        bm.OpsetImport.Add(new OnnxOpset { Domain = "", Version = 13 });
        File.WriteAllBytes(Path.Combine(dir, "bert.onnx"), bm.ToByteArray());
    }
}
