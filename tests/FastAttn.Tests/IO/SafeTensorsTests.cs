using System.Buffers.Binary;
using System.Text;
using FastAttn.IO;

namespace FastAttn.Tests.IO;

public sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("fastattn-tests-").FullName;
    public string File(string name) => System.IO.Path.Combine(Path, name);
    public void Dispose() { try { Directory.Delete(Path, true); } catch (IOException) { } }
}

public class SafeTensorsTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static SafeTensorsWriter.Entry E(string name, float[] data, params long[] shape) => new(name, data, shape);

    [Fact]
    public void WriteThenRead_RoundTrips_EveryDType()
    {
        using var dir = new TempDir();
        float[] a = Reference.Random(3 * 5, 1), b = Reference.Random(7, 2), c = [1.5f, -2.25f, 65504f, 1e-3f];
        string path = dir.File("m.safetensors");
        SafeTensorsWriter.Write(path, [E("a", a, 3, 5), E("b.weight", b, 7), new("c16", c, [2, 2], SafeTensorsDType.F16),
            new("cbf", c, [4], SafeTensorsDType.BF16), new("c64", c, [1, 4], SafeTensorsDType.F64), E("scalar", [42f])],
            new Dictionary<string, string> { ["format"] = "pt", ["note"] = "test" });
        using var f = SafeTensorsFile.Open(path);
        Assert.Equal(6, f.Tensors.Count);
        Assert.Equal("pt", f.Metadata["format"]);
        Assert.Equal(a, f.ReadFloat32("a"));
        Assert.Equal(new long[] { 3, 5 }, f.Info("a").Shape);
        Assert.Equal(b, f.ReadFloat32("b.weight"));
        Assert.Equal(c.Select(v => (float)(Half)v), f.ReadFloat32("c16"));
        float[] bf = f.ReadFloat32("cbf");
        for (int i = 0; i < c.Length; i++) Assert.True(Math.Abs(bf[i] - c[i]) <= Math.Abs(c[i]) / 256, $"bf16 {c[i]} -> {bf[i]}");
        Assert.Equal(c, f.ReadFloat32("c64"));
        Assert.Equal([42f], f.ReadFloat32("scalar"));
        Assert.Empty(f.Info("scalar").Shape);
        // data starts 8-byte aligned
        Assert.Equal(0UL, BinaryPrimitives.ReadUInt64LittleEndian(File.ReadAllBytes(path)) % 8);
    }

    private static byte[] Build(string header, int dataBytes)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var r = new byte[8 + h.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(r, (ulong)h.Length);
        h.CopyTo(r, 8);
        return r;
    }

    [Theory]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8, "a", "need")]                 // size mismatch
    [InlineData("{\"a\":{\"dtype\":\"X8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, "a", "not supported")]         // unknown dtype
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}", 6, "b", "overlap")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "a", "twice")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", 4, "a", "outside")]              // offsets past the data
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "a", "non-negative")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,4]}}", 4, "a", "more than the file")] // overflow
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "a", "belong to no tensor")]  // gap
    [InlineData("[1,2]", 0, null, "not an object")]
    [InlineData("{\"a\":", 0, null, "not valid JSON")]
    [InlineData("{\"__metadata__\":{\"k\":1}}", 0, null, "not a string")]
    public void MalformedHeaders_RaiseInvalidData_NamingTheProblem(string header, int dataBytes, string? tensor, string problem)
    {
        using var dir = new TempDir();
        string path = dir.File("bad.safetensors");
        File.WriteAllBytes(path, Build(header, dataBytes));
        var ex = Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(path));
        Assert.Contains(path, ex.Message);
        Assert.Contains(problem, ex.Message);
        if (tensor != null) Assert.Contains($"'{tensor}'", ex.Message);
    }

    [Fact]
    public void HugeOrPastTheEndHeaderLength_IsRejected_WithoutAllocatingIt()
    {
        using var dir = new TempDir();
        string path = dir.File("h.safetensors");
        var b = new byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(b, ulong.MaxValue);
        File.WriteAllBytes(path, b);
        Assert.Contains("exceeds", Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(path)).Message);
        BinaryPrimitives.WriteUInt64LittleEndian(b, 1000);
        File.WriteAllBytes(path, b);
        Assert.Contains("past the end", Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(path)).Message);
        File.WriteAllBytes(path, new byte[3]);
        Assert.Contains("8-byte header length", Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(path)).Message);
    }

    /// <summary>
    /// 600 deterministic mutations of a valid file — truncations, bit flips anywhere, byte rewrites inside the
    /// header, and textual edits of its JSON — each must either load (every tensor readable) or raise
    /// InvalidDataException; no other exception type, no crash.
    /// </summary>
    [Fact]
    public void MutatedFiles_LoadOrRaiseInvalidData_Only()
    {
        using var dir = new TempDir();
        string good = dir.File("good.safetensors");
        SafeTensorsWriter.Write(good, [E("layers.0.w", Reference.Random(12, 1), 3, 4), new("layers.0.b", Reference.Random(4, 2), [4], SafeTensorsDType.F16),
            E("norm.weight", Reference.Random(6, 3), 6), new("x", Reference.Random(5, 4), [5], SafeTensorsDType.F64)],
            new Dictionary<string, string> { ["format"] = "pt" });
        byte[] orig = File.ReadAllBytes(good);
        int headerLen = (int)BinaryPrimitives.ReadUInt64LittleEndian(orig);
        string headerText = Encoding.UTF8.GetString(orig, 8, headerLen);
        var rnd = new Random(int.Parse(Environment.GetEnvironmentVariable("FA_SEED") ?? "2024"));
        int loaded = 0, rejected = 0;
        string[] edits = ["\"F32\"", "\"F16\"", "\"BF16\"", "\"F64\"", "\"U8\"", "-1", "0", "99999999999", "[]", "{}", "null", "\"shape\"", "\"data_offsets\"", "1e400", "\"__metadata__\"", "]", "}", ","];
        for (int m = 0; m < 600; m++)
        {
            byte[] bytes;
            switch (m % 4)
            {
                case 0: bytes = orig[..rnd.Next(0, orig.Length)]; break;                    // truncate
                case 1:                                                                    // flip 1-3 bits anywhere
                    bytes = (byte[])orig.Clone();
                    for (int k = rnd.Next(1, 4); k > 0; k--) bytes[rnd.Next(bytes.Length)] ^= (byte)(1 << rnd.Next(8));
                    break;
                case 2:                                                                    // rewrite bytes of the length field or header
                    bytes = (byte[])orig.Clone();
                    for (int k = rnd.Next(1, 4); k > 0; k--) bytes[rnd.Next(0, 8 + headerLen)] = (byte)rnd.Next(256);
                    break;
                default:                                                                   // edit the JSON text, keep the length field honest
                {
                    var sb = new StringBuilder(headerText);
                    int pos = rnd.Next(sb.Length), len = rnd.Next(0, Math.Min(8, sb.Length - pos));
                    sb.Remove(pos, len).Insert(pos, edits[rnd.Next(edits.Length)]);
                    var h = Encoding.UTF8.GetBytes(sb.ToString());
                    bytes = new byte[8 + h.Length + (orig.Length - 8 - headerLen)];
                    BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)h.Length);
                    h.CopyTo(bytes, 8);
                    Array.Copy(orig, 8 + headerLen, bytes, 8 + h.Length, orig.Length - 8 - headerLen);
                    break;
                }
            }
            string path = dir.File($"m{m}.safetensors");
            File.WriteAllBytes(path, bytes);
            try
            {
                using var f = SafeTensorsFile.Open(path);
                foreach (var t in f.Tensors) Assert.Equal(t.Elements, f.ReadFloat32(t.Name).Length);
                loaded++;
            }
            catch (InvalidDataException) { rejected++; }
            catch (Exception e) { Assert.Fail($"mutation {m} raised {e.GetType().Name}: {e.Message}"); }
        }
        output.WriteLine($"600 mutations: {loaded} loaded, {rejected} rejected with InvalidDataException");
        Assert.Equal(600, loaded + rejected);
        Assert.True(rejected > 300, $"only {rejected} of 600 mutations were rejected");
    }

    [Fact]
    public void Writer_RejectsBadEntries()
    {
        using var dir = new TempDir();
        Assert.Throws<ArgumentException>(() => SafeTensorsWriter.Write(dir.File("x"), [E("a", [1f, 2f], 3)]));
        Assert.Throws<ArgumentException>(() => SafeTensorsWriter.Write(dir.File("x"), [E("a", [1f], 1), E("a", [1f], 1)]));
    }
}

