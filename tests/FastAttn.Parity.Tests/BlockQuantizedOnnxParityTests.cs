using System.Runtime.InteropServices;
using FastAttn.Embeddings;
using FastAttn.Onnx.Proto;
using FastAttn.TestSupport;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using OnnxNode = FastAttn.Onnx.Proto.OnnxNode;

namespace FastAttn.Parity.Tests;

/// <summary>
/// A BERT whose weight products are ONNX Runtime's block-quantised com.microsoft <c>MatMulNBits</c> (what its 4-bit
/// weight quantiser writes: the <c>model_q4.onnx</c> files of repositories made for transformers.js). No such file is
/// served here, so the test writes one from all-MiniLM-L6-v2 by the operator's schema — codes packed low bits first
/// along K, a scale per (column, block), zero points packed the same way or left to the default 2^(bits−1) — and
/// ONNX Runtime runs it. FastAttn reads the weights dequantised and must match ONNX Runtime on that file, and on an
/// FP32 twin holding the same dequantised weights.
/// </summary>
public class BlockQuantizedOnnxParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static int Write(string quantised, string dequantised, int bits, int block, bool zeroPoints, bool halfScales = false)
    {
        var (_, q, d, inits, dInits) = OnnxRewrite.MiniLmTwins();
        var nodes = new List<OnnxNode>();
        int count = 0, levels = (1 << bits) - 1, perByte = 8 / bits;
        foreach (var n in q.Graph.Node)
        {
            if (n.OpType != "MatMul" || n.Input.Count != 2 || !inits.TryGetValue(n.Input[1], out var w) || w.DataType != 1 || w.Dims.Count != 2)
            {
                nodes.Add(n);
                continue;
            }
            var f = MemoryMarshal.Cast<byte, float>(w.RawData.Span).ToArray();
            int k = (int)w.Dims[0], cols = (int)w.Dims[1];                     // MatMul's B is [K, N]
            int blocks = (k + block - 1) / block, blob = block * bits / 8, zeroBytes = (blocks * bits + 7) / 8;
            var codes = new byte[cols * blocks * blob];
            var scales = new float[cols * blocks];
            var zeros = new byte[cols * zeroBytes];
            var deq = new float[k * cols];
            for (int c = 0; c < cols; c++)
                for (int b = 0; b < blocks; b++)
                {
                    int k0 = b * block, k1 = Math.Min(k, k0 + block);
                    float min = 0, max = 0, absMax = 0;
                    for (int kk = k0; kk < k1; kk++) { float x = f[kk * cols + c]; min = Math.Min(min, x); max = Math.Max(max, x); absMax = Math.Max(absMax, MathF.Abs(x)); }
                    // asymmetric with a zero point, or symmetric around the default zero point 2^(bits−1)
                    int zero;
                    float scale;
                    if (zeroPoints) { scale = Math.Max(max - min, 1e-8f) / levels; zero = Math.Clamp((int)MathF.Round(-min / scale), 0, levels); }
                    else { zero = 1 << (bits - 1); scale = Math.Max(absMax, 1e-8f) / (zero - 1); }
                    if (halfScales) scale = (float)(Half)scale;                 // q4f16's scales: float16
                    scales[c * blocks + b] = scale;
                    zeros[c * zeroBytes + b / perByte] |= (byte)(zero << (b % perByte * bits));
                    for (int kk = k0; kk < k1; kk++)
                    {
                        int j = kk - k0, code = Math.Clamp((int)MathF.Round(f[kk * cols + c] / scale) + zero, 0, levels);
                        codes[(c * blocks + b) * blob + j / perByte] |= (byte)(code << (j % perByte * bits));
                        deq[kk * cols + c] = (code - zero) * scale;
                    }
                }
            // named after the layer, as a quantiser working from named weights writes them (X.weight_Q4, X.weight_scales):
            // the scales then look like parameters, and must not be taken for them
            string? bias = q.Graph.Node.FirstOrDefault(a => a.OpType == "Add" && a.Input.Contains(n.Output[0]))?.Input.FirstOrDefault(i => i.EndsWith(".bias", StringComparison.Ordinal));
            string stem = bias != null ? bias[..^".bias".Length] + ".weight" : n.Input[1];
            string wq = stem + "_Q" + bits, ws = stem + "_scales", wz = stem + "_zero_points";
            var tq = new OnnxTensor { Name = wq, DataType = 2, RawData = ByteString.CopyFrom(codes) };
            tq.Dims.AddRange([cols, blocks, blob]);
            var ts = halfScales
                ? new OnnxTensor { Name = ws, DataType = 10, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(scales.Select(x => BitConverter.HalfToUInt16Bits((Half)x)).ToArray().AsSpan())) }
                : new OnnxTensor { Name = ws, DataType = 1, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(scales.AsSpan())) };
            ts.Dims.Add(cols * blocks);
            q.Graph.Initializer.Add(tq);
            q.Graph.Initializer.Add(ts);
            var m = new OnnxNode { OpType = "MatMulNBits", Domain = "com.microsoft", Name = "q_" + n.Output[0] };
            m.Input.AddRange([n.Input[0], wq, ws]);
            if (zeroPoints)
            {
                var tz = new OnnxTensor { Name = wz, DataType = 2, RawData = ByteString.CopyFrom(zeros) };
                tz.Dims.Add(cols * zeroBytes);
                q.Graph.Initializer.Add(tz);
                m.Input.Add(wz);
            }
            m.Output.Add(n.Output[0]);
            foreach (var (name, v) in new[] { ("K", k), ("N", cols), ("bits", bits), ("block_size", block) })
                m.Attribute.Add(new OnnxAttribute { Name = name, I = v, Type = 2 });
            nodes.Add(m);
            dInits[n.Input[1]].RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(deq.AsSpan()));
            count++;
        }
        OnnxRewrite.Save(q, nodes, quantised);
        File.WriteAllBytes(dequantised, d.ToByteArray());
        return count;
    }

    [Theory]
    [InlineData(4, 32, true)]     // the quantiser's usual setting: 4 bits, blocks of 32, zero points
    [InlineData(4, 128, false)]   // symmetric: the default zero point 8
    [InlineData(4, 256, true)]    // a block longer than half of K = 384: the last block padded
    [InlineData(8, 64, true)]
    [InlineData(2, 32, true)]
    [InlineData(4, 32, true, true)]   // float16 scales, as in q4f16 files (whose activations are float16 too, so ONNX Runtime
                                      // does not run this FP32 graph with them: checked against the FP32 twin only)
    public void ABlockQuantisedExport_MatchesOnnxRuntime(int bits, int block, bool zeroPoints, bool halfScales = false)
    {
        string dir = Path.Combine(PackagedModel.CacheRoot, $"all-MiniLM-L6-v2-{MiniLmPackage.Version}-nbits{bits}-{block}-{zeroPoints}-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        try
        {
            string quantised = Path.Combine(dir, "model.onnx"), dequantised = Path.Combine(dir, "fp32-dequantised.onnx");
            Assert.Equal(36, Write(quantised, dequantised, bits, block, zeroPoints, halfScales));   // 6 layers × (Q, K, V, output, two feed-forward)
            Check(dir, quantised, dequantised, $"{bits} bits, blocks of {block}, zero points {zeroPoints}{(halfScales ? ", float16 scales" : "")}", runQuantised: !halfScales);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    // bitsandbytes' FP4 and NF4 code values, as ONNX Runtime's MatMulBnb4 kernel holds them (see OnnxModelFile)
    private static readonly float[][] Bnb4 =
    [
        [0f, 5.208333333e-03f, 0.66666667f, 1f, 0.33333333f, 0.5f, 0.16666667f, 0.25f, -0f, -5.208333333e-03f, -0.66666667f, -1f, -0.33333333f, -0.5f, -0.16666667f, -0.25f],
        [-1f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0f,
         0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1f],
    ];

    /// <summary>The MatMulBnb4 form: each weight transposed to [N, K], flattened, cut in blocks scaled by their absmax, each value the nearest code.</summary>
    private static int WriteBnb4(string quantised, string dequantised, int quantType, int block)
    {
        var (_, q, d, inits, dInits) = OnnxRewrite.MiniLmTwins();
        var nodes = new List<OnnxNode>();
        int count = 0;
        var table = Bnb4[quantType];
        foreach (var n in q.Graph.Node)
        {
            if (n.OpType != "MatMul" || n.Input.Count != 2 || !inits.TryGetValue(n.Input[1], out var w) || w.DataType != 1 || w.Dims.Count != 2)
            {
                nodes.Add(n);
                continue;
            }
            var f = MemoryMarshal.Cast<byte, float>(w.RawData.Span).ToArray();
            int k = (int)w.Dims[0], cols = (int)w.Dims[1], total = k * cols, blocks = (total + block - 1) / block;
            var flat = new float[total];                                   // [N, K]
            for (int kk = 0; kk < k; kk++) for (int c = 0; c < cols; c++) flat[c * k + kk] = f[kk * cols + c];
            var codes = new byte[(total + 1) / 2];
            var absMax = new float[blocks];
            var deq = new float[total];
            for (int b = 0; b < blocks; b++)
            {
                int i0 = b * block, i1 = Math.Min(total, i0 + block);
                for (int i = i0; i < i1; i++) absMax[b] = Math.Max(absMax[b], MathF.Abs(flat[i]));
                for (int i = i0; i < i1; i++)
                {
                    float x = absMax[b] > 0 ? flat[i] / absMax[b] : 0;
                    int best = 0;
                    for (int c = 1; c < 16; c++) if (MathF.Abs(table[c] - x) < MathF.Abs(table[best] - x)) best = c;
                    codes[i / 2] |= (byte)(best << (i % 2 == 0 ? 4 : 0));
                    deq[i] = table[best] * absMax[b];
                }
            }
            string wq = n.Input[1] + "_bnb4", wa = n.Input[1] + "_absmax";
            var tq = new OnnxTensor { Name = wq, DataType = 2, RawData = ByteString.CopyFrom(codes) };
            tq.Dims.Add(codes.Length);
            var ta = new OnnxTensor { Name = wa, DataType = 1, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(absMax.AsSpan())) };
            ta.Dims.Add(blocks);
            q.Graph.Initializer.Add(tq);
            q.Graph.Initializer.Add(ta);
            var m = new OnnxNode { OpType = "MatMulBnb4", Domain = "com.microsoft", Name = "bnb4_" + n.Output[0] };
            m.Input.AddRange([n.Input[0], wq, wa]);
            m.Output.Add(n.Output[0]);
            foreach (var (name, v) in new[] { ("K", k), ("N", cols), ("block_size", block), ("quant_type", quantType) })
                m.Attribute.Add(new OnnxAttribute { Name = name, I = v, Type = 2 });
            nodes.Add(m);
            var back = new float[total];                                    // the twin in MatMul's [K, N]
            for (int kk = 0; kk < k; kk++) for (int c = 0; c < cols; c++) back[kk * cols + c] = deq[c * k + kk];
            dInits[n.Input[1]].RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(back.AsSpan()));
            count++;
        }
        OnnxRewrite.Save(q, nodes, quantised);
        File.WriteAllBytes(dequantised, d.ToByteArray());
        return count;
    }

    [Theory]
    [InlineData(1, 64)]    // NF4, the usual
    [InlineData(0, 32)]    // FP4
    public void ABnb4Export_MatchesOnnxRuntime(int quantType, int block)
    {
        string dir = Path.Combine(PackagedModel.CacheRoot, $"all-MiniLM-L6-v2-{MiniLmPackage.Version}-bnb4-{quantType}-{block}-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        try
        {
            string quantised = Path.Combine(dir, "model.onnx"), dequantised = Path.Combine(dir, "fp32-dequantised.onnx");
            Assert.Equal(36, WriteBnb4(quantised, dequantised, quantType, block));
            Check(dir, quantised, dequantised, $"MatMulBnb4 {(quantType == 1 ? "NF4" : "FP4")}, blocks of {block}");
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    /// <summary>
    /// FastAttn on the quantised file in <paramref name="dir"/> against ONNX Runtime running that file and its FP32 twin
    /// (20 texts, last_hidden_state), and the mean-pooled cosine with the unquantised model, reported.
    /// </summary>
    private void Check(string dir, string quantised, string dequantised, string what, bool runQuantised = true)
    {
        File.Copy(MiniLmPackage.Files.Vocab, Path.Combine(dir, "vocab.txt"), overwrite: true);
        using var embedder = SentenceEmbedder.Load(dir, options: new SentenceEmbedderOptions { MaxSessions = 1 });
        Assert.Empty(FastAttn.Onnx.OnnxModelFile.Open(quantised).Unmatched);
        using var session = new EmbeddingSession(embedder.Model, embedder.Tokenizer);
        using var ortQ = runQuantised ? new InferenceSession(quantised, new SessionOptions { IntraOpNumThreads = 1 }) : null;
        using var ortFp32 = new InferenceSession(dequantised, new SessionOptions { IntraOpNumThreads = 1 });
        using var ortOriginal = new InferenceSession(MiniLmPackage.Files.Model, new SessionOptions { IntraOpNumThreads = 1 });
        int h = embedder.Model.Config.HiddenSize;
        double worstQ = 0, worstFp32 = 0, toOriginal = 1;
        foreach (var s in MiniLmParityTests.BuiltIn.Take(20))
        {
            var ids = embedder.Tokenizer.Encode(s);
            var mine = new float[ids.Length * h];
            session.HiddenStates(ids, [ids.Length], mine);
            double Rel(float[] reference)
            {
                double mr = reference.Max(MathF.Abs), md = 0;
                for (int i = 0; i < mine.Length; i++) md = Math.Max(md, Math.Abs(mine[i] - reference[i]));
                return md / mr;
            }
            if (ortQ != null) worstQ = Math.Max(worstQ, Rel(MiniLmParityTests.Ort(ortQ, ids)));
            worstFp32 = Math.Max(worstFp32, Rel(MiniLmParityTests.Ort(ortFp32, ids)));
            var original = MiniLmParityTests.Ort(ortOriginal, ids);
            toOriginal = Math.Min(toOriginal, Vectors.Cosine(OnnxRewrite.Mean(mine, ids.Length, h), OnnxRewrite.Mean(original, ids.Length, h)));
        }
        output.WriteLine($"{what}: max|Δ|/max|ref| against ONNX Runtime on the quantised file {(ortQ != null ? worstQ.ToString("E2") : "(not run)")}, "
            + $"on the FP32 twin {worstFp32:E2}; mean-pooled cosine with the unquantised model ≥ {toOriginal:F5}");
        Assert.True(worstFp32 <= 2e-6, $"{what}, against the FP32 twin: {worstFp32:E2}");
        Assert.True(worstQ <= 1e-5, $"{what}, against ONNX Runtime on the quantised file: {worstQ:E2}");
    }

    [Fact]
    public void AMalformedBlockQuantisedProduct_IsInvalidData()
    {
        string dir = Path.Combine(PackagedModel.CacheRoot, $"all-MiniLM-L6-v2-{MiniLmPackage.Version}-nbits-bad-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        try
        {
            string path = Path.Combine(dir, "model.onnx");
            Write(path, Path.Combine(dir, "fp32-dequantised.onnx"), 4, 32, true);
            File.Copy(MiniLmPackage.Files.Vocab, Path.Combine(dir, "vocab.txt"), overwrite: true);
            var m = OnnxModel.Parser.ParseFrom(File.ReadAllBytes(path));
            // one product whose codes do not fit its K: its weight is not read, and the model says which one is missing
            var node = m.Graph.Node.First(n => n.OpType == "MatMulNBits");
            node.Attribute.First(a => a.Name == "K").I = 400;
            File.WriteAllBytes(path, m.ToByteArray());
            var e = Assert.Throws<InvalidDataException>(() => SentenceEmbedder.Load(dir, options: new SentenceEmbedderOptions { MaxSessions = 1 }));
            output.WriteLine(e.Message);
            Assert.Contains("weight", e.Message);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
