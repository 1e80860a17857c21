using System.CommandLine;
using System.CommandLine.Parsing;
using System.Text;

namespace FastAttn.Cli;

/// <summary>
/// The <c>fastattn</c> command line, runnable in-process (tests) and from <c>Main</c>. Exit codes: 0 success, 2 bad input
/// (arguments, files, text — one line on standard error, nothing written), 1 an internal error.
/// </summary>
public static class CliApp
{
    /// <summary>Exit code for bad input.</summary>
    public const int BadInput = 2;
    /// <summary>Exit code for an internal error.</summary>
    public const int Internal = 1;

    /// <summary>Parses and runs a command line.</summary>
    public static int Run(string[] args, TextWriter output, TextWriter error, Func<Stream>? stdin = null)
    {
        stdin ??= Console.OpenStandardInput;
        var root = Commands.Build(output, error, stdin);
        ParseResult parsed;
        try { parsed = root.Parse(args); }
        catch (Exception e) { return Fail("fastattn", error, e); }
        if (parsed.Errors.Count > 0)
        {
            string cmd = parsed.CommandResult.Command.Name;
            error.WriteLine($"fastattn: {OneLine(parsed.Errors[0].Message)} (see 'fastattn {(cmd == root.Name ? "" : cmd + " ")}--help')");
            return BadInput;
        }
        if (OptionLikeText(parsed) is { } word)
        {
            string cmd = parsed.CommandResult.Command.Name;
            error.WriteLine($"fastattn: unrecognized option '{OneLine(word)}'; text that starts with '-' goes after '--' (see 'fastattn {cmd} --help')");
            return BadInput;
        }
        return parsed.Invoke(new InvocationConfiguration { Output = output, Error = error, EnableDefaultExceptionHandler = false });
    }

    /// <summary>
    /// A word given to a free-text argument (the text of <c>tag</c>, <c>embed</c>, the query of <c>search</c>, <c>rank</c>) that
    /// looks like an option — <c>--</c> and a letter, or <c>-</c> and one letter — and comes before a <c>--</c>: the parser hands a
    /// mistyped option (<c>--modle fc</c>) to the text, which would then be tagged or embedded as if it were input. Null when
    /// there is none. Text that starts with a dash is passed after <c>--</c> (<c>fastattn tag -- -x marks the spot</c>).
    /// </summary>
    internal static string? OptionLikeText(ParseResult parsed)
    {
        var beforeDashes = new HashSet<Token>(ReferenceEqualityComparer.Instance);
        foreach (var t in parsed.Tokens)
        {
            if (t.Type == TokenType.DoubleDash) break;
            beforeDashes.Add(t);
        }
        foreach (var child in parsed.CommandResult.Children)
            if (child is ArgumentResult ar)
                foreach (var t in ar.Tokens)
                    if (beforeDashes.Contains(t) && LooksLikeOption(t.Value)) return t.Value;
        return null;
    }

    private static bool LooksLikeOption(string w) =>
        w.Length >= 3 && w[0] == '-' && w[1] == '-' && char.IsAsciiLetter(w[2]) || w.Length == 2 && w[0] == '-' && char.IsAsciiLetter(w[1]);

    /// <summary>
    /// Runs a command body: bad-input exceptions become one line and exit code 2, anything else one line and exit code 1
    /// (the stack trace only when FASTATTN_DEBUG is set).
    /// </summary>
    public static int Guard(string command, TextWriter error, Func<int> body)
    {
        try { return body(); }
        catch (Exception e) { return Fail(command, error, e); }
    }

    private static int Fail(string command, TextWriter error, Exception e)
    {
        if (IsBadInput(e))
        {
            error.WriteLine($"fastattn {command}: {OneLine(UserMessage(e))}");
            return BadInput;
        }
        error.WriteLine($"fastattn {command}: internal error ({e.GetType().Name}): {OneLine(e.Message)}");
        if (Environment.GetEnvironmentVariable("FASTATTN_DEBUG") is { Length: > 0 }) error.WriteLine(e);
        return Internal;
    }

    /// <summary>
    /// An exception's message without what .NET appends for programmers: an argument exception's " (Parameter 'options')",
    /// and an out-of-range exception's "Actual value was 9999." — kept as "; it is 9999" when the message does not name the
    /// value already.
    /// </summary>
    internal static string UserMessage(Exception e)
    {
        string m = e.Message, value = "";
        if (e is ArgumentOutOfRangeException { ActualValue: { } v } && m.EndsWith($"Actual value was {v}.", StringComparison.Ordinal))
        {
            m = m[..^$"Actual value was {v}.".Length].TrimEnd();
            value = $"{v}";
        }
        if (e is ArgumentException { ParamName: { Length: > 0 } p } && m.EndsWith($" (Parameter '{p}')", StringComparison.Ordinal))
            m = m[..^$" (Parameter '{p}')".Length];
        if (value.Length > 0 && !m.Contains(value, StringComparison.Ordinal)) m = $"{m.TrimEnd('.')}; it is {value}.";
        return m;
    }

    /// <summary>Exceptions that mean the user's input (arguments, files, text) is wrong or unreadable.</summary>
    public static bool IsBadInput(Exception e) => e is InvalidDataException or ArgumentException or FileNotFoundException
        or DirectoryNotFoundException or IOException or UnauthorizedAccessException or KeyNotFoundException or CliInputException;

    private static string OneLine(string s)
    {
        var sb = new StringBuilder(s.Length);
        foreach (char c in s) sb.Append(c is '\r' or '\n' ? ' ' : c);
        return sb.ToString().Trim();
    }
}

/// <summary>A command-line usage error found by a command (not by the parser).</summary>
public sealed class CliInputException(string message) : Exception(message)
{
    /// <summary>The precision named by <c>--precision</c> (f32, int8 or bf16).</summary>
    public static FastAttn.Kernels.Precision ParsePrecision(string? text)
    {
        if (string.IsNullOrEmpty(text)) return FastAttn.Kernels.Precision.F32;
        try { return FastAttn.Layers.PrecisionPlan.ParsePrecision(text); }
        catch (ArgumentException) { throw new CliInputException($"--precision must be f32, int8 or bf16; it is '{text}'."); }
    }
}
