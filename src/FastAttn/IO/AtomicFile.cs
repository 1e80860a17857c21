namespace FastAttn.IO;

/// <summary>Writes a file through a temporary file beside it and a rename, so a failure never leaves a partial file.</summary>
internal static class AtomicFile
{
    public static void Write(string path, Action<FileStream> body)
    {
        string full = System.IO.Path.GetFullPath(path);
        if (Directory.Exists(full)) throw new IOException($"'{path}' is a directory.");
        string dir = System.IO.Path.GetDirectoryName(full) ?? ".";
        string tmp = System.IO.Path.Combine(dir, $".{System.IO.Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                body(fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }
}
