using System.Runtime.InteropServices;

namespace FastAttn.IO;

/// <summary>
/// Writes a file through a temporary file beside it and a rename, so a failure never leaves a partial file. An existing
/// target that is not a regular file — <c>/dev/null</c>, <c>/dev/stdout</c>, a named pipe — is written in place: a rename
/// would replace the device itself with a regular file (as root, <c>--output /dev/null</c> did) and cannot make a write to
/// a device or a pipe all-or-nothing anyway.
/// </summary>
internal static unsafe partial class AtomicFile
{
    public static void Write(string path, Action<FileStream> body)
    {
        string full = System.IO.Path.GetFullPath(path);
        if (Directory.Exists(full)) throw new IOException($"'{path}' is a directory.");
        if (IsSpecialFile(full))
        {
            using var direct = new FileStream(full, FileMode.Open, FileAccess.Write, FileShare.ReadWrite, 1);
            body(direct);
            direct.Flush();
            return;
        }
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

    /// <summary>
    /// True when <paramref name="full"/> exists and is (after symbolic links) not a regular file or a directory: a character
    /// or block device, a pipe or a socket. Linux's statx has the same layout on every architecture; elsewhere (or without
    /// statx) false, and the write goes through the rename as before.
    /// </summary>
    internal static bool IsSpecialFile(string full)
    {
        if (!OperatingSystem.IsLinux()) return false;
        byte* buf = stackalloc byte[256];
        try
        {
            if (Statx(AtFdCwd, full, 0, StatxType, buf) != 0) return false;   // missing (a new file) or unreadable: the rename path says why
        }
        catch (DllNotFoundException) { return false; }
        catch (EntryPointNotFoundException) { return false; }
        int type = *(ushort*)(buf + 28) & 0xF000;   // stx_mode at byte 28; S_IFMT
        return type is not (0x8000 or 0x4000);        // S_IFREG, S_IFDIR
    }

    private const int AtFdCwd = -100;
    private const uint StatxType = 0x1;

    [LibraryImport("libc", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Statx(int dirFd, string path, int flags, uint mask, byte* buffer);
}
