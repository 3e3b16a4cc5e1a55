using PeftSharp.Models.Generation;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Models;

public class GenerationTests
{
    private const int Vocab = 24;

    private static IReadOnlyList<GeneratedSequence> Run(GenerationOptions options, params int[][] prompts) =>
        Generator.Generate(new FakeDecodeSession(prompts.Length, Vocab), prompts, options);

    /// <summary>Greedy decoding computed directly from the trigram table.</summary>
    private static int[] ReferenceGreedy(int[] prompt, int count)
    {
        var session = new FakeDecodeSession(1, Vocab);
        var context = prompt.ToList();
        var output = new List<int>();
        for (int i = 0; i < count; i++)
        {
            var logits = session.LogitsAfter(context);
            int best = 0;
            for (int v = 1; v < Vocab; v++) if (logits[v] > logits[best]) best = v;
            output.Add(best);
            context.Add(best);
        }
        return output.ToArray();
    }

    [Fact]
    public void GreedyPicksTheArgmaxAtEveryStep()
    {
        var result = Run(new GenerationOptions { MaxNewTokens = 12 }, [3, 5, 7]).Single();
        Assert.Equal(ReferenceGreedy([3, 5, 7], 12), result.Tokens);
        Assert.Equal(FinishReason.Length, result.Reason);
    }

    [Fact]
    public void ArgMaxBreaksTiesTowardTheLowestId()
    {
        Assert.Equal(1, LogitsProcessing.ArgMax([0f, 2f, 2f, -1f]));
        Assert.Equal(0, LogitsProcessing.ArgMax([5f, 5f]));
    }

    [Fact]
    public void TemperatureZeroAndTopKOneAndTinyTemperatureEqualGreedy()
    {
        var greedy = Run(new GenerationOptions { MaxNewTokens = 10 }, [1, 2]).Single().Tokens;
        var t0 = Run(new GenerationOptions { MaxNewTokens = 10, DoSample = true, Temperature = 0, Seed = 3 }, [1, 2]).Single().Tokens;
        var k1 = Run(new GenerationOptions { MaxNewTokens = 10, DoSample = true, TopK = 1, Seed = 3 }, [1, 2]).Single().Tokens;
        var cold = Run(new GenerationOptions { MaxNewTokens = 10, DoSample = true, Temperature = 1e-3, TopK = 0, Seed = 3 }, [1, 2]).Single().Tokens;
        Assert.Equal(greedy, t0);
        Assert.Equal(greedy, k1);
        Assert.Equal(greedy, cold);
    }

    [Fact]
    public void TopKKeepsTheKLargestAndTheirTies()
    {
        float[] logits = [1f, 4f, 3f, 4f, 0f, 2f];
        LogitsProcessing.ApplyTopK(logits, 2, new float[6]);
        Assert.Equal([float.NegativeInfinity, 4f, float.NegativeInfinity, 4f, float.NegativeInfinity, float.NegativeInfinity], logits);
        float[] tie = [1f, 4f, 3f, 3f, 0f];
        LogitsProcessing.ApplyTopK(tie, 2, new float[5]);
        Assert.Equal([float.NegativeInfinity, 4f, 3f, 3f, float.NegativeInfinity], tie);
    }

    [Fact]
    public void TopPKeepsTheSmallestSetReachingP()
    {
        // Probabilities 0.5, 0.25, 0.15, 0.1 (ids 2, 0, 3, 1).
        float[] Probs() => [MathF.Log(0.25f), MathF.Log(0.1f), MathF.Log(0.5f), MathF.Log(0.15f)];
        var keys = new float[4];
        var order = new int[4];
        var kept = Probs();
        LogitsProcessing.ApplyTopP(kept, 0.7f, keys, order);
        Assert.Equal([true, false, true, false], kept.Select(float.IsFinite).ToArray());
        kept = Probs();
        LogitsProcessing.ApplyTopP(kept, 0.8f, keys, order);
        Assert.Equal([true, false, true, true], kept.Select(float.IsFinite).ToArray());
        kept = Probs();
        LogitsProcessing.ApplyTopP(kept, 0.01f, keys, order);
        Assert.Equal([false, false, true, false], kept.Select(float.IsFinite).ToArray());
    }

