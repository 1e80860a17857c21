using FastAttn.Tagging;

namespace FastAttn.Tests.Tagging;

public class TokenizerTests
{
    [Theory]
    [InlineData("Great :-) thanks ^_^ :D <3 :)", "Great|:-)|thanks|^_^|:D|<3|:)")]
    [InlineData("I saw a saw.", "I|saw|a|saw|.")]
    [InlineData("Don't you think John's dog can't run?", "Do|n't|you|think|John|'s|dog|ca|n't|run|?")]
    [InlineData("We're sure they'll go; I'm not, and I'd say you've won't.", "We|'re|sure|they|'ll|go|;|I|'m|not|,|and|I|'d|say|you|'ve|wo|n't|.")]
    [InlineData("Curly quotes: it’s “fine” isn’t it", "Curly|quotes|:|it|’s|“|fine|”|is|n’t|it")]
    [InlineData("I cannot go, we're gonna wait...", "I|can|not|go|,|we|'re|gon|na|wait|...")]
    [InlineData("Mr. Smith paid $3,000.50 (about 5%) to the U.S. Dept. on 11/28/2000.", "Mr.|Smith|paid|$|3,000.50|(|about|5|%|)|to|the|U.S.|Dept.|on|11/28/2000|.")]
    [InlineData("A well-known long--term and/or e-mail plan", "A|well|-|known|long|--|term|and|/|or|e-mail|plan")]
    [InlineData("Call 713-853-3989 or mail bob@enron.com now!!", "Call|713-853-3989|or|mail|bob@enron.com|now|!!")]
    [InlineData("See http://example.com/a?b=1, then \"quote\" 'single' `tick`.", "See|http://example.com/a?b=1|,|then|\"|quote|\"|'|single|'|`|tick|`|.")]
    [InlineData("the students' books", "the|students|'|books")]
    [InlineData("  spaces\tand\nnewlines  ", "spaces|and|newlines")]
    [InlineData("J. R. R. Tolkien wrote it.", "J.|R.|R.|Tolkien|wrote|it|.")]
    [InlineData("Really?! Yes.", "Really|?!|Yes|.")]
    [InlineData("x", "x")]
    [InlineData("...", "...")]
    [InlineData("'s", "'s")]
    [InlineData("Great :) see you >> now <<here>> for $$$", "Great|:)|see|you|>>|now|<<|here|>>|for|$$$")]
    [InlineData("Capt. Kirk -- wow!!! ok", "Capt.|Kirk|--|wow|!!!|ok")]
    public void SplitsLikeUniversalDependencies(string text, string expected)
    {
        Assert.Equal(expected.Split('|'), EnglishTokenizer.Tokenize(text));
        Assert.Equal(expected.Split('|').Length, EnglishTokenizer.Count(text));
    }

    [Fact]
    public void AgreementWithTreebankTokens()
    {
        TaggedSentence[] data =
        [
            new(["Do", "n't", "go", "."], ["AUX", "PART", "VERB", "PUNCT"], "Don't go."),            // identical
            new(["its", "fine"], ["PRON", "ADJ"], "its fine"),                                   // identical
            new(["it", "s", "fine"], ["PRON", "AUX", "ADJ"], "its fine"),                        // gold splits a typo
            new(["no", "text"], ["DET", "NOUN"]),                                                // skipped: no text
            new(["mismatch"], ["NOUN"], "something else"),                                       // skipped: cannot align
        ];
        var (n, exact, p, r) = TokenizerAgreement.Measure(data);
        Assert.Equal(3, n);
        Assert.Equal(2, exact);
        Assert.Equal(7.0 / 8, p, 12);   // 8 predicted tokens, 7 match a gold span (the third sentence's "its" does not)
        Assert.Equal(7.0 / 9, r, 12);   // 9 gold tokens
    }

    [Fact]
    public void EmptyAndBlankTextHaveNoTokens()
    {
        Assert.Empty(EnglishTokenizer.Tokenize(""));
        Assert.Equal(0, EnglishTokenizer.Count(" \t\n "));
    }

    [Fact]
    public void TokensAreRangesOfTheInputAndCoverEveryNonSpaceCharacter()
    {
        var rnd = new Random(7);
        const string alphabet = "abcXYZ019 .,;:!?'\"()-/$%’“”@";
        for (int trial = 0; trial < 2000; trial++)
        {
            var chars = new char[rnd.Next(0, 40)];
            for (int i = 0; i < chars.Length; i++) chars[i] = alphabet[rnd.Next(alphabet.Length)];
            string text = new(chars);
            var ranges = new Range[EnglishTokenizer.Count(text)];
            int n = EnglishTokenizer.Tokenize(text, ranges);
            Assert.Equal(ranges.Length, n);
            int pos = 0;
            foreach (var r in ranges)
            {
                var (o, l) = r.GetOffsetAndLength(text.Length);
                Assert.True(l > 0);
                Assert.True(o >= pos, $"'{text}': tokens overlap or go backwards");
                Assert.True(text[pos..o].All(char.IsWhiteSpace), $"'{text}': characters between tokens were dropped");
                Assert.DoesNotContain(text.Substring(o, l), c => char.IsWhiteSpace(c));
                pos = o + l;
            }
            Assert.True(text[pos..].All(char.IsWhiteSpace), $"'{text}': trailing characters were dropped");
        }
    }

    [Fact]
    public void TooSmallSpanThrowsBeforeWriting()
    {
        var ranges = new Range[3];
        Array.Fill(ranges, new Range(9, 9));
        Assert.Throws<ArgumentException>(() => EnglishTokenizer.Tokenize("one two three four", ranges));
        Assert.All(ranges, r => Assert.Equal(new Range(9, 9), r));
    }

    [Fact]
    public void TokenizingAllocatesNothing()
    {
        var ranges = new Range[64];
        const string text = "Don't you think John's dog can't run (really) at 3,000 km/h?!";
        Assert.Equal(0, Reference.SteadyStateAllocations(() => EnglishTokenizer.Tokenize(text, ranges)));
    }
}
