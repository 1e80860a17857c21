using System.Buffers;
using System.Text;
using System.Text.Unicode;

namespace FastAttn.Tagging;

/// <summary>Strict UTF-8 decoding of text inputs: invalid bytes are an error naming the source and the offset, never U+FFFD.</summary>
public static class Utf8Text
{
    /// <summary>Decodes <paramref name="bytes"/> (an optional byte-order mark is skipped).</summary>
    /// <exception cref="InvalidDataException">The bytes are not valid UTF-8.</exception>
    public static string Decode(ReadOnlySpan<byte> bytes, string source)
    {
        if (bytes.StartsWith("\uFEFF"u8)) bytes = bytes[3..];
        var chars = new char[bytes.Length];
        var status = Utf8.ToUtf16(bytes, chars, out int read, out int written, replaceInvalidSequences: false);
        if (status != OperationStatus.Done)
            throw new InvalidDataException($"'{source}' is not valid UTF-8 (byte {read} is not part of a UTF-8 character); save it as UTF-8.");
        return new string(chars, 0, written);
    }

    /// <summary>Largest text file read (512 MiB; a device or a pipe that never ends stops there).</summary>
    public const int MaxFileBytes = 512 << 20;

    /// <summary>Reads a whole file as strict UTF-8.</summary>
    /// <exception cref="InvalidDataException">The file is not valid UTF-8.</exception>
    /// <exception cref="IOException">The path is a directory or cannot be read.</exception>
    public static string ReadFile(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Directory.Exists(path)) throw new IOException($"'{path}' is a directory, not a text file.");
        return Decode(FastAttn.IO.BoundedFile.ReadAllBytes(path, MaxFileBytes, "a text file"), path);
    }

    /// <summary>Reads a stream to its end as strict UTF-8 (at most <see cref="MaxFileBytes"/>, as a file).</summary>
    /// <exception cref="InvalidDataException">The bytes are not valid UTF-8, or more than <see cref="MaxFileBytes"/> of them.</exception>
    public static string ReadStream(Stream stream, string source)
    {
        ArgumentNullException.ThrowIfNull(stream);
        return Decode(FastAttn.IO.BoundedFile.ReadAllBytes(stream, source, MaxFileBytes, "a text"), source);
    }

    /// <summary>The lines of <paramref name="text"/> (\n, \r\n or \r), without their terminators; a final terminator ends the last line.</summary>
    public static IEnumerable<string> Lines(string text)
    {
        int i = 0;
        while (i < text.Length)
        {
            int e = text.AsSpan(i).IndexOfAny('\n', '\r');
            if (e < 0) { yield return text[i..]; yield break; }
            yield return text.Substring(i, e);
            i += e + 1;
            if (text[i - 1] == '\r' && i < text.Length && text[i] == '\n') i++;
        }
    }
}
