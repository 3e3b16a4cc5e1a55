using PeftSharp.Autograd;
using PeftSharp.Models;
using PeftSharp.Tests.Data;
using PeftSharp.Training.Metrics;

namespace PeftSharp.Tests.Training;

public class MetricsTests
{
    [Fact]
    public void BleuMatchesSacreBleusDocumentedExample()
    {
        // sacreBLEU's README: BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)
        string[] hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."];
        string[][] refs =
        [
            ["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
            ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."],
        ];
        var bleu = Bleu.Corpus(hyps, refs);
        Assert.Equal(48.53, Math.Round(bleu.Score, 2));
        Assert.Equal([82.4, 50.0, 45.5, 37.5], bleu.Precisions.Select(p => Math.Round(p, 1)));
        Assert.Equal(17, bleu.HypothesisLength);
        Assert.Equal(18, bleu.ReferenceLength);
        Assert.Equal(0.943, Math.Round(bleu.BrevityPenalty, 3));
        Assert.Equal("BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)", bleu.ToString());
    }

    [Fact]
    public void BleuUsesExpSmoothingAndBrevityPenalty()
    {
        // 1-4 gram matches 3/4, 2/3, 1/2, 0/1 → the 4-gram precision is 100/(2·1).
        var s = Bleu.Corpus(["a b c d"], [["a b c e"]]);
        Assert.Equal([75.0, 200.0 / 3, 50.0, 50.0], s.Precisions.Select(p => Math.Round(p, 10)).ToArray(), (x, y) => Math.Abs(x - y) < 1e-9);
        Assert.Equal(Math.Pow(75.0 * 200.0 / 3 * 50 * 50, 0.25), s.Score, 9);
        Assert.Equal(100.0, Bleu.Corpus(["the same words here"], [["the same words here"]]).Score, 9);
        var shortHyp = Bleu.Corpus(["a b c d"], [["a b c d e f"]]);
        Assert.Equal(Math.Exp(1 - 6.0 / 4), shortHyp.BrevityPenalty, 12);
        Assert.Equal(100 * Math.Exp(1 - 6.0 / 4), shortHyp.Score, 9);
        Assert.Equal(0.0, Bleu.Corpus([""], [["x y"]]).Score);
    }

    [Fact]
    public void Tokenizer13aSplitsPunctuationButNotNumbersOrApostrophes()
    {
        Assert.Equal(["Hello", ",", "world", ".", "It's", "3.5", "-", "4", "(", "ok", ")", "\"", "x", "\""],
            Bleu.Tokenize13a("Hello, world. It's 3.5-4 (ok) &quot;x&quot;"));
        Assert.Equal(["a", "1,000", "b"], Bleu.Tokenize13a("a 1,000 b"));
    }

    [Fact]
    public void RougeLIsTheLcsFMeasureOfLowercasedAlphanumericTokens()
    {
        var s = RougeL.Score("The quick brown fox jumps over the lazy dog", "The quick brown dog jumps on the log.");
        Assert.Equal(5.0 / 8, s.Precision, 12);
        Assert.Equal(5.0 / 9, s.Recall, 12);
        Assert.Equal(50.0 / 85, s.FMeasure, 12);
        Assert.Equal(["the", "quick", "brown", "fox", "s", "2"], RougeL.Tokenize("The quick-brown FOX's 2!"));
        Assert.Equal(0.0, RougeL.Score("", "x").FMeasure);
        Assert.Equal((1.0 + 50.0 / 85) / 2, RougeL.CorpusF(["a b", "The quick brown fox jumps over the lazy dog"], ["A, B", "The quick brown dog jumps on the log."]), 12);
    }

    [Fact]
    public void EvaluationWithoutTargetsIsAUserError()
    {
        using var model = new TinyCausalLM(TinyTokenizer.Vocab, 12);
        var set = PeftSharp.Data.SftDataset.FromExamples([new PeftSharp.Data.TokenizedExample([1, 2, 3], [false, false, false])], 0);
        Assert.Contains("no tokens to score", Assert.Throws<PeftSharpException>(() => PeftSharp.Training.LossEvaluation.Evaluate(model, set, 2)).Message);
    }

    [Fact]
    public unsafe void GreedyDecodingTakesTheArgmaxOfEachNextToken()
    {
        using var model = new TinyCausalLM(TinyTokenizer.Vocab, 11);
        int[] prompt = [104, 105, 32];
        var generated = GreedyDecoding.Generate(model, prompt, 5, []);
        Assert.Equal(5, generated.Length);
        var sequence = prompt.ToList();
        foreach (int token in generated)
        {
            using var tape = new Tape { GradEnabled = false };
            var logits = model.Forward(new Ops(tape), new TokenBatch(1, sequence.Count, sequence.ToArray()));
            var last = new ReadOnlySpan<float>(logits.Data + (long)(sequence.Count - 1) * logits.Columns, logits.Columns);
            Assert.Equal(System.Numerics.Tensors.TensorPrimitives.IndexOfMax(last), token);
            sequence.Add(token);
        }
        var stopped = GreedyDecoding.Generate(model, prompt, 5, [generated[2]]);
        Assert.Equal(generated.TakeWhile(t => t != generated[2]), stopped);
    }
}
