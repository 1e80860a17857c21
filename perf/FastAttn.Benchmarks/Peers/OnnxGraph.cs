using Google.Protobuf;
using FastAttn.Onnx.Proto;
using GraphProto = FastAttn.Onnx.Proto.OnnxGraph;

namespace FastAttn.Benchmarks.Peers;

/// <summary>
/// Builds the ONNX models the peers run from the same weights FastAttn uses (no model files are checked in): nodes,
/// initializers and fixed-shape float inputs and outputs, serialised by Google.Protobuf with FastAttn.Onnx's subset of
/// onnx.proto (src/FastAttn.Onnx/onnx-subset.proto).
/// </summary>
public sealed class OnnxGraph
{
    private readonly GraphProto _graph = new() { Name = "fastattn_peer" };
    private int _counter;

    /// <summary>A fresh tensor name.</summary>
    public string Name(string hint) => $"{hint}_{_counter++}";

    private string Initializer(string name, int dataType, ReadOnlySpan<byte> raw, long[] dims)
    {
        var t = new OnnxTensor { Name = name, DataType = dataType, RawData = ByteString.CopyFrom(raw) };
        t.Dims.AddRange(dims);
        _graph.Initializer.Add(t);
        return name;
    }

    /// <summary>Adds a float initializer.</summary>
    public string Constant(string name, float[] data, params long[] dims) =>
        Initializer(name, 1, System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan()), dims);

    /// <summary>Adds an int8 initializer (scalar when no dims are given).</summary>
    public string Int8s(string name, sbyte[] data, params long[] dims) =>
        Initializer(name, 3, System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan()), dims);

    /// <summary>Adds an int64 initializer.</summary>
    public string Int64s(string name, params long[] values) =>
        Initializer(name, 7, System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()), [values.Length]);

    /// <summary>Declares a float graph input or output of a fixed shape.</summary>
    public void Input(string name, params long[] dims) => _graph.Input.Add(ValueInfo(name, dims));
    /// <inheritdoc cref="Input"/>
    public void Output(string name, params long[] dims) => _graph.Output.Add(ValueInfo(name, dims));

    private static OnnxValueInfo ValueInfo(string name, long[] dims)
    {
        var shape = new OnnxShape();
        foreach (long d in dims) shape.Dim.Add(new OnnxShape.Types.Dimension { DimValue = d });
        return new OnnxValueInfo { Name = name, Type = new OnnxType { TensorType = new OnnxType.Types.Tensor { ElemType = 1, Shape = shape } } };
    }

    /// <summary>Adds a node; attributes are (name, value) with value long, int, float, or long[].</summary>
    public string Node(string op, string[] inputs, string? output = null, params (string Name, object Value)[] attributes)
    {
        output ??= Name(op.ToLowerInvariant());
        NodeMulti(op, inputs, [output], attributes);
        return output;
    }

    /// <summary>Adds a node with several outputs (e.g. Split).</summary>
    public void NodeMulti(string op, string[] inputs, string[] outputs, params (string Name, object Value)[] attributes)
    {
        var n = new OnnxNode { Name = Name("n_" + op), OpType = op };
        n.Input.AddRange(inputs);
        n.Output.AddRange(outputs);
        foreach (var (an, av) in attributes) n.Attribute.Add(Attribute(an, av));
        _graph.Node.Add(n);
    }

    private static OnnxAttribute Attribute(string an, object av)
    {
        var a = new OnnxAttribute { Name = an };
        switch (av)
        {
            case float f: a.F = f; a.Type = 1; break;
            case long l: a.I = l; a.Type = 2; break;
            case int i: a.I = i; a.Type = 2; break;
            case long[] ls: a.Ints.AddRange(ls); a.Type = 7; break;
            default: throw new ArgumentException($"attribute type {av.GetType()}");
        }
        return a;
    }

    /// <summary>The serialised ModelProto (IR version 8, default opset 17).</summary>
    public byte[] ToModel()
    {
        var m = new OnnxModel { IrVersion = 8, ProducerName = "FastAttn.Benchmarks", Graph = _graph };
        m.OpsetImport.Add(new OnnxOpset { Domain = "", Version = 17 });
        return m.ToByteArray();
    }
}