    [Fact]
    public void SamplingFollowsTheFilteredDistribution()
    {
        float[] logits = [MathF.Log(0.25f), MathF.Log(0.1f), MathF.Log(0.5f), MathF.Log(0.15f)];
        LogitsProcessing.ApplyTopP(logits, 0.7f, new float[4], new int[4]);
        var rng = new Rng(11);
        var counts = new int[4];
        const int draws = 30000;
        for (int i = 0; i < draws; i++) counts[LogitsProcessing.SampleSoftmax(logits, rng)]++;
        Assert.Equal(0, counts[1]);
        Assert.Equal(0, counts[3]);
        // Renormalized: 0.25/0.75 and 0.5/0.75; the binomial standard deviation is about 0.0027.
        Assert.InRange(counts[0] / (double)draws, 1 / 3.0 - 0.012, 1 / 3.0 + 0.012);
        Assert.InRange(counts[2] / (double)draws, 2 / 3.0 - 0.012, 2 / 3.0 + 0.012);
    }

    [Fact]
    public void RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogitsOnce()
    {
        // transformers: score = where(score < 0, score * penalty, score / penalty) on the gathered ids.
        float[] logits = [2f, -1f, 0.5f, 3f];
        LogitsProcessing.ApplyRepetitionPenalty(logits, [0, 1], 2f);
        Assert.Equal([1f, -2f, 0.5f, 3f], logits);

        // In generation, prompt tokens count and duplicates are penalized once: with penalty 1e6 greedy never repeats.
        var result = Run(new GenerationOptions { MaxNewTokens = 12, RepetitionPenalty = 1e6 }, [4, 4, 9]).Single().Tokens;
        Assert.DoesNotContain(4, result);
        Assert.DoesNotContain(9, result);
        Assert.Equal(result.Length, result.Distinct().Count());
    }

    [Fact]
    public void SeedMakesSamplingRepeatable()
    {
        GenerationOptions Options(ulong seed) => new() { MaxNewTokens = 30, DoSample = true, TopK = 0, Seed = seed };
        var a = Run(Options(5), [1, 2, 3]).Single().Tokens;
        var b = Run(Options(5), [1, 2, 3]).Single().Tokens;
        var c = Run(Options(6), [1, 2, 3]).Single().Tokens;
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        Assert.NotEqual(ReferenceGreedy([1, 2, 3], 30), a);
    }

    [Fact]
    public void EosStopsASequenceAndAnyIdOfAListDoes()
    {
        var greedy = ReferenceGreedy([3, 5, 7], 12);
        int eos = greedy[4];
        int first = Array.IndexOf(greedy, eos);
        var result = Run(new GenerationOptions { MaxNewTokens = 12, EosTokenIds = [eos] }, [3, 5, 7]).Single();
        Assert.Equal(FinishReason.Eos, result.Reason);
        Assert.Equal(greedy[..(first + 1)], result.Tokens);

        int other = greedy[2];
        int firstOfEither = Math.Min(first, Array.IndexOf(greedy, other));
        var list = Run(new GenerationOptions { MaxNewTokens = 12, EosTokenIds = [Vocab - 1 == eos ? 0 : Vocab - 1, eos, other] }, [3, 5, 7]).Single();
        Assert.Equal(FinishReason.Eos, list.Reason);
        Assert.Equal(greedy[..(firstOfEither + 1)], list.Tokens);
    }

    [Fact]
    public void StopStringsEndTheSequenceAndCutTheText()
    {
        string Text(int id) => ((char)('a' + id)).ToString();
        var greedy = ReferenceGreedy([3, 5, 7], 12);
        string full = string.Concat(greedy.Select(Text));
        string stop = full.Substring(5, 2);
        int at = full.IndexOf(stop, StringComparison.Ordinal);
        var result = Generator.Generate(new FakeDecodeSession(1, Vocab), [[3, 5, 7]],
            new GenerationOptions { MaxNewTokens = 12, StopStrings = ["zzzz", stop] }, decodeForStops: Text).Single();
        Assert.Equal(FinishReason.StopString, result.Reason);
        Assert.Equal(full[..at], result.Text);
        Assert.Equal(greedy[..(at + stop.Length)], result.Tokens);

        var none = Generator.Generate(new FakeDecodeSession(1, Vocab), [[3, 5, 7]],
            new GenerationOptions { MaxNewTokens = 12 }, decodeForStops: Text).Single();
        Assert.Equal(full, none.Text);
    }

