using System.Text.Json;
using PeftSharp.Autograd;
using PeftSharp.Models;

namespace PeftSharp.Tests.Models;

public class DecodeSessionTests
{
    private static int ArgMax(ReadOnlySpan<float> row)
    {
        int best = 0;
        for (int i = 1; i < row.Length; i++) if (row[i] > row[best]) best = i;
        return best;
    }

    [AssetFact]
    public void Stories260KGreedyDecodingReproducesLlama2cRunC()
    {
        var golden = JsonDocument.Parse(File.ReadAllText(TestAssets.Path("golden", "stories260K_greedy_llama2c_runc.json")));
        // "ids of generated tokens": the 200 tokens after the BOS prompt (BOS itself not included).
        var expected = golden.RootElement.GetProperty("generated_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.Equal(200, expected.Length);

        using var model = CausalLM.Load(TestAssets.Path("models", "stories260K-hf"));
        using var session = model.StartDecoding(1, 201);
        var logits = new float[session.VocabSize];
        var generated = new List<int>();
        int token = 1;
        for (int step = 0; step < expected.Length; step++)
        {
            session.Append([token], [1], 1, logits);
            token = ArgMax(logits);
            generated.Add(token);
        }
        Assert.Equal(expected, generated);
    }

    /// <summary>Two prompts of different lengths, left-padded into one batch, then greedy steps: every step's logits equal a full recomputation.</summary>
    [Theory]
    [InlineData("tiny-gpt2")]
    [InlineData("tiny-llama")]
    [InlineData("tiny-qwen2")]
    public void KvCacheMatchesRecomputingTheWholeSequence(string name)
    {
        using var model = CausalLM.Load(ModelGolden.Folder(name));
        int vocab = model.VocabSize;
        int[][] prompts = [[5, 17, 42, 8, 3, 77], [9, 31, 2]];
        int promptLength = prompts.Max(p => p.Length), steps = 6;
        var rows = prompts.Select(p => Enumerable.Repeat(0, promptLength - p.Length).Concat(p).ToList()).ToArray();
        var masks = prompts.Select(p => Enumerable.Repeat(0, promptLength - p.Length).Concat(Enumerable.Repeat(1, p.Length)).ToList()).ToArray();

        using var session = model.StartDecoding(2, promptLength + steps);
        var logits = new float[2 * vocab];
        session.Append(rows.SelectMany(r => r).ToArray(), masks.SelectMany(m => m).ToArray(), promptLength, logits);
        using var tape = new Tape();
        tape.GradEnabled = false;
        var ops = new Ops(tape);
        for (int step = 0; ; step++)
        {
            int t = rows[0].Count;
            var mask = masks.SelectMany(m => m).ToArray();
            var positions = new int[2 * t];
            for (int b = 0; b < 2; b++)
                for (int i = 0, real = 0; i < t; i++) positions[b * t + i] = mask[b * t + i] == 0 ? 1 : real++;
            tape.Reset();
            var full = model.Forward(ops, new TokenBatch(2, t, rows.SelectMany(r => r).ToArray()) { AttentionMask = mask, PositionIds = positions });
            for (int b = 0; b < 2; b++)
            {
                var want = full.AsSpan().Slice((b * t + t - 1) * vocab, vocab);
                Assert.True(ModelGolden.MaxAbsDiff(logits.AsSpan(b * vocab, vocab), want) < 1e-4f, $"step {step}, sequence {b}");
            }
            if (step == steps) break;
            var next = new[] { ArgMax(logits.AsSpan(0, vocab)), ArgMax(logits.AsSpan(vocab, vocab)) };
            for (int b = 0; b < 2; b++) { rows[b].Add(next[b]); masks[b].Add(1); }
            session.Append(next, [1, 1], 1, logits);
        }
    }

    [Fact]
    public void ALeftPaddedSequenceDecodesAsItWouldAlone()
    {
        using var model = CausalLM.Load(ModelGolden.Folder("tiny-llama"));
        int vocab = model.VocabSize;
        var alone = new float[vocab];
        using (var session = model.StartDecoding(1, 8)) session.Append([9, 31, 2], [1, 1, 1], 3, alone);
        var batched = new float[2 * vocab];
        using (var session = model.StartDecoding(2, 8))
            session.Append([5, 17, 42, 8, 0, 9, 31, 2], [1, 1, 1, 1, 0, 1, 1, 1], 4, batched);
        Assert.True(ModelGolden.MaxAbsDiff(batched.AsSpan(vocab, vocab), alone) < 1e-5f);
    }

    [Fact]
    public void AppendingPastMaxTokensIsRefused()
    {
        using var model = CausalLM.Load(ModelGolden.Folder("tiny-gpt2"));
        using var session = model.StartDecoding(1, 2);
        var logits = new float[model.VocabSize];
        session.Append([1, 2], [], 2, logits);
        Assert.Throws<PeftSharpException>(() => session.Append([3], [], 1, logits));
    }
}