public class NpyTests
{
    [Fact]
    public void WriteThenRead_RoundTrips()
    {
        using var dir = new TempDir();
        float[] x = Reference.Random(7 * 5, 3);
        Npy.Write(dir.File("x.npy"), x, 7, 5);
        var (shape, data) = Npy.Read(dir.File("x.npy"));
        Assert.Equal(new long[] { 7, 5 }, shape);
        Assert.Equal(x, data);
        Assert.Equal(0, (new FileInfo(dir.File("x.npy")).Length - x.Length * 4) % 64); // header padded to 64 bytes
    }

    private static byte[] Npy1(string dict, int dataBytes)
    {
        var h = Encoding.ASCII.GetBytes(dict);
        var r = new byte[10 + h.Length + dataBytes];
        r[0] = 0x93; Encoding.ASCII.GetBytes("NUMPY").CopyTo(r, 1); r[6] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(r.AsSpan(8), (ushort)h.Length);
        h.CopyTo(r, 10);
        return r;
    }

    [Theory]
    [InlineData("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 16, "not supported")]
    [InlineData("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8, "not supported")]
    [InlineData("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16, "Fortran")]
    [InlineData("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", 16, "needs 24 bytes")]
    [InlineData("{'descr': '<f4', 'fortran_order': False, }", 8, "no 'shape'")]
    public void BadFiles_RaiseInvalidData(string dict, int dataBytes, string problem)
    {
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("b.npy"), Npy1(dict, dataBytes));
        Assert.Contains(problem, Assert.Throws<InvalidDataException>(() => Npy.Read(dir.File("b.npy"))).Message);
        File.WriteAllBytes(dir.File("c.npy"), [1, 2, 3]);
        Assert.Contains("bad magic", Assert.Throws<InvalidDataException>(() => Npy.Read(dir.File("c.npy"))).Message);
    }
}
