using System.Buffers.Binary;
using System.Text;
using FastAttn.Composition;
using FastAttn.IO;
using FastAttn.Kernels;
using FastAttn.Layers;
using FastAttn.Tagging;
using FastAttn.Tests.IO;
using FastAttn.Tests.Tagging;

namespace FastAttn.Tests;

/// <summary>
/// Regressions for the adversarial audit (issue 13): each case failed before its fix. The contract: files raise only
/// <see cref="InvalidDataException"/>, API misuse <see cref="ArgumentException"/>, nothing is written on error, and
/// work is linear in the input.
/// </summary>
public class HostileInputTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static byte[] SafeTensorsBytes(string header, int dataBytes)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var r = new byte[8 + h.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(r, (ulong)h.Length);
        h.CopyTo(r, 8);
        return r;
    }

    private static InvalidDataException OpenBad(string header, int dataBytes)
    {
        using var dir = new TempDir();
        string path = dir.File("bad.safetensors");
        File.WriteAllBytes(path, SafeTensorsBytes(header, dataBytes));
        var e = Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(path));
        // the same bytes from memory and from a stream
        Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Load(File.ReadAllBytes(path)));
        using (var fs = File.OpenRead(path)) Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Load(fs));
        Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Load(new FastAttn.Fuzz.UnsizedStream(File.ReadAllBytes(path))));
        return e;
    }

    // 2. lone surrogate escapes anywhere in the header
    [Theory]
    [InlineData("{\"\\uD800\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}")]
    [InlineData("{\"a\":{\"dtype\":\"\\uDC00\",\"shape\":[1],\"data_offsets\":[0,4]}}")]
    [InlineData("{\"__metadata__\":{\"\\uD800\":\"x\"},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}")]
    [InlineData("{\"__metadata__\":{\"k\":\"\\uDBFF\"},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}")]
    [InlineData("{\"a\":{\"\\uD800x\":1,\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}")]
    public void LoneSurrogateEscapes_AreInvalidData(string header)
        => Assert.Contains("Unicode", OpenBad(header, 4).Message);

    // 7. duplicate fields inside one entry
    [Theory]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}", "'dtype' appears twice")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"shape\":[2],\"data_offsets\":[0,4]}}", "'shape' appears twice")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"data_offsets\":[0,4]}}", "'data_offsets' appears twice")]
    [InlineData("{\"__metadata__\":{},\"__metadata__\":{},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", "twice")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} x", "not valid JSON")]
    public void DuplicateFieldsAndTrailingContent_AreInvalidData(string header, string problem)
        => Assert.Contains(problem, OpenBad(header, 4).Message);

    // 3. a .npy shape whose byte count wraps to the file's
    [Theory]
    [InlineData("(4611686018427387904,)", 0)]
    [InlineData("(4611686018427387904, 4)", 0)]
    [InlineData("(2305843009213693952, 2, 4)", 0)]
    [InlineData("(9223372036854775807,)", 4)]
    [InlineData("(99999999999999999999,)", 4)]
    [InlineData("(-1,)", 4)]
    [InlineData("(+1,)", 4)]
    public void NpyShapesThatWrapOrAreMalformed_AreInvalidData(string shape, int dataBytes)
    {
        using var dir = new TempDir();
        var h = Encoding.ASCII.GetBytes($"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        var r = new byte[10 + h.Length + dataBytes];
        r[0] = 0x93; Encoding.ASCII.GetBytes("NUMPY").CopyTo(r, 1); r[6] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(r.AsSpan(8), (ushort)h.Length);
        h.CopyTo(r, 10);
        File.WriteAllBytes(dir.File("x.npy"), r);
        Assert.Throws<InvalidDataException>(() => Npy.Read(dir.File("x.npy")));
    }

    // 4. output aliasing input
    [Fact]
    public void OutputOverlappingInput_IsRejected_BeforeAnythingIsWritten()
    {
        using var stack = TransformerEncoder.Create(1, 16, 2, 32, normFirst: true, seed: 3);
        using var s = stack.CreateSession(8);
        var x = Reference.Random(4 * 16, 1);
        var copy = (float[])x.Clone();
        Assert.Throws<ArgumentException>(() => s.Run(x, x));
        Assert.Throws<ArgumentException>(() => s.Run(x.AsSpan(0, 3 * 16), x.AsSpan(16, 3 * 16)));
        Assert.Equal(copy, x);
        using var w = new PackedWeight(Reference.Random(16 * 16, 2), 16, 16);
        var scratch = new float[Gemm.LinearScratchSize(4, 16)];
        Assert.Throws<ArgumentException>(() => Gemm.Linear(x, 4, w, x, scratch));
        var y = new float[64];
        Assert.Throws<ArgumentException>(() => Gemm.Linear(x, 4, w, y, scratch, new GemmEpilogue { Bias = y.AsMemory(0, 16) }));
        Assert.Throws<ArgumentException>(() => Gemm.Linear(x, 4, w, y, scratch, new GemmEpilogue { Residual = y }));
        Assert.Throws<ArgumentException>(() => Gemm.Linear(x, 4, w, y, y));
        Assert.Equal(copy, x);
        var attnScratch = new float[Attention.ScratchSize(8, 8, 4)];
        Assert.Throws<ArgumentException>(() => Attention.Forward(x, 4, x, x, 4, x, attnScratch, new AttentionOptions { Heads = 2, HeadDim = 8 }));
        Assert.Equal(copy, x);
        // a norm may run in place, but not on partly overlapping spans
        var norm = new LayerNorm(16);
        norm.Forward(y, 4, y);
        Assert.Throws<ArgumentException>(() => norm.Forward(y.AsSpan(0, 48), 3, y.AsSpan(16, 48)));
    }

    // 5. a file changed on disk after it was opened
    [Fact]
    public void FileTruncatedOrRewrittenAfterOpen_DoesNotChangeWhatIsRead()
    {
        using var dir = new TempDir();
        string path = dir.File("m.safetensors");
        var data = Reference.Random(1000, 5);
        SafeTensorsWriter.Write(path, [new("w", data, [10, 100])]);
        using var f = SafeTensorsFile.Open(path);
        Assert.False(f.IsMapped);
        using (var fs = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite)) fs.SetLength(20);
        Assert.Equal(data, f.ReadFloat32("w"));
        File.WriteAllBytes(path, new byte[4096]);
        Assert.Equal(data, f.ReadFloat32("w"));
    }

    // 6. sizes beyond what one array can hold
    [Fact]
    public void SizesBeyondAnArray_AreArgumentErrorsNamingTheArgument()
    {
        using var stack = TransformerEncoder.Create(1, 16, 2, 32);
        Assert.Equal("maxTokens", Assert.Throws<ArgumentOutOfRangeException>(() => stack.CreateSession(200_000_000)).ParamName);
        Assert.Equal("maxPositions", Assert.Throws<ArgumentOutOfRangeException>(() => PositionalEncoding.Sinusoidal(65537, 65537)).ParamName);
        Assert.Equal("maxPositions", Assert.Throws<ArgumentOutOfRangeException>(() => new Rope(131074, 65537)).ParamName);
        Assert.Equal("dModel", Assert.Throws<ArgumentOutOfRangeException>(() => TransformerEncoder.Create(1, 30000, 2, 64)).ParamName);
        Assert.ThrowsAny<ArgumentException>(() => TransformerEncoder.Create(1, 10, 3, 64));   // heads do not divide
    }

    // 6b. found by calling every public method with hostile arguments one at a time (an ad-hoc reflection probe, 10,649
    // calls over the five libraries, MiniLM and the bundled tagger as instances): each threw an undocumented exception
    [Fact]
    public void IndexAccessorsAndSizes_ThrowArgumentErrors_NotIndexOrNullReferenceErrors()
    {
        using var weight = new PackedWeight(new float[64 * 32], 64, 32);
        foreach (int bad in new[] { -1, 1, int.MaxValue })
        {
            Assert.Equal("segment", Assert.Throws<ArgumentOutOfRangeException>(() => weight.SegmentRows(bad)).ParamName);
            Assert.Equal("segment", Assert.Throws<ArgumentOutOfRangeException>(() => weight.SegmentColumn(bad)).ParamName);
        }
        Assert.Equal(64, weight.SegmentRows(0));
        var sum = new EmbeddingSum([new float[8], new float[12]], 4);
        Assert.Equal(3, sum.Rows(1));
        Assert.Equal(12, sum.Table(1).Length);
        Assert.Equal("table", Assert.Throws<ArgumentOutOfRangeException>(() => sum.Rows(2)).ParamName);
        Assert.Equal("table", Assert.Throws<ArgumentOutOfRangeException>(() => sum.Table(-1)).ParamName);
        var vocabulary = FeatureVocabulary.Build(["a", "b", "a"]);
        Assert.Equal("feature", Assert.Throws<ArgumentOutOfRangeException>(() => vocabulary.Size(-1)).ParamName);
        Assert.Equal("feature", Assert.Throws<ArgumentOutOfRangeException>(() => vocabulary.Size(FeatureVocabulary.Count)).ParamName);
        Assert.Equal("words", Assert.Throws<ArgumentNullException>(() => FeatureVocabulary.Build(null!)).ParamName);
        Assert.Equal("words", Assert.Throws<ArgumentException>(() => FeatureVocabulary.Build(["a", null!])).ParamName);
        Assert.Equal("sentences", Assert.Throws<ArgumentNullException>(() => TokenizerAgreement.Measure(null!)).ParamName);
        Assert.Equal("sentences", Assert.Throws<ArgumentException>(() => TokenizerAgreement.Measure([null!])).ParamName);
        Assert.Equal("layers", Assert.Throws<ArgumentOutOfRangeException>(() => TransformerEncoder.Create(int.MaxValue, 4, 1, 4)).ParamName);
    }

    // a worker scratch of 2^62 floats is 2^64 bytes: the size wrapped to 0 bytes, which were then taken as 2^62 floats
    [Fact]
    public void WorkerScratchBeyondTheAddressSpace_IsRefused_AndThePoolStaysUsable()
    {
        using var pool = new FastAttn.Threading.WorkerPool(2);
        foreach (long floats in new[] { 1L << 62, (1L << 62) + 1, long.MaxValue })
            Assert.Equal("floats", Assert.Throws<ArgumentOutOfRangeException>(() => pool.EnsureWorkerScratch(floats)).ParamName);
        pool.EnsureWorkerScratch(1000);
        Assert.Equal(1000, pool.WorkerScratchFloats);
        // the pool still runs products that use the scratch
        var x = new float[40 * 96]; var w = new float[80 * 96]; var y = new float[40 * 80];
        for (int i = 0; i < x.Length; i++) x[i] = (i % 13) * 0.1f - 0.6f;
        for (int i = 0; i < w.Length; i++) w[i] = (i % 7) * 0.1f - 0.3f;
        using var pw = new PackedWeight(w, 80, 96);
        Gemm.Linear(x, 40, pw, y, new float[Gemm.LinearScratchSize(40, 96)], pool: pool);
        double expect = 0; for (int k = 0; k < 96; k++) expect += x[39 * 96 + k] * w[79 * 96 + k];
        Assert.Equal(expect, y[39 * 80 + 79], 1e-4);
    }

    [Fact]
    public void TensorOfMoreElementsThanAnArray_IsInvalidData_OnRead()
    {
        using var dir = new TempDir();
        string path = dir.File("big.safetensors");
        long n = (long)int.MaxValue + 1;
        var h = Encoding.UTF8.GetBytes($"{{\"big\":{{\"dtype\":\"U8\",\"shape\":[{n}],\"data_offsets\":[0,{n}]}}}}      ");
        using (var fs = new FileStream(path, FileMode.Create))
        {
            var len = new byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)h.Length);
            fs.Write(len);
            fs.Write(h);
            fs.SetLength(8 + h.Length + n); // sparse: no 2 GB written
        }
        using var f = SafeTensorsFile.Open(path);
        Assert.True(f.IsMapped); // above the 1 GiB in-memory limit
        Assert.Contains("more than one array can hold", Assert.Throws<InvalidDataException>(() => f.ReadFloat32("big")).Message);
        Assert.Throws<ArgumentException>(() => f.ReadFloat32("big", new float[10]));
    }

    // 7. loader options and malformed tensors
    [Fact]
    public void LoaderOptions_AreValidated_AndFileProblems_AreInvalidData()
    {
        using var dir = new TempDir();
        string path = dir.File("enc.safetensors");
        var rnd = new Random(1);
        float[] R(long n) => Enumerable.Range(0, (int)n).Select(_ => (float)(rnd.NextDouble() - 0.5)).ToArray();
        SafeTensorsWriter.Entry T(string name, params long[] shape) => new(name, R(shape.Aggregate(1L, (a, b) => a * b)), shape);
        SafeTensorsWriter.Entry[] Layer(string p) =>
        [
            T(p + "self_attn.in_proj_weight", 24, 8), T(p + "self_attn.out_proj.weight", 8, 8), T(p + "linear1.weight", 16, 8), T(p + "linear2.weight", 8, 16),
            T(p + "norm1.weight", 8), T(p + "norm1.bias", 8), T(p + "norm2.weight", 8), T(p + "norm2.bias", 8),
        ];
        SafeTensorsWriter.Write(path, [.. Layer("layers.0."), .. Layer("layers.1.")]);
        using (var f = SafeTensorsFile.Open(path))
        {
            foreach (float eps in new[] { float.NaN, float.PositiveInfinity, -1f })
                Assert.Throws<ArgumentOutOfRangeException>(() => TorchModels.LoadTransformerEncoder(f, new TorchEncoderOptions { Heads = 2, Eps = eps }));
            Assert.Throws<ArgumentNullException>(() => TorchModels.LoadTransformerEncoder(f, new TorchEncoderOptions { Heads = 2, Prefix = null! }));
            Assert.Throws<ArgumentOutOfRangeException>(() => TorchModels.LoadTransformerEncoder(f, new TorchEncoderOptions { Heads = 0 }));
            Assert.Throws<ArgumentException>(() => TorchModels.LoadTransformerEncoder(f, new TorchEncoderOptions { Heads = 2, DistanceSlopes = [1f] }));
            Assert.Throws<ArgumentOutOfRangeException>(() => new LayerNorm(8, eps: float.NaN));
            using var ok = TorchModels.LoadTransformerEncoder(f, new TorchEncoderOptions { Heads = 2 });
            Assert.Equal(2, ok.Blocks.Count);
        }
        // layer indices PyTorch never writes ("01", "+1") are reported, not silently ignored
        foreach (var odd in new[] { "layers.01.", "layers.+1.", "layers. 1." })
        {
            string p2 = dir.File("odd.safetensors");
            SafeTensorsWriter.Write(p2, [.. Layer("layers.0."), .. Layer(odd)]);
            using var f2 = SafeTensorsFile.Open(p2);
            Assert.Contains("unexpected", Assert.Throws<InvalidDataException>(() => TorchModels.LoadTransformerEncoder(f2, new TorchEncoderOptions { Heads = 2 })).Message);
        }
        // a zero-width k_proj_weight is a file problem
        string p3 = dir.File("mha.safetensors");
        SafeTensorsWriter.Write(p3, [T("q_proj_weight", 8, 8), new("k_proj_weight", [], [8, 0]), T("v_proj_weight", 8, 8), T("out_proj.weight", 8, 8)]);
        using (var f3 = SafeTensorsFile.Open(p3))
            Assert.Throws<InvalidDataException>(() => TorchModels.LoadMultiheadAttention(f3, 2));
        Assert.Throws<ArgumentException>(() => new Stack(TransformerEncoder.Create(1, 8, 2, 16).Blocks[0], null!));
    }

    [Fact]
    public void TaggerMetadataWithAnInfiniteEps_IsInvalidData()
    {
        using var dir = new TempDir();
        using var src = SafeTensorsFile.Open(TaggerTests.ModelPath("attention"));
        var meta = src.Metadata.ToDictionary(kv => kv.Key, kv => kv.Value);
        meta["fastattn.tagger"] = meta["fastattn.tagger"].Replace("\"Eps\":1E-05", "\"Eps\":1e400").Replace("\"Eps\":1e-05", "\"Eps\":1e400");
        Assert.Contains("1e400", meta["fastattn.tagger"]);
        string path = dir.File("t.safetensors");
        SafeTensorsWriter.Write(path, src.Tensors.Select(t => new SafeTensorsWriter.Entry(t.Name, src.ReadFloat32(t.Name), t.Shape)), meta);
        Assert.Throws<InvalidDataException>(() => PosTagModel.Load(path));
    }

    // 8. writers refuse what readers would refuse
    [Fact]
    public void Writers_RejectWhatReadersReject_AndWriteNothing()
    {
        using var dir = new TempDir();
        string p = dir.File("w.safetensors");
        void Bad(SafeTensorsWriter.Entry e, Dictionary<string, string>? meta = null)
        {
            Assert.ThrowsAny<ArgumentException>(() => SafeTensorsWriter.Write(p, [e], meta));
            Assert.False(File.Exists(p));
        }
        Bad(new("a", [1f], [-1, -1]));                                     // negative dims whose product matches
        Bad(new("a", [], [4611686018427387904, 4]));                       // a product that wraps to 0
        Bad(new("a", [1f], [1], (SafeTensorsDType)99));                    // undefined dtype
        Bad(new("a", [1f], [1], SafeTensorsDType.I64));                    // not a float type
        Bad(new("a\uD800", [1f], [1]));                                    // lone surrogate in a name
        Bad(new("", [1f], [1]));
        Bad(new("a", [70000f], [1], SafeTensorsDType.F16));                // overflows float16
        Bad(new("a", [3.4e38f], [1], SafeTensorsDType.BF16));              // rounds to infinity in bfloat16
        Bad(new("a", [1f], [1]), new Dictionary<string, string> { ["k"] = null! });
        Bad(new("a", [1f], [1]), new Dictionary<string, string> { ["k"] = "\uDC00" });
        // infinities and NaN that are already there are kept, not an error
        SafeTensorsWriter.Write(p, [new("a", [float.PositiveInfinity, float.NaN], [2], SafeTensorsDType.F16)]);
        using (var f = SafeTensorsFile.Open(p)) Assert.True(float.IsPositiveInfinity(f.ReadFloat32("a")[0]));
        Assert.Throws<ArgumentException>(() => Npy.Write(dir.File("x.npy"), new float[1], -1, -1));
        Assert.False(File.Exists(dir.File("x.npy")));
    }

    [Fact]
    public void AtomicWrite_LeavesTheOldFile_WhenTheWriteFails()
    {
        using var dir = new TempDir();
        string p = dir.File("f.bin");
        File.WriteAllText(p, "old");
        Assert.Throws<IOException>(() => AtomicFile.Write(p, fs => { fs.WriteByte(1); throw new IOException("disk full"); }));
        Assert.Equal("old", File.ReadAllText(p));
        Assert.Single(Directory.GetFiles(dir.Path));
    }

    // 10. a header of many tiny entries: linear work, bounded allocation per header byte
    // the reflection probe passed "/dev/urandom" and "/dev/zero" as output paths: as root, the temporary file beside
    // them in /dev and the rename replaced both devices with 16-byte regular files (the machine's builds then spun
    // reading a 16-byte /dev/urandom). A device, a pipe or a socket is now written in place, never renamed over.
    [Fact]
    public async Task OutputToADeviceOrAPipe_IsWrittenInPlace_NotReplaced()
    {
        if (!OperatingSystem.IsLinux()) return;   // statx; elsewhere the rename path is unchanged
        using var dir = new TempDir();
        string regular = dir.File("a.npy");
        Npy.Write(regular, [1f, 2f, 3f], 3);
        Assert.False(AtomicFile.IsSpecialFile(regular));
        Assert.False(AtomicFile.IsSpecialFile(dir.File("missing.npy")));
        Assert.False(AtomicFile.IsSpecialFile(dir.Path));
        Assert.True(AtomicFile.IsSpecialFile("/dev/null"));
        Npy.Write("/dev/null", [1f, 2f, 3f], 3);
        Assert.True(AtomicFile.IsSpecialFile("/dev/null"));   // still the device
        Assert.Empty(Directory.GetFiles("/dev", ".null.*"));
        // a named pipe with a reader: the reader gets exactly the bytes of the regular file, and the pipe stays a pipe
        string fifo = dir.File("pipe");
        using (var mk = System.Diagnostics.Process.Start("mkfifo", fifo)) mk.WaitForExit();
        Assert.True(AtomicFile.IsSpecialFile(fifo));
        var reader = Task.Run(() => File.ReadAllBytes(fifo));
        Npy.Write(fifo, [1f, 2f, 3f], 3);
        Assert.Equal(File.ReadAllBytes(regular), await reader.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.True(AtomicFile.IsSpecialFile(fifo));
        Assert.Equal(2, Directory.GetFileSystemEntries(dir.Path).Length);   // a.npy and the pipe: no temporary file
    }

    // files that report 0 bytes and never end (/dev/zero, /dev/urandom) were read until the process ran out of memory
    // (config.json, vocab.txt, tokenizer.json, .npy, CLI text files): reads now stop past each format's limit
    [Fact]
    public async Task EndlessDevices_AreRefusedAsInvalidData_WithinTheFormatsLimit()
    {
        // standard input that never ends (`fastattn tag --file - < /dev/zero` grew a MemoryStream to 2 GB: 13.7 s, 4.2 GB,
        // "Stream was too long.")
        var endless = Assert.Throws<InvalidDataException>(() => Utf8Text.ReadStream(new FastAttn.Fuzz.UnsizedStream([], thenZeros: true), "standard input"));
        Assert.Contains($"more than {Utf8Text.MaxFileBytes} bytes", endless.Message);
        if (!OperatingSystem.IsLinux()) return;
        foreach (var device in new[] { "/dev/zero", "/dev/urandom" })
        {
            var e = Assert.Throws<InvalidDataException>(() => BoundedFile.ReadAllBytes(device, 1 << 20, "a test file"));
            Assert.Contains("more than 1048576 bytes", e.Message);
            Assert.Throws<InvalidDataException>(() => Npy.Read(device));   // stops after the first bytes: not a .npy file
            Assert.Throws<InvalidDataException>(() => FastAttn.Embeddings.BertConfig.FromJsonFile(device));
            Assert.Throws<InvalidDataException>(() => FastAttn.Embeddings.TextTokenizer.FromTokenizerJson(device));
            Assert.Throws<InvalidDataException>(() => FastAttn.Embeddings.BertWordPieceTokenizer.FromVocabFile(device));
        }
        // a file read whole: the same bytes as File.ReadAllBytes, at and around the buffer's first size
        using var dir = new TempDir();
        foreach (int n in new[] { 0, 1, 15, 16, 4095, 4096, 4097, 100_000 })
        {
            string p = dir.File($"f{n}");
            var bytes = new byte[n];
            new Random(n).NextBytes(bytes);
            File.WriteAllBytes(p, bytes);
            Assert.Equal(bytes, BoundedFile.ReadAllBytes(p, 100_000, "a test file"));
        }
        Assert.Throws<InvalidDataException>(() => BoundedFile.ReadAllBytes(dir.File("f100000"), 99_999, "a test file"));
        // a pipe (what `--file <(…)` and /dev/stdin are) reports no length either and is read to its end
        string fifo = dir.File("pipe");
        using (var mk = System.Diagnostics.Process.Start("mkfifo", fifo)) mk.WaitForExit();
        var text = Encoding.UTF8.GetBytes(string.Concat(Enumerable.Repeat("I saw a saw.\n", 10_000)));
        var writer = Task.Run(() => File.WriteAllBytes(fifo, text));
        Assert.Equal(text, BoundedFile.ReadAllBytes(fifo, 1 << 20, "a test file"));
        await writer.WaitAsync(TimeSpan.FromSeconds(30));
    }

    /// <summary>
    /// A safetensors file from a stream that cannot tell its length (a pipe, a network stream) is read as far as its header
    /// says: it was copied to its end, so endless zeros after a valid file, or alone, were read until "Stream was too long"
    /// after 2 GB (an <see cref="IOException"/>). Now: a valid file loads as from its path; bytes past the end its header
    /// gives are refused after one byte; a header giving the file more than <see cref="SafeTensorsFile.MaxStreamBytes"/> is
    /// refused before its data is read; a stream that ends early is refused — all <see cref="InvalidDataException"/>.
    /// </summary>
    [Fact]
    public void SafeTensors_FromAStreamWithoutALength_IsReadAsFarAsItsHeaderSays()
    {
        using var dir = new TempDir();
        string path = dir.File("ok.safetensors");
        float[] a = [1, 2, 3, 4, 5, 6], b = [-1, 0.5f, 7, 8];
        SafeTensorsWriter.Write(path, [new SafeTensorsWriter.Entry("a", a, [2, 3]), new SafeTensorsWriter.Entry("b", b, [4])], new Dictionary<string, string> { ["k"] = "v" });
        var bytes = File.ReadAllBytes(path);
        var whole = new FastAttn.Fuzz.UnsizedStream(bytes);
        using (var f = SafeTensorsFile.Load(whole, "pipe"))
        {
            Assert.Equal(a, f.ReadFloat32("a"));
            Assert.Equal(b, f.ReadFloat32("b"));
            Assert.Equal("v", f.Metadata["k"]);
        }
        Assert.Equal(bytes.Length, whole.Consumed);

        var endless = new FastAttn.Fuzz.UnsizedStream(bytes, thenZeros: true);
        Assert.Contains("goes on past", Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Load(endless)).Message);
        Assert.True(endless.Consumed <= bytes.Length + 4096, $"read {endless.Consumed} bytes of a {bytes.Length}-byte file");

        Assert.Contains("the header is not valid JSON", Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Load(new FastAttn.Fuzz.UnsizedStream([], thenZeros: true))).Message);

        var huge = new FastAttn.Fuzz.UnsizedStream(SafeTensorsBytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[1073741824],\"data_offsets\":[0,4294967296]}}", 0), thenZeros: true);
        Assert.Contains("more than the 2147483647", Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Load(huge)).Message);
        Assert.True(huge.Consumed < 200, $"read {huge.Consumed} bytes before refusing");

        foreach (int cut in new[] { 0, 5, 8, 20, bytes.Length - 1 })
            Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Load(new FastAttn.Fuzz.UnsizedStream(bytes[..cut])));
    }

    [Fact]
    public void LargeHeader_CostsAFewBytesPerHeaderByte()
    {
        using var dir = new TempDir();
        var sb = new StringBuilder("{");
        const int n = 200_000;
        for (int i = 0; i < n; i++) sb.Append(i == 0 ? "" : ",").Append($"\"t{i}\":{{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}");
        sb.Append('}');
        string path = dir.File("h.safetensors");
        var bytes = SafeTensorsBytes(sb.ToString(), 0);
        File.WriteAllBytes(path, bytes);
        long before = GC.GetAllocatedBytesForCurrentThread();
        using (var f = SafeTensorsFile.Open(path)) Assert.Equal(n, f.Tensors.Count);
        long per = (GC.GetAllocatedBytesForCurrentThread() - before) / bytes.Length;
        output.WriteLine($"{bytes.Length:N0}-byte header: {per} bytes allocated per header byte");
        Assert.True(per <= 4, $"{per} bytes allocated per header byte");
    }

    // 1. tokenizer and readers on adversarial megabytes. How long they take is the perf suite's (`-- hostile`, a median per
    // input against ordinary text); what is asserted here does not depend on the machine: every input finishes, its result is
    // right, and the memory it allocates stays within a fixed number of bytes per input byte (a path that re-copied the text
    // or its tail per token or per line would allocate megabytes per byte here)

    /// <summary>Bytes allocated on this thread by <paramref name="a"/>, per UTF-16 unit of an input of <paramref name="length"/> units.</summary>
    private static double AllocatedPerChar(Action a, int length)
    {
        a(); // first-call costs (statics, JIT) are not the input's
        long before = GC.GetAllocatedBytesForCurrentThread();
        a();
        return (GC.GetAllocatedBytesForCurrentThread() - before) / (double)length;
    }

    /// <summary>1 MB of text built by repeating <paramref name="unit"/>.</summary>
    private static string Mb(string unit) => new StringBuilder(1 << 20).Insert(0, unit, (1 << 20) / unit.Length).ToString();

    public static readonly string[] Adversarial =
    [
        "'\"", "'’", "<", "<<a@b.c", "((((", "'", "\"", "...", "!?", "-/", "n't", "http://", "@.", "'s", "a.", "U.S.", ":)", "$", "--", "''",
    ];

    [Fact]
    public void TokenizerAndTagger_FinishAdversarialMegabytes_WithinAFixedAllocationPerByte()
    {
        string ordinary = Mb("The committee said on Monday that it wouldn't approve the new budget until Mr. Smith explains the cuts. ");
        var rnd = new Random(13);
        const string marks = "'\"’‘“”<>()[]{}.,;:!?-/@$%#`…&*_=+\\|~^ aZ09";
        var random = new string(Enumerable.Range(0, 1 << 20).Select(_ => marks[rnd.Next(marks.Length)]).ToArray());
        // the ordinary megabyte: 20 tokens a sentence (would + n't, Mr. whole, the final period apart)
        Assert.Equal((1 << 20) / 104 * 20, EnglishTokenizer.Count(ordinary));
        double worst = 0;
        string worstText = "";
        foreach (var text in Adversarial.Select(Mb).Append(random).Append(Mb("x")).Append("Hello " + Mb("'\"") + " world"))
        {
            // the string form allocates its tokens, which together hold the text's characters once
            int count = EnglishTokenizer.Count(text);
            Assert.InRange(count, 1, text.Length); // every token holds at least one character
            string[] tokens = [];
            double per = AllocatedPerChar(() => tokens = EnglishTokenizer.Tokenize(text), text.Length);
            Assert.Equal(count, tokens.Length);
            if (per > worst) (worst, worstText) = (per, text[..Math.Min(12, text.Length)]);
        }
        output.WriteLine($"tokenizing each adversarial megabyte allocated at most {worst:F1} bytes per character ('{worstText}…')");
        // one-character tokens are the worst case: a 22-byte string (header, length, one char, padding to 24) and an 8-byte
        // reference each, plus the growth of the list they are collected in
        Assert.True(worst <= 64, $"'{worstText}…': {worst:F1} bytes allocated per character");
        // the whole tagger on the audit's input: one tag per token, 50,002 tokens
        using var model = PosTagModel.Load(TaggerTests.ModelPath("fc"));
        using var tagger = model.CreateTagger();
        string quotes = "Hello " + string.Concat(Enumerable.Repeat("'\"", 25_000)) + " world";
        int tags = 0;
        double tagPer = AllocatedPerChar(() => tags = tagger.Tag(quotes).Length, quotes.Length);
        Assert.Equal(50_002, tags);
        output.WriteLine($"Tag(50 KB of '\"): {tagPer:F1} bytes allocated per character");
        // the tokens' strings and the tags returned (about 50 bytes a token, 2 tokens per 2 characters) and the tagger's buffers
        Assert.True(tagPer <= 400, $"Tag allocated {tagPer:F1} bytes per character");
    }

    [Fact]
    public void ConllUReader_FinishesAdversarialMegabytes_WithinAFixedAllocationPerByte()
    {
        string ordinary = Mb("1\tThe\tthe\tDET\tDT\t_\t2\tdet\t_\t_\n2\tdog\tdog\tNOUN\tNN\t_\t0\troot\t_\t_\n\n");
        int sentences = 0;
        double basePer = AllocatedPerChar(() => sentences = ConllU.Parse(ordinary).Count, ordinary.Length);
        Assert.Equal((1 << 20) / 61, sentences);
        double worst = 0;
        foreach (var text in new[] { Mb("#"), Mb("\n"), Mb("\r"), Mb("# text = x\n"), Mb("1\ta\ta\tX\tX\t_\t0\t_\t_\t_\n") })
            worst = Math.Max(worst, AllocatedPerChar(() => ConllU.Parse(text), text.Length));
        // one huge line with many tabs is rejected, and the rejection does not copy the line per tab
        string tabs = Mb("\t");
        worst = Math.Max(worst, AllocatedPerChar(() => Assert.Throws<InvalidDataException>(() => ConllU.Parse(tabs)), tabs.Length));
        output.WriteLine($"ordinary 1 MB: {basePer:F1} bytes allocated per character; adversarial at most {worst:F1}");
        // a sentence of 1 MB of one-token lines keeps its tokens' strings (~20 bytes of objects per 22-character line, plus
        // the lists' growth); a re-copy of the rest of the text per line would be ~500,000 bytes per character
        Assert.True(worst <= 4 * Math.Max(basePer, 1), $"{worst:F1} bytes allocated per character against {basePer:F1} for ordinary text");
    }
}
