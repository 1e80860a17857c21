using System.Text;

namespace FastAttn.Benchmarks.Peers;

/// <summary>
/// A minimal protobuf writer for the ONNX messages a peer model needs (ModelProto, GraphProto, NodeProto,
/// AttributeProto, TensorProto, ValueInfoProto), so ONNX Runtime runs models built in-process from the same
/// weights FastAttn uses; no model files are checked in. Field numbers follow onnx.proto.
/// </summary>
public sealed class OnnxGraph
{
    private readonly List<byte[]> _nodes = new(), _inits = new(), _inputs = new(), _outputs = new();
    private int _counter;

    /// <summary>A fresh tensor name.</summary>
    public string Name(string hint) => $"{hint}_{_counter++}";

    /// <summary>Adds a float initializer.</summary>
    public string Constant(string name, float[] data, params long[] dims)
    {
        var t = new Proto();
        foreach (long d in dims) t.Varint(1, (ulong)d);
        t.Varint(2, 1); // FLOAT
        t.String(8, name);
        var raw = new byte[data.Length * 4];
        Buffer.BlockCopy(data, 0, raw, 0, raw.Length);
        t.Bytes(9, raw);
        _inits.Add(t.ToArray());
        return name;
    }

    /// <summary>Adds an int8 initializer (scalar when no dims are given).</summary>
    public string Int8s(string name, sbyte[] data, params long[] dims)
    {
        var t = new Proto();
        foreach (long d in dims) t.Varint(1, (ulong)d);
        t.Varint(2, 3); // INT8
        t.String(8, name);
        var raw = new byte[data.Length];
        Buffer.BlockCopy(data, 0, raw, 0, raw.Length);
        t.Bytes(9, raw);
        _inits.Add(t.ToArray());
        return name;
    }

    /// <summary>Adds an int64 initializer.</summary>
    public string Int64s(string name, params long[] values)
    {
        var t = new Proto();
        t.Varint(1, (ulong)values.Length);
        t.Varint(2, 7); // INT64
        t.String(8, name);
        var raw = new byte[values.Length * 8];
        Buffer.BlockCopy(values, 0, raw, 0, raw.Length);
        t.Bytes(9, raw);
        _inits.Add(t.ToArray());
        return name;
    }

    /// <summary>Declares a float graph input or output of a fixed shape.</summary>
    public void Input(string name, params long[] dims) => _inputs.Add(ValueInfo(name, dims));
    /// <inheritdoc cref="Input"/>
    public void Output(string name, params long[] dims) => _outputs.Add(ValueInfo(name, dims));

    private static byte[] ValueInfo(string name, long[] dims)
    {
        var shape = new Proto();
        foreach (long d in dims) { var dim = new Proto(); dim.Varint(1, (ulong)d); shape.Message(1, dim); }
        var tensor = new Proto(); tensor.Varint(1, 1); tensor.Message(2, shape);
        var type = new Proto(); type.Message(1, tensor);
        var vi = new Proto(); vi.String(1, name); vi.Message(2, type);
        return vi.ToArray();
    }

    /// <summary>Adds a node; attributes are (name, value) with value long, float, or long[].</summary>
    public string Node(string op, string[] inputs, string? output = null, params (string Name, object Value)[] attributes)
    {
        output ??= Name(op.ToLowerInvariant());
        var n = new Proto();
        foreach (var i in inputs) n.String(1, i);
        n.String(2, output);
        n.String(3, Name("n_" + op));
        n.String(4, op);
        foreach (var (an, av) in attributes) n.Message(5, Attribute(an, av));
        _nodes.Add(n.ToArray());
        return output;
    }

    /// <summary>Adds a node with several outputs (e.g. Split).</summary>
    public void NodeMulti(string op, string[] inputs, string[] outputs, params (string Name, object Value)[] attributes)
    {
        var n = new Proto();
        foreach (var i in inputs) n.String(1, i);
        foreach (var o in outputs) n.String(2, o);
        n.String(3, Name("n_" + op));
        n.String(4, op);
        foreach (var (an, av) in attributes) n.Message(5, Attribute(an, av));
        _nodes.Add(n.ToArray());
    }

    private static Proto Attribute(string an, object av)
    {
        var a = new Proto();
        a.String(1, an);
        switch (av)
        {
            case float f: a.Fixed32(2, BitConverter.SingleToUInt32Bits(f)); a.Varint(20, 1); break;
            case long l: a.Varint(3, (ulong)l); a.Varint(20, 2); break;
            case int i: a.Varint(3, (ulong)(long)i); a.Varint(20, 2); break;
            case long[] ls: foreach (long l in ls) a.Varint(8, (ulong)l); a.Varint(20, 7); break;
            default: throw new ArgumentException($"attribute type {av.GetType()}");
        }
        return a;
    }

    /// <summary>The serialised ModelProto (IR version 8, default opset 17).</summary>
    public byte[] ToModel()
    {
        var g = new Proto();
        foreach (var n in _nodes) g.Bytes(1, n);
        g.String(2, "fastattn_peer");
        foreach (var t in _inits) g.Bytes(5, t);
        foreach (var i in _inputs) g.Bytes(11, i);
        foreach (var o in _outputs) g.Bytes(12, o);
        var opset = new Proto(); opset.String(1, ""); opset.Varint(2, 17);
        var m = new Proto();
        m.Varint(1, 8);
        m.String(2, "FastAttn.Benchmarks");
        m.Message(7, g);
        m.Message(8, opset);
        return m.ToArray();
    }

    /// <summary>Protobuf wire format: varints, length-delimited fields, 32-bit fixed fields.</summary>
    private sealed class Proto
    {
        private readonly MemoryStream _s = new();
        private void Raw(ulong v) { while (v >= 0x80) { _s.WriteByte((byte)(v | 0x80)); v >>= 7; } _s.WriteByte((byte)v); }
        public void Varint(int field, ulong v) { Raw((ulong)field << 3); Raw(v); }
        public void Fixed32(int field, uint v) { Raw(((ulong)field << 3) | 5); _s.Write(BitConverter.GetBytes(v)); }
        public void Bytes(int field, byte[] b) { Raw(((ulong)field << 3) | 2); Raw((ulong)b.Length); _s.Write(b); }
        public void String(int field, string s) => Bytes(field, Encoding.UTF8.GetBytes(s));
        public void Message(int field, Proto p) => Bytes(field, p.ToArray());
        public byte[] ToArray() => _s.ToArray();
    }
}
