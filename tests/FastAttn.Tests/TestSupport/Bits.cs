namespace FastAttn.Tests;

/// <summary>Bit-for-bit comparison of two results (two paths that must run the same chains of operations).</summary>
internal static class Bits
{
    /// <summary>
    /// Fails at the first element whose bits differ (−0 and +0 differ, as do NaN payloads), naming it with
    /// <paramref name="what"/>.
    /// </summary>
    public static void AssertSame(ReadOnlySpan<float> expect, ReadOnlySpan<float> actual, string what)
    {
        Assert.True(expect.Length == actual.Length, $"{what}: {actual.Length} elements, expected {expect.Length}");
        for (int i = 0; i < expect.Length; i++)
            if (BitConverter.SingleToInt32Bits(expect[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"{what}: element {i} is {actual[i]:R}, expected {expect[i]:R}");
    }
}
