namespace FastAttn.Service.Tests;

/// <summary>Settings out of range are refused at start with one line (the service then exits with code 2).</summary>
public sealed class OptionsTests
{
    [Fact]
    public void Defaults_AreValid() => Assert.Null(new ServiceOptions().Validate());

    [Theory]
    [InlineData("f32")]
    [InlineData("FP32")]
    [InlineData("float32")]
    [InlineData("bf16")]
    [InlineData("bfloat16")]
    [InlineData("int8")]
    [InlineData("I8")]
    public void Precision_TakesTheNamesTheCliTakes(string name) => Assert.Null(new ServiceOptions { Precision = name }.Validate());

    public static TheoryData<string, Action<ServiceOptions>> Bad => new()
    {
        { "Backend", o => o.Backend = "tensorflow" },
        { "Precision", o => o.Precision = "fp8" },
        { "Precision", o => o.Precision = "" },
        { "MaxWaitMs", o => o.MaxWaitMs = -1 },
        { "MaxWaitMs", o => o.MaxWaitMs = double.NaN },
        { "MaxWaitMs", o => o.MaxWaitMs = 5000 },
        { "MaxBatchTokens", o => o.MaxBatchTokens = 0 },
        { "ParallelFromTokens", o => o.ParallelFromTokens = -1 },
        { "Threads", o => o.Threads = -2 },
        { "Threads", o => o.Threads = 100_000 },
        { "MaxBodyBytes", o => o.MaxBodyBytes = 0 },
        { "MaxTexts", o => o.MaxTexts = 0 },
        { "MaxTokensPerRequest", o => o.MaxTokensPerRequest = -5 },
        { "MaxTagChars", o => o.MaxTagChars = 0 },
    };

    [Theory]
    [MemberData(nameof(Bad))]
    public void OutOfRange_IsNamedOnOneLine(string setting, Action<ServiceOptions> spoil)
    {
        var o = new ServiceOptions();
        spoil(o);
        string? error = o.Validate();
        Assert.NotNull(error);
        Assert.StartsWith(setting + " ", error);
        Assert.DoesNotContain('\n', error);
    }
}
