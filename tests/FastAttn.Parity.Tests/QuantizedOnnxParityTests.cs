using System.Runtime.InteropServices;
using FastAttn.Embeddings;
using FastAttn.Onnx.Proto;
using FastAttn.TestSupport;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using OnnxNode = FastAttn.Onnx.Proto.OnnxNode;

namespace FastAttn.Parity.Tests;

/// <summary>
/// A BERT quantised the way ONNX Runtime's <c>quantize_dynamic</c> writes it (the <c>model_qint8_*.onnx</c> files of Hugging
/// Face repositories): every weight MatMul becomes DynamicQuantizeLinear(x) → MatMulInteger(x_q, W_q, x_zero, W_zero) →
/// Cast → Mul by x_scale·W_scale, with the int8 weight and its scale as initializers. No such file is served here, so the
/// test writes one from all-MiniLM-L6-v2 (symmetric per-tensor int8, as quantize_dynamic's default) and, beside it, the
/// same graph with the dequantised weights in FP32. FastAttn reads the quantised file's weights dequantised and runs FP32:
/// it must equal ONNX Runtime running the dequantised FP32 graph; ONNX Runtime's own int8 execution of the quantised file
/// (activations quantised too) is reported for comparison.
/// </summary>
public class QuantizedOnnxParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static OnnxNode Node(string op, string[] inputs, string[] outputs, long? to = null)
    {
        var n = new OnnxNode { OpType = op, Name = $"quantize_{op}_{outputs[0]}" };
        n.Input.AddRange(inputs);
        n.Output.AddRange(outputs);
        if (to is long t) n.Attribute.Add(new OnnxAttribute { Name = "to", I = t, Type = 2 });
        return n;
    }

    /// <summary>Writes the quantised model (<paramref name="quantised"/>) and the FP32 model with its dequantised weights (<paramref name="dequantised"/>).</summary>
    private static int Write(string quantised, string dequantised, bool perColumn, bool unsigned, bool tables = false)
    {
        var (_, q, d, inits, dInits) = OnnxRewrite.MiniLmTwins();
        var nodes = new List<OnnxNode>();
        int count = 0;
        foreach (var n in q.Graph.Node)
        {
            // quantize_dynamic's Gather: the table quantised per tensor (X_quantized, X_scale, X_zero_point), the rows picked
            // from it and dequantised by a DequantizeLinear into the Gather's old output
            if (tables && n.OpType == "Gather" && inits.TryGetValue(n.Input[0], out var e) && e.DataType == 1 && e.Dims.Count == 2)
            {
                var ef = MemoryMarshal.Cast<byte, float>(e.RawData.Span).ToArray();
                float lo = Math.Min(0, ef.Min()), hi = Math.Max(0, ef.Max());
                float es = (hi - lo) / 255f;
                int ez = unsigned ? Math.Clamp((int)MathF.Round(-lo / es), 0, 255) : 0;
                if (!unsigned) es = Math.Max(-lo, hi) / 127f;
                var eq = ef.Select(x => unsigned ? Math.Clamp((int)MathF.Round(x / es) + ez, 0, 255) : Math.Clamp((int)MathF.Round(x / es), -127, 127)).ToArray();
                string eqName = n.Input[0] + "_quantized", esName = n.Input[0] + "_scale", ezName = n.Input[0] + "_zero_point", ey = n.Output[0];
                int etype = unsigned ? 2 : 3;
                var qt = new OnnxTensor { Name = eqName, DataType = etype, RawData = ByteString.CopyFrom(eq.Select(v => unchecked((byte)v)).ToArray()) };
                qt.Dims.AddRange(e.Dims);
                q.Graph.Initializer.Add(qt);
                q.Graph.Initializer.Add(new OnnxTensor { Name = esName, DataType = 1, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(new[] { es }.AsSpan())) });
                q.Graph.Initializer.Add(new OnnxTensor { Name = ezName, DataType = etype, RawData = ByteString.CopyFrom([unchecked((byte)ez)]) });
                n.Input[0] = eqName;
                n.Output[0] = ey + "_quantized";
                nodes.Add(n);
                nodes.Add(Node("DequantizeLinear", [ey + "_quantized", esName, ezName], [ey]));
                var edq = eq.Select(v => (v - ez) * es).ToArray();
                dInits[e.Name].RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(edq.AsSpan()));
                continue;
            }
            if (n.OpType != "MatMul" || n.Input.Count != 2 || !inits.TryGetValue(n.Input[1], out var w) || w.DataType != 1 || w.Dims.Count != 2)
            {
                nodes.Add(n);
                continue;
            }
            var f = MemoryMarshal.Cast<byte, float>(w.RawData.Span).ToArray();
            int rows = (int)w.Dims[0], cols = (int)w.Dims[1];
            // symmetric scales, per tensor or per output column; int8 around 0, or uint8 around a zero point of 128
            var scales = perColumn
                ? Enumerable.Range(0, cols).Select(c => Math.Max(Enumerable.Range(0, rows).Max(r => MathF.Abs(f[r * cols + c])), 1e-12f) / 127f).ToArray()
                : [f.Max(MathF.Abs) / 127f];
            int zero = unsigned ? 128 : 0;
            float Scale(int i) => scales[perColumn ? i % cols : 0];
            var qv = f.Select((x, i) => (int)Math.Clamp(MathF.Round(x / Scale(i)), -127, 127) + zero).ToArray();
            var qb = qv.Select(v => unchecked((byte)v)).ToArray();
            // named after the layer when a table is quantised too (X.weight_quantized, X.weight_scale, as quantize_dynamic names
            // a named weight's): the scale then looks like a parameter, and must not be taken for one
            string? bias = tables ? q.Graph.Node.FirstOrDefault(a => a.OpType == "Add" && a.Input.Contains(n.Output[0]))?.Input.FirstOrDefault(i => i.EndsWith(".bias", StringComparison.Ordinal)) : null;
            string stem = bias != null ? bias[..^".bias".Length] + ".weight" : n.Input[1];
            string wq = stem + "_quantized", ws = stem + "_scale", wz = stem + "_zero_point", x = n.Input[0], y = n.Output[0];
            int type = unsigned ? 2 : 3;
            var tq = new OnnxTensor { Name = wq, DataType = type, RawData = ByteString.CopyFrom(qb) };
            tq.Dims.AddRange(w.Dims);
            q.Graph.Initializer.Add(tq);
            var ts = new OnnxTensor { Name = ws, DataType = 1, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(scales.AsSpan())) };
            var tz = new OnnxTensor { Name = wz, DataType = type, RawData = ByteString.CopyFrom(Enumerable.Repeat(unchecked((byte)zero), scales.Length).ToArray()) };
            if (perColumn) { ts.Dims.Add(cols); tz.Dims.Add(cols); }
            q.Graph.Initializer.Add(ts);
            q.Graph.Initializer.Add(tz);
            nodes.Add(Node("DynamicQuantizeLinear", [x], [x + "_q" + count, x + "_qs" + count, x + "_qz" + count]));
            nodes.Add(Node("MatMulInteger", [x + "_q" + count, wq, x + "_qz" + count, wz], [y + "_i32"]));
            nodes.Add(Node("Cast", [y + "_i32"], [y + "_f"], to: 1));
            nodes.Add(Node("Mul", [x + "_qs" + count, ws], [y + "_scale"]));
            nodes.Add(Node("Mul", [y + "_f", y + "_scale"], [y]));
            // the FP32 twin: the same weight, dequantised
            var deq = qv.Select((v, i) => (v - zero) * Scale(i)).ToArray();
            dInits[n.Input[1]].RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(deq.AsSpan()));
            count++;
        }
        OnnxRewrite.Save(q, nodes, quantised);
        File.WriteAllBytes(dequantised, d.ToByteArray());
        return count;
    }

    [Theory]
    [InlineData(false, false, false)]   // int8, one scale per weight
    [InlineData(true, true, false)]     // per-channel scales, uint8 with a zero point
    [InlineData(false, false, true)]    // quantize_dynamic's defaults: the embedding tables' Gathers quantised too
    [InlineData(true, true, true)]
    public void AQuantisedExport_LoadsWithItsWeightsDequantised(bool perColumn, bool unsigned, bool tables)
    {
        string dir = Path.Combine(PackagedModel.CacheRoot, $"all-MiniLM-L6-v2-{MiniLmPackage.Version}-q{perColumn}{unsigned}{tables}-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        try
        {
            string quantised = Path.Combine(dir, "model.onnx"), dequantised = Path.Combine(dir, "fp32-dequantised.onnx");
            int products = Write(quantised, dequantised, perColumn, unsigned, tables);
            if (tables)
            {
                Assert.Equal(3, OnnxModel.Parser.ParseFrom(File.ReadAllBytes(quantised)).Graph.Node.Count(n => n.OpType == "DequantizeLinear"));
                // the tables as read equal the FP32 twin's exactly (a zero point left out would shift every entry of a table
                // by one constant, which the embeddings' LayerNorm hides from the outputs)
                var fq = FastAttn.Onnx.OnnxModelFile.Open(quantised);
                var fd = FastAttn.Onnx.OnnxModelFile.Open(dequantised);
                foreach (var table in new[] { "word", "position", "token_type" }.Select(t => $"embeddings.{t}_embeddings.weight"))
                {
                    Assert.True(fq.TryGetShape(table, out var shape));
                    float[] a = new float[shape[0] * shape[1]], b = new float[a.Length];
                    fq.ReadFloat32(table, a);
                    fd.ReadFloat32(table, b);
                    Assert.Equal(b, a);
                }
            }
            Assert.Equal(36, products);                                  // 6 layers × (Q, K, V, output, two feed-forward)
            File.Copy(MiniLmPackage.Files.Vocab, Path.Combine(dir, "vocab.txt"), overwrite: true);
            using var embedder = SentenceEmbedder.Load(dir, options: new SentenceEmbedderOptions { MaxSessions = 1 });
            using var session = new EmbeddingSession(embedder.Model, embedder.Tokenizer);
            using var ortFp32 = new InferenceSession(dequantised, new SessionOptions { IntraOpNumThreads = 1 });
            using var ortInt8 = new InferenceSession(quantised, new SessionOptions { IntraOpNumThreads = 1 });
            using var ortOriginal = new InferenceSession(MiniLmPackage.Files.Model, new SessionOptions { IntraOpNumThreads = 1 });
            var (worst, worstCosInt8, mineToOriginal, int8ToOriginal) = OnnxRewrite.CompareQuantised(embedder, session, ortFp32, ortInt8, ortOriginal, MiniLmParityTests.BuiltIn.Take(20));
            output.WriteLine($"{products} quantised products; FastAttn vs ONNX Runtime on the dequantised FP32 graph: max|Δ|/max|ref| {worst:E2}; "
                + $"mean-pooled cosine with ONNX Runtime's int8 execution of the quantised file ≥ {worstCosInt8:F5}; with the unquantised model: FastAttn ≥ {mineToOriginal:F5}, "
                + $"ONNX Runtime's int8 execution ≥ {int8ToOriginal:F5}");
            Assert.True(worst <= 2e-6, $"FastAttn vs the dequantised FP32 graph: {worst:E2}");
            // ONNX Runtime's int8 run also quantises the activations (per tensor, dynamically): FastAttn's FP32 run of the
            // int8 weights stays at least as close to the unquantised model as that run does
            Assert.True(mineToOriginal >= int8ToOriginal, $"cosine with the unquantised model: FastAttn {mineToOriginal:F5}, ONNX Runtime int8 {int8ToOriginal:F5}");
            Assert.True(worstCosInt8 >= 0.95, $"cosine with ONNX Runtime's int8 execution {worstCosInt8:F5}");
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
