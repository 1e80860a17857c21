using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace FastAttn;

/// <summary>Throw helpers: keep checks one line at the call site and the throw out of hot code.</summary>
[StackTraceHidden]
internal static class ThrowHelper
{
    [DoesNotReturn]
    public static void Argument(string paramName, string message) => throw new ArgumentException(message, paramName);

    [DoesNotReturn]
    public static void OutOfRange(string paramName, object? actual, string message) =>
        throw new ArgumentOutOfRangeException(paramName, actual, message);

    [DoesNotReturn]
    public static void Disposed(string typeName) => throw new ObjectDisposedException(typeName);

    [DoesNotReturn]
    public static void InvalidData(string message) => throw new InvalidDataException(message);

    /// <summary>Throws unless <paramref name="value"/> ≥ 1.</summary>
    public static void Positive(int value, string paramName)
    {
        if (value < 1) OutOfRange(paramName, value, $"'{paramName}' must be at least 1; it is {value}.");
    }

    /// <summary>
    /// Throws unless a span of <paramref name="actual"/> elements holds <paramref name="required"/>. The shape
    /// text is an interpolated string built only when the check fails, so passing checks allocate nothing.
    /// </summary>
    public static void Length(int actual, long required, string paramName,
        [InterpolatedStringHandlerArgument(nameof(actual), nameof(required))] ref ShapeText shape)
    {
        if (actual < required)
            Argument(paramName, $"'{paramName}' has {actual} elements; expected at least {shape.ToStringAndClear()} = {required}.");
    }

    /// <summary>An interpolated string that is formatted only when actual &lt; required.</summary>
    [InterpolatedStringHandler]
    public ref struct ShapeText
    {
        private DefaultInterpolatedStringHandler _inner;
        private readonly bool _active;

        public ShapeText(int literalLength, int formattedCount, int actual, long required, out bool shouldAppend)
        {
            _active = shouldAppend = actual < required;
            _inner = _active ? new DefaultInterpolatedStringHandler(literalLength, formattedCount) : default;
        }

        public void AppendLiteral(string s) { if (_active) _inner.AppendLiteral(s); }
        public void AppendFormatted<T>(T value) { if (_active) _inner.AppendFormatted(value); }
        public string ToStringAndClear() => _active ? _inner.ToStringAndClear() : "";
    }

    /// <summary>Throws unless a span has exactly <paramref name="required"/> elements.</summary>
    public static void ExactLength(int actual, long required, string paramName, string shape)
    {
        if (actual != required)
            Argument(paramName, $"'{paramName}' has {actual} elements; expected {shape} = {required}.");
    }

    /// <summary>Throws unless the output and an input share no memory (the kernel reads inputs after it has written output).</summary>
    public static void NoOverlap<T>(ReadOnlySpan<T> output, ReadOnlySpan<T> input, string outputName, string inputName)
    {
        if (!output.IsEmpty && !input.IsEmpty && output.Overlaps(input))
            Argument(outputName, $"'{outputName}' overlaps '{inputName}'; give them separate memory.");
    }

    /// <summary>Throws unless ε is finite and ≥ 0.</summary>
    public static void Eps(float eps, string name)
    {
        if (!(eps >= 0) || float.IsInfinity(eps)) OutOfRange(name, eps, $"'{name}' must be finite and at least 0; it is {eps}.");
    }

    /// <summary>Elements a strided matrix of rows × cols with row stride ld occupies.</summary>
    public static long Extent(int rows, int cols, int ld) => rows == 0 ? 0 : (long)(rows - 1) * ld + cols;
}
