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
        // quantised forms: a block-quantised product (MatMulNBits, 4 bits, K 20 in blocks of 16, zero points) with a named
        // bias after it, and quantize_dynamic's embedding table (Gather of X_quantized, then DequantizeLinear)
        var qg = new OnnxGraph();
        Tensor(qg, "nb_Q4", 2, Enumerable.Range(0, 2 * 2 * 8).Select(i => (byte)(i * 37)).ToArray(), 2, 2, 8);
        qg.Initializer.Add(Floats("nb_scales", 4, 4));
        Tensor(qg, "nb_zero_points", 2, [0x38, 0x71], 2);
        qg.Initializer.Add(Floats("nb.bias", 3, 3));
        var mm = new Onnx.Proto.OnnxNode { OpType = "MatMulNBits", Domain = "com.microsoft" };
        mm.Input.AddRange(["x", "nb_Q4", "nb_scales", "nb_zero_points"]);
        mm.Output.Add("nb_out");
        foreach (var (an, av) in new[] { ("K", 20L), ("N", 2L), ("bits", 4L), ("block_size", 16L) }) mm.Attribute.Add(new OnnxAttribute { Name = an, I = av, Type = 2 });
        qg.Node.Add(mm);
        qg.Node.Add(Node("Add", ["nb_out", "nb.bias"], "y"));
        Tensor(qg, "t.weight_quantized", 2, Enumerable.Range(0, 10 * 4).Select(i => (byte)(i * 11)).ToArray(), 10, 4);
        qg.Initializer.Add(Floats("t.weight_scale", 1));
        Tensor(qg, "t.weight_zero_point", 2, [128]);
        qg.Node.Add(Node("Gather", ["t.weight_quantized", "ids"], "rows_q"));
        qg.Node.Add(Node("DequantizeLinear", ["rows_q", "t.weight_scale", "t.weight_zero_point"], "rows"));
        // a bitsandbytes-style product (MatMulBnb4, NF4, K 20 × N 2 in blocks of 16) with a named bias after it
        Tensor(qg, "bb_bnb4", 2, Enumerable.Range(0, 20).Select(i => (byte)(i * 53)).ToArray(), 20);
        qg.Initializer.Add(Floats("bb_absmax", 3, 3));
        qg.Initializer.Add(Floats("bb.bias", 2, 2));
        var bb = new Onnx.Proto.OnnxNode { OpType = "MatMulBnb4", Domain = "com.microsoft" };
        bb.Input.AddRange(["x", "bb_bnb4", "bb_absmax"]);
        bb.Output.Add("bb_out");
        foreach (var (an, av) in new[] { ("K", 20L), ("N", 2L), ("block_size", 16L), ("quant_type", 1L) }) bb.Attribute.Add(new OnnxAttribute { Name = an, I = av, Type = 2 });
        qg.Node.Add(bb);
        qg.Node.Add(Node("Add", ["bb_out", "bb.bias"], "y2"));
        // a QAttention node (an int8 q|k|v weight [4, 12], its scale and zero point) after DynamicQuantizeLinear
        Tensor(qg, "qa_w", 3, Enumerable.Range(0, 4 * 12).Select(i => (byte)(i * 29)).ToArray(), 4, 12);
        qg.Initializer.Add(Floats("qa_b", 12, 12));
        qg.Initializer.Add(Floats("qa_scale", 1));
        Tensor(qg, "qa_zp", 3, [0]);
        qg.Node.Add(Node("DynamicQuantizeLinear", ["x"], "xq"));
        var qa = new Onnx.Proto.OnnxNode { OpType = "QAttention", Domain = "com.microsoft" };
        qa.Input.AddRange(["xq", "qa_w", "qa_b", "xs", "qa_scale", "", "xz", "qa_zp"]);
        qa.Output.Add("att");
        qa.Attribute.Add(new OnnxAttribute { Name = "num_heads", I = 2, Type = 2 });
        qg.Node.Add(qa);
        qg.Input.Add(new OnnxValueInfo { Name = "x" });
        qg.Output.Add(new OnnxValueInfo { Name = "y" });
        var qm = new OnnxModel { IrVersion = 7, ProducerName = "seed", Graph = qg };
        qm.OpsetImport.Add(new OnnxOpset { Domain = "", Version = 13 });
        File.WriteAllBytes(Path.Combine(dir, "quantized.onnx"), qm.ToByteArray());
        // the QDQ format: weights as codes behind DequantizeLinear (int8 per axis 1, uint4 in blocks of 2 along axis 0 with
        // zero points, an int32 bias) and a QuantizeLinear → DequantizeLinear pair on the activation, under opset 21
        var dg = new OnnxGraph();
        Tensor(dg, "w.weight_quantized", 3, Enumerable.Range(0, 4 * 3).Select(i => (byte)(i * 23)).ToArray(), 4, 3);
        dg.Initializer.Add(Floats("w.weight_scale", 3, 3));
        Tensor(dg, "u.weight_quantized", 21, [0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC], 4, 3);
        dg.Initializer.Add(Floats("u.weight_scale", 6, 2, 3));
        Tensor(dg, "u.weight_zero_point", 21, [0x88, 0x88, 0x08], 2, 3);
        Tensor(dg, "w.bias_quantized", 6, Enumerable.Range(0, 3).SelectMany(i => BitConverter.GetBytes(i * 1000 - 1000)).ToArray(), 3);
        dg.Initializer.Add(Floats("w.bias_scale", 1));
        dg.Initializer.Add(Floats("x_scale", 1));
        Tensor(dg, "x_zero_point", 2, [128]);
        OnnxAttribute Attr(string name, long v) => new() { Name = name, I = v, Type = 2 };
        var dw = Node("DequantizeLinear", ["w.weight_quantized", "w.weight_scale"], "w_dq"); dw.Attribute.Add(Attr("axis", 1));
        var du = Node("DequantizeLinear", ["u.weight_quantized", "u.weight_scale", "u.weight_zero_point"], "u_dq"); du.Attribute.Add(Attr("axis", 0)); du.Attribute.Add(Attr("block_size", 2));
        dg.Node.Add(dw); dg.Node.Add(du);
        dg.Node.Add(Node("DequantizeLinear", ["w.bias_quantized", "w.bias_scale"], "b_dq"));
        dg.Node.Add(Node("QuantizeLinear", ["x", "x_scale", "x_zero_point"], "x_q"));
        dg.Node.Add(Node("DequantizeLinear", ["x_q", "x_scale", "x_zero_point"], "x_dq"));
        dg.Node.Add(Node("MatMul", ["x_dq", "w_dq"], "y"));
        dg.Node.Add(Node("Add", ["y", "b_dq"], "z"));
        dg.Node.Add(Node("MatMul", ["z", "u_dq"], "out"));
        // and a QEmbedLayerNormalization (uint8 tables, gamma and beta, a scale and zero point each)
        string[] parts = ["word", "position", "type", "gamma", "beta"];
        foreach (var (part, i) in parts.Select((p, i) => (p, i)))
        {
            long[] shape = i < 3 ? [i == 2 ? 2 : 8, 4] : [4];
            Tensor(dg, $"e.{part}_quantized", 2, Enumerable.Range(0, (int)shape.Aggregate(1L, (a, b) => a * b)).Select(k => (byte)(k * 19 + i)).ToArray(), shape);
            dg.Initializer.Add(Floats($"e.{part}_scale", 1));
            Tensor(dg, $"e.{part}_zero_point", 2, [(byte)(100 + i)]);
        }
        var qe = new Onnx.Proto.OnnxNode { OpType = "QEmbedLayerNormalization", Domain = "com.microsoft" };
        qe.Input.AddRange(["ids", "types", .. parts.Select(p => $"e.{p}_quantized"), "", .. parts.Select(p => $"e.{p}_scale"), .. parts.Select(p => $"e.{p}_zero_point")]);
        qe.Output.AddRange(["emb", "mask_index"]);
        dg.Node.Add(qe);
        // and the QOperator form: QLinearMatMul with an int8 weight, QLinearAdd of a uint8 bias, an 8-bit Reshape, then DequantizeLinear
        Tensor(dg, "o.weight_quantized", 3, Enumerable.Range(0, 3 * 2).Select(i => (byte)(i * 41)).ToArray(), 3, 2);
        dg.Initializer.Add(Floats("o.weight_scale", 2, 2));
        Tensor(dg, "o.weight_zero_point", 3, [0, 0], 2);
        Tensor(dg, "o.bias_quantized", 2, [10, 200], 2);
        dg.Initializer.Add(Floats("o.bias_scale", 1));
        Tensor(dg, "o.bias_zero_point", 2, [128]);
        var qmm = Node("QLinearMatMul", ["x_q", "x_scale", "x_zero_point", "o.weight_quantized", "o.weight_scale", "o.weight_zero_point", "x_scale", "x_zero_point"], "o_mm8");
        var qad = Node("QLinearAdd", ["o_mm8", "x_scale", "x_zero_point", "o.bias_quantized", "o.bias_scale", "o.bias_zero_point", "x_scale", "x_zero_point"], "o_sum8");
        qad.Domain = "com.microsoft";
        var ints = new OnnxTensor { Name = "o_shape", DataType = 7, RawData = ByteString.CopyFrom(BitConverter.GetBytes(-1L)) }; ints.Dims.Add(1);
        dg.Initializer.Add(ints);
        dg.Node.Add(qmm); dg.Node.Add(qad);
        dg.Node.Add(Node("Reshape", ["o_sum8", "o_shape"], "o_flat8"));
        dg.Node.Add(Node("DequantizeLinear", ["o_flat8", "x_scale", "x_zero_point"], "o_flat"));
        dg.Input.Add(new OnnxValueInfo { Name = "x" });
        dg.Output.Add(new OnnxValueInfo { Name = "out" });
        var dm = new OnnxModel { IrVersion = 10, ProducerName = "seed", Graph = dg };
        dm.OpsetImport.Add(new OnnxOpset { Domain = "", Version = 21 });
        dm.OpsetImport.Add(new OnnxOpset { Domain = "com.microsoft", Version = 1 });
        File.WriteAllBytes(Path.Combine(dir, "qdq.onnx"), dm.ToByteArray());
    }

    private static void Tensor(OnnxGraph g, string name, int type, byte[] data, params long[] dims)
    {
        var t = new OnnxTensor { Name = name, DataType = type, RawData = ByteString.CopyFrom(data) };
        t.Dims.AddRange(dims);
        g.Initializer.Add(t);
    }

    /// <summary>
    /// The seeds of the charsmap and unigram targets, into <paramref name="corpusDir"/>/charsmap and /unigram: small
    /// charsmaps in SentencePiece's layout, and tokenizer.json files in XLM-RoBERTa's form and two others.
    /// </summary>
    public static void WriteUnigram(string corpusDir)
    {
        string bpe = Path.Combine(corpusDir, "bpe");
        Directory.CreateDirectory(bpe);
        string[] words = ["the", "café", "owner", "paid", "books", "hello", "world", "don't", "stop", "中文", "123"];
        var byteLevel = FastAttn.TestSupport.BpeFiles.Build(FastAttn.TestSupport.BpeFiles.ByteChars.Select(c => c.ToString()),
            words.SelectMany(w => new[] { FastAttn.TestSupport.BpeFiles.ByteLevel(" " + w), FastAttn.TestSupport.BpeFiles.ByteLevel(w) }));
        FastAttn.TestSupport.BpeFiles.TokenizerJson(Path.Combine(bpe, "roberta.json"), byteLevel, new FastAttn.TestSupport.BpeFiles.Settings { PreTokenizer = FastAttn.TestSupport.BpeFiles.ByteLevelPre() });
        var sp = FastAttn.TestSupport.BpeFiles.Build(Enumerable.Range(0, 256).Select(b => $"<0x{b:X2}>").Concat(words.SelectMany(w => w.Select(c => c.ToString()))).Append("\u2581"),
            words.Select(w => "\u2581" + w), suffix: "");
        FastAttn.TestSupport.BpeFiles.TokenizerJson(Path.Combine(bpe, "sentencepiece.json"), sp, new FastAttn.TestSupport.BpeFiles.Settings
        {
            PreTokenizer = FastAttn.TestSupport.UnigramFiles.Metaspace(), PostProcessor = "template", UnkToken = "<unk>", FuseUnk = true, ByteFallback = true, TupleMerges = true,
        });
        // Qwen2/Qwen3's layout: NFC, Split by its pattern, the byte alphabet, the end-of-text token appended
        FastAttn.TestSupport.BpeFiles.TokenizerJson(Path.Combine(bpe, "qwen.json"), byteLevel, new FastAttn.TestSupport.BpeFiles.Settings
        {
            Normalizer = w => { w.WriteStartObject(); w.WriteString("type", "NFC"); w.WriteEndObject(); },
            PreTokenizer = FastAttn.TestSupport.BpeFiles.DecoderPre(FastAttn.TestSupport.BpeFiles.Qwen2Regex), PostProcessor = "eos", TupleMerges = true,
        });
        // Gemma's layout: spaces as ▁, a Split on " ", byte fallback, <s> A
        FastAttn.TestSupport.BpeFiles.TokenizerJson(Path.Combine(bpe, "gemma.json"), sp, new FastAttn.TestSupport.BpeFiles.Settings
        {
            Normalizer = w => { w.WriteStartObject(); w.WriteString("type", "Replace"); w.WriteStartObject("pattern"); w.WriteString("String", " "); w.WriteEndObject(); w.WriteString("content", "\u2581"); w.WriteEndObject(); },
            PreTokenizer = FastAttn.TestSupport.BpeFiles.SplitStringPre(" ", "MergedWithPrevious"), PostProcessor = "template", UnkToken = "<unk>", FuseUnk = true, ByteFallback = true, TupleMerges = true,
        });
        var suffixed = FastAttn.TestSupport.BpeFiles.Build([], words, prefix: "##", suffix: "</w>");
        FastAttn.TestSupport.BpeFiles.TokenizerJson(Path.Combine(bpe, "prefix-suffix.json"), suffixed, new FastAttn.TestSupport.BpeFiles.Settings { PostProcessor = "bytelevel", UnkToken = "<unk>" });

        string cm = Path.Combine(corpusDir, "charsmap"), uni = Path.Combine(corpusDir, "unigram");
        Directory.CreateDirectory(cm);
        Directory.CreateDirectory(uni);
        var small = FastAttn.TestSupport.UnigramFiles.CharsMap([("Ｈ", "H"), ("ｅ", "e"), ("\t", " "), ("ﬁ", "fi"), ("①", "1"), ("ｶﾞ", "ガ")]);
        var nfkc = FastAttn.TestSupport.UnigramFiles.CharsMap(FastAttn.TestSupport.UnigramFiles.NfkcLikeRules().Where(r => r.Item1.Length == 1 && r.Item1[0] < 0x3000).Take(400));
        File.WriteAllBytes(Path.Combine(cm, "small.bin"), small);
        File.WriteAllBytes(Path.Combine(cm, "nfkc-400.bin"), nfkc);
        var pieces = new List<(string, double)> { ("\u2581", -2) };
        foreach (var w in new[] { "the", "café", "owner", "paid", "books", "hello", "world", "中", "文", "한국어" }) { pieces.Add(("\u2581" + w, -3)); pieces.Add((w, -5)); }
        foreach (char c in "abcdefghijklmnopqrstuvwxyz0123456789") pieces.Add((c.ToString(), -8));
        pieces = [.. pieces.DistinctBy(p => p.Item1)];
        FastAttn.TestSupport.UnigramFiles.TokenizerJson(Path.Combine(uni, "xlmr.json"), pieces,
            new FastAttn.TestSupport.UnigramFiles.Settings { Normalizer = FastAttn.TestSupport.UnigramFiles.XlmrNormalizer(small), PreTokenizer = FastAttn.TestSupport.UnigramFiles.Metaspace(), MaskLStrip = true });
        FastAttn.TestSupport.UnigramFiles.TokenizerJson(Path.Combine(uni, "bare.json"), pieces, new FastAttn.TestSupport.UnigramFiles.Settings { Template = false });
        FastAttn.TestSupport.UnigramFiles.TokenizerJson(Path.Combine(uni, "byte-fallback.json"),
            [.. pieces, .. Enumerable.Range(0, 256).Select(b => ($"<0x{b:X2}>", -20.0))],
            new FastAttn.TestSupport.UnigramFiles.Settings { PreTokenizer = FastAttn.TestSupport.UnigramFiles.Metaspace("never", split: false), ByteFallback = true, Extra = [("wörld", true, true, true)] });
    }
}
