using System.Text;

namespace FastAttn.IO;

/// <summary>
/// Reads a whole file without trusting the length it reports: a device or a pipe (<c>/dev/zero</c>, <c>/dev/urandom</c>, a
/// FIFO, <c>/dev/stdin</c>) reports 0 bytes and may never end, and a file may grow while it is read. Reading stops with
/// <see cref="InvalidDataException"/> as soon as more than the limit has arrived.
/// </summary>
internal static class BoundedFile
{
    /// <summary>
    /// The file's bytes, at most <paramref name="maxBytes"/> (<paramref name="what"/> names the kind of file in the message).
    /// <paramref name="prefixOk"/>, when given, sees the first bytes (16, or all of a shorter file) once: false stops the
    /// read there and returns them, for the format's own parser to reject (a device of zeros is not read to the limit).
    /// </summary>
    public static byte[] ReadAllBytes(string path, long maxBytes, string what, Func<byte[], bool>? prefixOk = null)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        return ReadAllBytes(fs, path, maxBytes, what, prefixOk);
    }

    /// <summary>As above, from a stream (standard input, a pipe) to its end; <paramref name="name"/> names it in the message.</summary>
    public static byte[] ReadAllBytes(Stream stream, string name, long maxBytes, string what, Func<byte[], bool>? prefixOk = null)
    {
        maxBytes = Math.Min(maxBytes, Array.MaxLength - 1);
        long hint = 0;
        try { if (stream.CanSeek) hint = stream.Length - stream.Position; } catch (IOException) { } catch (NotSupportedException) { }
        if (hint > maxBytes) throw TooLong(name, maxBytes, what);
        // one byte more than the reported length, so the read that finds the end needs no second buffer
        var buf = new byte[(int)Math.Min(Math.Max(hint + 1, 4096), maxBytes + 1)];
        int n = 0;
        bool prefixSeen = prefixOk == null;
        while (true)
        {
            if (n == buf.Length)
            {
                if (n > maxBytes) throw TooLong(name, maxBytes, what);
                Array.Resize(ref buf, (int)Math.Min(2L * buf.Length, maxBytes + 1));
            }
            int r = stream.Read(buf, n, buf.Length - n);
            if (r == 0) break;
            n += r;
            if (!prefixSeen && n >= 16)
            {
                prefixSeen = true;
                if (!prefixOk!(buf[..16])) return buf[..n];
            }
        }
        if (n > maxBytes) throw TooLong(name, maxBytes, what);
        if (n != buf.Length) Array.Resize(ref buf, n);
        return buf;
    }

    /// <summary>The file's text as <see cref="File.ReadAllText(string)"/> decodes it (UTF-8 unless a byte-order mark says otherwise), read as above.</summary>
    public static string ReadAllText(string path, long maxBytes, string what)
    {
        using var reader = new StreamReader(new MemoryStream(ReadAllBytes(path, maxBytes, what)), Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
        return reader.ReadToEnd();
    }

    private static InvalidDataException TooLong(string name, long maxBytes, string what) =>
        new($"'{name}': more than {maxBytes} bytes; {what} is read up to {maxBytes} bytes.");
}
