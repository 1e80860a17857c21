namespace FastAttn.IO;

/// <summary>Writes a file through a temporary file beside it and a rename, so a failure never leaves a partial file.</summary>
internal static class AtomicFile
{
    public static void Write(string path, Action<FileStream> body)
    {
        string full = System.IO.Path.GetFullPath(path);
        if (Directory.Exists(full)) throw new IOException($"'{path}' is a directory.");
        string dir = System.IO.Path.GetDirectoryName(full) ?? ".";
        // said for the path given, not for the temporary file's name the FileStream would report
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"'{path}': the folder '{dir}' does not exist.");
        string tmp = System.IO.Path.Combine(dir, $".{System.IO.Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            FileStream created;
            try { created = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None); }
            catch (UnauthorizedAccessException e) { throw new UnauthorizedAccessException($"'{path}': no permission to write in '{dir}'.", e); }
            using (var fs = created)
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