    [Fact]
    public void LeftPaddedBatchGivesEachPromptsOwnTokens()
    {
        int[][] prompts = [[3, 5, 7, 1, 2], [9], [4, 4, 6]];
        foreach (var options in new[]
        {
            new GenerationOptions { MaxNewTokens = 9, EosTokenIds = [ReferenceGreedy([9], 9)[3]] },
            new GenerationOptions { MaxNewTokens = 9, DoSample = true, TopK = 5, TopP = 0.9, Temperature = 0.8, RepetitionPenalty = 1.3, Seed = 2 },
        })
        {
            var session = new FakeDecodeSession(3, Vocab);
            var batch = Generator.Generate(session, prompts, options);
            for (int i = 0; i < prompts.Length; i++)
            {
                var alone = Generator.Generate(new FakeDecodeSession(1, Vocab), [prompts[i]],
                    new GenerationOptions
                    {
                        MaxNewTokens = options.MaxNewTokens, EosTokenIds = options.EosTokenIds, DoSample = options.DoSample, TopK = options.TopK,
                        TopP = options.TopP, Temperature = options.Temperature, RepetitionPenalty = options.RepetitionPenalty,
                        Seed = Generator.SequenceSeed(options.Seed, i),
                    }).Single();
                Assert.Equal(alone.Tokens, batch[i].Tokens);
                Assert.Equal(alone.Reason, batch[i].Reason);
                // The session saw the prompt and the generated tokens (all but the last), never a pad.
                Assert.Equal(prompts[i].Concat(batch[i].Tokens[..^1]), session.History(i));
            }
        }
    }

    [Fact]
    public void FinishedSequencesGetMaskedPadsUntilAllFinish()
    {
        var greedyShort = ReferenceGreedy([9], 9);
        int eos = greedyShort[1];
        var session = new FakeDecodeSession(2, Vocab);
        var result = Generator.Generate(session, [[3, 5, 7, 1], [9]], new GenerationOptions { MaxNewTokens = 6, EosTokenIds = [eos], PadTokenId = 0 });
        var lengths = result.Select(r => r.Tokens.Length).ToArray();
        int steps = lengths.Max();
        Assert.Equal(steps, session.AppendCalls); // prefill + (steps - 1) single-token appends
        int prefillPads = 3;
        int finishedPads = (steps - 1 - (lengths[0] - 1)) + (steps - 1 - (lengths[1] - 1));
        Assert.Equal(prefillPads + finishedPads, session.MaskedTokens);
        Assert.All(result, r => Assert.True(r.Tokens.Length <= 6));
    }

    [Fact]
    public void StreamsTokensInOrderAsTheyAreChosen()
    {
        var events = new List<(int Sequence, int Token)>();
        var result = Generator.Generate(new FakeDecodeSession(2, Vocab), [[1, 2], [3]], new GenerationOptions { MaxNewTokens = 5 },
            onToken: (s, t) => events.Add((s, t)));
        var expected = new List<(int, int)>();
        for (int step = 0; step < 5; step++)
            for (int s = 0; s < 2; s++) expected.Add((s, result[s].Tokens[step]));
        Assert.Equal(expected, events);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(7)]
    public void MaxNewTokensIsRespected(int max)
    {
        var session = new FakeDecodeSession(1, Vocab);
        var result = Generator.Generate(session, [[2, 3]], new GenerationOptions { MaxNewTokens = max, DoSample = true, Seed = 1 }).Single();
        Assert.Equal(max, result.Tokens.Length);
        Assert.Equal(FinishReason.Length, result.Reason);
        Assert.Equal(max == 0 ? 0 : 1 + max - 1, session.AppendCalls);
    }

    [Fact]
    public void RejectsEmptyPromptsAndBadSettings()
    {
        Assert.Throws<PeftSharpException>(() => Run(new GenerationOptions(), new[] { Array.Empty<int>() }));
        Assert.Throws<PeftSharpException>(() => Run(new GenerationOptions(), [Vocab]));
        Assert.Throws<PeftSharpException>(() => Run(new GenerationOptions { TopP = 0 }, [1]));
        Assert.Throws<PeftSharpException>(() => Run(new GenerationOptions { Temperature = -1 }, [1]));
    }

    [Fact]
    public void OptionsComeFromGenerationConfigWithModelFallbacks()
    {
        var model = new PeftSharp.Formats.HfConfig.Gpt2Config { PadTokenId = 3 };
        var generation = new PeftSharp.Formats.HfConfig.GenerationConfig { DoSample = true, TopK = 7, TopP = 0.9, Temperature = 0.6, MaxNewTokens = 40 };
        var options = GenerationOptions.FromConfig(generation, model);
        Assert.Equal((true, 7, 0.9, 0.6, 40), (options.DoSample, options.TopK, options.TopP, options.Temperature, options.MaxNewTokens));
        Assert.Equal([50256], options.EosTokenIds);
        Assert.Equal(3, options.EffectivePadTokenId);
        var defaults = GenerationOptions.FromConfig(null, null, 64);
        Assert.Equal((false, 50, 64), (defaults.DoSample, defaults.TopK, defaults.MaxNewTokens));
    }
}
