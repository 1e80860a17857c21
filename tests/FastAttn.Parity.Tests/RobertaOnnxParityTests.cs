using System.Runtime.InteropServices;
using FastAttn.Embeddings;
using FastAttn.Onnx;
using FastAttn.Onnx.Proto;
using FastAttn.TestSupport;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using OnnxNode = FastAttn.Onnx.Proto.OnnxNode;

namespace FastAttn.Parity.Tests;

/// <summary>
/// The RoBERTa family's ONNX exports (XLM-RoBERTa: multilingual-e5-base, bge-m3, paraphrase-multilingual-mpnet-base-v2):
/// BERT's layers, but positions computed in the graph from the ids — Equal(input_ids, padding) → Not → Cast → CumSum →
/// Mul → Add(padding), Hugging Face's <c>create_position_ids_from_input_ids</c> as torch exports it — into a table whose
/// first rows (up to the padding index) no ordinary token reaches. No such model is served here, so the test rewrites
/// all-MiniLM-L6-v2's graph into that form (two rows put in front of its position table, the position ids computed as
/// above), has ONNX Runtime run it, and checks FastAttn against ONNX Runtime on the same file — ids with the padding id
/// inside included, where the numbering skips them.
/// </summary>
public class RobertaOnnxParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private const int H = 384, Pad = 1;

    private static OnnxTensor Int64(string name, long value)
    {
        var t = new OnnxTensor { Name = name, DataType = 7 };
        t.Int64Data.Add(value);
        return t;
    }

    private static OnnxNode Node(string op, string[] inputs, string output, long? to = null)
    {
        var n = new OnnxNode { OpType = op, Name = $"{op}_{output}" };
        n.Input.AddRange(inputs);
        n.Output.Add(output);
        if (to is long t) n.Attribute.Add(new OnnxAttribute { Name = "to", I = t, Type = 2 });
        return n;
    }

    /// <summary>all-MiniLM-L6-v2 with RoBERTa's position numbering, into <paramref name="dir"/>/model.onnx.</summary>
    internal static void WriteRobertaForm(string dir)
    {
        var model = OnnxModel.Parser.ParseFrom(File.ReadAllBytes(MiniLmPackage.Files.Model));
        var g = model.Graph;
        var gather = g.Node.Single(n => n.OpType == "Gather" && n.Input[0] == "embeddings.position_embeddings.weight");
        gather.Input[1] = "roberta_position_ids";
        g.Initializer.Add(Int64("roberta_pad", Pad));
        g.Initializer.Add(Int64("roberta_axis", 1));
        g.Node.Add(Node("Equal", ["input_ids", "roberta_pad"], "roberta_is_pad"));
        g.Node.Add(Node("Not", ["roberta_is_pad"], "roberta_not_pad"));
        g.Node.Add(Node("Cast", ["roberta_not_pad"], "roberta_mask", to: 7));
        g.Node.Add(Node("CumSum", ["roberta_mask", "roberta_axis"], "roberta_count"));
        g.Node.Add(Node("Mul", ["roberta_count", "roberta_mask"], "roberta_counted"));
        g.Node.Add(Node("Add", ["roberta_counted", "roberta_pad"], "roberta_position_ids"));
        // the table gains the rows in front: row 1 (the padding row) random and large, so that a padding token's row shows
        var table = g.Initializer.Single(t => t.Name == "embeddings.position_embeddings.weight");
        var old = MemoryMarshal.Cast<byte, float>(table.RawData.Span).ToArray();
        var front = new Random(42);
        var rows = Enumerable.Range(0, (Pad + 1) * H).Select(_ => (float)(front.NextDouble() - 0.5)).Concat(old).ToArray();
        table.RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(rows.AsSpan()));
        table.Dims[0] += Pad + 1;
        // the nodes that numbered positions before now feed nothing: dropped
        var producer = g.Node.SelectMany(n => n.Output.Select(o => (o, n))).ToDictionary(p => p.o, p => p.n);
        var live = new HashSet<OnnxNode>();
        var todo = new Stack<string>(g.Output.Select(o => o.Name));
        while (todo.Count > 0)
            if (producer.TryGetValue(todo.Pop(), out var pn) && live.Add(pn))
                foreach (var i in pn.Input) todo.Push(i);
        // in an order ONNX accepts: each node after the producers of its inputs
        var keep = new List<OnnxNode>();
        var done = new HashSet<OnnxNode>();
        void Visit(OnnxNode n)
        {
            if (!done.Add(n)) return;
            foreach (var i in n.Input) if (producer.TryGetValue(i, out var q) && live.Contains(q)) Visit(q);
            keep.Add(n);
        }
        foreach (var n in g.Node) if (live.Contains(n)) Visit(n);
        g.Node.Clear();
        g.Node.AddRange(keep);
        var used = keep.SelectMany(n => n.Input).ToHashSet();
        var inits = g.Initializer.Where(t => used.Contains(t.Name)).ToList();
        g.Initializer.Clear();
        g.Initializer.AddRange(inits);
        Directory.CreateDirectory(dir);
        File.WriteAllBytes(Path.Combine(dir, "model.onnx"), model.ToByteArray());
    }

    [Fact]
    public void ARobertaFormExport_LoadsWithAndWithoutConfig_AndMatchesOnnxRuntime_PaddingIdsInside()
    {
        string dir = Path.Combine(PackagedModel.CacheRoot, $"all-MiniLM-L6-v2-{MiniLmPackage.Version}-roberta-{Environment.ProcessId}");
        try
        {
            WriteRobertaForm(dir);
            string path = Path.Combine(dir, "model.onnx");
            Assert.Contains(OnnxModelFile.Open(path).Nodes, n => n.OpType == "CumSum");
            using var ort = new InferenceSession(path, new SessionOptions { IntraOpNumThreads = 1 });
            var tokenizer = BertWordPieceTokenizer.FromVocabFile(MiniLmPackage.Files.Vocab);
            var rnd = new Random(3);
            var sequences = new List<int[]>();
            foreach (var s in MiniLmParityTests.BuiltIn.Take(16))
            {
                var ids = tokenizer.Encode(s).ToList();
                sequences.Add([.. ids]);
                // the padding id inside: once, twice in a row, first and last
                for (int k = rnd.Next(1, 4); k > 0; k--) ids.Insert(rnd.Next(ids.Count + 1), Pad);
                sequences.Add([.. ids]);
            }
            sequences.Add([Pad, 101, 2023, Pad]);
            sequences.Add([101, .. Enumerable.Range(0, 508).Select(i => i % 97 == 0 ? Pad : 1000 + (i * 37) % 20000), 102]);   // all 512 positions
            var reference = sequences.Select(s => MiniLmParityTests.Ort(ort, s)).ToList();

            foreach (bool withConfig in new[] { true, false })
            {
                string config = Path.Combine(dir, "config.json");
                if (withConfig)
                    File.WriteAllText(config, """
                        {"model_type": "xlm-roberta", "hidden_size": 384, "num_attention_heads": 12, "num_hidden_layers": 6, "intermediate_size": 1536,
                         "hidden_act": "gelu", "layer_norm_eps": 1e-12, "max_position_embeddings": 514, "type_vocab_size": 2, "vocab_size": 30522,
                         "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
                        """);
                else if (File.Exists(config)) File.Delete(config);
                using var model = BertModel.Load(path);
                output.WriteLine(model.Source);
                Assert.Equal(withConfig ? "xlm-roberta" : "roberta", model.Config.ModelType);
                Assert.Equal(Pad, model.Config.PaddingIdx);                      // without config.json: from the graph's Equal constant
                Assert.Equal(512, model.Embeddings.MaxPositions);
                using var session = new EmbeddingSession(model, null, new SentenceEmbedderOptions { MaxBatchTokens = 1024 });
                double worst = 0;
                // each sequence alone, then all of them packed
                for (int i = 0; i < sequences.Count; i++)
                {
                    var mine = new float[sequences[i].Length * H];
                    session.HiddenStates(sequences[i], [sequences[i].Length], mine);
                    worst = Math.Max(worst, RelDiff(reference[i], mine));
                }
                int[] all = [.. sequences.SelectMany(s => s)], lengths = [.. sequences.Select(s => s.Length)];
                var packed = new float[all.Length * H];
                session.HiddenStates(all, lengths, packed);
                for (int i = 0, t0 = 0; i < sequences.Count; t0 += lengths[i], i++)
                    worst = Math.Max(worst, RelDiff(reference[i], packed.AsSpan(t0 * H, lengths[i] * H)));
                output.WriteLine($"{(withConfig ? "with" : "without")} config.json: {sequences.Count} sequences, max|Δ|/max|ref| against ONNX Runtime {worst:E2}");
                Assert.True(worst <= 2e-6, $"FastAttn on the RoBERTa-form export: {worst:E2}");
            }
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
    }

    private static double RelDiff(float[] reference, ReadOnlySpan<float> got)
    {
        double mr = reference.Max(MathF.Abs), d = 0;
        for (int i = 0; i < reference.Length; i++) d = Math.Max(d, Math.Abs(got[i] - reference[i]));
        return d / mr;
    }
}
